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
//! (excess packets are dropped).

use super::relay_client::CircuitRole;
use super::*;
use crate::relay::{FrameSplitter, RelayConfig, TokenBucket, encode_frame};
use crate::wire::RelayStatus;

/// Stream error code: the relay closed the circuit at a limit (bytes or
/// lifetime).
pub(super) const CIRCUIT_LIMIT: VarInt = VarInt::from_u32(0x110);
/// Stream error code: the circuit's other end is gone.
pub(super) const CIRCUIT_PEER_GONE: VarInt = VarInt::from_u32(0x111);
/// Stream error code: the circuit's bytes are not frames.
pub(super) const CIRCUIT_BROKEN: VarInt = VarInt::from_u32(0x112);

/// A node's reservation on this relay.
struct Reserved {
    conn: ConnectionHandle,
    expires: Instant,
    /// Keeps the reserved connection pooled (never evicted as idle).
    lease: Option<Lease>,
}

/// One end of a spliced circuit.
struct SpliceEnd {
    peer: NodeId,
    conn: ConnectionHandle,
    stream: StreamId,
    splitter: FrameSplitter,
    /// Keeps the end's connection pooled while the circuit lasts.
    lease: Option<Lease>,
}

/// A circuit: the dialer's end (0) and the target's end (1).
struct Splice {
    ends: [SpliceEnd; 2],
    opened: Instant,
    bytes: u64,
}

/// The relay's state.
#[derive(Default)]
pub(super) struct RelayServer {
    reservations: HashMap<NodeId, Reserved>,
    splices: HashMap<u64, Splice>,
    next_circuit: u64,
    peer_buckets: HashMap<NodeId, TokenBucket>,
    total_bucket: Option<TokenBucket>,
    #[cfg(feature = "sim")]
    tap: Tap,
}

/// Simulator only: copies of the inner packets the relay forwarded, to
/// check what a relay gets to see.
#[cfg(feature = "sim")]
#[derive(Default)]
struct Tap {
    room: usize,
    packets: Vec<Bytes>,
}

impl RelayServer {
    /// Reservations held here now.
    pub(super) fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits relayed here now.
    pub(super) fn circuit_count(&self) -> usize {
        self.splices.len()
    }

    fn circuits_of(&self, peer: &NodeId) -> usize {
        self.splices
            .values()
            .filter(|s| s.ends.iter().any(|e| e.peer == *peer))
            .count()
    }

    /// The next deadline: a reservation expiring or a circuit's lifetime.
    pub(super) fn next_deadline(&self, config: &RelayConfig) -> Option<Instant> {
        let reservations = self.reservations.values().map(|r| r.expires);
        let circuits = self
            .splices
            .values()
            .map(|s| s.opened + config.max_circuit_lifetime);
        reservations.chain(circuits).min()
    }
}

