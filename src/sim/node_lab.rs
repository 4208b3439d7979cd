//! The relay → direct upgrade of real [`Node`]s in the simulator, for one pairing of NAT
//! kinds (feature `sim`): a public relay, two nodes behind the pairing's NATs (built by
//! [`build`]), side A dials side B through the relay, and a stream of numbered messages
//! runs across the upgrade and across a fall back to the relay, forced by cutting the
//! direct route: every [`NodeLabConfig::call_gap`] A calls B's echo with the next call
//! number and publishes the next publish number on [`STREAM_TOPIC`], which B subscribes
//! to. A call is lost unless its own number comes back; B checks that every published
//! number arrives exactly once and in order ([`tally`]). The stream starts only once a DHT
//! lookup from A sees B's subscriber record, so no publication is routed before it could
//! find B.
//!
//! Each node's punch candidates are its LAN address and the external address its NAT(s)
//! map it to toward the relay, read from the simulated NATs' tables (what a STUN reflector
//! would report), plus four predicted ports for the sequential symmetric NAT; its NAT class
//! is the kind's true class. Both stand in for NAT discovery, which fills them in a node
//! that runs it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::punch_lab::{NatKind, Pairing, build};
use crate::collections::HashSet;
use crate::dht::{DhtEvent, Mode};
use crate::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use crate::nat::punch::{Candidate, CandidateKind, NatClass, predict};
use crate::nat::stun::PortAllocation;
use crate::node::{Event, Node, NodeConfig, PathChange, RelayEvent};
use crate::path::{PathKind, RealPath};
use crate::pubsub::{Pattern, PubSubEvent, Topic};
use crate::rpc::{CallId, CallOptions, RegisterOptions, RpcEvent};
use crate::secret::Secret;
use crate::sim::{HostId, Link, NatId, World};

/// The topic of the numbered publishes (B subscribes to exactly this topic).
pub const STREAM_TOPIC: &str = "lab.stream";

/// How long the lab keeps listening once every call ended and every accepted publish
/// arrived, so late duplicates are counted too.
const LINGER: Duration = Duration::from_secs(2);

/// How many DHT lookups A makes, 250 ms apart, for B's subscriber record before the lab
/// gives up on the run.
const VISIBILITY_LOOKUPS: usize = 20;

/// How a node lab run is set up.
#[derive(Clone, Debug)]
pub struct NodeLabConfig {
    /// The world's seed.
    pub seed: u64,
    /// Round-trip time between two NATs (and to the relay).
    pub rtt: Duration,
    /// Loss on each WAN link (a NAT-to-NAT path crosses two).
    pub link_loss: f64,
    /// The gap between two calls.
    pub call_gap: Duration,
    /// How long calls run before the direct route is cut, and again after.
    pub phase: Duration,
    /// The nodes' [`UpgradeConfig::retry_after`](crate::node::UpgradeConfig::retry_after).
    pub retry_after: Duration,
    /// Side A's own access link, both directions (the impaired device of a
    /// [`Rung`](crate::sim::ladder::Rung)): it replaces the ideal link between A and
    /// its NAT, or is added in front of an open A's WAN link (see `behind`).
    /// `None`: A sits right behind its NAT.
    pub access: Option<Link>,
    /// What the nodes know of their NATs and whether they publish peer records (see
    /// [`NatKnowledge`]).
    pub knowledge: NatKnowledge,
    /// The nodes' [`UpgradeConfig::search`](crate::node::UpgradeConfig::search): whether
    /// their punches run the birthday search (default true).
    pub search: bool,
    /// The nodes' [`UpgradeConfig::fresh_port`](crate::node::UpgradeConfig::fresh_port):
    /// whether a re-punch after a direct path died goes from a fresh port (default true).
    pub fresh_port: bool,
}

