//! Nodes speaking real QUIC with mutual TLS in the simulator: they connect,
//! bootstrap the DHT from one seed node, find each other and store and query
//! signed records with confirmation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::dht::DhtEvent;
use macula::id::{Identity, Realm, RecordKey, RecordKind};
use macula::node::{Event, Node, NodeConfig};
use macula::sim::{HostId, Link, World};

const UNIX_MS: u64 = 1_795_478_400_000;

fn realm() -> Realm {
    Realm::new("io.macula.test").unwrap()
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, (i + 1) as u8], 4433))
}

/// A world of `n` public nodes on links of `latency` one way and `loss`.
fn world(n: usize, seed: u64, latency: Duration, loss: f64) -> (World<Node>, Vec<HostId>) {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut world = World::new(seed, start);
    let internet = world.internet();
    let hosts = (0..n)
        .map(|i| {
            let mut config = NodeConfig::new(realm());
            config.listen_addrs = vec![addr(i)];
            let identity = Identity::from_seed([i as u8 + 1; 32]);
            let node = Node::new(config, identity, seed + i as u64, start, UNIX_MS).unwrap();
            world.add_host(
                internet,
                addr(i),
                Link::with_latency(latency).loss(loss),
                node,
            )
        })
        .collect();
    (world, hosts)
}

fn bootstrap_all(world: &mut World<Node>, hosts: &[HostId]) {
    let seed = world.machine(hosts[0]).contact();
    for &host in &hosts[1..] {
        let seeds = vec![seed.clone()];
        world.with_machine(host, |node, now| node.bootstrap(now, seeds));
    }
    let limit = world.now() + Duration::from_secs(60);
    let expected = hosts.len() - 1;
    world.run_while(limit, |w| {
        w.events()
            .iter()
            .filter(|e| matches!(e.event, Event::Dht(DhtEvent::Bootstrapped { .. })))
            .count()
            < expected
    });
}

#[test]
fn two_nodes_connect_with_mutual_tls_and_exchange_connects() {
    let (mut world, hosts) = world(2, 1, Duration::from_millis(10), 0.0);
    bootstrap_all(&mut world, &hosts);
    let connected: Vec<_> = world
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::Connected { peer, .. } => Some((e.host, *peer)),
            _ => None,
        })
        .collect();
    let a = world.machine(hosts[0]).node_id();
    let b = world.machine(hosts[1]).node_id();
    assert!(connected.contains(&(hosts[1], a)), "{connected:?}");
    assert!(connected.contains(&(hosts[0], b)), "{connected:?}");
    assert_eq!(world.machine(hosts[1]).dht().table().len(), 1);
}

/// The events of type `DhtEvent` the world collected, drained.
fn dht_events(world: &mut World<Node>) -> Vec<(HostId, DhtEvent)> {
    world
        .take_events()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Dht(event) => Some((e.host, event)),
            _ => None,
        })
        .collect()
}

#[test]
fn twenty_nodes_find_each_other_and_store_and_query_records() {
    let (mut world, hosts) = world(20, 7, Duration::from_millis(10), 0.02);
    bootstrap_all(&mut world, &hosts);
    let _ = dht_events(&mut world);

    // Every node looks up every other node.
    let ids: Vec<_> = hosts.iter().map(|&h| world.machine(h).node_id()).collect();
    for &host in &hosts {
        for &target in &ids {
            world.with_machine(host, |node, now| node.find_node(now, target));
        }
    }
    let lookups = hosts.len() * ids.len();
    let limit = world.now() + Duration::from_secs(120);
    let mut found = Vec::new();
    world.run_while(limit, |w| {
        w.events()
            .iter()
            .filter(|e| matches!(e.event, Event::Dht(DhtEvent::NodesFound { .. })))
            .count()
            < lookups
    });
    for (host, event) in dht_events(&mut world) {
        if let DhtEvent::NodesFound {
            target,
            closest,
            stats,
            ..
        } = event
        {
            let me = world.machine(host).node_id();
            let ok = target == me || closest.iter().any(|c| c.id == target);
            if !ok {
                eprintln!(
                    "miss: {host:?} -> {target:?}: {} found, {stats:?}",
                    closest.len()
                );
            }
            found.push(ok);
        }
    }
    assert_eq!(found.len(), lookups, "every lookup finished");
    let misses = found.iter().filter(|ok| !**ok).count();
    assert_eq!(
        misses, 0,
        "{misses} of {lookups} lookups missed their target"
    );

    // Each node stores one record; another node queries it.
    let key = |i: usize| RecordKey::new(&realm(), RecordKind::Rpc, &format!("service-{i}"));
    for (i, &host) in hosts.iter().enumerate() {
        let value = Bytes::from(format!("provider {i}"));
        world.with_machine(host, |node, now| {
            node.store(now, key(i), value, Duration::from_secs(10))
                .unwrap()
        });
    }
    let limit = world.now() + Duration::from_secs(60);
    world.run_while(limit, |w| {
        w.events()
            .iter()
            .filter(|e| matches!(e.event, Event::Dht(DhtEvent::StoreConfirmed { .. })))
            .count()
            < hosts.len()
    });
    let stores = dht_events(&mut world);
    let confirmed = stores
        .iter()
        .filter(|(_, e)| matches!(e, DhtEvent::StoreConfirmed { success: true, .. }))
        .count();
    assert_eq!(
        confirmed,
        hosts.len(),
        "every store reached its quorum: {stores:?}"
    );

    for (i, &host) in hosts.iter().enumerate() {
        let other = (i + 7) % hosts.len();
        world.with_machine(host, |node, now| {
            node.query(now, key(other), Duration::from_secs(10))
        });
    }
    let limit = world.now() + Duration::from_secs(60);
    world.run_while(limit, |w| {
        w.events()
            .iter()
            .filter(|e| matches!(e.event, Event::Dht(DhtEvent::ValuesFound { .. })))
            .count()
            < hosts.len()
    });
    let mut answered = 0;
    for (host, event) in dht_events(&mut world) {
        if let DhtEvent::ValuesFound {
            key: found_key,
            records,
            ..
        } = event
        {
            let i = hosts.iter().position(|&h| h == host).unwrap();
            let other = (i + 7) % hosts.len();
            assert_eq!(found_key, key(other));
            assert_eq!(records.len(), 1, "one provider, one record");
            assert_eq!(records[0].value, Bytes::from(format!("provider {other}")));
            assert_eq!(records[0].provider(), ids[other]);
            answered += 1;
        }
    }
    assert_eq!(answered, hosts.len());
}

