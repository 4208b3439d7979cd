//! The relay's client side: reservations on relays (granted, renewed at
//! half their lifetime, lost with their connection), circuits opened to a
//! reserved node, and the end-to-end QUIC packets carried over a circuit as
//! length-prefixed frames (docs/PROTOCOL.md §11).
//!
//! A circuit's far end sits behind a virtual address whose real path is
//! [`RealPath::Relay`]; quinn runs the end-to-end connection (TLS identity
//! of the far node checked as on any dial) over it exactly as over UDP, and
//! the pool holds it as the connection to that node. The client asks the
//! node for the address ([`RelayClientOutput::InstallPath`]), for pooled
//! connections, streams and leases, and hands it the inner packets.
//!
//! **Dead circuits and dead relays.** A circuit of ours that a connection
//! runs over but over which nothing came within the claim time is closed
//! as dead: our handshake went out and got no answer, which is the relay's
//! doing when the peer holds a live reservation there. (Only a dialer can
//! tell: over an announced circuit nothing arrives also when the dialer
//! simply went another way.) A circuit no connection claims in that time
//! is closed without blame. After
//! [`RelayConfig::dead_circuits`] dead circuits in a row through one relay
//! (a ready one in between resets the count) the relay is taken for one
//! that accepts circuits and drops their traffic: our reservation there is
//! released, [`RelayEvent::RelayDropsCircuits`] reported (the node's
//! reachability side then reserves elsewhere), and the relay is avoided for
//! [`RelayConfig::avoid_dead_relay`] ([`RelayClient::avoids`]). Both tables
//! hold only relays we opened circuits through; the avoided ones are
//! forgotten once their time is up, the count once it is reset or reached.
//!
//! **Silence** (the node watches every connection's acknowledgements: data
//! left unacknowledged for a few probe timeouts). A relay connection of
//! ours that goes silent is a dead relay: the node closes it, which loses
//! our reservation and circuits there, and the relay is avoided
//! ([`RelayClient::handle_relay_silent`], [`RelayEvent::RelaySilent`]) until
//! a connection to it completes a handshake again
//! ([`RelayClient::handle_relay_answered`]): the silence may have been our
//! own network's (an uplink cut, a NAT that changed its address), when
//! every relay falls silent at once and avoiding them all for long would
//! leave us unreachable. An
//! end-to-end connection over a circuit that goes silent while the relay
//! answers makes a dead circuit and a strike. Should the peer of a dead
//! circuit (silent, or dead at the claim time) then answer over another
//! relay within `CONVICT_WITHIN`, the first relay dropped the traffic and
//! is dropped at once as above ([`RelayClient::handle_circuit_silent`]).
//! Relays with a strike, and the relay of a peer's last circuit when the
//! far end closed it or it went silent, are asked for circuits to that peer
//! after clean ones ([`RelayClient::suspects`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_proto::{StreamId, VarInt};

use super::{
    CIRCUIT_LIMIT, CIRCUIT_PEER_GONE, CircuitLoss, FrameSplitter, RelayConfig, RelayCounters,
    RelayEvent, Written, encode_frame,
};
use crate::collections::{HashMap, HashSet};
use crate::contract::{Child, OutputQueue};
use crate::dht::Contact;
use crate::id::NodeId;
use crate::path::RealPath;
use crate::pool::{Acquired, ConnId, Lease, WaitId};
use crate::wire::{self, Message, RelayStatus};

mod output;
mod spare;

pub use output::RelayClientOutput;
use spare::SpareWants;

/// How long after a circuit to a peer went silent a connection to that peer
/// through another relay convicts the silent circuit's relay.
const CONVICT_WITHIN: Duration = Duration::from_secs(120);

/// Peers remembered with a lost circuit, at least (more while we hold more
/// circuit ends).
const MAX_LOST_THROUGH: usize = 64;

/// How long a relay has at least to answer our request for a circuit (it
/// answers at once: one round trip, with room for retransmissions on a bad
/// link); the Node stretches it on a slow relay connection
/// ([`RelayClient::handle_acquired`]'s `answer_wait`). A relay that does
/// not answer in time, or whose connection closes first, is unreachable for
/// that dial, which moves on to the peer's next relay: a dial never waits
/// on a silent (or hostile) relay for good.
pub const CIRCUIT_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The most CIRCUIT_PEER addresses kept (the oldest is forgotten first).
const MAX_VOUCHED: usize = 256;

/// A circuit to a peer that died lately.
#[derive(Clone, Copy, Debug)]
struct LostCircuit {
    /// Its relay.
    relay: NodeId,
    /// Lost to our own silence watch (else closed from the far side, or
    /// silent for the idle timeout).
    silent: bool,
    /// Until when it is remembered.
    until: Instant,
}

/// A reservation of ours on one relay.
#[derive(Debug)]
struct Reservation {
    relay: Contact,
    /// The lease that keeps the relay connection pooled while we hold it.
    lease: Option<Lease>,
    conn: Option<ConnId>,
    expires: Option<Instant>,
    renew_at: Option<Instant>,
}

/// Our end of a circuit.
#[derive(Debug)]
struct CircuitEnd {
    /// The node at the other end.
    peer: NodeId,
    conn: ConnId,
    stream: StreamId,
    virtual_addr: SocketAddr,
    splitter: FrameSplitter,
    lease: Option<Lease>,
    /// Until a connection over the circuit is ready: when the circuit is
    /// judged (closed if unclaimed, dead if claimed and nothing came).
    ready_by: Option<Instant>,
    /// A packet came over the circuit.
    answered: bool,
    /// A spare: opened behind a direct connection to `peer` that had lost
    /// its circuit, under a virtual address of its own until the connection
    /// falls back onto it ([`RelayClient::adopt_spare`]). Kept while that
    /// connection is direct without another circuit.
    spare: bool,
    /// Where we reached the relay, when we opened the circuit.
    via: Option<SocketAddr>,
}

/// Who opened a circuit, and what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndRole {
    /// We dialed: the end-to-end connection is ours to open over it.
    Dialer,
    /// The relay announced it: the dialer's handshake comes over it, or
    /// (when we hold a direct connection to the dialer without a circuit) it
    /// is the dialer's spare.
    Announced,
    /// We opened it as a spare behind our direct connection to the peer.
    Spare,
}

/// Our end of a circuit waiting for its virtual address.
#[derive(Debug)]
struct Opening {
    conn: ConnId,
    stream: StreamId,
    lease: Option<Lease>,
    /// The other end.
    peer: NodeId,
    /// Who opened it, and what for.
    role: EndRole,
    /// Where we reached the relay, when we opened the circuit.
    via: Option<SocketAddr>,
}

