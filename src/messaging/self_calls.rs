//! Calls of a procedure this node serves itself: the [`Rpc`] machine's
//! outputs addressed to our own id never touch the network. A CALL to
//! ourselves goes straight to the handler side (the application sees the
//! same [`RpcEvent::Request`] and answers it like any other), its answer
//! straight back to the caller side, and a CANCEL to the handler.
//!
//! [`RpcEvent::Request`]: crate::rpc::RpcEvent::Request

use std::time::Instant;

use crate::id::NodeId;
use crate::rpc::{Rpc, RpcOutput};
use crate::wire::Message;

/// Carries out `output` in-process when it is addressed to `local`;
/// otherwise gives it back.
pub(super) fn to_self(
    local: NodeId,
    rpc: &mut Rpc,
    now: Instant,
    output: RpcOutput,
) -> Option<RpcOutput> {
    match output {
        RpcOutput::Call {
            provider, message, ..
        } if provider == local => {
            rpc.handle_sent(now, &local, message.request_id);
            rpc.handle_call(now, local, message);
        }
        RpcOutput::Cancel { provider, message } if provider == local => {
            rpc.handle_cancel(now, local, message.request_id);
        }
        RpcOutput::Answer { caller, message } if caller == local => match message {
            Message::Reply(reply) => rpc.handle_reply(now, &local, reply),
            Message::ErrorReply(error) => rpc.handle_error(now, &local, error),
            other => tracing::debug!(?other, "not an answer; dropped"),
        },
        other => return Some(other),
    }
    None
}
