//! The Node: every state machine of the crate behind one sans-IO
//! [`Machine`], speaking real QUIC (quinn-proto) with mutual TLS on one UDP
//! socket.
//!
//! The node owns the quinn-proto [`Endpoint`] (client and server at once),
//! its connections, the connection [`Pool`], the [`Dht`] and the [`PathTable`]
//! of virtual addresses. Datagrams come in through [`Machine::handle_input`]
//! and are split by first byte ([`crate::demux`]); QUIC packets reach quinn
//! under the peer's virtual address. After every input the node drains its
//! children in a loop (connections, pool, DHT) until none has anything left,
//! then gathers quinn's transmits, mapped back to real addresses, into its
//! output queue.
//!
//! Commands ([`Node::bootstrap`], [`Node::find_node`], [`Node::query`],
//! [`Node::store`], and RPC and pub/sub's [`Node::register`], [`Node::call`],
//! [`Node::subscribe`], [`Node::publish`] and the rest) are methods; like
//! inputs they take `now` and leave outputs to drain. RPC and pub/sub run
//! on the DHT and on streams as [`messaging`] describes.
//!
//! On every connection the dialer opens the control stream and writes
//! CONNECT; requests follow on their own streams at once. The acceptor checks
//! the CONNECT (node id = certificate, same realm), answers with its own, and
//! only then serves the connection's requests (docs/PROTOCOL.md §2).

mod config;
mod conn;
pub mod dht_wire;
mod messaging;
mod peers;
mod publish_streams;
mod rpc_streams;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, StreamEvent, StreamId, VarInt,
};

pub use config::NodeConfig;
use conn::{Ask, Blocked, Conn, Phase, StreamTrouble};
pub use peers::{PeersFileError, load_peers, save_peers};

use crate::collections::HashMap;
use crate::contract::{Datagram, Input, Machine, Output, Transmit};
use crate::demux::{DatagramClass, classify};
use crate::dht::{self, Dht, DhtEvent, DhtOutput, Failure, Mode, RequestId};
use crate::id::{Identity, NodeId, RecordKey};
use crate::path::{PathTable, RealPath};
use crate::pool::{
    Acquired, Action, CloseReason, ConnId, Direction, Lease, Pool, PoolError, WaitId,
};
use crate::pubsub::{PubSub, PubSubEvent};
use crate::quic::{QuicConfigError, QuicConfigs};
use crate::rpc::{Rpc, RpcEvent};
use crate::tls::{self, NodeTls, TlsError, WallClock};
use crate::wire::{self, Capabilities, DisconnectReason, Message};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The TLS material or policy is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The QUIC settings are unusable.
    #[error(transparent)]
    Quic(#[from] QuicConfigError),
    /// The pool settings are unusable.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Why a connection ended, as the application hears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// We closed it (pool eviction, idle timeout, duplicate).
    Local(String),
    /// The peer sent DISCONNECT or closed with an application code.
    Peer {
        /// The reason code.
        reason: DisconnectReason,
        /// The peer's words.
        message: String,
    },
    /// We refused the peer (wrong realm, node id not matching its
    /// certificate, protocol error).
    Refused {
        /// The reason code sent to the peer.
        reason: DisconnectReason,
        /// What was wrong.
        detail: String,
    },
    /// The handshake or the transport failed (TLS rejection, timeout, ...).
    Transport(String),
}

/// What the node tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection to `peer` is ready (both CONNECTs accepted).
    Connected {
        /// The peer.
        peer: NodeId,
        /// Who dialed.
        direction: Direction,
    },
    /// A connection ended.
    Disconnected {
        /// The peer, if it was known.
        peer: Option<NodeId>,
        /// Its real address.
        remote: SocketAddr,
        /// Why.
        cause: CloseCause,
    },
    /// A DHT operation finished.
    Dht(DhtEvent),
    /// A call of ours ended, or one of our procedures is called or
    /// cancelled.
    Rpc(RpcEvent),
    /// A message on a topic we subscribe to.
    PubSub(PubSubEvent),
}

