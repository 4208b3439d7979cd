//! Requests over pooled connections: the pool's actions (dial, close,
//! lease ready or failed), DHT requests sent on streams of their own, DHT
//! answers written back, and deadlines for answers that never come.

use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{ConnectionHandle, StreamId};

use super::conn::{Ask, Blocked, Conn};
use super::{CloseCause, Node, STREAM_REFUSED, STREAM_TIMED_OUT, Waiting, dht_wire};
use crate::contract::Child;
use crate::dht::{self, DhtOutput, Failure, RequestId};
use crate::id::NodeId;
use crate::path::{PathTable, RealPath};
use crate::pool::{Acquired, Action, CloseReason, ConnId, Direction, Lease};
use crate::tls;
use crate::wire::{DisconnectReason, Message};

impl Node {
    /// Sends a request over a leased connection.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        lease: Lease,
        request_id: RequestId,
        frame: Message,
    ) {
        let Some(&handle) = self.by_pool_id.get(&lease.conn()) else {
            self.pool.release(now, lease);
            self.dht
                .handle_failure(now, request_id, Failure::Connection);
            return;
        };
        let deadline = now + self.config.request_timeout;
        let conn = self
            .conns
            .get_mut(&handle)
            .expect("pooled connections are live");
        if let Message::Ping(ping) = &frame {
            let control = conn
                .control
                .expect("pooled connections have a control stream");
            let id = ping.request_id;
            let _ = conn.send(control, &frame, false);
            conn.pings.insert(
                id,
                Ask {
                    request_id,
                    lease,
                    deadline,
                },
            );
            return;
        }
        let Some(stream) = conn.open() else {
            conn.blocked.push_back(Blocked {
                frame,
                request_id,
                lease,
            });
            return;
        };
        match conn.send(stream, &frame, true) {
            Ok(()) => {
                conn.asks.insert(
                    stream,
                    Ask {
                        request_id,
                        lease,
                        deadline,
                    },
                );
            }
            Err(_) => {
                conn.abandon(stream, STREAM_REFUSED);
                self.pool.release(now, lease);
                self.dht.handle_failure(now, request_id, Failure::Refused);
            }
        }
    }

    /// The peer allows more streams: send what waited.
    pub(super) fn send_blocked(&mut self, now: Instant, handle: ConnectionHandle) {
        while let Some(conn) = self.conns.get_mut(&handle) {
            let Some(blocked) = conn.blocked.pop_front() else {
                return;
            };
            let before = conn.blocked.len();
            self.send_request(now, blocked.lease, blocked.request_id, blocked.frame);
            if self
                .conns
                .get(&handle)
                .is_some_and(|c| c.blocked.len() > before)
            {
                return; // still no stream
            }
        }
    }

    /// A request stream we opened failed.
    pub(super) fn fail_ask(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        failure: Failure,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let Some(ask) = conn.asks.remove(&stream) else {
            return;
        };
        conn.forget(stream);
        self.pool.release(now, ask.lease);
        self.dht.handle_failure(now, ask.request_id, failure);
    }

    /// Resets the streams of the `due` connections whose answers are
    /// overdue.
    pub(super) fn expire_requests(&mut self, now: Instant, due: &[ConnectionHandle]) {
        let mut expired = Vec::new();
        for &handle in due {
            let Some(conn) = self.conns.get_mut(&handle) else {
                continue;
            };
            let overdue: Vec<StreamId> = conn
                .asks
                .iter()
                .filter(|(_, ask)| ask.deadline <= now)
                .map(|(s, _)| *s)
                .collect();
            for stream in overdue {
                let ask = conn.asks.remove(&stream).expect("listed above");
                conn.abandon(stream, STREAM_TIMED_OUT);
                expired.push((handle, ask));
            }
            let overdue: Vec<u64> = conn
                .pings
                .iter()
                .filter(|(_, ask)| ask.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in overdue {
                expired.push((handle, conn.pings.remove(&id).expect("listed above")));
            }
        }
        for (_, ask) in expired {
            self.counters.request_timeouts += 1;
            self.pool.release(now, ask.lease);
            self.dht
                .handle_failure(now, ask.request_id, Failure::Refused);
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
                    Some(waiting) => {
                        self.send_request(now, lease, waiting.request_id, waiting.frame)
                    }
                    None if self.relay_client.owns(wait) => self.relay_wait_ready(now, wait, lease),
                    None => self.messaging_ready(now, wait, lease),
                },
                Action::Failed { wait, error } => match self.waiting.remove(&wait) {
                    Some(waiting) => {
                        self.dht
                            .handle_failure(now, waiting.request_id, Failure::Connection);
                    }
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
        // A live virtual address is a circuit's (see `dial_via_relay`);
        // a virtual address whose circuit is gone leads nowhere; any other
        // address is a UDP one.
        let virtual_addr = match self.paths.real(&addr) {
            Some(_) => addr,
            None if PathTable::is_virtual(&addr) => {
                tracing::debug!(%peer, %addr, "dial over a circuit that is gone");
                self.pool.handle_connect_failed(now, peer, pool_id);
                return;
            }
            None => self.paths.virtual_for(RealPath::Direct(addr)),
        };
        let dialed = self
            .quic
            .client_config(peer)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                self.endpoint
                    .connect(now, config, virtual_addr, tls::SERVER_NAME)
                    .map_err(|e| e.to_string())
            });
        match dialed {
            Ok((handle, quinn)) => {
                let conn = Conn::new(
                    quinn,
                    Direction::Outbound,
                    Some(peer),
                    addr,
                    virtual_addr,
                    self.config.buffer_bounds(),
                );
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
        self.close_connection(now, handle, DisconnectReason::Normal, message, cause);
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
        let Some(&addr) = peer.addrs.first() else {
            self.dht
                .handle_failure(now, request_id, Failure::Connection);
            return;
        };
        if self.waiting.len() >= self.config.max_waiting_requests {
            self.counters.waiting_overflow += 1;
            self.dht
                .handle_failure(now, request_id, Failure::Connection);
            return;
        }
        match self.pool.acquire(now, peer.id, addr) {
            Ok(Acquired::Ready(lease)) => self.send_request(now, lease, request_id, frame),
            Ok(Acquired::Waiting(wait)) => {
                self.waiting.insert(wait, Waiting { request_id, frame });
            }
            Err(error) => {
                tracing::debug!(peer = %peer.id, %error, "no connection for a DHT request");
                self.dht
                    .handle_failure(now, request_id, Failure::Connection);
            }
        }
    }

    /// Writes the DHT's answer to a request we serve.
    pub(super) fn answer(&mut self, peer: NodeId, request_id: RequestId, response: dht::Response) {
        let Some(serving) = self.serving.remove(&(peer, request_id.0)) else {
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
