//! What the relay server asks the node to do, and which of its inputs
//! each request reports back to.

use quinn_proto::{StreamId, VarInt};

use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::wire::Message;

/// What the relay server asks the node to do.
#[derive(Debug)]
pub enum RelayServerOutput {
    /// Write the one answer of a request stream and finish it (reset it
    /// with the node's refusal code when the write fails).
    Answer {
        /// The connection.
        conn: ConnId,
        /// The request stream.
        stream: StreamId,
        /// The answer.
        frame: Message,
    },
    /// Finish a request stream that needs no answer (RELAY_RELEASE).
    Finish {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// Open a stream on `conn` if it is ready, write `frame`
    /// (CIRCUIT_INCOMING) on it without finishing, and report the stream
    /// (or `None`) with [`RelayServer::handle_target_stream`](super::RelayServer::handle_target_stream).
    Announce {
        /// The target's reserved connection.
        conn: ConnId,
        /// The circuit being opened.
        circuit: u64,
        /// The announcement.
        frame: Message,
    },
    /// Write `frame` (the granted CIRCUIT_STATUS) without finishing: the
    /// stream carries circuit frames from now on. Hand the bytes already
    /// read past the frame to [`RelayServer::handle_circuit_bytes`](super::RelayServer::handle_circuit_bytes).
    Splice {
        /// The dialer's connection.
        conn: ConnId,
        /// The dialer's stream.
        stream: StreamId,
        /// The answer.
        frame: Message,
    },
    /// Write a circuit frame on a stream unless its queue would pass
    /// [`RelayConfig::max_queued_per_circuit`](crate::relay::RelayConfig::max_queued_per_circuit); report what became of it
    /// with [`RelayServer::handle_forwarded`](super::RelayServer::handle_forwarded).
    Forward {
        /// The connection.
        conn: ConnId,
        /// The circuit stream.
        stream: StreamId,
        /// The frame.
        frame: bytes::Bytes,
    },
    /// Tell `conn`'s peer, on its control stream, where this relay sees the other end of
    /// `circuit`: the remote address of `other` (CIRCUIT_PEER), unless that end came
    /// over a circuit itself or the peer did not announce
    /// [`Capabilities::CIRCUIT_PEER`](crate::wire::Capabilities::CIRCUIT_PEER).
    Vouch {
        /// One end's connection.
        conn: ConnId,
        /// The circuit.
        circuit: u64,
        /// The other end's connection.
        other: ConnId,
    },
    /// Reset a circuit stream (and stop reading it) with `code`.
    Reset {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
        /// [`CIRCUIT_LIMIT`](crate::relay::CIRCUIT_LIMIT), [`CIRCUIT_PEER_GONE`](crate::relay::CIRCUIT_PEER_GONE) or [`CIRCUIT_BROKEN`](crate::relay::CIRCUIT_BROKEN).
        code: VarInt,
    },
    /// Take a lease on `conn` so the pool never evicts it as idle, if the
    /// pool holds it as the ready connection of its peer; report it with
    /// [`RelayServer::handle_pinned`](super::RelayServer::handle_pinned).
    Pin {
        /// The connection.
        conn: ConnId,
        /// What needs it.
        pin: ServerPin,
    },
    /// Give a lease back to the pool.
    Release(Lease),
}

/// What a lease of the relay server keeps pooled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerPin {
    /// The reservation of this node.
    Reservation(NodeId),
    /// One side (0: dialer, 1: target) of a circuit.
    Splice {
        /// The circuit.
        circuit: u64,
        /// The side.
        side: usize,
    },
}
