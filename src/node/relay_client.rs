//! The relay's client side: reservations on relays (granted, renewed at
//! half their lifetime, lost with their connection), circuits opened to a
//! reserved node, and the end-to-end QUIC packets carried over a circuit as
//! length-prefixed frames (docs/PROTOCOL.md §11).
//!
//! A circuit's far end sits behind a virtual address whose real path is
//! [`RealPath::Relay`]; quinn runs the end-to-end connection (TLS identity
//! of the far node checked as on any dial) over it exactly as over UDP, and
//! the pool holds it as the connection to that node.

use super::*;
use crate::path::PathKind;
use crate::relay::{FrameSplitter, encode_frame};
use crate::wire::RelayStatus;

/// What a circuit stream is to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CircuitRole {
    /// Our end of a circuit through `relay`.
    End {
        /// The relay.
        relay: NodeId,
        /// The circuit's id there.
        circuit: u64,
    },
    /// One side (0: dialer, 1: target) of a circuit this node relays.
    Splice {
        /// The circuit's id here.
        circuit: u64,
        /// Which side the stream is.
        side: usize,
    },
}

/// Why a relayed connection closed with its circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitLoss {
    /// The connection to the relay is gone (the relay died, or the link).
    RelayLost,
    /// The relay closed the circuit at its byte or lifetime limit.
    LimitReached,
    /// The relay closed the circuit because the other end's connection to
    /// it is gone.
    PeerGone,
    /// The circuit stream broke (bad framing, a reset with another code,
    /// or the stream finished).
    Broken,
    /// Nothing came over the circuit for the idle timeout: the relay or the
    /// peer went silent (a relay that crashed is usually noticed this way,
    /// as the end-to-end connection and the one to the relay time out
    /// together).
    TimedOut,
}

/// What the relay client tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// A relay granted (or renewed) our reservation.
    ReservationGranted {
        /// The relay.
        relay: NodeId,
        /// How long it lasts from now unless renewed (the node renews it at
        /// half). A duration, not an instant, so events stay the same from
        /// run to run.
        ttl: Duration,
    },
    /// A relay refused our reservation (or its renewal).
    ReservationRefused {
        /// The relay.
        relay: NodeId,
        /// Why.
        status: RelayStatus,
    },
    /// A reservation we held is gone: its connection was lost or it lapsed.
    ReservationLost {
        /// The relay.
        relay: NodeId,
    },
    /// A relay refused a circuit we asked for.
    CircuitRefused {
        /// The relay.
        relay: NodeId,
        /// The node we wanted to reach.
        target: NodeId,
        /// Why.
        status: RelayStatus,
    },
    /// A relay could not be reached for a reservation or a circuit.
    RelayUnreachable {
        /// The relay.
        relay: NodeId,
        /// What failed.
        detail: String,
    },
    /// A circuit is open; the end-to-end connection runs over it (an
    /// [`Event::Connected`] with [`PathKind::Relayed`] follows when it is
    /// ready).
    CircuitOpened {
        /// The relay.
        relay: NodeId,
        /// The node at the other end.
        peer: NodeId,
        /// The circuit's id at the relay.
        circuit: u64,
    },
}

/// A reservation of ours on one relay.
struct Reservation {
    relay: dht::Contact,
    /// The lease that keeps the relay connection pooled while we hold it.
    lease: Option<Lease>,
    conn: Option<ConnectionHandle>,
    expires: Option<Instant>,
    renew_at: Option<Instant>,
}

/// Our end of a circuit.
struct CircuitEnd {
    conn: ConnectionHandle,
    stream: StreamId,
    virtual_addr: SocketAddr,
    splitter: FrameSplitter,
    lease: Option<Lease>,
    /// Until a connection runs over the circuit: when the circuit is given
    /// up as unused (a dial that never came, or never got through).
    claim_by: Option<Instant>,
}

