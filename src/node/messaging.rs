//! RPC and pub/sub on the node: the public commands and the entry points
//! the connection code calls, handed to the [`Messaging`] child. The logic
//! (calls, publish streams, self-calls, which DHT operation runs for which
//! machine) is in [`crate::messaging`]; its outputs are carried out in
//! [`super::messaging_effects`], and the way to a peer is in
//! [`super::errands`].
//!
//! [`Messaging`]: crate::messaging::Messaging

use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, StreamId, VarInt};

use super::{Event, Node};
use crate::connection::Phase;
use crate::connection::STREAM_REFUSED;
use crate::contract::Output;
use crate::dht::DhtEvent;
use crate::pool::ConnId;
use crate::pubsub::{Pattern, PubSub, PubSubError, SubscriberId, Topic};
use crate::rpc::{CallId, CallOptions, HandlerError, InboundId, RegisterOptions, Rpc, RpcError};
use crate::wire::Message;

impl Node {
    /// The RPC machine, to read its counters.
    pub fn rpc(&self) -> &Rpc {
        self.messaging.rpc()
    }

    /// The pub/sub machine, to read its counters.
    pub fn pubsub(&self) -> &PubSub {
        self.messaging.pubsub()
    }

    /// Serves `procedure`: its provider record is announced in the DHT and
    /// kept there until [`Node::unregister`]; calls arrive as
    /// [`RpcEvent::Request`](crate::rpc::RpcEvent::Request) events.
    pub fn register(
        &mut self,
        now: Instant,
        procedure: &str,
        options: RegisterOptions,
    ) -> Result<(), RpcError> {
        self.serving_command(now, |node| node.messaging.register(now, procedure, options))
    }

    /// Stops serving `procedure`; false when it was not registered.
    pub fn unregister(&mut self, now: Instant, procedure: &str) -> bool {
        self.serving_command(now, |node| node.messaging.unregister(now, procedure))
    }

    /// Calls `procedure` on one of its providers; the call ends with one
    /// [`RpcEvent::Completed`](crate::rpc::RpcEvent::Completed) by
    /// `now + timeout` at the latest.
    pub fn call(
        &mut self,
        now: Instant,
        procedure: &str,
        payload: Bytes,
        timeout: Duration,
        options: CallOptions,
    ) -> Result<CallId, RpcError> {
        self.command(now, |node| {
            let call = node
                .messaging
                .call(now, procedure, payload, timeout, options);
            node.instruments.call_started(now, &call);
            call
        })
    }

    /// Cancels a call of ours: CANCEL goes to the provider and the call
    /// ends with [`RpcError::Cancelled`].
    pub fn cancel_call(&mut self, now: Instant, call: CallId) -> Result<(), RpcError> {
        self.command(now, |node| node.messaging.cancel_call(now, call))
    }

    /// Answers a call we handle.
    pub fn reply(
        &mut self,
        now: Instant,
        id: InboundId,
        result: Result<Bytes, HandlerError>,
    ) -> Result<(), RpcError> {
        self.command(now, |node| node.messaging.reply(now, id, result))
    }

    /// Adds a local subscriber of `pattern`; messages arrive as
    /// [`PubSubEvent::Message`](crate::pubsub::PubSubEvent::Message)
    /// events, and [`Node::subscribers_of`] their topic names the
    /// subscribers each is for. Subscribers of one pattern share one
    /// subscription on the wire: the first announces it (and may be
    /// refused: too many patterns), [`Node::unsubscribe`] of the last
    /// withdraws it.
    pub fn subscribe(
        &mut self,
        now: Instant,
        pattern: Pattern,
    ) -> Result<SubscriberId, PubSubError> {
        self.serving_command(now, |node| node.messaging.subscribe(now, pattern))
    }

    /// Removes a local subscriber (the last of its pattern withdraws the
    /// subscription); false when there was no such subscriber.
    pub fn unsubscribe(&mut self, now: Instant, subscriber: SubscriberId) -> bool {
        self.serving_command(now, |node| node.messaging.unsubscribe(now, subscriber))
    }

