//! The chaos cluster in the simulator: the hosts and NAT routers of `tests/cluster/run`
//! as a [`World`], the nodes of [`roles`] as real [`Node`]s, the same workload and the
//! same [`schedule`] of faults, and the history written in the live run's format
//! (`history`, `faults` and `topology` JSON lines), so `tests/cluster/check.py` checks
//! both with the same invariants and a seed that fails live replays here, deterministically.
//!
//! What differs from the live run: a partition of a public host cuts its nodes' links
//! (nodes on one host then lose each other too), a restarted node rejoins through the
//! peers it knew when it died (the live node's peers file is up to 20 s old), and time
//! is virtual (no CPU starvation).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::plan::{CALL_EVERY_MS, PUBLISH_EVERY_MS, Role, roles};
use super::schedule::{Fault, Scheduled, WARMUP, schedule};
use crate::dht::{Contact, DhtEvent, QueryId, QueryStats};
use crate::id::{Identity, NodeId, Realm};
use crate::node::{Event, Node, NodeConfig};
use crate::path::PathKind;
use crate::pubsub::{Pattern, PubSubEvent, Topic};
use crate::relay::RelayMode;
use crate::rpc::{CallId, CallOptions, RegisterOptions, RpcEvent};
use crate::secret::Secret;
use crate::sim::{HostId, Link, NatConfig, NatId, NetId, World, unix_ms_at};

/// How long a call may take (the live workload's timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a node logs its routing table and connections.
const STATS_EVERY: Duration = Duration::from_secs(5);

/// How long joining retries before the node gives up and runs alone.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// The pause between two join attempts.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Between two nodes' first starts (the run script's stagger).
const START_STAGGER: Duration = Duration::from_millis(50);

/// From a graceful stop's shutdown to the process being gone.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(300);

/// How often a node looks itself up and keeps the closest peers it found (the live
/// node's peers file), to rejoin through them after a restart.
const PEERS_SAVE_EVERY: Duration = Duration::from_secs(20);

/// One way latency of every link (hosts, NAT routers).
const LINK_LATENCY: Duration = Duration::from_millis(1);

/// Where the logs' clock starts (µs): any positive offset; the checker only orders.
const CLOCK_ORIGIN_US: u64 = 1_000_000;

/// A simulated cluster run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The world's and the fault schedule's seed.
    pub seed: u64,
    /// Node count (at least [`super::plan::MIN_NODES`]).
    pub nodes: usize,
    /// How long the workload runs after the warm-up (faults in it, a quiet tail last).
    pub total: Duration,
    /// Whether the faults run (false: the workload alone, a baseline).
    pub faults: bool,
}

/// A run's logs in the live format, one JSON object a line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterLogs {
    /// Every node's history, in the order it happened.
    pub history: Vec<String>,
    /// The fault log (with `begin` and `end`).
    pub faults: Vec<String>,
    /// Each node's host and whether it is private.
    pub topology: Vec<String>,
}

/// Runs the cluster of `config` from `start` (the virtual clock's first instant).
pub fn run(config: &ClusterConfig, start: Instant) -> ClusterLogs {
    let mut cluster = Cluster::new(config, start);
    cluster.play(config);
    cluster.logs
}

