//! The punch in the simulator: two peers behind NATs of every kind gather candidates from
//! STUN reflectors, swap them over a side channel (standing in for the relayed
//! connection), and punch (feature `sim`).
//!
//! The topology per pair: three reflectors (two ports on one IP, one on another) and each
//! side's NAT on the internet through a WAN link of `rtt/4` one-way delay and two routers,
//! so two NATs are `rtt` apart; each link loses packets so that a NAT-to-NAT path loses
//! `path_loss`. Hosts sit right behind their NAT. The carrier-grade kind is a
//! port-restricted home NAT (one router above it) inside a carrier-grade NAT; the shared
//! kind puts both hosts behind one Linux masquerade (no hairpinning).
//!
//! Class knowledge: with [`LabConfig::known_classes`] each side's puncher is told both
//! sides' true [`NatClass`] (a stand-in for NAT discovery and the peer's record), so the
//! oracle can skip; without it both are [`NatClass::UNKNOWN`] and every pair is punched,
//! which checks the oracle's "impossible" verdicts against the simulator. Port predictions
//! always come from what the reflectors reported.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::nat::punch::{
    Candidate, CandidateKind, NatClass, Plan, PunchConfig, PunchEvent, Puncher, Role, SessionTag,
    direct_possible, predict, search_side,
};
use crate::nat::stun::{
    BindingClient, BindingId, BindingOutcome, ChangeRequest, ClientConfig, FilteringBehaviour,
    IntegrityKey, MappingBehaviour, Observation, PortAllocation, Responder, ResponderConfig,
    classify_mapping, classify_port_allocation,
};
use crate::sim::{HostId, Link, NatConfig, NatEvent, NatId, NetId, World};
use crate::{Datagram, Input, Machine, Output};

/// The NAT in front of one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatKind {
    /// No NAT: a public address.
    Open,
    /// EIM, EIF.
    FullCone,
    /// EIM, ADF.
    AddressRestricted,
    /// EIM, APDF.
    PortRestricted,
    /// APDM, APDF, random ports: Linux `masquerade random,fully-random`
    /// ([`NatConfig::linux_fully_random`], the NAT lab's natS).
    SymmetricRandom,
    /// APDM, APDF, sequential ports.
    SymmetricSequential,
    /// Linux `masquerade`: EIM, APDF, no hairpinning, the conntrack quirk.
    LinuxMasquerade,
    /// A port-restricted home NAT inside a carrier-grade NAT (EIM, APDF, random ports).
    CarrierGradeDouble,
    /// A Linux masquerade home router right inside a Linux masquerade carrier NAT, as the
    /// NAT lab's natH1/natC1: what its carrier-NAT scenarios' twins run. Not in
    /// [`NatKind::ALL`] (the matrix has `cgn-double`).
    LinuxDouble,
}

