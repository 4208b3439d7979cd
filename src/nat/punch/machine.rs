//! The punch machine: probes, answers, retries, and the winning pair.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::candidate::{Candidate, CandidateKind, ordered};
use super::config::PunchConfig;
use super::oracle::{NatClass, SearchSide, direct_possible, plainly_possible, search_side};
use super::search::{HardSockets, PortDraw};
use super::touch::FirstTouches;
use crate::nat::stun::{Attribute, Class, IntegrityKey, Message, Method, TransactionId, decode};
use crate::scope::is_global_ipv6;
use crate::{Datagram, Input, Machine, Output, SocketRequest, Transmit};

/// Who moves first in an attempt. The two peers must agree (the caller derives it, e.g.
/// the dialer of the relayed connection opens); roles swap on every later attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens its own NAT first with a TTL-limited burst, then probes.
    Opener,
    /// Probes with full TTL once the opener's burst has opened the opener's NAT
    /// ([`PunchConfig::follow_after`] the agreed start).
    Follower,
}

impl Role {
    /// The other role.
    pub fn flip(self) -> Role {
        match self {
            Role::Opener => Role::Follower,
            Role::Follower => Role::Opener,
        }
    }

    /// The role in attempt `attempt` (0-based) of a side whose first-attempt role is `self`.
    pub fn in_attempt(self, attempt: u32) -> Role {
        if attempt % 2 == 0 { self } else { self.flip() }
    }
}

/// The 8 bytes both peers agree on for one punch; every probe's STUN transaction id starts
/// with them, so a node tells its peer's probes from other Binding requests. It travels
/// only inside the peers' TLS-protected connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionTag(pub [u8; 8]);

/// Everything the peers agreed on for a punch, from this side's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The session's tag.
    pub tag: SessionTag,
    /// The key of every probe's and answer's MESSAGE-INTEGRITY-SHA256, swapped over the
    /// peers' encrypted connection: a probe or answer that does not check is ignored.
    pub key: IntegrityKey,
    /// The peer's candidates.
    pub remote: Vec<Candidate>,
    /// Round-trip time to the peer, as measured over the relayed connection.
    pub rtt: Duration,
    /// This side's role in the first attempt.
    pub role: Role,
    /// The agreed start of the first attempt, on this side's clock.
    pub start: Instant,
    /// This side's NAT, when discovery knows it.
    pub local_nat: NatClass,
    /// The peer's NAT, when its record says.
    pub remote_nat: NatClass,
    /// Whether the two sides share a public address (one NAT in front of both): the classes
    /// then say nothing about their LAN path and never rule the punch out.
    pub same_public_ip: bool,
    /// Whether both sides offered a global IPv6 candidate. No NAT stands on an IPv6 pair,
    /// so the classes (which describe the IPv4 NAT) never rule the punch out, and an IPv6
    /// pair is preferred: an answer on another pair waits [`PunchConfig::ipv6_wait`] for
    /// one on an IPv6 pair before it wins.
    pub both_ipv6: bool,
    /// IP hops from our socket to a public reflector, when NAT discovery counted them: every
    /// NAT of ours lies within them, so an opening burst of one less opens them all and
    /// dies before the open internet (see the module docs).
    pub hops: Option<u8>,
    /// Whether the owner opens extra sockets when asked ([`Output::Sockets`]): the birthday
    /// search runs only then (both sides derive it from the same classes).
    pub search: bool,
    /// The seed of the easy side's random port draw.
    pub seed: u64,
    /// The peer's IP as an authority vouches for it (the address the relay carrying the
    /// connection observes the peer at), never the peer's own word: the only IP the easy
    /// side of a birthday search probes. `None`: this side searches nothing.
    pub search_ip: Option<IpAddr>,
    /// An extra socket (a fresh local port) this side probes from instead of its main
    /// socket, toward candidates of its family: after a direct path died, a 5-tuple that no
    /// conntrack entry planted at either NAT during the outage matches (see the module
    /// docs). The punch owns it: it closes it when it fails or is closed, and keeps it
    /// for a winning pair that uses it ([`Punched::local`]). `None`: the main socket.
    pub socket: Option<SocketAddr>,
}

/// The winning candidate pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Punched {
    /// The peer's address that answered.
    pub remote: SocketAddr,
    /// Its kind.
    pub kind: CandidateKind,
    /// Our address as the peer saw it (XOR-MAPPED-ADDRESS of the answer).
    pub mapped: Option<SocketAddr>,
    /// The extra socket the pair uses on our side (the birthday search's hard side);
    /// `None`: the main socket. The punch keeps it open; the owner closes it
    /// ([`SocketRequest::Close`]) when the path is gone.
    pub local: Option<SocketAddr>,
    /// The probe's round trip.
    pub rtt: Duration,
    /// The attempt that won (0-based).
    pub attempt: u32,
    /// From the agreed start to the answer.
    pub elapsed: Duration,
}

/// What a punch tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PunchEvent {
    /// The NAT classes rule a direct path out: nothing was sent.
    Skipped,
    /// An attempt began.
    AttemptStarted {
        /// Which (0-based).
        attempt: u32,
        /// Our role in it.
        role: Role,
        /// The largest TTL of our opening burst (0: none).
        open_ttl: u8,
    },
    /// A probe came from an address the peer had not announced; it is probed too.
    PeerReflexive(SocketAddr),
    /// A probe was answered: the direct path works.
    Succeeded(Punched),
    /// An attempt ended without an answer; the next starts at `next` after both sides
    /// stayed silent.
    AttemptFailed {
        /// Which (0-based).
        attempt: u32,
        /// When the next attempt starts.
        next: Instant,
    },
    /// Every attempt failed.
    Failed {
        /// Attempts made.
        attempts: u32,
    },
}

/// What a punch did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// Probes sent with a limited TTL (opening bursts).
    pub opening_probes: u64,
    /// Probes sent with the default TTL (rounds and triggered checks).
    pub full_probes: u64,
    /// The peer's probes answered.
    pub answered: u64,
    /// Peer-reflexive candidates learned.
    pub peer_reflexive: u64,
    /// Probes and answers carrying the session's tag or one of our transaction ids whose
    /// MESSAGE-INTEGRITY-SHA256 was missing or wrong: ignored.
    pub unauthenticated: u64,
    /// Birthday search probes: the hard side's openings from its extra sockets, the easy
    /// side's probes to random ports.
    pub search_probes: u64,
    /// Extra sockets adopted (hard side).
    pub sockets: u64,
}

/// Where the punch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running(Attempt),
    Succeeded(Punched),
    Failed,
    Skipped,
}

/// One attempt's schedule and budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attempt {
    index: u32,
    role: Role,
    open_ttl: u8,
    starts: Instant,
    ends: Instant,
    next_round: Instant,
    rounds: u32,
    checks: u32,
    announced: bool,
    burst_sent: bool,
    /// When the opener sends the TTLs above the first attempt's (with its full rounds,
    /// once the follower's first probe has left its NAT: [`PunchConfig::open_after`]);
    /// `None`: none to send.
    deep_at: Option<Instant>,
}

