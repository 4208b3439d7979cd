//! What a node measured, as plain data: counters, gauges and histograms,
//! no I/O and no global registry.
//!
//! The [`Node`](crate::node::Node) updates one [`Metrics`] as things happen
//! and hands it out with [`Node::metrics`](crate::node::Node::metrics).
//! Durations come from the `now` the node is given, never from a clock.
//! Exporters walk it with [`Metrics::visit`], which reports every metric
//! family with its exported name, type, unit, help and labelled series;
//! `macula-tokio` turns that into OpenMetrics text. Every family is listed
//! with its labels, buckets and meaning in `docs/METRICS.md`.
//!
//! ## Adding a metric family (reachability, ...)
//!
//! Families are declared here, in one place; a subsystem with several
//! labels of its own keeps them in a submodule (`relay.rs`, `nat.rs`):
//!
//! 1. label values: a `label_enum!` like [`RpcOutcome`] (each label is a
//!    small enum, never a string), or none; a series with two or more
//!    labels builds its label set when visited (see [`PunchPairs`]);
//! 2. the data: a field of [`Metrics`] (a counter `u64`, a [`PerLabel`], a
//!    [`Histogram`] over documented bounds, or a small type like
//!    [`CacheCounts`]), initialised in [`Metrics::new`];
//! 3. the export: one [`Family`] constant, listed in [`FAMILIES`], and one
//!    call in [`Metrics::visit`] (a unit test checks both agree); exporters
//!    and the dashboard check pick it up with no change of their own;
//! 4. the record calls where the subsystem sees the event (take `now` from
//!    the caller), or, for numbers the node keeps anyway, a copy as each
//!    input ends (like [`Metrics::copy_relay_counters`]); histograms always
//!    record at the event; and a row in `docs/METRICS.md` and a panel in
//!    `docs/grafana-dashboard.json`.
//!
//! Names follow the exported form: counters end in `_total`, histograms in
//! their unit, the base unit seconds (`_seconds`), as Prometheus wants it.

mod admission;
mod dht;
mod histogram;
mod labels;
mod messaging;
mod nat;
mod relay;

use std::time::{Duration, Instant};

pub use admission::{AdmissionMetrics, AdmissionRefusal};
pub use dht::DhtLimit;
pub use histogram::{CONNECTION_DURATION_BOUNDS, Histogram, LATENCY_BOUNDS, MAX_BUCKETS};
pub(crate) use labels::label_enum;
pub use labels::{Label, LabelValue, PerLabel};
pub use messaging::{CallRefusal, PublishDrop};
pub use nat::{
    ClaimCheckResult, ConnectionPath, DiscoveryRun, NatRefusal, NatType, PortMapChange,
    PortMapDrop, PunchCounts, PunchPairs, PunchResult,
};
pub use relay::{RelayDrop, RelayRefusal, ReservationChange};

label_enum!(
    /// How a store operation (user, republish or announcement) ended.
    StoreResult, "result", {
        /// Enough nodes acknowledged the record (the quorum).
        Success => "success",
        /// Fewer than the quorum acknowledged it.
        Failure => "failure",
    }
);

label_enum!(
    /// Which kind of DHT lookup.
    QueryKind, "kind", {
        /// `find_node` (and the lookups of bootstrap and address resolution).
        FindNode => "find_node",
        /// `query_with_response`: values under a key.
        FindValue => "find_value",
    }
);

label_enum!(
    /// Which lookup cache.
    Cache, "cache", {
        /// The DHT's local records answering value queries.
        DhtRecords => "dht_records",
        /// RPC provider lists by procedure.
        RpcProviders => "rpc_providers",
        /// Pub/sub subscriber lists by topic prefix.
        PubsubSubscribers => "pubsub_subscribers",
    }
);

label_enum!(
    /// Who dialed a connection.
    ConnectionDirection, "direction", {
        /// The peer dialed us.
        Inbound => "inbound",
        /// We dialed the peer.
        Outbound => "outbound",
    }
);

label_enum!(
    /// What went wrong with a connection.
    ConnectionErrorKind, "kind", {
        /// The dial could not start (no usable client configuration or
        /// address).
        Dial => "dial",
        /// Lost before it was ready: TLS rejection, handshake timeout, an
        /// unreachable peer, or refused by the peer during CONNECT.
        Handshake => "handshake",
        /// A ready connection's idle timeout fired (the peer went silent).
        Timeout => "timeout",
        /// A ready connection failed in transport (reset, transport error).
        Transport => "transport",
        /// This node refused the peer (certificate, realm, protocol error).
        Refused => "refused",
        /// The peer closed a ready connection with an error reason.
        ClosedByPeer => "closed_by_peer",
    }
);

