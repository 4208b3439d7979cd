//! Connection life: handshake, the CONNECT exchange on the control
//! stream, reading streams within the buffer budget, refusals and closes,
//! and what a lost connection means for its requests and the pool.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ConnectionError, ConnectionHandle, Dir, StreamEvent, StreamId, VarInt};

use super::{CloseCause, Event, Node, Serving, instrument};
use crate::connection::STREAM_REFUSED;
use crate::connection::phase::{Admission, Arrival, PhaseEvent};
use crate::connection::router::{self, Owner};
use crate::connection::{Phase, PingVerdict, StreamRead, StreamTrouble};
use crate::contract::Output;
use crate::dht::wire as dht_wire;
use crate::dht::{self, Failure, Mode};
use crate::exchange::{PeerRequest, Slot, StreamKey};
use crate::id::NodeId;
use crate::path::{PathKind, PathTable, RealPath};
use crate::pool::{ConnId, Direction};
use crate::relay::CircuitLoss;
use crate::tls;
use crate::wire::{self, Capabilities, DisconnectReason, Message};

impl Node {
    /// Handles the pending events of every dirty connection (those touched
    /// since they were last driven); true when anything happened.
    pub(super) fn drive_connections(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(handle) = self.conns.next_dirty() {
            busy |= self.drive_connection(now, handle);
            self.conns.driven(handle);
        }
        busy
    }

    pub(super) fn drive_connection(&mut self, now: Instant, handle: ConnectionHandle) -> bool {
        let mut busy = false;
        loop {
            let Some(conn) = self.conns.get_mut(&handle) else {
                return busy;
            };
            while let Some(event) = conn.quinn.poll_endpoint_events() {
                busy = true;
                if let Some(back) = self.endpoint.handle_event(handle, event) {
                    conn.quinn.handle_event(back);
                }
            }
            let Some(event) = conn.quinn.poll() else {
                break;
            };
            busy = true;
            self.handle_connection_event(now, handle, event);
        }
        if self
            .conns
            .get(&handle)
            .is_some_and(|c| c.quinn.is_drained())
        {
            self.instruments.connection_ended(now, handle);
            self.forget_connection(handle);
            busy = true;
        }
        busy
    }