/// Where a lab node's punch candidates and NAT class come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NatKnowledge {
    /// The lab hands each side the candidates and class of the NAT it built; the nodes
    /// run no discovery and so publish no peer record.
    #[default]
    Handed,
    /// The nodes run their own NAT discovery against the relay, so they publish peer
    /// records as users' nodes do (a side can dial the other again by record after their
    /// connection closed), and once the run has ended the lab hands them the candidates
    /// and class of their NATs, which one reflector cannot tell.
    HandedWithRecords,
    /// The nodes run their own NAT discovery against the relay (their only reflector:
    /// reflexive address, hop count), publish peer records, and punch with what the run
    /// found.
    Discovered,
}

impl NatKnowledge {
    /// Whether the nodes run NAT discovery (and publish peer records).
    fn discovers(self) -> bool {
        self != Self::Handed
    }

    /// Whether the lab hands the nodes their candidates and class.
    fn handed(self) -> bool {
        self != Self::Discovered
    }
}

impl Default for NodeLabConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            rtt: Duration::from_millis(50),
            link_loss: 0.0101,
            call_gap: Duration::from_millis(20),
            phase: Duration::from_secs(4),
            retry_after: Duration::from_secs(60),
            access: None,
            knowledge: NatKnowledge::Handed,
            search: true,
            fresh_port: true,
        }
    }
}

/// What one node lab run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePairReport {
    /// The pair.
    pub pairing: Pairing,
    /// The oracle's verdict (the birthday search included).
    pub possible: bool,
    /// Whether the relayed connection came up at both sides.
    pub connected: bool,
    /// Whether both sides switched to a direct path before the cut.
    pub direct: bool,
    /// From the relayed connection being up to the first side's switch.
    pub punch_time: Option<Duration>,
    /// From the first side's switch (the moment the direct path answered) to the second's.
    pub upgrade_time: Option<Duration>,
    /// Whether both sides fell back to the relay after the cut (only asked of direct pairs).
    pub fell_back: bool,
    /// Calls made (numbers handed out, including any the node refused).
    pub calls: usize,
    /// Calls that did not come back with their own number.
    pub calls_lost: usize,
    /// What B received of the numbered publishes.
    pub publishes: PublishTally,
    /// Relay bytes forwarded between the upgrade and the cut (0 when the relay carried none
    /// of the pair's traffic once direct).
    pub relayed_after_upgrade: u64,
}

impl NodePairReport {
    /// Messages of the stream: calls and publishes.
    pub fn messages(&self) -> usize {
        self.calls + self.publishes.published
    }

    /// Messages that went wrong: lost calls, and publishes lost, duplicated or reordered.
    pub fn lost_messages(&self) -> usize {
        self.calls_lost + self.publishes.failures()
    }
}

/// What the subscriber received of a stream of numbered publishes (numbers `0..published`,
/// one publisher).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishTally {
    /// Publishes made (numbers handed out, including any the node refused).
    pub published: usize,
    /// Numbers that never arrived.
    pub lost: usize,
    /// Arrivals of a number that had arrived already, or of one never published.
    pub duplicated: usize,
    /// First arrivals of a number below one that had arrived before it.
    pub reordered: usize,
}

impl PublishTally {
    /// Lost, duplicated and reordered publishes together.
    pub fn failures(&self) -> usize {
        self.lost + self.duplicated + self.reordered
    }
}

/// Tallies the numbers that arrived, in arrival order, against `published` numbers sent
/// in order `0..published`.
pub fn tally(arrived: &[u64], published: usize) -> PublishTally {
    let mut seen = HashSet::default();
    let mut tally = PublishTally {
        published,
        ..PublishTally::default()
    };
    let mut highest = None;
    for &n in arrived {
        let known = usize::try_from(n).is_ok_and(|n| n < published);
        if !known || !seen.insert(n) {
            tally.duplicated += 1;
            continue;
        }
        if highest.is_some_and(|h| n < h) {
            tally.reordered += 1;
        }
        highest = highest.max(Some(n));
    }
    tally.lost = published - seen.len();
    tally
}

