//! Relay → direct, as a child machine of the Node: hole punching over a
//! relayed connection, the switch of the peer's virtual address to the direct
//! path, the direct path's liveness, and the fall back to the relay
//! (docs/PROTOCOL.md §13).
//!
//! The dialer of a relayed connection is the opener: once the connection is
//! ready it sends its own candidates (each NAT discovery report sets them,
//! [`crate::nat::reach`]; a driver or lab may set them too) in PUNCH_OFFER
//! on the control stream; the acceptor answers with PUNCH_ANSWER, the opener
//! fixes the start with PUNCH_SYNC, and both run a [`Puncher`](crate::nat::punch::Puncher) on the node's
//! socket. The moment a probe is answered the side asks the Node to switch
//! the connection's virtual address to the direct address (no hysteresis
//! against a relay; the Node owns the path table and tells quinn the path
//! changed) and keeps the circuit as backup: packets still arriving over it
//! reach the same connection. A [`Liveness`] watches the direct path; when it
//! stops answering the connection falls back to the circuit at once, and the
//! opener offers a new punch after [`UpgradeConfig::repunch_after`] (after a
//! failed punch, [`UpgradeConfig::retry_after`]).
//!
//! Connections are named by [`ConnId`]; the Node describes one as a
//! [`PunchLink`] when it hands the machine an input about it.
//!
//! **Hostile peers.** The peer's frames choose where our probes go, so:
//! PUNCH_OFFER and PUNCH_SYNC are rate-limited per connection
//! ([`UpgradeConfig::offer_limit`]; a refused frame is dropped unanswered);
//! the peer's candidates pass the node's [`AddressPolicy`] (no unspecified,
//! multicast, broadcast or virtual address, loopback only for a node on
//! loopback) and at most [`PunchConfig::max_candidates`] are kept; a punch
//! sends at most [`PunchConfig::max_checks_per_attempt`] probes per attempt,
//! in rounds at least [`PunchConfig::first_interval`] apart. Every probe and
//! answer, liveness ones included, carries MESSAGE-INTEGRITY-SHA256 under a
//! key the opener draws and sends in PUNCH_OFFER; one that does not check is
//! ignored, so an on-path spoofer can neither fake a winner nor keep a dead
//! path alive. Each refusal is counted in [`UpgradeCounters`].

mod session;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::collections::HashMap;
use crate::contract::{Child, Datagram, Machine, Output, OutputQueue, SocketRequest, Transmit};
use crate::id::NodeId;
use crate::nat::punch::{Candidate, NatClass, PunchConfig, PunchEvent, SearchBudget};
use crate::nat::stun::Bucket;
use crate::path::Liveness;
use crate::path::{PathKind, RealPath};
use crate::pool::ConnId;
use crate::scope::AddressPolicy;
use crate::wire::Message;