label_enum!(
    /// How one of our calls ended.
    RpcOutcome, "outcome", {
        /// The provider replied.
        Ok => "ok",
        /// No answer by the deadline.
        Timeout => "timeout",
        /// No provider found, or none could take the request.
        NoProvider => "no_provider",
        /// The provider's handler failed.
        RemoteError => "remote_error",
        /// The provider refused the call: not authorized (ERROR
        /// `unauthorized`), or not served there (`refused`).
        Refused => "refused",
        /// A payload over the size limit.
        TooLarge => "too_large",
        /// This node's or every provider's bound was hit.
        Overloaded => "overloaded",
        /// The connection was lost after the request may have arrived.
        Lost => "lost",
        /// The caller cancelled it.
        Cancelled => "cancelled",
        /// Refused by this node before it started (bad procedure name).
        Rejected => "rejected",
    }
);

label_enum!(
    /// Whether a call ended with a reply or an error.
    CallResult, "result", {
        /// A reply.
        Ok => "ok",
        /// Any error.
        Error => "error",
    }
);

label_enum!(
    /// What happened to a pub/sub message here.
    MessageDirection, "direction", {
        /// Published by this node (accepted by `publish`).
        Published => "published",
        /// PUBLISH frames handed to subscribers' streams (one per remote
        /// subscriber of a publication).
        Sent => "sent",
        /// Messages delivered to this node's application.
        Delivered => "delivered",
        /// Dropped on the publishing side: a slow subscriber's full queue,
        /// or a disconnected subscriber.
        Dropped => "dropped",
        /// PUBLISH frames sent again in a subscriber's next session (their
        /// connection closed with their delivery unknown; counted in
        /// `sent` too).
        Resent => "resent",
    }
);

/// Hits and misses of a lookup cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Lookups answered by the cache (fresh, or a lookup already under way).
    pub hits: u64,
    /// Lookups that went to the network.
    pub misses: u64,
}

impl CacheCounts {
    /// Counts one lookup.
    pub fn record(&mut self, hit: bool) {
        let counter = if hit {
            &mut self.hits
        } else {
            &mut self.misses
        };
        *counter = counter.saturating_add(1);
    }

    /// Hits over lookups since the start; `None` before the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.hits.saturating_add(self.misses);
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

/// The outcomes of the last [`RecentOutcomes::WINDOW`] operations, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentOutcomes {
    /// Bit `i` is the outcome `i` operations ago (1: success).
    bits: u64,
    /// How many bits are in use.
    len: u32,
}

impl RecentOutcomes {
    /// How many operations the rate looks back on.
    pub const WINDOW: u32 = u64::BITS;

    /// Adds the newest outcome, forgetting the oldest past the window.
    pub fn record(&mut self, success: bool) {
        self.bits = (self.bits << 1) | u64::from(success);
        self.len = (self.len + 1).min(Self::WINDOW);
    }

    /// Operations in the window.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True before the first operation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Successes over operations in the window; `None` when empty.
    pub fn rate(&self) -> Option<f64> {
        (self.len > 0).then(|| f64::from(self.bits.count_ones()) / f64::from(self.len))
    }
}

/// An exported metric family: name, type, unit and help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The exported name (counters end in `_total`, unit-bearing families
    /// in `_<unit>`).
    pub name: &'static str,
    /// One line saying what it measures.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The unit of histogram samples.
    pub unit: Option<Unit>,
}

impl Family {
    /// A counter family.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Counter,
            unit: None,
        }
    }

    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Gauge,
            unit: None,
        }
    }

    /// A histogram family of durations in `unit`.
    pub const fn histogram(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Histogram,
            unit: Some(unit),
        }
    }
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples counted in buckets.
    Histogram,
}

/// The unit a histogram's durations are exported in: Prometheus' base unit
/// (its linter, `promtool check metrics`, refuses others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    Seconds,
}

impl Unit {
    /// The name, as in the family name's suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
        }
    }

    /// `duration` in this unit.
    pub fn of(self, duration: Duration) -> f64 {
        match self {
            Unit::Seconds => duration.as_secs_f64(),
        }
    }
}

/// One series' value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(f64),
    /// A histogram.
    Histogram(&'a Histogram),
}

/// One labelled series of a family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Series<'a> {
    /// Its labels (empty for an unlabelled family).
    pub labels: &'a [Label],
    /// Its value.
    pub value: Value<'a>,
}