/// Runs one pairing (see the module docs).
pub fn run_node_pair(pairing: Pairing, config: &NodeLabConfig, start: Instant) -> NodePairReport {
    let mut lab = NodeLab::new(pairing, config, start);
    let phase = config.phase;
    let mut report = NodePairReport {
        pairing,
        possible: pairing.possible(),
        connected: false,
        direct: false,
        punch_time: None,
        upgrade_time: None,
        fell_back: false,
        calls: 0,
        calls_lost: 0,
        publishes: PublishTally::default(),
        relayed_after_upgrade: 0,
    };
    let Some(connected_at) = lab.connect() else {
        return report;
    };
    report.connected = true;
    lab.calls_for(phase);
    let direct: Vec<Instant> = (lab.changes.iter())
        .filter(|c| c.1 == PathKind::Direct)
        .map(|c| c.0)
        .collect();
    let upgraded = match direct[..] {
        [first, second, ..] => {
            report.punch_time = Some(first.saturating_duration_since(connected_at));
            report.upgrade_time = Some(second.saturating_duration_since(first));
            true
        }
        _ => false,
    };
    if upgraded || lab.connected_direct() {
        report.direct = true;
        let forwarded = lab.forwarded();
        lab.calls_for(Duration::from_secs(1));
        report.relayed_after_upgrade = lab.forwarded() - forwarded;
        let (x, y) = lab.topology_route;
        lab.world.cut(x, y, true);
    }
    lab.calls_for(config.phase);
    let dead = lab
        .changes
        .iter()
        .filter(|c| c.2 == PathChange::DirectPathDead)
        .count();
    report.fell_back = report.direct && dead >= 2;
    (report.calls, report.calls_lost, report.publishes) = lab.drain();
    report
}

/// A path change seen: when, where to, why.
pub type Change = (Instant, PathKind, PathChange);

/// A relay and two nodes behind a pairing's NATs, driven step by step (see the module
/// docs); [`run_node_pair`] runs the standard scenario on it.
pub struct NodeLab {
    /// The world, to inspect or change.
    pub world: World<Node>,
    relay: HostId,
    sides: [HostId; 2],
    nats: [Vec<NatId>; 2],
    kinds: [Option<NatKind>; 2],
    topology_route: (std::net::IpAddr, std::net::IpAddr),
    gap: Duration,
    knowledge: NatKnowledge,
    calls: u64,
    issued: Vec<(CallId, u64)>,
    answered: usize,
    failed: usize,
    topic: Topic,
    published: u64,
    accepted: usize,
    arrived: Vec<u64>,
    delivered: HashSet<u64>,
    changes: Vec<Change>,
}

/// What [`NodeLab::run`]'s stop condition sees.
struct Progress {
    answered: usize,
    failed: usize,
    /// Distinct publish numbers B received.
    delivered: usize,
}

impl NodeLab {
    /// Builds the world, its virtual clock starting at `start` (the
    /// caller's one clock reading); nothing runs yet.
    pub fn new(pairing: Pairing, config: &NodeLabConfig, start: Instant) -> Self {
        let mut world = World::new(config.seed, start);
        let internet = world.internet();
        let wan = Link::with_latency(config.rtt / 4)
            .hops(2)
            .loss(config.link_loss);
        let relay_addr = SocketAddr::from(([203, 0, 113, 1], 4433));
        let relay = world.add_host(
            internet,
            relay_addr,
            wan,
            node(1, relay_addr, config, start, false),
        );
        let mut make = |world: &mut World<Node>, net, addr, link, i: u8| {
            let link = match config.access {
                Some(access) if i == 0 => behind(access, link),
                _ => link,
            };
            world.add_host(net, addr, link, node(2 + i, addr, config, start, true))
        };
        let topology = build(&mut world, pairing, wan, &mut make);
        let kinds = match pairing {
            Pairing::Separate(a, b) => [Some(a), Some(b)],
            Pairing::SharedNat => [Some(NatKind::LinuxMasquerade); 2],
        };
        Self {
            world,
            relay,
            sides: topology.sides,
            nats: topology.nats,
            kinds,
            topology_route: topology.direct_route,
            gap: config.call_gap,
            knowledge: config.knowledge,
            calls: 0,
            issued: Vec::new(),
            answered: 0,
            failed: 0,
            topic: Topic::new(STREAM_TOPIC).unwrap_or_else(|_| unreachable!("a valid topic")),
            published: 0,
            accepted: 0,
            arrived: Vec::new(),
            delivered: HashSet::default(),
            changes: Vec::new(),
        }
    }

