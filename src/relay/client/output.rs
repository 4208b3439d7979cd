//! What the relay client asks the node to do, and which of its inputs
//! each request reports back to.

use std::net::SocketAddr;

use bytes::Bytes;
use quinn_proto::StreamId;

use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::relay::{CircuitLoss, RelayEvent};
use crate::wire::Message;

/// What the relay client asks the node to do.
#[derive(Debug)]
pub enum RelayClientOutput {
    /// Get a pooled connection to `peer` at `addr` and report the outcome
    /// with [`RelayClient::handle_acquired`](super::RelayClient::handle_acquired) (a wait that ends later with
    /// [`RelayClient::handle_wait_ready`](super::RelayClient::handle_wait_ready) or
    /// [`RelayClient::handle_wait_failed`](super::RelayClient::handle_wait_failed)).
    Acquire {
        /// Names the acquire in the report.
        token: u64,
        /// The node.
        peer: NodeId,
        /// Where to reach it.
        addr: SocketAddr,
    },
    /// Open a stream on `conn`, write `frame` (finishing the stream if
    /// `finish`) and report the stream (or `None`) with
    /// [`RelayClient::handle_request_stream`](super::RelayClient::handle_request_stream).
    Request {
        /// The relay connection.
        conn: ConnId,
        /// Names the request in the report.
        request_id: u64,
        /// RELAY_RESERVE or CIRCUIT_OPEN.
        frame: Message,
        /// Whether the request is the stream's last word.
        finish: bool,
    },
    /// Open a stream on `conn`, write `frame` (RELAY_RELEASE) finishing it,
    /// and stop reading it: no answer is expected.
    Notify {
        /// The relay connection.
        conn: ConnId,
        /// The notice.
        frame: Message,
    },
    /// Give a lease back to the pool.
    Release(Lease),
    /// Take a lease on `conn` if the pool holds it as the ready connection
    /// of its peer, and report it with [`RelayClient::handle_pinned`](super::RelayClient::handle_pinned).
    Pin {
        /// The relay connection.
        conn: ConnId,
        /// The relay.
        relay: NodeId,
        /// The circuit the lease keeps.
        circuit: u64,
    },
    /// Put the circuit behind a new virtual address and report it, with
    /// the bytes of `stream` already read past its last message (the
    /// stream carries circuit frames from now on), to
    /// [`RelayClient::handle_path`](super::RelayClient::handle_path).
    InstallPath {
        /// The relay.
        relay: NodeId,
        /// The node at the circuit's other end.
        peer: NodeId,
        /// The circuit's id there.
        circuit: u64,
        /// The relay connection.
        conn: ConnId,
        /// The circuit stream.
        stream: StreamId,
    },
    /// An inner QUIC packet that came over a circuit, for quinn under the
    /// circuit's virtual address.
    Packet {
        /// The circuit's virtual address.
        virtual_addr: SocketAddr,
        /// The packet.
        packet: Bytes,
        /// It came over a spare circuit: the virtual address is the spare's
        /// own, and a packet of the peer's direct connection adopts it
        /// ([`RelayClient::adopt_spare`](super::RelayClient::adopt_spare)).
        spare: bool,
    },
    /// Write a circuit frame unless the stream's queue would pass
    /// [`RelayConfig::max_queued_per_circuit`](crate::relay::RelayConfig::max_queued_per_circuit);
    /// report what became of it with [`RelayClient::handle_written`](super::RelayClient::handle_written).
    Write {
        /// The relay connection.
        conn: ConnId,
        /// The circuit stream.
        stream: StreamId,
        /// The frame.
        frame: Bytes,
    },
    /// Reset (and stop reading) a stream with the node's refusal code.
    Refuse {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// The relay broke the protocol (an answer no one asked for).
    ProtocolError,
    /// Our end of a circuit is gone: unless the path of `virtual_addr`
    /// moved off the circuit meanwhile (then the circuit was only its
    /// backup), close the connections over it with `loss` and drop the
    /// path once none is left.
    CircuitClosed {
        /// The relay.
        relay: NodeId,
        /// The circuit's id there.
        circuit: u64,
        /// The circuit's virtual address.
        virtual_addr: SocketAddr,
        /// Why it closed.
        loss: CircuitLoss,
        /// The node at the other end.
        peer: NodeId,
        /// Where we reached the relay, when we opened the circuit (a spare
        /// may then be asked there: [`RelayClient::handle_want_spare`](super::RelayClient::handle_want_spare)).
        via: Option<SocketAddr>,
        /// It was a spare.
        spare: bool,
    },
    /// Tell the application.
    Event(RelayEvent),
}