    /// The local subscribers whose pattern matches `topic`, oldest first:
    /// whom a [`PubSubEvent::Message`](crate::pubsub::PubSubEvent::Message)
    /// on it is for.
    pub fn subscribers_of<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> impl Iterator<Item = SubscriberId> + 'a {
        self.messaging.subscribers_of(topic)
    }

    /// Publishes `payload` on `topic` to every matching subscriber; returns
    /// the message id.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        payload: Bytes,
    ) -> Result<u64, PubSubError> {
        self.command(now, |node| {
            let published = node.messaging.publish(now, topic, payload);
            node.instruments.published(now, &published);
            published
        })
    }

    /// Publishes each of `payloads` on `topic`, in order, in one
    /// [`Node::batch`]: the frames of the burst share packets. Returns each
    /// publication's message id or refusal, in order.
    pub fn publish_batch(
        &mut self,
        now: Instant,
        topic: &Topic,
        payloads: impl IntoIterator<Item = Bytes>,
    ) -> Vec<Result<u64, PubSubError>> {
        self.batch(now, |node| {
            (payloads.into_iter())
                .map(|payload| node.publish(now, topic.clone(), payload))
                .collect()
        })
    }

    /// Runs one messaging command as an input of the node.
    /// A command that may change what the node serves: when its
    /// capabilities change, every ready peer hears the new set
    /// (docs/PROTOCOL.md §6).
    fn serving_command<R>(&mut self, now: Instant, command: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.hello().capabilities;
        self.command(now, |node| {
            let result = command(node);
            if node.hello().capabilities != before {
                node.announce_capabilities();
            }
            result
        })
    }

    fn command<R>(&mut self, now: Instant, command: impl FnOnce(&mut Self) -> R) -> R {
        self.enter(now);
        let result = command(self);
        self.settle(now);
        result
    }

    /// A DHT event: the end of one of our operations, or news for the
    /// application.
    pub(super) fn on_dht_event(&mut self, now: Instant, event: DhtEvent) {
        let Some(event) = self.messaging.handle_dht_event(now, event) else {
            return;
        };
        if self.peer_found(now, &event) || self.reach_dht_event(&event) {
            return;
        }
        self.reach_saw(now, &event);
        self.out.push_back(Output::Event(Event::Dht(event)));
    }

    /// The pool id and peer of a connection, once it has both.
    fn messaging_conn(&self, handle: ConnectionHandle) -> Option<(ConnId, crate::id::NodeId)> {
        let conn = self.conns.get(&handle)?;
        Some((conn.pool_id?, conn.peer?))
    }

    /// A frame on a request or publish stream, if it is messaging's; other
    /// frames (the DHT's) come back.
    pub(super) fn messaging_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        message: Message,
    ) -> Option<Message> {
        let Some((conn, peer)) = self.messaging_conn(handle) else {
            return Some(message);
        };
        let other = self
            .messaging
            .handle_frame(now, conn, stream, peer, message);
        self.drive_messaging(now);
        other
    }

    /// A stream of a connection was reset or stopped by the peer (`code`
    /// when it is known).
    pub(super) fn messaging_stream_gone(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
        code: Option<VarInt>,
    ) {
        if let Some((conn, _)) = self.messaging_conn(handle) {
            let refused = code == Some(STREAM_REFUSED);
            self.messaging
                .handle_stream_gone(now, conn, stream, refused);
            self.drive_messaging(now);
        }
    }

    /// The peer allows more streams on `handle`: the calls that waited go.
    pub(super) fn send_blocked_calls(&mut self, now: Instant, handle: ConnectionHandle) {
        if let Some((conn, _)) = self.messaging_conn(handle) {
            self.messaging.handle_streams_available(now, conn);
            self.drive_messaging(now);
        }
    }

    /// Connection `handle` (pool id `conn`, to `peer`) is going away: its
    /// calls fail, the calls it brought end, and a peer left with no
    /// connection is disconnected for pub/sub.
    pub(super) fn release_messaging(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        conn: Option<ConnId>,
        peer: Option<crate::id::NodeId>,
    ) {
        let still_connected = self
            .conns
            .iter()
            .any(|(h, c)| *h != handle && c.peer == peer && c.phase == Phase::Ready);
        self.messaging
            .handle_released(now, conn, peer, still_connected);
        self.drive_messaging(now);
    }
}