use session::{Fresh, Session, Stage};

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
    /// The opener of a direct path has QUIC send a PING after this long without an
    /// ack-eliciting packet of ours on it (default 15 s, the QUIC keep-alive of a direct
    /// dial): the NAT bindings stay open, and the peer's ACK tells the path still answers.
    /// The connection's own keep-alive is the longer one of a connection dialed through a
    /// relay ([`crate::quic::TransportSettings::acceptor_keep_alive`]).
    pub direct_keep_alive: Duration,
    /// After a failed punch, the opener punches again this much later (default 60 s).
    pub retry_after: Duration,
    /// After a punch the NAT classes ruled out (nothing was probed), the opener offers
    /// again this much later (default 30 min): the classes change only when a NAT does,
    /// and every offer costs an exchange of frames over the relay.
    pub retry_ruled_out_after: Duration,
    /// After a direct path died (a NAT rebooted or remapped, a peer roamed), the
    /// opener punches again this much later (default 2 s): the NATs allowed a direct
    /// path a moment ago, so one is likely again once both ends know their new
    /// addresses (the Node runs NAT discovery again at the fall back). Should that
    /// punch fail, the next waits [`UpgradeConfig::retry_after`].
    pub repunch_after: Duration,
    /// PUNCH_OFFER and PUNCH_SYNC frames taken per connection, together (default one
    /// per 10 s, bursts of 4: an honest opener sends two per punch and punches again
    /// only after [`UpgradeConfig::retry_after`]). Frames over it are dropped unanswered
    /// and counted ([`UpgradeCounters::frames_rate_limited`]).
    pub offer_limit: Bucket,
    /// Whether punches run the birthday search where only it can find a direct path
    /// (default true): the Node then asks its driver for extra sockets
    /// ([`UpgradeOutput::Sockets`]).
    pub search: bool,
    /// Whether the opener's punch after a direct path died goes from a fresh port (default
    /// true): at the fall back the Node asks its driver for one extra socket
    /// ([`UpgradeOutput::Sockets`]), announces it (when our NAT was seen preserving ports)
    /// and probes from it, so no conntrack entry planted during the outage matches the
    /// new flow ([`crate::nat::punch`], item 8). A driver that opens none leaves the punch
    /// on the main socket.
    pub fresh_port: bool,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        Self {
            punch: PunchConfig::default(),
            auto: true,
            keepalive: Duration::from_millis(100),
            dead_after: 4,
            direct_keep_alive: Duration::from_secs(15),
            retry_after: Duration::from_secs(60),
            retry_ruled_out_after: Duration::from_secs(1800),
            repunch_after: Duration::from_secs(2),
            offer_limit: Bucket {
                interval: Duration::from_secs(10),
                burst: 4,
            },
            search: true,
            fresh_port: true,
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
    /// PUNCH_OFFER and PUNCH_SYNC frames dropped by [`UpgradeConfig::offer_limit`].
    pub frames_rate_limited: u64,
    /// Peer candidates not probed: of an unknown type, refused by the address policy, or
    /// past [`PunchConfig::max_candidates`].
    pub candidates_refused: u64,
    /// Punch and liveness probes and answers whose MESSAGE-INTEGRITY-SHA256 was missing
    /// or wrong: ignored.
    pub unauthenticated: u64,
}

/// How long the opener waits for PUNCH_ANSWER before it gives the punch up (and retries
/// after [`UpgradeConfig::retry_after`]).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// How many upgrade times [`UpgradeCounters`] keeps.
pub const MAX_TIMES: usize = 1024;

impl UpgradeCounters {
    fn pair(&mut self, local: NatClass, remote: NatClass) -> &mut PairCounts {
        let at = (self.by_pair.iter()).position(|p| p.local == local && p.remote == remote);
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

/// A ready connection as the Node describes it to the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PunchLink {
    /// The connection.
    pub conn: ConnId,
    /// The peer.
    pub peer: NodeId,
    /// The real path its virtual address maps to now.
    pub path: RealPath,
    /// The connection's round-trip estimate.
    pub rtt: Duration,
    /// The peer's IP as the relay carrying the connection observes it (CIRCUIT_PEER):
    /// the only IP a birthday search from this side may probe.
    pub vouched: Option<IpAddr>,
}

/// What the upgrade machine asks the Node to do.
#[derive(Clone, Debug, PartialEq)]
pub enum UpgradeOutput {
    /// Send a datagram (punch and liveness probes; the TTL is the probe's).
    Transmit(Transmit),
    /// Have QUIC send a PING on the connection (the opener's keep-alive of an idle direct
    /// path).
    KeepAlive {
        /// The connection.
        conn: ConnId,
    },
    /// Send a punch frame on a connection's control stream.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Message,
    },
    /// Switch the connection's virtual address to the direct address
    /// `remote` (and tell quinn); when that worked, call
    /// [`Upgrades::handle_switched`] with the same values.
    SwitchDirect {
        /// The connection.
        conn: ConnId,
        /// The direct address.
        remote: SocketAddr,
        /// The probe's round trip.
        rtt: Duration,
        /// From the punch's agreed start to now.
        elapsed: Duration,
        /// The extra socket the path uses on our side (the birthday search's hard side):
        /// the connection's packets leave from it. `None`: the main socket.
        local: Option<SocketAddr>,
    },
    /// Open or close extra sockets for a punch's birthday search: the Node asks its driver
    /// ([`crate::Output::Sockets`]) and hands what opened to
    /// [`Upgrades::handle_sockets_opened`].
    Sockets(SocketRequest),
    /// The peer's authenticated probes now come from `remote`, while ours
    /// to its old address go unanswered (its NAT rebooted or remapped):
    /// move the connection's direct path there (and tell quinn); once it
    /// moved, [`Upgrades::handle_rebound`] moves the watch too.
    PeerMoved {
        /// The connection.
        conn: ConnId,
        /// The peer's new address.
        remote: SocketAddr,
    },
    /// Switch the connection's virtual address back to its relay circuit
    /// (and tell quinn): the direct path died.
    FallBack {
        /// The connection.
        conn: ConnId,
        /// The relay circuit.
        path: RealPath,
        /// How long the peer may take to find the same (the dead window of
        /// the path's watch, which the peer runs alike): until then its
        /// packets, its acknowledgements too, may still go to the dead path,
        /// so silence on the circuit means nothing yet.
        grace: Duration,
    },
    /// Tell the application a connection's path changed.
    PathChanged {
        /// The peer.
        peer: NodeId,
        /// Where its packets go now.
        path: PathKind,
        /// Why.
        reason: PathChange,
    },
    /// A punch began between these NAT classes (metrics).
    PunchStarted {
        /// Ours.
        local: NatClass,
        /// The peer's.
        remote: NatClass,
    },
    /// A punch ended (metrics).
    PunchEnded {
        /// Ours.
        local: NatClass,
        /// The peer's.
        remote: NatClass,
        /// How.
        event: PunchEvent,
    },
}

