//! Calls of a procedure this node serves itself: the [`Rpc`] machine's
//! outputs addressed to our own id never touch the network. A CALL to
//! ourselves goes straight to the handler side (the application sees the
//! same [`RpcEvent::Request`] and answers with [`Node::reply`]), its answer
//! straight back to the caller side, and a CANCEL to the handler.
//!
//! [`Rpc`]: crate::rpc::Rpc
//! [`RpcEvent::Request`]: crate::rpc::RpcEvent::Request

use std::time::Instant;

use super::Node;
use crate::rpc::RpcOutput;
use crate::wire::Message;

impl Node {
    /// Carries out `output` in-process when it is addressed to this node;
    /// otherwise gives it back.
    pub(super) fn rpc_to_self(&mut self, now: Instant, output: RpcOutput) -> Option<RpcOutput> {
        let local = self.local;
        match output {
            RpcOutput::Call {
                provider, message, ..
            } if provider == local => {
                let request_id = message.request_id;
                self.rpc.handle_sent(now, &local, request_id);
                self.rpc.handle_call(now, local, message);
            }
            RpcOutput::Cancel { provider, message } if provider == local => {
                self.rpc.handle_cancel(now, local, message.request_id);
            }
            RpcOutput::Answer { caller, message } if caller == local => match message {
                Message::Reply(reply) => self.rpc.handle_reply(now, &local, reply),
                Message::ErrorReply(error) => self.rpc.handle_error(now, &local, error),
                other => tracing::debug!(?other, "not an answer; dropped"),
            },
            other => return Some(other),
        }
        None
    }
}
