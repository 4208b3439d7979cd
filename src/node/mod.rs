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
//! output queue. Only the connections an input touched are driven
//! (src/connection/table.rs), so the work grows with the input, not with the
//! connections open.
//!
//! Commands ([`Node::bootstrap`], [`Node::find_node`], [`Node::query`],
//! [`Node::store`], and RPC and pub/sub's [`Node::register`], [`Node::call`],
//! [`Node::subscribe`], [`Node::publish`], the relay's [`Node::reserve`] and
//! [`Node::dial_via_relay`], and the rest) are methods; like
//! inputs they take `now` and leave outputs to drain. RPC and pub/sub are
//! the [`crate::messaging`] child; src/node/messaging_effects.rs carries out
//! what it asks for on the DHT and on streams.
//! Every node may relay for others (by default only while it is public) and
//! run connections over relay circuits
//! (the [`crate::relay`] children, glued in src/node/relay.rs,
//! docs/PROTOCOL.md §11); reachability is the [`crate::nat::reach`] child
//! and the relay → direct upgrade the [`crate::path::upgrade`] child. No
//! child sees the Node: each asks for effects through its output enum.
//!
//! On every connection the dialer opens the control stream and writes
//! CONNECT; requests follow on their own streams at once. Each side reads
//! nothing but the control stream, and acts on nothing there but CONNECT
//! and DISCONNECT, until it has accepted the peer's CONNECT (node id =
//! certificate, same realm); then the held streams are read and every frame
//! goes to its owner through one router (src/connection/phase.rs,
//! src/connection/router.rs, docs/PROTOCOL.md §2).

mod config;
mod connections;
mod control;
mod datagrams;
mod dial;
mod errands;
mod health;
mod instrument;
mod local_addrs;
mod messaging;
mod messaging_effects;
mod peers;
mod portmap;
mod probes;
mod reach;
mod relay;
mod requests;
mod silence;
mod upgrade;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Endpoint, StreamId};

pub use crate::relay::{CircuitLoss, RelayEvent};
pub use config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, NodeConfig};
pub use health::{ERROR_WINDOW, Health, HealthReason, MIN_STORE_SUCCESS_RATE, NodeStats};
pub use peers::{PeersFileError, load_peers, save_peers};

use crate::collections::HashMap;
use crate::connection::admission::{AdmissionControl, AdmissionCounters};
use crate::connection::{Beat, ConnTable, Phase};
use crate::contract::{Child, Input, Machine, Output};
use crate::dht::{self, Dht, DhtEvent, Failure, RequestId};
use crate::exchange::{Exchanges, PeerRequest};
use crate::id::{Identity, NodeId, RecordKey};
use crate::messaging::Messaging;
use crate::nat::portmap::PortMapper;
pub use crate::nat::reach::{
    MAX_CONTACTED, MAX_HELPERS, MAX_PROBE_ADDRS, PROBE_COPIES, ProbeRefusal, ReachConfig,
    ReachStats,
};
use crate::nat::reach::{Reach, ReachSetup};
use crate::path::upgrade::Upgrades;
pub use crate::path::upgrade::{
    MAX_TIMES, OFFER_TIMEOUT, PairCounts, PathChange, UpgradeConfig, UpgradeCounters,
};
use crate::path::{PathKind, PathTable, RetryHolds};
use crate::pool::{ConnId, Direction, Pool, PoolError, WaitId};
use crate::pubsub::PubSubEvent;
use crate::quic::{QuicConfigError, QuicConfigs};
use crate::relay::{RelayClient, RelayServer};
use crate::rpc::RpcEvent;
use crate::scope::AddressPolicy;
use crate::secret::Secret;
use crate::tls::{NodeTls, TlsError, WallClock};
use crate::wire::DisconnectReason;

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
    /// The connection ran over a relay circuit that closed.
    CircuitClosed {
        /// The relay.
        relay: NodeId,
        /// Why the circuit closed.
        loss: CircuitLoss,
    },
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
        /// Whether its packets go direct or through a relay circuit.
        path: PathKind,
    },
    /// A connection ended.
    Disconnected {
        /// The peer, if it was known.
        peer: Option<NodeId>,
        /// Its real address (the virtual address of its circuit, for a
        /// connection over a relay).
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
    /// NAT discovery finished a run ([`Node::discover`], or on its own).
    Nat(crate::nat::discovery::NatReport),
    /// The gateway mapped our socket, the mapping was lost, or asking
    /// failed ([`NodeConfig::port_mapping`]).
    PortMapping(crate::nat::portmap::MapEvent),
    /// A [`Node::find_peer_record`] lookup ended.
    PeerRecord {
        /// The lookup.
        query: dht::QueryId,
        /// Whose record was looked up.
        node: NodeId,
        /// Its newest acceptable record, if any was found.
        record: Option<crate::peer_record::PeerRecord>,
    },
    /// A reservation or circuit of ours changed.
    Relay(RelayEvent),
    /// A connection's packets moved between a relay circuit and a direct path.
    PathChanged {
        /// The peer.
        peer: NodeId,
        /// Where they go now.
        path: PathKind,
        /// Why.
        reason: PathChange,
    },
}