/// What a pool acquire of the relay client waits for.
enum Intent {
    Reserve(NodeId),
    Circuit { relay: NodeId, target: NodeId },
    EndToEnd { relay: NodeId, target: NodeId },
}

/// A relay request of ours waiting for its answer.
enum RelayAsk {
    Reserve(NodeId),
    Circuit {
        relay: NodeId,
        target: NodeId,
        lease: Lease,
    },
}

/// The client's state.
#[derive(Default)]
pub(super) struct RelayClient {
    reservations: HashMap<NodeId, Reservation>,
    ends: HashMap<(NodeId, u64), CircuitEnd>,
    waits: HashMap<WaitId, Intent>,
    asks: HashMap<(ConnectionHandle, StreamId), RelayAsk>,
    next_request: u64,
}

impl RelayClient {
    /// The next renewal or lapse of a reservation, or the end of a
    /// circuit's wait for its connection.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let reservations = self
            .reservations
            .values()
            .flat_map(|r| [r.renew_at, r.expires]);
        let ends = self.ends.values().map(|e| e.claim_by);
        reservations.chain(ends).flatten().min()
    }

    /// The relays we hold or are asking for a reservation on.
    pub(super) fn wanted(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.reservations.keys()
    }

    /// True when the pool acquire `wait` is the relay client's.
    pub(super) fn owns(&self, wait: WaitId) -> bool {
        self.waits.contains_key(&wait)
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }
}

impl Node {
    /// Asks `relay` to accept circuits for this node and keeps the
    /// reservation: renewed at half its lifetime, reported with
    /// [`RelayEvent`]s. Reserving again on the same relay renews at once.
    pub fn reserve(&mut self, now: Instant, relay: dht::Contact) {
        self.enter(now);
        let id = relay.id;
        self.relay_client
            .reservations
            .entry(id)
            .or_insert_with(|| Reservation {
                relay: relay.clone(),
                lease: None,
                conn: None,
                expires: None,
                renew_at: None,
            });
        self.relay_acquire(now, &relay, Intent::Reserve(id));
        self.settle(now);
    }

    /// Gives the reservation on `relay` up (RELAY_RELEASE) and lets its
    /// connection go idle. Circuits open through it stay.
    pub fn release(&mut self, now: Instant, relay: NodeId) {
        self.enter(now);
        if let Some(reservation) = self.relay_client.reservations.remove(&relay) {
            if let Some(conn) = reservation.conn.and_then(|h| self.conns.get_mut(&h)) {
                if let Some(stream) = conn.open() {
                    let request_id = self.relay_client.request_id();
                    let release = Message::from(wire::RelayRelease { request_id });
                    let _ = conn.send(stream, &release, true);
                    conn.quinn.recv_stream(stream).stop(STREAM_REFUSED).ok();
                }
            }
            if let Some(lease) = reservation.lease {
                self.pool.release(now, lease);
            }
        }
        self.settle(now);
    }

    /// The relays that hold a reservation of ours now.
    pub fn reserved_relays(&self) -> Vec<NodeId> {
        let mut relays: Vec<NodeId> = self
            .relay_client
            .reservations
            .iter()
            .filter(|(_, r)| r.expires.is_some())
            .map(|(id, _)| *id)
            .collect();
        relays.sort();
        relays
    }

    /// Opens a circuit to `target` through `relay` (where `target` holds a
    /// reservation), then the end-to-end QUIC connection to `target` over
    /// it. The pool then holds that connection as the one to `target`, so
    /// DHT, RPC and pub/sub requests to `target` use it. Outcomes arrive as
    /// [`RelayEvent`]s and [`Event::Connected`] with [`PathKind::Relayed`].
    pub fn dial_via_relay(&mut self, now: Instant, relay: dht::Contact, target: NodeId) {
        self.enter(now);
        let intent = Intent::Circuit {
            relay: relay.id,
            target,
        };
        self.relay_acquire(now, &relay, intent);
        self.settle(now);
    }

