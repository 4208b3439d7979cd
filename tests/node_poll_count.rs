//! Work per input does not grow with the connections open: a hub holding
//! 1,000 idle connections drives only the connection an input is for
//! (`NodeCounters::connection_polls` counts the connections driven).
#![cfg(feature = "sim")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::dht::{DhtEvent, Mode};
use macula::id::{Identity, NodeId, Realm};
use macula::node::{Event, Node, NodeConfig};
use macula::secret::Secret;
use macula::sim::{HostId, Link, World};
use macula::{Input, Machine};

const UNIX_MS: u64 = 1_795_478_400_000;
/// Idle connections the hub holds.
const PEERS: usize = 1000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 4433))
}

/// Node `i` (0 is the hub), with nothing running in the background (no
/// bootstrap retries or refreshes, no NAT discovery: the peers stay DHT
/// clients, connected to the hub only).
fn node(i: usize, start: Instant, tweak: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::new(Realm::new("io.macula.test").unwrap());
    config.listen_addrs = vec![addr(i)];
    config.dht.bootstrap_retries = 0;
    config.dht.bootstrap_refresh_below = 0;
    config.reach.auto_discover = false;
    tweak(&mut config);
    let mut seed = [0; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Node::new(
        config,
        Identity::from_seed(seed),
        Secret::deterministic(i as u64),
        start,
        UNIX_MS,
    )
    .unwrap()
}

/// The hub's connection polls so far.
fn polls(world: &World<Node>, hub: HostId) -> u64 {
    world.machine(hub).counters().connection_polls
}

/// A hub and `PEERS` DHT clients that bootstrapped from it one after the
/// other (so no two connections share their timers), each holding one idle
/// connection to it.
fn mesh() -> (World<Node>, HostId, Vec<HostId>) {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut world = World::new(12, start);
    let internet = world.internet();
    let link = Link::with_latency(Duration::from_millis(1));
    let hub = node(0, start, |c| {
        c.pool.max_inbound = 2 * PEERS;
        c.dht.inbound_burst = 1_000_000;
        c.dht.inbound_per_sec = 1_000_000;
        // A thousand peers of a few /24s join within three seconds.
        c.admission.handshakes_per_second = 1_000_000;
        c.admission.handshakes_per_network = 1_000_000;
    });
    let hub = world.add_host(internet, addr(0), link, hub);
    let seed = world.machine(hub).contact();
    let mut peers = Vec::new();
    for i in 1..=PEERS {
        let peer = node(i, start, |c| c.dht.mode = Mode::Client);
        let peer = world.add_host(internet, addr(i), link, peer);
        world.with_machine(peer, |node, now| node.bootstrap(now, vec![seed.clone()]));
        world.run_for(Duration::from_millis(3));
        peers.push(peer);
    }
    let limit = world.now() + Duration::from_secs(10);
    world.run_while(limit, |w| w.machine(hub).connection_count() < PEERS);
    assert_eq!(world.machine(hub).connection_count(), PEERS);
    world.run_for(Duration::from_secs(1));
    world.take_events();
    (world, hub, peers)
}

/// Steps `world` until `done`, and returns the most connections the hub
/// drove in one step (one input) and in all.
fn step_until(
    world: &mut World<Node>,
    hub: HostId,
    mut done: impl FnMut(&World<Node>) -> bool,
) -> (u64, u64) {
    let first = polls(world, hub);
    let mut most = 0;
    while !done(world) {
        let before = polls(world, hub);
        assert!(world.step(), "the world ran out of things to do");
        most = most.max(polls(world, hub) - before);
    }
    (most, polls(world, hub) - first)
}

#[test]
fn one_input_drives_one_connection() {
    let (mut world, hub, peers) = mesh();

    // One lookup from one peer: its request and the acknowledgements reach
    // the hub over that peer's connection only.
    let target = NodeId::from_bytes([0xab; 32]);
    let query = world.with_machine(peers[0], |node, now| node.find_node(now, target));
    let (most, total) = step_until(&mut world, hub, |w| {
        w.events().iter().any(|e| {
            let found =
                matches!(e.event, Event::Dht(DhtEvent::NodesFound { query: q, .. }) if q == query);
            e.host == peers[0] && found
        })
    });
    println!("lookup: {total} connection polls at the hub, at most {most} per input");
    assert!(total >= 1, "the request reached the hub");
    assert_eq!(most, 1, "one input drove more than its connection");

    // The hub's next timer is one connection's: the timeout drives it alone.
    let due = world
        .machine(hub)
        .poll_timeout()
        .expect("connections have timers");
    let limit = due + Duration::from_secs(1);
    world.run_while(limit, |w| w.next_time().is_some_and(|next| next < due));
    let due = world
        .machine(hub)
        .poll_timeout()
        .expect("connections have timers");
    let before = polls(&world, hub);
    world.with_machine(hub, |node, _| node.handle_input(due, Input::Timeout));
    let timeout = polls(&world, hub) - before;
    println!("timeout: {timeout} connection polls at the hub");
    assert_eq!(timeout, 1, "a timeout drove more than its connection");

    // Twenty idle seconds: every connection's keep-alives come and go, each
    // one input for one connection.
    let end = world.now() + Duration::from_secs(20);
    let (most, total) = step_until(&mut world, hub, |w| w.next_time().is_none_or(|t| t > end));
    println!("idle 20 s: {total} connection polls at the hub, at most {most} per input");
    assert_eq!(most, 1, "one input drove more than its connection");
    assert_eq!(world.machine(hub).connection_count(), PEERS);
}
