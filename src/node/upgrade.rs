//! Relay → direct: hole punching over a relayed connection, the switch of the peer's
//! virtual address to the direct path, the direct path's liveness, and the fall back to the
//! relay (docs/PROTOCOL.md §13).
//!
//! The dialer of a relayed connection is the opener: once the connection is ready it sends
//! its own candidates (each NAT discovery report sets them, `node::reach`; a driver or lab
//! may set them too, [`Node::set_punch_candidates`]) in PUNCH_OFFER on
//! the control stream; the acceptor answers with PUNCH_ANSWER, the opener fixes the start
//! with PUNCH_SYNC, and both run a [`Puncher`] on the node's socket. The moment a probe is
//! answered the side switches the connection's virtual address to the direct address (no
//! hysteresis against a relay), calls quinn's `path_changed` so congestion and RTT state
//! restart, and keeps the circuit as backup: packets still arriving over it reach the same
//! connection. A [`Liveness`] watches the direct path; when it stops answering the
//! connection falls back to the circuit at once, and the opener offers a new punch after
//! [`UpgradeConfig::retry_after`]. [`Event::PathChanged`] tells the application each switch
//! and why.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::nat::punch::{
    Candidate, NatClass, Plan, PunchConfig, PunchEvent, Puncher, Role, SessionTag,
};
use crate::path::{Liveness, PathKind};
use crate::wire::{
    NatInfo, PunchAnswer, PunchOffer, PunchOutcome, PunchResult, PunchSync, WireCandidate,
};

use super::*;

/// How a node upgrades relayed connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// The punch's timing.
    pub punch: PunchConfig,
    /// Whether the dialer of a relayed connection starts a punch by itself (default true).
    pub auto: bool,
    /// The shortest gap between liveness probes on a direct path; the gap is
    /// `max(this, 2 · the punch's probe RTT)` (default 100 ms).
    pub keepalive: Duration,
    /// Unanswered liveness probes in a row after which the direct path is dead (default 4).
    pub dead_after: u32,
    /// After a failed or lost direct path, the opener punches again this much later
    /// (default 60 s).
    pub retry_after: Duration,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        Self {
            punch: PunchConfig::default(),
            auto: true,
            keepalive: Duration::from_millis(100),
            dead_after: 4,
            retry_after: Duration::from_secs(60),
        }
    }
}

/// Why a connection's path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathChange {
    /// A punch found a direct path; the relay circuit stays as backup.
    Punched {
        /// The direct address.
        remote: SocketAddr,
        /// The probe's round trip on it.
        rtt: Duration,
    },
    /// The direct path stopped answering; back on the relay circuit.
    DirectPathDead,
}

/// Punch outcomes of one pair of NAT classes (ours, the peer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairCounts {
    /// Our NAT as we knew it.
    pub local: NatClass,
    /// The peer's NAT as it said.
    pub remote: NatClass,
    /// Punches started.
    pub attempts: u64,
    /// Punches that found a direct path.
    pub successes: u64,
    /// Punches whose every attempt failed.
    pub failures: u64,
    /// Punches the classes ruled out.
    pub skipped: u64,
}

/// What the upgrade machinery did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeCounters {
    /// Per pair of NAT classes.
    pub by_pair: Vec<PairCounts>,
    /// Switches from a relay to a direct path.
    pub upgrades: u64,
    /// Falls back from a dead direct path to the relay.
    pub fallbacks: u64,
    /// From the agreed start of each successful punch to the switch, the most recent
    /// [`MAX_TIMES`] (histogram data).
    pub upgrade_times: VecDeque<Duration>,
}

/// How long the opener waits for PUNCH_ANSWER before it gives the punch up (and retries
/// after [`UpgradeConfig::retry_after`]).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// How many upgrade times [`UpgradeCounters`] keeps.
pub const MAX_TIMES: usize = 1024;

impl UpgradeCounters {
    fn pair(&mut self, local: NatClass, remote: NatClass) -> &mut PairCounts {
        let at = self
            .by_pair
            .iter()
            .position(|p| p.local == local && p.remote == remote);
        let at = at.unwrap_or_else(|| {
            self.by_pair.push(PairCounts {
                local,
                remote,
                attempts: 0,
                successes: 0,
                failures: 0,
                skipped: 0,
            });
            self.by_pair.len() - 1
        });
        &mut self.by_pair[at]
    }
}

