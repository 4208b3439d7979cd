//! What [`Messaging`] asks the Node to do ([`MessagingOutput`]), and the
//! type the Node hands back with its answers: the [`Errand`] a connection is
//! for.

use std::time::Duration;

use bytes::Bytes;
use quinn_proto::StreamId;

#[cfg(doc)]
use super::Messaging;
use super::{Owner, Unopened};
use crate::contract::OutputQueue;
use crate::exchange::PeerRequest;
use crate::id::{NodeId, RecordKey};
use crate::pool::{ConnId, Lease};
use crate::pubsub::PubSubEvent;
use crate::rpc::RpcEvent;
use crate::wire::{Cancel, Capabilities, Message, Publish};

/// Something that waits for a connection to a peer (the Node keeps it while
/// it finds the peer and hands it back with the lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errand {
    /// One of our CALLs.
    Call(PeerRequest),
    /// The publish stream to a subscriber.
    Publish(NodeId),
}

impl Errand {
    /// The capability the peer must have announced for this errand
    /// (docs/PROTOCOL.md §6): RPC for a CALL, PUBSUB for a publish stream.
    pub fn capability(&self) -> Capabilities {
        match self {
            Errand::Call(_) => Capabilities::RPC,
            Errand::Publish(_) => Capabilities::PUBSUB,
        }
    }

    /// The peer the errand needs a connection to.
    pub fn peer(&self) -> NodeId {
        match self {
            Errand::Call(request) => request.peer,
            Errand::Publish(subscriber) => *subscriber,
        }
    }
}

/// What [`Messaging`] asks the Node to do.
#[derive(Debug)]
pub enum MessagingOutput {
    /// Get a lease on a connection to `peer`; answer with
    /// [`Messaging::handle_connected`] or [`Messaging::handle_unreachable`].
    Connect {
        /// The peer.
        peer: NodeId,
        /// What the connection is for.
        errand: Errand,
    },
    /// Open a stream on the lease's connection and write `frame` (when
    /// there is one) without finishing it; answer with
    /// [`Messaging::handle_opened`], handing the lease back.
    Open {
        /// The lease the stream goes on.
        lease: Lease,
        /// What the stream is for.
        errand: Errand,
        /// The first frame.
        frame: Option<Message>,
    },
    /// Write a PUBLISH frame on a publish stream; then report with
    /// [`Messaging::handle_flushed`] if the stream is flushed.
    Publish {
        /// The connection.
        conn: ConnId,
        /// The publish stream.
        stream: StreamId,
        /// The frame.
        frame: Publish,
    },
    /// Write an answer (REPLY, ERROR, or a SUBSCRIBE/UNSUBSCRIBE answer) on
    /// the stream its request came on and finish the stream; reset it if the
    /// answer does not encode.
    Answer {
        /// The connection.
        conn: ConnId,
        /// The request's stream.
        stream: StreamId,
        /// The answer.
        frame: Message,
    },
    /// Give up one of our calls on its stream: CANCEL and finish it, or reset
    /// it while the CALL is not all out.
    Cancel {
        /// The connection.
        conn: ConnId,
        /// The call's stream.
        stream: StreamId,
        /// The CANCEL frame.
        frame: Cancel,
    },
    /// One of our calls was answered: finish its stream, or reset it while
    /// the CALL is not all out.
    Finish {
        /// The connection.
        conn: ConnId,
        /// The call's stream.
        stream: StreamId,
    },
    /// Reset a stream (a request given up after it was read).
    Reset {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// Give a lease back to the pool.
    Release(Lease),
    /// Run a DHT lookup of `key` for `owner`; answer with
    /// [`Messaging::handle_lookup_started`].
    Lookup {
        /// The key.
        key: RecordKey,
        /// How long the lookup may take.
        timeout: Duration,
        /// The machine it runs for.
        owner: Owner,
    },
    /// Store `value` under `key` with confirmation (and republish it); report
    /// a store the DHT refuses at once with [`Messaging::handle_announced`].
    Announce {
        /// The key.
        key: RecordKey,
        /// The value.
        value: Bytes,
    },
    /// Stop publishing under `key`.
    Withdraw {
        /// The key.
        key: RecordKey,
    },
    /// A peer broke the protocol (count it).
    ProtocolError,
    /// QUIC took all of a PUBLISH frame (the delivery latency ends).
    PublishWritten {
        /// The message id.
        message_id: u64,
    },
    /// Tell the application about RPC.
    Rpc(RpcEvent),
    /// Tell the application about pub/sub.
    PubSub(PubSubEvent),
}

/// A stream opened for an errand that ended meanwhile: reset it (if it was
/// opened) and give the lease back.
pub(super) fn give_back(
    out: &mut OutputQueue<MessagingOutput>,
    lease: Lease,
    opened: Result<StreamId, Unopened>,
) {
    if let Ok(stream) = opened {
        let conn = lease.conn();
        out.push(MessagingOutput::Reset { conn, stream });
    }
    out.push(MessagingOutput::Release(lease));
}
