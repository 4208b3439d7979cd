//! One relayed connection's upgrade: the punch handshake (offer, answer,
//! sync), the puncher, the switch to the direct path, and the fall back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::{MAX_TIMES, OFFER_TIMEOUT, PathChange, PunchLink, UpgradeOutput, Upgrades};
use crate::contract::{Machine, Output, SocketRequest};
use crate::id::NodeId;
use crate::nat::punch::{
    Candidate, CandidateKind, NatClass, Plan, PunchEvent, Puncher, Role, SessionTag, on_port,
    preserves_ports,
};
use crate::nat::stun::IntegrityKey;
use crate::path::{Liveness, PathKind, RealPath};
use crate::pool::ConnId;
use crate::scope::is_global_ipv6;
use crate::wire::{
    Message, NatInfo, PunchAnswer, PunchOffer, PunchOutcome, PunchResult, PunchSync, WireCandidate,
};

/// Where one connection's upgrade stands.
pub(super) enum Stage {
    /// The opener sent PUNCH_OFFER at this time.
    Offered(Instant),
    /// The follower answered; it waits for PUNCH_SYNC with the opener's candidates.
    Answered(Vec<Candidate>),
    /// Probing.
    Punching(Box<Puncher>),
    /// On the direct path; the puncher keeps answering the peer's probes.
    Direct(Box<Puncher>, Box<Liveness>),
    /// On the relay; the opener punches again at the time given.
    Relayed(Option<Instant>),
}

/// The opener's fresh socket for its re-punch after a direct path died
/// ([`crate::nat::punch::Plan::socket`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fresh {
    /// None held or asked for.
    None,
    /// Asked of the driver, not yet opened.
    Asked,
    /// Open, for the next punch.
    Open(SocketAddr),
}

impl Fresh {
    /// The open socket, if any, leaving none held.
    pub(super) fn take_open(&mut self) -> Option<SocketAddr> {
        match std::mem::replace(self, Fresh::None) {
            Fresh::Open(socket) => Some(socket),
            _ => None,
        }
    }
}

/// One relayed connection's upgrade.
pub(super) struct Session {
    pub(super) peer: NodeId,
    role: Role,
    request_id: u64,
    tag: SessionTag,
    key: IntegrityKey,
    remote_nat: NatClass,
    pub(super) relay_path: RealPath,
    pub(super) stage: Stage,
    /// The fresh socket the next punch probes from.
    pub(super) fresh: Fresh,
}

impl Session {
    /// When the session needs its timeout handled.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Punching(p) => p.poll_timeout(),
            Stage::Direct(p, live) => [p.poll_timeout(), live.poll_timeout()]
                .into_iter()
                .flatten()
                .min(),
            Stage::Relayed(retry) => *retry,
            Stage::Offered(at) => at.checked_add(OFFER_TIMEOUT),
            Stage::Answered(_) => None,
        }
    }

    /// Probes and answers of this session whose integrity did not check, so far.
    pub(super) fn unauthenticated(&self) -> u64 {
        match &self.stage {
            Stage::Punching(p) => p.stats().unauthenticated,
            Stage::Direct(p, live) => p.stats().unauthenticated + live.unauthenticated(),
            _ => 0,
        }
    }
}

/// Candidates as they go on the wire.
fn wire_candidates(candidates: Vec<Candidate>) -> Vec<WireCandidate> {
    candidates.into_iter().map(WireCandidate::from).collect()
}

impl Upgrades {
    /// The peer's candidates we will probe: known kinds that pass the address policy, at
    /// most [`crate::nat::punch::PunchConfig::max_candidates`]; the rest is counted.
    fn admit_candidates(&mut self, wire: &[WireCandidate]) -> Vec<Candidate> {
        let max = self.config.punch.max_candidates;
        let policy = self.policy;
        let kept: Vec<Candidate> = (wire.iter())
            .filter_map(WireCandidate::candidate)
            .filter(|c| policy.permits(&c.addr))
            .take(max)
            .collect();
        self.counters.candidates_refused += (wire.len() - kept.len()) as u64;
        kept
    }