/// A probe waiting for its answer.
#[derive(Clone, Copy, Debug)]
struct Sent {
    to: Candidate,
    /// The extra socket it left from (`None`: the main socket).
    local: Option<SocketAddr>,
    at: Instant,
}

/// An answer on a pair that is not preferred, held while an IPv6 pair may still answer.
#[derive(Clone, Copy, Debug)]
struct Held {
    to: Candidate,
    local: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    rtt: Duration,
    /// When it wins unless an IPv6 pair answers first.
    until: Instant,
}

/// One hole punch toward one peer from the node's socket, and from extra sockets when it
/// plays the hard side of a birthday search (see the module docs of [`crate::nat::punch`]).
/// Feed it every datagram; it claims the STUN ones that belong to the punch
/// ([`Puncher::handle_datagram`] returns `true`).
#[derive(Debug)]
pub struct Puncher {
    config: PunchConfig,
    plan: Plan,
    remote: Vec<Candidate>,
    state: State,
    sent: BTreeMap<TransactionId, Sent>,
    held: Option<Held>,
    next_id: u32,
    out: VecDeque<Output<PunchEvent>>,
    stats: PunchStats,
    last_now: Instant,
    /// The hard side's extra sockets.
    sockets: Option<HardSockets>,
    /// The easy side's port draw.
    draw: Option<PortDraw>,
    /// The hard side's pair the search found: the extra socket the peer's probe reached
    /// and the peer's address. Every later round probes it too, so a lost check or answer
    /// is retried.
    found: Option<(SocketAddr, Candidate)>,
    /// The fresh socket of [`Plan::socket`] while the punch holds it.
    fresh: Option<SocketAddr>,
    /// Our first packet to each destination, spaced while our NAT maps each destination
    /// to its next sequential port.
    touches: FirstTouches,
}

impl Puncher {
    /// A punch following `plan`; it sends nothing before `plan.start`. When the NAT classes
    /// rule a direct path out, it is born finished with [`PunchEvent::Skipped`].
    pub fn new(config: PunchConfig, plan: Plan, now: Instant) -> Self {
        let remote = ordered(&plan.remote, config.max_candidates);
        let search = search_side(&plan.local_nat, &plan.remote_nat)
            .filter(|_| !plan.same_public_ip && !plan.both_ipv6);
        let (local_nat, remote_nat) = (&plan.local_nat, &plan.remote_nat);
        let possible = plan.same_public_ip
            || plan.both_ipv6
            || match plan.search {
                true => direct_possible(local_nat, remote_nat),
                false => plainly_possible(local_nat, remote_nat),
            };
        let search = search.filter(|_| plan.search && possible);
        let target = plan.search_ip.filter(IpAddr::is_ipv4);
        let (sockets, draw) = match (search, target) {
            (Some(SearchSide::Hard), _) => (Some(HardSockets::new(config.search_sockets)), None),
            (Some(SearchSide::Easy), Some(ip)) => (None, Some(PortDraw::new(ip, plan.seed))),
            _ => (None, None),
        };
        let touches =
            FirstTouches::new(match plan.local_nat.maps_each_destination_to_next_port() {
                true => config.touch_gap(plan.rtt),
                false => Duration::ZERO,
            });
        let mut puncher = Self {
            touches,
            state: State::Failed,
            remote,
            sent: BTreeMap::new(),
            held: None,
            next_id: 0,
            out: VecDeque::new(),
            stats: PunchStats::default(),
            last_now: now,
            sockets,
            draw,
            found: None,
            fresh: plan.socket,
            config,
            plan,
        };
        if let Some(sockets) = &puncher.sockets {
            let count = sockets.wanted();
            (puncher.out).push_back(Output::Sockets(SocketRequest::Open { count }));
        }
        puncher.state = if possible {
            State::Running(puncher.attempt(0))
        } else {
            puncher.out.push_back(Output::Event(PunchEvent::Skipped));
            State::Skipped
        };
        puncher
    }

    /// The IP the easy side's birthday search would probe, before any probe was granted.
    pub fn search_target(&self) -> Option<IpAddr> {
        self.draw.as_ref().map(PortDraw::target)
    }

    /// Grants the easy side's search `probes` random-port probes over all its attempts
    /// (none until granted): what the node-wide budget per target network allows.
    pub fn grant_search(&mut self, probes: u64) {
        if let Some(draw) = &mut self.draw {
            draw.grant(probes);
        }
    }

    /// The winning pair, once there is one.
    pub fn punched(&self) -> Option<Punched> {
        match self.state {
            State::Succeeded(p) => Some(p),
            _ => None,
        }
    }

    /// True when the punch has ended (won, failed or skipped); a won punch still answers
    /// its peer's probes.
    pub fn is_finished(&self) -> bool {
        !matches!(self.state, State::Running(_))
    }

    /// Closes every extra socket the punch holds, the winning pair's too: its owner is
    /// done with the punch or the path ([`SocketRequest::Close`] is queued).
    pub fn close_sockets(&mut self) {
        self.release(None);
    }

    /// What the punch did so far.
    pub fn stats(&self) -> PunchStats {
        self.stats
    }