impl NatKind {
    /// Every kind.
    pub const ALL: [NatKind; 8] = [
        NatKind::Open,
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::SymmetricRandom,
        NatKind::SymmetricSequential,
        NatKind::LinuxMasquerade,
        NatKind::CarrierGradeDouble,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Open => "open",
            NatKind::FullCone => "full-cone",
            NatKind::AddressRestricted => "addr-restr",
            NatKind::PortRestricted => "port-restr",
            NatKind::SymmetricRandom => "sym-random",
            NatKind::SymmetricSequential => "sym-seq",
            NatKind::LinuxMasquerade => "masquerade",
            NatKind::CarrierGradeDouble => "cgn-double",
            NatKind::LinuxDouble => "linux-double",
        }
    }

    /// The true RFC 4787 class of this kind (what perfect discovery would find).
    pub fn class(self) -> NatClass {
        use FilteringBehaviour as F;
        let (mapping, filtering, ports) = match self {
            NatKind::Open => return NatClass::OPEN,
            NatKind::FullCone => (
                MappingBehaviour::EndpointIndependent,
                F::EndpointIndependent,
                PortAllocation::Preserving,
            ),
            NatKind::AddressRestricted => (
                MappingBehaviour::EndpointIndependent,
                F::AddressDependent,
                PortAllocation::Preserving,
            ),
            NatKind::PortRestricted | NatKind::LinuxMasquerade | NatKind::LinuxDouble => (
                MappingBehaviour::EndpointIndependent,
                F::AddressAndPortDependent,
                PortAllocation::Preserving,
            ),
            NatKind::CarrierGradeDouble => (
                MappingBehaviour::EndpointIndependent,
                F::AddressAndPortDependent,
                PortAllocation::Random,
            ),
            NatKind::SymmetricRandom => (
                MappingBehaviour::AddressAndPortDependent,
                F::AddressAndPortDependent,
                PortAllocation::Random,
            ),
            NatKind::SymmetricSequential => (
                MappingBehaviour::AddressAndPortDependent,
                F::AddressAndPortDependent,
                PortAllocation::Sequential { step: 1 },
            ),
        };
        NatClass {
            mapping,
            filtering,
            ports,
        }
    }

    /// The simulator's NAT for this kind (the outer one for the double NAT).
    pub(super) fn config(self) -> Option<NatConfig> {
        Some(match self {
            NatKind::Open => return None,
            NatKind::FullCone => NatConfig::full_cone(),
            NatKind::AddressRestricted => NatConfig::restricted_cone(),
            NatKind::PortRestricted => NatConfig::port_restricted_cone(),
            NatKind::SymmetricRandom => NatConfig::linux_fully_random(),
            NatKind::SymmetricSequential => NatConfig::symmetric(),
            NatKind::LinuxMasquerade | NatKind::LinuxDouble => NatConfig::linux_masquerade(),
            NatKind::CarrierGradeDouble => NatConfig::carrier_grade(),
        })
    }
}

/// The two sides of one lab run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pairing {
    /// Side A (the first attempt's opener) behind one kind, side B behind another.
    Separate(NatKind, NatKind),
    /// Both behind one Linux masquerade, which does not hairpin.
    SharedNat,
}

impl Pairing {
    /// Every ordered pair of kinds, then the shared NAT.
    pub fn all() -> Vec<Pairing> {
        let mut all: Vec<Pairing> = NatKind::ALL
            .iter()
            .flat_map(|&a| NatKind::ALL.iter().map(move |&b| Pairing::Separate(a, b)))
            .collect();
        all.push(Pairing::SharedNat);
        all
    }

    /// A short name for tables.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Pairing::Separate(a, b) => (a.name(), b.name()),
            Pairing::SharedNat => ("shared-nat", "shared-nat"),
        }
    }

    /// The oracle's verdict: whether a direct path is possible.
    pub fn possible(self) -> bool {
        match self {
            Pairing::Separate(a, b) => direct_possible(&a.class(), &b.class()),
            Pairing::SharedNat => true,
        }
    }

    /// Whether only the birthday search can join the pair: its punchers run it only when
    /// they know both classes ([`LabConfig::known_classes`]).
    pub fn needs_search(self) -> bool {
        let (a, b) = self.classes();
        search_side(&a, &b).is_some()
    }

    pub(super) fn classes(self) -> (NatClass, NatClass) {
        match self {
            Pairing::Separate(a, b) => (a.class(), b.class()),
            Pairing::SharedNat => {
                let masquerade = NatKind::LinuxMasquerade.class();
                (masquerade, masquerade)
            }
        }
    }
}

/// How a lab run is set up.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// The world's seed.
    pub seed: u64,
    /// Round-trip time between two NATs (and to the reflectors).
    pub rtt: Duration,
    /// Loss on a NAT-to-NAT path, one way.
    pub path_loss: f64,
    /// The punch's settings.
    pub punch: PunchConfig,
    /// Whether the punchers know both NAT classes (see the module docs).
    pub known_classes: bool,
    /// How much earlier side B's clock puts the agreed start than side A's.
    pub skew: Duration,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            rtt: Duration::from_millis(50),
            path_loss: 0.02,
            punch: PunchConfig::default(),
            known_classes: true,
            skew: Duration::ZERO,
        }
    }
}