/// Plain counters of what the node saw, for tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Datagrams handed to quinn.
    pub quic_datagrams: u64,
    /// STUN datagrams (not served yet) dropped.
    pub stun_dropped: u64,
    /// Datagrams of no known protocol dropped.
    pub unknown_dropped: u64,
    /// Requests whose answer never came in time (stream reset).
    pub request_timeouts: u64,
    /// Frames or streams that broke the protocol.
    pub protocol_errors: u64,
    /// Requests refused because too many were waiting.
    pub waiting_overflow: u64,
}

/// A request waiting for its connection.
struct Waiting {
    request_id: RequestId,
    frame: Message,
}

/// A DHT request we serve, waiting for the DHT's answer.
struct Serving {
    conn: ConnectionHandle,
    stream: StreamId,
    batch: bool,
}

/// A macula node.
pub struct Node {
    identity: Identity,
    local: NodeId,
    config: NodeConfig,
    quic: QuicConfigs,
    endpoint: Endpoint,
    clock: WallClock,
    start: Instant,
    start_unix_ms: u64,
    paths: PathTable,
    pool: Pool,
    dht: Dht,
    rpc: Rpc,
    pubsub: PubSub,
    messaging: messaging::Messaging,
    conns: HashMap<ConnectionHandle, Conn>,
    by_pool_id: HashMap<ConnId, ConnectionHandle>,
    waiting: HashMap<WaitId, Waiting>,
    serving: HashMap<(NodeId, u64), Serving>,
    out: VecDeque<Output<Event>>,
    counters: NodeCounters,
    last_now: Instant,
    next_timeout: Option<Instant>,
}

/// Application error codes on streams and connections.
const STREAM_TIMED_OUT: VarInt = VarInt::from_u32(0x100);
const STREAM_REFUSED: VarInt = VarInt::from_u32(0x101);