#[test]
fn a_node_of_another_realm_is_refused_with_a_reason() {
    let (mut world, hosts) = world(2, 3, Duration::from_millis(10), 0.0);
    let internet = world.internet();
    let mut config = NodeConfig::new(Realm::new("io.other").unwrap());
    config.listen_addrs = vec![addr(9)];
    let stranger = Node::new(
        config,
        Identity::from_seed([99; 32]),
        9,
        world.now(),
        UNIX_MS,
    )
    .unwrap();
    let stranger = world.add_host(
        internet,
        addr(9),
        Link::with_latency(Duration::from_millis(10)),
        stranger,
    );
    let seed = world.machine(hosts[0]).contact();
    world.with_machine(stranger, |node, now| node.bootstrap(now, vec![seed]));
    world.run_for(Duration::from_secs(5));
    let refusals: Vec<_> = world
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::Disconnected { cause, .. } => Some((e.host, cause.clone())),
            _ => None,
        })
        .collect();
    use macula::node::CloseCause;
    use macula::wire::DisconnectReason;
    assert!(
        refusals.iter().any(|(h, c)| *h == hosts[0]
            && matches!(
                c,
                CloseCause::Refused {
                    reason: DisconnectReason::RealmMismatch,
                    ..
                }
            )),
        "{refusals:?}"
    );
    assert!(
        refusals.iter().any(|(h, c)| *h == stranger
            && matches!(
                c,
                CloseCause::Peer {
                    reason: DisconnectReason::RealmMismatch,
                    ..
                }
            )),
        "{refusals:?}"
    );
    assert!(
        !world
            .events()
            .iter()
            .any(|e| matches!(e.event, Event::Connected { .. }))
    );
}

#[test]
fn one_seed_gives_one_trace() {
    let run = |seed: u64| {
        let (mut world, hosts) = world(6, seed, Duration::from_millis(10), 0.02);
        bootstrap_all(&mut world, &hosts);
        let target = world.machine(hosts[5]).node_id();
        world.with_machine(hosts[1], |node, now| node.find_node(now, target));
        world.run_for(Duration::from_secs(2));
        (world.trace_hash(), world.trace().entries().len())
    };
    let first = run(11);
    assert!(first.1 > 50, "the run exchanged packets: {first:?}");
    assert_eq!(first, run(11), "same seed, same trace");
    assert_ne!(first.0, run(12).0, "another seed, another trace");
}

#[test]
fn closing_a_node_tells_its_peers_why() {
    let (mut world, hosts) = world(3, 5, Duration::from_millis(10), 0.0);
    bootstrap_all(&mut world, &hosts);
    assert!(world.machine(hosts[0]).connection_count() >= 2);
    world.take_events();
    world.with_machine(hosts[0], |node, now| node.close_all(now));
    for _ in 0..10 {
        world.run_for(Duration::from_millis(500));
        eprintln!(
            "conns {} timeout {:?}",
            world.machine(hosts[0]).connection_count(),
            macula::Machine::poll_timeout(world.machine(hosts[0]))
                .map(|t| t.saturating_duration_since(world.now()))
        );
    }
    use macula::node::CloseCause;
    use macula::wire::DisconnectReason;
    for &peer in &hosts[1..] {
        assert!(
            world.events().iter().any(|e| e.host == peer
                && matches!(
                    &e.event,
                    Event::Disconnected {
                        cause: CloseCause::Peer {
                            reason: DisconnectReason::Shutdown,
                            ..
                        },
                        ..
                    }
                )),
            "{peer:?} heard the shutdown: {:?}",
            world.events()
        );
    }
}