/// Where one connection's upgrade stands.
enum Stage {
    /// The opener sent PUNCH_OFFER at this time.
    Offered(Instant),
    /// The follower answered; it waits for PUNCH_SYNC with the opener's candidates.
    Answered(Vec<Candidate>),
    /// Probing.
    Punching(Box<Puncher>),
    /// On the direct path; the puncher keeps answering the peer's probes.
    Direct(Box<Puncher>, Liveness),
    /// On the relay; the opener punches again at the time given.
    Relayed(Option<Instant>),
}

/// One relayed connection's upgrade.
struct Session {
    peer: NodeId,
    role: Role,
    request_id: u64,
    tag: SessionTag,
    remote_nat: NatClass,
    relay_path: RealPath,
    stage: Stage,
}

/// The node's upgrade state.
pub(super) struct Upgrades {
    config: UpgradeConfig,
    local: Option<(Vec<Candidate>, NatClass)>,
    sessions: HashMap<ConnectionHandle, Session>,
    rng: ChaCha8Rng,
    next_request: u64,
    counters: UpgradeCounters,
}

impl Upgrades {
    pub(super) fn new(config: UpgradeConfig, seed: u64) -> Self {
        Self {
            config,
            local: None,
            sessions: HashMap::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_request: 0,
            counters: UpgradeCounters::default(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| match &s.stage {
                Stage::Punching(p) => p.poll_timeout(),
                Stage::Direct(p, live) => Some(
                    p.poll_timeout()
                        .map_or(live.poll_timeout(), |t| t.min(live.poll_timeout())),
                ),
                Stage::Relayed(retry) => *retry,
                Stage::Offered(at) => at.checked_add(OFFER_TIMEOUT),
                Stage::Answered(_) => None,
            })
            .min()
    }

    fn local(&self) -> (Vec<Candidate>, NatClass) {
        self.local
            .clone()
            .unwrap_or((Vec::new(), NatClass::UNKNOWN))
    }
}

impl Node {
    /// Sets this node's own punch candidates (LAN, reflexive, predicted) and NAT class, as
    /// NAT discovery found them; punches offered or answered from now on use them.
    pub fn set_punch_candidates(&mut self, candidates: Vec<Candidate>, nat: NatClass) {
        self.upgrades.local = Some((candidates, nat));
    }

    /// Starts a punch on the relayed connection to `peer` (we are the opener); false when
    /// there is no ready relayed connection to it or a punch is already under way.
    pub fn upgrade(&mut self, now: Instant, peer: NodeId) -> bool {
        self.enter(now);
        let handle = self.conns.iter().find_map(|(h, c)| {
            let relayed = self.path_kind(&c.virtual_addr) == PathKind::Relayed;
            (c.peer == Some(peer) && c.phase == Phase::Ready && relayed).then_some(*h)
        });
        let started = match handle {
            Some(handle) => self.offer(now, handle),
            None => false,
        };
        self.settle(now);
        started
    }

    /// What the upgrades did.
    pub fn upgrade_counters(&self) -> &UpgradeCounters {
        &self.upgrades.counters
    }

    /// Live connections whose packets go (direct, through a relay).
    pub fn connection_kinds(&self) -> (usize, usize) {
        let relayed = (self.conns.values())
            .filter(|c| self.path_kind(&c.virtual_addr) == PathKind::Relayed)
            .count();
        (self.conns.len() - relayed, relayed)
    }

    /// A connection became ready: the dialer of a relayed one offers a punch.
    pub(super) fn upgrade_on_ready(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let relayed = self.path_kind(&conn.virtual_addr) == PathKind::Relayed;
        if self.upgrades.config.auto && relayed && conn.direction == Direction::Outbound {
            self.offer(now, handle);
        }
    }