/// What a pool acquire of the relay client waits for.
#[derive(Clone, Copy, Debug)]
enum Intent {
    Reserve(NodeId),
    Circuit {
        relay: NodeId,
        target: NodeId,
        via: SocketAddr,
        spare: bool,
    },
    EndToEnd {
        relay: NodeId,
        target: NodeId,
        circuit: u64,
    },
}

/// A relay request of ours waiting for its answer.
#[derive(Debug)]
enum RelayAsk {
    Reserve(NodeId),
    Circuit {
        relay: NodeId,
        target: NodeId,
        via: SocketAddr,
        /// Asked as a spare behind a direct connection.
        spare: bool,
        lease: Lease,
        /// When the relay's answer is due (the `answer_wait` of the
        /// lease, at least [`CIRCUIT_ANSWER_TIMEOUT`]).
        due: Instant,
    },
}

impl RelayAsk {
    /// When a circuit request's answer is due (a reservation's has no
    /// deadline of its own: its lapse).
    fn due(&self) -> Option<Instant> {
        match self {
            Self::Reserve(_) => None,
            Self::Circuit { due, .. } => Some(*due),
        }
    }
}

/// The client's state: our reservations, circuit ends and requests.
#[derive(Debug)]
pub struct RelayClient {
    /// How long an opened circuit waits for a ready connection over it.
    claim_timeout: Duration,
    /// Dead circuits in a row that make a relay dead (0: never).
    dead_circuits: u32,
    /// How long a dead relay is avoided.
    avoid_dead_relay: Duration,
    /// Dead circuits in a row, per relay (absent: none).
    strikes: HashMap<NodeId, u32>,
    /// Relays found dropping circuit traffic or silent, until when they
    /// are avoided.
    avoided: HashMap<NodeId, Instant>,
    /// The avoided relays that only fell silent (none convicted of dropping
    /// circuits): a connection to one that answers again ends its avoidance
    /// ([`RelayClient::handle_relay_answered`]). A subset of `avoided`'s keys.
    silent_only: HashSet<NodeId>,
    /// Peers whose circuit died lately, by peer.
    lost_through: HashMap<NodeId, LostCircuit>,
    /// Our circuit ends on each relay connection.
    ends_on: HashMap<ConnId, usize>,
    reservations: HashMap<NodeId, Reservation>,
    ends: HashMap<(NodeId, u64), CircuitEnd>,
    /// Which circuit each of our circuit streams is.
    streams: HashMap<(ConnId, StreamId), (NodeId, u64)>,
    opening: HashMap<(NodeId, u64), Opening>,
    acquiring: HashMap<u64, Intent>,
    waits: HashMap<WaitId, Intent>,
    sending: HashMap<u64, (ConnId, RelayAsk)>,
    asks: HashMap<(ConnId, StreamId), RelayAsk>,
    /// What relays we rely on said of our circuits' other ends (CIRCUIT_PEER), oldest
    /// first, at most [`MAX_VOUCHED`].
    vouched: VecDeque<((NodeId, u64), SocketAddr)>,
    /// Peers whose direct connection waits for a spare circuit.
    spares: SpareWants,
    next_request: u64,
    next_token: u64,
    counters: RelayCounters,
    out: OutputQueue<RelayClientOutput>,
}

impl RelayClient {
    /// A client holding nothing; an opened circuit that carries no ready
    /// connection within `claim_timeout` is closed as dead, and `config`
    /// says when dead circuits make a dead relay.
    pub fn new(claim_timeout: Duration, config: &RelayConfig) -> Self {
        Self {
            claim_timeout,
            dead_circuits: config.dead_circuits,
            avoid_dead_relay: config.avoid_dead_relay,
            strikes: HashMap::default(),
            avoided: HashMap::default(),
            silent_only: HashSet::default(),
            lost_through: HashMap::default(),
            ends_on: HashMap::default(),
            reservations: HashMap::default(),
            ends: HashMap::default(),
            streams: HashMap::default(),
            opening: HashMap::default(),
            acquiring: HashMap::default(),
            waits: HashMap::default(),
            sending: HashMap::default(),
            asks: HashMap::default(),
            vouched: VecDeque::new(),
            spares: SpareWants::default(),
            next_request: 0,
            next_token: 0,
            counters: RelayCounters::default(),
            out: OutputQueue::new(),
        }
    }

    /// The client's counters (the server's fields stay zero).
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// The relays we hold or are asking for a reservation on.
    pub fn wanted(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.reservations.keys()
    }