/// What one lab run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairReport {
    /// The pair.
    pub pairing: Pairing,
    /// The oracle's verdict.
    pub possible: bool,
    /// Whether the punch was skipped (classes ruled it out).
    pub skipped: bool,
    /// Whether both sides found the direct path.
    pub direct: bool,
    /// From the agreed start to the later side's winning answer.
    pub punch_time: Option<Duration>,
    /// Attempts started by side A.
    pub attempts: u32,
    /// The kind of side A's winning candidate.
    pub winner: Option<CandidateKind>,
    /// Times a NAT moved a flow off its port because of the conntrack quirk.
    pub quirk_hits: usize,
}

/// Runs one pair (see the module docs).
pub fn run_pair(pairing: Pairing, config: &LabConfig, start: Instant) -> PairReport {
    let mut lab = Lab::new(pairing, config, start);
    lab.gather();
    lab.punch();
    lab.report()
}

/// Where a pairing's two sides ended up in a world.
pub struct Topology {
    /// The two hosts (side A, side B).
    pub sides: [HostId; 2],
    /// Each side's NATs, innermost first (none for an open host).
    pub nats: [Vec<NatId>; 2],
    /// The two IPs whose route carries the sides' direct path (their outermost public
    /// addresses, or their LAN addresses behind a shared NAT).
    pub direct_route: (IpAddr, IpAddr),
}

/// Adds one side's host: `(world, network, address, link, side index)` → its id.
pub type MakeHost<'a, M> = dyn FnMut(&mut World<M>, NetId, SocketAddr, Link, u8) -> HostId + 'a;

/// Builds `pairing`'s NATs in `world` (each attached to the internet through `wan`) and
/// adds each side's host with `make(world, network, address, link, side index)`. Hosts
/// listen on port 5000; side *i*'s public address is 198.51.100.(10 + *i*).
pub fn build<M: Machine>(
    world: &mut World<M>,
    pairing: Pairing,
    wan: Link,
    make: &mut MakeHost<'_, M>,
) -> Topology
where
    M::Event: std::fmt::Debug,
{
    let internet = world.internet();
    let host = |i: u8| SocketAddr::from(([10, i, 0, 2], 5000));
    let public = |i: u8| IpAddr::from([198, 51, 100, 10 + i]);
    if pairing == Pairing::SharedNat {
        let (nat, lan) = world.add_nat(internet, public(0), wan, NatConfig::linux_masquerade());
        let b_addr = SocketAddr::from(([10, 0, 0, 3], 5000));
        let a = make(world, lan, host(0), Link::default(), 0);
        let b = make(world, lan, b_addr, Link::default(), 1);
        let route = (host(0).ip(), b_addr.ip());
        return Topology {
            sides: [a, b],
            nats: [vec![nat], vec![nat]],
            direct_route: route,
        };
    }
    let Pairing::Separate(ka, kb) = pairing else {
        unreachable!("the shared NAT returned above")
    };
    let mut side = |world: &mut World<M>, kind: NatKind, i: u8| match (kind, kind.config()) {
        (_, None) => (
            make(world, internet, SocketAddr::new(public(i), 5000), wan, i),
            vec![],
        ),
        (NatKind::CarrierGradeDouble, Some(carrier)) => {
            let (outer, cgn) = world.add_nat(internet, public(i), wan, carrier);
            let home_ip = IpAddr::from([100, 64, i, 2]);
            let home = NatConfig::port_restricted_cone();
            let (inner, lan) = world.add_nat(cgn, home_ip, Link::default().hops(1), home);
            (
                make(world, lan, host(i), Link::default(), i),
                vec![inner, outer],
            )
        }
        (NatKind::LinuxDouble, Some(masquerade)) => {
            // The home router's WAN port sits on the carrier's customer network, no router
            // in between (the lab's veth into natC1's bridge).
            let (outer, carrier) = world.add_nat(internet, public(i), wan, masquerade);
            let home_ip = IpAddr::from([100, 64, i, 2]);
            let (inner, lan) = world.add_nat(carrier, home_ip, Link::default(), masquerade);
            (
                make(world, lan, host(i), Link::default(), i),
                vec![inner, outer],
            )
        }
        (_, Some(nat)) => {
            let (id, lan) = world.add_nat(internet, public(i), wan, nat);
            (make(world, lan, host(i), Link::default(), i), vec![id])
        }
    };
    let (a, nats_a) = side(world, ka, 0);
    let (b, nats_b) = side(world, kb, 1);
    Topology {
        sides: [a, b],
        nats: [nats_a, nats_b],
        direct_route: (public(0), public(1)),
    }
}

