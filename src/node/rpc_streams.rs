//! RPC on streams: each CALL goes on a request stream of its own, opened on
//! a pooled connection to the provider; our side stays open until the
//! answer (REPLY or ERROR) arrives so that a CANCEL can follow on it
//! (docs/PROTOCOL.md §2). Inbound CALLs are handed to the [`Rpc`] machine
//! and answered on their stream; a CANCEL, a reset or a lost connection ends
//! them.
//!
//! **Delivery.** A CALL that fails without an answer is reported
//! [`Delivery::NotDelivered`] when it never reached a stream (no address, no
//! connection, no stream before the connection went away) or when the peer
//! stopped the stream with the node's "refused" code, which a node sends only
//! for a request it did not serve. Everything else — connection lost, stream
//! reset, an answer that does not decode — is [`Delivery::MaybeDelivered`]:
//! the handler may have run, so the machine fails over only when that is
//! safe.
//!
//! **Large payloads.** A CALL or REPLY too large for one frame is streamed
//! by its connection ([`Conn::send`], [`crate::wire::Streamed`]) and put
//! back together before it reaches this module; an answer that comes while
//! our CALL is still streaming (the provider refused it) ends the stream
//! instead of sending the rest, and cancelling such a call resets its
//! stream instead of writing CANCEL.
//!
//! [`Rpc`]: crate::rpc::Rpc

use std::time::Instant;

use quinn_proto::{ConnectionHandle, StreamId, VarInt};

use super::conn::Conn;
use super::messaging::{Errand, STREAM_ABANDONED};
use super::{Node, STREAM_REFUSED};
use crate::id::NodeId;
use crate::pool::Lease;
use crate::rpc::Delivery;
use crate::wire::{Call, Cancel, Message};

/// Where one of our calls is.
pub(super) enum CallState {
    /// Waiting for the provider's address or a connection.
    Reaching,
    /// Waiting for the peer to allow another stream.
    Blocked {
        handle: ConnectionHandle,
        lease: Lease,
    },
    /// Written; waiting for the answer.
    Open {
        handle: ConnectionHandle,
        stream: StreamId,
        lease: Lease,
    },
}

/// One of our calls on its way to a provider.
pub(super) struct OutCall {
    message: Call,
    state: CallState,
}

impl Node {
    /// The machine asks for a CALL to `provider`.
    pub(super) fn start_call(&mut self, now: Instant, provider: NodeId, message: Call) {
        let request_id = message.request_id;
        let call = OutCall {
            message,
            state: CallState::Reaching,
        };
        self.messaging.calls.insert((provider, request_id), call);
        self.reach(now, provider, Errand::Call(provider, request_id));
    }

    /// A connection for a call: open its stream and write the CALL.
    pub(super) fn send_call(&mut self, now: Instant, key: (NodeId, u64), lease: Lease) {
        let handle = self.by_pool_id.get(&lease.conn()).copied();
        let Some((handle, conn)) = handle.and_then(|h| Some((h, self.conns.get_mut(&h)?))) else {
            self.pool.release(now, lease);
            self.fail_call(now, key, Delivery::NotDelivered);
            return;
        };
        if !self.messaging.calls.contains_key(&key) {
            self.pool.release(now, lease); // cancelled meanwhile
            return;
        }
        match conn.open() {
            Some(stream) => self.write_call(now, key, handle, stream, lease),
            None => {
                if let Some(call) = self.messaging.calls.get_mut(&key) {
                    call.state = CallState::Blocked { handle, lease };
                }
                let queue = self.messaging.blocked.entry(handle).or_default();
                queue.push_back(key);
            }
        }
    }

    fn write_call(
        &mut self,
        now: Instant,
        key: (NodeId, u64),
        handle: ConnectionHandle,
        stream: StreamId,
        lease: Lease,
    ) {
        let (Some(call), Some(conn)) = (
            self.messaging.calls.get_mut(&key),
            self.conns.get_mut(&handle),
        ) else {
            self.pool.release(now, lease);
            return;
        };
        match conn.send(stream, &Message::Call(call.message.clone()), false) {
            Ok(()) => {
                call.state = CallState::Open {
                    handle,
                    stream,
                    lease,
                };
                self.messaging.call_streams.insert((handle, stream), key);
                self.rpc.handle_sent(now, &key.0, key.1);
            }
            Err(error) => {
                tracing::debug!(%error, "CALL not encoded");
                conn.abandon(stream, STREAM_REFUSED);
                self.pool.release(now, lease);
                self.fail_call(now, key, Delivery::NotDelivered);
            }
        }
    }

    /// The peer allows more streams: write the calls that waited, in order.
    pub(super) fn send_blocked_calls(&mut self, now: Instant, handle: ConnectionHandle) {
        loop {
            let Some(queue) = self.messaging.blocked.get_mut(&handle) else {
                return;
            };
            let Some(&key) = queue.front() else {
                self.messaging.blocked.remove(&handle);
                return;
            };
            let Some(call) = self
                .messaging
                .calls
                .get_mut(&key)
                .filter(|c| matches!(c.state, CallState::Blocked { .. }))
            else {
                queue.pop_front(); // cancelled or failed meanwhile
                continue;
            };
            let Some(stream) = self.conns.get_mut(&handle).and_then(Conn::open) else {
                return;
            };
            queue.pop_front();
            let CallState::Blocked { lease, .. } =
                std::mem::replace(&mut call.state, CallState::Reaching)
            else {
                unreachable!("filtered above");
            };
            self.write_call(now, key, handle, stream, lease);
        }
    }