    /// Bootstraps and reserves both nodes on the relay (asking again for a reservation lost or
    /// never answered, as an application would), gives them their candidates, has B
    /// register the echo procedure and subscribe to [`STREAM_TOPIC`], waits until a lookup
    /// from A sees B's subscriber record, and has A dial B through the relay; the time the
    /// relayed connection was up at both sides, `None` if any step failed.
    pub fn connect(&mut self) -> Option<Instant> {
        let relay = self.world.machine(self.relay).contact();
        for host in self.sides {
            let seeds = vec![relay.clone()];
            self.world
                .with_machine(host, |n, now| n.bootstrap(now, seeds));
            let relay = relay.clone();
            self.world
                .with_machine(host, |n, now| n.reserve(now, relay));
        }
        let mut granted = HashSet::default();
        let mut bootstrapped = 0;
        let ready = self
            .world
            .drive(Duration::from_secs(60), |world, host, event| {
                match event {
                    Event::Relay(RelayEvent::ReservationGranted { .. }) => {
                        granted.insert(host);
                    }
                    // As an application keeps its reservation: one lost, or
                    // never answered (a burst of loss on a bad link outlasting
                    // the handshake), is asked for again.
                    Event::Relay(
                        RelayEvent::ReservationLost { .. } | RelayEvent::RelayUnreachable { .. },
                    ) => {
                        granted.remove(&host);
                        let relay = relay.clone();
                        world.with_machine(host, |n, now| n.reserve(now, relay));
                    }
                    Event::Dht(DhtEvent::Bootstrapped { .. }) => bootstrapped += 1,
                    _ => {}
                }
                granted.len() == 2 && bootstrapped == 2
            });
        if !ready {
            return None;
        }
        if self.knowledge.discovers() {
            // A whole run, not its early report: a later report would replace a handed class.
            let sides = self.sides;
            let discovered = |w: &World<Node>| {
                (sides.iter()).all(|h| w.machine(*h).reach_stats().discovery.reports > 0)
            };
            let limit = self.world.now() + Duration::from_secs(30);
            if !self.world.run_while(limit, |w| !discovered(w)) {
                return None;
            }
        }
        if self.knowledge.handed() {
            for i in 0..2 {
                let (candidates, class) = self.candidates(i);
                self.world.with_machine(self.sides[i], |n, _| {
                    n.set_punch_candidates(candidates, class)
                });
            }
        }
        let registered = self.world.with_machine(self.sides[1], |n, now| {
            n.register(now, "svc.echo", RegisterOptions::default())
        });
        registered.ok()?;
        let pattern = Pattern::new(STREAM_TOPIC).ok()?;
        let subscribed = self
            .world
            .with_machine(self.sides[1], |n, now| n.subscribe(now, pattern));
        subscribed.ok()?;
        self.run(Duration::from_secs(2), |_| false);
        let target = self.world.machine(self.sides[1]).node_id();
        let mut visible = false;
        for _ in 0..VISIBILITY_LOOKUPS {
            visible = self.lookup_sees(target);
            if visible {
                break;
            }
            self.run(Duration::from_millis(250), |_| false);
        }
        visible.then_some(())?;
        self.world
            .with_machine(self.sides[0], |n, now| n.dial_via_relay(now, relay, target));
        let mut connected = 0;
        let sides = self.sides;
        let up = self
            .world
            .drive(Duration::from_secs(30), |world, _, event| {
                connected += usize::from(matches!(
                    event,
                    Event::Connected {
                        path: PathKind::Relayed,
                        ..
                    }
                ));
                connected == 2 || direct_with_circuits(world, sides)
            });
        up.then(|| self.world.now())
    }