impl Node {
    /// A node with `identity`, taking its randomness from `seed`. `now` and
    /// `unix_ms` are the same moment on the monotonic and the wall clock;
    /// the node derives wall-clock time from the monotonic one after that.
    pub fn new(
        mut config: NodeConfig,
        identity: Identity,
        seed: u64,
        now: Instant,
        unix_ms: u64,
    ) -> Result<Self, NodeError> {
        let local = identity.node_id();
        let clock = WallClock::at(unix_ms / 1000);
        let tls = NodeTls::self_signed(&identity, config.verification.clone(), clock.clone())?;
        let quic = QuicConfigs::new(tls, &config.transport, seed)?;
        let endpoint = Endpoint::new(
            quic.endpoint.clone(),
            Some(quic.server.clone()),
            true,
            Some(quic.rng_seed),
        );
        config.pool.local = local;
        config.pool.seed = seed ^ 0x706f_6f6c; // "pool"
        let pool = Pool::new(config.pool.clone())?;
        let dht = Dht::new(config.dht.clone(), identity.clone(), seed ^ 0x0064_6874); // "dht"
        config.rpc.seed = seed ^ 0x0072_7063; // "rpc"
        config.pubsub.local_id = local;
        config.pubsub.first_epoch = unix_ms.saturating_mul(1000);
        let rpc = Rpc::new(config.rpc.clone());
        let pubsub = PubSub::new(config.pubsub.clone());
        Ok(Self {
            identity,
            local,
            config,
            quic,
            endpoint,
            clock,
            start: now,
            start_unix_ms: unix_ms,
            paths: PathTable::new(),
            pool,
            dht,
            rpc,
            pubsub,
            messaging: messaging::Messaging::default(),
            conns: HashMap::default(),
            by_pool_id: HashMap::default(),
            waiting: HashMap::default(),
            serving: HashMap::default(),
            out: VecDeque::new(),
            counters: NodeCounters::default(),
            last_now: now,
            next_timeout: None,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.local
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The contact others use to reach this node.
    pub fn contact(&self) -> dht::Contact {
        dht::Contact {
            id: self.local,
            addrs: self.config.listen_addrs.iter().copied().collect(),
        }
    }

    /// The peers in the routing table, to save with [`save_peers`] and pass
    /// to [`Node::bootstrap`] after a restart.
    pub fn known_peers(&self) -> Vec<dht::Contact> {
        self.dht.table().contacts().cloned().collect()
    }

    /// The DHT, to read its table, records and metrics.
    pub fn dht(&self) -> &Dht {
        &self.dht
    }

    /// The pool, to read its state and metrics.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What the node counted.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// Bytes held in the node's own per-connection buffers (partial frames
    /// and answers the peers have not read), over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(Conn::buffered).sum()
    }

    /// Number of live QUIC connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Joins the DHT through `seeds` (self-lookup, then bucket refreshes).
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<dht::Contact>) -> dht::QueryId {
        self.enter(now);
        let query = self.dht.bootstrap(now, seeds);
        self.settle(now);
        query
    }

    /// Looks up the nodes closest to `target`.
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> dht::QueryId {
        self.enter(now);
        let query = self.dht.find_node(now, target);
        self.settle(now);
        query
    }

    /// Looks up the records under `key` (`query_with_response`).
    pub fn query(&mut self, now: Instant, key: RecordKey, timeout: Duration) -> dht::QueryId {
        self.enter(now);
        let unix_ms = self.unix_ms(now);
        let query = self.dht.query_with_response(now, unix_ms, key, timeout);
        self.settle(now);
        query
    }

    /// Publishes a signed record of `value` under `key` and reports which
    /// nodes acknowledged it (`store_with_confirmation`).
    pub fn store(
        &mut self,
        now: Instant,
        key: RecordKey,
        value: Bytes,
        timeout: Duration,
    ) -> Result<dht::QueryId, dht::DhtError> {
        self.enter(now);
        let unix_ms = self.unix_ms(now);
        let query = self
            .dht
            .store_with_confirmation(now, unix_ms, key, value, timeout);
        self.settle(now);
        query
    }

    /// Wall-clock time at `now`, Unix milliseconds.
    fn unix_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Bookkeeping at the start of every input or command.
    fn enter(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.clock.set(self.unix_ms(now) / 1000);
    }

    /// Drains the children until none has anything left, then gathers
    /// transmits.
    fn settle(&mut self, now: Instant) {
        loop {
            let mut busy = self.drive_connections(now);
            busy |= self.drive_pool(now);
            busy |= self.drive_dht(now);
            busy |= self.drive_messaging(now);
            if !busy {
                break;
            }
        }
        self.gather_transmits(now);
        self.next_timeout = self.compute_timeout();
    }

    /// The earliest deadline of every child (quinn needs `&mut` to tell, so
    /// it is computed after each input and cached for `poll_timeout`).
    fn compute_timeout(&mut self) -> Option<Instant> {
        let conns = self
            .conns
            .values_mut()
            .flat_map(|c| [c.quinn.poll_timeout(), c.next_deadline()]);
        let conns: Option<Instant> = conns.flatten().min();
        let messaging = [self.rpc.poll_timeout(), self.pubsub.poll_timeout()];
        [conns, self.pool.poll_timeout(), self.dht.poll_timeout()]
            .into_iter()
            .chain(messaging)
            .flatten()
            .min()
    }

    // ---- datagrams -------------------------------------------------------

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        match classify(&datagram.payload) {
            DatagramClass::Quic => self.handle_quic(now, datagram),
            DatagramClass::Stun => self.counters.stun_dropped += 1,
            DatagramClass::Unknown => self.counters.unknown_dropped += 1,
        }
    }

