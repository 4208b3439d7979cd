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
            world.add_host(internet, addr(i), Link::with_latency(latency).loss(loss), node)
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
        w.events().iter().filter(|e| matches!(e.event, Event::Dht(DhtEvent::Bootstrapped { .. }))).count()
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