/// The node's upgrade machine; see the module docs.
pub struct Upgrades {
    config: UpgradeConfig,
    policy: AddressPolicy,
    local: Option<(Vec<Candidate>, NatClass)>,
    /// IP hops to the open internet, as NAT discovery counted them.
    hops: Option<u8>,
    sessions: HashMap<ConnId, Session>,
    /// Direct sessions by their peer's address, for the Node's reports of
    /// traffic on a direct path; an entry is checked against its session on
    /// use (a stale one is dropped) and goes with its connection.
    direct: HashMap<SocketAddr, ConnId>,
    /// Per connection that sent PUNCH_OFFER or PUNCH_SYNC lately, the
    /// [`UpgradeConfig::offer_limit`] bucket's state; an entry goes with its
    /// connection ([`Upgrades::handle_closed`]).
    frame_buckets: HashMap<ConnId, Instant>,
    /// The punches that asked for extra sockets, in the order they asked: the driver
    /// answers every request, in order.
    socket_waiters: VecDeque<ConnId>,
    /// Per connection, the peer's IP as its relay vouched for it (from the last
    /// [`PunchLink`]); an entry goes with its connection.
    vouched: HashMap<ConnId, IpAddr>,
    /// Birthday-search probes left per target network, over every punch.
    search_budget: SearchBudget,
    rng: ChaCha8Rng,
    next_request: u64,
    counters: UpgradeCounters,
    out: OutputQueue<UpgradeOutput>,
}

impl Upgrades {
    /// An idle machine drawing its punch tags and integrity keys from `seed`
    /// (a secret key); the peers' candidates must pass `policy`.
    pub fn new(config: UpgradeConfig, policy: AddressPolicy, seed: [u8; 32]) -> Self {
        let punch = &config.punch;
        let search_budget = SearchBudget::new(
            punch.search_network_probes,
            punch.search_network_refill,
            punch.search_networks,
        );
        Self {
            config,
            policy,
            local: None,
            hops: None,
            sessions: HashMap::default(),
            direct: HashMap::default(),
            frame_buckets: HashMap::default(),
            socket_waiters: VecDeque::new(),
            vouched: HashMap::default(),
            search_budget,
            rng: ChaCha8Rng::from_seed(seed),
            next_request: 0,
            counters: UpgradeCounters::default(),
            out: OutputQueue::new(),
        }
    }

    /// What the upgrades did.
    pub fn counters(&self) -> &UpgradeCounters {
        &self.counters
    }

    /// Sets this node's own punch candidates and NAT class; punches offered
    /// or answered from now on use them.
    pub fn handle_local_candidates(&mut self, candidates: Vec<Candidate>, nat: NatClass) {
        self.local = Some((candidates, nat));
    }