    /// Spends one token of `conn`'s PUNCH_OFFER/PUNCH_SYNC bucket; false (and counted)
    /// when it is empty.
    fn frame_allowed(&mut self, now: Instant, conn: ConnId) -> bool {
        let tat = self.frame_buckets.get(&conn).copied();
        match self.config.offer_limit.admit(now, tat) {
            Some(tat) => {
                self.frame_buckets.insert(conn, tat);
                true
            }
            None => {
                self.counters.frames_rate_limited += 1;
                false
            }
        }
    }

    fn local(&self) -> (Vec<Candidate>, NatClass) {
        (self.local.clone()).unwrap_or((Vec::new(), NatClass::UNKNOWN))
    }

    fn send(&mut self, conn: ConnId, frame: Message) {
        self.out.push(UpgradeOutput::Send { conn, frame });
    }

    /// Sends PUNCH_OFFER on `conn`, whose path is `path`.
    pub(super) fn offer(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: NodeId,
        path: RealPath,
    ) -> bool {
        let busy =
            (self.sessions.get(&conn)).is_some_and(|s| !matches!(s.stage, Stage::Relayed(_)));
        if busy || path.kind() != PathKind::Relayed {
            return false;
        }
        let mut tag = [0u8; 8];
        self.rng.fill_bytes(&mut tag);
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        self.next_request += 1;
        let request_id = self.next_request;
        let (mut candidates, nat) = self.local();
        let held = self.sessions.get(&conn).map(|s| s.fresh);
        let mut fresh = Fresh::None;
        if let Some(Fresh::Open(socket)) = held {
            // The fresh socket's candidates replace our IPv4 ones, when its public port
            // can be told; otherwise it is no use.
            let moved = on_port(&candidates, socket.port());
            if moved.is_empty() {
                self.out
                    .push(UpgradeOutput::Sockets(SocketRequest::Close(vec![socket])));
            } else {
                candidates.retain(|c| !c.addr.is_ipv4());
                candidates.extend(moved);
                fresh = Fresh::Open(socket);
            }
        }
        let offer = PunchOffer {
            request_id,
            tag,
            key,
            nat: NatInfo::from(nat),
            candidates: wire_candidates(candidates),
        };
        self.send(conn, Message::from(offer));
        let session = Session {
            peer,
            role: Role::Opener,
            request_id,
            tag: SessionTag(tag),
            key: IntegrityKey(key),
            remote_nat: NatClass::UNKNOWN,
            relay_path: path,
            stage: Stage::Offered(now),
            fresh,
        };
        self.sessions.insert(conn, session);
        true
    }

    /// A punch frame on `link`'s control stream. PUNCH_OFFER and PUNCH_SYNC over
    /// [`super::UpgradeConfig::offer_limit`] are dropped.
    pub fn handle_frame(&mut self, now: Instant, link: PunchLink, message: Message) {
        self.out.mark(now);
        self.note_vouched(&link);
        let limited = matches!(message, Message::PunchOffer(_) | Message::PunchSync(_));
        if limited && !self.frame_allowed(now, link.conn) {
            return;
        }
        match message {
            Message::PunchOffer(offer) => self.on_offer(now, link, offer),
            Message::PunchAnswer(answer) => self.on_answer(now, &link, answer),
            Message::PunchSync(sync) => self.on_sync(now, link, sync),
            _ => {}
        }
    }