/// Plain counters of what the node saw, for tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Datagrams handed to quinn.
    pub quic_datagrams: u64,
    /// STUN datagrams dropped: indications, or requests while the
    /// responder is off.
    pub stun_dropped: u64,
    /// Datagrams of no known protocol dropped.
    pub unknown_dropped: u64,
    /// Requests whose answer never came in time (stream reset).
    pub request_timeouts: u64,
    /// Frames or streams that broke the protocol.
    pub protocol_errors: u64,
    /// Requests refused because too many were waiting.
    pub waiting_overflow: u64,
    /// Connections driven, counted once per input that drove them (their
    /// events handled, their transmits gathered, their deadline filed
    /// anew). Only connections an input touched (a datagram for them, a due
    /// timer, a stream written) are driven, so this grows with the work
    /// done, not with the connections open.
    pub connection_polls: u64,
    /// Connections that followed their peer to a new address (NAT
    /// rebinding, roaming) on an authentic packet from it.
    pub rebindings: u64,
    /// PINGs sent because a peer's data fell quiet while we are behind a
    /// NAT (`connection/quiet.rs`).
    pub quiet_pings: u64,
    /// PINGs repeated after a path switch until the new path acknowledged
    /// one (`connection/handover.rs`).
    pub handover_pings: u64,
    /// Keep-alive PINGs sent at the node's beat on connections we dialed
    /// that run over a relay circuit (`connection/beat.rs`).
    pub beat_pings: u64,
    /// Direct connections no punch watches whose data stayed
    /// unacknowledged, and their probes unanswered, for the silence limit:
    /// each fell back onto a relay circuit behind it, or was closed
    /// (`node/silence.rs`, `Watched::Peer`).
    pub silent_peers: u64,
    /// Signed probes sent to a relay whose connection fell silent
    /// (`connection/probe.rs`).
    pub probes_sent: u64,
    /// Answers to those that came back signed.
    pub probe_answers: u64,
    /// Probes of peers answered.
    pub probes_answered: u64,
    /// Probes and answers dropped: of no connection of ours, unsigned, over
    /// the answer budget, or answering no probe of ours.
    pub probes_dropped: u64,
    /// Connections closed because the peer punched a new connection to us on
    /// the direct path they held: they belonged to a dead incarnation of the
    /// peer (`node/upgrade.rs`).
    pub superseded: u64,
    /// Connections (dialed or accepted) whose QUIC handshake did not end
    /// within [`NodeConfig::handshake_timeout`]: closed.
    pub handshake_timeouts: u64,
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
    /// The extra socket each direct path the birthday search found leaves from, by the
    /// connection's virtual address (an entry goes with the path).
    direct_sockets: HashMap<SocketAddr, SocketAddr>,
    pool: Pool,
    dht: Dht,
    messaging: Messaging,
    errands: errands::Errands,
    reach: Reach,
    /// The port-mapping client, when a gateway is configured.
    portmap: Option<PortMapper>,
    dialing: dial::Dialing,
    relay_server: RelayServer,
    relay_client: RelayClient,
    upgrades: Upgrades,
    conns: ConnTable,
    admission: AdmissionControl,
    retry_holds: RetryHolds,
    by_pool_id: HashMap<ConnId, ConnectionHandle>,
    /// DHT requests under way.
    requests: Exchanges<RequestId>,
    /// DHT requests waiting for their connection.
    waiting: HashMap<WaitId, RequestId>,
    serving: HashMap<PeerRequest, Serving>,
    out: VecDeque<Output<Event>>,
    counters: NodeCounters,
    instruments: instrument::Instruments,
    last_now: Instant,
    next_timeout: Option<Instant>,
    /// How many [`Node::batch`]es are running: while any is, inputs and
    /// commands leave their settling to the outermost one's end.
    batch_depth: u32,
    /// The local addresses packets may leave from ([`local_addrs`]).
    local_addrs: local_addrs::LocalAddrs,
    /// When the connections we dialed over relay circuits PING together.
    beat: Beat,
}

