//! Thirty nodes, half of them behind NATs of every kind (full cone,
//! restricted, port-restricted, symmetric, Linux masquerade, carrier-grade,
//! and carrier-grade double NAT): every private node finds out it is private,
//! stays a DHT client, keeps reservations on relays it picks from the DHT and
//! publishes them in its peer record; every pair with a private end connects
//! (through a relay where needed, moving to a direct path where the NATs
//! allow it) and carries RPC, every private pair carries pub/sub; and when a
//! relay dies its nodes replace it, calls in flight end with a typed result,
//! and calls after work again. Calls go both ways at once, so both ends of
//! many pairs dial each other at the same time.
#![cfg(feature = "sim")]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::collections::HashMap;
use macula::dht::{Diversity, Mode};
use macula::id::{Identity, NodeId, Realm};
use macula::node::{Event, Node, NodeConfig};
use macula::peer_record::Reachability;
use macula::pubsub::{Pattern, PubSubEvent, Topic};
use macula::rpc::{CallId, RpcError, RpcEvent};
use macula::sim::{HostId, Link, NatConfig, World};

const UNIX_MS: u64 = 1_795_478_400_000;
const PUBLIC: usize = 15;
const PRIVATE: usize = 15;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn realm() -> Realm {
    Realm::new("io.macula.mesh").unwrap()
}

/// The NATs in front of private node `i`, outermost first.
fn nats_of(i: usize) -> Vec<NatConfig> {
    match i % 7 {
        0 => vec![NatConfig::full_cone()],
        1 => vec![NatConfig::restricted_cone()],
        2 => vec![NatConfig::port_restricted_cone()],
        3 => vec![NatConfig::symmetric()],
        4 => vec![NatConfig::linux_masquerade()],
        5 => vec![NatConfig::carrier_grade()],
        _ => vec![NatConfig::carrier_grade(), NatConfig::linux_masquerade()],
    }
}

struct Mesh {
    world: World<Node>,
    public: Vec<HostId>,
    private: Vec<HostId>,
    ids: HashMap<HostId, NodeId>,
}

fn node(i: usize, addr: SocketAddr, mode: Mode, start: Instant) -> Node {
    let mut config = NodeConfig::new(realm());
    config.listen_addrs = vec![addr];
    config.dht.mode = mode;
    // Every public node is in 198.51.100.0/24: one network as far as the
    // DHT's IP-diversity limits go, which would keep most out of the tables.
    config.dht.diversity = Diversity::UNLIMITED;
    // Every private node is an end of up to 29 circuits.
    config.relay.max_circuits_per_peer = 64;
    let identity = Identity::from_seed([i as u8 + 1; 32]);
    Node::new(config, identity, 1000 + i as u64, start, UNIX_MS).unwrap()
}

impl Mesh {
    fn new(seed: u64) -> Self {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut world = World::new(seed, start);
        let internet = world.internet();
        let link = |ms| Link::with_latency(Duration::from_millis(ms));
        let mut public = Vec::new();
        for i in 0..PUBLIC {
            let addr = SocketAddr::from(([198, 51, 100, i as u8 + 1], 4433));
            public.push(world.add_host(
                internet,
                addr,
                link(10),
                node(i, addr, Mode::Server, start),
            ));
        }
        let mut private = Vec::new();
        for i in 0..PRIVATE {
            let mut net = internet;
            let mut outer = IpAddr::from([203, 0, 113, i as u8 + 1]);
            for (depth, config) in nats_of(i).into_iter().enumerate() {
                let (_, inside) = world.add_nat(net, outer, link(5), config);
                net = inside;
                outer = IpAddr::from([100, 64, i as u8, depth as u8 + 1]);
            }
            let addr = SocketAddr::from(([192, 168, i as u8, 2], 4433));
            let n = node(PUBLIC + i, addr, Mode::Client, start);
            private.push(world.add_host(net, addr, link(5), n));
        }
        let ids = public
            .iter()
            .chain(&private)
            .map(|h| (*h, world.machine(*h).node_id()))
            .collect();
        Mesh {
            world,
            public,
            private,
            ids,
        }
    }

    fn all(&self) -> Vec<HostId> {
        self.public.iter().chain(&self.private).copied().collect()
    }