/// The hosts and routers of the live topology, as networks of the world.
struct Net {
    /// Each host's network and IP.
    hosts: BTreeMap<&'static str, (NetId, IpAddr)>,
    /// Each router's NAT.
    routers: BTreeMap<&'static str, NatId>,
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn link() -> Link {
    Link::with_latency(LINK_LATENCY)
}

impl Net {
    /// Public hosts at 198.18.K.10, routers' WANs at 198.19.K.2 (each its own /24),
    /// natH (home) inside natC (carrier), the LANs as in the run script.
    fn build(world: &mut World<Node>) -> Self {
        let internet = world.internet();
        let mut hosts = BTreeMap::new();
        for (k, host) in (1u8..).zip(super::plan::PUBLIC_HOSTS) {
            hosts.insert(host, (internet, ip(198, 18, k, 10)));
        }
        let mut routers = BTreeMap::new();
        let masquerade = NatConfig::linux_masquerade();
        let wans = [
            ("natA", 1, masquerade),
            ("natB", 2, masquerade),
            ("natS", 3, NatConfig::linux_fully_random()),
            ("natC", 4, masquerade),
            ("natD", 5, masquerade),
        ];
        let mut lans = BTreeMap::new();
        for (name, k, nat) in wans {
            let (id, lan) = world.add_nat(internet, ip(198, 19, k, 2), link(), nat);
            routers.insert(name, id);
            lans.insert(name, lan);
        }
        let (home, home_lan) = world.add_nat(lans["natC"], ip(100, 64, 1, 2), link(), masquerade);
        routers.insert("natH", home);
        for (host, lan, addr) in [
            ("a1", lans["natA"], ip(10, 1, 0, 11)),
            ("a2", lans["natA"], ip(10, 1, 0, 12)),
            ("b1", lans["natB"], ip(10, 2, 0, 11)),
            ("s1", lans["natS"], ip(10, 3, 0, 11)),
            ("c1", home_lan, ip(10, 4, 0, 11)),
            ("d1", lans["natD"], ip(10, 5, 0, 11)),
        ] {
            hosts.insert(host, (lan, addr));
        }
        Self { hosts, routers }
    }

    /// The hosts whose path to the internet crosses `router` (or that are `group`).
    fn hosts_behind(group: &str) -> &'static [&'static str] {
        match group {
            "natA" => &["a1", "a2"],
            "natB" => &["b1"],
            "natS" => &["s1"],
            "natC" | "natH" => &["c1"],
            "natD" => &["d1"],
            "pub1" => &["pub1"],
            "pub2" => &["pub2"],
            "pub3" => &["pub3"],
            _ => &[],
        }
    }
}

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Up,
    /// Stopping gracefully: no new work; shut down once its calls ended.
    Draining {
        shut: Option<Instant>,
    },
    Down,
}

/// One node of the cluster and its workload's state.
struct Member {
    role: Role,
    host: HostId,
    addr: SocketAddr,
    incarnation: u64,
    life: Life,
    /// When it (re)started; joining gives up [`JOIN_PATIENCE`] later.
    started: Instant,
    join: Option<QueryId>,
    join_retry: Option<Instant>,
    joined: bool,
    next_call: Option<Instant>,
    next_publish: Option<Instant>,
    next_stats: Instant,
    next_save: Instant,
    /// The lookup of its own id under way, whose answer becomes `peers`.
    save: Option<QueryId>,
    calls: u64,
    published: u64,
    pending: BTreeMap<CallId, (String, &'static str)>,
    /// The peers it rejoins through after a restart (its last self-lookup's answer).
    peers: Vec<Contact>,
}

impl Member {
    /// A node not started yet.
    fn new(role: Role, host: HostId, addr: SocketAddr, now: Instant) -> Self {
        Self {
            role,
            host,
            addr,
            incarnation: 0,
            life: Life::Down,
            started: now,
            join: None,
            join_retry: None,
            joined: false,
            next_call: None,
            next_publish: None,
            next_stats: now,
            next_save: now,
            save: None,
            calls: 0,
            published: 0,
            pending: BTreeMap::new(),
            peers: Vec::new(),
        }
    }
}

/// What the run does at a moment: a fault's start or end, or a node's restart.
#[derive(Clone, Debug)]
enum Action {
    Begin(Fault),
    Heal(&'static str),
    Restart(usize),
}

struct Cluster {
    world: World<Node>,
    net: Net,
    members: Vec<Member>,
    by_host: BTreeMap<HostId, usize>,
    seeds: Vec<Contact>,
    seed: u64,
    logs: ClusterLogs,
    start: Instant,
}

fn realm() -> Realm {
    Realm::new("io.macula.cluster").unwrap_or_else(|_| unreachable!("a valid realm name"))
}

/// The first 8 hex digits of a node id, as the live history writes it.
fn short(id: &NodeId) -> String {
    id.to_string().chars().take(8).collect()
}

impl Cluster {
    fn new(config: &ClusterConfig, start: Instant) -> Self {
        let mut world = World::new(config.seed, start);
        let net = Net::build(&mut world);
        let mut cluster = Self {
            world,
            net,
            members: Vec::new(),
            by_host: BTreeMap::new(),
            seeds: Vec::new(),
            seed: config.seed,
            logs: ClusterLogs::default(),
            start,
        };
        for role in roles(config.nodes) {
            let (net, ip) = cluster.net.hosts[role.host];
            let addr = SocketAddr::new(ip, 40000 + role.index as u16);
            let private = !super::plan::PUBLIC_HOSTS.contains(&role.host);
            cluster.logs.topology.push(format!(
                "{{\"n\":{},\"host\":\"{}\",\"private\":{private}}}",
                role.index, role.host
            ));
            let node = cluster.fresh_node(&role, addr, 1);
            let host = cluster.world.add_host(net, addr, link(), node);
            cluster.world.set_online(host, false);
            cluster.by_host.insert(host, role.index);
            cluster.members.push(Member::new(role, host, addr, start));
        }
        let seeds = (cluster.members.iter().filter(|m| m.role.relay))
            .map(|m| cluster.world.machine(m.host).contact())
            .collect();
        cluster.seeds = seeds;
        cluster
    }