/// Sources asked to retry whose virtual address is held for their return.
const RETRY_HOLDS: usize = 4096;

impl Node {
    /// A node with `identity`, deriving every transport secret and seeded
    /// generator from `secret` (256 bits the driver drew from the OS; see
    /// [`crate::secret`]). `now` and `unix_ms` are the same moment on the
    /// monotonic and the wall clock; the node derives wall-clock time from
    /// the monotonic one after that.
    pub fn new(
        mut config: NodeConfig,
        identity: Identity,
        secret: Secret,
        now: Instant,
        unix_ms: u64,
    ) -> Result<Self, NodeError> {
        let local = identity.node_id();
        let clock = WallClock::at(unix_ms / 1000);
        let verification = config.verification.clone();
        let tls = match &config.certificate_chain {
            Some(chain) => {
                NodeTls::with_chain(&identity, chain.clone(), verification, clock.clone())?
            }
            None => NodeTls::self_signed(&identity, verification, clock.clone())?,
        };
        let stable = Secret::from_bytes(identity.secret_seed());
        let quic = QuicConfigs::new(tls, &config.transport, &secret, &stable)?;
        let endpoint = Endpoint::new(
            quic.endpoint.clone(),
            Some(quic.server.clone()),
            true,
            Some(quic.rng_seed),
        );
        config.pool.local = local;
        config.pool.seed = secret.derive_u64("pool");
        let pool = Pool::new(config.pool.clone())?;
        let frame = usize::try_from(config.limits.max_frame_len).unwrap_or(usize::MAX);
        config.dht.max_reply_bytes = config.dht.max_reply_bytes.min(frame);
        let mut dht = Dht::new(
            config.dht.clone(),
            identity.clone(),
            secret.derive_u64("dht"),
        );
        let policy = AddressPolicy::for_listen(&config.listen_addrs);
        dht.set_address_policy(policy);
        config.rpc.seed = secret.derive_u64("rpc");
        config.pubsub.local_id = local;
        config.pubsub.first_epoch = unix_ms.saturating_mul(1000);
        config.pubsub.fit_to(&config.limits);
        let messaging = Messaging::new(local, config.rpc.clone(), config.pubsub.clone());
        let setup = ReachSetup {
            node: local,
            realm: config.realm.clone(),
            listen_addrs: config.listen_addrs.clone(),
            limits: config.limits,
            mode: dht.mode(),
        };
        let reach = Reach::new(&config.reach, setup, &secret);
        let portmap = (config.port_mapping.clone()).map(|map| {
            let family = |a: &&SocketAddr| a.is_ipv4() == map.gateway.is_ipv4();
            // Without a specified address the machine waits for one.
            let local = (config.listen_addrs.iter().filter(family))
                .find(|a| !a.ip().is_unspecified())
                .or(config.listen_addrs.first())
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            PortMapper::new(map, local, secret.derive("port-mapping"), now)
        });
        let upgrades = Upgrades::new(config.upgrade.clone(), policy, secret.derive("punch-tags"));
        // RelayMode::Auto serves once reachability says public.
        let relay_server = RelayServer::new(config.relay);
        let relay_client = RelayClient::new(config.request_timeout, &config.relay);
        let requests = Exchanges::new(Some(config.request_timeout));
        let admission = AdmissionControl::new(config.admission);
        let beat = Beat::new(now, config.transport.acceptor_keep_alive());
        let mut node = Self {
            identity,
            local,
            config,
            quic,
            endpoint,
            clock,
            start: now,
            start_unix_ms: unix_ms,
            paths: PathTable::new(),
            direct_sockets: HashMap::default(),
            pool,
            dht,
            messaging,
            errands: errands::Errands::default(),
            reach,
            portmap,
            dialing: dial::Dialing::default(),
            relay_server,
            relay_client,
            upgrades,
            conns: ConnTable::default(),
            admission,
            retry_holds: RetryHolds::new(RETRY_HOLDS),
            by_pool_id: HashMap::default(),
            requests,
            waiting: HashMap::default(),
            serving: HashMap::default(),
            out: VecDeque::new(),
            counters: NodeCounters::default(),
            instruments: instrument::Instruments::new(),
            last_now: now,
            next_timeout: None,
            batch_depth: 0,
            local_addrs: local_addrs::LocalAddrs::default(),
            beat,
        };
        // Children may have timers from the start (the port mapper asks at
        // once): a driver that waits for `poll_timeout` before any input
        // must see them.
        node.next_timeout = node.compute_timeout();
        Ok(node)
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

    /// Bytes held in the node's own per-connection buffers (partial frames,
    /// answers the peers have not read, streamed payloads being
    /// reassembled), over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns
            .values()
            .map(|c| c.buffered() + c.assembling())
            .sum()
    }