    /// Sends PUNCH_OFFER on `handle`'s control stream.
    fn offer(&mut self, now: Instant, handle: ConnectionHandle) -> bool {
        let busy = self
            .upgrades
            .sessions
            .get(&handle)
            .is_some_and(|s| !matches!(s.stage, Stage::Relayed(_)));
        let Some(conn) = self.conns.get(&handle) else {
            return false;
        };
        let (Some(peer), Some(control), Some(relay_path)) =
            (conn.peer, conn.control, self.paths.real(&conn.virtual_addr))
        else {
            return false;
        };
        if busy || relay_path.kind() != PathKind::Relayed {
            return false;
        }
        let mut tag = [0u8; 8];
        self.upgrades.rng.fill_bytes(&mut tag);
        self.upgrades.next_request += 1;
        let request_id = self.upgrades.next_request;
        let (candidates, nat) = self.upgrades.local();
        let offer = Message::from(PunchOffer {
            request_id,
            tag,
            nat: NatInfo::from(nat),
            candidates: candidates.into_iter().map(WireCandidate::from).collect(),
        });
        let conn = self.conns.get_mut(&handle).expect("looked up above");
        let _ = conn.send(control, &offer, false);
        let session = Session {
            peer,
            role: Role::Opener,
            request_id,
            tag: SessionTag(tag),
            remote_nat: NatClass::UNKNOWN,
            relay_path,
            stage: Stage::Offered(now),
        };
        self.upgrades.sessions.insert(handle, session);
        true
    }

    /// A punch frame on `handle`'s control stream.
    pub(super) fn on_punch_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        message: Message,
    ) {
        match message {
            Message::PunchOffer(offer) => self.on_offer(now, handle, offer),
            Message::PunchAnswer(answer) => self.on_answer(now, handle, answer),
            Message::PunchSync(sync) => self.on_sync(now, handle, sync),
            Message::PunchResult(_) => {}
            _ => {}
        }
    }

    fn on_offer(&mut self, now: Instant, handle: ConnectionHandle, offer: PunchOffer) {
        // The opener offers again only once its direct path is gone: so is ours.
        let direct = (self.upgrades.sessions.get(&handle))
            .is_some_and(|s| matches!(s.stage, Stage::Direct(..)));
        if direct {
            self.fall_back(now, handle);
        }
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let (Some(peer), Some(control), Some(relay_path)) =
            (conn.peer, conn.control, self.paths.real(&conn.virtual_addr))
        else {
            return;
        };
        if relay_path.kind() != PathKind::Relayed {
            return;
        }
        let (candidates, nat) = self.upgrades.local();
        let answer = Message::from(PunchAnswer {
            request_id: offer.request_id,
            nat: NatInfo::from(nat),
            candidates: candidates.into_iter().map(WireCandidate::from).collect(),
        });
        let conn = self.conns.get_mut(&handle).expect("looked up above");
        let _ = conn.send(control, &answer, false);
        let _ = now;
        let remote: Vec<Candidate> = offer
            .candidates
            .iter()
            .filter_map(WireCandidate::candidate)
            .collect();
        let session = Session {
            peer,
            role: Role::Follower,
            request_id: offer.request_id,
            tag: SessionTag(offer.tag),
            remote_nat: NatClass::from(&offer.nat),
            relay_path,
            stage: Stage::Answered(remote),
        };
        self.upgrades.sessions.insert(handle, session);
    }

    fn on_answer(&mut self, now: Instant, handle: ConnectionHandle, answer: PunchAnswer) {
        let Some(session) = self.upgrades.sessions.get_mut(&handle) else {
            return;
        };
        let Stage::Offered(at) = session.stage else {
            return;
        };
        if session.request_id != answer.request_id {
            return;
        }
        session.remote_nat = NatClass::from(&answer.nat);
        let rtt = now.saturating_duration_since(at);
        let sync = Message::from(PunchSync {
            request_id: answer.request_id,
            start_in_ms: 0,
        });
        if let Some(conn) = self.conns.get_mut(&handle) {
            if let Some(control) = conn.control {
                let _ = conn.send(control, &sync, false);
            }
        }
        let remote: Vec<Candidate> = answer
            .candidates
            .iter()
            .filter_map(WireCandidate::candidate)
            .collect();
        let start = now.checked_add(rtt / 2).unwrap_or(now);
        self.start_punch(now, handle, remote, rtt, start);
    }

    fn on_sync(&mut self, now: Instant, handle: ConnectionHandle, sync: PunchSync) {
        let Some(session) = self.upgrades.sessions.get_mut(&handle) else {
            return;
        };
        if session.request_id != sync.request_id {
            return;
        }
        let Stage::Answered(remote) = std::mem::replace(&mut session.stage, Stage::Relayed(None))
        else {
            return;
        };
        let rtt = self
            .conns
            .get(&handle)
            .map_or(Duration::from_millis(100), |c| c.quinn.rtt());
        let start = now
            .checked_add(Duration::from_millis(u64::from(sync.start_in_ms)))
            .unwrap_or(now);
        self.start_punch(now, handle, remote, rtt, start);
    }