    /// Whether the two sides' connection went direct before the lab's relayed dial: a
    /// public side serves the DHT, so the other side's lookups connect to it straight
    /// away, and the relayed dial only adds circuits behind that connection.
    fn connected_direct(&self) -> bool {
        direct_with_circuits(&self.world, self.sides)
    }

    /// Whether a DHT lookup from A of [`STREAM_TOPIC`]'s subscriber records finds one of
    /// `subscriber` (waits at most 5 s for the answer).
    fn lookup_sees(&mut self, subscriber: NodeId) -> bool {
        let key = RecordKey::new(&realm(), RecordKind::Topic, STREAM_TOPIC);
        let a = self.sides[0];
        let query = self
            .world
            .with_machine(a, |n, now| n.query(now, key, Duration::from_secs(4)));
        let mut seen = false;
        self.world
            .drive(Duration::from_secs(5), |_, host, event| match event {
                Event::Dht(DhtEvent::ValuesFound {
                    query: q, records, ..
                }) if host == a && q == query => {
                    seen = records.iter().any(|r| r.provider() == subscriber);
                    true
                }
                _ => false,
            });
        seen
    }

    /// Side `i`'s candidates and class (see the module docs).
    fn candidates(&self, i: usize) -> (Vec<Candidate>, NatClass) {
        let relay = self.world.host_addr(self.relay);
        nat_candidates(
            &self.world,
            self.sides[i],
            &self.nats[i],
            relay,
            self.kinds[i],
        )
    }

