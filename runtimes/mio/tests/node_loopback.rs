//! Three nodes over loopback UDP, each on a macula-mio driver, all three in
//! one `mio::Poll` as an application embedding them would: they bootstrap
//! from the first, find each other by FIND_NODE, and one stores a record with
//! confirmation that another then queries, over real QUIC with mutual TLS.

use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::dht::DhtEvent;
use macula::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use macula::node::{Event, HealthReason, Node, NodeConfig};
use macula_mio::{Driver, clock};
use mio::{Events, Poll, Token};

/// How long one phase may take at most.
const PHASE: Duration = Duration::from_secs(20);

fn realm() -> Realm {
    Realm::new("io.macula.mio-test").unwrap()
}

/// Three drivers registered on one poll, and the events each reported.
struct Mesh {
    poll: Poll,
    events: Events,
    nodes: Vec<Driver<Node>>,
    reported: Vec<Vec<Event>>,
}

impl Mesh {
    fn new(n: usize) -> Self {
        let poll = Poll::new().unwrap();
        let nodes: Vec<_> = (0..n)
            .map(|i| {
                let config = NodeConfig::new(realm());
                let identity = Identity::from_seed([i as u8 + 1; 32]);
                let mut driver =
                    Driver::bind_node("127.0.0.1:0".parse().unwrap(), config, identity).unwrap();
                driver.register(poll.registry(), Token(i)).unwrap();
                driver
            })
            .collect();
        Self {
            poll,
            events: Events::with_capacity(64),
            reported: vec![Vec::new(); n],
            nodes,
        }
    }

    fn id(&self, i: usize) -> NodeId {
        self.nodes[i].machine().node_id()
    }

    /// Polls until `done` holds for the reported events; panics after
    /// [`PHASE`].
    fn run_until(&mut self, what: &str, done: impl Fn(&[Vec<Event>]) -> bool) {
        let limit = clock::now() + PHASE;
        while !done(&self.reported) {
            assert!(
                clock::now() < limit,
                "{what} within {PHASE:?}: {:?}",
                self.reported
            );
            self.turn(limit);
        }
    }

    /// Polls for `duration`; returns how many times the poll returned.
    fn run_for(&mut self, duration: Duration) -> usize {
        let limit = clock::now() + duration;
        let mut polls = 0;
        while clock::now() < limit {
            self.turn(limit);
            polls += 1;
        }
        polls
    }

    /// One poll, waiting no longer than the nearest node deadline or
    /// `limit`, and its events handed to every driver.
    fn turn(&mut self, limit: Instant) {
        let wait = self
            .nodes
            .iter()
            .filter_map(Driver::timeout)
            .fold(limit.saturating_duration_since(clock::now()), Duration::min);
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        for (node, reported) in self.nodes.iter_mut().zip(&mut self.reported) {
            node.handle_events(&self.events);
            reported.extend(std::iter::from_fn(|| node.pop_event()));
        }
    }

    /// Takes the DHT events reported so far, with the index of their node.
    fn take_dht(&mut self) -> Vec<(usize, DhtEvent)> {
        let mut taken = Vec::new();
        for (i, reported) in self.reported.iter_mut().enumerate() {
            for event in reported.drain(..) {
                if let Event::Dht(event) = event {
                    taken.push((i, event));
                }
            }
        }
        taken
    }
}

fn count(reported: &[Vec<Event>], is: impl Fn(&DhtEvent) -> bool) -> usize {
    reported
        .iter()
        .flatten()
        .filter(|e| matches!(e, Event::Dht(d) if is(d)))
        .count()
}

