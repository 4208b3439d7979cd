//! Requests over pooled connections: the pool's actions (dial, close,
//! lease ready or failed), DHT requests carried as exchanges
//! ([`crate::exchange`]: a stream of their own, or the control stream for
//! PING) and their outcomes handed to the DHT, and DHT answers written back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_proto::ConnectionHandle;

use super::{CloseCause, Node};
use crate::connection::Conn;
use crate::connection::{STREAM_REFUSED, STREAM_TIMED_OUT};
use crate::contract::Child;
use crate::dht::wire as dht_wire;
use crate::dht::{self, DhtOutput, Failure, RequestId};
use crate::exchange::{ExchangeOutput, Lane, PeerRequest, Slot, StreamKey, Unanswered, Unopened};
use crate::id::NodeId;
use crate::path::{PathTable, RealPath};
use crate::pool::{Acquired, Action, CloseReason, ConnId, Direction};
use crate::tls;
use crate::wire::{DisconnectReason, Message};

impl Node {
    /// Carries out the DHT exchanges' outputs; true when there were any. A
    /// request lost with its connection fails as `lost` (a relay circuit's
    /// loss says nothing about the peer).
    pub(super) fn drive_requests(&mut self, now: Instant, lost: Failure) -> bool {
        let mut busy = false;
        while let Some(output) = self.requests.poll_output() {
            busy = true;
            match output {
                ExchangeOutput::Send {
                    key,
                    lease,
                    lane,
                    frame,
                } => {
                    let opened = self.send_on(lease.conn(), lane, &frame);
                    self.requests.handle_opened(now, key, lease, opened);
                }
                ExchangeOutput::Sent { key, slot } => self.dht_sent(now, key, slot.conn()),
                ExchangeOutput::Abandon(at) => self.abandon(at, STREAM_REFUSED),
                ExchangeOutput::Release(lease) => self.pool.release(now, lease),
                ExchangeOutput::Answered { key, slot, message } => {
                    self.dht_answered(now, key, slot, message)
                }
                ExchangeOutput::Failed { key, slot, why } => {
                    let failure = match why {
                        Unanswered::NotSent | Unanswered::ConnectionLost => lost,
                        Unanswered::TimedOut => {
                            self.counters.request_timeouts += 1;
                            if let Some(at) = slot.and_then(Slot::stream) {
                                self.abandon(at, STREAM_TIMED_OUT);
                            }
                            Failure::Refused
                        }
                        Unanswered::Unsendable | Unanswered::Refused | Unanswered::Reset => {
                            Failure::Refused
                        }
                    };
                    self.dht.handle_failure(now, key, failure);
                }
            }
        }
        busy
    }

    /// Writes a request on `conn`: on a new stream it finishes, or on the
    /// control stream.
    fn send_on(&mut self, conn: ConnId, lane: Lane, frame: &Message) -> Result<Slot, Unopened> {
        match lane {
            Lane::OwnStream => {
                let stream = self.open_stream(conn, Some(frame))?;
                if let Some((_, quic)) = self.pooled_conn(conn) {
                    quic.finish(stream);
                }
                Ok(Slot::Stream(StreamKey { conn, stream }))
            }
            Lane::Control { request_id } => {
                let (_, quic) = self.pooled_conn(conn).ok_or(Unopened::Gone)?;
                let control = quic.control.ok_or(Unopened::Gone)?;
                quic.send(control, frame, false)
                    .map_err(|_| Unopened::NotEncoded)?;
                Ok(Slot::Control { conn, request_id })
            }
        }
    }

    /// Resets both ways a stream of the connection with pool id `at.conn`.
    fn abandon(&mut self, at: StreamKey, code: quinn_proto::VarInt) {
        if let Some((_, quic)) = self.pooled_conn(at.conn) {
            quic.abandon(at.stream, code);
        }
    }

    /// DHT request `request_id` went out on `conn`: if that connection is
    /// up (CONNECT exchanged), the DHT's deadlines for it run from now;
    /// otherwise from when it comes up ([`Node::dht_requests_up`]).
    fn dht_sent(&mut self, now: Instant, request_id: RequestId, conn: ConnId) {
        if let Some((_, quic)) = self.pooled_conn(conn)
            && quic.hello.is_some()
        {
            let rtt = quic.quinn.rtt();
            self.dht.handle_sent(now, request_id, rtt);
        }
    }

