//! Our calls on streams: each CALL goes on a request stream of its own,
//! opened on a pooled connection to the provider; our side stays open until
//! the answer (REPLY or ERROR) arrives so that a CANCEL can follow on it
//! (docs/PROTOCOL.md §2). A call holds its lease from the moment it has a
//! connection until it ends. When the peer allows no more streams, calls
//! wait per connection, oldest first, and go when it allows more.
//!
//! **Delivery.** A CALL that fails without an answer is reported
//! [`Delivery::NotDelivered`] when it never reached a stream (no address, no
//! connection, no stream before the connection went away) or when the peer
//! stopped the stream with the node's "refused" code, which a node sends only
//! for a request it did not serve. Everything else (connection lost, stream
//! reset, an answer that is not one) is [`Delivery::MaybeDelivered`]: the
//! handler may have run, so the machine fails over only when that is safe.
//!
//! **Large payloads.** A CALL or REPLY too large for one frame is streamed
//! by its connection and put back together before it reaches this module;
//! the Node ends a stream whose CALL is not all out by resetting it instead
//! of finishing it or writing CANCEL ([`MessagingOutput::Finish`],
//! [`MessagingOutput::Cancel`]).

use std::collections::VecDeque;
use std::time::Instant;

use quinn_proto::StreamId;

use super::{Errand, MessagingOutput, Unopened, give_back};
use crate::collections::HashMap;
use crate::contract::OutputQueue;
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::rpc::{Delivery, Rpc};
use crate::wire::{Call, Cancel, Message};

/// One of our calls: the provider it goes to and its request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallKey {
    /// The provider.
    pub provider: NodeId,
    /// The CALL's request id.
    pub request_id: u64,
}

/// Where one of our calls is.
#[derive(Debug)]
enum CallState {
    /// Waiting for the provider's address, a connection or a stream being
    /// opened.
    Reaching,
    /// Waiting for the peer to allow another stream.
    Blocked { lease: Lease },
    /// Written; waiting for the answer.
    Open { stream: StreamId, lease: Lease },
}

/// One of our calls on its way to a provider.
#[derive(Debug)]
struct OutCall {
    message: Call,
    state: CallState,
}

/// Our calls.
#[derive(Debug, Default)]
pub(super) struct Calls {
    calls: HashMap<CallKey, OutCall>,
    /// Calls waiting for a stream on each connection, oldest first.
    blocked: HashMap<ConnId, VecDeque<CallKey>>,
    /// The open stream of each call.
    streams: HashMap<(ConnId, StreamId), CallKey>,
}

type Out = OutputQueue<MessagingOutput>;

impl Calls {
    /// The machine asks for a CALL to `provider`: find a connection.
    pub(super) fn start(&mut self, out: &mut Out, provider: NodeId, message: Call) {
        let key = CallKey {
            provider,
            request_id: message.request_id,
        };
        let state = CallState::Reaching;
        self.calls.insert(key, OutCall { message, state });
        let errand = Errand::Call(key);
        out.push(MessagingOutput::Connect {
            peer: provider,
            errand,
        });
    }

    /// A connection for a call: open its stream and write the CALL (the
    /// lease goes back when the call ended meanwhile).
    pub(super) fn connected(&mut self, out: &mut Out, key: CallKey, lease: Lease) {
        match self.calls.get(&key) {
            Some(call) => out.push(open(key, call, lease)),
            None => out.push(MessagingOutput::Release(lease)),
        }
    }

    /// No connection to the provider: the call fails undelivered.
    pub(super) fn unreachable(&mut self, rpc: &mut Rpc, now: Instant, key: CallKey) {
        if self.calls.remove(&key).is_some() {
            fail(rpc, now, key, Delivery::NotDelivered);
        }
    }

    /// The outcome of opening a call's stream.
    pub(super) fn opened(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        key: CallKey,
        lease: Lease,
        opened: Result<StreamId, Unopened>,
    ) {
        let conn = lease.conn();
        let queued = self.blocked.get(&conn).and_then(VecDeque::front) == Some(&key);
        let Some(call) = self.calls.get_mut(&key) else {
            give_back(out, lease, opened); // ended meanwhile
            return;
        };
        match opened {
            Ok(stream) => {
                call.state = CallState::Open { stream, lease };
                self.streams.insert((conn, stream), key);
                rpc.handle_sent(now, &key.provider, key.request_id);
            }
            Err(Unopened::Blocked) => {
                call.state = CallState::Blocked { lease };
                if !queued {
                    self.blocked.entry(conn).or_default().push_back(key);
                }
                return;
            }
            Err(Unopened::Gone | Unopened::NotEncoded) => {
                out.push(MessagingOutput::Release(lease));
                self.calls.remove(&key);
                fail(rpc, now, key, Delivery::NotDelivered);
            }
        }
        if queued {
            if let Some(queue) = self.blocked.get_mut(&conn) {
                queue.pop_front();
            }
            self.unblock(out, conn);
        }
    }