    pub(super) fn handle_connection_event(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        event: quinn_proto::Event,
    ) {
        match event {
            quinn_proto::Event::HandshakeDataReady => {}
            quinn_proto::Event::Connected => self.on_handshake_done(now, handle),
            quinn_proto::Event::ConnectionLost { reason } => {
                self.on_connection_lost(now, handle, reason)
            }
            quinn_proto::Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                self.accept_streams(now, handle);
            }
            quinn_proto::Event::Stream(StreamEvent::Readable { id }) => {
                // A peer's stream not yet accepted is read when it is.
                if self.stream_accepted(handle, id) {
                    self.on_readable(now, handle, id)
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Writable { id }) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.flush_stream(id);
                }
                self.publish_flushed(now, handle, id);
                self.resume_parked(now, handle);
            }
            quinn_proto::Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                self.send_blocked(handle);
                self.send_blocked_calls(now, handle);
            }
            quinn_proto::Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                // The peer will read nothing more: reset our side (RFC 9000 §3.5; quinn
                // leaves it to us), which also frees the stream's credit. A peer's stream
                // not yet accepted is reset when its answer meets the stop.
                if !self.stream_accepted(handle, id) {
                    return;
                }
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.abandon(id, error_code);
                }
                self.request_stream_gone(handle, id, error_code == STREAM_REFUSED);
                self.messaging_stream_gone(now, handle, id, Some(error_code));
            }
            quinn_proto::Event::Stream(StreamEvent::Finished { id }) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.control_delivered(now, id);
                }
            }
            quinn_proto::Event::Stream(_)
            | quinn_proto::Event::DatagramReceived
            | quinn_proto::Event::DatagramsUnblocked => {}
        }
    }

    /// QUIC is up: learn the peer, tell the pool, open the control stream.
    pub(super) fn on_handshake_done(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let certified = conn
            .quinn
            .crypto_session()
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| tls::peer_node_id(&chain).ok());
        let Some(peer) = certified else {
            self.refuse(
                now,
                handle,
                DisconnectReason::Unauthorized,
                "no usable certificate".into(),
            );
            return;
        };
        conn.peer = Some(peer);
        conn.step(PhaseEvent::HandshakeDone);
        let wait = self.config.connect_wait(conn.quinn.rtt());
        conn.connect_deadline = Some(now + wait);
        if conn.direction == Direction::Inbound
            && let Err(refusal) = self.admission.handshake_done(&mut conn.ticket, peer)
        {
            let detail = refusal.describe().to_string();
            self.refuse(now, handle, DisconnectReason::Overloaded, detail);
            return;
        }
        match conn.direction {
            Direction::Outbound => {
                // The dialer opens the control stream and says CONNECT, and
                // the pool hands the connection to waiting requests at once:
                // they leave right behind the CONNECT, and the acceptor holds
                // them until it has accepted it (no extra round trip).
                let hello = self.hello();
                let conn = self.conns.get_mut(&handle).expect("looked up above");
                if let Some(stream) = conn.open() {
                    conn.control = Some(stream);
                    conn.told = Some(hello.capabilities);
                    let _ = conn.send(stream, &Message::from(hello), false);
                }
                if let Some(pool_id) = conn.pool_id {
                    conn.pooled = true;
                    self.pool.handle_connected(now, peer, pool_id);
                }
                self.reach_key_conn(handle);
            }
            Direction::Inbound => self.accept_streams(now, handle),
        }
    }

    /// Our CONNECT.
    pub(super) fn hello(&self) -> wire::Connect {
        let mut capabilities = Capabilities::STORE_BATCH
            .with(Capabilities::CIRCUIT_PEER)
            .with(Capabilities::PUBLISH_BATCH);
        if self.dht.mode() == Mode::Server {
            capabilities = capabilities.with(Capabilities::DHT_SERVER);
        }
        if self.relay_server.serving() {
            capabilities = capabilities.with(Capabilities::RELAY);
        }
        if self.messaging.rpc().serves() {
            capabilities = capabilities.with(Capabilities::RPC);
        }
        if self.messaging.pubsub().subscribed() {
            capabilities = capabilities.with(Capabilities::PUBSUB);
        }
        wire::Connect {
            node_id: self.local,
            realm: self.config.realm.clone(),
            capabilities,
            listen_addrs: self.config.listen_addrs.clone(),
        }
    }

    /// Accepts the peer's streams: only the control stream until its
    /// CONNECT is accepted, every stream after.
    pub(super) fn accept_streams(&mut self, now: Instant, handle: ConnectionHandle) {
        loop {
            let Some(conn) = self.conns.get_mut(&handle) else {
                return;
            };
            let control_pending = conn.control.is_none() && conn.direction == Direction::Inbound;
            if !(control_pending || conn.phase == Phase::Ready) || conn.phase == Phase::Handshaking
            {
                return;
            }
            let Some(stream) = conn.accept_stream() else {
                return;
            };
            if control_pending {
                conn.control = Some(stream);
            }
            self.on_readable(now, handle, stream);
        }
    }

    /// Reads a stream, then the streams parked while the connection was
    /// over its buffer budget, as far as the budget allows.
    pub(super) fn on_readable(&mut self, now: Instant, handle: ConnectionHandle, stream: StreamId) {
        self.read_stream(now, handle, stream);
        self.resume_parked(now, handle);
    }

    /// Reads each stream parked on the connection once, as far as its
    /// budget and frame rate allow; a stream parked again meanwhile (more
    /// to read than one turn takes) waits for the next turn.
    pub(super) fn resume_parked(&mut self, now: Instant, handle: ConnectionHandle) {
        let share = self.buffer_share();
        let parked = self.conns.get(&handle).map_or(0, |c| c.parked());
        for _ in 0..parked {
            let Some(stream) = (self.conns.get_mut(&handle)).and_then(|c| c.unpark(now, share))
            else {
                return;
            };
            self.read_stream(now, handle, stream);
        }
    }

    /// Whether `stream` of connection `handle` is ours to touch
    /// ([`Conn::is_accepted`]).
    fn stream_accepted(&self, handle: ConnectionHandle, stream: StreamId) -> bool {
        self.conns
            .get(&handle)
            .is_some_and(|conn| conn.is_accepted(stream))
    }

    pub(super) fn read_stream(&mut self, now: Instant, handle: ConnectionHandle, stream: StreamId) {
        if let Some(side) = self.circuit_stream(handle, stream) {
            // Circuit frames are forwarded or handed to quinn as they come,
            // so they never wait in our buffers.
            self.read_circuit_stream(now, handle, stream, side);
            return;
        }
        let share = self.buffer_share();
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let is_control = conn.control == Some(stream);
        let gate = match (is_control, conn.phase) {
            // The control stream is read from the end of the handshake on;
            // each of its frames meets the phase rule on its own.
            (true, Phase::Handshaking) => Admission::Hold,
            (true, Phase::Closing) => Admission::Ignore,
            (true, _) => Admission::Dispatch,
            (false, phase) => phase.admit(Arrival::StreamData),
        };
        match gate {
            Admission::Dispatch => {}
            // Unread until the peer's CONNECT is accepted: the bytes wait
            // in QUIC's flow-control window, and the stream is read when
            // the connection becomes ready.
            Admission::Hold if !is_control => {
                conn.park(stream);
                return;
            }
            Admission::Hold | Admission::Ignore | Admission::Refuse => return,
        }
        if !conn.may_read(stream, share) {
            // A peer that sends without reading our answers (PONGs on the
            // control stream too), or trickles partial frames on many
            // streams, stops here: its bytes stay in QUIC's receive window
            // until we read again.
            conn.park(stream);
            return;
        }
        if conn.paced(now) {
            // The peer had its frame rate's worth: the rest waits (QUIC's
            // window slows it down) until the connection's deadline says.
            conn.park(stream);
            return;
        }
        let peer_opened = stream.initiator() != conn.quinn.side();
        let StreamRead {
            messages,
            finished,
            more,
            cut_short,
        } = match conn.read(stream, share) {
            Ok(read) => read,
            Err(StreamTrouble::Reset(code)) => {
                // The peer abandoned the stream: nothing will be answered on it either, so
                // our side is reset too (else the stream, and its credit, stay open).
                conn.abandon(stream, code);
                self.request_stream_gone(handle, stream, code == STREAM_REFUSED);
                self.messaging_stream_gone(now, handle, stream, None);
                return;
            }
            Err(StreamTrouble::Decode(error)) => {
                self.counters.protocol_errors += 1;
                let reason = match error.reaction() {
                    wire::Reaction::Disconnect(reason) => reason,
                    wire::Reaction::SkipFrame { .. } => DisconnectReason::ProtocolError,
                };
                self.refuse(now, handle, reason, error.to_string());
                return;
            }
            Err(StreamTrouble::Assembly(error)) => {
                self.counters.protocol_errors += 1;
                let reason = DisconnectReason::ProtocolError;
                self.refuse(now, handle, reason, error.to_string());
                return;
            }
        };
        conn.count_frames(now, messages.len());
        if more {
            // The rest is read at the next turn, after other work.
            conn.park(stream);
            conn.resume_at = Some(now);
        }
        for message in messages {
            if is_control {
                self.on_control_frame(now, handle, message);
            } else {
                self.on_stream_frame(now, handle, stream, message);
            }
        }
        if finished && is_control {
            self.refuse(
                now,
                handle,
                DisconnectReason::ProtocolError,
                "control stream finished".into(),
            );
        } else if cut_short && peer_opened {
            // Nothing to serve: the peer hears so (docs/PROTOCOL.md §7).
            self.misrouted(handle, stream);
        }
    }

    /// A frame on the control stream: the phase rule decides whether it is
    /// handled; the router names its owner.
    pub(super) fn on_control_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        message: Message,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let arrival = match message {
            Message::Connect(_) => Arrival::Connect,
            Message::Disconnect(_) => Arrival::Disconnect,
            _ => Arrival::ControlFrame,
        };
        match conn.phase.admit(arrival) {
            Admission::Dispatch => {}
            Admission::Hold | Admission::Ignore => return,
            Admission::Refuse => {
                let detail = match conn.phase {
                    Phase::Ready => format!("{} after CONNECT", message.message_type().name()),
                    _ => format!("{} before CONNECT", message.message_type().name()),
                };
                self.counters.protocol_errors += 1;
                self.refuse(now, handle, DisconnectReason::ProtocolError, detail);
                return;
            }
        }
        match message {
            Message::Connect(hello) => self.on_hello(now, handle, hello),
            Message::Disconnect(bye) => self.on_goodbye(now, handle, bye),
            Message::Ping(ping) => {
                let Some(stream) = conn.control else {
                    return;
                };
                let config = self.admission.config();
                let limits = (config.pings_per_second, config.pings_before_close);
                match conn.ping_verdict(now, limits) {
                    PingVerdict::Answer => {}
                    PingVerdict::Ignore => {
                        self.admission.ping_unanswered();
                        return;
                    }
                    PingVerdict::Flooding => {
                        self.admission.ping_unanswered();
                        self.admission.closed_flooding();
                        self.counters.protocol_errors += 1;
                        let detail = "PING flood".to_string();
                        self.refuse(now, handle, DisconnectReason::ProtocolError, detail);
                        return;
                    }
                }
                let pong = Message::from(wire::Pong {
                    request_id: ping.request_id,
                });
                let _ = conn.send(stream, &pong, false);
            }
            Message::Pong(pong) => {
                // An unsolicited PONG is ignored.
                if let Some(conn) = conn.pool_id {
                    let request_id = pong.request_id;
                    let slot = Slot::Control { conn, request_id };
                    let _ = self.requests.handle_answer(slot, Message::Pong(pong));
                }
            }
            other => match router::route(other.message_type()).owner {
                Owner::Reach => self.on_reach_frame(now, handle, other),
                Owner::Punch => self.on_punch_frame(now, handle, other),
                Owner::RelayClient => self.on_circuit_peer(handle, other),
                _ => {
                    self.counters.protocol_errors += 1;
                    let detail = format!("{} on the control stream", other.message_type().name());
                    self.refuse(now, handle, DisconnectReason::ProtocolError, detail);
                }
            },
        }
    }

    /// The peer's CONNECT: check it, answer it (acceptor), open for requests.
    pub(super) fn on_hello(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        hello: wire::Connect,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let Some(peer) = conn.peer else {
            return;
        };
        if hello.node_id != peer {
            let detail = format!(
                "CONNECT names {} but the certificate is {}",
                hello.node_id, peer
            );
            self.refuse(now, handle, DisconnectReason::Unauthorized, detail);
            return;
        }
        if hello.realm != self.config.realm {
            let detail = format!("realm {} is not {}", hello.realm, self.config.realm);
            self.refuse(now, handle, DisconnectReason::RealmMismatch, detail);
            return;
        }
        if conn.direction == Direction::Inbound {
            // Before the connection is ready (a change of capabilities is
            // told to the others; our answer names the new ones) and before
            // the requests held for this CONNECT are served.
            self.reach_unsolicited(now, handle);
        }
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let direction = conn.direction;
        let remote = conn.remote;
        let remote_virtual = conn.virtual_addr;
        conn.hello = Some(hello);
        conn.step(PhaseEvent::ConnectAccepted);
        self.admission.left_awaiting(&mut conn.ticket);
        self.instruments.connection_ready(now, handle, direction);
        if direction == Direction::Inbound {
            let answer = self.hello();
            if let Some(conn) = self.conns.get_mut(&handle)
                && let Some(control) = conn.control
            {
                conn.told = Some(answer.capabilities);
                let _ = conn.send(control, &Message::from(answer), false);
            }
            let pool_id = self.pool.handle_inbound(now, peer, remote);
            self.attach_pool_id(handle, pool_id);
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.pooled = true;
            }
            self.reach_key_conn(handle);
        } else {
            // What we serve may have changed since our CONNECT left.
            self.tell_capabilities(handle);
        }
        // The DHT learns the RTT, and the requests that went out on this
        // connection before it was up get their deadlines from now.
        if let Some(conn) = self.conns.get_mut(&handle) {
            let (rtt, pool_id) = (conn.quinn.rtt(), conn.pool_id);
            self.dht.handle_rtt(peer, rtt);
            self.dht_requests_up(now, pool_id, rtt);
        }
        let path = self.path_kind(&remote_virtual);
        self.instruments.connection_on_path(handle, path);
        if path == PathKind::Direct && self.relay_client.handle_relay_answered(&peer) {
            self.reach.handle_relay_answered(now, &peer);
        }
        if path == PathKind::Relayed {
            self.relay_client
                .handle_relayed_connection(now, remote_virtual);
            self.drive_relay(now);
        }
        self.out.push_back(Output::Event(Event::Connected {
            peer,
            direction,
            path,
        }));
        self.messaging.handle_peer_connected(now, peer);
        self.peer_ready(now, peer, remote);
        self.accept_streams(now, handle);
        // The streams held while the connection awaited CONNECT, in the
        // order they became readable.
        self.resume_parked(now, handle);
        self.upgrade_on_ready(now, handle);
    }

    pub(super) fn attach_pool_id(&mut self, handle: ConnectionHandle, pool_id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.pool_id = Some(pool_id);
            self.by_pool_id.insert(pool_id, handle);
        }
    }

    /// A frame on a request stream (the connection is ready): the router
    /// names its owner; a frame on the wrong kind of stream is refused.
    pub(super) fn on_stream_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        message: Message,
    ) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let route = router::route(message.message_type());
        let lane = router::stream_lane(stream.initiator() == conn.quinn.side());
        if route.lane != lane {
            self.misrouted(handle, stream);
            return;
        }
        let ours = conn
            .pool_id
            .map(|conn| Slot::Stream(StreamKey { conn, stream }));
        let unclaimed = match route.owner {
            Owner::Opener if ours.is_some_and(|slot| self.requests.awaits(slot)) => {
                ours.and_then(|slot| self.requests.handle_answer(slot, message))
            }
            Owner::Opener | Owner::RelayServer | Owner::RelayClient => self
                .relay_frame(now, handle, stream, message)
                .and_then(|m| self.messaging_frame(now, handle, stream, m)),
            Owner::Rpc | Owner::PubSub => self.messaging_frame(now, handle, stream, message),
            Owner::Dht => {
                self.serve_dht(now, handle, stream, message);
                None
            }
            Owner::Connection | Owner::Reach | Owner::Punch | Owner::Assembler => Some(message),
        };
        if unclaimed.is_some() {
            self.misrouted(handle, stream);
        }
    }

    /// A frame nobody takes on this stream: counted, and the stream is
    /// refused.
    fn misrouted(&mut self, handle: ConnectionHandle, stream: StreamId) {
        self.counters.protocol_errors += 1;
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.abandon(stream, STREAM_REFUSED);
        }
    }

    /// A DHT request to serve.
    fn serve_dht(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        message: Message,
    ) {
        let batch = matches!(message, Message::StoreBatch(_));
        let Some(from) = self.dht_inbound(handle) else {
            return;
        };
        let Some((request_id, request)) = dht_wire::request_from_wire(message) else {
            self.misrouted(handle, stream);
            return;
        };
        self.check_claims(now, handle, &from);
        self.serving.insert(
            PeerRequest {
                peer: from.id,
                request_id: request_id.0,
            },
            Serving {
                conn: handle,
                stream,
                batch,
            },
        );
        let unix_ms = self.unix_ms(now);
        self.dht
            .handle_request(now, unix_ms, &from, request_id, request);
    }

    /// Who a ready connection's peer is, as the DHT judges it
    /// (`dht::Inbound`: it hands out only what is verified). A relayed
    /// peer's `remote` is a virtual address, which means nothing to anyone
    /// else.
    pub(super) fn dht_inbound(&self, handle: ConnectionHandle) -> Option<dht::Inbound> {
        let conn = self.conns.get(&handle)?;
        let (peer, hello) = (conn.peer?, conn.hello.as_ref()?);
        Some(dht::Inbound {
            id: peer,
            server: hello.capabilities.contains(Capabilities::DHT_SERVER),
            claimed: hello.listen_addrs.clone(),
            source: Some(conn.remote).filter(|a| !PathTable::is_virtual(a)),
            proven: self.reach.proven_addrs(&peer).to_vec(),
        })
    }

    /// Closes the connections whose QUIC handshake did not end by the
    /// handshake deadline (counted; a dial of ours fails), and those whose
    /// peer's CONNECT did not come by the CONNECT deadline (docs/PROTOCOL.md
    /// §2): DISCONNECT `protocol error`. Only `due` connections (those whose
    /// deadline came) are looked at.
    pub(super) fn expire_connects(&mut self, now: Instant, due: &[ConnectionHandle]) {
        let overdue: Vec<(ConnectionHandle, Phase)> = due
            .iter()
            .filter_map(|handle| {
                let conn = self.conns.get(handle)?;
                conn.connect_overdue(now).then_some((*handle, conn.phase))
            })
            .collect();
        for (handle, phase) in overdue {
            if phase == Phase::Handshaking {
                self.counters.handshake_timeouts += 1;
                let timeout = self.config.handshake_timeout.as_millis();
                let detail = format!("no handshake within {timeout} ms");
                let cause = CloseCause::Transport(detail.clone());
                self.close_connection(now, handle, DisconnectReason::Normal, detail, cause);
                continue;
            }
            self.counters.protocol_errors += 1;
            let detail = format!(
                "no CONNECT within its deadline ({} ms, longer on a slow path)",
                self.config.connect_timeout.as_millis()
            );
            self.refuse(now, handle, DisconnectReason::ProtocolError, detail);
        }
    }

    /// Closes a connection whose peer broke the rules, telling it why (and
    /// counts it; a connection already closing is left as it is).
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: DisconnectReason,
        detail: String,
    ) {
        if self
            .conns
            .get(&handle)
            .is_none_or(|conn| conn.phase == Phase::Closing)
        {
            return;
        }
        let cause = CloseCause::Refused {
            reason,
            detail: detail.clone(),
        };
        self.instruments
            .connection_error(now, crate::metrics::ConnectionErrorKind::Refused);
        self.close_connection(now, handle, reason, detail, cause);
    }

    /// Closes a connection on purpose: DISCONNECT on the control stream,
    /// then QUIC's CONNECTION_CLOSE with the reason code, its requests
    /// failed and the pool told, and the application told `cause`.
    pub(super) fn close_connection(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: DisconnectReason,
        message: String,
        cause: CloseCause,
    ) {
        if self.say_goodbye(now, handle, reason, message) {
            self.release_closed(now, handle, cause);
        }
    }

    /// Writes DISCONNECT and starts closing (nothing more goes out on the
    /// connection after it); false when it was closing already.
    fn say_goodbye(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: DisconnectReason,
        message: String,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return false;
        };
        if conn.phase == Phase::Closing {
            return false;
        }
        let bye = Message::from(wire::Disconnect {
            reason,
            message: message.clone(),
        });
        let code = VarInt::from_u32(u32::from(reason.code()));
        conn.close_after_disconnect(now, &bye, code, Bytes::from(message.into_bytes()));
        conn.step(PhaseEvent::Close);
        self.admission.left_awaiting(&mut conn.ticket);
        true
    }

    /// A connection we are closing: its requests fail, the pool hears it
    /// and the application is told `cause`.
    fn release_closed(&mut self, now: Instant, handle: ConnectionHandle, cause: CloseCause) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let (peer, remote) = (conn.peer, conn.remote);
        self.release_requests(now, handle);
        self.out.push_back(Output::Event(Event::Disconnected {
            peer,
            remote,
            cause,
        }));
    }

    /// Closes every connection, telling each peer the node is shutting
    /// down. Every DISCONNECT is written before any connection's requests
    /// are released, so that what one release would send to another peer
    /// (a relayed circuit reset, say) never overtakes the DISCONNECT. Drain
    /// the transmits and keep driving the node until
    /// [`Node::connection_count`] is 0 (QUIC's closing period) for peers to
    /// hear it; a driver that cannot wait loses nothing but the courtesy.
    pub fn close_all(&mut self, now: Instant) {
        self.enter(now);
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        let closing: Vec<ConnectionHandle> = handles
            .into_iter()
            .filter(|&handle| {
                self.say_goodbye(now, handle, DisconnectReason::Shutdown, "shutdown".into())
            })
            .collect();
        for handle in closing {
            self.release_closed(now, handle, CloseCause::Local("shutdown".into()));
        }
        self.settle(now);
    }

    pub(super) fn on_connection_lost(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: ConnectionError,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let was_refused = conn.phase == Phase::Closing;
        if let Some(kind) = instrument::lost_error(conn.phase, &reason) {
            self.instruments.connection_error(now, kind);
        }
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        conn.step(PhaseEvent::Lost);
        let (peer, remote) = (conn.peer, conn.remote);
        let path = self.paths.real(&conn.virtual_addr);
        self.release_requests(now, handle);
        if !was_refused {
            let cause = match reason {
                ConnectionError::ApplicationClosed(close) => CloseCause::Peer {
                    reason: u8::try_from(close.error_code.into_inner())
                        .map(DisconnectReason::from_code)
                        .unwrap_or(DisconnectReason::ProtocolError),
                    message: String::from_utf8_lossy(&close.reason).into_owned(),
                },
                ConnectionError::LocallyClosed => CloseCause::Local("closed by this node".into()),
                ConnectionError::TimedOut => match path {
                    // Silence on a circuit: the relay or the peer is gone.
                    Some(RealPath::Relay { relay, .. }) => CloseCause::CircuitClosed {
                        relay,
                        loss: CircuitLoss::TimedOut,
                    },
                    _ => CloseCause::Transport(ConnectionError::TimedOut.to_string()),
                },
                other => CloseCause::Transport(other.to_string()),
            };
            self.report_lost(peer, remote, cause);
        }
    }

    /// The peer's DISCONNECT: the connection closes with its reason (echoed
    /// as our close code), its requests fail, and the application is told
    /// the peer's reason.
    fn on_goodbye(&mut self, now: Instant, handle: ConnectionHandle, bye: wire::Disconnect) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let kind = instrument::peer_close_error(conn.phase, bye.reason);
        conn.step(PhaseEvent::Close);
        self.admission.left_awaiting(&mut conn.ticket);
        let code = VarInt::from_u32(u32::from(bye.reason.code()));
        conn.quinn.close(now, code, Bytes::new());
        let (peer, remote) = (conn.peer, conn.remote);
        if let Some(kind) = kind {
            self.instruments.connection_error(now, kind);
        }
        self.release_requests(now, handle);
        let cause = CloseCause::Peer {
            reason: bye.reason,
            message: bye.message,
        };
        self.report_lost(peer, remote, cause);
    }

    /// Tells the application a connection is gone for `cause`; a peer
    /// shutting down also leaves the DHT's contacts.
    fn report_lost(&mut self, peer: Option<NodeId>, remote: SocketAddr, cause: CloseCause) {
        if let (Some(peer), CloseCause::Peer { reason, .. }) = (peer, &cause)
            && reason == &DisconnectReason::Shutdown
        {
            self.dht.handle_peer_left(&peer);
        }
        self.out.push_back(Output::Event(Event::Disconnected {
            peer,
            remote,
            cause,
        }));
    }

    /// Fails every request of a connection that is going away and tells the
    /// pool.
    pub(super) fn release_requests(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let (peer, pool_id, ready) = (conn.peer, conn.pool_id.take(), conn.pooled);
        // Requests lost with a relay circuit say nothing about the peer.
        let failure = match self.paths.real(&conn.virtual_addr) {
            Some(RealPath::Relay { .. }) => Failure::Path,
            _ => Failure::Connection,
        };
        self.instruments.connection_ended(now, handle);
        if let Some(pool_id) = pool_id {
            // Earlier outcomes first, then this connection's losses.
            self.drive_requests(now, Failure::Connection);
            self.requests.handle_conn_gone(pool_id);
            self.drive_requests(now, failure);
        }
        self.serving.retain(|_, serving| serving.conn != handle);
        self.release_messaging(now, handle, pool_id, peer);
        self.relay_connection_gone(now, pool_id);
        if let (Some(peer), Some(pool_id)) = (peer, pool_id) {
            self.by_pool_id.remove(&pool_id);
            if ready {
                self.pool.handle_closed(now, peer, pool_id);
                self.dht.handle_connection_closed(&peer);
            } else {
                self.pool.handle_connect_failed(now, peer, pool_id);
            }
        }
    }

    pub(super) fn forget_connection(&mut self, handle: ConnectionHandle) {
        let Some(mut conn) = self.conns.remove(&handle) else {
            return;
        };
        self.admission.release(std::mem::take(&mut conn.ticket));
        self.upgrade_forget(conn.pool_id);
        if let Some(pool_id) = conn.pool_id {
            self.reach.handle_peer_gone(pool_id);
        }
        let shared = self
            .conns
            .values()
            .any(|other| other.virtual_addr == conn.virtual_addr);
        if !shared {
            self.paths.remove(&conn.virtual_addr);
            self.direct_sockets.remove(&conn.virtual_addr);
            // Its circuits (the live one, or a backup after a switch) have
            // nothing left to carry.
            self.drop_circuits_of(conn.virtual_addr);
        }
    }
}