    /// The peer's candidates as probed now (peer-reflexive ones included), in order.
    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remote
    }

    /// Handles a datagram from `from` that arrived on local address `local`; returns `false`
    /// when it is not this punch's (not STUN, not Binding, not carrying the session tag, not
    /// answering one of our probes).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        payload: &[u8],
    ) -> bool {
        self.last_now = self.last_now.max(now);
        let Ok(decoded) = decode(payload) else {
            return false;
        };
        let message = decoded.message;
        if message.method != Method::BINDING {
            return false;
        }
        let id = message.transaction_id;
        let ours = match message.class {
            Class::Request => id.0[..8] == self.plan.tag.0,
            Class::Success | Class::Error => self.sent.contains_key(&id),
            Class::Indication => false,
        };
        if !ours {
            return false;
        }
        if !self.plan.key.verifies(payload) {
            // Forged or altered (an on-path spoofer): claimed, so nobody else answers it.
            self.stats.unauthenticated += 1;
            return true;
        }
        match message.class {
            Class::Request if !self.sent.contains_key(&id) => {
                let extra = self.extra(local);
                self.answer(now, extra, from, id);
            }
            Class::Success | Class::Error => {
                if let Some(sent) = self.sent.remove(&id) {
                    let arrived = self.extra(local);
                    let same_pair = sent.to.addr == from && sent.local == arrived;
                    if message.class == Class::Success && same_pair {
                        self.answered(now, sent, message.mapped_address());
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// `local` when it is one of the extra sockets the punch holds (the hard side's, or
    /// the fresh one); `None` for the main socket.
    fn extra(&self, local: SocketAddr) -> Option<SocketAddr> {
        let hard = self.sockets.as_ref().is_some_and(|s| s.owns(local));
        (hard || self.fresh == Some(local)).then_some(local)
    }

    /// Takes the extra sockets the driver opened (hard side of a birthday search; surplus
    /// and unasked-for sockets are closed again). Sockets that arrive after the attempt's
    /// start open their mappings at once.
    pub fn handle_sockets_opened(&mut self, now: Instant, opened: Vec<SocketAddr>) {
        self.last_now = self.last_now.max(now);
        let running = !self.is_finished();
        let (kept, surplus) = match self.sockets.as_mut() {
            Some(sockets) if running => sockets.adopt(opened),
            _ => (Vec::new(), opened),
        };
        self.close(surplus);
        self.stats.sockets += kept.len() as u64;
        if let State::Running(attempt) = self.state {
            if attempt.burst_sent {
                self.open_from(now, &kept);
            }
        }
    }

    /// Acts on every deadline passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        while let State::Running(mut attempt) = self.state {
            for waiting in self.touches.due(now) {
                self.send_probe(now, waiting.local, waiting.target, waiting.ttl);
            }
            if let Some(held) = self.held.filter(|h| now >= h.until.min(attempt.ends)) {
                self.won(now, held.to, held.local, held.mapped, held.rtt);
                return;
            }
            if now >= attempt.ends {
                self.next_attempt(attempt);
                continue;
            }
            if now < attempt.starts {
                return;
            }
            if !attempt.announced {
                attempt.announced = true;
                self.event(PunchEvent::AttemptStarted {
                    attempt: attempt.index,
                    role: attempt.role,
                    open_ttl: attempt.open_ttl,
                });
            }
            if !attempt.burst_sent {
                attempt.burst_sent = true;
                self.start_search(now, &attempt);
                match self.counted_ttl() {
                    Some(ttl) => self.burst(now, &mut attempt, ttl..=ttl),
                    None if attempt.role == Role::Opener => {
                        let low = attempt.open_ttl.min(self.config.first_open_ttl);
                        self.burst(now, &mut attempt, 1..=low);
                    }
                    None => {}
                }
            }
            if attempt.deep_at.is_some_and(|at| now >= at) {
                attempt.deep_at = None;
                let grown = self.config.first_open_ttl.saturating_add(1)..=attempt.open_ttl;
                self.burst(now, &mut attempt, grown);
            }
            self.search_batch(now);
            if now >= attempt.next_round {
                for target in self.remote.clone() {
                    self.probe(now, &mut attempt, target, None);
                }
                if let Some((local, target)) = self.found {
                    self.probe_from(now, &mut attempt, Some(local), target, None);
                }
                let gap = self.config.interval(attempt.rounds);
                attempt.rounds += 1;
                attempt.next_round = now.checked_add(gap).unwrap_or(now);
            }
            self.state = State::Running(attempt);
            return;
        }
    }

    /// When the punch next needs [`Puncher::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(self.last_now);
        }
        match self.state {
            State::Running(a) if a.starts > self.last_now => Some(a.starts),
            State::Running(a) => {
                let next = a.next_round.min(a.ends);
                let next = self.held.map_or(next, |h| h.until.min(next));
                let next =
                    (self.draw.as_ref().and_then(PortDraw::due)).map_or(next, |d| d.min(next));
                let next = self.touches.next_due().map_or(next, |t| t.min(next));
                Some(a.deep_at.map_or(next, |deep| deep.min(next)))
            }
            _ => None,
        }
    }

    /// The schedule of attempt `index`.
    fn attempt(&self, index: u32) -> Attempt {
        let rtt = self.plan.rtt;
        let len = self.config.attempt_len(rtt);
        let period = len.saturating_add(self.config.stale_wait);
        let offset = period.saturating_mul(index);
        let starts = self
            .plan
            .start
            .checked_add(offset)
            .unwrap_or(self.plan.start);
        let role = self.plan.role.in_attempt(index);
        let first_round = match role {
            Role::Opener => self.config.open_after(rtt),
            Role::Follower => self.config.follow_after(rtt),
        };
        let open_ttl = match (self.counted_ttl(), role) {
            (Some(ttl), _) => ttl,
            (None, Role::Opener) => self.config.open_ttl(index),
            (None, Role::Follower) => 0,
        };
        Attempt {
            index,
            role,
            open_ttl,
            starts,
            ends: starts.checked_add(len).unwrap_or(starts),
            next_round: starts.checked_add(first_round).unwrap_or(starts),
            rounds: 0,
            checks: 0,
            announced: false,
            burst_sent: false,
            deep_at: (self.counted_ttl().is_none() && open_ttl > self.config.first_open_ttl)
                .then(|| starts.checked_add(self.config.open_after(rtt)))
                .flatten(),
        }
    }

    /// The opening TTL from our counted hops ([`Plan::hops`]): one less than the distance to
    /// the reflector, so it crosses every NAT of ours and dies at a router before it. `None`
    /// when the hops were not counted, or were two or fewer: a reflector right behind our
    /// first hop leaves no router for the burst to die at (a TTL of 1 opens nothing, one of
    /// 2 could reach a NAT standing where the reflector does), so the growing schedule runs.
    fn counted_ttl(&self) -> Option<u8> {
        self.plan
            .hops
            .map(|h| h.saturating_sub(1))
            .filter(|t| *t >= 2)
    }

    /// Ends a failed attempt: schedules the next one or gives up.
    fn next_attempt(&mut self, attempt: Attempt) {
        // Answers to the old attempt's probes would come too late to matter.
        self.sent.clear();
        self.touches.clear();
        let index = attempt.index + 1;
        if let Some(draw) = &mut self.draw {
            draw.stop();
        }
        if index >= self.config.max_attempts {
            self.state = State::Failed;
            self.release(None);
            self.event(PunchEvent::Failed { attempts: index });
            return;
        }
        let next = self.attempt(index);
        self.state = State::Running(next);
        self.event(PunchEvent::AttemptFailed {
            attempt: attempt.index,
            next: next.starts,
        });
    }

    /// Part of the opener's burst: to every candidate, one probe per TTL in `ttls`. The two
    /// parts together cover 1 up to the attempt's opening TTL; whichever TTL just crosses
    /// our own NATs opens their mappings toward the peer. The low part (up to the first
    /// attempt's TTL) goes at the start and is meant to die before the peer's NAT; the
    /// grown part goes with the full rounds, after the follower's first probe has left its NAT,
    /// so even a TTL that reaches the peer's NAT (which on Linux plants a conntrack entry
    /// even when the TTL expires there) arrives after the peer's own mapping exists.
    fn burst(&mut self, now: Instant, attempt: &mut Attempt, ttls: std::ops::RangeInclusive<u8>) {
        for target in self.remote.clone() {
            for ttl in ttls.clone() {
                self.probe(now, attempt, target, Some(ttl));
            }
        }
    }

    /// Sends one probe to `target` from the fresh socket when the plan gave one of its
    /// family (else from the main socket) if the attempt's budget allows.
    fn probe(&mut self, now: Instant, attempt: &mut Attempt, target: Candidate, ttl: Option<u8>) {
        let fresh = self.fresh.filter(|f| f.is_ipv4() == target.addr.is_ipv4());
        self.probe_from(now, attempt, fresh, target, ttl);
    }

    /// Sends one probe to `target` from `local` (an extra socket; `None`: the main one) if
    /// the attempt's budget allows.
    fn probe_from(
        &mut self,
        now: Instant,
        attempt: &mut Attempt,
        local: Option<SocketAddr>,
        target: Candidate,
        ttl: Option<u8>,
    ) {
        if attempt.checks >= self.config.max_checks_per_attempt {
            return;
        }
        attempt.checks += 1;
        match ttl {
            Some(_) => self.stats.opening_probes += 1,
            None => self.stats.full_probes += 1,
        }
        if self.touches.admit(now, local, target, ttl) {
            self.send_probe(now, local, target, ttl);
        }
    }

    /// Sends one probe to `target` from `local`, outside any budget (the caller's job).
    fn send_probe(
        &mut self,
        now: Instant,
        local: Option<SocketAddr>,
        target: Candidate,
        ttl: Option<u8>,
    ) {
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.plan.tag.0);
        // The top bit tells the two sides' probes apart (their first-attempt roles differ),
        // so a side never takes its peer's probe for one of its own.
        let side = match self.plan.role {
            Role::Opener => 0,
            Role::Follower => 1 << 31,
        };
        id[8..].copy_from_slice(&(side | self.next_id).to_be_bytes());
        self.next_id = (self.next_id + 1) & !(1 << 31);
        let id = TransactionId(id);
        self.sent.insert(
            id,
            Sent {
                to: target,
                local,
                at: now,
            },
        );
        let request = Message::binding(Class::Request, id);
        self.send(local, target.addr, request, ttl);
    }

    /// At an attempt's start: the hard side opens its mappings from every extra socket, the
    /// easy side starts its draw a lead after a follower's first probe would (after the
    /// hard side's openings crossed its access link and its NAT).
    fn start_search(&mut self, now: Instant, attempt: &Attempt) {
        let open = self.sockets.as_ref().map(|s| s.open().to_vec());
        self.open_from(now, &open.unwrap_or_default());
        let rtt = self.plan.rtt;
        let after = (self.config.follow_after(rtt)).saturating_add(self.config.lead(rtt));
        if let Some(draw) = &mut self.draw {
            draw.begin(attempt.starts.checked_add(after).unwrap_or(now));
        }
    }

    /// The hard side's opening from `sockets`: one probe from each toward each of the
    /// peer's reflexive addresses of its family, with the TTL that crosses our own NAT and
    /// dies before the peer's (so it plants nothing there). Whichever mapping the peer's
    /// random probes hit, its socket answers.
    fn open_from(&mut self, now: Instant, sockets: &[SocketAddr]) {
        let ttl = self.counted_ttl().unwrap_or(self.config.first_open_ttl);
        let ttl = (ttl > 0).then_some(ttl);
        let targets: Vec<Candidate> = (self.remote.iter())
            .filter(|c| c.kind == CandidateKind::Reflexive)
            .copied()
            .collect();
        for &local in sockets {
            for target in targets
                .iter()
                .filter(|t| t.addr.is_ipv4() == local.is_ipv4())
            {
                self.stats.search_probes += 1;
                self.send_probe(now, Some(local), *target, ttl);
            }
        }
    }

    /// The easy side's batch of probes to random ports of the peer's NAT, when due.
    fn search_batch(&mut self, now: Instant) {
        let Some(draw) = &mut self.draw else { return };
        for addr in draw.batch(now, &self.config) {
            self.stats.search_probes += 1;
            let target = Candidate::new(CandidateKind::Searched, addr);
            self.send_probe(now, None, target, None);
        }
    }

    /// Asks the driver to close `sockets`, if any.
    fn close(&mut self, sockets: Vec<SocketAddr>) {
        if !sockets.is_empty() {
            (self.out).push_back(Output::Sockets(SocketRequest::Close(sockets)));
        }
    }

    /// The search is over: closes every extra socket but `keep` (the fresh one too) and
    /// stops the draw.
    fn release(&mut self, keep: Option<SocketAddr>) {
        if let Some(draw) = &mut self.draw {
            draw.stop();
        }
        let mut released = (self.sockets.as_mut()).map(|s| s.release_all_but(keep));
        let fresh = self.fresh.filter(|f| Some(*f) != keep);
        if let Some(fresh) = fresh {
            self.fresh = None;
            released.get_or_insert_with(Vec::new).push(fresh);
        }
        self.close(released.unwrap_or_default());
    }

    /// Answers a peer's probe from `from` that arrived on `local` (an extra socket; `None`:
    /// the main one), learns `from` if it is new, and probes it back at once from the same
    /// socket (a triggered check), within an attempt or between two.
    fn answer(
        &mut self,
        now: Instant,
        local: Option<SocketAddr>,
        from: SocketAddr,
        id: TransactionId,
    ) {
        if matches!(self.state, State::Failed | State::Skipped) {
            return;
        }
        self.stats.answered += 1;
        let mut response = Message::binding(Class::Success, id);
        response.attributes.push(Attribute::XorMappedAddress(from));
        self.send(local, from, response, None);
        let known = self.remote.iter().find(|c| c.addr == from).copied();
        let target = match known {
            Some(target) => target,
            None if self.remote.len() < self.config.max_candidates => {
                let learned = Candidate::new(CandidateKind::PeerReflexive, from);
                self.remote.push(learned);
                self.stats.peer_reflexive += 1;
                self.event(PunchEvent::PeerReflexive(from));
                learned
            }
            None => return,
        };
        let hard = local.filter(|l| self.sockets.as_ref().is_some_and(|s| s.owns(*l)));
        if let (Some(hard), None) = (hard, self.found) {
            self.found = Some((hard, target));
        }
        // Also before an attempt's start, between attempts: the peer's probe crossed its NAT
        // to us, so ours back to where it came from passes that NAT and plants nothing. A
        // peer whose probe we answer wins; without this check we would stay relayed until
        // our next attempt, 31 s on, while the peer went direct.
        if let State::Running(mut attempt) = self.state {
            self.probe_from(now, &mut attempt, local, target, None);
            self.state = State::Running(attempt);
        }
    }

    /// A probe to `sent.to` was answered: its pair wins, at once when it is preferred (an
    /// IPv6 pair, or any pair unless both sides have IPv6), else once
    /// [`PunchConfig::ipv6_wait`] passed without an IPv6 pair answering.
    fn answered(&mut self, now: Instant, sent: Sent, mapped: Option<SocketAddr>) {
        let rtt = now.saturating_duration_since(sent.at);
        if !self.plan.both_ipv6 || is_global_ipv6(&sent.to.addr) {
            self.won(now, sent.to, sent.local, mapped, rtt);
        } else if self.held.is_none() {
            let wait = self.config.ipv6_wait(self.plan.rtt);
            self.held = Some(Held {
                to: sent.to,
                local: sent.local,
                mapped,
                rtt,
                until: now.checked_add(wait).unwrap_or(now),
            });
        }
    }

    /// The pair from `local` to `to` wins.
    fn won(
        &mut self,
        now: Instant,
        to: Candidate,
        local: Option<SocketAddr>,
        mapped: Option<SocketAddr>,
        rtt: Duration,
    ) {
        let State::Running(attempt) = self.state else {
            return;
        };
        let punched = Punched {
            remote: to.addr,
            kind: to.kind,
            mapped,
            local,
            rtt,
            attempt: attempt.index,
            elapsed: now.saturating_duration_since(self.plan.start),
        };
        self.held = None;
        self.sent.clear();
        self.touches.clear();
        self.release(local);
        self.state = State::Succeeded(punched);
        self.event(PunchEvent::Succeeded(punched));
    }

    fn send(
        &mut self,
        source: Option<SocketAddr>,
        destination: SocketAddr,
        message: Message,
        ttl: Option<u8>,
    ) {
        let Ok(payload) = message.encode_with_integrity(&self.plan.key) else {
            unreachable!("a Binding message with at most one address attribute encodes")
        };
        self.out.push_back(Output::Transmit(Transmit {
            source,
            destination,
            payload,
            segment_size: None,
            ttl,
        }));
    }

    fn event(&mut self, event: PunchEvent) {
        self.out.push_back(Output::Event(event));
    }
}

