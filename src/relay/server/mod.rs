//! The relay server: reservations of private nodes and the circuits spliced
//! between a dialer's stream and the reserved node's stream
//! (docs/PROTOCOL.md §11).
//!
//! The relay splits each circuit stream into frames only to forward or drop
//! whole inner packets; it never decodes them (they are end-to-end QUIC,
//! which it could not read anyway). Every limit of [`RelayConfig`] is
//! enforced here: reservations, circuits in total and per node, bytes per
//! second per node and in total (a token bucket: excess packets are dropped
//! and QUIC recovers them), bytes per circuit and circuit lifetime (the
//! circuit is closed), and the bytes waiting for one end's flow control
//! (excess packets are dropped: the node reports it through
//! [`RelayServer::handle_forwarded`]).

use std::time::Instant;

#[cfg(feature = "sim")]
use bytes::Bytes;
use quinn_proto::{StreamId, VarInt};

#[cfg(feature = "sim")]
use super::frames::FRAME_PREFIX;
use super::{
    CIRCUIT_BROKEN, CIRCUIT_LIMIT, CIRCUIT_PEER_GONE, FrameSplitter, RelayConfig, RelayCounters,
    TokenBucket, Written, encode_frame,
};
use crate::collections::HashMap;
use crate::contract::{Child, OutputQueue};
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::wire::{self, Message, RelayStatus};

mod output;

pub use output::{RelayServerOutput, ServerPin};

/// A node's reservation on this relay.
#[derive(Debug)]
struct Reserved {
    conn: ConnId,
    expires: Instant,
    /// Keeps the reserved connection pooled (never evicted as idle).
    lease: Option<Lease>,
}

/// One end of a spliced circuit.
#[derive(Debug)]
struct SpliceEnd {
    peer: NodeId,
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
    conn: ConnId,
    stream: StreamId,
    request_id: u64,
    target: NodeId,
    target_conn: ConnId,
}

/// The relay's state: reservations, circuits, rate limits and counters.
#[derive(Debug)]
pub struct RelayServer {
    config: RelayConfig,
    reservations: HashMap<NodeId, Reserved>,
    splices: HashMap<u64, Splice>,
    /// Which circuit side each circuit stream is.
    streams: HashMap<(ConnId, StreamId), (u64, usize)>,
    admitted: Option<(u64, Admitted)>,
    next_circuit: u64,
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
}

impl RelayServer {
    /// A relay with no reservations or circuits, enforcing `config`.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            reservations: HashMap::default(),
            splices: HashMap::default(),
            streams: HashMap::default(),
            admitted: None,
            next_circuit: 0,
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

    fn circuits_of(&self, peer: &NodeId) -> usize {
        self.splices
            .values()
            .filter(|s| s.ends.iter().any(|e| e.peer == *peer))
            .count()
    }