    /// Runs for `within` or until `stop`, answering calls at B, collecting the numbered
    /// publishes B receives from A, and logging path changes.
    fn run(&mut self, within: Duration, mut stop: impl FnMut(&Progress) -> bool) -> bool {
        let limit = self.world.now() + within;
        let mut progress = Progress {
            answered: self.answered,
            failed: self.failed,
            delivered: self.delivered.len(),
        };
        let (issued, changes) = (&self.issued, &mut self.changes);
        let (arrived, delivered) = (&mut self.arrived, &mut self.delivered);
        let (a, b) = (self.world.machine(self.sides[0]).node_id(), self.sides[1]);
        let topic = &self.topic;
        let done = self.world.drive(within, |world, host, event| {
            match event {
                Event::PubSub(PubSubEvent::Message {
                    publisher,
                    topic: t,
                    payload,
                    ..
                }) if host == b && publisher == a && &t == topic => {
                    // A payload that is not a number counts as a number never published.
                    let n = <[u8; 8]>::try_from(&payload[..]).map_or(u64::MAX, u64::from_be_bytes);
                    arrived.push(n);
                    progress.delivered += usize::from(delivered.insert(n));
                }
                Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
                    let _ = world.with_machine(host, |n, now| n.reply(now, id, Ok(payload)));
                }
                Event::Rpc(RpcEvent::Completed { call, result }) => {
                    let number = issued.iter().find(|(c, _)| *c == call).map(|(_, n)| *n);
                    match (result, number) {
                        (Ok(payload), Some(n)) if payload[..] == n.to_be_bytes() => {
                            progress.answered += 1
                        }
                        _ => progress.failed += 1,
                    }
                }
                Event::PathChanged { path, reason, .. } => {
                    changes.push((world.now(), path, reason));
                }
                _ => {}
            }
            stop(&progress)
        });
        self.answered = progress.answered;
        self.failed = progress.failed;
        if !done {
            self.world.run_until(limit);
        }
        done
    }

    /// The path changes seen so far at either side.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The two nodes' hosts (A, B).
    pub fn sides(&self) -> [HostId; 2] {
        self.sides
    }

    /// Reboots side `i`'s outermost NAT ([`World::reboot_nat`]): every mapping
    /// is gone, its external IP becomes `new_ip` (when given), and with
    /// `new_ports` it maps to ports it never used before.
    ///
    /// # Panics
    /// If side `i` has no NAT.
    pub fn reboot_nat(&mut self, i: usize, new_ip: Option<IpAddr>, new_ports: bool) {
        let nat = *self.nats[i].last().expect("side has a NAT");
        self.world.reboot_nat(nat, new_ip, new_ports);
    }

    /// Cuts (or restores) the route of the sides' direct path.
    pub fn cut(&mut self, cut: bool) {
        let (x, y) = self.topology_route;
        self.world.cut(x, y, cut);
    }

    /// Cuts (or restores) the route between side `i`'s outermost NAT (the host itself
    /// when it has none) and the relay: side `i`'s relay connection, and every circuit
    /// of its through the relay, goes silent while the sides' direct path works on.
    pub fn cut_relay(&mut self, i: usize, cut: bool) {
        let side = match self.nats[i].last() {
            Some(&nat) => self.world.nat(nat).external_ip(),
            None => self.world.host_addr(self.sides[i]).ip(),
        };
        let relay = self.world.host_addr(self.relay).ip();
        self.world.cut(side, relay, cut);
    }

    /// Waits (at most 40 s) for every call to end and every accepted publish to arrive,
    /// then `LINGER`s; (messages made: calls and publishes, messages lost: calls refused,
    /// failed, unanswered or answered with another number, and publishes lost, duplicated
    /// or reordered).
    pub fn finish(&mut self) -> (usize, usize) {
        let (calls, calls_lost, publishes) = self.drain();
        (
            calls + publishes.published,
            calls_lost + publishes.failures(),
        )
    }

    /// Waits (at most 40 s) for every call to end and every accepted publish to arrive,
    /// then [`LINGER`]s; (calls made, calls lost, what B received of the publishes).
    fn drain(&mut self) -> (usize, usize, PublishTally) {
        let (issued, accepted) = (self.issued.len(), self.accepted);
        self.run(Duration::from_secs(40), |l| {
            l.answered + l.failed >= issued && l.delivered >= accepted
        });
        self.run(LINGER, |_| false);
        let calls = self.calls as usize;
        let published = self.published as usize;
        (
            calls,
            calls - self.answered,
            tally(&self.arrived, published),
        )
    }

    /// Every gap for `span`, A calls B's echo with the next call number and publishes the
    /// next publish number on [`STREAM_TOPIC`].
    pub fn calls_for(&mut self, span: Duration) {
        let until = self.world.now() + span;
        while self.world.now() < until {
            let n = self.calls;
            self.calls += 1;
            let payload = Bytes::from(n.to_be_bytes().to_vec());
            let call = self.world.with_machine(self.sides[0], |node, now| {
                node.call(
                    now,
                    "svc.echo",
                    payload,
                    Duration::from_secs(30),
                    CallOptions::default(),
                )
            });
            if let Ok(call) = call {
                self.issued.push((call, n));
            }
            let n = self.published;
            self.published += 1;
            let payload = Bytes::from(n.to_be_bytes().to_vec());
            let topic = self.topic.clone();
            let published = self
                .world
                .with_machine(self.sides[0], |node, now| node.publish(now, topic, payload));
            self.accepted += usize::from(published.is_ok());
            self.run(self.gap, |_| false);
        }
    }

    /// The relay's host.
    pub fn relay(&self) -> HostId {
        self.relay
    }

    /// Bytes the relay forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.world
            .machine(self.relay)
            .relay_counters()
            .bytes_forwarded
    }
}

