//! The relay: its settings and limits, its counters, circuit frames, the
//! rate limiter, and its two child machines.
//!
//! Every node runs both sides: [`RelayServer`] serves reservations and
//! splices circuits (by default only while the node is publicly reachable,
//! [`RelayMode`]); [`RelayClient`] reserves, opens circuits and carries
//! its end-to-end QUIC packets over them. Both are children of the node
//! ([`crate::Child`]): they name connections by [`crate::pool::ConnId`] and
//! ask the node for every effect on a connection, the pool or the path
//! table through their output enums. docs/PROTOCOL.md §11 is the wire
//! contract.

mod bucket;
pub mod client;
mod events;
pub mod frames;
pub mod server;
#[cfg(test)]
mod test_support;

use std::time::Duration;

use quinn_proto::VarInt;

pub use crate::connection::SilenceLimit;

pub use bucket::TokenBucket;
pub use client::{RelayClient, RelayClientOutput};
pub use events::{CircuitLoss, RelayEvent};
pub use frames::{FrameError, FrameSplitter, MAX_CIRCUIT_PACKET, encode_frame};
pub use server::{RelayServer, RelayServerOutput};

/// Stream error code: the relay closed the circuit at a limit (bytes or
/// lifetime).
pub const CIRCUIT_LIMIT: VarInt = VarInt::from_u32(0x110);
/// Stream error code: the circuit's other end is gone.
pub const CIRCUIT_PEER_GONE: VarInt = VarInt::from_u32(0x111);
/// Stream error code: the circuit's bytes are not frames.
pub const CIRCUIT_BROKEN: VarInt = VarInt::from_u32(0x112);

/// What became of a circuit frame a child asked the node to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// It is queued on the stream.
    Written,
    /// Dropped: the stream's queue would pass
    /// [`RelayConfig::max_queued_per_circuit`].
    QueueFull,
    /// Dropped: the connection is gone.
    Gone,
}

/// The bits of an IPv4 address that make one group for the per-IP limits
/// ([`RelayConfig::max_reservations_per_ip`],
/// [`RelayConfig::max_circuits_per_ip`]): the whole address.
pub const IP_GROUP_V4_BITS: u8 = 32;
/// The bits of an IPv6 address that make one group for the per-IP limits:
/// a /64, what one host or one subscriber usually gets.
pub const IP_GROUP_V6_BITS: u8 = 64;

/// When a node serves reservations and circuits for others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelayMode {
    /// Only while the node is publicly reachable
    /// ([`crate::nat::reach::Reach::reachability`] says public): a
    /// dial-back found it so, or an unsolicited inbound connection from a
    /// stranger reached a global address of it. A node found private, and
    /// one whose reachability is undetermined (a DHT server too), refuses
    /// every request with `RELAY_DISABLED`: its relay could be useless to
    /// others and spend its NAT mappings and bandwidth.
    #[default]
    Auto,
    /// Always (a node known to be public, e.g. a bootstrap or relay
    /// server that runs no discovery).
    Always,
    /// Never: every request is refused with `RELAY_DISABLED`.
    Never,
}

