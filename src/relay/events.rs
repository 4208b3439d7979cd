//! What the relay client tells the application, and why a relayed
//! connection closed with its circuit.

use std::time::Duration;

use crate::id::NodeId;
use crate::wire::RelayStatus;

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
    /// The relay or the peer went silent: nothing came over the circuit
    /// for the idle timeout, or our data over it went unacknowledged for
    /// the silence limit while the relay answered.
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
    /// A relay let [`RelayConfig::dead_circuits`](super::RelayConfig::dead_circuits)
    /// circuits of ours in a row bring our handshake no answer: it accepts
    /// circuits and drops their traffic. Our reservation there (if any) is
    /// released and the relay avoided for
    /// [`RelayConfig::avoid_dead_relay`](super::RelayConfig::avoid_dead_relay).
    RelayDropsCircuits {
        /// The relay.
        relay: NodeId,
    },
    /// Our connection to a relay left data unacknowledged for the silence
    /// limit ([`RelayConfig::silence`](super::RelayConfig::silence)): the
    /// relay is taken for dead, the connection closed (our reservation and
    /// circuits there are lost, reported as such) and the relay avoided for
    /// [`RelayConfig::avoid_dead_relay`](super::RelayConfig::avoid_dead_relay).
    RelaySilent {
        /// The relay.
        relay: NodeId,
    },
    /// A circuit is open; the end-to-end connection runs over it (an
    /// [`Event::Connected`](crate::node::Event::Connected) with
    /// [`PathKind::Relayed`](crate::path::PathKind::Relayed) follows when it
    /// is ready).
    CircuitOpened {
        /// The relay.
        relay: NodeId,
        /// The node at the other end.
        peer: NodeId,
        /// The circuit's id at the relay.
        circuit: u64,
    },
    /// A spare circuit is open behind our direct connection to `peer`,
    /// which had lost the circuit it came up over: should the direct path
    /// die, the connection falls back onto this one.
    SpareCircuitOpened {
        /// The relay.
        relay: NodeId,
        /// The node at the other end.
        peer: NodeId,
        /// The circuit's id at the relay.
        circuit: u64,
    },
}