    fn on_offer(&mut self, now: Instant, link: PunchLink, offer: PunchOffer) {
        // The opener offers again only once its direct path is gone: so is ours.
        let mut path = link.path;
        let direct = (self.sessions.get(&link.conn))
            .filter(|s| matches!(s.stage, Stage::Direct(..)))
            .map(|s| s.relay_path);
        if let Some(relay_path) = direct {
            self.fall_back(now, link.conn);
            path = relay_path;
        }
        if path.kind() != PathKind::Relayed {
            return;
        }
        // A punch of ours under way is over (its extra sockets close): the peer starts anew.
        self.close_sockets(link.conn);
        let (local, nat) = self.local();
        let answer = PunchAnswer {
            request_id: offer.request_id,
            nat: NatInfo::from(nat),
            candidates: wire_candidates(local),
        };
        self.send(link.conn, Message::from(answer));
        let remote = self.admit_candidates(&offer.candidates);
        let session = Session {
            peer: link.peer,
            role: Role::Follower,
            request_id: offer.request_id,
            tag: SessionTag(offer.tag),
            key: IntegrityKey(offer.key),
            remote_nat: NatClass::from(&offer.nat),
            relay_path: path,
            stage: Stage::Answered(remote),
            fresh: Fresh::None,
        };
        self.sessions.insert(link.conn, session);
    }

    fn on_answer(&mut self, now: Instant, link: &PunchLink, answer: PunchAnswer) {
        let conn = link.conn;
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let Stage::Offered(at) = session.stage else {
            return;
        };
        if session.request_id != answer.request_id {
            return;
        }
        session.remote_nat = NatClass::from(&answer.nat);
        // One sample, inflated when the offer or the answer was lost and sent again; the
        // connection's own estimate keeps the start from drifting a retransmission late.
        let sample = now.saturating_duration_since(at);
        let rtt = match link.rtt.is_zero() {
            true => sample,
            false => sample.min(link.rtt),
        };
        let sync = PunchSync {
            request_id: answer.request_id,
            start_in_ms: 0,
        };
        self.send(conn, Message::from(sync));
        let start = now.checked_add(rtt / 2).unwrap_or(now);
        let remote = self.admit_candidates(&answer.candidates);
        self.start_punch(now, conn, remote, rtt, start);
    }

    fn on_sync(&mut self, now: Instant, link: PunchLink, sync: PunchSync) {
        let Some(session) = self.sessions.get_mut(&link.conn) else {
            return;
        };
        if session.request_id != sync.request_id {
            return;
        }
        let Stage::Answered(remote) = std::mem::replace(&mut session.stage, Stage::Relayed(None))
        else {
            return;
        };
        let start_in = Duration::from_millis(u64::from(sync.start_in_ms));
        let start = now.checked_add(start_in).unwrap_or(now);
        self.start_punch(now, link.conn, remote, link.rtt, start);
    }

    fn start_punch(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote: Vec<Candidate>,
        rtt: Duration,
        start: Instant,
    ) {
        let (local_candidates, local_nat) = self.local();
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let same_public_ip = local_candidates.iter().any(|l| {
            l.kind == CandidateKind::Reflexive
                && (remote.iter()).any(|r| r.kind == l.kind && r.addr.ip() == l.addr.ip())
        });
        let ipv6 = |list: &[Candidate]| list.iter().any(|c| is_global_ipv6(&c.addr));
        let both_ipv6 = ipv6(&local_candidates) && ipv6(&remote);
        let plan = Plan {
            tag: session.tag,
            key: session.key.clone(),
            remote,
            rtt,
            role: session.role,
            start,
            local_nat,
            remote_nat: session.remote_nat,
            same_public_ip,
            hops: self.hops,
            both_ipv6,
            search: self.config.search,
            seed: self.rng.next_u64(),
            search_ip: self.vouched.get(&conn).copied(),
            socket: session.fresh.take_open(),
        };
        let mut puncher = Puncher::new(self.config.punch.clone(), plan, now);
        if let Some(ip) = puncher.search_target() {
            let punch = &self.config.punch;
            let wanted = u64::from(punch.search_probes).saturating_mul(punch.max_attempts.into());
            puncher.grant_search(self.search_budget.take(now, ip, wanted));
        }
        puncher.handle_timeout(now);
        let remote_nat = session.remote_nat;
        session.stage = Stage::Punching(Box::new(puncher));
        self.counters.pair(local_nat, remote_nat).attempts += 1;
        self.out.push(UpgradeOutput::PunchStarted {
            local: local_nat,
            remote: remote_nat,
        });
        self.drain(now, conn);
    }