    /// Node `role.index`'s incarnation `incarnation`: the same identity every time, its
    /// randomness new.
    fn fresh_node(&self, role: &Role, addr: SocketAddr, incarnation: u64) -> Node {
        let mut config = NodeConfig::new(realm());
        config.listen_addrs = vec![addr];
        if role.relay {
            config.relay.mode = RelayMode::Always;
        }
        let mut key = [0xC1; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&(role.index as u64).to_le_bytes());
        let identity = Identity::from_seed(key);
        let secret =
            Secret::deterministic((self.seed << 32) ^ ((role.index as u64) << 16) ^ incarnation);
        let now = self.world.now();
        let unix_ms = unix_ms_at(self.start, now);
        match Node::new(config, identity, secret, now, unix_ms) {
            Ok(node) => node,
            Err(e) => unreachable!("the cluster's node config is valid: {e}"),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        CLOCK_ORIGIN_US + (at - self.start).as_micros() as u64
    }

    fn fault_log(&mut self, kind: &str, hosts: &[&str], nodes: &[usize], extra: &str) {
        let t = self.stamp(self.world.now());
        let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        let nodes: Vec<String> = nodes.iter().map(usize::to_string).collect();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        self.logs.faults.push(format!(
            "{{\"t\":{t},\"kind\":\"{kind}\",\"hosts\":[{}],\"nodes\":[{}]{extra}}}",
            hosts.join(","),
            nodes.join(",")
        ));
    }

    fn nodes_on(&self, hosts: &[&str]) -> Vec<usize> {
        (self.members.iter())
            .filter(|m| hosts.contains(&m.role.host))
            .map(|m| m.role.index)
            .collect()
    }

    /// Starts node `i`'s next incarnation: a fresh machine, online, joining through
    /// the seeds and the peers it knew.
    fn start_node(&mut self, i: usize) {
        let m = &self.members[i];
        let (role, addr, host, incarnation) = (m.role.clone(), m.addr, m.host, m.incarnation + 1);
        let node = self.fresh_node(&role, addr, incarnation);
        self.world.set_online(host, true);
        self.world.with_machine(host, |old, _| *old = node);
        let now = self.world.now();
        let own = self.world.machine(host).node_id();
        let peers = std::mem::take(&mut self.members[i].peers);
        self.members[i] = Member {
            incarnation,
            life: Life::Up,
            next_save: now + PEERS_SAVE_EVERY,
            peers,
            ..Member::new(role, host, addr, now)
        };
        let fields = format!("\"id\":\"{own}\",\"inc\":{incarnation}");
        self.log(i, "start", &fields);
        self.join(i);
    }

    fn join(&mut self, i: usize) {
        let mut peers = self.members[i].peers.clone();
        peers.extend(self.seeds.iter().cloned());
        let host = self.members[i].host;
        let own = self.world.machine(host).node_id();
        peers.retain(|c| c.id != own);
        let query = self
            .world
            .with_machine(host, |node, now| node.bootstrap(now, peers));
        self.members[i].join = Some(query);
    }

    fn log(&mut self, i: usize, ev: &str, fields: &str) {
        let t = self.stamp(self.world.now());
        log_line(&mut self.logs.history, t, i, ev, fields);
    }

    /// Takes node `i` down at once (kill -9, or the end of a graceful stop).
    fn take_down(&mut self, i: usize) {
        let host = self.members[i].host;
        let m = &mut self.members[i];
        m.life = Life::Down;
        m.pending.clear();
        self.world.set_online(host, false);
    }

    /// The node joined (or gave up): it serves, subscribes, and its ticks begin.
    fn begin_work(&mut self, i: usize) {
        let now = self.world.now();
        let (host, role) = (self.members[i].host, self.members[i].role.clone());
        if role.provide {
            for (procedure, idempotent) in [("work.idem", true), ("work.once", false)] {
                let options = RegisterOptions {
                    idempotent,
                    ..RegisterOptions::default()
                };
                let registered =
                    (self.world).with_machine(host, |n, now| n.register(now, procedure, options));
                if let Err(e) = registered {
                    unreachable!("registering {procedure}: {e}");
                }
            }
            self.log(i, "serve", "");
        }
        if let Some(text) = &role.subscribe {
            let pattern = Pattern::new(text).unwrap_or_else(|e| unreachable!("{text}: {e}"));
            if self
                .world
                .with_machine(host, |n, now| n.subscribe(now, pattern))
                .is_ok()
            {
                self.log(i, "sub", &format!("\"pat\":\"{text}\""));
            }
        }
        let m = &mut self.members[i];
        m.next_call = role.call.then_some(now);
        m.next_publish = role.publish.then_some(now);
    }

    fn call(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.calls += 1;
        let procedure = if m.calls % 2 == 0 {
            "work.idem"
        } else {
            "work.once"
        };
        let rid = format!("{i}.{}.{}", m.incarnation, m.calls);
        let host = m.host;
        let fields = format!("\"rid\":\"{rid}\",\"proc\":\"{procedure}\"");
        self.log(i, "call", &fields);
        let payload = Bytes::from(rid.clone());
        let called = self.world.with_machine(host, |n, now| {
            n.call(
                now,
                procedure,
                payload,
                CALL_TIMEOUT,
                CallOptions::default(),
            )
        });
        match called {
            Ok(call) => {
                self.members[i].pending.insert(call, (rid, procedure));
            }
            Err(e) => self.log(
                i,
                "reply",
                &format!("{fields},\"err\":{}", quoted(&format!("Rpc({e:?})"))),
            ),
        }
    }

    fn publish(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.published += 1;
        let message = format!("{i}.{}.{}", m.incarnation, m.published);
        let (host, topic) = (m.host, m.role.topic());
        let fields = format!("\"topic\":\"{topic}\",\"msg\":\"{message}\"");
        let topic = Topic::new(&topic).unwrap_or_else(|e| unreachable!("{topic}: {e}"));
        let payload = Bytes::from(message);
        match (self.world).with_machine(host, |n, now| n.publish(now, topic, payload)) {
            Ok(_) => self.log(i, "pub", &fields),
            Err(e) => self.log(
                i,
                "puberr",
                &format!("{fields},\"err\":{}", quoted(&format!("{e:?}"))),
            ),
        }
    }

    /// The earliest moment a node needs its driver.
    fn next_tick(&self) -> Option<Instant> {
        (self.members.iter())
            .filter(|m| m.life != Life::Down)
            .flat_map(|m| {
                let shut = match m.life {
                    Life::Draining { shut: Some(at) } => Some(at + SHUTDOWN_LINGER),
                    _ => None,
                };
                let save = Some(m.next_save);
                [
                    m.next_call,
                    m.next_publish,
                    Some(m.next_stats),
                    save,
                    m.join_retry,
                    shut,
                ]
            })
            .flatten()
            .min()
    }

    /// Runs each node's due ticks: join retries, calls, publications, stats, the end
    /// of a graceful stop.
    fn tick(&mut self) {
        let now = self.world.now();
        for i in 0..self.members.len() {
            let m = &self.members[i];
            match m.life {
                Life::Down => continue,
                Life::Draining { shut: None } if m.pending.is_empty() => {
                    self.log(i, "stop", "");
                    let host = self.members[i].host;
                    self.world.with_machine(host, |n, now| n.shutdown(now));
                    self.members[i].life = Life::Draining { shut: Some(now) };
                }
                Life::Draining { shut: Some(at) } if at + SHUTDOWN_LINGER <= now => {
                    self.take_down(i);
                    continue;
                }
                _ => {}
            }
            let m = &self.members[i];
            if m.join_retry.is_some_and(|at| at <= now) {
                self.members[i].join_retry = None;
                self.join(i);
            }
            let m = &self.members[i];
            let working = m.life == Life::Up;
            if working && m.next_call.is_some_and(|at| at <= now) {
                self.members[i].next_call = m.next_call.map(|at| at + ms(CALL_EVERY_MS));
                self.call(i);
            }
            let m = &self.members[i];
            if working && m.next_publish.is_some_and(|at| at <= now) {
                self.members[i].next_publish = m.next_publish.map(|at| at + ms(PUBLISH_EVERY_MS));
                self.publish(i);
            }
            let (host, next_stats) = (self.members[i].host, self.members[i].next_stats);
            if self.members[i].next_save <= now {
                self.members[i].next_save = now + PEERS_SAVE_EVERY;
                let own = self.world.machine(host).node_id();
                let query = self
                    .world
                    .with_machine(host, |n, now| n.find_node(now, own));
                self.members[i].save = Some(query);
            }
            if next_stats <= now {
                self.members[i].next_stats = now + STATS_EVERY;
                let node = self.world.machine(host);
                let fields = format!(
                    "\"table\":{},\"conns\":{}",
                    node.dht().table().len(),
                    node.connection_count()
                );
                self.log(i, "stats", &fields);
            }
        }
    }

    /// Hands the world's events to the workload until `until`, then sets the clock there.
    fn advance(&mut self, until: Instant) {
        let within = until.saturating_duration_since(self.world.now());
        let Self {
            world,
            members,
            by_host,
            logs,
            start,
            ..
        } = self;
        let start = *start;
        world.drive(within, |world, host, event| {
            if let Some(&i) = by_host.get(&host) {
                let t = CLOCK_ORIGIN_US + (world.now() - start).as_micros() as u64;
                on_event(world, &mut members[i], t, &mut logs.history, event);
            }
            false
        });
        self.world.run_until(until);
        for i in 0..self.members.len() {
            if self.members[i].join.is_none()
                && !self.members[i].joined
                && self.members[i].life == Life::Up
            {
                self.settle_join(i);
            }
        }
    }

    /// After a join attempt ended (`join` cleared by the event handler): on with the
    /// work, or retry, or give up after [`JOIN_PATIENCE`].
    fn settle_join(&mut self, i: usize) {
        let now = self.world.now();
        let m = &self.members[i];
        if m.join_retry.is_some() {
            return;
        }
        let table = self.world.machine(m.host).dht().table().len();
        if table > 0 {
            self.members[i].joined = true;
            self.log(i, "joined", &format!("\"table\":{table}"));
            self.begin_work(i);
        } else if now - m.started >= JOIN_PATIENCE {
            self.members[i].joined = true;
            self.log(i, "join_failed", "");
            self.begin_work(i);
        } else {
            self.members[i].join_retry = Some(now + JOIN_RETRY);
        }
    }

    fn act(&mut self, action: Action, actions: &mut Vec<(Instant, Action)>) {
        let now = self.world.now();
        match action {
            Action::Restart(i) => {
                self.start_node(i);
                self.fault_log("restart", &[], &[i], "");
            }
            Action::Heal(group) => {
                self.cut(group, false);
                let hosts = Net::hosts_behind(group);
                let nodes = self.nodes_on(hosts);
                self.fault_log("heal", hosts, &nodes, "");
            }
            Action::Begin(fault) => {
                let lasts = fault.lasts();
                let kill = matches!(fault, Fault::Kill { .. });
                match fault {
                    Fault::Kill { node, down } | Fault::Stop { node, down } => {
                        match self.members[node].life {
                            Life::Down => {}
                            _ if kill => self.take_down(node),
                            Life::Up => self.members[node].life = Life::Draining { shut: None },
                            Life::Draining { .. } => {}
                        }
                        let kind = if kill { "kill9" } else { "stop" };
                        let down = format!("\"down_s\":{}", down.as_secs());
                        self.fault_log(kind, &[], &[node], &down);
                        actions.push((now + lasts, Action::Restart(node)));
                    }
                    Fault::Partition { group, lasts } => {
                        self.cut(group, true);
                        let hosts = Net::hosts_behind(group);
                        let nodes = self.nodes_on(hosts);
                        let extra = format!("\"secs\":{}", lasts.as_secs());
                        self.fault_log("partition", hosts, &nodes, &extra);
                        actions.push((now + lasts, Action::Heal(group)));
                    }
                    Fault::NatReboot { router } => {
                        let nat = self.net.routers[router];
                        self.world.reboot_nat(nat, None, false);
                        let hosts = Net::hosts_behind(router);
                        let nodes = self.nodes_on(hosts);
                        self.fault_log(
                            "nat_reboot",
                            hosts,
                            &nodes,
                            &format!("\"router\":\"{router}\""),
                        );
                    }
                    Fault::Readdress { ip } => {
                        let nat = self.net.routers["natB"];
                        let new_ip = ip.parse().ok();
                        if new_ip != Some(self.world.nat(nat).external_ip()) {
                            self.world.reboot_nat(nat, new_ip, false);
                        }
                        let nodes = self.nodes_on(&["b1"]);
                        self.fault_log("readdress", &["b1"], &nodes, &format!("\"ip\":\"{ip}\""));
                    }
                }
            }
        }
    }

    /// Cuts a host group off the internet (or heals it): a router's WAN link, or the
    /// links of a public host's nodes.
    fn cut(&mut self, group: &str, cut: bool) {
        let link = if cut { link().loss(1.0) } else { link() };
        if let Some(&nat) = self.net.routers.get(group) {
            self.world.set_nat_link(nat, link);
        } else {
            let hosts: Vec<HostId> = (self.members.iter())
                .filter(|m| m.role.host == group)
                .map(|m| m.host)
                .collect();
            for host in hosts {
                self.world.set_host_link(host, link);
            }
        }
    }

    fn play(&mut self, config: &ClusterConfig) {
        for i in 0..self.members.len() {
            self.start_node(i);
            let next = self.world.now() + START_STAGGER;
            self.advance(next);
        }
        let begin = self.start + WARMUP;
        self.run_to(begin, &mut Vec::new());
        self.fault_log("begin", &[], &[], "");
        let mut actions: Vec<(Instant, Action)> = if config.faults {
            schedule(config.seed, config.nodes, config.total)
                .into_iter()
                .map(|Scheduled { at, fault }| (begin + at, Action::Begin(fault)))
                .collect()
        } else {
            Vec::new()
        };
        self.run_to(begin + config.total, &mut actions);
        self.fault_log("end", &[], &[], "");
    }

    /// Runs the workload and the due actions until `end`.
    fn run_to(&mut self, end: Instant, actions: &mut Vec<(Instant, Action)>) {
        loop {
            self.tick();
            actions.sort_by_key(|(at, _)| *at);
            let next_action = actions.first().map(|(at, _)| *at);
            let next = [self.next_tick(), next_action, Some(end)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end)
                .max(self.world.now());
            self.advance(next);
            while actions
                .first()
                .is_some_and(|(at, _)| *at <= self.world.now())
            {
                let (_, action) = actions.remove(0);
                self.act(action, actions);
                actions.sort_by_key(|(at, _)| *at);
            }
            if self.world.now() >= end {
                return;
            }
        }
    }
}

/// A JSON string literal of `text`: quotes and backslashes become `_`, as in the live
/// history (the values logged need no other escapes).
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace(['"', '\\'], "_"))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn log_line(history: &mut Vec<String>, t: u64, i: usize, ev: &str, fields: &str) {
    let sep = if fields.is_empty() { "" } else { "," };
    history.push(format!(
        "{{\"t\":{t},\"n\":{i},\"ev\":\"{ev}\"{sep}{fields}}}"
    ));
}

/// What one node's event means for its workload and history.
fn on_event(
    world: &mut World<Node>,
    m: &mut Member,
    t: u64,
    history: &mut Vec<String>,
    event: Event,
) {
    let i = m.role.index;
    let mut log = |ev: &str, fields: &str| log_line(history, t, i, ev, fields);
    match event {
        Event::Rpc(RpcEvent::Request {
            id,
            procedure,
            payload,
            ..
        }) => {
            let rid = quoted(&String::from_utf8_lossy(&payload));
            log(
                "exec",
                &format!("\"rid\":{rid},\"proc\":{}", quoted(&procedure)),
            );
            let answer = Ok(Bytes::from(i.to_string()));
            // The caller may have gone: its business.
            let _ = world.with_machine(m.host, |n, now| n.reply(now, id, answer));
        }
        Event::Rpc(RpcEvent::Completed { call, result }) => {
            if let Some((rid, procedure)) = m.pending.remove(&call) {
                let fields = format!("\"rid\":\"{rid}\",\"proc\":\"{procedure}\"");
                match result {
                    Ok(by) => log(
                        "reply",
                        &format!("{fields},\"by\":{}", quoted(&String::from_utf8_lossy(&by))),
                    ),
                    Err(e) => log(
                        "reply",
                        &format!("{fields},\"err\":{}", quoted(&format!("Rpc({e:?})"))),
                    ),
                }
            }
        }
        Event::PubSub(PubSubEvent::Message { topic, payload, .. }) => {
            if let Some(pattern) = &m.role.subscribe {
                let msg = quoted(&String::from_utf8_lossy(&payload));
                let topic = quoted(topic.as_str());
                log(
                    "dlv",
                    &format!("\"pat\":\"{pattern}\",\"topic\":{topic},\"msg\":{msg}"),
                );
            }
        }
        Event::Connected { peer, path, .. } => log("conn", &path_fields(&peer, path)),
        Event::PathChanged { peer, path, .. } => log("path", &path_fields(&peer, path)),
        Event::Disconnected { peer, .. } => {
            let peer = peer.as_ref().map_or_else(|| "?".to_owned(), short);
            log("disc", &format!("\"peer\":\"{peer}\""));
        }
        Event::Dht(DhtEvent::Bootstrapped { query, .. }) if m.join == Some(query) => {
            m.join = None;
        }
        Event::Dht(DhtEvent::NodesFound {
            query,
            closest,
            stats,
            ..
        }) => {
            if m.save == Some(query) {
                let own = world.machine(m.host).node_id();
                m.peers = closest.into_iter().filter(|c| c.id != own).collect();
            }
            log("lookup", &lookup_fields("find_node", &stats));
        }
        Event::Dht(DhtEvent::ValuesFound {
            stats,
            from_cache: false,
            ..
        }) => {
            log("lookup", &lookup_fields("find_value", &stats));
        }
        _ => {}
    }
}

fn path_fields(peer: &NodeId, path: PathKind) -> String {
    let kind = if path == PathKind::Direct {
        "direct"
    } else {
        "relayed"
    };
    format!("\"peer\":\"{}\",\"kind\":\"{kind}\"", short(peer))
}

fn lookup_fields(op: &str, stats: &QueryStats) -> String {
    let hops = stats.closest_depth.map_or(-1, i32::from);
    format!(
        "\"op\":\"{op}\",\"hops\":{hops},\"ms\":{},\"timed_out\":{}",
        stats.duration.as_millis(),
        stats.timed_out
    )
}
