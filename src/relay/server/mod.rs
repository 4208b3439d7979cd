//! The relay server: reservations of private nodes and the circuits spliced
//! between a dialer's stream and the reserved node's stream
//! (docs/PROTOCOL.md §11).
//!
//! The relay splits each circuit stream into frames only to forward or drop
//! whole inner packets; it never decodes them (they are end-to-end QUIC,
//! which it could not read anyway). Every limit of [`RelayConfig`] is
//! enforced here: reservations in total and per IP group, circuits in
//! total, per node and per IP group, bytes per second per node and in total
//! (token buckets: excess packets are dropped and QUIC recovers them; a
//! packet over its sender's rate spends nothing of the total, so one
//! flooder cannot starve the other circuits), bytes per circuit and circuit
//! lifetime (the circuit is closed), and the bytes waiting for one end's
//! flow control (excess packets are dropped: the node reports it through
//! [`RelayServer::handle_forwarded`]). Whether it serves at all follows
//! [`RelayMode`](super::RelayMode) and the node's reachability
//! ([`RelayServer::handle_public`]).

use std::net::IpAddr;
use std::time::Instant;

#[cfg(feature = "sim")]
use bytes::Bytes;
use quinn_proto::{StreamId, VarInt};

#[cfg(feature = "sim")]
use super::frames::FRAME_PREFIX;
use super::{
    CIRCUIT_BROKEN, CIRCUIT_LIMIT, CIRCUIT_PEER_GONE, FrameSplitter, IP_GROUP_V4_BITS,
    IP_GROUP_V6_BITS, RelayConfig, RelayCounters, TokenBucket, Written, encode_frame,
};
use crate::collections::HashMap;
use crate::contract::{Child, OutputQueue};
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::scope::{self, IpPrefix};
use crate::wire::{self, Message, RelayStatus};

mod output;

pub use output::{RelayServerOutput, ServerPin};

/// A node's reservation on this relay.
#[derive(Debug)]
struct Reserved {
    conn: ConnId,
    /// The IP group the reserving connection comes from.
    group: IpPrefix,
    expires: Instant,
    /// Keeps the reserved connection pooled (never evicted as idle).
    lease: Option<Lease>,
}

/// One end of a spliced circuit.
#[derive(Debug)]
struct SpliceEnd {
    peer: NodeId,
    group: IpPrefix,
    conn: ConnId,
    stream: StreamId,
    splitter: FrameSplitter,
    /// Keeps the end's connection pooled while the circuit lasts.
    lease: Option<Lease>,
}

/// A circuit: the dialer's end (0) and the target's end (1).
#[derive(Debug)]
struct Splice {
    ends: [SpliceEnd; 2],
    opened: Instant,
    bytes: u64,
}

/// A circuit admitted, waiting for its stream to the target.
#[derive(Debug)]
struct Admitted {
    source: NodeId,
    source_group: IpPrefix,
    conn: ConnId,
    stream: StreamId,
    request_id: u64,
    target: NodeId,
    target_group: IpPrefix,
    target_conn: ConnId,
}

/// Why a request is refused, as the wire says it and as it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Any status but a per-IP limit.
    Status(RelayStatus),
    /// A per-IP limit (`LIMIT_REACHED` on the wire).
    IpLimit,
}

impl Refusal {
    fn status(self) -> RelayStatus {
        match self {
            Self::Status(status) => status,
            Self::IpLimit => RelayStatus::LimitReached,
        }
    }
}

/// The IP group of a peer whose connection comes from `ip`.
fn group(ip: IpAddr) -> IpPrefix {
    scope::prefix(ip, IP_GROUP_V4_BITS, IP_GROUP_V6_BITS)
}