/// Receives the families of [`Metrics::visit`], each once, in a fixed
/// order. A family may come with no series (a rate with nothing measured
/// yet).
pub trait Visitor {
    /// One family and all its series.
    fn family(&mut self, family: &Family, series: &[Series<'_>]);
}

/// `dht_store_operations_total`.
pub const DHT_STORE_OPERATIONS: Family = Family::counter(
    "dht_store_operations_total",
    "DHT store operations (user stores, republishes, RPC and pub/sub announcements) finished, by result",
);
/// `dht_store_propagation_success_rate`.
pub const DHT_STORE_PROPAGATION_SUCCESS_RATE: Family = Family::gauge(
    "dht_store_propagation_success_rate",
    "Share of the last 64 finished DHT store operations that reached their quorum",
);
/// `dht_query_latency_seconds`.
pub const DHT_QUERY_LATENCY: Family = Family::histogram(
    "dht_query_latency_seconds",
    Unit::Seconds,
    "Time from the start of a DHT lookup that went to the network to its result",
);
/// `dht_cache_hit_rate`.
pub const DHT_CACHE_HIT_RATE: Family = Family::gauge(
    "dht_cache_hit_rate",
    "Share of lookups answered without a network query since the start, by cache",
);
/// `dht_limit_hits_total`.
pub const DHT_LIMIT_HITS: Family = Family::counter(
    "dht_limit_hits_total",
    "DHT limits hit: records refused or evicted, replies cut, contacts refused, by limit",
);
/// `p2p_connections_total`.
pub const P2P_CONNECTIONS: Family = Family::counter(
    "p2p_connections_total",
    "Connections that became ready (QUIC handshake and CONNECT exchange done), by direction",
);
/// `p2p_connection_duration_seconds`.
pub const P2P_CONNECTION_DURATION: Family = Family::histogram(
    "p2p_connection_duration_seconds",
    Unit::Seconds,
    "How long ready connections lived, from ready to closed or lost",
);
/// `p2p_connection_pool_size`.
pub const P2P_CONNECTION_POOL_SIZE: Family = Family::gauge(
    "p2p_connection_pool_size",
    "Entries in the connection pool (outbound includes connects in flight and peers backing off), by direction",
);
/// `p2p_connection_errors_total`.
pub const P2P_CONNECTION_ERRORS: Family = Family::counter(
    "p2p_connection_errors_total",
    "Connections that failed or were refused, by kind",
);
/// `rpc_calls_total`.
pub const RPC_CALLS: Family =
    Family::counter("rpc_calls_total", "Calls this node made, by outcome");
/// `rpc_call_latency_seconds`.
pub const RPC_CALL_LATENCY: Family = Family::histogram(
    "rpc_call_latency_seconds",
    Unit::Seconds,
    "Time from call to its end (reply or error), by result",
);
/// `pubsub_messages_total`.
pub const PUBSUB_MESSAGES: Family = Family::counter(
    "pubsub_messages_total",
    "Pub/sub messages published, sent to subscribers, delivered here, dropped",
);
/// `pubsub_delivery_latency_seconds`.
pub const PUBSUB_DELIVERY_LATENCY: Family = Family::histogram(
    "pubsub_delivery_latency_seconds",
    Unit::Seconds,
    "Publisher side: time from publish to the PUBLISH frame taken in full by the subscriber's QUIC stream",
);
/// `rpc_calls_refused_total`.
pub const RPC_CALLS_REFUSED: Family = Family::counter(
    "rpc_calls_refused_total",
    "Calls of other nodes this node answered with an ERROR before its handler saw them, by reason",
);
/// `pubsub_received_dropped_total`.
pub const PUBSUB_RECEIVED_DROPPED: Family = Family::counter(
    "pubsub_received_dropped_total",
    "PUBLISH frames this node received and dropped, by reason",
);
/// `pubsub_publish_refused_total`.
pub const PUBSUB_PUBLISH_REFUSED: Family = Family::counter(
    "pubsub_publish_refused_total",
    "Publications of this node's application it refused: payload over the limit, or too many waiting for lookups",
);
/// `relay_reservations_total`.
pub const RELAY_RESERVATIONS: Family = Family::counter(
    "relay_reservations_total",
    "Reservation changes: granted and ended on this relay, acquired and lost by this node, by change",
);
/// `relay_circuits_total`.
pub const RELAY_CIRCUITS: Family =
    Family::counter("relay_circuits_total", "Circuits opened through this relay");
/// `relay_circuits_active`.
pub const RELAY_CIRCUITS_ACTIVE: Family =
    Family::gauge("relay_circuits_active", "Circuits this relay relays now");
/// `relay_bytes_total`.
pub const RELAY_BYTES: Family = Family::counter(
    "relay_bytes_total",
    "Circuit bytes this relay forwarded (inner QUIC packets with their length prefixes)",
);
/// `relay_refusals_total`.
pub const RELAY_REFUSALS: Family = Family::counter(
    "relay_refusals_total",
    "Reservation and circuit requests this relay refused, by reason",
);
/// `relay_dropped_packets_total`.
pub const RELAY_DROPPED_PACKETS: Family = Family::counter(
    "relay_dropped_packets_total",
    "Circuit packets dropped (rate limits at the relay, full queues at either side), by reason",
);
/// `relay_connections_total`.
pub const RELAY_CONNECTIONS: Family = Family::counter(
    "relay_connections_total",
    "Connections of this node that became ready over a relay circuit (either direction)",
);
/// `relay_dead_circuits_total`.
pub const RELAY_DEAD_CIRCUITS: Family = Family::counter(
    "relay_dead_circuits_total",
    "Circuits this node dialed over that brought nothing back in time (dead), closed",
);
/// `relay_dead_relays_total`.
pub const RELAY_DEAD_RELAYS: Family = Family::counter(
    "relay_dead_relays_total",
    "Relays this node found dropping circuit traffic, released and avoided",
);
/// `relay_silent_relays_total`.
pub const RELAY_SILENT_RELAYS: Family = Family::counter(
    "relay_silent_relays_total",
    "Relay connections of this node that left data unacknowledged for the silence limit, closed and avoided",
);
/// `relay_unanswered_circuit_requests_total`.
pub const RELAY_UNANSWERED_CIRCUIT_REQUESTS: Family = Family::counter(
    "relay_unanswered_circuit_requests_total",
    "Circuit requests of this node a relay did not answer in time; the dial moved on to the next relay",
);
/// `relay_spare_circuits_opened_total`.
pub const RELAY_SPARE_CIRCUITS_OPENED: Family = Family::counter(
    "relay_spare_circuits_opened_total",
    "Spare circuits opened behind direct connections that had lost the circuit they came up over",
);
/// `relay_spare_circuits_adopted_total`.
pub const RELAY_SPARE_CIRCUITS_ADOPTED: Family = Family::counter(
    "relay_spare_circuits_adopted_total",
    "Spare circuits a direct connection fell back onto or heard its peer over",
);
/// `relay_silent_circuit_ends_total`.
pub const RELAY_SILENT_CIRCUIT_ENDS: Family = Family::counter(
    "relay_silent_circuit_ends_total",
    "Connections carrying circuits this relay served that left data unacknowledged for the silence limit, closed",
);
/// `p2p_connections_by_path`.
pub const P2P_CONNECTIONS_BY_PATH: Family = Family::gauge(
    "p2p_connections_by_path",
    "Ready connections now, by the path their packets take",
);
/// `nat_punch_attempts_total`.
pub const NAT_PUNCH_ATTEMPTS: Family = Family::counter(
    "nat_punch_attempts_total",
    "Hole punches started, by NAT type of this node and of the peer",
);
/// `nat_punch_results_total`.
pub const NAT_PUNCH_RESULTS: Family = Family::counter(
    "nat_punch_results_total",
    "Hole punches ended, by result and NAT type of this node and of the peer",
);
/// `nat_upgrade_time_seconds`.
pub const NAT_UPGRADE_TIME: Family = Family::histogram(
    "nat_upgrade_time_seconds",
    Unit::Seconds,
    "Time from the agreed start of a successful punch to the switch of the connection to the direct path",
);
/// `nat_fallbacks_total`.
pub const NAT_FALLBACKS: Family = Family::counter(
    "nat_fallbacks_total",
    "Connections that fell back from a dead direct path to their relay circuit",
);
/// `nat_refusals_total`.
pub const NAT_REFUSALS: Family = Family::counter(
    "nat_refusals_total",
    "Dial-back and hole-punch requests, candidates and probes this node refused or ignored, by reason",
);

/// `nat_discovery_runs_total`.
pub const NAT_DISCOVERY_RUNS: Family = Family::counter(
    "nat_discovery_runs_total",
    "NAT discovery runs started, and how they ended: with a report, or unanswered by every reflector and dial-back",
);

/// `nat_claim_checks_total`.
pub const NAT_CLAIM_CHECKS: Family = Family::counter(
    "nat_claim_checks_total",
    "Checks of the listen addresses DHT servers claim (a dial-back each), by result",
);

/// `nat_port_mapping_total`.
pub const NAT_PORT_MAPPING: Family = Family::counter(
    "nat_port_mapping_total",
    "What the PCP / NAT-PMP port-mapping client did on the gateway, by event",
);

/// `nat_port_mapping_dropped_total`.
pub const NAT_PORT_MAPPING_DROPPED: Family = Family::counter(
    "nat_port_mapping_dropped_total",
    "Datagrams from the gateway's port-mapping server dropped, by reason",
);

/// Every family a [`Metrics`] exports, in [`Metrics::visit`] order.
pub const FAMILIES: &[Family] = &[
    DHT_STORE_OPERATIONS,
    DHT_STORE_PROPAGATION_SUCCESS_RATE,
    DHT_QUERY_LATENCY,
    DHT_CACHE_HIT_RATE,
    DHT_LIMIT_HITS,
    P2P_CONNECTIONS,
    P2P_CONNECTION_DURATION,
    P2P_CONNECTION_POOL_SIZE,
    P2P_CONNECTION_ERRORS,
    RPC_CALLS,
    RPC_CALL_LATENCY,
    PUBSUB_MESSAGES,
    PUBSUB_DELIVERY_LATENCY,
    RPC_CALLS_REFUSED,
    PUBSUB_RECEIVED_DROPPED,
    PUBSUB_PUBLISH_REFUSED,
    RELAY_RESERVATIONS,
    RELAY_CIRCUITS,
    RELAY_CIRCUITS_ACTIVE,
    RELAY_BYTES,
    RELAY_REFUSALS,
    RELAY_DROPPED_PACKETS,
    RELAY_CONNECTIONS,
    RELAY_DEAD_CIRCUITS,
    RELAY_DEAD_RELAYS,
    RELAY_SILENT_RELAYS,
    RELAY_UNANSWERED_CIRCUIT_REQUESTS,
    RELAY_SPARE_CIRCUITS_OPENED,
    RELAY_SPARE_CIRCUITS_ADOPTED,
    RELAY_SILENT_CIRCUIT_ENDS,
    P2P_CONNECTIONS_BY_PATH,
    NAT_PUNCH_ATTEMPTS,
    NAT_PUNCH_RESULTS,
    NAT_UPGRADE_TIME,
    NAT_FALLBACKS,
    NAT_REFUSALS,
    NAT_DISCOVERY_RUNS,
    NAT_CLAIM_CHECKS,
    NAT_PORT_MAPPING,
    NAT_PORT_MAPPING_DROPPED,
    admission::P2P_ADMISSION_REFUSALS,
    admission::P2P_HANDSHAKES_IN_PROGRESS,
    admission::P2P_CONNECTIONS_AWAITING_CONNECT,
    admission::P2P_PROTOCOL_ERRORS,
];

/// What a node measured. Read the fields, or walk the families with
/// [`Metrics::visit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// Store operations finished, by result.
    pub dht_store_operations: PerLabel<StoreResult, u64, 2>,
    /// The outcomes of the last store operations.
    pub dht_recent_stores: RecentOutcomes,
    /// Latency of network lookups, by kind.
    pub dht_query_latency: PerLabel<QueryKind, Histogram, 2>,
    /// Hits and misses, by cache.
    pub caches: PerLabel<Cache, CacheCounts, 3>,
    /// DHT limits hit, by limit.
    pub dht_limit_hits: PerLabel<DhtLimit, u64, 9>,
    /// Connections that became ready, by direction.
    pub connections: PerLabel<ConnectionDirection, u64, 2>,
    /// Lifetimes of ready connections.
    pub connection_duration: Histogram,
    /// Pool entries now, by direction.
    pub pool_size: PerLabel<ConnectionDirection, u64, 2>,
    /// Connection errors, by kind.
    pub connection_errors: PerLabel<ConnectionErrorKind, u64, 6>,
    /// When the last connection error happened (not exported: health
    /// checks compare it with their own now).
    pub last_connection_error: Option<Instant>,
    /// Our calls, by outcome.
    pub rpc_calls: PerLabel<RpcOutcome, u64, 10>,
    /// Latency of our calls that ended after they started, by result.
    pub rpc_call_latency: PerLabel<CallResult, Histogram, 2>,
    /// Pub/sub messages, by direction.
    pub pubsub_messages: PerLabel<MessageDirection, u64, 5>,
    /// Publish to frame written, per remote subscriber.
    pub pubsub_delivery_latency: Histogram,
    /// Others' calls refused before the handler, by reason.
    pub rpc_calls_refused: PerLabel<CallRefusal, u64, 6>,
    /// Received PUBLISH frames dropped, by reason.
    pub pubsub_received_dropped: PerLabel<PublishDrop, u64, 5>,
    /// Publications of the application the node refused.
    pub pubsub_publish_refused: u64,
    /// Reservation changes, by change.
    pub relay_reservations: PerLabel<ReservationChange, u64, 4>,
    /// Circuits opened through this relay.
    pub relay_circuits: u64,
    /// Circuits relayed now.
    pub relay_circuits_active: u64,
    /// Circuit bytes forwarded by this relay.
    pub relay_bytes: u64,
    /// Requests this relay refused, by reason.
    pub relay_refusals: PerLabel<RelayRefusal, u64, 6>,
    /// Circuit packets dropped, by reason.
    pub relay_dropped_packets: PerLabel<RelayDrop, u64, 3>,
    /// Connections that became ready over a circuit.
    pub relay_connections: u64,
    /// Circuits of ours closed as dead.
    pub relay_dead_circuits: u64,
    /// Relays of ours found dropping circuit traffic.
    pub relay_dead_relays: u64,
    /// Relay connections of ours found silent.
    pub relay_silent_relays: u64,
    /// Circuit requests of ours a relay did not answer in time.
    pub relay_unanswered_circuit_requests: u64,
    /// Spare circuits opened behind direct connections.
    pub relay_spare_circuits_opened: u64,
    /// Spare circuits a direct connection adopted.
    pub relay_spare_circuits_adopted: u64,
    /// Connections carrying circuits served here found silent.
    pub relay_silent_circuit_ends: u64,
    /// Ready connections now, by path.
    pub connections_by_path: PerLabel<ConnectionPath, u64, 2>,
    /// Punches started and ended, per pair of NAT types.
    pub nat_punches: PunchPairs,
    /// Start of a successful punch to the switch to the direct path.
    pub nat_upgrade_time: Histogram,
    /// Falls back from a dead direct path to the relay.
    pub nat_fallbacks: u64,
    /// Dial-back and punch refusals, by reason.
    pub nat_refusals: PerLabel<NatRefusal, u64, 5>,
    /// NAT discovery runs, by event.
    pub nat_discovery_runs: PerLabel<DiscoveryRun, u64, 4>,
    /// Checks of claimed listen addresses, by result.
    pub nat_claim_checks: PerLabel<ClaimCheckResult, u64, 5>,
    /// What the port-mapping client did, by event.
    pub nat_port_mapping: PerLabel<PortMapChange, u64, 8>,
    /// Port-mapping datagrams dropped, by reason.
    pub nat_port_mapping_dropped: PerLabel<PortMapDrop, u64, 4>,
    /// What admission turned away, and the handshakes and connections it
    /// holds now.
    pub admission: AdmissionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Everything at zero.
    pub fn new() -> Self {
        Self {
            dht_store_operations: PerLabel::default(),
            dht_recent_stores: RecentOutcomes::default(),
            dht_query_latency: PerLabel::new(Histogram::new(LATENCY_BOUNDS)),
            caches: PerLabel::default(),
            dht_limit_hits: PerLabel::default(),
            connections: PerLabel::default(),
            connection_duration: Histogram::new(CONNECTION_DURATION_BOUNDS),
            pool_size: PerLabel::default(),
            connection_errors: PerLabel::default(),
            last_connection_error: None,
            rpc_calls: PerLabel::default(),
            rpc_call_latency: PerLabel::new(Histogram::new(LATENCY_BOUNDS)),
            pubsub_messages: PerLabel::default(),
            pubsub_delivery_latency: Histogram::new(LATENCY_BOUNDS),
            rpc_calls_refused: PerLabel::default(),
            pubsub_received_dropped: PerLabel::default(),
            pubsub_publish_refused: 0,
            relay_reservations: PerLabel::default(),
            relay_circuits: 0,
            relay_circuits_active: 0,
            relay_bytes: 0,
            relay_refusals: PerLabel::default(),
            relay_dropped_packets: PerLabel::default(),
            relay_connections: 0,
            relay_dead_circuits: 0,
            relay_dead_relays: 0,
            relay_silent_relays: 0,
            relay_unanswered_circuit_requests: 0,
            relay_spare_circuits_opened: 0,
            relay_spare_circuits_adopted: 0,
            relay_silent_circuit_ends: 0,
            connections_by_path: PerLabel::default(),
            nat_punches: PunchPairs::default(),
            nat_upgrade_time: Histogram::new(LATENCY_BOUNDS),
            nat_fallbacks: 0,
            nat_refusals: PerLabel::default(),
            nat_discovery_runs: PerLabel::default(),
            nat_claim_checks: PerLabel::default(),
            nat_port_mapping: PerLabel::default(),
            nat_port_mapping_dropped: PerLabel::default(),
            admission: AdmissionMetrics::default(),
        }
    }

    /// A store operation finished.
    pub fn record_store(&mut self, success: bool) {
        let result = if success {
            StoreResult::Success
        } else {
            StoreResult::Failure
        };
        self.dht_store_operations.bump(result);
        self.dht_recent_stores.record(success);
    }

    /// A connection failed or was refused at `now`.
    pub fn record_connection_error(&mut self, now: Instant, kind: ConnectionErrorKind) {
        self.connection_errors.bump(kind);
        self.last_connection_error = Some(now);
    }

    /// Share of the last store operations that reached their quorum.
    pub fn store_propagation_success_rate(&self) -> Option<f64> {
        self.dht_recent_stores.rate()
    }

    /// One of our calls ended `outcome`, `latency` after it started (`None`
    /// when it never started: refused at once).
    pub fn record_call(&mut self, outcome: RpcOutcome, latency: Option<Duration>) {
        self.rpc_calls.bump(outcome);
        if let Some(latency) = latency {
            let result = if outcome == RpcOutcome::Ok {
                CallResult::Ok
            } else {
                CallResult::Error
            };
            self.rpc_call_latency.get_mut(result).record(latency);
        }
    }

    /// Walks every family in [`FAMILIES`] order.
    pub fn visit(&self, visitor: &mut impl Visitor) {
        visitor.family(&DHT_STORE_OPERATIONS, &counters(&self.dht_store_operations));
        let rate = self.store_propagation_success_rate().map(|rate| Series {
            labels: &[],
            value: Value::Gauge(rate),
        });
        visitor.family(&DHT_STORE_PROPAGATION_SUCCESS_RATE, rate.as_slice());
        visitor.family(&DHT_QUERY_LATENCY, &histograms(&self.dht_query_latency));
        let hit_rates: Vec<Series<'_>> = self
            .caches
            .iter()
            .filter_map(|(cache, counts)| {
                Some(Series {
                    labels: cache.labels(),
                    value: Value::Gauge(counts.hit_rate()?),
                })
            })
            .collect();
        visitor.family(&DHT_CACHE_HIT_RATE, &hit_rates);
        visitor.family(&DHT_LIMIT_HITS, &counters(&self.dht_limit_hits));
        visitor.family(&P2P_CONNECTIONS, &counters(&self.connections));
        visitor.family(
            &P2P_CONNECTION_DURATION,
            &[Series {
                labels: &[],
                value: Value::Histogram(&self.connection_duration),
            }],
        );
        visitor.family(&P2P_CONNECTION_POOL_SIZE, &gauges(&self.pool_size));
        visitor.family(&P2P_CONNECTION_ERRORS, &counters(&self.connection_errors));
        visitor.family(&RPC_CALLS, &counters(&self.rpc_calls));
        visitor.family(&RPC_CALL_LATENCY, &histograms(&self.rpc_call_latency));
        visitor.family(&PUBSUB_MESSAGES, &counters(&self.pubsub_messages));
        visitor.family(
            &PUBSUB_DELIVERY_LATENCY,
            &[Series {
                labels: &[],
                value: Value::Histogram(&self.pubsub_delivery_latency),
            }],
        );
        visitor.family(&RPC_CALLS_REFUSED, &counters(&self.rpc_calls_refused));
        visitor.family(
            &PUBSUB_RECEIVED_DROPPED,
            &counters(&self.pubsub_received_dropped),
        );
        visitor.family(
            &PUBSUB_PUBLISH_REFUSED,
            &[counter(self.pubsub_publish_refused)],
        );
        self.visit_relay(visitor);
        self.visit_nat(visitor);
        self.admission.visit(visitor);
    }

    fn visit_relay(&self, visitor: &mut impl Visitor) {
        visitor.family(&RELAY_RESERVATIONS, &counters(&self.relay_reservations));
        visitor.family(&RELAY_CIRCUITS, &[counter(self.relay_circuits)]);
        let active = Series {
            labels: &[],
            value: Value::Gauge(self.relay_circuits_active as f64),
        };
        visitor.family(&RELAY_CIRCUITS_ACTIVE, &[active]);
        visitor.family(&RELAY_BYTES, &[counter(self.relay_bytes)]);
        visitor.family(&RELAY_REFUSALS, &counters(&self.relay_refusals));
        visitor.family(
            &RELAY_DROPPED_PACKETS,
            &counters(&self.relay_dropped_packets),
        );
        visitor.family(&RELAY_CONNECTIONS, &[counter(self.relay_connections)]);
        visitor.family(&RELAY_DEAD_CIRCUITS, &[counter(self.relay_dead_circuits)]);
        visitor.family(&RELAY_DEAD_RELAYS, &[counter(self.relay_dead_relays)]);
        visitor.family(&RELAY_SILENT_RELAYS, &[counter(self.relay_silent_relays)]);
        visitor.family(
            &RELAY_UNANSWERED_CIRCUIT_REQUESTS,
            &[counter(self.relay_unanswered_circuit_requests)],
        );
        visitor.family(
            &RELAY_SPARE_CIRCUITS_OPENED,
            &[counter(self.relay_spare_circuits_opened)],
        );
        visitor.family(
            &RELAY_SPARE_CIRCUITS_ADOPTED,
            &[counter(self.relay_spare_circuits_adopted)],
        );
        visitor.family(
            &RELAY_SILENT_CIRCUIT_ENDS,
            &[counter(self.relay_silent_circuit_ends)],
        );
    }

    fn visit_nat(&self, visitor: &mut impl Visitor) {
        visitor.family(&P2P_CONNECTIONS_BY_PATH, &gauges(&self.connections_by_path));
        let pairs: Vec<_> = self.nat_punches.punched().collect();
        let attempts: Vec<Series<'_>> = (pairs.iter())
            .map(|(labels, counts)| Series {
                labels,
                value: Value::Counter(counts.attempts),
            })
            .collect();
        visitor.family(&NAT_PUNCH_ATTEMPTS, &attempts);
        let result_labels: Vec<([Label; 3], u64)> = (pairs.iter())
            .flat_map(|([local, remote], counts)| {
                (counts.results.iter()).map(move |(result, n)| {
                    ([(PunchResult::KEY, result.as_str()), *local, *remote], *n)
                })
            })
            .collect();
        let results: Vec<Series<'_>> = (result_labels.iter())
            .map(|(labels, n)| Series {
                labels,
                value: Value::Counter(*n),
            })
            .collect();
        visitor.family(&NAT_PUNCH_RESULTS, &results);
        visitor.family(
            &NAT_UPGRADE_TIME,
            &[Series {
                labels: &[],
                value: Value::Histogram(&self.nat_upgrade_time),
            }],
        );
        visitor.family(&NAT_FALLBACKS, &[counter(self.nat_fallbacks)]);
        visitor.family(&NAT_REFUSALS, &counters(&self.nat_refusals));
        visitor.family(&NAT_DISCOVERY_RUNS, &counters(&self.nat_discovery_runs));
        visitor.family(&NAT_CLAIM_CHECKS, &counters(&self.nat_claim_checks));
        visitor.family(&NAT_PORT_MAPPING, &counters(&self.nat_port_mapping));
        visitor.family(
            &NAT_PORT_MAPPING_DROPPED,
            &counters(&self.nat_port_mapping_dropped),
        );
    }
}

/// The one series of an unlabelled counter.
fn counter(value: u64) -> Series<'static> {
    Series {
        labels: &[],
        value: Value::Counter(value),
    }
}