    /// RELAY_RESERVE on `stream` of `conn`, whose node is `peer`: grant,
    /// renew or refuse a reservation.
    pub fn handle_reserve(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: NodeId,
        stream: StreamId,
        request: wire::RelayReserve,
    ) {
        self.out.mark(now);
        let config = self.config;
        let held = self.reservations.get_mut(&peer);
        let status = if !config.enabled {
            RelayStatus::RelayDisabled
        } else if let Some(held) = held.filter(|r| r.conn == conn) {
            held.expires = now + config.reservation_ttl;
            RelayStatus::Ok
        } else if !self.reservations.contains_key(&peer)
            && self.reservations.len() >= config.max_reservations
        {
            RelayStatus::LimitReached
        } else {
            let reserved = Reserved {
                conn,
                expires: now + config.reservation_ttl,
                lease: None,
            };
            let replaced = self.reservations.insert(peer, reserved);
            let pin = ServerPin::Reservation(peer);
            self.out.push(RelayServerOutput::Pin { conn, pin });
            self.release(replaced.and_then(|r| r.lease));
            RelayStatus::Ok
        };
        let ttl_secs = match status {
            RelayStatus::Ok => {
                self.counters.reservations_granted += 1;
                u32::try_from(config.reservation_ttl.as_secs()).unwrap_or(u32::MAX)
            }
            refused => {
                self.count_refusal(refused);
                0
            }
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

    /// CIRCUIT_OPEN from `source` on `stream` of `conn`: check the limits
    /// and announce the circuit to the target; the splice follows in
    /// [`RelayServer::handle_target_stream`].
    pub fn handle_circuit_open(
        &mut self,
        now: Instant,
        conn: ConnId,
        source: NodeId,
        stream: StreamId,
        request: wire::CircuitOpen,
    ) {
        self.out.mark(now);
        match self.admit_circuit(now, source, request.target) {
            Ok(target_conn) => {
                // The id is taken once the target's stream is open.
                let circuit = self.next_circuit + 1;
                let admitted = Admitted {
                    source,
                    conn,
                    stream,
                    request_id: request.request_id,
                    target: request.target,
                    target_conn,
                };
                self.admitted = Some((circuit, admitted));
                let frame = Message::from(wire::CircuitIncoming { circuit, source });
                self.out.push(RelayServerOutput::Announce {
                    conn: target_conn,
                    circuit,
                    frame,
                });
            }
            Err(status) => self.refuse_circuit(conn, stream, request.request_id, status),
        }
    }

    /// The stream the node opened to announce `circuit` to its target
    /// (`None`: the target's connection is not ready or allows no stream):
    /// splice it to the dialer's, or refuse the circuit.
    pub fn handle_target_stream(&mut self, now: Instant, circuit: u64, stream: Option<StreamId>) {
        self.out.mark(now);
        let Some((id, admitted)) = self.admitted.take() else {
            return;
        };
        if id != circuit {
            self.admitted = Some((id, admitted));
            return;
        }
        let Some(target_stream) = stream else {
            let status = RelayStatus::TargetUnreachable;
            self.refuse_circuit(admitted.conn, admitted.stream, admitted.request_id, status);
            return;
        };
        self.next_circuit = circuit;
        let sides = [
            (admitted.source, admitted.conn, admitted.stream),
            (admitted.target, admitted.target_conn, target_stream),
        ];
        let ends = sides.map(|(peer, conn, stream)| SpliceEnd {
            peer,
            conn,
            stream,
            splitter: FrameSplitter::new(),
            lease: None,
        });
        for (side, (_, conn, stream)) in sides.into_iter().enumerate() {
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
        status: RelayStatus,
    ) {
        self.count_refusal(status);
        let frame = Message::from(wire::CircuitStatus {
            request_id,
            status,
            circuit: 0,
        });
        self.out.push(RelayServerOutput::Answer {
            conn,
            stream,
            frame,
        });
    }

    /// Checks a circuit request against the relay's state and limits; on
    /// success the target's reserved connection.
    fn admit_circuit(
        &self,
        now: Instant,
        source: NodeId,
        target: NodeId,
    ) -> Result<ConnId, RelayStatus> {
        let config = &self.config;
        if !config.enabled {
            return Err(RelayStatus::RelayDisabled);
        }
        if source == target {
            return Err(RelayStatus::BadRequest);
        }
        let reserved = self
            .reservations
            .get(&target)
            .filter(|r| r.expires > now)
            .ok_or(RelayStatus::NoReservation)?;
        if self.splices.len() >= config.max_circuits
            || self.circuits_of(&source) >= config.max_circuits_per_peer
            || self.circuits_of(&target) >= config.max_circuits_per_peer
        {
            return Err(RelayStatus::LimitReached);
        }
        Ok(reserved.conn)
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
        if !(total_bucket.take(now, size) && peer_bucket.take(now, size)) {
            self.counters.dropped_rate += 1;
            return;
        }
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

    fn count_refusal(&mut self, status: RelayStatus) {
        let counters = &mut self.counters;
        match status {
            RelayStatus::RelayDisabled => counters.refused_disabled += 1,
            RelayStatus::NoReservation => counters.refused_no_reservation += 1,
            RelayStatus::LimitReached => counters.refused_limit += 1,
            RelayStatus::TargetUnreachable => counters.refused_unreachable += 1,
            _ => counters.refused_bad_request += 1,
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
