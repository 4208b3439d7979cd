//! Nodes speaking real QUIC with mutual TLS in the simulator: they connect,
//! bootstrap the DHT from one seed node, find each other and store and query
//! signed records with confirmation.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::epoch;
use macula::dht::DhtEvent;
use macula::id::{Realm, RecordKey, RecordKind};
use macula::node::{Event, Node};
use macula::sim::{HostId, Link, Mesh, PORT, World, public_addr, realm};

/// `n` public nodes on 10 ms links losing `loss` of packets, not yet
/// bootstrapped.
fn mesh(n: usize, seed: u64, loss: f64) -> Mesh {
    let link = Link::with_latency(Duration::from_millis(10)).loss(loss);
    Mesh::public(n, seed, epoch(), link, |_, _| {})
}

#[test]
fn two_nodes_connect_with_mutual_tls_and_exchange_connects() {
    let mut mesh = mesh(2, 1, 0.0);
    mesh.bootstrap_all();
    let (world, hosts) = (&mut mesh.world, mesh.hosts.clone());
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
    // With 2% loss, a request can wait behind its own handshake (a lost
    // Initial costs about a second) while the peer's connection to us is up
    // on standby, or behind a loss that holds up a burst of answers on a
    // shared connection: the DHT's deadlines run from when a request goes
    // out on a connection that is up, and again from each answer of its
    // peer. Seeds 1 to 40 then miss no lookup (before: 5 of 40 seeds missed
    // one); a request failed by a duplicate connection being closed would
    // still miss, a known weakness not pinned here.
    let mut mesh = mesh(20, 3, 0.02);
    mesh.bootstrap_all();
    let (world, hosts) = (&mut mesh.world, mesh.hosts.clone());
    let _ = dht_events(world);

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
    for (host, event) in dht_events(world) {
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
    let stores = dht_events(world);
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
    for (host, event) in dht_events(world) {
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
    let mut mesh = mesh(2, 3, 0.0);
    let stranger = mesh.add_public(public_addr(10, PORT), |config| {
        config.realm = Realm::new("io.other").unwrap();
    });
    let (world, hosts) = (&mut mesh.world, mesh.hosts.clone());
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
        let mut mesh = mesh(6, seed, 0.02);
        mesh.bootstrap_all();
        let (world, hosts) = (&mut mesh.world, mesh.hosts.clone());
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
    let mut mesh = mesh(3, 5, 0.0);
    mesh.bootstrap_all();
    let (world, hosts) = (&mut mesh.world, mesh.hosts.clone());
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