/// One counter series per label value.
fn counters<L: LabelValue, const N: usize>(per: &PerLabel<L, u64, N>) -> Vec<Series<'static>> {
    per.iter()
        .map(|(label, value)| Series {
            labels: label.labels(),
            value: Value::Counter(*value),
        })
        .collect()
}

/// One gauge series per label value, from counts.
fn gauges<L: LabelValue, const N: usize>(per: &PerLabel<L, u64, N>) -> Vec<Series<'static>> {
    per.iter()
        .map(|(label, value)| Series {
            labels: label.labels(),
            value: Value::Gauge(*value as f64),
        })
        .collect()
}

/// One histogram series per label value.
fn histograms<L: LabelValue, const N: usize>(per: &PerLabel<L, Histogram, N>) -> Vec<Series<'_>> {
    per.iter()
        .map(|(label, histogram)| Series {
            labels: label.labels(),
            value: Value::Histogram(histogram),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series as the tests compare it: labels and the value as text.
    type Shown = (Vec<Label>, String);

    /// Records what a visit reports.
    #[derive(Default)]
    struct Seen(Vec<(Family, Vec<Shown>)>);

    impl Visitor for Seen {
        fn family(&mut self, family: &Family, series: &[Series<'_>]) {
            let series = series
                .iter()
                .map(|s| {
                    let value = match s.value {
                        Value::Counter(n) => n.to_string(),
                        Value::Gauge(g) => g.to_string(),
                        Value::Histogram(h) => format!("count={}", h.count()),
                    };
                    (s.labels.to_vec(), value)
                })
                .collect();
            self.0.push((*family, series));
        }
    }

    fn seen(metrics: &Metrics) -> Seen {
        let mut seen = Seen::default();
        metrics.visit(&mut seen);
        seen
    }

    #[test]
    fn every_family_is_visited_once_in_order_with_names_that_say_type_and_unit() {
        let visited: Vec<Family> = seen(&Metrics::new())
            .0
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(visited, FAMILIES);
        for family in FAMILIES {
            assert_eq!(
                family.name.ends_with("_total"),
                family.kind == Kind::Counter,
                "{}",
                family.name
            );
            if let Some(unit) = family.unit {
                assert!(family.name.ends_with(unit.as_str()), "{}", family.name);
            }
            assert_eq!(family.unit.is_some(), family.kind == Kind::Histogram);
            assert!(!family.help.is_empty());
        }
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }

    #[test]
    fn rates_appear_only_once_measured() {
        let mut metrics = Metrics::new();
        let rate_of = |m: &Metrics, name: &str| {
            seen(m)
                .0
                .into_iter()
                .find(|(f, _)| f.name == name)
                .map(|(_, series)| series)
                .unwrap()
        };
        assert!(rate_of(&metrics, "dht_store_propagation_success_rate").is_empty());
        assert!(rate_of(&metrics, "dht_cache_hit_rate").is_empty());
        metrics.record_store(true);
        metrics.record_store(false);
        metrics.caches.get_mut(Cache::RpcProviders).record(true);
        metrics.caches.get_mut(Cache::RpcProviders).record(true);
        metrics.caches.get_mut(Cache::RpcProviders).record(false);
        metrics.caches.get_mut(Cache::RpcProviders).record(true);
        assert_eq!(
            rate_of(&metrics, "dht_store_propagation_success_rate"),
            vec![(vec![], "0.5".to_string())]
        );
        assert_eq!(
            rate_of(&metrics, "dht_cache_hit_rate"),
            vec![(vec![("cache", "rpc_providers")], "0.75".to_string())]
        );
        assert_eq!(
            rate_of(&metrics, "dht_store_operations_total"),
            vec![
                (vec![("result", "success")], "1".to_string()),
                (vec![("result", "failure")], "1".to_string()),
            ]
        );
    }

    #[test]
    fn the_store_rate_looks_at_the_last_64_only() {
        let mut metrics = Metrics::new();
        for _ in 0..100 {
            metrics.record_store(false);
        }
        for _ in 0..48 {
            metrics.record_store(true);
        }
        assert_eq!(metrics.dht_recent_stores.len(), 64);
        assert_eq!(metrics.store_propagation_success_rate(), Some(0.75));
        assert_eq!(*metrics.dht_store_operations.get(StoreResult::Failure), 100);
    }

    #[test]
    fn calls_count_by_outcome_and_time_only_those_that_started() {
        let mut metrics = Metrics::new();
        metrics.record_call(RpcOutcome::Ok, Some(Duration::from_millis(3)));
        metrics.record_call(RpcOutcome::Timeout, Some(Duration::from_secs(5)));
        metrics.record_call(RpcOutcome::TooLarge, None);
        assert_eq!(*metrics.rpc_calls.get(RpcOutcome::Ok), 1);
        assert_eq!(*metrics.rpc_calls.get(RpcOutcome::TooLarge), 1);
        assert_eq!(metrics.rpc_calls.total(), 3);
        assert_eq!(metrics.rpc_call_latency.get(CallResult::Ok).count(), 1);
        assert_eq!(metrics.rpc_call_latency.get(CallResult::Error).count(), 1);
        assert_eq!(
            metrics.rpc_call_latency.get(CallResult::Error).sum(),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn unit_conversion() {
        assert_eq!(Unit::Seconds.of(Duration::from_micros(1500)), 0.0015);
        assert_eq!(Unit::Seconds.of(Duration::from_millis(2500)), 2.5);
    }
}