    fn handle_quic(&mut self, now: Instant, datagram: Datagram) {
        self.counters.quic_datagrams += 1;
        let virtual_addr = self.paths.virtual_for(RealPath::Direct(datagram.remote));
        let mut buf = Vec::new();
        let data = BytesMut::from(&datagram.payload[..]);
        match self
            .endpoint
            .handle(now, virtual_addr, None, None, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.quinn.handle_event(event);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((handle, quinn)) => {
                        let conn = Conn::new(
                            quinn,
                            Direction::Inbound,
                            None,
                            datagram.remote,
                            virtual_addr,
                            self.config.limits,
                            self.config.connection_buffer_budget(),
                        );
                        self.conns.insert(handle, conn);
                    }
                    Err(error) => {
                        if let Some(transmit) = error.response {
                            self.push_endpoint_transmit(&transmit, &buf);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(transmit)) => self.push_endpoint_transmit(&transmit, &buf),
            None => {}
        }
    }

    fn push_endpoint_transmit(&mut self, transmit: &quinn_proto::Transmit, buf: &[u8]) {
        if let Some(RealPath::Direct(destination)) = self.paths.real(&transmit.destination) {
            self.out.push_back(Output::Transmit(Transmit {
                source: None,
                destination,
                payload: Bytes::copy_from_slice(&buf[..transmit.size]),
                ttl: None,
            }));
        }
    }

    fn gather_transmits(&mut self, now: Instant) {
        let mut buf = Vec::new();
        for conn in self.conns.values_mut() {
            loop {
                buf.clear();
                let Some(transmit) = conn.quinn.poll_transmit(now, 1, &mut buf) else {
                    break;
                };
                let Some(RealPath::Direct(destination)) = self.paths.real(&transmit.destination)
                else {
                    continue;
                };
                self.out.push_back(Output::Transmit(Transmit {
                    source: None,
                    destination,
                    payload: Bytes::copy_from_slice(&buf[..transmit.size]),
                    ttl: None,
                }));
            }
        }
    }

    // ---- connections -----------------------------------------------------

    /// Handles every connection's pending events; true when anything
    /// happened.
    fn drive_connections(&mut self, now: Instant) -> bool {
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        let mut busy = false;
        for handle in handles {
            busy |= self.drive_connection(now, handle);
        }
        busy
    }

    fn drive_connection(&mut self, now: Instant, handle: ConnectionHandle) -> bool {
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
            self.forget_connection(handle);
            busy = true;
        }
        busy
    }