    /// The connection with pool id `conn` (if pooled) came up with `rtt`:
    /// the DHT requests already out on it get their deadlines from now.
    pub(super) fn dht_requests_up(&mut self, now: Instant, conn: Option<ConnId>, rtt: Duration) {
        let Some(conn) = conn else {
            return;
        };
        let sent: Vec<RequestId> = self.requests.sent_on(conn).collect();
        for request_id in sent {
            self.dht.handle_sent(now, request_id, rtt);
        }
    }

    /// The answer to DHT request `request_id` came at `slot`.
    fn dht_answered(&mut self, now: Instant, request_id: RequestId, slot: Slot, message: Message) {
        let Some((_, quic)) = self.pooled_conn(slot.conn()) else {
            self.dht
                .handle_failure(now, request_id, Failure::Connection);
            return;
        };
        if let Some(at) = slot.stream() {
            quic.forget(at.stream);
        }
        let (peer, rtt) = (quic.peer, quic.quinn.rtt());
        match (peer, dht_wire::response_from_wire(message)) {
            (Some(peer), Some((id, response))) if id == request_id => {
                let unix_ms = self.unix_ms(now);
                self.dht.handle_rtt(peer, rtt);
                self.dht
                    .handle_response(now, unix_ms, &peer, request_id, response);
            }
            _ => {
                self.counters.protocol_errors += 1;
                self.dht.handle_failure(now, request_id, Failure::Refused);
            }
        }
    }

    /// The peer allows more streams on `handle`: the requests that waited go.
    pub(super) fn send_blocked(&mut self, handle: ConnectionHandle) {
        if let Some(id) = self.conns.get(&handle).and_then(|c| c.pool_id) {
            self.requests.handle_streams_available(id);
        }
    }

    /// A stream of `handle` was reset or stopped by the peer: the request on
    /// it, if one of ours, fails.
    pub(super) fn request_stream_gone(
        &mut self,
        handle: ConnectionHandle,
        stream: quinn_proto::StreamId,
        refused: bool,
    ) {
        if let Some(conn) = self.conns.get(&handle).and_then(|c| c.pool_id) {
            let at = StreamKey { conn, stream };
            self.requests.handle_stream_gone(at, refused);
        }
    }

    // ---- pool ----------------------------------------------------------------

    pub(super) fn drive_pool(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(action) = self.pool.poll_output() {
            busy = true;
            match action {
                Action::Connect { peer, addr, conn } => self.dial(now, peer, addr, conn),
                Action::Close { conn, reason, .. } => self.close_pooled(now, conn, reason),
                Action::Ready { wait, lease, .. } => match self.waiting.remove(&wait) {
                    Some(request_id) => self.requests.handle_leased(request_id, lease),
                    None if self.relay_client.owns(wait) => self.relay_wait_ready(now, wait, lease),
                    None => self.messaging_ready(now, wait, lease),
                },
                Action::Failed { wait, error } => match self.waiting.remove(&wait) {
                    Some(request_id) => self.requests.handle_unreachable(request_id),
                    None if self.relay_client.owns(wait) => {
                        self.relay_wait_failed(now, wait, error.to_string())
                    }
                    None => self.messaging_failed(now, wait),
                },
            }
        }
        busy
    }