/// The punch candidates and NAT class of `host` behind `nats` (innermost first) of `kind`:
/// its LAN address, the external address its NATs map it to toward `reflector` (read from
/// their tables: what a STUN reflector there would report), plus four predicted ports
/// behind a sequential symmetric NAT; the class is the kind's true one.
pub(super) fn nat_candidates(
    world: &World<Node>,
    host: HostId,
    nats: &[NatId],
    reflector: SocketAddr,
    kind: Option<NatKind>,
) -> (Vec<Candidate>, NatClass) {
    let local = world.host_addr(host);
    let mut external = local;
    for &nat in nats {
        let binding = world
            .nat(nat)
            .bindings()
            .find(|b| b.internal == external && b.peers().any(|p| p == reflector));
        if let Some(b) = binding {
            external = b.external;
        }
    }
    let class = kind.map_or(NatClass::UNKNOWN, NatKind::class);
    let mut candidates = vec![
        Candidate::new(CandidateKind::Lan, local),
        Candidate::new(CandidateKind::Reflexive, external),
    ];
    if let PortAllocation::Sequential { .. } = class.ports {
        candidates.extend(predict(external, class.ports));
    }
    (candidates, class)
}

/// Whether each side's ready connection to the other goes direct and the side holds a
/// relay circuit to fall back onto (behind the connection, or a spare: the lab's one peer
/// is the only one a side has circuits to).
fn direct_with_circuits(world: &World<Node>, sides: [HostId; 2]) -> bool {
    let peer = |i: usize| world.machine(sides[1 - i]).node_id();
    (0..2).all(|i| {
        let node = world.machine(sides[i]);
        let direct =
            (node.paths_to(&peer(i))).is_some_and(|(now, _)| matches!(now, RealPath::Direct(_)));
        direct && node.relay_load().circuit_ends > 0
    })
}

/// `access` in front of `link`: the delays add up, the loss and jitter are the access
/// link's alone (a ladder run sets [`NodeLabConfig::link_loss`] to 0, so the impaired
/// side loses only what its rung loses), the routers are `link`'s.
fn behind(access: Link, link: Link) -> Link {
    Link {
        latency: access.latency.saturating_add(link.latency),
        hops: link.hops,
        mtu: link.mtu.min(access.mtu),
        ..access
    }
}

/// The lab's realm.
fn realm() -> Realm {
    Realm::new("io.macula.natlab").unwrap_or_else(|_| unreachable!("a valid realm"))
}

fn node(i: u8, addr: SocketAddr, lab: &NodeLabConfig, start: Instant, private: bool) -> Node {
    let mut config = NodeConfig::new(realm());
    config.listen_addrs = vec![addr];
    if private {
        config.dht.mode = Mode::Client;
    }
    config.upgrade.retry_after = lab.retry_after;
    config.upgrade.search = lab.search;
    config.upgrade.fresh_port = lab.fresh_port;
    // Unless the run discovers, the lab hands each side the candidates and class of the
    // NAT it built (`NodeLab::candidates`); a discovery run against its one relay would
    // replace them with what a single reflector can tell.
    config.reach.auto_discover = lab.knowledge.discovers();
    let seed = lab.seed;
    let identity = Identity::from_seed([i; 32]);
    let Ok(node) = Node::new(
        config,
        identity,
        Secret::deterministic(seed.wrapping_add(u64::from(i))),
        start,
        1_795_478_400_000,
    ) else {
        unreachable!("the default node configuration is valid")
    };
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_missing_repeated_late_and_unknown_numbers() {
        let clean = tally(&[0, 1, 2, 3], 4);
        assert_eq!(clean.failures(), 0);
        // 2 missing, 1 twice, 3 after 4, 9 never published.
        let t = tally(&[0, 1, 1, 4, 3, 9], 5);
        let expected = PublishTally {
            published: 5,
            lost: 1,
            duplicated: 2,
            reordered: 1,
        };
        assert_eq!(t, expected);
        assert_eq!(t.failures(), 4);
        assert_eq!(tally(&[], 3).lost, 3);
    }
}