    /// What admission refused and counted (docs of
    /// `connection::admission`).
    pub fn admission_counters(&self) -> &AdmissionCounters {
        self.admission.counters()
    }

    /// The most one connection may buffer now: its share of the node-wide
    /// memory budget.
    fn buffer_share(&self) -> usize {
        self.admission.buffer_share(self.conns.len())
    }

    /// Entries in the path table (a virtual address per real path in use).
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// Number of live QUIC connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Joins the DHT through `seeds` (self-lookup, then bucket refreshes).
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<dht::Contact>) -> dht::QueryId {
        self.enter(now);
        let query = self.dht.bootstrap(now, seeds);
        self.reach.handle_bootstrap_started(now);
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

    /// Runs `f` on the node as one input: the commands it makes (calls,
    /// answers, publications, subscriptions, DHT operations, at `now` or
    /// later) are settled together at its end, so what they make the node
    /// send is gathered once and their frames share packets instead of
    /// leaving one packet per command. A driver that takes several of its
    /// application's commands at once runs them in one batch. Returns what
    /// `f` returns; batches nest (the outermost settles).
    pub fn batch<R>(&mut self, now: Instant, f: impl FnOnce(&mut Self) -> R) -> R {
        self.enter(now);
        self.batch_depth += 1;
        let result = f(self);
        self.batch_depth -= 1;
        self.settle(now);
        result
    }

    /// Drains the children until none has anything left and no connection
    /// is dirty, then gathers transmits (packets onto relay circuits touch
    /// the relay connections: it goes round until none is dirty).
    fn settle(&mut self, now: Instant) {
        if self.batch_depth > 0 {
            return;
        }
        loop {
            let mut busy = self.drive_connections(now);
            busy |= self.drive_pool(now);
            busy |= self.drive_dht(now);
            busy |= self.drive_requests(now, Failure::Connection);
            busy |= self.drive_messaging(now);
            busy |= self.drive_portmap(now);
            busy |= self.drive_reach(now);
            busy |= self.drive_dialing(now);
            busy |= self.drive_upgrades(now);
            if busy || self.conns.any_dirty() {
                continue;
            }
            self.gather_transmits(now);
            if !self.conns.any_dirty() {
                break;
            }
        }
        self.observe(now);
        self.next_timeout = self.compute_timeout();
    }

    /// The earliest deadline of every child, computed after each input and
    /// cached for `poll_timeout` (the connections' from their index).
    fn compute_timeout(&self) -> Option<Instant> {
        let conns = self.conns.next_deadline();
        let messaging = [
            self.messaging.poll_timeout(),
            self.reach.poll_timeout(),
            self.portmap.as_ref().and_then(Machine::poll_timeout),
        ];
        let relay = [
            self.relay_server.poll_timeout(),
            self.relay_client.poll_timeout(),
            self.upgrades.poll_timeout(),
        ];
        let requests = self.requests.poll_timeout();
        // The beat matters only while we hold circuit ends.
        let beat = (self.relay_client.end_count() > 0).then(|| self.beat.deadline());
        [
            conns,
            requests,
            self.pool.poll_timeout(),
            self.dht.poll_timeout(),
            beat,
        ]
        .into_iter()
        .chain(messaging)
        .chain(relay)
        .flatten()
        .min()
    }
}