    pub(super) fn dial(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, pool_id: ConnId) {
        // A virtual address is a circuit's (see `dial_via_relay`). One whose
        // circuit is gone leads nowhere, and so does one whose connection
        // moved to a punched path and then died (a redial of a lost pinned
        // connection): that path's NAT mappings died with it, and a handshake
        // sent there waits out the handshake timeout, attempt after attempt
        // (issue 17: 100 nodes, a publisher redialled a subscriber behind a
        // NAT four times, 40 s). Both fail at once, so the peer is reached
        // again the way it was first: through its record, a new circuit and
        // a new punch. Any other address is a UDP one.
        // The path of a closed circuit stays mapped while a connection over
        // it is closing: the circuit must be open too.
        let over_circuit = matches!(
            self.paths.real(&addr),
            Some(RealPath::Relay { relay, circuit }) if self.relay_client.has_end(&relay, circuit)
        );
        let virtual_addr = if over_circuit {
            addr
        } else if PathTable::is_virtual(&addr) {
            tracing::debug!(%peer, %addr, "dial at a virtual address with no live circuit");
            self.pool.handle_connect_failed_for_good(now, peer, pool_id);
            return;
        } else {
            self.paths.virtual_for(RealPath::Direct(addr))
        };
        let dialed = self
            .quic
            .client_config(peer, over_circuit)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                self.endpoint
                    .connect(now, config, virtual_addr, tls::SERVER_NAME)
                    .map_err(|e| e.to_string())
            });
        match dialed {
            Ok((handle, quinn)) => {
                let mut conn = Conn::new(
                    quinn,
                    Direction::Outbound,
                    Some(peer),
                    addr,
                    virtual_addr,
                    self.config.buffer_bounds(),
                );
                conn.connect_deadline = Some(now + self.config.handshake_timeout);
                conn.flight = self.quic.congestion.take_built();
                self.conns.insert(handle, conn);
                self.attach_pool_id(handle, pool_id);
            }
            Err(detail) => {
                tracing::debug!(%peer, %addr, %detail, "dial failed");
                self.instruments
                    .connection_error(now, crate::metrics::ConnectionErrorKind::Dial);
                self.pool.handle_connect_failed(now, peer, pool_id);
            }
        }
    }

    pub(super) fn close_pooled(&mut self, now: Instant, pool_id: ConnId, reason: CloseReason) {
        let Some(&handle) = self.by_pool_id.get(&pool_id) else {
            return;
        };
        let message = format!("{reason:?}");
        let cause = CloseCause::Local(message.clone());
        // docs/PROTOCOL.md §9.1: unused too long is `Idle`; the pool's other
        // reasons (room, a duplicate, an unwanted connect) are normal closes.
        let code = match reason {
            CloseReason::IdleTimeout => DisconnectReason::Idle,
            _ => DisconnectReason::Normal,
        };
        self.close_connection(now, handle, code, message, cause);
    }

    // ---- DHT ---------------------------------------------------------------

    pub(super) fn drive_dht(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(output) = self.dht.poll_output() {
            busy = true;
            match output {
                DhtOutput::Request {
                    request_id,
                    peer,
                    request,
                } => {
                    let frame = dht_wire::request_to_wire(request_id, request);
                    self.ask(now, peer, request_id, frame);
                }
                DhtOutput::Reply {
                    request_id,
                    peer,
                    response,
                } => {
                    self.answer(peer, request_id, response);
                }
                DhtOutput::Event(event) => {
                    self.instruments.dht_event(&event);
                    self.on_dht_event(now, event)
                }
            }
        }
        busy
    }

    /// Sends a DHT request to `peer`, connecting first if needed.
    pub(super) fn ask(
        &mut self,
        now: Instant,
        peer: dht::Contact,
        request_id: RequestId,
        frame: Message,
    ) {
        let lane = match &frame {
            Message::Ping(ping) => Lane::Control {
                request_id: ping.request_id,
            },
            _ => Lane::OwnStream,
        };
        if !self.requests.start(request_id, frame, lane) {
            return; // already under way
        }
        let Some(&addr) = peer.addrs.first() else {
            self.requests.handle_unreachable(request_id);
            return;
        };
        if self.waiting.len() >= self.config.max_waiting_requests {
            self.counters.waiting_overflow += 1;
            self.requests.handle_unreachable(request_id);
            return;
        }
        match self.pool.acquire(now, peer.id, addr) {
            Ok(Acquired::Ready(lease)) => self.requests.handle_leased(request_id, lease),
            Ok(Acquired::Waiting(wait)) => {
                self.waiting.insert(wait, request_id);
            }
            Err(error) => {
                tracing::debug!(peer = %peer.id, %error, "no connection for a DHT request");
                self.requests.handle_unreachable(request_id);
            }
        }
    }

    /// Writes the DHT's answer to a request we serve.
    pub(super) fn answer(&mut self, peer: NodeId, request_id: RequestId, response: dht::Response) {
        let asked = PeerRequest {
            peer,
            request_id: request_id.0,
        };
        let Some(serving) = self.serving.remove(&asked) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&serving.conn) else {
            return;
        };
        let frame = dht_wire::response_to_wire(request_id, response, serving.batch);
        conn.forget(serving.stream);
        if conn.send(serving.stream, &frame, true).is_err() {
            self.counters.protocol_errors += 1;
            conn.abandon(serving.stream, STREAM_REFUSED);
        }
    }
}
