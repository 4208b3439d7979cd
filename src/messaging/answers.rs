//! The requests we answer and the stream each came on: CALLs we handle (by
//! caller and request id, and by stream, since a CANCEL, a reset or a lost
//! connection ends them) and SUBSCRIBE/UNSUBSCRIBE requests waiting for the
//! pub/sub machine's answer. An answer goes on its request's stream, which
//! it then finishes; when the stream is gone, so is the answer.

use crate::collections::HashMap;
use crate::exchange::{PeerRequest, StreamKey};
use crate::id::NodeId;
use crate::pool::ConnId;
use crate::wire::Message;

/// Requests waiting for our answer.
#[derive(Debug, Default)]
pub(super) struct Answers {
    /// Calls we handle, and their streams.
    handling: HashMap<PeerRequest, StreamKey>,
    /// The same, by stream.
    by_stream: HashMap<StreamKey, PeerRequest>,
    /// SUBSCRIBE and UNSUBSCRIBE requests.
    asks: HashMap<PeerRequest, StreamKey>,
}

impl Answers {
    /// `caller`'s CALL `request_id` came on `at`.
    pub(super) fn handling(&mut self, caller: NodeId, request_id: u64, at: StreamKey) {
        let call = PeerRequest {
            peer: caller,
            request_id,
        };
        self.handling.insert(call, at);
        self.by_stream.insert(at, call);
    }

    /// `caller` cancelled its CALL `request_id`: the stream it came on, if
    /// we still handle it.
    pub(super) fn cancelled(&mut self, caller: NodeId, request_id: u64) -> Option<StreamKey> {
        let call = PeerRequest {
            peer: caller,
            request_id,
        };
        let at = self.handling.remove(&call)?;
        self.by_stream.remove(&at);
        Some(at)
    }

    /// `peer`'s SUBSCRIBE or UNSUBSCRIBE `request_id` came on `at`.
    pub(super) fn asked(&mut self, peer: NodeId, request_id: u64, at: StreamKey) {
        self.asks.insert(PeerRequest { peer, request_id }, at);
    }

    /// Where the answer to `caller`'s CALL goes.
    pub(super) fn answered_call(&mut self, caller: NodeId, answer: &Message) -> Option<StreamKey> {
        self.cancelled(caller, answer.request_id()?)
    }

    /// Where the answer to `peer`'s SUBSCRIBE or UNSUBSCRIBE goes.
    pub(super) fn answered_ask(&mut self, peer: NodeId, answer: &Message) -> Option<StreamKey> {
        let request_id = answer.request_id()?;
        self.asks.remove(&PeerRequest { peer, request_id })
    }

    /// The peer reset or stopped `stream`: the call we handled on it.
    pub(super) fn stream_gone(&mut self, at: StreamKey) -> Option<PeerRequest> {
        let call = self.by_stream.remove(&at)?;
        self.handling.remove(&call);
        Some(call)
    }

    /// `conn` is going away: the calls we handled on it (their requests to
    /// answer are forgotten too).
    pub(super) fn released(&mut self, conn: ConnId) -> Vec<PeerRequest> {
        let calls: Vec<PeerRequest> = self
            .by_stream
            .extract_if(|at, _| at.conn == conn)
            .map(|(_, call)| call)
            .collect();
        for call in &calls {
            self.handling.remove(call);
        }
        self.asks.retain(|_, at| at.conn != conn);
        calls
    }
}