    /// Every node joins through the first public node; then every private
    /// node runs until its peer record names a relay.
    fn join(&mut self) {
        let seed = self.world.machine(self.public[0]).contact();
        for host in self.all().into_iter().skip(1) {
            let seeds = vec![seed.clone()];
            self.world
                .with_machine(host, |node, now| node.bootstrap(now, seeds));
        }
        let limit = self.world.now() + Duration::from_secs(90);
        let private = self.private.clone();
        let ready = self.world.run_while(limit, |w| {
            !private.iter().all(|h| {
                w.machine(*h)
                    .peer_record()
                    .is_some_and(|r| !r.relays.is_empty())
            })
        });
        let missing: Vec<_> = self
            .private
            .iter()
            .filter(|h| {
                self.world
                    .machine(**h)
                    .peer_record()
                    .is_none_or(|r| r.relays.is_empty())
            })
            .map(|h| (h, self.world.machine(*h).nat_report().cloned()))
            .collect();
        assert!(ready, "private nodes without relays: {missing:?}");
    }

    /// Runs `calls` (caller, procedure) and `publishes` (publisher, topic)
    /// at once, answering every request with its payload, until every call
    /// completed and every published message arrived or `within` passed.
    /// Returns each call's result and the (subscriber, topic) pairs that got
    /// their message.
    fn exchange(
        &mut self,
        calls: &[(HostId, String)],
        publishes: &[(HostId, HostId, String)],
        within: Duration,
    ) -> (Vec<Result<Bytes, RpcError>>, usize) {
        let mut pending: HashMap<(HostId, CallId), usize> = HashMap::default();
        for (i, (caller, procedure)) in calls.iter().enumerate() {
            let payload = Bytes::from(format!("call {i}"));
            let call = self
                .world
                .with_machine(*caller, |node, now| {
                    node.call(now, procedure, payload, CALL_TIMEOUT, Default::default())
                })
                .unwrap();
            pending.insert((*caller, call), i);
        }
        for (publisher, _, topic) in publishes {
            let topic = Topic::new(topic).unwrap();
            let payload = Bytes::from_static(b"news");
            self.world
                .with_machine(*publisher, |node, now| node.publish(now, topic, payload))
                .unwrap();
        }
        let mut results: Vec<Option<Result<Bytes, RpcError>>> = vec![None; calls.len()];
        let mut open = calls.len();
        let mut expected: Vec<(HostId, String)> = publishes
            .iter()
            .map(|(_, subscriber, topic)| (*subscriber, topic.clone()))
            .collect();
        let mut delivered = 0;
        self.world.drive(within, |world, host, event| {
            match event {
                Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
                    // A call given up meanwhile cannot be answered any more.
                    let _ = world.with_machine(host, |node, now| node.reply(now, id, Ok(payload)));
                }
                Event::Rpc(RpcEvent::Completed { call, result }) => {
                    if let Some(i) = pending.remove(&(host, call)) {
                        results[i] = Some(result);
                        open -= 1;
                    }
                }
                Event::PubSub(PubSubEvent::Message { topic, .. }) => {
                    let key = (host, topic.as_str().to_string());
                    if let Some(at) = expected.iter().position(|e| *e == key) {
                        expected.swap_remove(at);
                        delivered += 1;
                    }
                }
                _ => {}
            }
            open == 0 && expected.is_empty()
        });
        let results = results
            .into_iter()
            .map(|r| r.expect("every call completes by its timeout"))
            .collect();
        (results, delivered)
    }
}