    /// Drains `conn`'s puncher and liveness watch, acting on what they say:
    /// switch to the direct path, fall back to the relay.
    pub(super) fn drain(&mut self, now: Instant, conn: ConnId) {
        let mut events = Vec::new();
        let mut dead = false;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let (puncher, live) = match &mut s.stage {
            Stage::Punching(p) => (Some(p), None),
            Stage::Direct(p, live) => (Some(p), Some(live)),
            _ => (None, None),
        };
        if let Some(p) = puncher {
            while let Some(output) = p.poll_output() {
                match output {
                    Output::Transmit(t) => self.out.push(UpgradeOutput::Transmit(t)),
                    Output::Event(e) => events.push(e),
                    Output::Sockets(request) => {
                        if matches!(request, SocketRequest::Open { .. }) {
                            self.socket_waiters.push_back(conn);
                        }
                        self.out.push(UpgradeOutput::Sockets(request));
                    }
                }
            }
        }
        if let Some(live) = live {
            while let Some(t) = live.poll_transmit() {
                self.out.push(UpgradeOutput::Transmit(t));
            }
            if live.poll_ping() {
                self.out.push(UpgradeOutput::KeepAlive { conn });
            }
            dead = live.is_dead(now);
        }
        for event in events {
            self.on_punch_event(now, conn, event);
        }
        if dead {
            self.fall_back(now, conn);
        }
    }