#[test]
fn three_nodes_bootstrap_find_each_other_and_store_and_query_a_record() {
    let mut mesh = Mesh::new(3);
    let ids: Vec<NodeId> = (0..3).map(|i| mesh.id(i)).collect();

    // Alone, a node is degraded by the core's health rules.
    assert_eq!(
        mesh.nodes[0].health().reasons,
        [
            HealthReason::NoConnectedPeers,
            HealthReason::EmptyRoutingTable
        ]
    );

    // Bootstrap 1 and 2 from 0.
    let seed = mesh.nodes[0].machine().contact();
    for node in &mut mesh.nodes[1..] {
        let seeds = vec![seed.clone()];
        node.command(|node, now| node.bootstrap(now, seeds));
    }
    mesh.run_until("both bootstraps", |r| {
        count(r, |e| matches!(e, DhtEvent::Bootstrapped { .. })) == 2
    });
    let connected = mesh.reported[0]
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert!(connected >= 2, "the seed accepted both: {connected}");
    mesh.take_dht();

    // Every node looks up every other node.
    for (i, node) in mesh.nodes.iter_mut().enumerate() {
        for (j, &target) in ids.iter().enumerate() {
            if i != j {
                node.command(|node, now| node.find_node(now, target));
            }
        }
    }
    mesh.run_until("six lookups", |r| {
        count(r, |e| matches!(e, DhtEvent::NodesFound { .. })) == 6
    });
    let mut lookups = Vec::new();
    for (i, event) in mesh.take_dht() {
        if let DhtEvent::NodesFound {
            target, closest, ..
        } = event
        {
            let j = ids.iter().position(|&id| id == target).unwrap();
            let found = closest.iter().any(|c| c.id == target);
            assert!(found, "node {i} found node {j}: {closest:?}");
            lookups.push((i, j));
        }
    }
    lookups.sort_unstable();
    assert_eq!(lookups, [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]);
    for node in &mesh.nodes {
        let stats = node.stats();
        assert!(
            stats.connections >= 1 && stats.routing_table >= 2,
            "{stats:?}"
        );
        assert!(node.health().is_ok(), "{:?}", node.health());
    }

    // Node 1 stores a record with confirmation; node 2 queries it.
    let key = RecordKey::new(&realm(), RecordKind::Rpc, "echo");
    let value = Bytes::from_static(b"node 1 serves echo");
    let stored = value.clone();
    mesh.nodes[1]
        .command(|node, now| node.store(now, key, stored, Duration::from_secs(5)))
        .unwrap();
    mesh.run_until("the store", |r| {
        count(r, |e| matches!(e, DhtEvent::StoreConfirmed { .. })) == 1
    });
    let confirmed = mesh.take_dht();
    let [(1, DhtEvent::StoreConfirmed { acked, success, .. })] = confirmed.as_slice() else {
        panic!("one confirmation, on node 1: {confirmed:?}");
    };
    assert!(*success, "{confirmed:?}");
    assert!(
        acked.iter().all(|id| *id == ids[0] || *id == ids[2]) && !acked.is_empty(),
        "acknowledged by the other nodes: {acked:?}"
    );

    mesh.nodes[2].command(|node, now| node.query(now, key, Duration::from_secs(5)));
    mesh.run_until("the query", |r| {
        count(r, |e| matches!(e, DhtEvent::ValuesFound { .. })) == 1
    });
    let found = mesh.take_dht();
    let [
        (
            2,
            DhtEvent::ValuesFound {
                key: found_key,
                records,
                answered,
                from_cache: false,
                ..
            },
        ),
    ] = found.as_slice()
    else {
        panic!("one answer from the network, on node 2: {found:?}");
    };
    assert_eq!(*found_key, key);
    assert_eq!(records.len(), 1, "one provider, one record: {records:?}");
    assert_eq!(records[0].value, value);
    assert_eq!(records[0].provider(), ids[1]);
    assert!(
        !answered.is_empty() && answered.iter().all(|id| *id == ids[0] || *id == ids[1]),
        "answered over the network by the others: {answered:?}"
    );

    for node in &mesh.nodes {
        let counters = node.counters();
        assert_eq!(counters.send_errors, 0, "{counters:?}");
        assert_eq!(counters.receive_errors, 0, "{counters:?}");
        assert!(counters.datagrams_received > 0, "{counters:?}");
    }
}

#[test]
fn idle_nodes_sleep_until_their_deadlines() {
    let mut mesh = Mesh::new(2);
    let seeds = vec![mesh.nodes[0].machine().contact()];
    mesh.nodes[1].command(|node, now| node.bootstrap(now, seeds));
    mesh.run_until("the bootstrap", |r| {
        count(r, |e| matches!(e, DhtEvent::Bootstrapped { .. })) == 1
    });
    // Let the work that follows a bootstrap finish.
    mesh.run_for(Duration::from_millis(500));
    let polls = mesh.run_for(Duration::from_secs(2));
    eprintln!("two idle nodes: {polls} polls in 2 s");
    // A few timers and acknowledgements may still fire; a loop that polled
    // past its deadline or spun on readiness would poll thousands of times.
    assert!(
        polls < 20,
        "two idle nodes woke the poll {polls} times in 2 s"
    );
}