impl Machine for Puncher {
    type Event = PunchEvent;

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram(Datagram {
                local,
                remote,
                payload,
            }) => {
                self.handle_datagram(now, local, remote, &payload);
            }
            Input::SocketsOpened(opened) => self.handle_sockets_opened(now, opened),
            Input::Timeout | Input::LocalAddressChanged { .. } => self.handle_timeout(now),
        }
    }

    fn poll_output(&mut self) -> Option<Output<PunchEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Puncher::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::punch::CandidateKind;

    /// The main socket's address in these tests.
    const MAIN: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
        5000,
    );

    /// Every transmit's (time since `t0`, TTL) while the machine runs until `until`.
    fn ttls(p: &mut Puncher, t0: Instant, until: Instant) -> Vec<(Duration, Option<u8>)> {
        let mut seen = Vec::new();
        let mut now = t0;
        while now <= until {
            p.handle_timeout(now);
            while let Some(output) = p.poll_output() {
                if let Output::Transmit(t) = output {
                    seen.push((now.saturating_duration_since(t0), t.ttl));
                }
            }
            let Some(next) = p.poll_timeout() else { break };
            now = next.max(now + Duration::from_millis(1));
        }
        seen
    }

    /// A follower's plan toward `remote`, starting at `t0`.
    fn plan(t0: Instant, remote: &[&str], both_ipv6: bool) -> Plan {
        Plan {
            tag: SessionTag(*b"macpunch"),
            key: IntegrityKey([7; 32]),
            remote: (remote.iter())
                .map(|a| Candidate::new(CandidateKind::Reflexive, a.parse().unwrap()))
                .collect(),
            rtt: Duration::from_millis(40),
            role: Role::Follower,
            start: t0,
            local_nat: NatClass::UNKNOWN,
            remote_nat: NatClass::UNKNOWN,
            same_public_ip: false,
            both_ipv6,
            hops: None,
            search: true,
            seed: 3,
            search_ip: None,
            socket: None,
        }
    }

    /// Runs `p` until `until`; the probes it sent, as (destination, transaction id).
    fn probes(p: &mut Puncher, now: Instant) -> Vec<(SocketAddr, TransactionId)> {
        p.handle_timeout(now);
        let mut sent = Vec::new();
        while let Some(output) = p.poll_output() {
            if let Output::Transmit(t) = output {
                let id = decode(&t.payload).unwrap().message.transaction_id;
                sent.push((t.destination, id));
            }
        }
        sent
    }

    /// The peer's authentic answer to probe `id`, from `from`.
    fn answer(p: &mut Puncher, now: Instant, from: SocketAddr, id: TransactionId) {
        let payload = (Message::binding(Class::Success, id))
            .encode_with_integrity(&IntegrityKey([7; 32]))
            .unwrap();
        assert!(p.handle_datagram(now, MAIN, from, &payload));
    }

    fn winner(p: &mut Puncher) -> Option<Punched> {
        while let Some(output) = p.poll_output() {
            if let Output::Event(PunchEvent::Succeeded(punched)) = output {
                return Some(punched);
            }
        }
        None
    }

    #[test]
    fn an_ipv6_pair_wins_over_an_ipv4_pair_that_answered_first_within_the_grace() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let (v4, v6) = ("198.51.100.2:4433", "[2001:db8:b::11]:4433");
        let mut p = Puncher::new(PunchConfig::default(), plan(t0, &[v4, v6], true), t0);
        let round = probes(&mut p, t0 + ms(40));
        // IPv6 first in the round.
        assert_eq!(round[0].0, v6.parse().unwrap());
        let id = |addr: &str| {
            round
                .iter()
                .find(|r| r.0 == addr.parse().unwrap())
                .unwrap()
                .1
        };
        answer(&mut p, t0 + ms(41), v4.parse().unwrap(), id(v4));
        assert_eq!(winner(&mut p), None);
        assert!(!p.is_finished());
        answer(&mut p, t0 + ms(50), v6.parse().unwrap(), id(v6));
        let won = winner(&mut p).expect("the IPv6 pair won");
        assert_eq!(won.remote, v6.parse().unwrap());
        assert_eq!(won.rtt, ms(10));
    }

    #[test]
    fn an_ipv4_pair_wins_after_the_grace_when_ipv6_stays_silent() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let (v4, v6) = ("198.51.100.2:4433", "[2001:db8:b::11]:4433");
        let config = PunchConfig::default();
        let wait = config.ipv6_wait(ms(40));
        let mut p = Puncher::new(config, plan(t0, &[v4, v6], true), t0);
        let round = probes(&mut p, t0 + ms(40));
        let v4_id = round.iter().find(|r| r.0 == v4.parse().unwrap()).unwrap().1;
        answer(&mut p, t0 + ms(42), v4.parse().unwrap(), v4_id);
        assert_eq!(winner(&mut p), None);
        assert!(p.poll_timeout().unwrap() <= t0 + ms(42) + wait);
        p.handle_timeout(t0 + ms(42) + wait - ms(1));
        assert_eq!(winner(&mut p), None);
        p.handle_timeout(t0 + ms(42) + wait);
        let won = winner(&mut p).expect("the IPv4 pair won");
        assert_eq!(won.remote, v4.parse().unwrap());
        assert_eq!(won.rtt, ms(2));
        assert_eq!(won.elapsed, ms(42) + wait);
    }

    #[test]
    fn without_ipv6_on_both_sides_the_first_answer_wins_and_classes_may_skip() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let v4 = "198.51.100.2:4433";
        let mut p = Puncher::new(PunchConfig::default(), plan(t0, &[v4], false), t0);
        let round = probes(&mut p, t0 + ms(40));
        answer(&mut p, t0 + ms(41), v4.parse().unwrap(), round[0].1);
        assert_eq!(winner(&mut p).map(|w| w.remote), Some(v4.parse().unwrap()));
        // Classes that rule out the IPv4 punch do not rule out an IPv6 pair.
        use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};
        let random = NatClass {
            mapping: MappingBehaviour::AddressAndPortDependent,
            filtering: FilteringBehaviour::AddressAndPortDependent,
            ports: PortAllocation::Random,
        };
        let hopeless = |both_ipv6| Plan {
            local_nat: random,
            remote_nat: random,
            ..plan(t0, &[v4, "[2001:db8:b::11]:4433"], both_ipv6)
        };
        let skipped = Puncher::new(PunchConfig::default(), hopeless(false), t0);
        assert!(skipped.is_finished());
        let tried = Puncher::new(PunchConfig::default(), hopeless(true), t0);
        assert!(!tried.is_finished());
    }

    /// A plan toward one IPv4 reflexive candidate with `role` and counted `hops`.
    fn plan_with(t0: Instant, role: Role, hops: Option<u8>) -> Plan {
        Plan {
            role,
            hops,
            ..plan(t0, &["198.51.100.2:4433"], false)
        }
    }

    #[test]
    fn with_counted_hops_both_sides_open_with_one_less_every_attempt() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let config = PunchConfig::default();
        let second = t0 + config.attempt_len(ms(40)) + config.stale_wait;
        // Four hops to the reflector (a home NAT inside a carrier NAT): TTL 3, at the
        // start, as follower too, and the same TTL in the next attempt. Full TTL follows
        // half the round trip and a lead (20 ms) later as follower, and once that probe
        // has crossed the peer's access link (half the round trip more) and a lead as
        // opener.
        let mut p = Puncher::new(config.clone(), plan_with(t0, Role::Follower, Some(4)), t0);
        let first = ttls(&mut p, t0, t0 + ms(50));
        assert_eq!(first, [(ms(0), Some(3)), (ms(40), None)]);
        let opening = ttls(&mut p, second, second + ms(85));
        assert_eq!(opening, [(ms(0), Some(3)), (ms(80), None)]);
        // A reflector two hops away leaves no router to die at: the growing schedule.
        for hops in [1, 2] {
            let mut p = Puncher::new(config.clone(), plan_with(t0, Role::Opener, Some(hops)), t0);
            let grown = ttls(&mut p, t0, t0 + ms(85));
            assert_eq!(grown, [(ms(0), Some(1)), (ms(0), Some(2)), (ms(80), None)]);
        }
    }

    #[test]
    fn the_opener_grows_its_ttl_per_attempt_and_sends_the_grown_part_after_the_followers_probe() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let plan = plan_with(t0, Role::Follower, None);
        let config = PunchConfig::default();
        let second = t0 + config.attempt_len(plan.rtt) + config.stale_wait;
        let mut p = Puncher::new(config, plan, t0);
        // First attempt: we follow, full TTL only, half the round trip (40 ms) and one lead
        // (20 ms) after the start.
        let first = ttls(&mut p, t0, t0 + ms(50));
        assert_eq!(first, [(ms(40), None)]);
        // Second attempt: we open, TTL 1-2 at its start; 3-4 and the full rounds once the
        // follower's probe has left its NAT: a round trip and two leads later.
        let opening = ttls(&mut p, second, second + ms(85));
        assert_eq!(
            opening,
            [
                (ms(0), Some(1)),
                (ms(0), Some(2)),
                (ms(80), Some(3)),
                (ms(80), Some(4)),
                (ms(80), None)
            ]
        );
    }

    #[test]
    fn behind_a_sequential_symmetric_nat_first_probes_leave_in_order_a_gap_apart() {
        use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let sequential = NatClass {
            mapping: MappingBehaviour::AddressAndPortDependent,
            filtering: FilteringBehaviour::AddressAndPortDependent,
            ports: PortAllocation::Sequential { step: 1 },
        };
        let peer = [
            "198.51.100.2:40001",
            "198.51.100.2:40002",
            "198.51.100.2:40003",
        ];
        let sent_by = |local_nat: NatClass| {
            let mut p = Puncher::new(
                PunchConfig::default(),
                Plan {
                    local_nat,
                    ..plan(t0, &peer, false)
                },
                t0,
            );
            let mut seen = Vec::new();
            let mut now = t0;
            while now <= t0 + ms(120) {
                p.handle_timeout(now);
                for t in outputs(&mut p).0 {
                    seen.push((now - t0, t.destination.port()));
                }
                let Some(next) = p.poll_timeout() else { break };
                now = next.max(now + ms(1));
            }
            seen
        };
        // The follower's first round (40 ms in), 25 ms between destinations, in order; the
        // second round (50 ms later) finds every destination touched and goes at once.
        assert_eq!(
            sent_by(sequential),
            [
                (ms(40), 40001),
                (ms(65), 40002),
                (ms(90), 40003),
                (ms(90), 40001),
                (ms(90), 40002),
                (ms(90), 40003)
            ]
        );
        // Any other NAT of ours: the round leaves at once.
        let masquerade = NatClass {
            mapping: MappingBehaviour::EndpointIndependent,
            ..sequential
        };
        let round: Vec<(Duration, u16)> = sent_by(masquerade).into_iter().take(3).collect();
        assert_eq!(round, [(ms(40), 40001), (ms(40), 40002), (ms(40), 40003)]);
    }

    /// The classes of a birthday search: we are `side`.
    fn search_plan(t0: Instant, side: SearchSide) -> Plan {
        use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};
        let hard = NatClass {
            mapping: MappingBehaviour::AddressAndPortDependent,
            filtering: FilteringBehaviour::AddressAndPortDependent,
            ports: PortAllocation::Random,
        };
        let easy = NatClass {
            mapping: MappingBehaviour::EndpointIndependent,
            ..hard
        };
        let (local_nat, remote_nat) = match side {
            SearchSide::Hard => (hard, easy),
            SearchSide::Easy => (easy, hard),
        };
        let mut plan = plan(t0, &["198.51.100.2:4433"], false);
        plan.remote.push(Candidate::new(
            CandidateKind::Lan,
            "10.1.0.2:4433".parse().unwrap(),
        ));
        Plan {
            local_nat,
            remote_nat,
            search_ip: Some("198.51.100.2".parse().unwrap()),
            socket: None,
            ..plan
        }
    }

    fn small_search() -> PunchConfig {
        PunchConfig {
            search_sockets: 2,
            search_probes: 25,
            ..PunchConfig::default()
        }
    }

    /// Everything `p` queued, split into transmits, socket requests and events.
    fn outputs(p: &mut Puncher) -> (Vec<Transmit>, Vec<SocketRequest>, Vec<PunchEvent>) {
        let (mut sent, mut sockets, mut events) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(output) = p.poll_output() {
            match output {
                Output::Transmit(t) => sent.push(t),
                Output::Sockets(r) => sockets.push(r),
                Output::Event(e) => events.push(e),
            }
        }
        (sent, sockets, events)
    }

    fn signed(message: Message) -> Bytes {
        message
            .encode_with_integrity(&IntegrityKey([7; 32]))
            .unwrap()
    }

    use bytes::Bytes;

    #[test]
    fn a_peer_probe_between_attempts_is_probed_back_and_its_answer_wins() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let peer: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        let config = PunchConfig::default();
        let plan = plan_with(t0, Role::Opener, None);
        let first_ends = t0 + config.attempt_len(plan.rtt);
        let mut p = Puncher::new(config, plan, t0);
        p.handle_timeout(first_ends);
        let (_, _, events) = outputs(&mut p);
        assert!(
            matches!(
                events[..],
                [.., PunchEvent::AttemptFailed { attempt: 0, .. }]
            ),
            "{events:?}"
        );
        // The peer started late (its PUNCH_SYNC was lost and sent again): its probe comes
        // 700 ms after our attempt gave up, 30 s before our next one.
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(b"macpunch");
        id[8] = 0x80;
        let late = first_ends + ms(700);
        let request = signed(Message::binding(Class::Request, TransactionId(id)));
        assert!(p.handle_datagram(late, MAIN, peer, &request));
        let (sent, _, _) = outputs(&mut p);
        let kinds: Vec<Class> = (sent.iter())
            .map(|t| decode(&t.payload).unwrap().message.class)
            .collect();
        assert_eq!(
            kinds,
            [Class::Success, Class::Request],
            "answered and probed back"
        );
        assert!(
            sent.iter()
                .all(|t| t.destination == peer && t.ttl.is_none())
        );
        let check = decode(&sent[1].payload).unwrap().message.transaction_id;
        answer(&mut p, late + ms(40), peer, check);
        let won = winner(&mut p).expect("the peer's answer wins");
        assert_eq!(won.remote, peer);
    }

    #[test]
    fn the_hard_side_opens_capped_sockets_answers_on_them_and_keeps_only_the_winner() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let mut p = Puncher::new(small_search(), search_plan(t0, SearchSide::Hard), t0);
        let (_, asked, _) = outputs(&mut p);
        assert_eq!(asked, [SocketRequest::Open { count: 2 }]);
        let s: Vec<SocketAddr> = (1..=3)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 40000 + i)))
            .collect();
        p.handle_sockets_opened(t0, s.clone());
        let (_, closed, _) = outputs(&mut p);
        assert_eq!(closed, [SocketRequest::Close(vec![s[2]])], "beyond the cap");
        assert_eq!(p.stats().sockets, 2);
        // At the start: one TTL-limited opening per socket toward the reflexive address
        // only (not the LAN candidate).
        p.handle_timeout(t0);
        let (sent, _, _) = outputs(&mut p);
        let opening: Vec<(Option<SocketAddr>, SocketAddr, Option<u8>)> = (sent.iter())
            .filter(|t| t.source.is_some())
            .map(|t| (t.source, t.destination, t.ttl))
            .collect();
        let easy: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        assert_eq!(
            opening,
            [(Some(s[0]), easy, Some(2)), (Some(s[1]), easy, Some(2))]
        );
        assert_eq!(p.stats().search_probes, 2);
        // A forged probe on a socket is claimed, counted and not answered.
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(b"macpunch");
        let request = Message::binding(Class::Request, TransactionId(id));
        let forged = request
            .encode_with_integrity(&IntegrityKey([8; 32]))
            .unwrap();
        assert!(p.handle_datagram(t0 + ms(30), s[1], easy, &forged));
        assert_eq!(p.stats().unauthenticated, 1);
        assert!(outputs(&mut p).0.is_empty());
        // The easy side's probe hits the mapping of socket 1: answered and checked from it.
        assert!(p.handle_datagram(t0 + ms(30), s[1], easy, &signed(request)));
        let (sent, _, _) = outputs(&mut p);
        assert!(
            sent.len() == 2
                && sent
                    .iter()
                    .all(|t| t.source == Some(s[1]) && t.ttl.is_none())
        );
        let check = decode(&sent[1].payload).unwrap().message.transaction_id;
        // Its answer on another socket does not count; on socket 1 the pair wins.
        let answer = signed(Message::binding(Class::Success, check));
        assert!(p.handle_datagram(t0 + ms(31), s[0], easy, &answer));
        assert!(p.punched().is_none());
        let (sent, _, _) = outputs(&mut p);
        assert!(sent.is_empty());
        // (The answer was consumed: the round's retry from socket 1 wins.)
        p.handle_timeout(t0 + ms(100));
        let (sent, _, _) = outputs(&mut p);
        let retry = sent
            .iter()
            .find(|t| t.source == Some(s[1]))
            .expect("the found pair is retried");
        let id = decode(&retry.payload).unwrap().message.transaction_id;
        let answer = signed(Message::binding(Class::Success, id));
        assert!(p.handle_datagram(t0 + ms(101), s[1], easy, &answer));
        let (_, closed, events) = outputs(&mut p);
        assert_eq!(
            closed,
            [SocketRequest::Close(vec![s[0]])],
            "all but the winner's"
        );
        let Some(PunchEvent::Succeeded(won)) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!((won.local, won.remote), (Some(s[1]), easy));
        // Sockets reported after the end are closed again.
        p.handle_sockets_opened(t0 + ms(200), vec![s[2]]);
        assert_eq!(outputs(&mut p).1, [SocketRequest::Close(vec![s[2]])]);
    }

    #[test]
    fn the_easy_side_draws_paced_capped_probes_toward_the_peers_nat_and_gives_up_cleanly() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let config = small_search();
        let plan = search_plan(t0, SearchSide::Easy);
        let start_draw = config.follow_after(plan.rtt) + config.lead(plan.rtt);
        let len = config.attempt_len(plan.rtt);
        let mut p = Puncher::new(config.clone(), plan, t0);
        assert_eq!(p.search_target(), Some("198.51.100.2".parse().unwrap()));
        p.grant_search(u64::MAX);
        let searched = |sent: &[Transmit]| -> Vec<SocketAddr> {
            (sent.iter())
                .filter(|t| t.destination.port() != 4433)
                .map(|t| t.destination)
                .collect()
        };
        assert!(
            outputs(&mut p).1.is_empty(),
            "the easy side opens no sockets"
        );
        p.handle_timeout(t0 + start_draw - ms(1));
        assert!(
            searched(&outputs(&mut p).0).is_empty(),
            "not before the follower's time and a lead"
        );
        let mut drawn = Vec::new();
        let mut now = t0 + start_draw;
        while now < t0 + start_draw + ms(100) {
            p.handle_timeout(now);
            let batch = searched(&outputs(&mut p).0);
            assert!(batch.len() <= 10, "paced");
            drawn.extend(batch);
            now += ms(5);
        }
        assert_eq!(drawn.len(), 25, "capped");
        assert!(
            drawn
                .iter()
                .all(|a| a.ip() == "198.51.100.2".parse::<std::net::IpAddr>().unwrap())
        );
        // Every attempt fails; the draw restarts with each (25 more each) and the punch ends.
        let (mut later, mut failed) = (0, false);
        let mut now = t0 + start_draw + ms(100);
        while !failed {
            let next = p.poll_timeout().expect("a running punch has a deadline");
            now = next.max(now);
            p.handle_timeout(now);
            let (sent, _, events) = outputs(&mut p);
            later += searched(&sent).len();
            failed = events
                .iter()
                .any(|e| matches!(e, PunchEvent::Failed { .. }));
        }
        assert!(now >= t0 + len * 3, "three attempts");
        assert_eq!(later, 50, "the later attempts draw again");
        assert_eq!(p.stats().search_probes, 75);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn the_easy_side_searches_no_ip_nobody_vouched_for_and_nothing_ungranted() {
        let t0 = crate::test_epoch();
        let config = small_search();
        let searched = |p: &mut Puncher| -> usize {
            let mut now = t0;
            let mut count = 0;
            while let Some(next) = p.poll_timeout() {
                now = next.max(now);
                p.handle_timeout(now);
                let sent = outputs(p).0;
                count += (sent.iter())
                    .filter(|t| t.destination.port() != 4433)
                    .count();
            }
            count
        };
        // The peer announced 198.51.100.2 as its reflexive address, but nobody vouched
        // for it: no search at all, only the announced candidates are probed.
        let unattested = Plan {
            search_ip: None,
            socket: None,
            ..search_plan(t0, SearchSide::Easy)
        };
        let mut p = Puncher::new(config.clone(), unattested, t0);
        assert_eq!(p.search_target(), None);
        assert_eq!(searched(&mut p), 0);
        assert_eq!(p.stats().search_probes, 0);
        // Vouched for, but the budget granted nothing.
        let mut p = Puncher::new(config.clone(), search_plan(t0, SearchSide::Easy), t0);
        assert!(p.search_target().is_some());
        assert_eq!(searched(&mut p), 0);
        // Granted 30 of the 75 three attempts would draw.
        let mut p = Puncher::new(config, search_plan(t0, SearchSide::Easy), t0);
        p.grant_search(30);
        assert_eq!(searched(&mut p), 30);
        assert_eq!(p.stats().search_probes, 30);
    }

    #[test]
    fn without_sockets_a_pair_only_the_search_joins_is_skipped() {
        let t0 = crate::test_epoch();
        for side in [SearchSide::Hard, SearchSide::Easy] {
            let plan = Plan {
                search: false,
                ..search_plan(t0, side)
            };
            let mut p = Puncher::new(small_search(), plan, t0);
            let (sent, sockets, events) = outputs(&mut p);
            assert!(sent.is_empty() && sockets.is_empty());
            assert_eq!(events, [PunchEvent::Skipped]);
        }
    }

    #[test]
    fn a_failed_hard_side_closes_every_socket() {
        let t0 = crate::test_epoch();
        let mut p = Puncher::new(small_search(), search_plan(t0, SearchSide::Hard), t0);
        let s: Vec<SocketAddr> = (1..=2)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 40000 + i)))
            .collect();
        p.handle_sockets_opened(t0, s.clone());
        let mut closed = Vec::new();
        let mut now = t0;
        while let Some(next) = p.poll_timeout() {
            now = next.max(now);
            p.handle_timeout(now);
            closed.extend(outputs(&mut p).1);
        }
        assert!(p.is_finished() && p.punched().is_none());
        assert_eq!(
            closed,
            [SocketRequest::Open { count: 2 }, SocketRequest::Close(s)]
        );
    }

    #[test]
    fn a_punch_from_a_fresh_port_probes_from_it_wins_there_and_closes_it_only_at_the_end() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let fresh = SocketAddr::from(([10, 0, 0, 1], 40000));
        let (v4, v6) = ("198.51.100.2:4433", "[2001:db8:b::11]:4433");
        let plan = Plan {
            socket: Some(fresh),
            ..plan(t0, &[v4, v6], false)
        };
        let mut p = Puncher::new(PunchConfig::default(), plan.clone(), t0);
        p.handle_timeout(t0 + ms(40));
        let (sent, asked, _) = outputs(&mut p);
        assert!(asked.is_empty(), "the owner opened it");
        // IPv4 probes leave from the fresh socket, IPv6 ones from the main socket.
        assert!(!sent.is_empty());
        for t in &sent {
            let want = t.destination.is_ipv4().then_some(fresh);
            assert_eq!(t.source, want, "{t:?}");
        }
        // The peer's probe on the fresh socket is answered from it; an answer there wins.
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(b"macpunch");
        let request = signed(Message::binding(Class::Request, TransactionId(id)));
        let peer: SocketAddr = v4.parse().unwrap();
        assert!(p.handle_datagram(t0 + ms(50), fresh, peer, &request));
        let (sent, _, _) = outputs(&mut p);
        assert!(sent.iter().all(|t| t.source == Some(fresh)) && sent.len() == 2);
        let check = decode(&sent[1].payload).unwrap().message.transaction_id;
        let answer = signed(Message::binding(Class::Success, check));
        // On the main socket it is not our pair's answer.
        assert!(p.handle_datagram(t0 + ms(31), MAIN, peer, &answer));
        assert!(p.punched().is_none());
        p.handle_timeout(t0 + ms(100));
        let (sent, _, _) = outputs(&mut p);
        let retry = (sent.iter())
            .find(|t| t.destination == peer)
            .expect("retried");
        let id = decode(&retry.payload).unwrap().message.transaction_id;
        let answer = signed(Message::binding(Class::Success, id));
        assert!(p.handle_datagram(t0 + ms(101), fresh, peer, &answer));
        let (_, closed, events) = outputs(&mut p);
        assert!(closed.is_empty(), "the winner keeps its socket");
        let Some(PunchEvent::Succeeded(won)) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!((won.local, won.remote), (Some(fresh), peer));
        // The owner is done with the path: the socket closes, once.
        p.close_sockets();
        assert_eq!(outputs(&mut p).1, [SocketRequest::Close(vec![fresh])]);
        p.close_sockets();
        assert!(outputs(&mut p).1.is_empty());
        // A punch that fails closes it itself.
        let config = PunchConfig {
            max_attempts: 1,
            ..PunchConfig::default()
        };
        let mut p = Puncher::new(config, plan, t0);
        let (mut now, mut closed, mut events) = (t0, Vec::new(), Vec::new());
        while let Some(next) = p.poll_timeout().filter(|_| !p.is_finished()) {
            now = next.max(now);
            p.handle_timeout(now);
            let (_, c, e) = outputs(&mut p);
            closed.extend(c);
            events.extend(e);
        }
        assert_eq!(closed, [SocketRequest::Close(vec![fresh])]);
        assert!(matches!(
            events.last(),
            Some(PunchEvent::Failed { attempts: 1 })
        ));
    }
}