    /// Sets the IP hops from our socket to a public reflector, as NAT discovery
    /// counted them ([`crate::nat::discovery::NatReport::hops`]); punches from now
    /// on open our NATs with one less ([`Plan::hops`](crate::nat::punch::Plan::hops)).
    pub fn handle_local_hops(&mut self, hops: Option<u8>) {
        self.hops = hops;
    }

    /// A connection became ready: the dialer of a relayed one offers a
    /// punch when [`UpgradeConfig::auto`] says so.
    pub fn handle_ready(&mut self, now: Instant, link: PunchLink, outbound: bool) {
        self.out.mark(now);
        self.note_vouched(&link);
        if self.config.auto && outbound {
            self.offer(now, link.conn, link.peer, link.path);
        }
    }

    /// Starts a punch on `link` as the opener; false when its path is not a
    /// relay circuit or a punch is already under way.
    pub fn handle_upgrade(&mut self, now: Instant, link: PunchLink) -> bool {
        self.out.mark(now);
        self.note_vouched(&link);
        self.offer(now, link.conn, link.peer, link.path)
    }

    /// Keeps what `link` says the relay vouched for.
    fn note_vouched(&mut self, link: &PunchLink) {
        match link.vouched {
            Some(ip) => self.vouched.insert(link.conn, ip),
            None => self.vouched.remove(&link.conn),
        };
    }

    /// The connection is gone: its upgrade too.
    pub fn handle_closed(&mut self, conn: ConnId) {
        self.close_sockets(conn);
        self.vouched.remove(&conn);
        self.sessions.remove(&conn);
        self.frame_buckets.remove(&conn);
        self.direct.retain(|_, c| *c != conn);
    }

    /// The driver opened the extra sockets the oldest waiting punch (or re-punch, for its
    /// fresh socket) asked for: they go to it, or are closed again when it is over.
    pub fn handle_sockets_opened(&mut self, now: Instant, mut opened: Vec<SocketAddr>) {
        self.out.mark(now);
        let waiter = self.socket_waiters.pop_front();
        if let Some(conn) = waiter
            && let Some(s) = self.sessions.get_mut(&conn)
        {
            if let Stage::Punching(p) = &mut s.stage {
                p.handle_sockets_opened(now, opened);
                self.drain(now, conn);
                return;
            }
            if s.fresh == Fresh::Asked {
                s.fresh = if opened.is_empty() {
                    Fresh::None
                } else {
                    Fresh::Open(opened.remove(0))
                };
            }
        }
        if !opened.is_empty() {
            (self.out).push(UpgradeOutput::Sockets(SocketRequest::Close(opened)));
        }
    }

    /// Closes every extra socket `conn`'s session holds: its punch's, and a fresh one
    /// waiting for the next punch.
    fn close_sockets(&mut self, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if let Some(socket) = s.fresh.take_open() {
            (self.out).push(UpgradeOutput::Sockets(SocketRequest::Close(vec![socket])));
        }
        let (Stage::Punching(p) | Stage::Direct(p, _)) = &mut s.stage else {
            return;
        };
        p.close_sockets();
        while let Some(output) = p.poll_output() {
            if let Output::Sockets(request) = output {
                self.out.push(UpgradeOutput::Sockets(request));
            }
        }
    }

    /// The Node sent a packet to `remote` at `now` on a connection that awaits
    /// an acknowledgement (QUIC sent ack-eliciting frames not yet acknowledged;
    /// a bare ACK elicits no answer and is not reported): the watch of a direct
    /// path to it waits for a word back from the peer.
    pub fn handle_sent(&mut self, now: Instant, remote: SocketAddr) {
        if let Some(live) = self.live_at(remote) {
            live.sent(now);
            self.out.mark(now);
        }
    }

    /// Whether a punched path's liveness watch judges the direct path to
    /// `remote` (a path the connection was dialed or accepted on straight
    /// has none: the Node's silence watch judges it).
    pub fn watches(&self, remote: SocketAddr) -> bool {
        self.watch_of(remote).is_some()
    }

