//! Macula nodes on real loopback UDP sockets: they connect with mutual TLS,
//! bootstrap from one seed, find each other, store records with
//! confirmation and query them (the checks of `tests/node_sim.rs`).

use std::time::Duration;

use bytes::Bytes;
use macula::dht::Contact;
use macula::id::{NodeId, RecordKey, RecordKind};
use macula::node::{Event, HealthReason};
use macula_tokio::{Events, MaculaNode};
use tokio::task::JoinSet;
use tokio::time::timeout;

mod common;
use common::{LIMIT, bind, find, join, realm, start};

/// Bootstraps every node but the first from the first, all at once.
async fn bootstrap_all(nodes: &[MaculaNode]) {
    let seed = nodes[0].contact();
    let mut joins = JoinSet::new();
    for node in &nodes[1..] {
        let (node, seed) = (node.clone(), seed.clone());
        joins.spawn(async move { join(&node, seed).await });
    }
    while let Some(table_size) = joins.join_next().await {
        assert!(
            table_size.unwrap() >= 1,
            "the seed at least is in the table"
        );
    }
}

/// Whether `events` report a connection to `peer` within [`LIMIT`].
async fn connects(events: &mut Events, peer: NodeId) -> bool {
    let seen = async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::Connected { peer: p, .. } if p == peer) {
                return true;
            }
        }
        false
    };
    timeout(LIMIT, seen).await.unwrap_or(false)
}

#[tokio::test]
async fn two_nodes_connect_with_mutual_tls_and_find_each_other() {
    let nodes = start(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut a_events = a.events();
    let mut b_events = b.events();
    // Alone, a node is degraded by the core's rules.
    let alone = a.health().await.reasons;
    assert_eq!(
        alone,
        [
            HealthReason::NoConnectedPeers,
            HealthReason::EmptyRoutingTable
        ]
    );
    bootstrap_all(&nodes).await;

    assert!(
        connects(&mut a_events, b.node_id()).await,
        "a saw b connect"
    );
    assert!(
        connects(&mut b_events, a.node_id()).await,
        "b saw a connect"
    );

    let found = find(a, b.node_id()).await;
    assert_eq!(found.closest[0].addrs.as_slice(), &[b.local_addr()]);
    assert_eq!(a.counters().send_errors, 0);
    let connected = a.health().await;
    assert!(connected.is_ok(), "{connected:?}");

    a.shutdown().await;
    assert_eq!(a.health().await.reasons, [HealthReason::Stopped]);
    let drained = timeout(LIMIT, async { while a_events.recv().await.is_some() {} });
    drained.await.expect("events end at shutdown");
    assert_eq!(
        a.find_node(b.node_id()).await,
        Err(macula_tokio::CommandError::Stopped)
    );
}

#[tokio::test]
async fn five_nodes_find_each_other_and_store_and_query_records() {
    let nodes = start(5).await;
    bootstrap_all(&nodes).await;

    // Every node looks up every other node.
    let mut lookups = JoinSet::new();
    for node in &nodes {
        for target in &nodes {
            let (node, target) = (node.clone(), target.contact());
            lookups.spawn(async move {
                let found = timeout(LIMIT, node.find_node(target.id)).await;
                (node.node_id(), target, found)
            });
        }
    }
    let mut finished = 0;
    while let Some(lookup) = lookups.join_next().await {
        let (me, target, found) = lookup.unwrap();
        let found = found.expect("lookup in time").unwrap();
        let hit = target.id == me || found.closest.contains(&target);
        assert!(hit, "{me:?} missed {target:?}: {found:?}");
        finished += 1;
    }
    assert_eq!(finished, nodes.len() * nodes.len());

    // Each node stores one record; another node queries it.
    let key = |i: usize| RecordKey::new(&realm(), RecordKind::Rpc, &format!("service-{i}"));
    let mut stores = JoinSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let (node, value) = (node.clone(), Bytes::from(format!("provider {i}")));
        stores.spawn(async move {
            timeout(LIMIT, node.store(key(i), value, Duration::from_secs(10))).await
        });
    }
    while let Some(stored) = stores.join_next().await {
        let receipt = stored.unwrap().expect("store in time").unwrap();
        assert!(receipt.success, "store reached its quorum: {receipt:?}");
    }
    for (i, node) in nodes.iter().enumerate() {
        let other = (i + 2) % nodes.len();
        let answer = timeout(LIMIT, node.query(key(other), Duration::from_secs(10)))
            .await
            .expect("query in time")
            .unwrap();
        assert_eq!(
            answer.records.len(),
            1,
            "one provider, one record: {answer:?}"
        );
        assert_eq!(
            answer.records[0].value,
            Bytes::from(format!("provider {other}"))
        );
        assert_eq!(answer.records[0].provider(), nodes[other].node_id());
    }
    for node in &nodes {
        assert_eq!(node.counters().send_errors, 0);
    }
}