/// The relay's state: reservations, circuits, rate limits and counters.
#[derive(Debug)]
pub struct RelayServer {
    config: RelayConfig,
    reservations: HashMap<NodeId, Reserved>,
    splices: HashMap<u64, Splice>,
    /// Which circuit side each circuit stream is.
    streams: HashMap<(ConnId, StreamId), (u64, usize)>,
    /// Circuits admitted whose stream to the target is being opened (the
    /// node answers each [`RelayServerOutput::Announce`] at once, so this
    /// holds at most the few of one input).
    admitted: HashMap<u64, Admitted>,
    next_circuit: u64,
    /// The node is publicly reachable now ([`RelayMode::Auto`](super::RelayMode::Auto) serves only
    /// then).
    public: bool,
    peer_buckets: HashMap<NodeId, TokenBucket>,
    total_bucket: Option<TokenBucket>,
    counters: RelayCounters,
    out: OutputQueue<RelayServerOutput>,
    #[cfg(feature = "sim")]
    tap: Tap,
}

/// Simulator only: copies of the inner packets the relay forwarded, to
/// check what a relay gets to see.
#[cfg(feature = "sim")]
#[derive(Debug, Default)]
struct Tap {
    room: usize,
    packets: Vec<Bytes>,
    /// Drop every circuit packet unseen (a relay that accepts circuits and
    /// blackholes them).
    blackhole: bool,
}