/// The reflectors: two ports on one IP, a third on another IP.
const REFLECTORS: [&str; 3] = ["203.0.113.1:3478", "203.0.113.1:3479", "203.0.113.2:3478"];

struct Lab {
    world: World<LabHost>,
    config: LabConfig,
    pairing: Pairing,
    sides: [HostId; 2],
    start: Option<Instant>,
}

impl Lab {
    /// `start` is the virtual clock's first instant (the caller's one clock reading).
    fn new(pairing: Pairing, config: &LabConfig, start: Instant) -> Self {
        let mut world = World::new(config.seed, start);
        let internet = world.internet();
        let link_loss = 1.0 - (1.0 - config.path_loss.clamp(0.0, 1.0)).sqrt();
        let wan = Link::with_latency(config.rtt / 4).hops(2).loss(link_loss);
        let reflectors: Vec<SocketAddr> = REFLECTORS
            .iter()
            .map(|r| r.parse().unwrap_or_else(|_| unreachable!()))
            .collect();
        for &r in &reflectors {
            let responder = Responder::new(ResponderConfig::default());
            world.add_host(internet, r, wan, LabHost::Reflector(Box::new(responder)));
        }
        let mut make =
            |world: &mut World<LabHost>, net: NetId, addr: SocketAddr, link: Link, seed: u8| {
                let now = world.now();
                let peer = Peer::new(now, addr, &reflectors, seed);
                world.add_host(net, addr, link, LabHost::Peer(Box::new(peer)))
            };
        let sides = build(&mut world, pairing, wan, &mut make).sides;
        Self {
            world,
            config: config.clone(),
            pairing,
            sides,
            start: None,
        }
    }

    fn peer(&self, i: usize) -> &Peer {
        match self.world.machine(self.sides[i]) {
            LabHost::Peer(peer) => peer,
            LabHost::Reflector(_) => unreachable!("sides are peers"),
        }
    }

    fn gather(&mut self) {
        let limit = self.world.now() + Duration::from_secs(30);
        let sides = self.sides;
        self.world.run_while(limit, |w| {
            sides
                .iter()
                .any(|&s| matches!(w.machine(s), LabHost::Peer(p) if p.gathered().is_none()))
        });
    }