    fn start_punch(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        remote: Vec<Candidate>,
        rtt: Duration,
        start: Instant,
    ) {
        let (local_candidates, local_nat) = self.upgrades.local();
        let Some(session) = self.upgrades.sessions.get_mut(&handle) else {
            return;
        };
        let same_public_ip = local_candidates.iter().any(|l| {
            l.kind == crate::nat::punch::CandidateKind::Reflexive
                && remote
                    .iter()
                    .any(|r| r.kind == l.kind && r.addr.ip() == l.addr.ip())
        });
        let plan = Plan {
            tag: session.tag,
            remote,
            rtt,
            role: session.role,
            start,
            local_nat,
            remote_nat: session.remote_nat,
            same_public_ip,
        };
        let mut puncher = Puncher::new(self.upgrades.config.punch.clone(), plan, now);
        puncher.handle_timeout(now);
        let remote_nat = session.remote_nat;
        session.stage = Stage::Punching(Box::new(puncher));
        self.upgrades.counters.pair(local_nat, remote_nat).attempts += 1;
        self.instruments
            .metrics
            .nat_punches
            .record_attempt(local_nat, remote_nat);
    }

    /// Offers a STUN datagram to the upgrades; true when one of them took it.
    pub(super) fn upgrade_stun(&mut self, now: Instant, datagram: &Datagram) -> bool {
        let (from, payload) = (datagram.remote, &datagram.payload[..]);
        self.upgrades
            .sessions
            .values_mut()
            .any(|s| match &mut s.stage {
                Stage::Punching(p) => p.handle_datagram(now, from, payload),
                Stage::Direct(p, live) => {
                    live.handle_datagram(now, from, payload)
                        || p.handle_datagram(now, from, payload)
                }
                _ => false,
            })
    }

    /// Runs the sessions' timers.
    pub(super) fn upgrade_timeout(&mut self, now: Instant) {
        let mut retries = Vec::new();
        for (handle, s) in self.upgrades.sessions.iter_mut() {
            match &mut s.stage {
                Stage::Punching(p) => p.handle_timeout(now),
                Stage::Direct(p, live) => {
                    p.handle_timeout(now);
                    live.handle_timeout(now);
                }
                Stage::Relayed(Some(at)) if *at <= now => retries.push(*handle),
                Stage::Offered(at) if now.saturating_duration_since(*at) >= OFFER_TIMEOUT => {
                    let retry = now.checked_add(self.upgrades.config.retry_after);
                    s.stage = Stage::Relayed(retry);
                }
                _ => {}
            }
        }
        for handle in retries {
            self.offer(now, handle);
        }
    }

    /// Drains the punchers and liveness probes, acting on what they say: switch to a
    /// direct path, fall back to the relay. Returns whether anything happened.
    pub(super) fn drive_upgrades(&mut self, now: Instant) -> bool {
        let mut busy = false;
        let handles: Vec<ConnectionHandle> = self.upgrades.sessions.keys().copied().collect();
        for handle in handles {
            let mut events = Vec::new();
            let mut dead = false;
            if let Some(s) = self.upgrades.sessions.get_mut(&handle) {
                let (puncher, live) = match &mut s.stage {
                    Stage::Punching(p) => (Some(p), None),
                    Stage::Direct(p, live) => (Some(p), Some(live)),
                    _ => (None, None),
                };
                if let Some(p) = puncher {
                    while let Some(output) = p.poll_output() {
                        busy = true;
                        match output {
                            Output::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                            Output::Event(e) => events.push(e),
                        }
                    }
                }
                if let Some(live) = live {
                    while let Some(t) = live.poll_transmit() {
                        busy = true;
                        self.out.push_back(Output::Transmit(t));
                    }
                    dead = live.is_dead(now);
                }
            }
            for event in events {
                self.on_punch_event(now, handle, event);
            }
            if dead {
                busy = true;
                self.fall_back(now, handle);
            }
        }
        busy
    }