impl RelayServer {
    /// A relay with no reservations or circuits, enforcing `config`.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            reservations: HashMap::default(),
            splices: HashMap::default(),
            streams: HashMap::default(),
            admitted: HashMap::default(),
            next_circuit: 0,
            public: false,
            peer_buckets: HashMap::default(),
            total_bucket: None,
            counters: RelayCounters::default(),
            out: OutputQueue::new(),
            #[cfg(feature = "sim")]
            tap: Tap::default(),
        }
    }

    /// Reservations held here now.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits relayed here now.
    pub fn circuit_count(&self) -> usize {
        self.splices.len()
    }

    /// The server's counters (the client's fields stay zero).
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// True when `stream` of `conn` is a side of a circuit relayed here.
    pub fn carries(&self, conn: ConnId, stream: StreamId) -> bool {
        self.streams.contains_key(&(conn, stream))
    }

    /// True when `conn` carries a side of a circuit relayed here.
    pub fn carries_circuits(&self, conn: ConnId) -> bool {
        (self.splices.values()).any(|splice| splice.ends.iter().any(|end| end.conn == conn))
    }

    /// Whether requests are served now (the mode, and for
    /// [`RelayMode::Auto`](super::RelayMode::Auto) the node's reachability).
    pub fn serving(&self) -> bool {
        self.config.mode.serves(self.public)
    }

    /// The node's reachability changed (`public`: a discovery run says it
    /// is publicly reachable); true when whether it serves changed. A node
    /// that stops serving refuses renewals, so its reservations lapse.
    pub fn handle_public(&mut self, now: Instant, public: bool) -> bool {
        self.out.mark(now);
        let before = self.serving();
        self.public = public;
        before != self.serving()
    }

    fn circuits_of(&self, peer: &NodeId) -> usize {
        self.splices
            .values()
            .filter(|s| s.ends.iter().any(|e| e.peer == *peer))
            .count()
    }

    /// Circuits (open or being opened) that a node of `group` is an end of.
    fn circuits_of_group(&self, group: &IpPrefix) -> usize {
        let open = self
            .splices
            .values()
            .map(|s| [s.ends[0].group, s.ends[1].group]);
        let admitted = self
            .admitted
            .values()
            .map(|a| [a.source_group, a.target_group]);
        open.chain(admitted)
            .filter(|ends| ends.contains(group))
            .count()
    }

    /// RELAY_RESERVE on `stream` of `conn`, whose node is `peer` and whose
    /// packets come from `ip`: grant, renew or refuse a reservation.
    pub fn handle_reserve(
        &mut self,
        now: Instant,
        conn: ConnId,
        (peer, ip): (NodeId, IpAddr),
        stream: StreamId,
        request: wire::RelayReserve,
    ) {
        self.out.mark(now);
        let config = self.config;
        let status = match self.admit_reservation(now, conn, peer, group(ip)) {
            Ok(()) => {
                self.counters.reservations_granted += 1;
                RelayStatus::Ok
            }
            Err(refusal) => {
                self.count_refusal(refusal);
                refusal.status()
            }
        };
        let ttl_secs = match status {
            RelayStatus::Ok => u32::try_from(config.reservation_ttl.as_secs()).unwrap_or(u32::MAX),
            _ => 0,
        };
        let frame = Message::from(wire::RelayReserveStatus {
            request_id: request.request_id,
            status,
            ttl_secs,
        });
        self.out.push(RelayServerOutput::Answer {
            conn,
            stream,
            frame,
        });
    }

    /// Checks a reservation against the mode and the limits; on success it
    /// is held (a new one, or one moved to a new connection of the same
    /// node) or renewed, for `reservation_ttl` from `now`.
    fn admit_reservation(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: NodeId,
        group: IpPrefix,
    ) -> Result<(), Refusal> {
        let config = self.config;
        let expires = now + config.reservation_ttl;
        if !self.serving() {
            return Err(Refusal::Status(RelayStatus::RelayDisabled));
        }
        if let Some(held) = self.reservations.get_mut(&peer).filter(|r| r.conn == conn) {
            held.expires = expires;
            return Ok(());
        }
        let others = self.reservations.iter().filter(|(id, _)| **id != peer);
        if !self.reservations.contains_key(&peer)
            && self.reservations.len() >= config.max_reservations
        {
            return Err(Refusal::Status(RelayStatus::LimitReached));
        }
        if others.filter(|(_, r)| r.group == group).count() >= config.max_reservations_per_ip {
            return Err(Refusal::IpLimit);
        }
        let reserved = Reserved {
            conn,
            group,
            expires,
            lease: None,
        };
        let replaced = self.reservations.insert(peer, reserved);
        let pin = ServerPin::Reservation(peer);
        self.out.push(RelayServerOutput::Pin { conn, pin });
        self.release(replaced.and_then(|r| r.lease));
        Ok(())
    }

    /// RELAY_RELEASE on `stream` of `conn`: the peer gives its reservation
    /// up.
    pub fn handle_release(&mut self, now: Instant, conn: ConnId, peer: NodeId, stream: StreamId) {
        self.out.mark(now);
        self.out.push(RelayServerOutput::Finish { conn, stream });
        let held_here = self.reservations.get(&peer).is_some_and(|r| r.conn == conn);
        if held_here {
            self.end_reservations(|id, _| *id == peer);
        }
    }

    /// CIRCUIT_OPEN from `source`, whose packets come from `ip`, on
    /// `stream` of `conn`: check the limits and announce the circuit to the
    /// target; the splice follows in [`RelayServer::handle_target_stream`].
    pub fn handle_circuit_open(
        &mut self,
        now: Instant,
        conn: ConnId,
        (source, ip): (NodeId, IpAddr),
        stream: StreamId,
        request: wire::CircuitOpen,
    ) {
        self.out.mark(now);
        let source_group = group(ip);
        match self.admit_circuit(now, (source, source_group), request.target) {
            Ok((target_conn, target_group)) => {
                self.next_circuit += 1;
                let circuit = self.next_circuit;
                let admitted = Admitted {
                    source,
                    source_group,
                    conn,
                    stream,
                    request_id: request.request_id,
                    target: request.target,
                    target_group,
                    target_conn,
                };
                self.admitted.insert(circuit, admitted);
                let frame = Message::from(wire::CircuitIncoming { circuit, source });
                self.out.push(RelayServerOutput::Announce {
                    conn: target_conn,
                    circuit,
                    frame,
                });
            }
            Err(refusal) => self.refuse_circuit(conn, stream, request.request_id, refusal),
        }
    }

    /// The stream the node opened to announce `circuit` to its target
    /// (`None`: the target's connection is not ready or allows no stream):
    /// splice it to the dialer's, or refuse the circuit.
    pub fn handle_target_stream(&mut self, now: Instant, circuit: u64, stream: Option<StreamId>) {
        self.out.mark(now);
        let Some(admitted) = self.admitted.remove(&circuit) else {
            return;
        };
        let Some(target_stream) = stream else {
            let refusal = Refusal::Status(RelayStatus::TargetUnreachable);
            self.refuse_circuit(admitted.conn, admitted.stream, admitted.request_id, refusal);
            return;
        };
        let sides = [
            (
                admitted.source,
                admitted.source_group,
                admitted.conn,
                admitted.stream,
            ),
            (
                admitted.target,
                admitted.target_group,
                admitted.target_conn,
                target_stream,
            ),
        ];
        let ends = sides.map(|(peer, group, conn, stream)| SpliceEnd {
            peer,
            group,
            conn,
            stream,
            splitter: FrameSplitter::new(),
            lease: None,
        });
        for (side, (_, _, conn, stream)) in sides.into_iter().enumerate() {
            let pin = ServerPin::Splice { circuit, side };
            self.out.push(RelayServerOutput::Pin { conn, pin });
            self.streams.insert((conn, stream), (circuit, side));
        }
        let splice = Splice {
            ends,
            opened: now,
            bytes: 0,
        };
        self.splices.insert(circuit, splice);
        self.counters.circuits_opened += 1;
        let (dialer, target) = (admitted.conn, admitted.target_conn);
        for (conn, other) in [(dialer, target), (target, dialer)] {
            (self.out).push(RelayServerOutput::Vouch {
                conn,
                circuit,
                other,
            });
        }
        let frame = Message::from(wire::CircuitStatus {
            request_id: admitted.request_id,
            status: RelayStatus::Ok,
            circuit,
        });
        self.out.push(RelayServerOutput::Splice {
            conn: admitted.conn,
            stream: admitted.stream,
            frame,
        });
    }

    /// The lease the node took for `pin` (`None`: the pool does not hold
    /// the connection as ready).
    pub fn handle_pinned(&mut self, pin: ServerPin, lease: Option<Lease>) {
        let slot = match pin {
            ServerPin::Reservation(peer) => self.reservations.get_mut(&peer).map(|r| &mut r.lease),
            ServerPin::Splice { circuit, side } => self
                .splices
                .get_mut(&circuit)
                .map(|s| &mut s.ends[side].lease),
        };
        match slot {
            Some(slot) => *slot = lease,
            None => self.release(lease),
        }
    }

    fn refuse_circuit(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        request_id: u64,
        refusal: Refusal,
    ) {
        self.count_refusal(refusal);
        let frame = Message::from(wire::CircuitStatus {
            request_id,
            status: refusal.status(),
            circuit: 0,
        });
        self.out.push(RelayServerOutput::Answer {
            conn,
            stream,
            frame,
        });
    }

    /// Checks a circuit request from `source` (and its IP group) against
    /// the relay's state and limits; on success the target's reserved
    /// connection and its IP group.
    fn admit_circuit(
        &self,
        now: Instant,
        (source, source_group): (NodeId, IpPrefix),
        target: NodeId,
    ) -> Result<(ConnId, IpPrefix), Refusal> {
        let config = &self.config;
        if !self.serving() {
            return Err(Refusal::Status(RelayStatus::RelayDisabled));
        }
        if source == target {
            return Err(Refusal::Status(RelayStatus::BadRequest));
        }
        let reserved = self
            .reservations
            .get(&target)
            .filter(|r| r.expires > now)
            .ok_or(Refusal::Status(RelayStatus::NoReservation))?;
        if self.splices.len() + self.admitted.len() >= config.max_circuits
            || self.circuits_of(&source) >= config.max_circuits_per_peer
            || self.circuits_of(&target) >= config.max_circuits_per_peer
        {
            return Err(Refusal::Status(RelayStatus::LimitReached));
        }
        let groups = [source_group, reserved.group];
        if groups
            .iter()
            .any(|g| self.circuits_of_group(g) >= config.max_circuits_per_ip)
        {
            return Err(Refusal::IpLimit);
        }
        Ok((reserved.conn, reserved.group))
    }

    /// Bytes read from a circuit stream: forward each whole frame to the
    /// other side within the limits.
    pub fn handle_circuit_bytes(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        data: &[u8],
    ) {
        self.out.mark(now);
        let Some(&(circuit, side)) = self.streams.get(&(conn, stream)) else {
            return;
        };
        match self.splices.get_mut(&circuit) {
            Some(splice) => splice.ends[side].splitter.push(data),
            None => return,
        }
        while let Some(splice) = self.splices.get_mut(&circuit) {
            match splice.ends[side].splitter.next_packet() {
                Ok(Some(packet)) => self.forward(now, circuit, side, &packet),
                Ok(None) => return,
                Err(_) => {
                    self.counters.frame_errors += 1;
                    self.close_splice(circuit, CIRCUIT_BROKEN);
                    return;
                }
            }
        }
    }

    /// Forwards one inner packet from `side` to the other side, or drops it
    /// at a rate limit, or closes the circuit at its byte limit.
    fn forward(&mut self, now: Instant, circuit: u64, side: usize, packet: &[u8]) {
        let config = self.config;
        let Some(splice) = self.splices.get_mut(&circuit) else {
            return;
        };
        let Some(frame) = encode_frame(packet) else {
            return;
        };
        #[cfg(feature = "sim")]
        if self.tap.blackhole {
            return;
        }
        let size = frame.len() as u64;
        splice.bytes = splice.bytes.saturating_add(size);
        if splice.bytes > config.max_circuit_bytes {
            self.counters.circuits_over_limit += 1;
            self.close_splice(circuit, CIRCUIT_LIMIT);
            return;
        }
        let from = splice.ends[side].peer;
        let (conn, stream) = (splice.ends[1 - side].conn, splice.ends[1 - side].stream);
        let peer_bucket = self
            .peer_buckets
            .entry(from)
            .or_insert_with(|| TokenBucket::new(config.peer_rate, now));
        let total_bucket = self
            .total_bucket
            .get_or_insert_with(|| TokenBucket::new(config.total_rate, now));
        // The sender's own bucket first: a packet over its rate spends no
        // shared tokens. Tokens are taken only when both buckets hold them.
        if !peer_bucket.holds(now, size) {
            self.counters.dropped_rate += 1;
            return;
        }
        if !total_bucket.take(now, size) {
            self.counters.dropped_total_rate += 1;
            return;
        }
        peer_bucket.take(now, size);
        self.out.push(RelayServerOutput::Forward {
            conn,
            stream,
            frame,
        });
    }

    /// What became of a frame of [`RelayServerOutput::Forward`].
    pub fn handle_forwarded(&mut self, frame: &[u8], written: Written) {
        match written {
            Written::Written => {
                self.counters.bytes_forwarded += frame.len() as u64;
                self.counters.packets_forwarded += 1;
                #[cfg(feature = "sim")]
                self.tap(&frame[FRAME_PREFIX..]);
            }
            Written::QueueFull => self.counters.dropped_queue_full += 1,
            Written::Gone => {}
        }
    }

    #[cfg(feature = "sim")]
    fn tap(&mut self, packet: &[u8]) {
        if let Some(room) = self.tap.room.checked_sub(packet.len()) {
            self.tap.room = room;
            self.tap.packets.push(Bytes::copy_from_slice(packet));
        }
    }

    /// Simulator only: keeps a copy of the inner packets forwarded from now
    /// on, up to `bytes` in all.
    #[cfg(feature = "sim")]
    pub fn tap_relayed(&mut self, bytes: usize) {
        self.tap.room = bytes;
    }

    /// Simulator only: from now on (`on`) every circuit packet is dropped
    /// unseen and uncounted, as a relay that accepts circuits and
    /// blackholes their traffic would.
    #[cfg(feature = "sim")]
    pub fn blackhole_circuits(&mut self, on: bool) {
        self.tap.blackhole = on;
    }

    /// Simulator only: the inner packets forwarded since
    /// [`RelayServer::tap_relayed`], exactly as they were forwarded.
    #[cfg(feature = "sim")]
    pub fn relayed_packets(&self) -> &[Bytes] {
        &self.tap.packets
    }

    /// Closes a circuit: both streams reset with `code`.
    fn close_splice(&mut self, circuit: u64, code: VarInt) {
        let Some(splice) = self.splices.remove(&circuit) else {
            return;
        };
        let [first, second] = splice.ends;
        let peers = [first.peer, second.peer];
        for end in [first, second] {
            self.streams.remove(&(end.conn, end.stream));
            self.out.push(RelayServerOutput::Reset {
                conn: end.conn,
                stream: end.stream,
                code,
            });
            self.release(end.lease);
        }
        for peer in peers {
            if self.circuits_of(&peer) == 0 {
                self.peer_buckets.remove(&peer);
            }
        }
        self.counters.circuits_closed += 1;
    }

    /// A circuit stream finished or was reset by its end: the circuit goes.
    pub fn handle_stream_gone(&mut self, now: Instant, conn: ConnId, stream: StreamId) {
        self.out.mark(now);
        if let Some(&(circuit, _)) = self.streams.get(&(conn, stream)) {
            self.close_splice(circuit, CIRCUIT_PEER_GONE);
        }
    }

    /// Expired reservations end; circuits past their lifetime close.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.out.mark(now);
        self.end_reservations(|_, r| r.expires <= now);
        let lifetime = self.config.max_circuit_lifetime;
        let old: Vec<u64> = self
            .splices
            .iter()
            .filter(|(_, s)| s.opened + lifetime <= now)
            .map(|(id, _)| *id)
            .collect();
        for circuit in old {
            self.counters.circuits_over_limit += 1;
            self.close_splice(circuit, CIRCUIT_LIMIT);
        }
    }

    /// A connection is gone: its reservation ends and its circuits close.
    pub fn handle_connection_gone(&mut self, now: Instant, conn: ConnId) {
        self.out.mark(now);
        self.end_reservations(|_, r| r.conn == conn);
        let circuits: Vec<u64> = self
            .splices
            .iter()
            .filter(|(_, s)| s.ends.iter().any(|e| e.conn == conn))
            .map(|(id, _)| *id)
            .collect();
        for circuit in circuits {
            self.close_splice(circuit, CIRCUIT_PEER_GONE);
        }
    }

    /// `conn`, carrying circuits relayed here, left data unacknowledged for
    /// the silence limit (the node closes it): its reservation and circuits
    /// end now, as [`RelayServer::handle_connection_gone`], and it is
    /// counted.
    pub fn handle_end_silent(&mut self, now: Instant, conn: ConnId) {
        self.counters.silent_circuit_ends += 1;
        self.handle_connection_gone(now, conn);
    }

    /// Ends the reservations `which` picks, letting their connections go
    /// idle.
    fn end_reservations(&mut self, which: impl Fn(&NodeId, &Reserved) -> bool) {
        let ended: Vec<NodeId> = self
            .reservations
            .iter()
            .filter(|(id, r)| which(id, r))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            let reserved = self.reservations.remove(&id);
            self.release(reserved.and_then(|r| r.lease));
            self.counters.reservations_ended += 1;
        }
    }

    fn release(&mut self, lease: Option<Lease>) {
        if let Some(lease) = lease {
            self.out.push(RelayServerOutput::Release(lease));
        }
    }

    fn count_refusal(&mut self, refusal: Refusal) {
        let counters = &mut self.counters;
        match refusal {
            Refusal::IpLimit => counters.refused_ip_limit += 1,
            Refusal::Status(RelayStatus::RelayDisabled) => counters.refused_disabled += 1,
            Refusal::Status(RelayStatus::NoReservation) => counters.refused_no_reservation += 1,
            Refusal::Status(RelayStatus::LimitReached) => counters.refused_limit += 1,
            Refusal::Status(RelayStatus::TargetUnreachable) => counters.refused_unreachable += 1,
            Refusal::Status(_) => counters.refused_bad_request += 1,
        }
    }
}

impl Child for RelayServer {
    type Output = RelayServerOutput;

    fn poll_output(&mut self) -> Option<RelayServerOutput> {
        self.out.pop()
    }

    /// The latest input's time while output waits, else a reservation
    /// expiring or a circuit's lifetime.
    fn poll_timeout(&self) -> Option<Instant> {
        let reservations = self.reservations.values().map(|r| Some(r.expires));
        let lifetime = self.config.max_circuit_lifetime;
        let circuits = self.splices.values().map(|s| Some(s.opened + lifetime));
        self.out.deadline(reservations.chain(circuits))
    }
}

#[cfg(test)]
mod tests;
