//! Our calls on streams: each CALL is an exchange ([`crate::exchange`]) on a
//! request stream of its own, opened on a pooled connection to the provider;
//! our side stays open until the answer (REPLY or ERROR) arrives so that a
//! CANCEL can follow on it (docs/PROTOCOL.md §2). A call holds its lease
//! from the moment it has a connection until it ends. When the peer allows
//! no more streams, calls wait per connection, oldest first, and go when it
//! allows more. The RPC machine keeps each call's time; this module turns
//! the exchanges' outcomes into its inputs.
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

use std::time::Instant;

use quinn_proto::StreamId;

use super::{Errand, MessagingOutput, Unopened};
use crate::contract::{Child, OutputQueue};
use crate::exchange::{ExchangeOutput, Exchanges, Lane, PeerRequest, Slot, StreamKey};
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::rpc::{Delivery, Rpc};
use crate::wire::{Call, Cancel, Message};

/// Our calls.
#[derive(Debug)]
pub(super) struct Calls {
    exchanges: Exchanges<PeerRequest>,
}

impl Default for Calls {
    fn default() -> Self {
        // The RPC machine times calls out itself (and cancels them).
        Self {
            exchanges: Exchanges::new(None),
        }
    }
}

type Out = OutputQueue<MessagingOutput>;

impl Calls {
    /// The machine asks for a CALL to `provider`: find a connection.
    pub(super) fn start(&mut self, out: &mut Out, provider: NodeId, message: Call) {
        let key = PeerRequest {
            peer: provider,
            request_id: message.request_id,
        };
        if self
            .exchanges
            .start(key, Message::Call(message), Lane::OwnStream)
        {
            let errand = Errand::Call(key);
            out.push(MessagingOutput::Connect {
                peer: provider,
                errand,
            });
        }
    }

    /// A connection for a call: open its stream and write the CALL (the
    /// lease goes back when the call ended meanwhile).
    pub(super) fn connected(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        key: PeerRequest,
        lease: Lease,
    ) {
        self.exchanges.handle_leased(key, lease);
        self.carry_out(out, rpc, now);
    }

    /// No connection to the provider: the call fails undelivered.
    pub(super) fn unreachable(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        key: PeerRequest,
    ) {
        self.exchanges.handle_unreachable(key);
        self.carry_out(out, rpc, now);
    }

    /// The outcome of opening a call's stream.
    pub(super) fn opened(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        key: PeerRequest,
        lease: Lease,
        opened: Result<StreamId, Unopened>,
    ) {
        let conn = lease.conn();
        let opened = opened.map(|stream| Slot::Stream(StreamKey { conn, stream }));
        self.exchanges.handle_opened(now, key, lease, opened);
        self.carry_out(out, rpc, now);
    }

    /// `conn` allows more streams: the oldest call waiting on it goes (the
    /// next ones follow once its stream is open).
    pub(super) fn unblock(&mut self, out: &mut Out, rpc: &mut Rpc, now: Instant, conn: ConnId) {
        self.exchanges.handle_streams_available(conn);
        self.carry_out(out, rpc, now);
    }

    /// A frame on `at`: the answer to the call on that stream, if there is
    /// one (it ends); other frames come back.
    pub(super) fn answer(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        at: StreamKey,
        message: Message,
    ) -> Option<Message> {
        let other = self.exchanges.handle_answer(Slot::Stream(at), message);
        self.carry_out(out, rpc, now);
        other
    }

    /// The machine gives a call up: CANCEL on its stream when it was
    /// written.
    pub(super) fn cancel(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        provider: NodeId,
        frame: Cancel,
    ) {
        let key = PeerRequest {
            peer: provider,
            request_id: frame.request_id,
        };
        let written = self.exchanges.cancel(key).and_then(Slot::stream);
        self.carry_out(out, rpc, now);
        if let Some(StreamKey { conn, stream }) = written {
            out.push(MessagingOutput::Cancel {
                conn,
                stream,
                frame,
            });
        }
    }

    /// The peer reset or stopped `at`: if a call of ours was on it, it
    /// fails (undelivered when the peer `refused` it).
    pub(super) fn stream_gone(
        &mut self,
        out: &mut Out,
        rpc: &mut Rpc,
        now: Instant,
        at: StreamKey,
        refused: bool,
    ) {
        if !self.exchanges.awaits(Slot::Stream(at)) {
            return;
        }
        let StreamKey { conn, stream } = at;
        out.push(MessagingOutput::Reset { conn, stream });
        self.exchanges.handle_stream_gone(at, refused);
        self.carry_out(out, rpc, now);
    }

    /// `conn` is going away: its calls fail (a written CALL may have been
    /// delivered, a blocked one was not).
    pub(super) fn released(&mut self, out: &mut Out, rpc: &mut Rpc, now: Instant, conn: ConnId) {
        self.exchanges.handle_conn_gone(conn);
        self.carry_out(out, rpc, now);
    }

    /// Turns the exchanges' outputs into the Node's work and the RPC
    /// machine's inputs.
    fn carry_out(&mut self, out: &mut Out, rpc: &mut Rpc, now: Instant) {
        while let Some(output) = self.exchanges.poll_output() {
            match output {
                ExchangeOutput::Send {
                    key, lease, frame, ..
                } => out.push(MessagingOutput::Open {
                    lease,
                    errand: Errand::Call(key),
                    frame: Some(frame),
                }),
                ExchangeOutput::Sent { key, .. } => rpc.handle_sent(now, &key.peer, key.request_id),
                ExchangeOutput::Abandon(StreamKey { conn, stream }) => {
                    out.push(MessagingOutput::Reset { conn, stream })
                }
                ExchangeOutput::Release(lease) => out.push(MessagingOutput::Release(lease)),
                ExchangeOutput::Answered { key, slot, message } => {
                    if let Some(StreamKey { conn, stream }) = slot.stream() {
                        out.push(MessagingOutput::Finish { conn, stream });
                    }
                    answered(out, rpc, now, key, message);
                }
                ExchangeOutput::Failed { key, why, .. } => {
                    let delivery = if why.maybe_delivered() {
                        Delivery::MaybeDelivered
                    } else {
                        Delivery::NotDelivered
                    };
                    rpc.handle_failure(now, &key.peer, key.request_id, delivery);
                }
            }
        }
    }
}

/// The answer to call `key` came: the machine hears of it, or of a broken
/// protocol when it is not an answer to that call.
fn answered(out: &mut Out, rpc: &mut Rpc, now: Instant, key: PeerRequest, message: Message) {
    let PeerRequest { peer, request_id } = key;
    match message {
        Message::Reply(reply) if reply.request_id == request_id => {
            rpc.handle_reply(now, &peer, reply);
        }
        Message::ErrorReply(error) if error.request_id == request_id => {
            rpc.handle_error(now, &peer, error);
        }
        _ => {
            out.push(MessagingOutput::ProtocolError);
            rpc.handle_failure(now, &peer, request_id, Delivery::MaybeDelivered);
        }
    }
}
