//! The node's glue to the relay's two children ([`RelayServer`] and
//! [`RelayClient`], src/relay/): the entry point of relay frames, the
//! public relay methods, the reading of circuit streams, and the one
//! executor of the children's outputs on connections, the pool and the
//! path table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, StreamId};

use super::datagrams::Inbound;
use super::{CloseCause, Event, Node};
use crate::connection::STREAM_REFUSED;
use crate::connection::{Conn, ConnTable, Phase, StreamTrouble};
use crate::contract::{Child, Output};
use crate::dht;
use crate::id::NodeId;
use crate::path::{PathKind, PathTable, RealPath};
use crate::pool::{Acquired, ConnId, Direction, Lease, PeerState, WaitId};
use crate::relay::client::CIRCUIT_ANSWER_TIMEOUT;
use crate::relay::{
    RelayClientOutput, RelayCounters, RelayEvent, RelayLoad, RelayServerOutput, Written,
};
use crate::wire::{self, Capabilities, DisconnectReason, Message};

/// Which side of the relay a circuit stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CircuitSide {
    /// A side of a circuit this node relays.
    Relayed,
    /// Our end of a circuit.
    End,
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
        if !matches!(
            message,
            Message::RelayReserve(_)
                | Message::RelayRelease(_)
                | Message::CircuitOpen(_)
                | Message::RelayReserveStatus(_)
                | Message::CircuitStatus(_)
                | Message::CircuitIncoming(_)
        ) {
            return Some(message);
        }
        let conn = self.conns.get(&handle)?;
        let (Some(id), Some(peer)) = (conn.pool_id, conn.peer) else {
            return None;
        };
        // A peer over a relay circuit has a virtual address: all such peers
        // share one IP group at the relay server.
        let from = (peer, conn.remote.ip());
        let (server, client) = (&mut self.relay_server, &mut self.relay_client);
        match message {
            Message::RelayReserve(m) => server.handle_reserve(now, id, from, stream, m),
            Message::RelayRelease(_) => server.handle_release(now, id, peer, stream),
            Message::CircuitOpen(m) => server.handle_circuit_open(now, id, from, stream, m),
            Message::RelayReserveStatus(m) => client.handle_reserve_status(now, id, stream, m),
            Message::CircuitStatus(m) => client.handle_circuit_status(now, id, stream, m),
            Message::CircuitIncoming(m) => {
                client.handle_circuit_incoming(now, id, peer, stream, m);
            }
            other => return Some(other),
        }
        self.drive_relay(now);
        None
    }

    /// Asks `relay` to accept circuits for this node and keeps the
    /// reservation: renewed at half its lifetime, reported with
    /// [`RelayEvent`]s. Reserving again on the same relay renews at once.
    pub fn reserve(&mut self, now: Instant, relay: dht::Contact) {
        self.enter(now);
        self.relay_client.handle_reserve(now, relay);
        self.drive_relay(now);
        self.settle(now);
    }

    /// Gives the reservation on `relay` up (RELAY_RELEASE) and lets its
    /// connection go idle. Circuits open through it stay.
    pub fn release(&mut self, now: Instant, relay: NodeId) {
        self.enter(now);
        self.relay_client.handle_release(now, relay);
        self.drive_relay(now);
        self.settle(now);
    }

    /// The relays that hold a reservation of ours now.
    pub fn reserved_relays(&self) -> Vec<NodeId> {
        self.relay_client.reserved_relays()
    }

    /// Opens a circuit to `target` through `relay` (where `target` holds a
    /// reservation), then the end-to-end QUIC connection to `target` over
    /// it. The pool then holds that connection as the one to `target`, so
    /// DHT, RPC and pub/sub requests to `target` use it. Outcomes arrive as
    /// [`RelayEvent`]s and [`Event::Connected`] with [`PathKind::Relayed`].
    pub fn dial_via_relay(&mut self, now: Instant, relay: dht::Contact, target: NodeId) {
        self.enter(now);
        self.relay_client.handle_dial(now, relay, target);
        self.drive_relay(now);
        self.settle(now);
    }

    /// The relay's counters (server and client side).
    pub fn relay_counters(&self) -> RelayCounters {
        let mut counters = self.relay_server.counters().clone();
        counters.add(self.relay_client.counters());
        counters
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
        Some((now, self.relay_client.circuits_behind(conn.virtual_addr)))
    }

    /// What this node relays and holds now.
    pub fn relay_load(&self) -> RelayLoad {
        RelayLoad {
            reservations_served: self.relay_server.reservation_count(),
            circuits_relayed: self.relay_server.circuit_count(),
            reservations_held: self.reserved_relays().len(),
            circuit_ends: self.relay_client.end_count(),
        }
    }

    /// Simulator only: keeps a copy of the inner packets this relay
    /// forwards from now on, up to `bytes` in all, for
    /// [`Node::relayed_packets`].
    #[cfg(feature = "sim")]
    pub fn tap_relayed(&mut self, bytes: usize) {
        self.relay_server.tap_relayed(bytes);
    }

    /// Simulator only: the inner packets this relay forwarded since
    /// [`Node::tap_relayed`], exactly as it forwarded them.
    #[cfg(feature = "sim")]
    pub fn relayed_packets(&self) -> &[Bytes] {
        self.relay_server.relayed_packets()
    }

    /// Simulator only: as a relay, drop every circuit packet from now on
    /// (`on`) while still accepting reservations and circuits.
    #[cfg(feature = "sim")]
    pub fn blackhole_circuits(&mut self, on: bool) {
        self.relay_server.blackhole_circuits(on);
    }

    /// Simulator only: writes `packets` junk packets of 1200 bytes onto the
    /// relay circuit the connection to `peer` runs over (a flooder; the far
    /// end's QUIC drops them). Nothing happens without such a circuit.
    #[cfg(feature = "sim")]
    pub fn flood_circuit(&mut self, now: Instant, peer: &NodeId, packets: usize) {
        self.enter(now);
        if let Some((RealPath::Relay { relay, circuit }, _)) = self.paths_to(peer) {
            for _ in 0..packets {
                (self.relay_client).handle_outgoing(now, relay, circuit, &[0; 1200]);
            }
            self.drive_relay(now);
        }
        self.settle(now);
    }

    /// How long the relay on connection `conn` has to answer a circuit
    /// request: [`CIRCUIT_ANSWER_TIMEOUT`], stretched on a slow connection
    /// (`connection::answer_wait`).
    fn relay_answer_wait(&self, conn: Option<ConnId>) -> Duration {
        let rtt = conn
            .and_then(|id| self.by_pool_id.get(&id))
            .and_then(|handle| self.conns.get(handle))
            .map(|conn| conn.quinn.rtt());
        rtt.map_or(CIRCUIT_ANSWER_TIMEOUT, |rtt| {
            crate::connection::answer_wait(CIRCUIT_ANSWER_TIMEOUT, rtt)
        })
    }

    /// Whether the connection at `virtual_addr` runs direct or relayed.
    pub(super) fn path_kind(&self, virtual_addr: &SocketAddr) -> PathKind {
        self.paths
            .real(virtual_addr)
            .map_or(PathKind::Direct, |p| p.kind())
    }

    /// A pool acquire of the relay client got its connection.
    pub(super) fn relay_wait_ready(&mut self, now: Instant, wait: WaitId, lease: Lease) {
        let answer_wait = self.relay_answer_wait(Some(lease.conn()));
        self.relay_client
            .handle_wait_ready(now, wait, lease, answer_wait);
        self.drive_relay(now);
    }

    /// A pool acquire of the relay client failed.
    pub(super) fn relay_wait_failed(&mut self, now: Instant, wait: WaitId, error: String) {
        self.relay_client.handle_wait_failed(now, wait, error);
        self.drive_relay(now);
    }

    /// Whether `stream` of `handle` carries circuit frames rather than
    /// messages, and for which side of the relay.
    pub(super) fn circuit_stream(
        &self,
        handle: ConnectionHandle,
        stream: StreamId,
    ) -> Option<CircuitSide> {
        let id = self.conns.get(&handle)?.pool_id?;
        if self.relay_server.carries(id, stream) {
            Some(CircuitSide::Relayed)
        } else if self.relay_client.carries(id, stream) {
            Some(CircuitSide::End)
        } else {
            None
        }
    }

    /// Reads a circuit stream: its bytes go to the side it belongs to, and
    /// so does its end (finished or reset).
    pub(super) fn read_circuit_stream(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        side: CircuitSide,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let Some(id) = conn.pool_id else {
            return;
        };
        let mut data = Vec::new();
        let read = conn.read_raw(stream, |chunk| data.extend_from_slice(chunk));
        match side {
            CircuitSide::End => {
                self.relay_client
                    .handle_circuit_bytes(now, id, stream, &data);
                let reset = match read {
                    Ok(false) => None,
                    Err(StreamTrouble::Reset(code)) => Some(Some(code)),
                    Ok(true) | Err(_) => Some(None),
                };
                if let Some(reset) = reset {
                    self.relay_client.handle_stream_gone(now, id, stream, reset);
                }
            }
            CircuitSide::Relayed => {
                self.relay_server
                    .handle_circuit_bytes(now, id, stream, &data);
                if !matches!(read, Ok(false)) {
                    self.relay_server.handle_stream_gone(now, id, stream);
                }
            }
        }
        self.drive_relay(now);
    }

    /// Writes one QUIC packet of ours onto a circuit, or drops it when the
    /// circuit is gone or its queue is full (QUIC recovers).
    pub(super) fn send_on_circuit(&mut self, relay: NodeId, circuit: u64, packet: &[u8]) {
        let now = self.last_now;
        self.relay_client
            .handle_outgoing(now, relay, circuit, packet);
        self.drive_relay(now);
    }

    /// The node's keep-alive beat (`connection/beat.rs`): every ready
    /// connection we dialed that runs over a relay circuit PINGs now, so
    /// the PINGs share the relay connections' packets. The peer keeps a
    /// circuit we accepted alive, and a punched path its opener.
    pub(super) fn beat_circuits(&mut self) {
        let over_circuit = |conn: &Conn| {
            conn.direction == Direction::Outbound
                && conn.phase == Phase::Ready
                && self.path_kind(&conn.virtual_addr) == PathKind::Relayed
        };
        let beating: Vec<ConnectionHandle> = (self.conns.iter())
            .filter(|(_, conn)| over_circuit(conn))
            .map(|(handle, _)| *handle)
            .collect();
        for handle in beating {
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.quinn.ping();
                self.counters.beat_pings += 1;
            }
        }
    }

    /// Expired reservations end and circuits past their lifetime close
    /// (server); reservations renew or lapse, and circuits that carried no
    /// ready connection in time close, as dead if nothing came over them
    /// (client).
    pub(super) fn relay_timeout(&mut self, now: Instant) {
        self.relay_server.handle_timeout(now);
        let (conns, paths) = (&self.conns, &self.paths);
        let carried = |addr: &SocketAddr| conns.values().any(|c| c.virtual_addr == *addr);
        let direct_to = |peer: &NodeId| direct_connection(conns, paths, peer);
        self.relay_client.handle_timeout(now, carried, direct_to);
        self.drive_relay(now);
    }

    /// A connection is gone (`pool_id`: its pool id, if it had one): its
    /// reservations and circuits, as relay and as client, go with it.
    pub(super) fn relay_connection_gone(&mut self, now: Instant, pool_id: Option<ConnId>) {
        let Some(id) = pool_id else {
            return;
        };
        self.relay_server.handle_connection_gone(now, id);
        self.relay_client.handle_connection_gone(now, id);
        self.drive_relay(now);
    }

    /// Closes our circuit ends behind `virtual_addr` (its connection is
    /// gone); the relay then closes the circuits.
    pub(super) fn drop_circuits_of(&mut self, virtual_addr: SocketAddr) {
        let now = self.last_now;
        self.relay_client.handle_path_gone(now, virtual_addr);
        self.drive_relay(now);
    }

    /// Executes what the relay's children ask until both are drained.
    pub(super) fn drive_relay(&mut self, now: Instant) {
        loop {
            if let Some(output) = self.relay_server.poll_output() {
                self.relay_server_output(now, output);
            } else if let Some(output) = self.relay_client.poll_output() {
                self.relay_client_output(now, output);
            } else {
                return;
            }
        }
    }

    fn relay_server_output(&mut self, now: Instant, output: RelayServerOutput) {
        match output {
            RelayServerOutput::Answer {
                conn,
                stream,
                frame,
            } => {
                if let Some(conn) = self.relay_conn(conn) {
                    conn.forget(stream);
                    if conn.send(stream, &frame, true).is_err() {
                        conn.abandon(stream, STREAM_REFUSED);
                    }
                }
            }
            RelayServerOutput::Finish { conn, stream } => {
                if let Some(conn) = self.relay_conn(conn) {
                    conn.finish(stream);
                }
            }
            RelayServerOutput::Announce {
                conn,
                circuit,
                frame,
            } => {
                let opened = match self.relay_conn(conn) {
                    Some(c) if c.phase == Phase::Ready => {
                        let stream = c.open();
                        if let Some(stream) = stream {
                            let _ = c.send(stream, &frame, false);
                        } else {
                            tracing::debug!(?conn, circuit, "no stream left to announce a circuit");
                        }
                        stream
                    }
                    other => {
                        let phase = other.map(|c| c.phase);
                        tracing::debug!(
                            ?conn,
                            circuit,
                            ?phase,
                            "the circuit's target connection is not ready"
                        );
                        None
                    }
                };
                self.relay_server.handle_target_stream(now, circuit, opened);
            }
            RelayServerOutput::Splice {
                conn: id,
                stream,
                frame,
            } => {
                if let Some(conn) = self.relay_conn(id) {
                    let _ = conn.send(stream, &frame, false);
                    let early = conn.take_unread(stream);
                    self.relay_server
                        .handle_circuit_bytes(now, id, stream, &early);
                }
            }
            RelayServerOutput::Forward {
                conn,
                stream,
                frame,
            } => {
                let written = self.write_circuit(conn, stream, &frame);
                self.relay_server.handle_forwarded(&frame, written);
            }
            RelayServerOutput::Vouch {
                conn,
                circuit,
                other,
            } => self.vouch(conn, circuit, other),
            RelayServerOutput::Reset { conn, stream, code } => {
                if let Some(conn) = self.relay_conn(conn) {
                    conn.abandon(stream, code);
                }
            }
            RelayServerOutput::Pin { conn, pin } => {
                let lease = self.pin_connection(now, conn);
                self.relay_server.handle_pinned(pin, lease);
            }
            RelayServerOutput::Release(lease) => self.pool.release(now, lease),
        }
    }

    /// Sends CIRCUIT_PEER on `conn`'s control stream: where we see `other`, the other end
    /// of `circuit` (nothing when `other` came over a circuit, or `conn`'s peer does not
    /// understand it).
    fn vouch(&mut self, conn: ConnId, circuit: u64, other: ConnId) {
        let seen = (self.by_pool_id.get(&other))
            .and_then(|h| self.conns.get(h))
            .map(|c| c.remote)
            .filter(|remote| !PathTable::is_virtual(remote));
        let Some(peer) = seen else {
            return;
        };
        let Some(&handle) = self.by_pool_id.get(&conn) else {
            return;
        };
        let understood = (self.conns.get(&handle)).and_then(|c| c.hello.as_ref());
        if understood.is_some_and(|h| h.capabilities.contains(Capabilities::CIRCUIT_PEER)) {
            self.send_control(handle, &Message::from(wire::CircuitPeer { circuit, peer }));
        }
    }

    /// CIRCUIT_PEER on `handle`'s control stream (anything else routed to the relay client
    /// there is a protocol error).
    pub(super) fn on_circuit_peer(&mut self, handle: ConnectionHandle, message: Message) {
        let Message::CircuitPeer(m) = message else {
            return;
        };
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        if let (Some(id), Some(relay)) = (conn.pool_id, conn.peer) {
            self.relay_client.handle_circuit_peer(id, relay, m);
        }
    }

    fn relay_client_output(&mut self, now: Instant, output: RelayClientOutput) {
        match output {
            RelayClientOutput::Acquire { token, peer, addr } => {
                let acquired = self
                    .pool
                    .acquire(now, peer, addr)
                    .map_err(|e| e.to_string());
                let conn = match &acquired {
                    Ok(Acquired::Ready(lease)) => Some(lease.conn()),
                    _ => None,
                };
                let answer_wait = self.relay_answer_wait(conn);
                (self.relay_client).handle_acquired(now, token, acquired, answer_wait);
            }
            RelayClientOutput::Request {
                conn,
                request_id,
                frame,
                finish,
            } => {
                let opened = self.relay_conn(conn).and_then(|c| {
                    let stream = c.open()?;
                    let _ = c.send(stream, &frame, finish);
                    Some(stream)
                });
                self.relay_client
                    .handle_request_stream(now, request_id, opened);
            }
            RelayClientOutput::Notify { conn, frame } => {
                if let Some(conn) = self.relay_conn(conn)
                    && let Some(stream) = conn.open()
                {
                    let _ = conn.send(stream, &frame, true);
                    conn.quinn.recv_stream(stream).stop(STREAM_REFUSED).ok();
                }
            }
            RelayClientOutput::Release(lease) => self.pool.release(now, lease),
            RelayClientOutput::Pin {
                conn,
                relay,
                circuit,
            } => {
                let lease = self.pin_connection(now, conn);
                self.relay_client.handle_pinned(relay, circuit, lease);
            }
            RelayClientOutput::InstallPath {
                relay,
                peer,
                circuit,
                conn,
                stream,
            } => {
                let virtual_addr = self.paths.virtual_for(RealPath::Relay { relay, circuit });
                let early = self
                    .relay_conn(conn)
                    .map(|c| c.take_unread(stream))
                    .unwrap_or_default();
                let direct = direct_connection(&self.conns, &self.paths, &peer);
                self.relay_client
                    .handle_path(now, relay, circuit, virtual_addr, &early, direct);
            }
            RelayClientOutput::Packet {
                virtual_addr,
                packet,
                spare,
            } => {
                // A spare's packet may be the direct connection's, come over
                // a new path: kept, to be handed to it (`adopt_spare_on_packet`).
                let packet = if spare {
                    Inbound::Kept(packet)
                } else {
                    Inbound::Owned(packet)
                };
                self.handle_quic(now, virtual_addr, None, packet);
            }
            RelayClientOutput::Write {
                conn,
                stream,
                frame,
            } => {
                let written = self.write_circuit(conn, stream, &frame);
                self.relay_client.handle_written(written);
            }
            RelayClientOutput::Refuse { conn, stream } => {
                if let Some(conn) = self.relay_conn(conn) {
                    conn.abandon(stream, STREAM_REFUSED);
                }
            }
            RelayClientOutput::ProtocolError => self.counters.protocol_errors += 1,
            RelayClientOutput::CircuitClosed {
                relay,
                circuit,
                virtual_addr,
                loss,
                peer,
                via,
                spare: _,
            } => {
                if let Some(via) = via
                    && self.needs_spare(&peer)
                {
                    // The way back of a direct connection we dialed: ask for another.
                    self.relay_client.handle_want_spare(now, peer, relay, via);
                }
                if self.paths.real(&virtual_addr) != Some(RealPath::Relay { relay, circuit }) {
                    return;
                }
                let carried: Vec<ConnectionHandle> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.virtual_addr == virtual_addr)
                    .map(|(h, _)| *h)
                    .collect();
                for handle in carried {
                    let cause = CloseCause::CircuitClosed { relay, loss };
                    let message = format!("relay circuit closed: {loss:?}");
                    self.close_connection(now, handle, DisconnectReason::Normal, message, cause);
                }
                if !self.conns.values().any(|c| c.virtual_addr == virtual_addr) {
                    self.paths.remove(&virtual_addr);
                }
            }
            RelayClientOutput::Event(event) => self.relay_event(event),
        }
    }

    fn relay_event(&mut self, event: RelayEvent) {
        self.saw_relay_event(&event);
        self.out.push_back(Output::Event(Event::Relay(event)));
    }

    /// Whether our ready connection to `peer` runs direct with no circuit
    /// behind it: a circuit to `peer` opened now is its spare.
    fn needs_spare(&self, peer: &NodeId) -> bool {
        direct_connection(&self.conns, &self.paths, peer)
            .is_some_and(|v| self.relay_client.circuits_behind(v).is_empty())
    }

    /// The way back for `handle`'s connection, falling back from its direct
    /// path: the circuit the upgrade remembers (`path`) while it is open,
    /// else one behind the connection's address (a spare it adopted), else
    /// the peer's spare, adopted now, else an end of a circuit to the peer
    /// that no connection uses (the peer dialed through a relay too: a
    /// connection dialed straight has no circuit behind it on this side),
    /// adopted now; `path` itself when none is left.
    pub(super) fn fallback_path(&mut self, handle: ConnectionHandle, path: RealPath) -> RealPath {
        if let RealPath::Relay { relay, circuit } = path
            && self.relay_client.has_end(&relay, circuit)
        {
            return path;
        }
        let Some((virtual_addr, peer)) = self.conns.get(&handle).map(|c| (c.virtual_addr, c.peer))
        else {
            return path;
        };
        if let Some(behind) = self.relay_client.circuits_behind(virtual_addr).first() {
            return *behind;
        }
        let Some(peer) = peer else {
            return path;
        };
        let adopted = self
            .relay_client
            .adopt_spare(&peer, virtual_addr)
            .or_else(|| {
                // Else a circuit end to the peer that no connection uses (the
                // peer also dialed us through a relay, behind this connection).
                let unused = (self.relay_client.ends_to(&peer).into_iter())
                    .find(|at| self.conns.values().all(|c| c.virtual_addr != *at))?;
                self.relay_client.adopt_end_at(unused, virtual_addr)
            });
        match adopted {
            Some((circuit, old)) => {
                self.paths.remove(&old);
                circuit
            }
            None => path,
        }
    }

    /// A packet of `handle`'s connection came over the spare circuit at
    /// `arrived_at` while the connection runs direct: the peer fell back onto
    /// the spare. Handed to the connection as its own, the packet adopts the
    /// spare only if it proves authentic (quinn decrypted new frames from
    /// it), and the connection then hears its peer speak relayed. True when
    /// the spare was adopted.
    pub(super) fn adopt_spare_on_packet(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        arrived_at: SocketAddr,
        packet: Bytes,
    ) -> bool {
        let Some((own, peer)) =
            (self.conns.get(&handle)).and_then(|c| Some((c.virtual_addr, c.peer?)))
        else {
            return false;
        };
        if self.relay_client.spare_at(arrived_at) != Some(peer)
            || !matches!(self.paths.real(&own), Some(RealPath::Direct(_)))
            || !self.handle_as_own(now, handle, packet)
        {
            return false;
        }
        if let Some((_, old)) = self.relay_client.adopt_spare(&peer, own) {
            self.paths.remove(&old);
        }
        self.peer_spoke_relayed(now, handle);
        true
    }

    /// The connection a relay child names.
    fn relay_conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        let handle = self.by_pool_id.get(&id)?;
        self.conns.get_mut(handle)
    }

    /// Writes a circuit frame unless the stream's queue would pass the
    /// relay's per-circuit bound.
    fn write_circuit(&mut self, id: ConnId, stream: StreamId, frame: &bytes::Bytes) -> Written {
        let limit = self.config.relay.max_queued_per_circuit;
        let Some(conn) = self.relay_conn(id) else {
            return Written::Gone;
        };
        if conn.queued(stream) + frame.len() > limit {
            return Written::QueueFull;
        }
        conn.send_raw(stream, frame.clone());
        Written::Written
    }

    /// A lease on the pooled connection `id`, so the pool never evicts it
    /// as idle while the relay (or a circuit end) needs it; `None` when the
    /// pool does not hold that connection as ready.
    fn pin_connection(&mut self, now: Instant, id: ConnId) -> Option<Lease> {
        let conn = self.relay_conn(id)?;
        let (peer, remote) = (conn.peer?, conn.remote);
        match self.pool.peer_state(&peer) {
            Some(PeerState::Ready { conn, .. }) if conn == id => {}
            _ => return None,
        }
        match self.pool.acquire(now, peer, remote) {
            Ok(Acquired::Ready(lease)) => Some(lease),
            _ => None,
        }
    }
}

/// The virtual address of the ready connection to `peer` whose packets go
/// direct, if there is one.
fn direct_connection(conns: &ConnTable, paths: &PathTable, peer: &NodeId) -> Option<SocketAddr> {
    conns
        .values()
        .find(|c| {
            c.peer == Some(*peer)
                && c.phase == Phase::Ready
                && matches!(paths.real(&c.virtual_addr), Some(RealPath::Direct(_)))
        })
        .map(|c| c.virtual_addr)
}