impl Node {
    /// Handles a relay frame on a request stream (either role); any other
    /// message is handed back.
    pub(super) fn relay_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        message: Message,
    ) -> Option<Message> {
        match message {
            Message::RelayReserve(m) => self.serve_reserve(now, handle, stream, m),
            Message::RelayRelease(_) => self.serve_release(now, handle, stream),
            Message::CircuitOpen(m) => self.serve_circuit_open(now, handle, stream, m),
            Message::RelayReserveStatus(m) => self.on_reserve_status(now, handle, stream, m),
            Message::CircuitStatus(m) => self.on_circuit_status(now, handle, stream, m),
            Message::CircuitIncoming(m) => self.on_circuit_incoming(now, handle, stream, m),
            other => return Some(other),
        }
        None
    }

    /// RELAY_RESERVE: grant, renew or refuse a reservation for the peer on
    /// this connection.
    pub(super) fn serve_reserve(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        request: wire::RelayReserve,
    ) {
        let Some(peer) = self.conns.get(&handle).and_then(|c| c.peer) else {
            return;
        };
        let config = self.config.relay;
        let held = self.relay_server.reservations.get_mut(&peer);
        let status = if !config.enabled {
            RelayStatus::RelayDisabled
        } else if let Some(held) = held.filter(|r| r.conn == handle) {
            held.expires = now + config.reservation_ttl;
            RelayStatus::Ok
        } else if !self.relay_server.reservations.contains_key(&peer)
            && self.relay_server.reservations.len() >= config.max_reservations
        {
            RelayStatus::LimitReached
        } else {
            let reserved = Reserved {
                conn: handle,
                expires: now + config.reservation_ttl,
                lease: self.pin_connection(now, handle),
            };
            let replaced = self.relay_server.reservations.insert(peer, reserved);
            if let Some(lease) = replaced.and_then(|r| r.lease) {
                self.pool.release(now, lease);
            }
            RelayStatus::Ok
        };
        let ttl_secs = match status {
            RelayStatus::Ok => {
                self.relay_counters.reservations_granted += 1;
                u32::try_from(config.reservation_ttl.as_secs()).unwrap_or(u32::MAX)
            }
            refused => {
                self.count_refusal(refused);
                0
            }
        };
        let answer = Message::from(wire::RelayReserveStatus {
            request_id: request.request_id,
            status,
            ttl_secs,
        });
        self.answer_on(handle, stream, &answer);
    }

    /// RELAY_RELEASE: the peer gives its reservation up.
    pub(super) fn serve_release(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        conn.finish(stream);
        let Some(peer) = conn.peer else {
            return;
        };
        let held_here = self
            .relay_server
            .reservations
            .get(&peer)
            .is_some_and(|r| r.conn == handle);
        if held_here {
            self.end_reservations(now, |id, _| *id == peer);
        }
    }

    /// CIRCUIT_OPEN: check the limits, announce the circuit to the target
    /// on a stream of its reserved connection and splice the two streams.
    pub(super) fn serve_circuit_open(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        request: wire::CircuitOpen,
    ) {
        let Some(source) = self.conns.get(&handle).and_then(|c| c.peer) else {
            return;
        };
        let opened = self.admit_circuit(now, source, request.target);
        let (circuit, status) = match opened {
            Ok((target_conn, target_stream)) => {
                self.relay_server.next_circuit += 1;
                let circuit = self.relay_server.next_circuit;
                let incoming = Message::from(wire::CircuitIncoming { circuit, source });
                let target = self.conns.get_mut(&target_conn).expect("admitted above");
                let _ = target.send(target_stream, &incoming, false);
                let ends = [
                    self.splice_end(now, source, handle, stream),
                    self.splice_end(now, request.target, target_conn, target_stream),
                ];
                let splice = Splice {
                    ends,
                    opened: now,
                    bytes: 0,
                };
                self.relay_server.splices.insert(circuit, splice);
                for (side, (conn, stream)) in [(handle, stream), (target_conn, target_stream)]
                    .into_iter()
                    .enumerate()
                {
                    let role = CircuitRole::Splice { circuit, side };
                    self.circuit_streams.insert((conn, stream), role);
                }
                self.relay_counters.circuits_opened += 1;
                (circuit, RelayStatus::Ok)
            }
            Err(status) => {
                self.count_refusal(status);
                (0, status)
            }
        };
        let answer = Message::from(wire::CircuitStatus {
            request_id: request.request_id,
            status,
            circuit,
        });
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        if status == RelayStatus::Ok {
            let _ = conn.send(stream, &answer, false);
            let early = conn.take_unread(stream);
            self.splice_bytes(now, circuit, 0, &early);
        } else {
            self.answer_on(handle, stream, &answer);
        }
    }

    fn splice_end(
        &mut self,
        now: Instant,
        peer: NodeId,
        conn: ConnectionHandle,
        stream: StreamId,
    ) -> SpliceEnd {
        SpliceEnd {
            peer,
            conn,
            stream,
            splitter: FrameSplitter::new(),
            lease: self.pin_connection(now, conn),
        }
    }

    /// Checks a circuit request against the relay's state and limits; on
    /// success the target's connection and a new stream on it.
    fn admit_circuit(
        &mut self,
        now: Instant,
        source: NodeId,
        target: NodeId,
    ) -> Result<(ConnectionHandle, StreamId), RelayStatus> {
        let config = self.config.relay;
        let server = &self.relay_server;
        if !config.enabled {
            return Err(RelayStatus::RelayDisabled);
        }
        if source == target {
            return Err(RelayStatus::BadRequest);
        }
        let reserved = server
            .reservations
            .get(&target)
            .filter(|r| r.expires > now)
            .ok_or(RelayStatus::NoReservation)?;
        if server.splices.len() >= config.max_circuits
            || server.circuits_of(&source) >= config.max_circuits_per_peer
            || server.circuits_of(&target) >= config.max_circuits_per_peer
        {
            return Err(RelayStatus::LimitReached);
        }
        let target_conn = reserved.conn;
        let conn = self
            .conns
            .get_mut(&target_conn)
            .filter(|c| c.phase == Phase::Ready)
            .ok_or(RelayStatus::TargetUnreachable)?;
        let stream = conn.open().ok_or(RelayStatus::TargetUnreachable)?;
        Ok((target_conn, stream))
    }

    /// Bytes read from `side` of a circuit: forward each whole frame to
    /// the other side within the limits.
    pub(super) fn splice_bytes(&mut self, now: Instant, circuit: u64, side: usize, data: &[u8]) {
        match self.relay_server.splices.get_mut(&circuit) {
            Some(splice) => splice.ends[side].splitter.push(data),
            None => return,
        }
        while let Some(splice) = self.relay_server.splices.get_mut(&circuit) {
            match splice.ends[side].splitter.next_packet() {
                Ok(Some(packet)) => self.forward(now, circuit, side, &packet),
                Ok(None) => return,
                Err(_) => {
                    self.relay_counters.frame_errors += 1;
                    self.close_splice(now, circuit, CIRCUIT_BROKEN);
                    return;
                }
            }
        }
    }

    /// Forwards one inner packet from `side` to the other side, or drops it
    /// at a rate or queue limit, or closes the circuit at its byte limit.
    fn forward(&mut self, now: Instant, circuit: u64, side: usize, packet: &[u8]) {
        let config = self.config.relay;
        let server = &mut self.relay_server;
        let Some(splice) = server.splices.get_mut(&circuit) else {
            return;
        };
        let Some(frame) = encode_frame(packet) else {
            return;
        };
        let size = frame.len() as u64;
        splice.bytes = splice.bytes.saturating_add(size);
        if splice.bytes > config.max_circuit_bytes {
            self.relay_counters.circuits_over_limit += 1;
            self.close_splice(now, circuit, CIRCUIT_LIMIT);
            return;
        }
        let from = splice.ends[side].peer;
        let (to_conn, to_stream) = (splice.ends[1 - side].conn, splice.ends[1 - side].stream);
        let peer_bucket = server
            .peer_buckets
            .entry(from)
            .or_insert_with(|| TokenBucket::new(config.peer_rate, now));
        let total_bucket = server
            .total_bucket
            .get_or_insert_with(|| TokenBucket::new(config.total_rate, now));
        if !(total_bucket.take(now, size) && peer_bucket.take(now, size)) {
            self.relay_counters.dropped_rate += 1;
            return;
        }
        let Some(conn) = self.conns.get_mut(&to_conn) else {
            return;
        };
        if conn.queued(to_stream) + frame.len() > config.max_queued_per_circuit {
            self.relay_counters.dropped_queue_full += 1;
            return;
        }
        conn.send_raw(to_stream, frame);
        self.relay_counters.bytes_forwarded += size;
        #[cfg(feature = "sim")]
        if let Some(room) = self.relay_server.tap.room.checked_sub(packet.len()) {
            self.relay_server.tap.room = room;
            self.relay_server
                .tap
                .packets
                .push(Bytes::copy_from_slice(packet));
        }
    }

    /// Simulator only: keeps a copy of the inner packets this relay
    /// forwards from now on, up to `bytes` in all, for
    /// [`Node::relayed_packets`].
    #[cfg(feature = "sim")]
    pub fn tap_relayed(&mut self, bytes: usize) {
        self.relay_server.tap.room = bytes;
    }

    /// Simulator only: the inner packets this relay forwarded since
    /// [`Node::tap_relayed`], exactly as it forwarded them.
    #[cfg(feature = "sim")]
    pub fn relayed_packets(&self) -> &[Bytes] {
        &self.relay_server.tap.packets
    }

    /// Closes a circuit: both streams reset with `code`.
    pub(super) fn close_splice(&mut self, now: Instant, circuit: u64, code: VarInt) {
        let Some(splice) = self.relay_server.splices.remove(&circuit) else {
            return;
        };
        let [first, second] = splice.ends;
        let peers = [first.peer, second.peer];
        for end in [first, second] {
            self.circuit_streams.remove(&(end.conn, end.stream));
            if let Some(conn) = self.conns.get_mut(&end.conn) {
                conn.abandon(end.stream, code);
            }
            if let Some(lease) = end.lease {
                self.pool.release(now, lease);
            }
        }
        let server = &mut self.relay_server;
        for peer in peers {
            if server.circuits_of(&peer) == 0 {
                server.peer_buckets.remove(&peer);
            }
        }
        self.relay_counters.circuits_closed += 1;
    }

    /// One end of a circuit finished or reset its stream: the circuit goes.
    pub(super) fn splice_end_gone(&mut self, now: Instant, circuit: u64) {
        self.close_splice(now, circuit, CIRCUIT_PEER_GONE);
    }

    /// Expired reservations end; circuits past their lifetime close.
    pub(super) fn relay_server_timeout(&mut self, now: Instant) {
        self.end_reservations(now, |_, r| r.expires <= now);
        let lifetime = self.config.relay.max_circuit_lifetime;
        let old: Vec<u64> = self
            .relay_server
            .splices
            .iter()
            .filter(|(_, s)| s.opened + lifetime <= now)
            .map(|(id, _)| *id)
            .collect();
        for circuit in old {
            self.relay_counters.circuits_over_limit += 1;
            self.close_splice(now, circuit, CIRCUIT_LIMIT);
        }
    }

    /// A connection is gone: its reservation ends and its circuits close.
    pub(super) fn relay_server_connection_gone(&mut self, now: Instant, handle: ConnectionHandle) {
        self.end_reservations(now, |_, r| r.conn == handle);
        let circuits: Vec<u64> = self
            .relay_server
            .splices
            .iter()
            .filter(|(_, s)| s.ends.iter().any(|e| e.conn == handle))
            .map(|(id, _)| *id)
            .collect();
        for circuit in circuits {
            self.close_splice(now, circuit, CIRCUIT_PEER_GONE);
        }
    }

    /// Ends the reservations `which` picks, letting their connections go
    /// idle.
    fn end_reservations(&mut self, now: Instant, which: impl Fn(&NodeId, &Reserved) -> bool) {
        let ended: Vec<NodeId> = self
            .relay_server
            .reservations
            .iter()
            .filter(|(id, r)| which(id, r))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            let reserved = self.relay_server.reservations.remove(&id);
            if let Some(lease) = reserved.and_then(|r| r.lease) {
                self.pool.release(now, lease);
            }
            self.relay_counters.reservations_ended += 1;
        }
    }

    fn count_refusal(&mut self, status: RelayStatus) {
        let counters = &mut self.relay_counters;
        match status {
            RelayStatus::RelayDisabled => counters.refused_disabled += 1,
            RelayStatus::NoReservation => counters.refused_no_reservation += 1,
            RelayStatus::LimitReached => counters.refused_limit += 1,
            RelayStatus::TargetUnreachable => counters.refused_unreachable += 1,
            _ => counters.refused_bad_request += 1,
        }
    }

    /// A lease on the pooled connection `handle`, so the pool never evicts
    /// it as idle while the relay (or a circuit end) needs it; `None` when
    /// the pool does not hold that connection as ready.
    pub(super) fn pin_connection(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
    ) -> Option<Lease> {
        let conn = self.conns.get(&handle)?;
        let (peer, pool_id, remote) = (conn.peer?, conn.pool_id?, conn.remote);
        match self.pool.peer_state(&peer) {
            Some(crate::pool::PeerState::Ready { conn, .. }) if conn == pool_id => {}
            _ => return None,
        }
        match self.pool.acquire(now, peer, remote) {
            Ok(Acquired::Ready(lease)) => Some(lease),
            _ => None,
        }
    }

    /// Writes the one answer of a request stream and finishes it.
    fn answer_on(&mut self, handle: ConnectionHandle, stream: StreamId, answer: &Message) {
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.forget(stream);
            if conn.send(stream, answer, true).is_err() {
                conn.abandon(stream, STREAM_REFUSED);
            }
        }
    }
}