    /// The relay's counters (server and client side).
    pub fn relay_counters(&self) -> &crate::relay::RelayCounters {
        &self.relay_counters
    }

    /// The paths of the ready connection to `peer`: the real path its
    /// packets take now, and the relay circuits behind its virtual address
    /// (the live one, or backups once the path moved off them), sorted.
    pub fn paths_to(&self, peer: &NodeId) -> Option<(RealPath, Vec<RealPath>)> {
        let conn = self
            .conns
            .values()
            .find(|c| c.peer == Some(*peer) && c.phase == Phase::Ready)?;
        let now = self.paths.real(&conn.virtual_addr)?;
        let mut keys: Vec<(NodeId, u64)> = self
            .relay_client
            .ends
            .iter()
            .filter(|(_, end)| end.virtual_addr == conn.virtual_addr)
            .map(|(key, _)| *key)
            .collect();
        keys.sort();
        let circuits = keys
            .into_iter()
            .map(|(relay, circuit)| RealPath::Relay { relay, circuit })
            .collect();
        Some((now, circuits))
    }

    /// What this node relays and holds now.
    pub fn relay_load(&self) -> crate::relay::RelayLoad {
        crate::relay::RelayLoad {
            reservations_served: self.relay_server.reservation_count(),
            circuits_relayed: self.relay_server.circuit_count(),
            reservations_held: self.reserved_relays().len(),
            circuit_ends: self.relay_client.ends.len(),
        }
    }

    /// Gets a pooled connection to `relay` for `intent`.
    fn relay_acquire(&mut self, now: Instant, relay: &dht::Contact, intent: Intent) {
        let Some(&addr) = relay.addrs.first() else {
            self.relay_unreachable(relay.id, "no address".into());
            return;
        };
        match self.pool.acquire(now, relay.id, addr) {
            Ok(Acquired::Ready(lease)) => self.relay_lease_ready(now, intent, lease),
            Ok(Acquired::Waiting(wait)) => {
                self.relay_client.waits.insert(wait, intent);
            }
            Err(error) => self.relay_unreachable(relay.id, error.to_string()),
        }
    }

    /// A pool acquire of the relay client got its connection.
    pub(super) fn relay_wait_ready(&mut self, now: Instant, wait: WaitId, lease: Lease) {
        if let Some(intent) = self.relay_client.waits.remove(&wait) {
            self.relay_lease_ready(now, intent, lease);
        }
    }

    /// A pool acquire of the relay client failed.
    pub(super) fn relay_wait_failed(&mut self, wait: WaitId, error: String) {
        let Some(intent) = self.relay_client.waits.remove(&wait) else {
            return;
        };
        let relay = match intent {
            Intent::Reserve(relay) | Intent::Circuit { relay, .. } => relay,
            Intent::EndToEnd { relay, target } => {
                self.relay_event(RelayEvent::CircuitRefused {
                    relay,
                    target,
                    status: RelayStatus::TargetUnreachable,
                });
                return;
            }
        };
        self.relay_unreachable(relay, error);
    }

    fn relay_lease_ready(&mut self, now: Instant, intent: Intent, lease: Lease) {
        match intent {
            // The end-to-end connection is pooled; the application's
            // requests lease it from now on.
            Intent::EndToEnd { .. } => self.pool.release(now, lease),
            Intent::Reserve(relay) => self.send_reserve(now, relay, lease),
            Intent::Circuit { relay, target } => {
                let request_id = self.relay_client.request_id();
                let frame = Message::from(wire::CircuitOpen { request_id, target });
                let pool_id = lease.conn();
                let ask = RelayAsk::Circuit {
                    relay,
                    target,
                    lease,
                };
                if let Err(RelayAsk::Circuit { lease, .. }) =
                    self.ask_relay(relay, pool_id, &frame, ask)
                {
                    self.pool.release(now, lease);
                }
            }
        }
    }