    fn handle_connection_event(
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
                self.on_readable(now, handle, id)
            }
            quinn_proto::Event::Stream(StreamEvent::Writable { id }) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.flush_stream(id);
                }
                self.publish_flushed(now, handle, id);
                self.resume_parked(now, handle);
            }
            quinn_proto::Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                self.send_blocked(now, handle);
                self.send_blocked_calls(now, handle);
            }
            quinn_proto::Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                self.fail_ask(now, handle, id, Failure::Refused);
                self.messaging_stream_gone(now, handle, id, Some(error_code));
            }
            quinn_proto::Event::Stream(_)
            | quinn_proto::Event::DatagramReceived
            | quinn_proto::Event::DatagramsUnblocked => {}
        }
    }

    /// QUIC is up: learn the peer, tell the pool, open the control stream.
    fn on_handshake_done(&mut self, now: Instant, handle: ConnectionHandle) {
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
        conn.phase = Phase::AwaitingConnect;
        match conn.direction {
            Direction::Outbound => {
                // The dialer opens the control stream and says CONNECT, and
                // the pool hands the connection to waiting requests at once:
                // they leave right behind the CONNECT, and the acceptor holds
                // them until it has accepted it (no extra round trip).
                let hello = Message::from(self.hello());
                let conn = self.conns.get_mut(&handle).expect("looked up above");
                if let Some(stream) = conn.open() {
                    conn.control = Some(stream);
                    let _ = conn.send(stream, &hello, false);
                }
                if let Some(pool_id) = conn.pool_id {
                    conn.pooled = true;
                    self.pool.handle_connected(now, peer, pool_id);
                }
            }
            Direction::Inbound => self.accept_streams(now, handle),
        }
    }

    /// Our CONNECT.
    fn hello(&self) -> wire::Connect {
        let mut capabilities = Capabilities::STORE_BATCH;
        if self.config.dht.mode == Mode::Server {
            capabilities = capabilities.with(Capabilities::DHT_SERVER);
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
    fn accept_streams(&mut self, now: Instant, handle: ConnectionHandle) {
        loop {
            let Some(conn) = self.conns.get_mut(&handle) else {
                return;
            };
            let control_pending = conn.control.is_none() && conn.direction == Direction::Inbound;
            if !(control_pending || conn.phase == Phase::Ready) || conn.phase == Phase::Handshaking
            {
                return;
            }
            let Some(stream) = conn.quinn.streams().accept(Dir::Bi) else {
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
    fn on_readable(&mut self, now: Instant, handle: ConnectionHandle, stream: StreamId) {
        self.read_stream(now, handle, stream);
        self.resume_parked(now, handle);
    }

    fn resume_parked(&mut self, now: Instant, handle: ConnectionHandle) {
        while let Some(stream) = self.conns.get_mut(&handle).and_then(Conn::unpark) {
            self.read_stream(now, handle, stream);
        }
    }

    fn read_stream(&mut self, now: Instant, handle: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let is_control = conn.control == Some(stream);
        if !is_control && conn.over_budget() {
            // A peer that sends without reading our answers, or trickles
            // partial frames on many streams, stops here: its bytes stay in
            // QUIC's receive window until we read again.
            conn.park(stream);
            return;
        }
        let (messages, finished) = match conn.read(stream) {
            Ok(read) => read,
            Err(StreamTrouble::Reset) => {
                self.fail_ask(now, handle, stream, Failure::Refused);
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
        };
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
        }
    }

    fn on_control_frame(&mut self, now: Instant, handle: ConnectionHandle, message: Message) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        match (conn.phase, message) {
            (Phase::AwaitingConnect, Message::Connect(hello)) => self.on_hello(now, handle, hello),
            (Phase::Ready, Message::Ping(ping)) => {
                let stream = conn
                    .control
                    .expect("control frames arrive on the control stream");
                let pong = Message::from(wire::Pong {
                    request_id: ping.request_id,
                });
                let _ = conn.send(stream, &pong, false);
            }
            (Phase::Ready, Message::Pong(pong)) => {
                if let Some(ask) = conn.pings.remove(&pong.request_id) {
                    let peer = conn.peer.expect("ready connections know their peer");
                    let rtt = conn.quinn.rtt();
                    self.pool.release(now, ask.lease);
                    let unix_ms = self.unix_ms(now);
                    self.dht.handle_rtt(now, peer, rtt);
                    self.dht.handle_response(
                        now,
                        unix_ms,
                        &peer,
                        ask.request_id,
                        dht::Response::Pong,
                    );
                }
            }
            (_, Message::Disconnect(bye)) => {
                conn.phase = Phase::Closing;
                let code = VarInt::from_u32(u32::from(bye.reason.code()));
                conn.quinn.close(now, code, Bytes::new());
            }
            (_, other) => {
                let detail = format!("{} on the control stream", other.message_type().name());
                self.refuse(now, handle, DisconnectReason::ProtocolError, detail);
            }
        }
    }

    /// The peer's CONNECT: check it, answer it (acceptor), open for requests.
    fn on_hello(&mut self, now: Instant, handle: ConnectionHandle, hello: wire::Connect) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let peer = conn.peer.expect("the handshake set the peer");
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
        let direction = conn.direction;
        let remote = conn.remote;
        conn.hello = Some(hello);
        conn.phase = Phase::Ready;
        if direction == Direction::Inbound {
            let answer = Message::from(self.hello());
            let conn = self.conns.get_mut(&handle).expect("looked up above");
            let control = conn
                .control
                .expect("the CONNECT came on the control stream");
            let _ = conn.send(control, &answer, false);
            let pool_id = self.pool.handle_inbound(now, peer, remote);
            self.attach_pool_id(handle, pool_id);
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.pooled = true;
            }
        }
        // The DHT re-arms the waits of lookups that waited for this
        // connection: from now on they wait one exchange plus slack.
        let rtt = self.conns.get_mut(&handle).map(|c| c.quinn.rtt());
        if let Some(rtt) = rtt {
            self.dht.handle_rtt(now, peer, rtt);
        }
        self.out
            .push_back(Output::Event(Event::Connected { peer, direction }));
        self.pubsub.handle_connected(now, peer);
        self.accept_streams(now, handle);
    }

    fn attach_pool_id(&mut self, handle: ConnectionHandle, pool_id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.pool_id = Some(pool_id);
            self.by_pool_id.insert(pool_id, handle);
        }
    }

    /// A frame on a request stream: a request to serve or an answer to ours.
    fn on_stream_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        message: Message,
    ) {
        let Some(message) = self.messaging_frame(now, handle, stream, message) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let peer = conn.peer.expect("streams are read after the handshake");
        if let Some(ask) = conn.asks.remove(&stream) {
            conn.forget(stream);
            let rtt = conn.quinn.rtt();
            self.pool.release(now, ask.lease);
            match dht_wire::response_from_wire(message) {
                Some((request_id, response)) if request_id == ask.request_id => {
                    let unix_ms = self.unix_ms(now);
                    self.dht.handle_rtt(now, peer, rtt);
                    self.dht
                        .handle_response(now, unix_ms, &peer, request_id, response);
                }
                _ => {
                    self.counters.protocol_errors += 1;
                    self.dht
                        .handle_failure(now, ask.request_id, Failure::Refused);
                }
            }
            return;
        }
        let batch = matches!(message, Message::StoreBatch(_));
        let Some((request_id, request)) = dht_wire::request_from_wire(message) else {
            self.counters.protocol_errors += 1;
            conn.abandon(stream, STREAM_REFUSED);
            return;
        };
        let hello = conn
            .hello
            .as_ref()
            .expect("requests are served after CONNECT");
        let from_server = hello.capabilities.contains(Capabilities::DHT_SERVER);
        let mut contact = dht::Contact {
            id: peer,
            addrs: hello.listen_addrs.iter().copied().collect(),
        };
        if contact.addrs.is_empty() {
            contact.addrs.push(conn.remote);
        }
        self.serving.insert(
            (peer, request_id.0),
            Serving {
                conn: handle,
                stream,
                batch,
            },
        );
        let unix_ms = self.unix_ms(now);
        self.dht
            .handle_request(now, unix_ms, &contact, from_server, request_id, request);
    }

    /// Closes a connection whose peer broke the rules, telling it why.
    fn refuse(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: DisconnectReason,
        detail: String,
    ) {
        let cause = CloseCause::Refused {
            reason,
            detail: detail.clone(),
        };
        self.close_connection(now, handle, reason, detail, cause);
    }

    /// Closes a connection on purpose: DISCONNECT on the control stream,
    /// then QUIC's CONNECTION_CLOSE with the reason code, its requests
    /// failed and the pool told, and the application told `cause`.
    fn close_connection(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: DisconnectReason,
        message: String,
        cause: CloseCause,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        if let Some(control) = conn.control {
            let bye = Message::from(wire::Disconnect {
                reason,
                message: message.clone(),
            });
            let _ = conn.send(control, &bye, true);
        }
        conn.phase = Phase::Closing;
        let code = VarInt::from_u32(u32::from(reason.code()));
        conn.quinn
            .close(now, code, Bytes::from(message.into_bytes()));
        let (peer, remote) = (conn.peer, conn.remote);
        self.release_requests(now, handle);
        self.out.push_back(Output::Event(Event::Disconnected {
            peer,
            remote,
            cause,
        }));
    }

    /// Closes every connection, telling each peer the node is shutting
    /// down. Drain the transmits and keep driving the node until
    /// [`Node::connection_count`] is 0 (QUIC's closing period) for peers to
    /// hear it; a driver that cannot wait loses nothing but the courtesy.
    pub fn close_all(&mut self, now: Instant) {
        self.enter(now);
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for handle in handles {
            let cause = CloseCause::Local("shutdown".into());
            self.close_connection(
                now,
                handle,
                DisconnectReason::Shutdown,
                "shutdown".into(),
                cause,
            );
        }
        self.settle(now);
    }

    fn on_connection_lost(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        reason: ConnectionError,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let was_refused = conn.phase == Phase::Closing;
        conn.phase = Phase::Closing;
        let (peer, remote) = (conn.peer, conn.remote);
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
                other => CloseCause::Transport(other.to_string()),
            };
            self.out.push_back(Output::Event(Event::Disconnected {
                peer,
                remote,
                cause,
            }));
        }
    }

    /// Fails every request of a connection that is going away and tells the
    /// pool.
    fn release_requests(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let requests = conn.take_requests();
        let (peer, pool_id, ready) = (conn.peer, conn.pool_id.take(), conn.pooled);
        for (request_id, lease) in requests {
            self.pool.release(now, lease);
            self.dht
                .handle_failure(now, request_id, Failure::Connection);
        }
        self.serving.retain(|_, serving| serving.conn != handle);
        self.release_messaging(now, handle, peer);
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

    fn forget_connection(&mut self, handle: ConnectionHandle) {
        let Some(conn) = self.conns.remove(&handle) else {
            return;
        };
        let shared = self
            .conns
            .values()
            .any(|other| other.virtual_addr == conn.virtual_addr);
        if !shared {
            self.paths.remove(&conn.virtual_addr);
        }
    }

    // ---- requests ----------------------------------------------------------

    /// Sends a request over a leased connection.
    fn send_request(&mut self, now: Instant, lease: Lease, request_id: RequestId, frame: Message) {
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
    fn send_blocked(&mut self, now: Instant, handle: ConnectionHandle) {
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
    fn fail_ask(
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

    /// Resets the streams whose answers are overdue.
    fn expire_requests(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (&handle, conn) in &mut self.conns {
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

    fn drive_pool(&mut self, now: Instant) -> bool {
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
                    None => self.messaging_ready(now, wait, lease),
                },
                Action::Failed { wait, .. } => match self.waiting.remove(&wait) {
                    Some(waiting) => {
                        self.dht
                            .handle_failure(now, waiting.request_id, Failure::Connection);
                    }
                    None => self.messaging_failed(now, wait),
                },
            }
        }
        busy
    }

    fn dial(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, pool_id: ConnId) {
        let virtual_addr = self.paths.virtual_for(RealPath::Direct(addr));
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
                    self.config.limits,
                    self.config.connection_buffer_budget(),
                );
                self.conns.insert(handle, conn);
                self.attach_pool_id(handle, pool_id);
            }
            Err(detail) => {
                tracing::debug!(%peer, %addr, %detail, "dial failed");
                self.pool.handle_connect_failed(now, peer, pool_id);
            }
        }
    }

    fn close_pooled(&mut self, now: Instant, pool_id: ConnId, reason: CloseReason) {
        let Some(&handle) = self.by_pool_id.get(&pool_id) else {
            return;
        };
        let message = format!("{reason:?}");
        let cause = CloseCause::Local(message.clone());
        self.close_connection(now, handle, DisconnectReason::Normal, message, cause);
    }

    // ---- DHT ---------------------------------------------------------------

    fn drive_dht(&mut self, now: Instant) -> bool {
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
                DhtOutput::Event(event) => self.on_dht_event(now, event),
            }
        }
        busy
    }

    /// Sends a DHT request to `peer`, connecting first if needed.
    fn ask(&mut self, now: Instant, peer: dht::Contact, request_id: RequestId, frame: Message) {
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
    fn answer(&mut self, peer: NodeId, request_id: RequestId, response: dht::Response) {
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

impl Machine for Node {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Input) {
        self.enter(now);
        match input {
            Input::Datagram(datagram) => self.handle_datagram(now, datagram),
            Input::Timeout => {
                for conn in self.conns.values_mut() {
                    if conn.quinn.poll_timeout().is_some_and(|t| t <= now) {
                        conn.quinn.handle_timeout(now);
                    }
                }
                self.expire_requests(now);
                self.pool.handle_timeout(now);
                let unix_ms = self.unix_ms(now);
                self.dht.handle_timeout(now, unix_ms);
                self.rpc.handle_timeout(now);
                self.pubsub.handle_timeout(now);
            }
            Input::LocalAddressChanged { .. } => {}
        }
        self.settle(now);
    }

    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(self.last_now);
        }
        self.next_timeout
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.local)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}