/// A node whose seed cannot be sent to (an IPv6 destination from an IPv4
/// socket) counts the failed sends; junk datagrams up to the largest UDP
/// payload are read and dropped; the node keeps serving.
#[tokio::test]
async fn a_send_error_or_a_junk_datagram_does_not_stop_the_node() {
    let nodes = start(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let nobody = NodeId::from_bytes([7; 32]);
    let unreachable = Contact::new(nobody, "[::1]:9".parse().unwrap());
    let _ = timeout(Duration::from_millis(300), a.bootstrap(vec![unreachable])).await;
    assert!(a.counters().send_errors >= 1, "{:?}", a.counters());

    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // First byte 0x20: neither STUN (0-3) nor QUIC (0x40 bit set).
    for size in [1, 1200, 65_507] {
        junk.send_to(&vec![0x20; size], a.local_addr()).unwrap();
    }
    // The largest UDP payload there is arrives whole: the buffer fits it.
    let arrived = async {
        while a.counters().datagrams_received < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(LIMIT, arrived)
        .await
        .expect("all three junk datagrams read");
    join(b, a.contact()).await;
    find(b, a.node_id()).await;
    assert_eq!(a.counters().receive_errors, 0, "{:?}", a.counters());
    let stats = a.stats().await.unwrap();
    assert!(stats.routing_table >= 1, "b joined a's table: {stats:?}");
}

/// A node bound at `[::]` serves an IPv4 and an IPv6 peer on its one
/// dual-stack socket, and reaches each back in its own family.
#[tokio::test]
async fn a_dual_stack_node_serves_ipv4_and_ipv6_peers_on_one_socket() {
    let hub = bind("[::]:0").await;
    let v4 = bind("127.0.0.1:0").await;
    let v6 = bind("[::1]:0").await;
    let port = hub.local_addr().port();
    let via_v4 = Contact::new(hub.node_id(), ([127, 0, 0, 1], port).into());
    let via_v6 = Contact::new(hub.node_id(), (std::net::Ipv6Addr::LOCALHOST, port).into());
    for (peer, seed) in [(&v4, via_v4), (&v6, via_v6)] {
        join(peer, seed).await;
        let found = find(&hub, peer.node_id()).await;
        assert_eq!(found.closest[0], peer.contact(), "announced address kept");
    }
    // The single-family peers may fail to reach each other; the hub reaches both.
    assert_eq!(hub.counters().send_errors, 0, "{:?}", hub.counters());
}

/// Dropping every handle stops the node: its task ends and its socket is
/// closed, so the address can be bound again.
#[tokio::test]
async fn dropping_the_last_handle_stops_the_node_and_frees_its_socket() {
    let node = bind("127.0.0.1:0").await;
    let addr = node.local_addr();
    let mut events = node.events();
    let clone = node.clone();
    drop(node);
    assert!(
        std::net::UdpSocket::bind(addr).is_err(),
        "a clone keeps it running"
    );
    drop(clone);
    let ended = timeout(LIMIT, async { while events.recv().await.is_some() {} });
    ended.await.expect("the event stream ends with the task");
    std::net::UdpSocket::bind(addr).expect("the socket was closed");
}

#[tokio::test]
async fn the_subscription_made_at_bind_holds_what_came_before_anyone_listened() {
    let nodes = start(2).await;
    let (seed, joiner) = (&nodes[0], &nodes[1]);
    // The seed's connection from the joiner happens before anyone subscribes.
    join(joiner, seed.contact()).await;
    let mut since_bind = seed.events_since_bind().expect("the first caller gets it");
    assert!(
        seed.events_since_bind().is_none(),
        "only the first caller gets it"
    );
    assert!(
        connects(&mut since_bind, joiner.node_id()).await,
        "the connection made before the subscription"
    );
    assert_eq!(since_bind.skipped(), 0);
    // A subscription from now on sees it only once it happens again.
    let mut from_now = seed.events();
    let early = timeout(Duration::from_millis(200), from_now.recv()).await;
    assert!(
        !matches!(early, Ok(Some(Event::Connected { .. }))),
        "{early:?}"
    );
}