    fn on_punch_event(&mut self, now: Instant, handle: ConnectionHandle, event: PunchEvent) {
        let (local_nat, outcome) = (self.upgrades.local().1, &event);
        let Some(s) = self.upgrades.sessions.get_mut(&handle) else {
            return;
        };
        let remote_nat = s.remote_nat;
        let (outcome, remote, attempts) = match *outcome {
            PunchEvent::Succeeded(p) => (PunchOutcome::Succeeded, vec![p.remote], p.attempt + 1),
            PunchEvent::Failed { attempts } => (PunchOutcome::Failed, Vec::new(), attempts),
            PunchEvent::Skipped => (PunchOutcome::Skipped, Vec::new(), 0),
            _ => return,
        };
        let result = Message::from(PunchResult {
            request_id: s.request_id,
            outcome,
            attempts: u8::try_from(attempts).unwrap_or(u8::MAX),
            remote,
        });
        let retry = (s.role == Role::Opener)
            .then(|| now.checked_add(self.upgrades.config.retry_after))
            .flatten();
        let pair = self.upgrades.counters.pair(local_nat, remote_nat);
        match event {
            PunchEvent::Succeeded(_) => pair.successes += 1,
            PunchEvent::Failed { .. } => pair.failures += 1,
            _ => pair.skipped += 1,
        }
        self.instruments.punch_ended(local_nat, remote_nat, &event);
        if let Some(conn) = self.conns.get_mut(&handle) {
            if let Some(control) = conn.control {
                let _ = conn.send(control, &result, false);
            }
        }
        match event {
            PunchEvent::Succeeded(p) => self.switch_direct(now, handle, p.remote, p.rtt, p.elapsed),
            _ => {
                if let Some(s) = self.upgrades.sessions.get_mut(&handle) {
                    s.stage = Stage::Relayed(retry);
                }
            }
        }
    }

    /// Moves the connection onto the direct path at once.
    fn switch_direct(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        remote: SocketAddr,
        rtt: Duration,
        elapsed: Duration,
    ) {
        let Some(virtual_addr) = self.conns.get(&handle).map(|c| c.virtual_addr) else {
            return;
        };
        let direct = RealPath::Direct(remote);
        // Packets of the peer that came direct before our switch may have been given a
        // virtual address of their own; it has no connection.
        if let Some(owner) = self.paths.lookup(&direct) {
            if owner != virtual_addr && !self.conns.values().any(|c| c.virtual_addr == owner) {
                self.paths.remove(&owner);
            }
        }
        if self.paths.switch(virtual_addr, direct).is_err() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.quinn.path_changed(now);
        }
        let Some(s) = self.upgrades.sessions.get_mut(&handle) else {
            return;
        };
        let Stage::Punching(puncher) = std::mem::replace(&mut s.stage, Stage::Relayed(None)) else {
            return;
        };
        let interval = self.upgrades.config.keepalive.max(rtt.saturating_mul(2));
        let live = Liveness::new(
            now,
            remote,
            s.tag,
            interval,
            self.upgrades.config.dead_after,
        );
        s.stage = Stage::Direct(puncher, live);
        let peer = s.peer;
        let counters = &mut self.upgrades.counters;
        counters.upgrades += 1;
        self.instruments.upgraded(handle, elapsed);
        if counters.upgrade_times.len() == MAX_TIMES {
            counters.upgrade_times.pop_front();
        }
        counters.upgrade_times.push_back(elapsed);
        let change = PathChange::Punched { remote, rtt };
        self.path_changed_event(peer, PathKind::Direct, change);
    }

    /// The direct path died: back onto the relay circuit at once.
    fn fall_back(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(s) = self.upgrades.sessions.get_mut(&handle) else {
            return;
        };
        let retry = (s.role == Role::Opener)
            .then(|| now.checked_add(self.upgrades.config.retry_after))
            .flatten();
        s.stage = Stage::Relayed(retry);
        let (peer, relay_path) = (s.peer, s.relay_path);
        self.upgrades.counters.fallbacks += 1;
        self.instruments.metrics.nat_fallbacks += 1;
        if let Some(conn) = self.conns.get_mut(&handle) {
            if self.paths.switch(conn.virtual_addr, relay_path).is_ok() {
                conn.quinn.path_changed(now);
                self.instruments
                    .connection_on_path(handle, PathKind::Relayed);
            }
        }
        self.path_changed_event(peer, PathKind::Relayed, PathChange::DirectPathDead);
    }

    fn path_changed_event(&mut self, peer: NodeId, path: PathKind, reason: PathChange) {
        self.out
            .push_back(Output::Event(Event::PathChanged { peer, path, reason }));
    }

    /// A connection is gone: its upgrade too.
    pub(super) fn upgrade_forget(&mut self, handle: ConnectionHandle) {
        self.upgrades.sessions.remove(&handle);
    }
}