    /// RELAY_RESERVE on the relay connection `lease` holds, which from now
    /// on the reservation's lease keeps pooled.
    fn send_reserve(&mut self, now: Instant, relay: NodeId, lease: Lease) {
        let handle = self.by_pool_id.get(&lease.conn()).copied();
        let Some(reservation) = self.relay_client.reservations.get_mut(&relay) else {
            self.pool.release(now, lease);
            return;
        };
        let pool_id = lease.conn();
        if let Some(old) = reservation.lease.replace(lease) {
            self.pool.release(now, old);
        }
        reservation.conn = handle;
        let request_id = self.relay_client.request_id();
        let frame = Message::from(wire::RelayReserve { request_id });
        // A failed ask was reported; the reservation waits for its lapse
        // or the next `reserve`.
        let _ = self.ask_relay(relay, pool_id, &frame, RelayAsk::Reserve(relay));
    }

    /// Writes a relay request on a new stream of the pooled connection
    /// `pool_id` and files `ask` for its answer; gives `ask` back when the
    /// connection is gone or allows no stream (reported to the application).
    fn ask_relay(
        &mut self,
        relay: NodeId,
        pool_id: ConnId,
        frame: &Message,
        ask: RelayAsk,
    ) -> Result<(), RelayAsk> {
        let handle = self.by_pool_id.get(&pool_id).copied();
        let opened = handle.and_then(|h| {
            let conn = self.conns.get_mut(&h)?;
            let stream = conn.open()?;
            let finish = matches!(ask, RelayAsk::Reserve(_));
            let _ = conn.send(stream, frame, finish);
            Some((h, stream))
        });
        match opened {
            Some(key) => {
                self.relay_client.asks.insert(key, ask);
                Ok(())
            }
            None => {
                self.relay_unreachable(relay, "no stream to the relay".into());
                Err(ask)
            }
        }
    }

    /// RELAY_RESERVE_STATUS: our reservation granted or refused.
    pub(super) fn on_reserve_status(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        answer: wire::RelayReserveStatus,
    ) {
        let Some(RelayAsk::Reserve(relay)) = self.relay_client.asks.remove(&(handle, stream))
        else {
            self.counters.protocol_errors += 1;
            return;
        };
        let Some(reservation) = self.relay_client.reservations.get_mut(&relay) else {
            return;
        };
        if answer.status == RelayStatus::Ok {
            let ttl = Duration::from_secs(u64::from(answer.ttl_secs));
            let expires = now + ttl;
            reservation.expires = Some(expires);
            reservation.renew_at = Some(now + ttl / 2);
            self.relay_counters.reservations_held += 1;
            self.relay_event(RelayEvent::ReservationGranted { relay, ttl });
        } else {
            let reservation = self
                .relay_client
                .reservations
                .remove(&relay)
                .expect("looked up above");
            if let Some(lease) = reservation.lease {
                self.pool.release(now, lease);
            }
            self.relay_counters.reservations_lost += 1;
            let status = answer.status;
            self.relay_event(RelayEvent::ReservationRefused { relay, status });
        }
    }