    fn on_punch_event(&mut self, now: Instant, conn: ConnId, event: PunchEvent) {
        let local_nat = self.local().1;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let remote_nat = s.remote_nat;
        let (outcome, remote, attempts) = match &event {
            PunchEvent::Succeeded(p) => (PunchOutcome::Succeeded, vec![p.remote], p.attempt + 1),
            PunchEvent::Failed { attempts } => (PunchOutcome::Failed, Vec::new(), *attempts),
            PunchEvent::Skipped => (PunchOutcome::Skipped, Vec::new(), 0),
            _ => return,
        };
        let result = PunchResult {
            request_id: s.request_id,
            outcome,
            attempts: u8::try_from(attempts).unwrap_or(u8::MAX),
            remote,
        };
        let wait = match event {
            PunchEvent::Skipped => self.config.retry_ruled_out_after,
            _ => self.config.retry_after,
        };
        let retry = (s.role == Role::Opener)
            .then(|| now.checked_add(wait))
            .flatten();
        let pair = self.counters.pair(local_nat, remote_nat);
        match event {
            PunchEvent::Succeeded(_) => pair.successes += 1,
            PunchEvent::Failed { .. } => pair.failures += 1,
            _ => pair.skipped += 1,
        }
        self.out.push(UpgradeOutput::PunchEnded {
            local: local_nat,
            remote: remote_nat,
            event: event.clone(),
        });
        self.send(conn, Message::from(result));
        match event {
            PunchEvent::Succeeded(p) => self.out.push(UpgradeOutput::SwitchDirect {
                conn,
                remote: p.remote,
                rtt: p.rtt,
                elapsed: p.elapsed,
                local: p.local,
            }),
            _ => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.stage = Stage::Relayed(retry);
                }
            }
        }
    }

    /// The Node moved `conn`'s direct path to `remote`, where the peer's
    /// authentic packets now come from (its NAT rebound): the liveness
    /// probes follow.
    pub fn handle_rebound(&mut self, now: Instant, conn: ConnId, remote: SocketAddr) {
        self.out.mark(now);
        if let Some(Stage::Direct(_, live)) = self.sessions.get_mut(&conn).map(|s| &mut s.stage) {
            live.follow(remote);
            self.direct.insert(remote, conn);
        }
    }

    /// The Node moved `conn` onto its direct path `remote`
    /// ([`UpgradeOutput::SwitchDirect`]): watch it.
    pub fn handle_switched(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote: SocketAddr,
        rtt: Duration,
        elapsed: Duration,
    ) {
        self.out.mark(now);
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let Stage::Punching(puncher) = std::mem::replace(&mut s.stage, Stage::Relayed(None)) else {
            return;
        };
        let interval = self.config.keepalive.max(rtt.saturating_mul(2));
        let key = s.key.clone();
        let local = puncher.punched().and_then(|p| p.local);
        let mut live =
            Liveness::new(remote, s.tag, key, interval, self.config.dead_after).from_socket(local);
        if s.role == Role::Opener {
            live = live.with_keep_alive(now, self.config.direct_keep_alive);
        }
        s.stage = Stage::Direct(puncher, Box::new(live));
        self.direct.insert(remote, conn);
        let peer = s.peer;
        let counters = &mut self.counters;
        counters.upgrades += 1;
        if counters.upgrade_times.len() == MAX_TIMES {
            counters.upgrade_times.pop_front();
        }
        counters.upgrade_times.push_back(elapsed);
        let reason = PathChange::Punched { remote, rtt };
        self.out.push(UpgradeOutput::PathChanged {
            peer,
            path: PathKind::Direct,
            reason,
        });
    }

    /// An authentic packet of `conn`'s peer came over its relay circuit at `now` while the
    /// connection runs on its direct path. Packets the peer sent before its own switch
    /// arrive so too; but when our direct path is in doubt (what we sent on it waited two
    /// probe intervals with no word back), or the peer has sent on the direct path for a
    /// dead window already ([`Liveness::peer_fell_back`]), the peer has fallen back: so
    /// do we, at once, rather than after the rest of our own watch. True when it fell
    /// back.
    pub fn handle_heard_relayed(&mut self, now: Instant, conn: ConnId) -> bool {
        self.out.mark(now);
        let Some(s) = self.sessions.get(&conn) else {
            return false;
        };
        let in_doubt = matches!(&s.stage, Stage::Direct(_, live) if live.peer_fell_back(now));
        if in_doubt {
            self.fall_back(now, conn);
        }
        in_doubt
    }

    /// The direct path died: back onto the relay circuit at once.
    fn fall_back(&mut self, now: Instant, conn: ConnId) {
        self.close_sockets(conn);
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        let opener = s.role == Role::Opener;
        let grace = match &s.stage {
            Stage::Direct(_, live) => live.dead_window(),
            _ => Duration::ZERO,
        };
        let retry = opener
            .then(|| now.checked_add(self.config.repunch_after))
            .flatten();
        // The re-punch goes from a fresh port (a 5-tuple no entry planted during the outage
        // matches), when our NAT preserves ports and so its public port can be told.
        let preserving = (self.local.as_ref()).is_some_and(|(ours, _)| preserves_ports(ours));
        let fresh = retry.is_some() && self.config.fresh_port && preserving;
        if fresh {
            self.socket_waiters.push_back(conn);
            let open = SocketRequest::Open { count: 1 };
            self.out.push(UpgradeOutput::Sockets(open));
        }
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        s.stage = Stage::Relayed(retry);
        if fresh {
            s.fresh = Fresh::Asked;
        }
        let (peer, path) = (s.peer, s.relay_path);
        self.counters.fallbacks += 1;
        self.out.push(UpgradeOutput::FallBack { conn, path, grace });
        self.out.push(UpgradeOutput::PathChanged {
            peer,
            path: PathKind::Relayed,
            reason: PathChange::DirectPathDead,
        });
    }
}
