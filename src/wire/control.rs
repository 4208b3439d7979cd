//! Control-plane messages (0x0_): the connection handshake, liveness and
//! closing.

use std::net::SocketAddr;

use crate::id::{NodeId, Realm};

use super::field::wire_struct;
use super::types::{Capabilities, DisconnectReason};

wire_struct! {
    /// CONNECT (0x01): the first frame each side sends on a connection.
    pub struct Connect {
        /// The sender's node id (must match its certificate).
        pub node_id: NodeId,
        /// The sender's realm; peers of different realms disconnect.
        pub realm: Realm,
        /// What the sender offers.
        pub capabilities: Capabilities,
        /// Where the sender listens, at most [`Limits::max_addrs`](super::Limits::max_addrs).
        pub listen_addrs: Vec<SocketAddr>; Addrs,
    }
}

wire_struct! {
    /// DISCONNECT (0x02): the sender is closing the connection, and why.
    pub struct Disconnect {
        /// The reason code.
        pub reason: DisconnectReason,
        /// Human-readable detail (may be empty).
        pub message: String,
    }
}

wire_struct! {
    /// PING (0x03): asks for a PONG.
    pub struct Ping {
        /// Echoed by the PONG.
        pub request_id: u64,
    }
}

wire_struct! {
    /// PONG (0x04): answers a PING.
    pub struct Pong {
        /// The PING's request id.
        pub request_id: u64,
    }
}