    /// Whether a packet from `remote` would be news: the watch of a direct
    /// path to it waits. The Node then checks the packet is authentic and
    /// says so with [`Upgrades::handle_heard`].
    pub fn waiting_for(&self, remote: SocketAddr) -> bool {
        self.watch_of(remote).is_some_and(Liveness::waiting)
    }

    /// The liveness watch of the punched direct path to `remote`, if one
    /// judges it.
    fn watch_of(&self, remote: SocketAddr) -> Option<&Liveness> {
        let session = self
            .direct
            .get(&remote)
            .and_then(|c| self.sessions.get(c))?;
        match &session.stage {
            Stage::Direct(_, live) if live.remote() == remote => Some(live),
            _ => None,
        }
    }

    /// An authentic packet of the peer at `remote` (one that decrypted and
    /// carried new frames) came over its direct path at `now`: the path
    /// answers, nothing waits.
    pub fn handle_heard(&mut self, now: Instant, remote: SocketAddr) {
        if let Some(live) = self.live_at(remote) {
            live.heard_quic(now);
            self.out.mark(now);
        }
    }

    /// The watch of the direct path whose peer is at `remote`.
    fn live_at(&mut self, remote: SocketAddr) -> Option<&mut Liveness> {
        let conn = *self.direct.get(&remote)?;
        let live = match self.sessions.get_mut(&conn).map(|s| &mut s.stage) {
            Some(Stage::Direct(_, live)) if live.remote() == remote => Some(live.as_mut()),
            _ => None,
        };
        if live.is_none() {
            self.direct.remove(&remote);
        }
        live
    }

    /// A STUN datagram: true when a punch or a liveness watch took it (one whose
    /// integrity did not check is taken, ignored and counted).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &Datagram) -> bool {
        let Datagram {
            local,
            remote: from,
            payload,
        } = datagram;
        let (local, from) = (*local, *from);
        self.out.mark(now);
        let mut taken = None;
        let mut moved = false;
        for (conn, s) in self.sessions.iter_mut() {
            let before = s.unauthenticated();
            let took = match &mut s.stage {
                Stage::Punching(p) => p.handle_datagram(now, local, from, payload),
                Stage::Direct(p, live) => {
                    let answered = p.stats().answered;
                    let took = live.handle_datagram(now, from, payload)
                        || p.handle_datagram(now, local, from, payload);
                    // An authentic probe of the peer from elsewhere while
                    // ours go unanswered: the peer moved (a delayed probe of
                    // the punch, while the path is healthy, moves nothing).
                    moved =
                        p.stats().answered > answered && from != live.remote() && live.suspect(now);
                    took
                }
                _ => false,
            };
            if took {
                self.counters.unauthenticated += s.unauthenticated() - before;
                taken = Some(*conn);
                break;
            }
        }
        if let Some(conn) = taken {
            if moved {
                self.out
                    .push(UpgradeOutput::PeerMoved { conn, remote: from });
            }
            self.drain(now, conn);
        }
        taken.is_some()
    }

    /// Runs the sessions' timers. Early calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.out.mark(now);
        let mut retries = Vec::new();
        for (conn, s) in self.sessions.iter_mut() {
            match &mut s.stage {
                Stage::Punching(p) => p.handle_timeout(now),
                Stage::Direct(p, live) => {
                    p.handle_timeout(now);
                    live.handle_timeout(now);
                }
                Stage::Relayed(Some(at)) if *at <= now => {
                    retries.push((*conn, s.peer, s.relay_path))
                }
                Stage::Offered(at) if now.saturating_duration_since(*at) >= OFFER_TIMEOUT => {
                    s.stage = Stage::Relayed(now.checked_add(self.config.retry_after));
                }
                _ => {}
            }
        }
        for (conn, peer, path) in retries {
            self.offer(now, conn, peer, path);
        }
        let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
        for conn in conns {
            self.drain(now, conn);
        }
    }
}

impl Child for Upgrades {
    type Output = UpgradeOutput;

    fn poll_output(&mut self) -> Option<UpgradeOutput> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.out
            .deadline(self.sessions.values().map(Session::poll_timeout))
    }
}
