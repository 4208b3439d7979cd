//! Relay messages (0x50–0x55): reservations on a relay and circuits
//! through it (docs/PROTOCOL.md §11).
//!
//! Each request travels on a bidirectional stream of its own. After a
//! granted CIRCUIT_OPEN (dialer side) or a CIRCUIT_INCOMING (target side)
//! the stream stops carrying frames: from the next byte on it carries
//! circuit frames (a u16 length and one end-to-end QUIC packet, see
//! `relay::frames`).

use std::net::SocketAddr;

use crate::id::NodeId;

use super::field::{wire_enum, wire_struct};

wire_enum! {
    /// The outcome of a relay request (RESERVE_STATUS, CIRCUIT_STATUS), one byte.
    pub enum RelayStatus: u8 {
        /// Granted.
        Ok = 0,
        /// This node does not relay.
        RelayDisabled = 1,
        /// The target holds no reservation on this relay.
        NoReservation = 2,
        /// A limit of the relay is reached (reservations, circuits, per
        /// peer or in total).
        LimitReached = 3,
        /// The target's reserved connection is gone or would not take the
        /// circuit.
        TargetUnreachable = 4,
        /// The request makes no sense (a circuit to oneself, ...).
        BadRequest = 5,
    }
}

wire_struct! {
    /// RELAY_RESERVE (0x50): asks the relay to accept circuits for the
    /// sender over this connection, or renews the reservation.
    pub struct RelayReserve {
        /// Echoed by RELAY_RESERVE_STATUS.
        pub request_id: u64,
    }
}

wire_struct! {
    /// RELAY_RESERVE_STATUS (0x51): the relay's answer to RELAY_RESERVE.
    pub struct RelayReserveStatus {
        /// The request's id.
        pub request_id: u64,
        /// Granted or why not.
        pub status: RelayStatus,
        /// Seconds the reservation lasts from now (0 when refused).
        pub ttl_secs: u32,
    }
}

wire_struct! {
    /// RELAY_RELEASE (0x52): the sender gives its reservation up; no answer
    /// follows (the relay finishes the stream).
    pub struct RelayRelease {
        /// The request's id.
        pub request_id: u64,
    }
}

wire_struct! {
    /// CIRCUIT_OPEN (0x53): asks the relay for a circuit to `target`.
    pub struct CircuitOpen {
        /// Echoed by CIRCUIT_STATUS.
        pub request_id: u64,
        /// The node to reach.
        pub target: NodeId,
    }
}

wire_struct! {
    /// CIRCUIT_STATUS (0x54): the relay's answer to CIRCUIT_OPEN. When the
    /// status is OK the stream carries circuit frames from the next byte.
    pub struct CircuitStatus {
        /// The request's id.
        pub request_id: u64,
        /// Granted or why not.
        pub status: RelayStatus,
        /// The circuit's id at this relay (0 when refused).
        pub circuit: u64,
    }
}

wire_struct! {
    /// CIRCUIT_INCOMING (0x55): the relay announces a circuit to the
    /// reserved node, on a stream it opens; the stream carries circuit
    /// frames from the next byte.
    pub struct CircuitIncoming {
        /// The circuit's id at this relay.
        pub circuit: u64,
        /// The dialer.
        pub source: NodeId,
    }
}

wire_struct! {
    /// CIRCUIT_PEER (0x56): on the control stream, the relay tells one end of a circuit
    /// the address it observes the other end's connection at. Unlike an address the peer
    /// announces, the relay vouches for it: a node aims a birthday search only at this IP.
    /// Sent only to a node that announced
    /// [`Capabilities::CIRCUIT_PEER`](super::Capabilities::CIRCUIT_PEER).
    pub struct CircuitPeer {
        /// The circuit's id at this relay.
        pub circuit: u64,
        /// Where the relay sees the other end.
        pub peer: SocketAddr,
    }
}
