//! The requests we answer and the stream each came on: CALLs we handle (by
//! caller and request id, and by stream, since a CANCEL, a reset or a lost
//! connection ends them) and SUBSCRIBE/UNSUBSCRIBE requests waiting for the
//! pub/sub machine's answer. An answer goes on its request's stream, which
//! it then finishes; when the stream is gone, so is the answer.

use quinn_proto::StreamId;

use crate::collections::HashMap;
use crate::id::NodeId;
use crate::pool::ConnId;
use crate::wire::Message;

/// A stream, by connection.
type At = (ConnId, StreamId);

/// A request, by who asked and its request id.
type Asked = (NodeId, u64);

/// Requests waiting for our answer.
#[derive(Debug, Default)]
pub(super) struct Answers {
    /// Calls we handle, and their streams.
    handling: HashMap<Asked, At>,
    /// The same, by stream.
    by_stream: HashMap<At, Asked>,
    /// SUBSCRIBE and UNSUBSCRIBE requests.
    asks: HashMap<Asked, At>,
}

impl Answers {
    /// `caller`'s CALL `request_id` came on `at`.
    pub(super) fn handling(&mut self, caller: NodeId, request_id: u64, at: At) {
        self.handling.insert((caller, request_id), at);
        self.by_stream.insert(at, (caller, request_id));
    }

    /// `caller` cancelled its CALL `request_id`: the stream it came on, if
    /// we still handle it.
    pub(super) fn cancelled(&mut self, caller: NodeId, request_id: u64) -> Option<At> {
        let at = self.handling.remove(&(caller, request_id))?;
        self.by_stream.remove(&at);
        Some(at)
    }

    /// `peer`'s SUBSCRIBE or UNSUBSCRIBE `request_id` came on `at`.
    pub(super) fn asked(&mut self, peer: NodeId, request_id: u64, at: At) {
        self.asks.insert((peer, request_id), at);
    }

    /// Where the answer to `caller`'s CALL goes.
    pub(super) fn answered_call(&mut self, caller: NodeId, answer: &Message) -> Option<At> {
        self.cancelled(caller, answer.request_id()?)
    }

    /// Where the answer to `peer`'s SUBSCRIBE or UNSUBSCRIBE goes.
    pub(super) fn answered_ask(&mut self, peer: NodeId, answer: &Message) -> Option<At> {
        self.asks.remove(&(peer, answer.request_id()?))
    }

    /// The peer reset or stopped `stream`: the call we handled on it.
    pub(super) fn stream_gone(&mut self, conn: ConnId, stream: StreamId) -> Option<Asked> {
        let call = self.by_stream.remove(&(conn, stream))?;
        self.handling.remove(&call);
        Some(call)
    }

    /// `conn` is going away: the calls we handled on it (their requests to
    /// answer are forgotten too).
    pub(super) fn released(&mut self, conn: ConnId) -> Vec<Asked> {
        let calls: Vec<Asked> = self
            .by_stream
            .extract_if(|(c, _), _| *c == conn)
            .map(|(_, call)| call)
            .collect();
        for call in &calls {
            self.handling.remove(call);
        }
        self.asks.retain(|_, (c, _)| *c != conn);
        calls
    }
}