impl RelayMode {
    /// Whether a node in this mode serves, given whether it is public now.
    pub fn serves(self, public: bool) -> bool {
        match self {
            Self::Auto => public,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// What a node does as a relay, and the limits it enforces; and how its
/// own relays are judged (client side).
///
/// Per-IP limits count peers by the address their connection comes from,
/// grouped by [`IP_GROUP_V4_BITS`] / [`IP_GROUP_V6_BITS`]; peers reached over
/// a relay circuit all count as one group (their real address is unknown).
///
/// | setting | default |
/// | --- | --- |
/// | mode | [`RelayMode::Auto`]: relay only while reachability says public (dial-back, or an unsolicited inbound connection) |
/// | reservation_ttl | 5 min (clients renew at half) |
/// | max_reservations | 128 |
/// | max_reservations_per_ip | 8 per IP (/32, IPv6 /64) |
/// | max_circuits | 256 in total |
/// | max_circuits_per_peer | 64 per node, counted at both ends |
/// | max_circuits_per_ip | 128 per IP (/32, IPv6 /64), counted at both ends |
/// | peer_rate | 1 MiB/s forwarded from one node (excess packets dropped; they spend no shared tokens) |
/// | total_rate | 16 MiB/s forwarded in total (excess packets dropped) |
/// | max_circuit_bytes | 256 MiB per circuit, both directions (then closed) |
/// | max_circuit_lifetime | 1 h (then closed) |
/// | max_queued_per_circuit | 64 KiB waiting for one end's flow control (excess dropped) |
/// | dead_circuits | 2: a relay whose last 2 circuits of ours brought our handshake no answer is dropped |
/// | avoid_dead_relay | 10 min: such a relay (or a silent one, until a connection to it completes a handshake again) is not reserved on, and tried last for circuits |
/// | silence | a relay connection of ours, or a connection over one of our circuits, that leaves data unacknowledged for 3 probe timeouts (at least 1.5 s, at most 3 s; 10 s over a circuit), and its newest probe for one, is dead; a relay connection probes the relay every 40 ms meanwhile, and an answer restarts the wait (docs/PROTOCOL.md §11.4) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// When to serve reservations and circuits; when not, every request is
    /// refused with `RELAY_DISABLED`.
    pub mode: RelayMode,
    /// How long a reservation lasts unless renewed.
    pub reservation_ttl: Duration,
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Reservations held at once by nodes of one IP group (node ids are
    /// free; addresses are not).
    pub max_reservations_per_ip: usize,
    /// Circuits open at once, in total.
    pub max_circuits: usize,
    /// Circuits open at once that one node is an end of.
    pub max_circuits_per_peer: usize,
    /// Circuits open at once that nodes of one IP group are an end of.
    pub max_circuits_per_ip: usize,
    /// Bytes per second the relay forwards from one node, over all its
    /// circuits; packets past it are dropped (QUIC recovers them) without
    /// spending any of `total_rate`.
    pub peer_rate: u64,
    /// Bytes per second the relay forwards in total.
    pub total_rate: u64,
    /// Bytes one circuit may carry (both directions); then it is closed.
    pub max_circuit_bytes: u64,
    /// How long a circuit may stay open; then it is closed.
    pub max_circuit_lifetime: Duration,
    /// Bytes that may wait for one end's flow control per circuit
    /// direction; packets past it are dropped. They wait behind what quinn
    /// already took into the connection's send buffer
    /// ([`TransportSettings::send_window`](crate::quic::TransportSettings::send_window),
    /// shared by the connection's streams), so this bound acts once that
    /// buffer is full.
    pub max_queued_per_circuit: usize,
    /// Client side: a circuit of ours that a connection runs over but over
    /// which nothing came within the claim time (the node's request
    /// timeout) is dead; after this many dead circuits in a row through one
    /// relay (0: never) the relay is taken for one that drops circuit
    /// traffic: our reservation there is released and it is avoided.
    pub dead_circuits: u32,
    /// How long a relay found dropping circuit traffic is avoided: not
    /// reserved on, and asked for circuits only after the others.
    pub avoid_dead_relay: Duration,
    /// Client side: how long a relay connection of ours, or a connection
    /// over one of our circuits, may leave data unacknowledged before it is
    /// taken for dead (the relay, or the circuit) and closed.
    pub silence: SilenceLimit,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            mode: RelayMode::Auto,
            reservation_ttl: Duration::from_secs(300),
            max_reservations: 128,
            max_reservations_per_ip: 8,
            max_circuits: 256,
            max_circuits_per_peer: 64,
            max_circuits_per_ip: 128,
            peer_rate: 1 << 20,
            total_rate: 16 << 20,
            max_circuit_bytes: 256 << 20,
            max_circuit_lifetime: Duration::from_secs(3600),
            max_queued_per_circuit: 64 << 10,
            dead_circuits: 2,
            avoid_dead_relay: Duration::from_secs(600),
            silence: SilenceLimit::default(),
        }
    }
}

/// What a node relays and holds at one moment (gauges, next to the
/// monotonic [`RelayCounters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayLoad {
    /// Reservations other nodes hold on this node.
    pub reservations_served: usize,
    /// Circuits this node relays.
    pub circuits_relayed: usize,
    /// Relays that hold a reservation of this node.
    pub reservations_held: usize,
    /// Circuits this node is an end of (live or kept as a backup).
    pub circuit_ends: usize,
}