    fn punch(&mut self) {
        let (Some(a), Some(b)) = (self.peer(0).gathered(), self.peer(1).gathered()) else {
            return;
        };
        // The swap over the relayed connection takes about one round trip.
        let start = self.world.now() + self.config.rtt;
        self.start = Some(start);
        let (class_a, class_b) = match self.config.known_classes {
            true => self.pairing.classes(),
            false => (NatClass::UNKNOWN, NatClass::UNKNOWN),
        };
        let same_public_ip = a.reflexive.ip() == b.reflexive.ip();
        let tag = SessionTag(self.config.seed.to_be_bytes());
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.config.seed.to_le_bytes());
        let plan = |role, start, remote: &Gathering, local_nat, remote_nat| Plan {
            tag,
            key: IntegrityKey(key),
            remote: remote.candidates.clone(),
            rtt: self.config.rtt,
            role,
            start,
            local_nat,
            remote_nat,
            same_public_ip,
            // The machine-level lab punches without a hop count (the growing schedule);
            // the Node's own discovery counts hops in `node_lab`.
            hops: None,
            both_ipv6: false,
            // The world opens extra sockets: the birthday search runs where the classes
            // call for it.
            search: true,
            seed: self.config.seed ^ u64::from(role == Role::Opener),
            // The relay's word in a Node; here the peer's reflexive address as the
            // reflectors saw it.
            search_ip: Some(remote.reflexive.ip()),
            socket: None,
        };
        let plan_a = plan(Role::Opener, start, &b, class_a, class_b);
        let start_b = start.checked_sub(self.config.skew).unwrap_or(start);
        let plan_b = plan(Role::Follower, start_b, &a, class_b, class_a);
        for (side, plan) in [(0, plan_a), (1, plan_b)] {
            let punch = self.config.punch.clone();
            self.world.with_machine(self.sides[side], |m, now| {
                if let LabHost::Peer(peer) = m {
                    peer.start_punch(now, punch, plan);
                }
            });
        }
        let p = &self.config.punch;
        let whole = (p.attempt_len(self.config.rtt) + p.stale_wait) * p.max_attempts;
        let limit = start + whole + Duration::from_secs(5);
        let sides = self.sides;
        self.world.run_while(limit, |w| {
            sides
                .iter()
                .any(|&s| matches!(w.machine(s), LabHost::Peer(p) if !p.punch_finished()))
        });
    }

    fn report(&self) -> PairReport {
        let mut report = PairReport {
            pairing: self.pairing,
            possible: self.pairing.possible(),
            skipped: false,
            direct: false,
            punch_time: None,
            attempts: 0,
            winner: None,
            quirk_hits: 0,
        };
        let mut won = [None, None];
        for e in self.world.events() {
            let side = self.sides.iter().position(|&s| s == e.host);
            match (&e.event, side) {
                (PunchEvent::Skipped, _) => report.skipped = true,
                (PunchEvent::AttemptStarted { attempt, .. }, Some(0)) => {
                    report.attempts = attempt + 1
                }
                (PunchEvent::Succeeded(p), Some(i)) => {
                    won[i] = Some(e.at);
                    if i == 0 {
                        report.winner = Some(p.kind);
                    }
                }
                _ => {}
            }
        }
        if let ([Some(a), Some(b)], Some(start)) = (won, self.start) {
            report.direct = true;
            report.punch_time = Some(a.max(b).saturating_duration_since(start));
        }
        for nat in self.world.nats() {
            let hits = nat
                .log()
                .iter()
                .filter(|l| matches!(l.event, NatEvent::QuirkHit { .. }));
            report.quirk_hits += hits.count();
        }
        report
    }
}

/// What a peer learned from the reflectors.
#[derive(Clone, Debug)]
struct Gathering {
    reflexive: SocketAddr,
    candidates: Vec<Candidate>,
}

/// A lab host: a reflector or a peer.
enum LabHost {
    Reflector(Box<Responder>),
    Peer(Box<Peer>),
}

/// A peer: a STUN client for gathering, then a puncher.
struct Peer {
    local: SocketAddr,
    client: BindingClient,
    expected: usize,
    outcomes: BTreeMap<BindingId, BindingOutcome>,
    gathered: Option<Gathering>,
    puncher: Option<Puncher>,
    out: VecDeque<Output<PunchEvent>>,
    last_now: Instant,
}