    /// Forgets one of our calls and gives its lease back; `None` when there
    /// is no such call, else its stream if it was written (what the call
    /// waited for before finds no call and lets go).
    fn take_call(
        &mut self,
        now: Instant,
        key: (NodeId, u64),
    ) -> Option<Option<(ConnectionHandle, StreamId)>> {
        let call = self.messaging.calls.remove(&key)?;
        Some(match call.state {
            CallState::Open {
                handle,
                stream,
                lease,
            } => {
                self.messaging.call_streams.remove(&(handle, stream));
                self.pool.release(now, lease);
                Some((handle, stream))
            }
            CallState::Blocked { lease, .. } => {
                self.pool.release(now, lease);
                None
            }
            CallState::Reaching => None,
        })
    }

    /// Ends one of our calls without an answer and tells the machine.
    fn fail_call(&mut self, now: Instant, key: (NodeId, u64), delivery: Delivery) {
        if self.take_call(now, key).is_some() {
            self.rpc.handle_failure(now, &key.0, key.1, delivery);
        }
    }

    /// The machine gives a call up: CANCEL on its stream, then finish it.
    pub(super) fn cancel_out(&mut self, now: Instant, provider: NodeId, message: Cancel) {
        let written = self
            .take_call(now, (provider, message.request_id))
            .flatten();
        let Some((handle, stream)) = written else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        if !conn.is_flushed(stream) {
            // The CALL is not all out (a streamed payload): the provider has
            // not started it, so the stream is simply given up.
            conn.abandon(stream, STREAM_ABANDONED);
            return;
        }
        conn.forget(stream);
        let _ = conn.send(stream, &Message::Cancel(message), true);
        let _ = conn.quinn.recv_stream(stream).stop(STREAM_ABANDONED);
    }

    /// A frame on a stream, if it is RPC's: an answer to one of our calls,
    /// a CALL to serve or a CANCEL. Other frames come back.
    pub(super) fn rpc_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        peer: NodeId,
        message: Message,
    ) -> Option<Message> {
        if let Some(&key) = self.messaging.call_streams.get(&(handle, stream)) {
            self.call_answered(now, key, handle, stream, message);
            return None;
        }
        match message {
            Message::Call(call) => {
                let key = (peer, call.request_id);
                self.messaging.handling.insert(key, (handle, stream));
                self.messaging
                    .handling_streams
                    .insert((handle, stream), key);
                self.rpc.handle_call(now, peer, call);
                None
            }
            Message::Cancel(cancel) => {
                let key = (peer, cancel.request_id);
                if let Some(at) = self.messaging.handling.remove(&key) {
                    self.messaging.handling_streams.remove(&at);
                    if let Some(conn) = self.conns.get_mut(&at.0) {
                        conn.abandon(at.1, STREAM_ABANDONED);
                    }
                }
                self.rpc.handle_cancel(now, peer, cancel.request_id);
                None
            }
            other => Some(other),
        }
    }

    fn call_answered(
        &mut self,
        now: Instant,
        key: (NodeId, u64),
        handle: ConnectionHandle,
        stream: StreamId,
        message: Message,
    ) {
        if self.take_call(now, key).is_none() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(&handle) {
            if conn.is_flushed(stream) {
                conn.forget(stream);
                conn.finish(stream);
            } else {
                // Answered before our streamed payload was all out (the
                // provider refused it): the rest is not sent.
                conn.abandon(stream, STREAM_ABANDONED);
            }
        }
        let (provider, request_id) = key;
        match message {
            Message::Reply(reply) if reply.request_id == request_id => {
                self.rpc.handle_reply(now, &provider, reply);
            }
            Message::ErrorReply(error) if error.request_id == request_id => {
                self.rpc.handle_error(now, &provider, error);
            }
            _ => {
                self.counters.protocol_errors += 1;
                self.rpc
                    .handle_failure(now, &provider, request_id, Delivery::MaybeDelivered);
            }
        }
    }

    /// The stream of one of our calls was reset or stopped.
    pub(super) fn call_stream_gone(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        code: Option<VarInt>,
    ) {
        let Some(&key) = self.messaging.call_streams.get(&(handle, stream)) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.abandon(stream, STREAM_ABANDONED);
        }
        let delivery = if code == Some(STREAM_REFUSED) {
            Delivery::NotDelivered
        } else {
            Delivery::MaybeDelivered
        };
        self.fail_call(now, key, delivery);
    }

    /// A connection is going away: its calls fail (a written CALL may have
    /// been delivered, a blocked one was not).
    pub(super) fn release_calls(&mut self, now: Instant, handle: ConnectionHandle) {
        self.messaging.blocked.remove(&handle);
        let failed: Vec<_> = self
            .messaging
            .calls
            .iter()
            .filter_map(|(key, call)| match &call.state {
                CallState::Open { handle: h, .. } if *h == handle => {
                    Some((*key, Delivery::MaybeDelivered))
                }
                CallState::Blocked { handle: h, .. } if *h == handle => {
                    Some((*key, Delivery::NotDelivered))
                }
                _ => None,
            })
            .collect();
        for (key, delivery) in failed {
            self.fail_call(now, key, delivery);
        }
    }

    /// The machine answers a call we handle.
    pub(super) fn answer_call(&mut self, caller: NodeId, message: Message) {
        let at = message
            .request_id()
            .and_then(|id| self.messaging.handling.remove(&(caller, id)));
        if let Some(at) = at {
            self.messaging.handling_streams.remove(&at);
        }
        self.write_answer(at, &message);
    }
}