/// Counters of the relay, both as server and as client, for tests and
/// metrics ([`Node::relay_counters`](crate::node::Node::relay_counters)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Reservations granted or renewed (server).
    pub reservations_granted: u64,
    /// Reservations that ended: released, expired or their connection lost
    /// (server).
    pub reservations_ended: u64,
    /// Circuits opened through this relay (server).
    pub circuits_opened: u64,
    /// Circuits closed at this relay, for any reason (server).
    pub circuits_closed: u64,
    /// Circuit payload bytes forwarded, prefixes included (server).
    pub bytes_forwarded: u64,
    /// Circuit packets forwarded (server): one per inner packet passed on.
    pub packets_forwarded: u64,
    /// Packets dropped at their sender's `peer_rate` (server); they spent
    /// none of the relay-wide rate.
    pub dropped_rate: u64,
    /// Packets dropped at the relay-wide `total_rate` while their sender
    /// was within its own rate (server): the relay is saturated.
    pub dropped_total_rate: u64,
    /// Packets dropped because an end's queue was full (both sides).
    pub dropped_queue_full: u64,
    /// Requests refused: relay disabled (server).
    pub refused_disabled: u64,
    /// Requests refused: the target has no reservation (server).
    pub refused_no_reservation: u64,
    /// Requests refused: a limit in total or per node was reached (server).
    pub refused_limit: u64,
    /// Requests refused: a per-IP limit was reached (server; the status
    /// on the wire is `LIMIT_REACHED` as well).
    pub refused_ip_limit: u64,
    /// Requests refused: the target's connection is gone (server).
    pub refused_unreachable: u64,
    /// Requests refused as malformed (server).
    pub refused_bad_request: u64,
    /// Circuits closed because they reached their byte or time limit
    /// (server).
    pub circuits_over_limit: u64,
    /// This node's own QUIC packets written onto circuits, toward a relay
    /// (client).
    pub packets_to_circuits: u64,
    /// Reservations this node holds that were granted or renewed (client).
    pub reservations_held: u64,
    /// Reservations of this node lost or refused (client).
    pub reservations_lost: u64,
    /// End-to-end connections this node runs over a circuit (client, both
    /// directions, counted when ready).
    pub relayed_connections: u64,
    /// Circuit streams that broke the framing (both sides).
    pub frame_errors: u64,
    /// Circuits of ours that a connection ran over with nothing coming back
    /// within the claim time, closed (client).
    pub dead_circuits: u64,
    /// Relays taken for ones that drop circuit traffic: released and
    /// avoided (client).
    pub dead_relays: u64,
    /// Relay connections of ours that left data unacknowledged for the
    /// silence limit: closed, and the relay avoided (client).
    pub silent_relays: u64,
    /// Our circuit requests that got no answer (none within
    /// [`CIRCUIT_ANSWER_TIMEOUT`](client::CIRCUIT_ANSWER_TIMEOUT), the relay
    /// connection closed first, or no stream): the dial moved on to the
    /// peer's next relay (client).
    pub unanswered_circuit_requests: u64,
    /// Spare circuits opened behind direct connections that had lost their
    /// circuit, by us or by the peer (client).
    pub spares_opened: u64,
    /// Spare circuits a direct connection fell back onto, or heard its
    /// peer over (client).
    pub spares_adopted: u64,
    /// Connections carrying circuits relayed here that left data
    /// unacknowledged, and the relay's probes unanswered, for the silence
    /// limit: closed with their reservation and circuits (server).
    pub silent_circuit_ends: u64,
}

impl RelayCounters {
    /// Adds `other`'s counts to these (the server's and the client's
    /// counters make the node's).
    pub fn add(&mut self, other: &RelayCounters) {
        let RelayCounters {
            reservations_granted,
            reservations_ended,
            circuits_opened,
            circuits_closed,
            bytes_forwarded,
            packets_forwarded,
            dropped_rate,
            dropped_total_rate,
            dropped_queue_full,
            refused_disabled,
            refused_no_reservation,
            refused_limit,
            refused_ip_limit,
            refused_unreachable,
            refused_bad_request,
            circuits_over_limit,
            packets_to_circuits,
            reservations_held,
            reservations_lost,
            relayed_connections,
            frame_errors,
            dead_circuits,
            dead_relays,
            silent_relays,
            unanswered_circuit_requests,
            spares_opened,
            spares_adopted,
            silent_circuit_ends,
        } = other;
        self.reservations_granted += reservations_granted;
        self.reservations_ended += reservations_ended;
        self.circuits_opened += circuits_opened;
        self.circuits_closed += circuits_closed;
        self.bytes_forwarded += bytes_forwarded;
        self.packets_forwarded += packets_forwarded;
        self.dropped_rate += dropped_rate;
        self.dropped_total_rate += dropped_total_rate;
        self.dropped_queue_full += dropped_queue_full;
        self.refused_disabled += refused_disabled;
        self.refused_no_reservation += refused_no_reservation;
        self.refused_limit += refused_limit;
        self.refused_ip_limit += refused_ip_limit;
        self.refused_unreachable += refused_unreachable;
        self.refused_bad_request += refused_bad_request;
        self.circuits_over_limit += circuits_over_limit;
        self.packets_to_circuits += packets_to_circuits;
        self.reservations_held += reservations_held;
        self.reservations_lost += reservations_lost;
        self.relayed_connections += relayed_connections;
        self.frame_errors += frame_errors;
        self.dead_circuits += dead_circuits;
        self.dead_relays += dead_relays;
        self.silent_relays += silent_relays;
        self.unanswered_circuit_requests += unanswered_circuit_requests;
        self.spares_opened += spares_opened;
        self.spares_adopted += spares_adopted;
        self.silent_circuit_ends += silent_circuit_ends;
    }
}