    /// `conn` allows more streams: the oldest call waiting on it goes (the
    /// next ones follow once its stream is open).
    pub(super) fn unblock(&mut self, out: &mut Out, conn: ConnId) {
        loop {
            let Some(queue) = self.blocked.get_mut(&conn) else {
                return;
            };
            let Some(&key) = queue.front() else {
                self.blocked.remove(&conn);
                return;
            };
            let Some(call) = self.calls.get_mut(&key) else {
                queue.pop_front(); // cancelled or failed meanwhile
                continue;
            };
            match std::mem::replace(&mut call.state, CallState::Reaching) {
                CallState::Blocked { lease } => {
                    out.push(open(key, call, lease));
                    return;
                }
                other => {
                    call.state = other;
                    queue.pop_front();
                }
            }
        }
    }

    /// The call whose stream `stream` of `conn` is.
    pub(super) fn on_stream(&self, conn: ConnId, stream: StreamId) -> Option<CallKey> {
        self.streams.get(&(conn, stream)).copied()
    }

    /// The machine gives a call up: CANCEL on its stream when it was
    /// written.
    pub(super) fn cancel(&mut self, out: &mut Out, provider: NodeId, frame: Cancel) {
        let request_id = frame.request_id;
        let key = CallKey {
            provider,
            request_id,
        };
        if let Some(Some((conn, stream))) = self.take(out, key) {
            out.push(MessagingOutput::Cancel {
                conn,
                stream,
                frame,
            });
        }
    }

    /// The answer to a call came on its stream.
    pub(super) fn answered(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        key: CallKey,
        message: Message,
    ) {
        let Some(Some((conn, stream))) = self.take(out, key) else {
            return;
        };
        out.push(MessagingOutput::Finish { conn, stream });
        let CallKey {
            provider,
            request_id,
        } = key;
        match message {
            Message::Reply(reply) if reply.request_id == request_id => {
                rpc.handle_reply(now, &provider, reply);
            }
            Message::ErrorReply(error) if error.request_id == request_id => {
                rpc.handle_error(now, &provider, error);
            }
            _ => {
                out.push(MessagingOutput::ProtocolError);
                fail(rpc, now, key, Delivery::MaybeDelivered);
            }
        }
    }

    /// The peer reset or stopped `stream`: if a call of ours was on it, it
    /// fails (undelivered when the peer `refused` it).
    pub(super) fn stream_gone(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        refused: bool,
    ) {
        let Some(key) = self.on_stream(conn, stream) else {
            return;
        };
        out.push(MessagingOutput::Reset { conn, stream });
        let delivery = if refused {
            Delivery::NotDelivered
        } else {
            Delivery::MaybeDelivered
        };
        self.end(out, rpc, now, key, delivery);
    }

    /// `conn` is going away: its calls fail (a written CALL may have been
    /// delivered, a blocked one was not).
    pub(super) fn released(&mut self, out: &mut Out, rpc: &mut Rpc, now: Instant, conn: ConnId) {
        self.blocked.remove(&conn);
        let failed: Vec<_> = self
            .calls
            .iter()
            .filter_map(|(key, call)| match &call.state {
                CallState::Open { lease, .. } if lease.conn() == conn => {
                    Some((*key, Delivery::MaybeDelivered))
                }
                CallState::Blocked { lease } if lease.conn() == conn => {
                    Some((*key, Delivery::NotDelivered))
                }
                _ => None,
            })
            .collect();
        for (key, delivery) in failed {
            self.end(out, rpc, now, key, delivery);
        }
    }

    /// Ends a call without an answer and tells the machine.
    fn end(&mut self, out: &mut Out, rpc: &mut Rpc, now: Instant, key: CallKey, how: Delivery) {
        if self.take(out, key).is_some() {
            fail(rpc, now, key, how);
        }
    }

    /// Forgets a call and gives its lease back; `None` when there is no such
    /// call, else its stream if it was written.
    fn take(&mut self, out: &mut Out, key: CallKey) -> Option<Option<(ConnId, StreamId)>> {
        let call = self.calls.remove(&key)?;
        Some(match call.state {
            CallState::Open { stream, lease } => {
                let conn = lease.conn();
                self.streams.remove(&(conn, stream));
                out.push(MessagingOutput::Release(lease));
                Some((conn, stream))
            }
            CallState::Blocked { lease } => {
                out.push(MessagingOutput::Release(lease));
                None
            }
            CallState::Reaching => None,
        })
    }
}

/// Open a stream for `call` on `lease` and write its CALL.
fn open(key: CallKey, call: &OutCall, lease: Lease) -> MessagingOutput {
    MessagingOutput::Open {
        lease,
        errand: Errand::Call(key),
        frame: Some(Message::Call(call.message.clone())),
    }
}

/// Tells the machine a call failed without an answer.
fn fail(rpc: &mut Rpc, now: Instant, key: CallKey, how: Delivery) {
    rpc.handle_failure(now, &key.provider, key.request_id, how);
}