#[test]
fn thirty_nodes_half_behind_every_kind_of_nat_all_connect() {
    let mut mesh = Mesh::new(7);
    mesh.join();

    // Every private node knows it is private and serves no one's DHT.
    for &host in &mesh.private {
        let node = mesh.world.machine(host);
        assert_eq!(node.reachability(), Reachability::Private, "{host:?}");
        assert_eq!(node.dht().mode(), Mode::Client);
        assert_eq!(node.reach_stats().role_changes, 0);
    }
    let private_ids: Vec<NodeId> = mesh.private.iter().map(|h| mesh.ids[h]).collect();
    for &host in &mesh.all() {
        let table = mesh.world.machine(host).dht().table();
        for id in &private_ids {
            assert!(
                !table.contains(id),
                "{host:?} has a private node in its table"
            );
        }
    }

    // Each node serves a procedure of its own; private nodes subscribe to a
    // topic of their own.
    for (i, &host) in mesh.all().iter().enumerate() {
        let procedure = format!("mesh.n{i}");
        mesh.world
            .with_machine(host, |node, now| {
                node.register(now, &procedure, Default::default())
            })
            .unwrap();
    }
    for (i, &host) in mesh.private.iter().enumerate() {
        let pattern = Pattern::new(&format!("topic.p{i}")).unwrap();
        mesh.world
            .with_machine(host, |node, now| node.subscribe(now, pattern))
            .unwrap();
    }
    mesh.world.run_for(Duration::from_secs(3));

    // Every pair with a private end: calls from every node to every private
    // one and from every private node to every public one, all at once (so
    // both ends of many pairs dial each other at the same time); a publish
    // from every private node to every other.
    let all = mesh.all();
    let index = |h: HostId| all.iter().position(|x| *x == h).unwrap();
    let mut calls = Vec::new();
    for &caller in &all {
        for &callee in &mesh.private {
            if caller != callee {
                calls.push((caller, format!("mesh.n{}", index(callee))));
            }
        }
    }
    for &caller in &mesh.private {
        for &callee in &mesh.public {
            calls.push((caller, format!("mesh.n{}", index(callee))));
        }
    }
    let mut publishes = Vec::new();
    for &publisher in &mesh.private {
        for (j, &subscriber) in mesh.private.iter().enumerate() {
            if publisher != subscriber {
                publishes.push((publisher, subscriber, format!("topic.p{j}")));
            }
        }
    }
    let (results, delivered) = mesh.exchange(&calls, &publishes, Duration::from_secs(60));
    let failed: Vec<_> = calls
        .iter()
        .zip(results)
        .filter(|(_, r)| r.is_err())
        .collect();
    println!(
        "calls {} ok {} publishes {} delivered {delivered}",
        calls.len(),
        calls.len() - failed.len(),
        publishes.len()
    );
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert_eq!(delivered, publishes.len());
    let relayed: u64 = mesh
        .public
        .iter()
        .map(|h| mesh.world.machine(*h).relay_counters().circuits_opened)
        .sum();
    println!("circuits opened at the relays: {relayed}");
    assert!(relayed > 0);

    // The relay that opened the most circuits dies while calls run.
    let dead = *mesh
        .public
        .iter()
        .max_by_key(|h| mesh.world.machine(**h).relay_counters().circuits_opened)
        .unwrap();
    let dead_id = mesh.ids[&dead];
    let orphans: Vec<HostId> = mesh
        .private
        .iter()
        .copied()
        .filter(|p| mesh.world.machine(*p).reserved_relays().contains(&dead_id))
        .collect();
    assert!(!orphans.is_empty());
    let through_dead = mesh.world.machine(dead).relay_counters().circuits_opened;
    println!(
        "relay {dead:?} dies: {} reservations, {through_dead} circuits opened through it",
        orphans.len()
    );
    mesh.world.set_online(dead, false);
    let mut in_flight = Vec::new();
    for &caller in &mesh.private {
        for &callee in &orphans {
            if caller != callee {
                in_flight.push((caller, format!("mesh.n{}", index(callee))));
            }
        }
    }
    let (results, _) = mesh.exchange(&in_flight, &[], CALL_TIMEOUT + Duration::from_secs(5));
    // Every call ended (`exchange` checks it); those that failed did so
    // with a typed error.
    let typed_failures = results.iter().filter(|r| r.is_err()).count();
    let mut kinds: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| {
            format!("{e:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    println!("typed errors seen: {kinds:?}");
    println!(
        "relay died: {} calls in flight, {} ok, {typed_failures} failed with a typed error",
        results.len(),
        results.len() - typed_failures
    );

    // Its nodes notice, reserve elsewhere and republish their records.
    let limit = mesh.world.now() + Duration::from_secs(120);
    let replaced = mesh.world.run_while(limit, |w| {
        !orphans.iter().all(|p| {
            let node = w.machine(*p);
            let relays = node.reserved_relays();
            !relays.contains(&dead_id)
                && relays.len() >= 2
                && node
                    .peer_record()
                    .is_some_and(|r| r.relays.iter().all(|c| c.node_id != dead_id))
        })
    });
    assert!(replaced, "the dead relay was replaced");
    // Calls work again.
    let (results, _) = mesh.exchange(&in_flight, &[], Duration::from_secs(60));
    let failed: Vec<_> = in_flight
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .collect();
    assert!(failed.is_empty(), "calls after the replacement: {failed:?}");
    // Relayed connections whose two NATs allow it moved to a direct path,
    // punched with the candidates each node's own discovery found.
    let upgrades: u64 = mesh
        .all()
        .iter()
        .map(|h| mesh.world.machine(*h).upgrade_counters().upgrades)
        .sum();
    println!("relay -> direct upgrades (each end counts its own): {upgrades}");
    assert!(upgrades > 0);
}