    /// The relays that hold a reservation of ours now, sorted.
    pub fn reserved_relays(&self) -> Vec<NodeId> {
        let mut relays: Vec<NodeId> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires.is_some())
            .map(|(id, _)| *id)
            .collect();
        relays.sort();
        relays
    }

    /// Whether a reservation of ours is held now on a relay other than
    /// `relay`: somewhere to move circuits should `relay` die.
    pub fn reserved_elsewhere(&self, relay: &NodeId) -> bool {
        (self.reservations.iter()).any(|(id, r)| id != relay && r.expires.is_some())
    }

    /// Our circuit ends (live, or kept as a backup).
    pub fn end_count(&self) -> usize {
        self.ends.len()
    }

    /// The circuits behind `virtual_addr`, sorted.
    pub fn circuits_behind(&self, virtual_addr: SocketAddr) -> Vec<RealPath> {
        let mut keys: Vec<(NodeId, u64)> = self
            .ends
            .iter()
            .filter(|(_, end)| end.virtual_addr == virtual_addr)
            .map(|(key, _)| *key)
            .collect();
        keys.sort();
        keys.into_iter()
            .map(|(relay, circuit)| RealPath::Relay { relay, circuit })
            .collect()
    }

    /// True when the pool acquire `wait` is the relay client's.
    pub fn owns(&self, wait: WaitId) -> bool {
        self.waits.contains_key(&wait)
    }

    /// True when `stream` of `conn` is our end of a circuit.
    pub fn carries(&self, conn: ConnId, stream: StreamId) -> bool {
        self.streams.contains_key(&(conn, stream))
    }

    /// True when `relay` was found dropping circuit traffic and is avoided
    /// at `now`: not reserved on, asked for circuits only after others.
    pub fn avoids(&self, now: Instant, relay: &NodeId) -> bool {
        self.avoided.get(relay).is_some_and(|until| *until > now)
    }

    /// The relays avoided at `now`, sorted.
    pub fn avoided_relays(&self, now: Instant) -> Vec<NodeId> {
        let mut relays: Vec<NodeId> = (self.avoided.keys())
            .filter(|r| self.avoids(now, r))
            .copied()
            .collect();
        relays.sort();
        relays
    }

    /// The avoided relays at `now` that only fell silent (none convicted of
    /// dropping circuits), sorted.
    pub fn silent_relays(&self, now: Instant) -> Vec<NodeId> {
        let mut relays = self.avoided_relays(now);
        relays.retain(|r| self.silent_only.contains(r));
        relays
    }

    /// An end-to-end connection at `virtual_addr` became ready over a
    /// circuit: counted, and the circuit (and its relay) proven alive. A
    /// relay through which a circuit to the same peer went silent is
    /// convicted: the peer answers, the relay dropped its traffic.
    pub fn handle_relayed_connection(&mut self, now: Instant, virtual_addr: SocketAddr) {
        self.out.mark(now);
        self.counters.relayed_connections += 1;
        let mut convicted = Vec::new();
        for ((relay, _), end) in &mut self.ends {
            if end.virtual_addr == virtual_addr {
                end.ready_by = None;
                self.strikes.remove(relay);
                match self.lost_through.remove(&end.peer) {
                    Some(lost) if lost.relay != *relay && lost.silent && lost.until > now => {
                        convicted.push(lost.relay);
                    }
                    _ => {}
                }
            }
        }
        for relay in convicted {
            self.convict(now, relay);
        }
    }

    /// CIRCUIT_PEER from `relay` on `conn`: where the relay sees the other end of our
    /// circuit. Kept only from a relay connection we rely on or await an answer on, the
    /// oldest forgotten past the bound (256 circuits).
    pub fn handle_circuit_peer(&mut self, conn: ConnId, relay: NodeId, m: wire::CircuitPeer) {
        let asking = self.asks.keys().any(|(c, _)| *c == conn);
        if !asking && !self.relies_on(conn, &relay) {
            return;
        }
        let key = (relay, m.circuit);
        self.vouched.retain(|(k, _)| *k != key);
        if self.vouched.len() == MAX_VOUCHED {
            self.vouched.pop_front();
        }
        self.vouched.push_back((key, m.peer));
    }

    /// Where `relay` said it sees the other end of our circuit `circuit`.
    pub fn vouched(&self, relay: &NodeId, circuit: u64) -> Option<SocketAddr> {
        (self.vouched.iter())
            .find(|((r, c), _)| r == relay && *c == circuit)
            .map(|(_, addr)| *addr)
    }

    /// Whether `conn` (a connection to `peer`) is one we relay through: it
    /// holds our reservation on `peer` or circuit ends of ours.
    pub fn relies_on(&self, conn: ConnId, peer: &NodeId) -> bool {
        self.ends_on.contains_key(&conn)
            || (self.reservations.get(peer)).is_some_and(|r| r.conn == Some(conn))
    }

    /// Whether a circuit of ours through `relay` died lately (a dead or
    /// silent one since the last that carried a connection), or our last
    /// circuit to `peer` through it was lost to silence: asked for circuits
    /// to `peer` after relays with a clean record.
    pub fn suspects(&self, relay: &NodeId, peer: &NodeId) -> bool {
        self.strikes.contains_key(relay)
            || (self.lost_through.get(peer)).is_some_and(|lost| lost.relay == *relay)
    }

    /// Remembers that our circuit to `peer` through `relay` died (`silent`:
    /// our own data over it went unacknowledged, so the relay is convicted
    /// should the peer answer through another relay soon). A silent loss is
    /// not forgotten for a mere closure; the table holds at most as many
    /// peers as we hold circuit ends, or [`MAX_LOST_THROUGH`].
    fn remember_loss(&mut self, now: Instant, peer: NodeId, relay: NodeId, silent: bool) {
        if self
            .lost_through
            .get(&peer)
            .is_some_and(|l| l.silent && l.relay == relay)
        {
            return;
        }
        let room = self.ends.len().max(MAX_LOST_THROUGH);
        if self.lost_through.len() >= room && !self.lost_through.contains_key(&peer) {
            return;
        }
        let until = now + self.avoid_dead_relay.min(CONVICT_WITHIN);
        let lost = LostCircuit {
            relay,
            silent,
            until,
        };
        self.lost_through.insert(peer, lost);
    }

    /// Our connection to `relay` left data unacknowledged too long (the
    /// node closes it, which ends our reservation and circuits there):
    /// counted, reported and avoided.
    pub fn handle_relay_silent(&mut self, now: Instant, relay: NodeId) {
        self.out.mark(now);
        self.counters.silent_relays += 1;
        if !self.avoids(now, &relay) {
            self.silent_only.insert(relay);
        }
        self.avoided.insert(relay, now + self.avoid_dead_relay);
        self.event(RelayEvent::RelaySilent { relay });
    }

    /// A connection of ours to `relay` completed its handshake: a relay
    /// avoided only because it fell silent answers again (the silence may
    /// have been our own network's: an uplink cut, a NAT that changed its
    /// address), so it is avoided no more and may be reserved on at once;
    /// true when it was avoided. One found dropping circuit traffic stays
    /// avoided.
    pub fn handle_relay_answered(&mut self, relay: &NodeId) -> bool {
        self.silent_only.remove(relay) && self.avoided.remove(relay).is_some()
    }

    /// The connection over our circuit `circuit` through `relay` left data
    /// unacknowledged too long while the relay itself answered: the
    /// circuit is dead (closing the connection over it), a strike against
    /// the relay, and the relay is convicted if the peer answers through
    /// another one soon after.
    pub fn handle_circuit_silent(&mut self, now: Instant, relay: NodeId, circuit: u64) {
        self.out.mark(now);
        let Some(peer) = self.ends.get(&(relay, circuit)).map(|e| e.peer) else {
            return;
        };
        self.counters.dead_circuits += 1;
        self.remember_loss(now, peer, relay, true);
        self.end_gone(relay, circuit, CircuitLoss::TimedOut);
        self.strike(now, relay);
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Asks `relay` to accept circuits for us and keeps the reservation:
    /// renewed at half its lifetime. Reserving again renews at once.
    pub fn handle_reserve(&mut self, now: Instant, relay: Contact) {
        self.out.mark(now);
        let id = relay.id;
        self.reservations.entry(id).or_insert_with(|| Reservation {
            relay: relay.clone(),
            lease: None,
            conn: None,
            expires: None,
            renew_at: None,
        });
        self.acquire_relay(&relay, Intent::Reserve(id));
    }

    /// Gives the reservation on `relay` up (RELAY_RELEASE) and lets its
    /// connection go idle. Circuits open through it stay.
    pub fn handle_release(&mut self, now: Instant, relay: NodeId) {
        self.out.mark(now);
        let Some(reservation) = self.reservations.remove(&relay) else {
            return;
        };
        if let Some(conn) = reservation.conn {
            let request_id = self.request_id();
            let frame = Message::from(wire::RelayRelease { request_id });
            self.out.push(RelayClientOutput::Notify { conn, frame });
        }
        self.release(reservation.lease);
    }

    /// Opens a circuit to `target` through `relay`, then has the node open
    /// the end-to-end connection over it.
    pub fn handle_dial(&mut self, now: Instant, relay: Contact, target: NodeId) {
        self.out.mark(now);
        let Some(&via) = relay.addrs.first() else {
            self.unreachable(relay.id, "no address".into());
            return;
        };
        let intent = Intent::Circuit {
            relay: relay.id,
            target,
            via,
            spare: false,
        };
        self.acquire(relay.id, via, intent);
    }

    /// The circuit behind our direct connection to `peer` closed: we dialed
    /// that connection through `relay` (reached at `via`), which holds the
    /// peer's reservation, so we ask it for a spare circuit now and again
    /// with backoff until one opens or the node's `direct_to` (in
    /// [`RelayClient::handle_timeout`]) no longer names a direct connection
    /// to the peer without a circuit.
    pub fn handle_want_spare(
        &mut self,
        now: Instant,
        peer: NodeId,
        relay: NodeId,
        via: SocketAddr,
    ) {
        self.out.mark(now);
        if self.spare_to(&peer).is_none() {
            self.spares.want(now, peer, relay, via);
        }
    }

    /// The spare circuit to `peer` (if we hold one): its key.
    fn spare_to(&self, peer: &NodeId) -> Option<(NodeId, u64)> {
        (self.ends.iter())
            .filter(|(_, end)| end.spare && end.peer == *peer)
            .map(|(key, _)| *key)
            .min()
    }

    /// Moves the spare circuit to `peer` behind `virtual_addr` (its direct
    /// connection's, falling back or hearing the peer over the spare): the
    /// circuit's path, and the virtual address it had until now, which the
    /// node forgets. `None` without a spare.
    pub fn adopt_spare(
        &mut self,
        peer: &NodeId,
        virtual_addr: SocketAddr,
    ) -> Option<(RealPath, SocketAddr)> {
        let key = self.spare_to(peer)?;
        let end = self.ends.get_mut(&key)?;
        let old = std::mem::replace(&mut end.virtual_addr, virtual_addr);
        end.spare = false;
        end.ready_by = None;
        self.counters.spares_adopted += 1;
        let (relay, circuit) = key;
        Some((RealPath::Relay { relay, circuit }, old))
    }

    /// Moves our circuit end at `at` (whatever it was opened for) behind
    /// the connection at `virtual_addr`: the circuit's path and the virtual
    /// address it had, if there is an end at `at`.
    pub fn adopt_end_at(
        &mut self,
        at: SocketAddr,
        virtual_addr: SocketAddr,
    ) -> Option<(RealPath, SocketAddr)> {
        let (&(relay, circuit), end) = self.ends.iter_mut().find(|(_, e)| e.virtual_addr == at)?;
        end.virtual_addr = virtual_addr;
        end.spare = false;
        end.ready_by = None;
        Some((RealPath::Relay { relay, circuit }, at))
    }

    /// The virtual addresses of our circuit ends to `peer`, in the order of
    /// their relay and circuit ids.
    pub fn ends_to(&self, peer: &NodeId) -> Vec<SocketAddr> {
        let mut ends: Vec<(&(NodeId, u64), SocketAddr)> = (self.ends.iter())
            .filter(|(_, end)| end.peer == *peer)
            .map(|(key, end)| (key, end.virtual_addr))
            .collect();
        ends.sort();
        ends.into_iter().map(|(_, at)| at).collect()
    }

    /// The peer of the spare circuit behind `virtual_addr`, if it is one.
    pub fn spare_at(&self, virtual_addr: SocketAddr) -> Option<NodeId> {
        (self.ends.values())
            .find(|end| end.spare && end.virtual_addr == virtual_addr)
            .map(|end| end.peer)
    }

    /// Whether our end of `circuit` through `relay` is open.
    pub fn has_end(&self, relay: &NodeId, circuit: u64) -> bool {
        self.ends.contains_key(&(*relay, circuit))
    }

    /// Gets a pooled connection to `relay` for `intent`.
    fn acquire_relay(&mut self, relay: &Contact, intent: Intent) {
        let Some(&addr) = relay.addrs.first() else {
            self.unreachable(relay.id, "no address".into());
            return;
        };
        self.acquire(relay.id, addr, intent);
    }

    fn acquire(&mut self, peer: NodeId, addr: SocketAddr, intent: Intent) {
        self.next_token += 1;
        let token = self.next_token;
        self.acquiring.insert(token, intent);
        self.out
            .push(RelayClientOutput::Acquire { token, peer, addr });
    }

    /// The outcome of [`RelayClientOutput::Acquire`] `token`; a ready
    /// connection's relay has `answer_wait` to answer a circuit request on it
    /// (at least [`CIRCUIT_ANSWER_TIMEOUT`]: the Node stretches it on a slow
    /// path).
    pub fn handle_acquired(
        &mut self,
        now: Instant,
        token: u64,
        acquired: Result<Acquired, String>,
        answer_wait: Duration,
    ) {
        self.out.mark(now);
        let Some(intent) = self.acquiring.remove(&token) else {
            return;
        };
        match (acquired, intent) {
            (Ok(Acquired::Waiting(wait)), intent) => {
                self.waits.insert(wait, intent);
            }
            (Ok(Acquired::Ready(lease)), Intent::EndToEnd { relay, circuit, .. }) => {
                // Already connected (another path won meanwhile): the
                // circuit has nothing to carry.
                self.release(Some(lease));
                self.end_gone(relay, circuit, CircuitLoss::Broken);
            }
            (Ok(Acquired::Ready(lease)), intent) => {
                self.lease_ready(now, intent, lease, answer_wait);
            }
            (Err(error), intent) => self.acquire_failed(intent, error),
        }
    }

    /// A pool acquire of the relay client got its connection, whose relay
    /// has `answer_wait` to answer a circuit request (as in
    /// [`RelayClient::handle_acquired`]).
    pub fn handle_wait_ready(
        &mut self,
        now: Instant,
        wait: WaitId,
        lease: Lease,
        answer_wait: Duration,
    ) {
        self.out.mark(now);
        if let Some(intent) = self.waits.remove(&wait) {
            self.lease_ready(now, intent, lease, answer_wait);
        }
    }

    /// A pool acquire of the relay client failed.
    pub fn handle_wait_failed(&mut self, now: Instant, wait: WaitId, error: String) {
        self.out.mark(now);
        if let Some(intent) = self.waits.remove(&wait) {
            self.acquire_failed(intent, error);
        }
    }

    fn acquire_failed(&mut self, intent: Intent, error: String) {
        match intent {
            Intent::Reserve(relay) | Intent::Circuit { relay, .. } => {
                self.unreachable(relay, error);
            }
            Intent::EndToEnd { relay, target, .. } => {
                self.event(RelayEvent::CircuitRefused {
                    relay,
                    target,
                    status: RelayStatus::TargetUnreachable,
                });
            }
        }
    }

    fn lease_ready(&mut self, now: Instant, intent: Intent, lease: Lease, answer_wait: Duration) {
        match intent {
            // The end-to-end connection is pooled; the application's
            // requests lease it from now on.
            Intent::EndToEnd { .. } => self.release(Some(lease)),
            Intent::Reserve(relay) => self.send_reserve(relay, lease),
            Intent::Circuit {
                relay,
                target,
                via,
                spare,
            } => {
                let request_id = self.request_id();
                let frame = Message::from(wire::CircuitOpen { request_id, target });
                let conn = lease.conn();
                let ask = RelayAsk::Circuit {
                    relay,
                    target,
                    via,
                    spare,
                    lease,
                    due: now + answer_wait.max(CIRCUIT_ANSWER_TIMEOUT),
                };
                self.ask(conn, request_id, frame, ask);
            }
        }
    }

    /// RELAY_RESERVE on the relay connection `lease` holds, which from now
    /// on the reservation's lease keeps pooled.
    fn send_reserve(&mut self, relay: NodeId, lease: Lease) {
        let Some(reservation) = self.reservations.get_mut(&relay) else {
            self.release(Some(lease));
            return;
        };
        let conn = lease.conn();
        let old = reservation.lease.replace(lease);
        reservation.conn = Some(conn);
        self.release(old);
        let request_id = self.request_id();
        let frame = Message::from(wire::RelayReserve { request_id });
        self.ask(conn, request_id, frame, RelayAsk::Reserve(relay));
    }

    /// Has the node write a relay request on a new stream of `conn`; the
    /// ask waits for the stream in [`RelayClient::handle_request_stream`].
    fn ask(&mut self, conn: ConnId, request_id: u64, frame: Message, ask: RelayAsk) {
        let finish = matches!(ask, RelayAsk::Reserve(_));
        self.sending.insert(request_id, (conn, ask));
        self.out.push(RelayClientOutput::Request {
            conn,
            request_id,
            frame,
            finish,
        });
    }

    /// The stream request `request_id` went out on (`None`: the connection
    /// is gone or allows no stream; reported to the application).
    pub fn handle_request_stream(
        &mut self,
        now: Instant,
        request_id: u64,
        stream: Option<StreamId>,
    ) {
        self.out.mark(now);
        let Some((conn, ask)) = self.sending.remove(&request_id) else {
            return;
        };
        if let Some(stream) = stream {
            self.asks.insert((conn, stream), ask);
            return;
        }
        // A reservation waits for its lapse or the next reserve.
        self.unanswered(ask, "no stream to the relay");
    }

    /// `ask` will get no answer: the relay is unreachable for it (a circuit
    /// request gives its lease back).
    fn unanswered(&mut self, ask: RelayAsk, detail: &str) {
        match ask {
            RelayAsk::Reserve(relay) => self.unreachable(relay, detail.into()),
            RelayAsk::Circuit { relay, lease, .. } => {
                self.counters.unanswered_circuit_requests += 1;
                self.unreachable(relay, detail.into());
                self.release(Some(lease));
            }
        }
    }

    /// RELAY_RESERVE_STATUS on `stream` of `conn`: our reservation granted
    /// or refused.
    pub fn handle_reserve_status(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        answer: wire::RelayReserveStatus,
    ) {
        self.out.mark(now);
        let relay = match self.asks.remove(&(conn, stream)) {
            Some(RelayAsk::Reserve(relay)) => relay,
            other => {
                // Not a reservation's answer: a circuit asked on this
                // stream gets no answer now, and gives its lease back.
                if let Some(RelayAsk::Circuit { relay, lease, .. }) = other {
                    self.release(Some(lease));
                    self.unreachable(relay, "a reservation answer to a circuit request".into());
                }
                self.out.push(RelayClientOutput::ProtocolError);
                return;
            }
        };
        if answer.status == RelayStatus::Ok {
            let Some(reservation) = self.reservations.get_mut(&relay) else {
                return;
            };
            let ttl = Duration::from_secs(u64::from(answer.ttl_secs));
            reservation.expires = Some(now + ttl);
            reservation.renew_at = Some(now + ttl / 2);
            self.counters.reservations_held += 1;
            self.event(RelayEvent::ReservationGranted { relay, ttl });
        } else {
            let Some(reservation) = self.reservations.remove(&relay) else {
                return;
            };
            self.release(reservation.lease);
            self.counters.reservations_lost += 1;
            let status = answer.status;
            self.event(RelayEvent::ReservationRefused { relay, status });
        }
    }

    /// CIRCUIT_STATUS on `stream` of `conn`: our circuit is open (the
    /// stream now carries its frames) or refused.
    pub fn handle_circuit_status(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        answer: wire::CircuitStatus,
    ) {
        self.out.mark(now);
        let Some(RelayAsk::Circuit {
            relay,
            target,
            via,
            spare,
            lease,
            ..
        }) = self.asks.remove(&(conn, stream))
        else {
            // Not ours: a granted circuit would go on carrying frames no
            // one reads.
            self.out.push(RelayClientOutput::ProtocolError);
            self.out.push(RelayClientOutput::Refuse { conn, stream });
            return;
        };
        if answer.status != RelayStatus::Ok {
            self.release(Some(lease));
            let status = answer.status;
            self.event(RelayEvent::CircuitRefused {
                relay,
                target,
                status,
            });
            return;
        }
        let opening = Opening {
            conn,
            stream,
            lease: Some(lease),
            peer: target,
            role: if spare {
                EndRole::Spare
            } else {
                EndRole::Dialer
            },
            via: Some(via),
        };
        self.open_end(relay, answer.circuit, opening);
    }

    /// CIRCUIT_INCOMING on `stream` of `conn` from `relay`: a relay we
    /// reserved on announces a circuit; the dialer's QUIC handshake arrives
    /// over it.
    pub fn handle_circuit_incoming(
        &mut self,
        now: Instant,
        conn: ConnId,
        relay: NodeId,
        stream: StreamId,
        incoming: wire::CircuitIncoming,
    ) {
        self.out.mark(now);
        if !self.reservations.contains_key(&relay) {
            // We never asked this node to relay for us.
            self.out.push(RelayClientOutput::ProtocolError);
            self.out.push(RelayClientOutput::Refuse { conn, stream });
            return;
        }
        let circuit = incoming.circuit;
        // The circuit keeps the relay connection pooled, as the dialer's
        // does, even if the reservation is released meanwhile.
        self.out.push(RelayClientOutput::Pin {
            conn,
            relay,
            circuit,
        });
        let opening = Opening {
            conn,
            stream,
            lease: None,
            peer: incoming.source,
            role: EndRole::Announced,
            via: None,
        };
        self.open_end(relay, circuit, opening);
    }

    fn open_end(&mut self, relay: NodeId, circuit: u64, opening: Opening) {
        let (conn, stream, peer) = (opening.conn, opening.stream, opening.peer);
        self.opening.insert((relay, circuit), opening);
        self.out.push(RelayClientOutput::InstallPath {
            relay,
            peer,
            circuit,
            conn,
            stream,
        });
    }

    /// The lease the node took for our end of `circuit` through `relay`
    /// (`None`: the pool does not hold the connection as ready).
    pub fn handle_pinned(&mut self, relay: NodeId, circuit: u64, lease: Option<Lease>) {
        let key = (relay, circuit);
        let slot = match self.opening.get_mut(&key) {
            Some(opening) => Some(&mut opening.lease),
            None => self.ends.get_mut(&key).map(|e| &mut e.lease),
        };
        match slot {
            Some(slot) => *slot = lease,
            None => self.release(lease),
        }
    }

    /// The virtual address the node put the circuit behind: our end is
    /// recorded, fed the bytes that came with its opening frame (`early`),
    /// and (when we dialed) the end-to-end connection is asked of the pool.
    /// An announced circuit is the dialer's spare when the node holds a
    /// ready direct connection to the dialer (`direct`: its virtual address)
    /// and no spare to the dialer yet: a dialer asks for a spare only once
    /// its end of the connection's circuit is gone, so ours of that circuit
    /// is closed (the relay may not have noticed yet).
    pub fn handle_path(
        &mut self,
        now: Instant,
        relay: NodeId,
        circuit: u64,
        virtual_addr: SocketAddr,
        early: &[u8],
        direct: Option<SocketAddr>,
    ) {
        self.out.mark(now);
        let Some(opening) = self.opening.remove(&(relay, circuit)) else {
            return;
        };
        let peer = opening.peer;
        let spare = match opening.role {
            // One spare per peer: another is an unclaimed circuit, closed in time.
            EndRole::Spare => self.spare_to(&peer).is_none(),
            EndRole::Announced => direct.is_some() && self.spare_to(&peer).is_none(),
            EndRole::Dialer => false,
        };
        let (conn, stream) = (opening.conn, opening.stream);
        let end = CircuitEnd {
            peer,
            conn,
            stream,
            virtual_addr,
            splitter: FrameSplitter::new(),
            lease: opening.lease,
            ready_by: Some(now + self.claim_timeout),
            answered: false,
            spare,
            via: opening.via,
        };
        self.ends.insert((relay, circuit), end);
        *self.ends_on.entry(conn).or_insert(0) += 1;
        self.streams.insert((conn, stream), (relay, circuit));
        self.feed((relay, circuit), early);
        if spare {
            if opening.role == EndRole::Announced
                && let Some(behind) = direct
            {
                self.end_circuits(
                    |e| !e.spare && e.virtual_addr == behind,
                    CircuitLoss::PeerGone,
                );
            }
            self.spares.satisfied(&peer);
            self.counters.spares_opened += 1;
            self.event(RelayEvent::SpareCircuitOpened {
                relay,
                peer,
                circuit,
            });
            return;
        }
        self.event(RelayEvent::CircuitOpened {
            relay,
            peer,
            circuit,
        });
        if opening.role == EndRole::Dialer {
            let intent = Intent::EndToEnd {
                relay,
                target: peer,
                circuit,
            };
            self.acquire(peer, virtual_addr, intent);
        }
    }

    /// Bytes read from our end of a circuit: each whole frame is a QUIC
    /// packet for quinn under the circuit's virtual address.
    pub fn handle_circuit_bytes(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        data: &[u8],
    ) {
        self.out.mark(now);
        if let Some(&key) = self.streams.get(&(conn, stream)) {
            self.feed(key, data);
        }
    }

    /// Splits `data` of the circuit `key` into packets for quinn; a framing
    /// error ends the circuit.
    fn feed(&mut self, key: (NodeId, u64), data: &[u8]) {
        match self.ends.get_mut(&key) {
            Some(end) => end.splitter.push(data),
            None => return,
        }
        while let Some(end) = self.ends.get_mut(&key) {
            match end.splitter.next_packet() {
                Ok(Some(packet)) => {
                    end.answered = true;
                    let (virtual_addr, spare) = (end.virtual_addr, end.spare);
                    self.out.push(RelayClientOutput::Packet {
                        virtual_addr,
                        packet,
                        spare,
                    });
                }
                Ok(None) => return,
                Err(_) => {
                    self.counters.frame_errors += 1;
                    self.end_gone(key.0, key.1, CircuitLoss::Broken);
                    return;
                }
            }
        }
    }

    /// Our circuit stream ended: finished by the relay (`reset: None`) or
    /// reset with `reset` (the relay's code says why).
    pub fn handle_stream_gone(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        reset: Option<VarInt>,
    ) {
        self.out.mark(now);
        let Some(&(relay, circuit)) = self.streams.get(&(conn, stream)) else {
            return;
        };
        let loss = match reset {
            Some(CIRCUIT_LIMIT) => CircuitLoss::LimitReached,
            Some(CIRCUIT_PEER_GONE) => CircuitLoss::PeerGone,
            _ => CircuitLoss::Broken,
        };
        self.end_gone(relay, circuit, loss);
    }

    /// One QUIC packet of ours for the circuit `circuit` through `relay`:
    /// written onto its stream, or dropped when the circuit is gone (QUIC
    /// recovers).
    pub fn handle_outgoing(&mut self, now: Instant, relay: NodeId, circuit: u64, packet: &[u8]) {
        self.out.mark(now);
        let Some(end) = self.ends.get(&(relay, circuit)) else {
            return;
        };
        let Some(frame) = encode_frame(packet) else {
            return;
        };
        self.out.push(RelayClientOutput::Write {
            conn: end.conn,
            stream: end.stream,
            frame,
        });
    }

    /// What became of a frame of [`RelayClientOutput::Write`].
    pub fn handle_written(&mut self, written: Written) {
        match written {
            Written::Written => self.counters.packets_to_circuits += 1,
            Written::QueueFull => self.counters.dropped_queue_full += 1,
            Written::Gone => {}
        }
    }

    /// Our end of a circuit is gone: its stream is refused, its lease
    /// returned, and the node told to close what ran over it.
    fn end_gone(&mut self, relay: NodeId, circuit: u64, loss: CircuitLoss) {
        let Some(end) = self.ends.remove(&(relay, circuit)) else {
            return;
        };
        if matches!(loss, CircuitLoss::PeerGone | CircuitLoss::TimedOut)
            && let Some(now) = self.out.last_now()
        {
            // The far end gave up on it, or it went quiet: try another
            // relay to that peer first next time.
            self.remember_loss(now, end.peer, relay, false);
        }
        let (conn, stream) = (end.conn, end.stream);
        self.streams.remove(&(conn, stream));
        if let Some(count) = self.ends_on.get_mut(&conn) {
            *count -= 1;
            if *count == 0 {
                self.ends_on.remove(&conn);
            }
        }
        self.out.push(RelayClientOutput::Refuse { conn, stream });
        self.release(end.lease);
        self.out.push(RelayClientOutput::CircuitClosed {
            relay,
            circuit,
            virtual_addr: end.virtual_addr,
            loss,
            peer: end.peer,
            via: end.via,
            spare: end.spare,
        });
    }

    /// Ends our circuit ends that `which` picks, with `loss`.
    fn end_circuits(&mut self, which: impl Fn(&CircuitEnd) -> bool, loss: CircuitLoss) {
        let ends: Vec<(NodeId, u64)> = self
            .ends
            .iter()
            .filter(|(_, e)| which(e))
            .map(|(key, _)| *key)
            .collect();
        for (relay, circuit) in ends {
            self.end_gone(relay, circuit, loss);
        }
    }

    /// The connection behind `virtual_addr` is gone: our circuit ends
    /// there close (the relay then closes the circuits).
    pub fn handle_path_gone(&mut self, now: Instant, virtual_addr: SocketAddr) {
        self.out.mark(now);
        self.end_circuits(|e| e.virtual_addr == virtual_addr, CircuitLoss::Broken);
    }

    /// A connection is gone: reservations on it are lost and circuits
    /// through it close (and so do connections that ran over them).
    pub fn handle_connection_gone(&mut self, now: Instant, conn: ConnId) {
        self.out.mark(now);
        // Circuit requests on it get no answer now: their dials move on.
        // (A reservation asked there is lost just below.)
        for ask in self.take_asks(|c, _| c == conn) {
            if matches!(ask, RelayAsk::Circuit { .. }) {
                self.unanswered(ask, "the relay connection closed before it answered");
            }
        }
        let lost: Vec<NodeId> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.conn == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        for relay in lost {
            self.reservation_lost(relay);
        }
        self.end_circuits(|e| e.conn == conn, CircuitLoss::RelayLost);
    }

    /// Circuit requests whose answer is overdue by `now` get none: their
    /// relays are unreachable for them.
    fn expire_asks(&mut self, now: Instant) {
        for ask in self.take_asks(|_, ask| ask.due().is_some_and(|due| due <= now)) {
            self.unanswered(ask, "no answer to the circuit request");
        }
    }

    /// Removes the requests (waiting for a stream, or sent) that `pick`
    /// chooses by their connection and returns them.
    fn take_asks(&mut self, pick: impl Fn(ConnId, &RelayAsk) -> bool) -> Vec<RelayAsk> {
        let sending = (self.sending.iter())
            .filter(|(_, (conn, ask))| pick(*conn, ask))
            .map(|(id, _)| *id)
            .collect::<Vec<_>>();
        let asked = (self.asks.iter())
            .filter(|((conn, _), ask)| pick(*conn, ask))
            .map(|(key, _)| *key)
            .collect::<Vec<_>>();
        let sent = sending.iter().filter_map(|id| self.sending.remove(id));
        let mut taken: Vec<RelayAsk> = sent.map(|(_, ask)| ask).collect();
        taken.extend(asked.iter().filter_map(|key| self.asks.remove(key)));
        taken
    }

    fn reservation_lost(&mut self, relay: NodeId) {
        let Some(reservation) = self.reservations.remove(&relay) else {
            return;
        };
        self.release(reservation.lease);
        self.counters.reservations_lost += 1;
        self.event(RelayEvent::ReservationLost { relay });
    }

    /// Renews reservations at half their lifetime (a lapsed one is lost),
    /// judges circuits that carried no ready connection in time (module
    /// docs; `carried` tells whether a connection runs behind a virtual
    /// address), keeps spare circuits while they are wanted and asks for the
    /// spares that are due ([`RelayClient::handle_want_spare`]; `direct_to`
    /// names the virtual address of the node's ready direct connection to a
    /// peer), and forgets relays avoided long enough.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        carried: impl Fn(&SocketAddr) -> bool,
        direct_to: impl Fn(&NodeId) -> Option<SocketAddr>,
    ) {
        self.out.mark(now);
        let mut lapsed = Vec::new();
        let mut renew = Vec::new();
        for (id, reservation) in &mut self.reservations {
            if reservation.expires.is_some_and(|t| t <= now) {
                lapsed.push(*id);
            } else if reservation.renew_at.is_some_and(|t| t <= now) {
                reservation.renew_at = None;
                renew.push(reservation.relay.clone());
            }
        }
        for relay in lapsed {
            self.reservation_lost(relay);
        }
        for relay in renew {
            self.acquire_relay(&relay, Intent::Reserve(relay.id));
        }
        self.expire_asks(now);
        self.judge_spares(now, &carried, &direct_to);
        self.ask_spares(now, &direct_to);
        let mut due: Vec<((NodeId, u64), bool)> = Vec::new();
        for (key, end) in &mut self.ends {
            if end.spare || end.ready_by.is_none_or(|t| t > now) {
                continue;
            }
            match (carried(&end.virtual_addr), end.answered) {
                (false, _) => due.push((*key, false)),
                (true, false) => due.push((*key, true)),
                (true, true) => end.ready_by = None,
            }
        }
        due.sort();
        for ((relay, circuit), dead) in due {
            if dead {
                self.counters.dead_circuits += 1;
                if let Some(peer) = self.ends.get(&(relay, circuit)).map(|e| e.peer) {
                    self.remember_loss(now, peer, relay, true);
                }
                self.end_gone(relay, circuit, CircuitLoss::TimedOut);
                self.strike(now, relay);
            } else {
                self.end_gone(relay, circuit, CircuitLoss::Broken);
            }
        }
        self.avoided.retain(|_, until| *until > now);
        let avoided = &self.avoided;
        self.silent_only.retain(|relay| avoided.contains_key(relay));
        self.lost_through.retain(|_, lost| lost.until > now);
    }

    /// Whether a circuit end of ours other than a spare is behind
    /// `virtual_addr`.
    fn backed(&self, virtual_addr: SocketAddr) -> bool {
        (self.ends.values()).any(|end| !end.spare && end.virtual_addr == virtual_addr)
    }

    /// Spares whose time is up: one a connection claimed (a dialer that
    /// started again and dialed anew over it) is a circuit like any other;
    /// one whose peer still has a direct connection without another circuit
    /// waits another claim time; the rest close without blame.
    fn judge_spares(
        &mut self,
        now: Instant,
        carried: &impl Fn(&SocketAddr) -> bool,
        direct_to: &impl Fn(&NodeId) -> Option<SocketAddr>,
    ) {
        let mut due: Vec<((NodeId, u64), bool)> = (self.ends.iter())
            .filter(|(_, end)| end.spare && end.ready_by.is_some_and(|t| t <= now))
            .map(|(key, end)| {
                let wanted = direct_to(&end.peer).is_some_and(|v| !self.backed(v));
                (*key, wanted)
            })
            .collect();
        due.sort();
        for (key, wanted) in due {
            let Some(end) = self.ends.get_mut(&key) else {
                continue;
            };
            if carried(&end.virtual_addr) {
                end.spare = false;
                end.ready_by = None;
            } else if wanted {
                end.ready_by = Some(now + self.claim_timeout);
            } else {
                self.end_gone(key.0, key.1, CircuitLoss::Broken);
            }
        }
    }

    /// Asks for the spare circuits that are due, to peers that still have
    /// a direct connection without a circuit and no spare.
    fn ask_spares(&mut self, now: Instant, direct_to: &impl Fn(&NodeId) -> Option<SocketAddr>) {
        for (peer, want) in self.spares.take_due(now) {
            let wanted = direct_to(&peer).is_some_and(|v| !self.backed(v));
            if !wanted || self.spare_to(&peer).is_some() {
                self.spares.satisfied(&peer);
                continue;
            }
            if self.asking_spare(&peer) {
                continue;
            }
            let intent = Intent::Circuit {
                relay: want.relay,
                target: peer,
                via: want.via,
                spare: true,
            };
            self.acquire(want.relay, want.via, intent);
        }
    }

    /// Whether a spare to `peer` is being asked for: its relay connection
    /// awaited, or its request on the way or unanswered.
    fn asking_spare(&self, peer: &NodeId) -> bool {
        let spare_to =
            |i: &Intent| matches!(i, Intent::Circuit { target, spare: true, .. } if target == peer);
        let asked = |a: &RelayAsk| matches!(a, RelayAsk::Circuit { target, spare: true, .. } if target == peer);
        (self.acquiring.values().chain(self.waits.values())).any(spare_to)
            || (self.sending.values().map(|(_, ask)| ask))
                .chain(self.asks.values())
                .any(asked)
    }

    /// One more dead circuit through `relay`; at the limit the relay is
    /// dead: released, reported and avoided.
    fn strike(&mut self, now: Instant, relay: NodeId) {
        if self.dead_circuits == 0 {
            return;
        }
        let strikes = self.strikes.entry(relay).or_insert(0);
        *strikes += 1;
        if *strikes < self.dead_circuits {
            return;
        }
        self.convict(now, relay);
    }

    /// `relay` drops circuit traffic: released, reported and avoided.
    fn convict(&mut self, now: Instant, relay: NodeId) {
        self.strikes.remove(&relay);
        self.silent_only.remove(&relay);
        self.lost_through.retain(|_, lost| lost.relay != relay);
        self.counters.dead_relays += 1;
        self.avoided.insert(relay, now + self.avoid_dead_relay);
        self.handle_release(now, relay);
        self.event(RelayEvent::RelayDropsCircuits { relay });
    }

    fn unreachable(&mut self, relay: NodeId, detail: String) {
        if self
            .reservations
            .get(&relay)
            .is_some_and(|r| r.expires.is_none())
        {
            self.reservations.remove(&relay);
        }
        self.event(RelayEvent::RelayUnreachable { relay, detail });
    }

    fn release(&mut self, lease: Option<Lease>) {
        if let Some(lease) = lease {
            self.out.push(RelayClientOutput::Release(lease));
        }
    }

    fn event(&mut self, event: RelayEvent) {
        self.out.push(RelayClientOutput::Event(event));
    }
}

impl Child for RelayClient {
    type Output = RelayClientOutput;

    fn poll_output(&mut self) -> Option<RelayClientOutput> {
        self.out.pop()
    }

    /// The latest input's time while output waits, else the next renewal
    /// or lapse of a reservation, the end of a circuit's wait for its
    /// connection (or of a spare's claim time), or the next ask for a spare.
    fn poll_timeout(&self) -> Option<Instant> {
        let reservations = self
            .reservations
            .values()
            .flat_map(|r| [r.renew_at, r.expires]);
        let ends = self.ends.values().map(|e| e.ready_by);
        let asks = (self.sending.values().map(|(_, ask)| ask))
            .chain(self.asks.values())
            .map(RelayAsk::due);
        let spares = std::iter::once(self.spares.next_due());
        self.out
            .deadline(reservations.chain(ends).chain(asks).chain(spares))
    }
}

#[cfg(test)]
mod tests;