impl Peer {
    fn new(now: Instant, local: SocketAddr, reflectors: &[SocketAddr], seed: u8) -> Self {
        let mut client = BindingClient::new(ClientConfig::default(), [seed; 32]);
        for &r in reflectors {
            client.start(now, r, ChangeRequest::default());
        }
        let mut peer = Self {
            local,
            client,
            expected: reflectors.len(),
            outcomes: BTreeMap::new(),
            gathered: None,
            puncher: None,
            out: VecDeque::new(),
            last_now: now,
        };
        peer.pump();
        peer
    }

    fn gathered(&self) -> Option<Gathering> {
        self.gathered.clone()
    }

    fn punch_finished(&self) -> bool {
        self.puncher.as_ref().is_none_or(Puncher::is_finished)
    }

    fn start_punch(&mut self, now: Instant, config: PunchConfig, plan: Plan) {
        let mut puncher = Puncher::new(config, plan, now);
        // One punch per world: nothing to share a node's budget per target network with.
        puncher.grant_search(u64::MAX);
        puncher.handle_timeout(now);
        self.puncher = Some(puncher);
        self.pump();
    }

    /// Moves the children's outputs into the queue; turns the reflectors' answers into
    /// candidates once all are in.
    fn pump(&mut self) {
        while let Some(output) = self.client.poll_output() {
            match output {
                Output::Event(outcome) => {
                    self.outcomes.insert(outcome.id, outcome);
                }
                Output::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                Output::Sockets(r) => self.out.push_back(Output::Sockets(r)),
            }
        }
        if self.gathered.is_none() && self.outcomes.len() == self.expected {
            self.gathered = self.candidates();
        }
        if let Some(puncher) = &mut self.puncher {
            while let Some(output) = puncher.poll_output() {
                self.out.push_back(output);
            }
        }
    }

    /// LAN, reflexive and predicted candidates from the reflectors' answers.
    fn candidates(&self) -> Option<Gathering> {
        let seen: Vec<Observation> = self
            .outcomes
            .values()
            .filter_map(Observation::from_outcome)
            .collect();
        let first = seen.first()?.mapped;
        let last = seen.last()?.mapped;
        let mut candidates = vec![
            Candidate::new(CandidateKind::Lan, self.local),
            Candidate::new(CandidateKind::Reflexive, first),
        ];
        if classify_mapping(&seen) != MappingBehaviour::EndpointIndependent {
            let ports: Vec<u16> = seen.iter().map(|o| o.mapped.port()).collect();
            candidates.extend(predict(
                last,
                classify_port_allocation(self.local.port(), &ports),
            ));
        }
        Some(Gathering {
            reflexive: first,
            candidates,
        })
    }
}

impl Machine for LabHost {
    type Event = PunchEvent;

    fn handle_input(&mut self, now: Instant, input: Input) {
        match self {
            LabHost::Reflector(r) => r.handle_input(now, input),
            LabHost::Peer(p) => {
                p.last_now = p.last_now.max(now);
                match input {
                    Input::Datagram(Datagram {
                        local,
                        remote,
                        payload,
                    }) => {
                        let claimed = (p.puncher.as_mut())
                            .is_some_and(|x| x.handle_datagram(now, local, remote, &payload));
                        if !claimed {
                            p.client.handle_input(
                                now,
                                Input::Datagram(Datagram {
                                    local,
                                    remote,
                                    payload,
                                }),
                            );
                        }
                    }
                    other => {
                        p.client.handle_input(now, other.clone());
                        if let Some(x) = &mut p.puncher {
                            x.handle_input(now, other);
                        }
                    }
                }
                p.pump();
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<PunchEvent>> {
        match self {
            LabHost::Reflector(r) => Some(r.poll_output()?.map_event(|never| match never {})),
            LabHost::Peer(p) => p.out.pop_front(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            LabHost::Reflector(r) => r.poll_timeout(),
            LabHost::Peer(p) if !p.out.is_empty() => Some(p.last_now),
            LabHost::Peer(p) => {
                let punch = p.puncher.as_ref().and_then(Puncher::poll_timeout);
                [p.client.poll_timeout(), punch].into_iter().flatten().min()
            }
        }
    }
}