    /// CIRCUIT_STATUS: our circuit is open (the stream now carries its
    /// frames) or refused.
    pub(super) fn on_circuit_status(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        answer: wire::CircuitStatus,
    ) {
        let Some(RelayAsk::Circuit {
            relay,
            target,
            lease,
        }) = self.relay_client.asks.remove(&(handle, stream))
        else {
            // Not ours: a granted circuit would go on carrying frames no
            // one reads.
            self.counters.protocol_errors += 1;
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.abandon(stream, STREAM_REFUSED);
            }
            return;
        };
        if answer.status != RelayStatus::Ok {
            self.pool.release(now, lease);
            let status = answer.status;
            self.relay_event(RelayEvent::CircuitRefused {
                relay,
                target,
                status,
            });
            return;
        }
        let circuit = answer.circuit;
        let virtual_addr = self.open_circuit_end(now, handle, stream, relay, circuit, Some(lease));
        self.relay_event(RelayEvent::CircuitOpened {
            relay,
            peer: target,
            circuit,
        });
        match self.pool.acquire(now, target, virtual_addr) {
            Ok(Acquired::Ready(lease)) => {
                // Already connected (another path won meanwhile): the
                // circuit has nothing to carry.
                self.pool.release(now, lease);
                self.circuit_end_gone(now, relay, circuit, CircuitLoss::Broken);
            }
            Ok(Acquired::Waiting(wait)) => {
                let intent = Intent::EndToEnd { relay, target };
                self.relay_client.waits.insert(wait, intent);
            }
            Err(_) => self.relay_event(RelayEvent::CircuitRefused {
                relay,
                target,
                status: RelayStatus::TargetUnreachable,
            }),
        }
    }

    /// CIRCUIT_INCOMING: a relay we reserved on announces a circuit; the
    /// dialer's QUIC handshake arrives over it.
    pub(super) fn on_circuit_incoming(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        incoming: wire::CircuitIncoming,
    ) {
        let Some(relay) = self.conns.get(&handle).and_then(|c| c.peer) else {
            return;
        };
        if !self.relay_client.reservations.contains_key(&relay) {
            // We never asked this node to relay for us.
            self.counters.protocol_errors += 1;
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.abandon(stream, STREAM_REFUSED);
            }
            return;
        }
        let circuit = incoming.circuit;
        // The circuit keeps the relay connection pooled, as the dialer's
        // does, even if the reservation is released meanwhile.
        let lease = self.pin_connection(now, handle);
        self.open_circuit_end(now, handle, stream, relay, circuit, lease);
        self.relay_event(RelayEvent::CircuitOpened {
            relay,
            peer: incoming.source,
            circuit,
        });
    }

    /// Records our end of a circuit behind a new virtual address and feeds
    /// it the circuit bytes that came with the opening frame.
    fn open_circuit_end(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        relay: NodeId,
        circuit: u64,
        lease: Option<Lease>,
    ) -> SocketAddr {
        let virtual_addr = self.paths.virtual_for(RealPath::Relay { relay, circuit });
        let end = CircuitEnd {
            conn: handle,
            stream,
            virtual_addr,
            splitter: FrameSplitter::new(),
            lease,
            claim_by: Some(now + self.config.request_timeout),
        };
        self.relay_client.ends.insert((relay, circuit), end);
        let role = CircuitRole::End { relay, circuit };
        self.circuit_streams.insert((handle, stream), role);
        let early = self
            .conns
            .get_mut(&handle)
            .map(|c| c.take_unread(stream))
            .unwrap_or_default();
        self.circuit_bytes(now, relay, circuit, &early);
        virtual_addr
    }

    /// Bytes read from our end of a circuit: each whole frame is a QUIC
    /// packet for quinn under the circuit's virtual address.
    pub(super) fn circuit_bytes(&mut self, now: Instant, relay: NodeId, circuit: u64, data: &[u8]) {
        let key = (relay, circuit);
        match self.relay_client.ends.get_mut(&key) {
            Some(end) => end.splitter.push(data),
            None => return,
        }
        while let Some(end) = self.relay_client.ends.get_mut(&key) {
            match end.splitter.next_packet() {
                Ok(Some(packet)) => {
                    let virtual_addr = end.virtual_addr;
                    self.handle_quic(now, virtual_addr, virtual_addr, &packet);
                }
                Ok(None) => return,
                Err(_) => {
                    self.relay_counters.frame_errors += 1;
                    self.circuit_end_gone(now, relay, circuit, CircuitLoss::Broken);
                    return;
                }
            }
        }
    }

    /// Writes one QUIC packet of ours onto a circuit, or drops it when the
    /// circuit is gone or its queue is full (QUIC recovers).
    pub(super) fn send_on_circuit(&mut self, relay: NodeId, circuit: u64, packet: &[u8]) {
        let Some(end) = self.relay_client.ends.get(&(relay, circuit)) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&end.conn) else {
            return;
        };
        let Some(frame) = encode_frame(packet) else {
            return;
        };
        if conn.queued(end.stream) + frame.len() > self.config.relay.max_queued_per_circuit {
            self.relay_counters.dropped_queue_full += 1;
            return;
        }
        conn.send_raw(end.stream, frame);
        self.relay_counters.packets_to_circuits += 1;
    }

    /// Reads a circuit stream (either role).
    pub(super) fn read_circuit_stream(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        role: CircuitRole,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let mut data = Vec::new();
        let read = conn.read_raw(stream, |chunk| data.extend_from_slice(chunk));
        match role {
            CircuitRole::End { relay, circuit } => {
                self.circuit_bytes(now, relay, circuit, &data);
                match read {
                    Ok(false) => {}
                    Ok(true) => self.circuit_end_gone(now, relay, circuit, CircuitLoss::Broken),
                    Err(trouble) => {
                        let loss = match trouble {
                            StreamTrouble::Reset(relay_server::CIRCUIT_LIMIT) => {
                                CircuitLoss::LimitReached
                            }
                            StreamTrouble::Reset(relay_server::CIRCUIT_PEER_GONE) => {
                                CircuitLoss::PeerGone
                            }
                            _ => CircuitLoss::Broken,
                        };
                        self.circuit_end_gone(now, relay, circuit, loss);
                    }
                }
            }
            CircuitRole::Splice { circuit, side } => {
                self.splice_bytes(now, circuit, side, &data);
                if !matches!(read, Ok(false)) {
                    self.splice_end_gone(now, circuit);
                }
            }
        }
    }

    /// Our end of a circuit is gone: the end-to-end connection on it closes
    /// with `loss` unless its path moved off the circuit meanwhile (then the
    /// circuit was only its backup).
    pub(super) fn circuit_end_gone(
        &mut self,
        now: Instant,
        relay: NodeId,
        circuit: u64,
        loss: CircuitLoss,
    ) {
        let Some(end) = self.relay_client.ends.remove(&(relay, circuit)) else {
            return;
        };
        self.circuit_streams.remove(&(end.conn, end.stream));
        if let Some(conn) = self.conns.get_mut(&end.conn) {
            conn.abandon(end.stream, STREAM_REFUSED);
        }
        if let Some(lease) = end.lease {
            self.pool.release(now, lease);
        }
        let path = RealPath::Relay { relay, circuit };
        if self.paths.real(&end.virtual_addr) != Some(path) {
            return;
        }
        let carried: Vec<ConnectionHandle> = self
            .conns
            .iter()
            .filter(|(_, c)| c.virtual_addr == end.virtual_addr)
            .map(|(h, _)| *h)
            .collect();
        for handle in carried {
            let cause = CloseCause::CircuitClosed { relay, loss };
            let message = format!("relay circuit closed: {loss:?}");
            self.close_connection(now, handle, DisconnectReason::Normal, message, cause);
        }
        if !self
            .conns
            .values()
            .any(|c| c.virtual_addr == end.virtual_addr)
        {
            self.paths.remove(&end.virtual_addr);
        }
    }

    /// Closes our circuit ends behind `virtual_addr` (its connection is
    /// gone); the relay then closes the circuits.
    pub(super) fn drop_circuits_of(&mut self, virtual_addr: SocketAddr) {
        let now = self.last_now;
        self.end_circuits(now, |e| e.virtual_addr == virtual_addr, CircuitLoss::Broken);
    }

    /// Ends our circuit ends that `which` picks, with `loss`.
    fn end_circuits(
        &mut self,
        now: Instant,
        which: impl Fn(&CircuitEnd) -> bool,
        loss: CircuitLoss,
    ) {
        let ends: Vec<(NodeId, u64)> = self
            .relay_client
            .ends
            .iter()
            .filter(|(_, e)| which(e))
            .map(|(key, _)| *key)
            .collect();
        for (relay, circuit) in ends {
            self.circuit_end_gone(now, relay, circuit, loss);
        }
    }

    /// A connection is gone: reservations on it are lost, circuits through
    /// it close (and so do connections that ran over them), and circuits
    /// this node relayed over it close.
    pub(super) fn relay_connection_gone(&mut self, now: Instant, handle: ConnectionHandle) {
        self.relay_server_connection_gone(now, handle);
        self.relay_client.asks.retain(|(h, _), _| *h != handle);
        let lost: Vec<NodeId> = self
            .relay_client
            .reservations
            .iter()
            .filter(|(_, r)| r.conn == Some(handle))
            .map(|(id, _)| *id)
            .collect();
        for relay in lost {
            self.reservation_lost(now, relay);
        }
        self.end_circuits(now, |e| e.conn == handle, CircuitLoss::RelayLost);
    }

    fn reservation_lost(&mut self, now: Instant, relay: NodeId) {
        let Some(reservation) = self.relay_client.reservations.remove(&relay) else {
            return;
        };
        if let Some(lease) = reservation.lease {
            self.pool.release(now, lease);
        }
        self.relay_counters.reservations_lost += 1;
        self.relay_event(RelayEvent::ReservationLost { relay });
    }

    /// Renews reservations at half their lifetime; a lapsed one is lost.
    pub(super) fn relay_client_timeout(&mut self, now: Instant) {
        let mut lapsed = Vec::new();
        let mut renew = Vec::new();
        for (id, reservation) in &mut self.relay_client.reservations {
            if reservation.expires.is_some_and(|t| t <= now) {
                lapsed.push(*id);
            } else if reservation.renew_at.is_some_and(|t| t <= now) {
                reservation.renew_at = None;
                renew.push(reservation.relay.clone());
            }
        }
        for relay in lapsed {
            self.reservation_lost(now, relay);
        }
        for relay in renew {
            self.relay_acquire(now, &relay, Intent::Reserve(relay.id));
        }
        self.drop_unclaimed_circuits(now);
    }

    /// Circuits whose connection never came within `request_timeout` of
    /// their opening are closed; circuits that carry one stop waiting.
    fn drop_unclaimed_circuits(&mut self, now: Instant) {
        let conns = &self.conns;
        let mut unclaimed = Vec::new();
        for (key, end) in &mut self.relay_client.ends {
            let Some(claim_by) = end.claim_by else {
                continue;
            };
            if conns.values().any(|c| c.virtual_addr == end.virtual_addr) {
                end.claim_by = None;
            } else if claim_by <= now {
                unclaimed.push(*key);
            }
        }
        for (relay, circuit) in unclaimed {
            self.circuit_end_gone(now, relay, circuit, CircuitLoss::Broken);
        }
    }

    fn relay_unreachable(&mut self, relay: NodeId, detail: String) {
        if self
            .relay_client
            .reservations
            .get(&relay)
            .is_some_and(|r| r.expires.is_none())
        {
            self.relay_client.reservations.remove(&relay);
        }
        self.relay_event(RelayEvent::RelayUnreachable { relay, detail });
    }

    fn relay_event(&mut self, event: RelayEvent) {
        self.saw_relay_event(&event);
        self.out.push_back(Output::Event(Event::Relay(event)));
    }

    /// Whether the connection at `virtual_addr` runs direct or relayed.
    pub(super) fn path_kind(&self, virtual_addr: &SocketAddr) -> PathKind {
        self.paths
            .real(virtual_addr)
            .map_or(PathKind::Direct, |p| p.kind())
    }
}