impl Machine for Node {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Input) {
        self.enter(now);
        match input {
            Input::Datagram(datagram) => self.handle_datagram(now, datagram),
            Input::Timeout => {
                let due = self.conns.take_due(now);
                let quiet_ping = self.quiet_ping();
                for handle in &due {
                    let Some(conn) = self.conns.get_mut(handle) else {
                        continue;
                    };
                    if conn.quinn.poll_timeout().is_some_and(|t| t <= now) {
                        conn.quinn.handle_timeout(now);
                    }
                    if quiet_ping.is_some_and(|after| conn.quiet.take_due(now, after))
                        && conn.phase == Phase::Ready
                    {
                        conn.quinn.ping();
                        self.counters.quiet_pings += 1;
                    }
                    if conn.handover.take_due(now) {
                        conn.quinn.ping();
                        self.counters.handover_pings += 1;
                    }
                    conn.linger_over(now);
                    if conn.resume_at.is_some_and(|t| t <= now) {
                        conn.resume_at = None;
                        self.resume_parked(now, *handle);
                    }
                }
                if self.beat.take_due(now) {
                    self.beat_circuits();
                }
                self.expire_connects(now, &due);
                self.send_probes(now, &due);
                self.expire_silent(now, &due);
                self.requests.handle_timeout(now);
                self.pool.handle_timeout(now);
                let unix_ms = self.unix_ms(now);
                self.dht.handle_timeout(now, unix_ms);
                self.messaging.handle_timeout(now);
                self.reach_timeout(now);
                self.relay_timeout(now);
                self.upgrade_timeout(now);
            }
            Input::LocalAddressChanged { old, new } => {
                self.local_addrs.moved(old);
                self.portmap_address_changed(now, old, new);
                self.address_changed(now, new);
            }
            Input::SocketsOpened(opened) => self.upgrades.handle_sockets_opened(now, opened),
        }
        self.settle(now);
    }

    /// The inputs in one [`Node::batch`]: settled once, so the packets a
    /// burst of datagrams makes the node send (acknowledgements, answers)
    /// are gathered together.
    fn handle_inputs(&mut self, now: Instant, inputs: impl IntoIterator<Item = Input>) {
        self.batch(now, |node| {
            for input in inputs {
                node.handle_input(now, input);
            }
        });
    }

    fn poll_output(&mut self) -> Option<Output<Event>> {
        let output = self.out.pop_front()?;
        if let Output::Transmit(transmit) = &output {
            // Every address we send to may hold NAT state for us from now on:
            // a dial-back probe from it proves nothing.
            self.reach.handle_sent(self.last_now, transmit.destination);
        }
        self.instruments.output_taken();
        Some(output)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // A connection touched outside an input has not been driven yet.
        if !self.out.is_empty() || self.conns.any_dirty() {
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
