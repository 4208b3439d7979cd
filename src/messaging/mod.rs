//! Messaging: RPC calls and pub/sub deliveries carried over pooled
//! connections, as one child machine of the Node.
//!
//! [`Messaging`] owns the [`Rpc`] and [`PubSub`] machines (it is their only
//! parent, so it feeds them and drains them itself: every input here ends
//! with their outputs carried out) and everything that ties their frames to
//! streams: our calls and their streams (`calls`), the long-lived PUBLISH
//! stream to each subscriber (`outlets`), the requests we answer and the
//! stream each came on (`answers`), calls to ourselves (`self_calls`),
//! and which DHT operations run for which machine (`directory`).
//!
//! **Why it owns the two machines** rather than taking their outputs as
//! inputs: every output of theirs needs the bookkeeping kept here (a CALL
//! becomes a stream, an answer goes on the stream its request came on, a
//! lookup's records go back to the machine that asked), a call to ourselves
//! loops from one side of [`Rpc`] to the other without leaving, and stream
//! events must reach them in step with that bookkeeping. Owned, that loop
//! stays inside one child, and the Node reads their counters through
//! [`Messaging::rpc`] and [`Messaging::pubsub`].
//!
//! It never sees the Node: connections are named by the pool's [`ConnId`],
//! and every effect leaves as a [`MessagingOutput`] for the Node to carry
//! out (get a lease on a connection to a peer, open a stream and write a
//! frame, write/finish/reset a stream, release a lease, run a DHT lookup or
//! store, tell the application). Where the Node's answer decides what
//! happens next (the stream it opened, the lookup's query id, a connection
//! it got or could not get), the Node reports it back through a
//! `handle_*` input right away.
//!
//! **Where a peer is** is the Node's business: provider and subscriber
//! records name a node, and [`MessagingOutput::Connect`] asks the Node for a
//! lease on a connection to it. The Node takes, in order, a ready connection,
//! the peer's routing-table contact, a `find_node` of its id, its peer record
//! (a direct address or a circuit through one of its relays), and answers
//! with [`Messaging::handle_connected`] or [`Messaging::handle_unreachable`]
//! (then a CALL fails as [`Delivery::NotDelivered`] and a subscriber is
//! reported unreachable).
//!
//! [`Delivery::NotDelivered`]: crate::rpc::Delivery::NotDelivered

mod answers;
mod calls;
mod directory;
mod outlets;
mod output;
mod self_calls;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::StreamId;

use crate::contract::{Child, OutputQueue};
use crate::dht::{DhtEvent, QueryId};
use crate::exchange::StreamKey;
use crate::id::{NodeId, RecordKey};
use crate::pool::{ConnId, Lease};
use crate::pubsub::{
    Fanout, Pattern, PubSub, PubSubConfig, PubSubError, PubSubOutput, SubscriberId, Topic,
};
use crate::rpc::{
    AnnounceFailure, CallId, CallOptions, HandlerError, InboundId, RegisterOptions, Rpc, RpcConfig,
    RpcError, RpcOutput,
};
use crate::wire::Message;

pub use crate::exchange::Unopened;
use answers::Answers;
use calls::Calls;
pub use directory::Owner;
use directory::{Directory, Outcome};
use outlets::Outlets;
use output::give_back;
pub use output::{Errand, MessagingOutput};

/// RPC and pub/sub over streams (see the module docs).
#[derive(Debug)]
pub struct Messaging {
    local: NodeId,
    rpc: Rpc,
    pubsub: PubSub,
    /// The local subscribers sharing the subscriptions of `pubsub`.
    subscribers: Fanout,
    directory: Directory,
    calls: Calls,
    outlets: Outlets,
    answers: Answers,
    out: OutputQueue<MessagingOutput>,
}

impl Messaging {
    /// Messaging for node `local` with fresh machines.
    pub fn new(local: NodeId, rpc: RpcConfig, pubsub: PubSubConfig) -> Self {
        Self {
            local,
            directory: Directory::new(rpc.lookup_timeout, pubsub.lookup_timeout),
            rpc: Rpc::new(rpc),
            pubsub: PubSub::new(pubsub),
            subscribers: Fanout::new(),
            calls: Calls::default(),
            outlets: Outlets::default(),
            answers: Answers::default(),
            out: OutputQueue::new(),
        }
    }

    /// The RPC machine, to read its counters.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The pub/sub machine, to read its counters.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// [`Rpc::register`].
    pub fn register(
        &mut self,
        now: Instant,
        procedure: &str,
        options: RegisterOptions,
    ) -> Result<(), RpcError> {
        let registered = self.rpc.register(now, procedure, options);
        self.pump(now);
        registered
    }

    /// [`Rpc::unregister`].
    pub fn unregister(&mut self, now: Instant, procedure: &str) -> bool {
        let was = self.rpc.unregister(now, procedure);
        self.pump(now);
        was
    }

    /// [`Rpc::call`].
    pub fn call(
        &mut self,
        now: Instant,
        procedure: &str,
        payload: Bytes,
        timeout: Duration,
        options: CallOptions,
    ) -> Result<CallId, RpcError> {
        let call = self.rpc.call(now, procedure, payload, timeout, options);
        self.pump(now);
        call
    }

    /// [`Rpc::cancel`].
    pub fn cancel_call(&mut self, now: Instant, call: CallId) -> Result<(), RpcError> {
        let cancelled = self.rpc.cancel(now, call);
        self.pump(now);
        cancelled
    }

    /// [`Rpc::reply`].
    pub fn reply(
        &mut self,
        now: Instant,
        id: InboundId,
        result: Result<Bytes, HandlerError>,
    ) -> Result<(), RpcError> {
        let replied = self.rpc.reply(now, id, result);
        self.pump(now);
        replied
    }

    /// Adds a local subscriber of `pattern`; the first one of a pattern
    /// subscribes with [`PubSub::subscribe`] (and may be refused).
    pub fn subscribe(
        &mut self,
        now: Instant,
        pattern: Pattern,
    ) -> Result<SubscriberId, PubSubError> {
        if self.subscribers.holders(&pattern) == 0 {
            let subscribed = self.pubsub.subscribe(now, pattern.clone());
            self.pump(now);
            subscribed?;
        }
        Ok(self.subscribers.add(pattern))
    }

    /// Removes a local subscriber; the last one of its pattern withdraws it
    /// with [`PubSub::unsubscribe`]. False when there was no such subscriber.
    pub fn unsubscribe(&mut self, now: Instant, subscriber: SubscriberId) -> bool {
        let Some(removed) = self.subscribers.remove(subscriber) else {
            return false;
        };
        if removed.last {
            self.pubsub.unsubscribe(now, &removed.pattern);
            self.pump(now);
        }
        true
    }

    /// The local subscribers a message on `topic` is for.
    pub fn subscribers_of<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> impl Iterator<Item = SubscriberId> + 'a {
        self.subscribers.matching(topic)
    }

    /// [`PubSub::publish`].
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        payload: Bytes,
    ) -> Result<u64, PubSubError> {
        let published = self.pubsub.publish(now, topic, payload);
        self.pump(now);
        published
    }

    /// Acts on every deadline of the two machines due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.rpc.handle_timeout(now);
        self.pubsub.handle_timeout(now);
        self.pump(now);
    }

    /// A connection to `peer` became ready.
    pub fn handle_peer_connected(&mut self, now: Instant, peer: NodeId) {
        self.pubsub.handle_connected(now, peer);
        self.pump(now);
    }

    /// The Node has a lease for `errand` (answer to
    /// [`MessagingOutput::Connect`]).
    pub fn handle_connected(&mut self, now: Instant, errand: Errand, lease: Lease) {
        match errand {
            Errand::Call(key) => {
                let rpc = &mut self.rpc;
                self.calls.connected(&mut self.out, rpc, now, key, lease)
            }
            Errand::Publish(subscriber) => self.outlets.connected(&mut self.out, subscriber, lease),
        }
        self.pump(now);
    }

    /// The Node found no connection for `errand`.
    pub fn handle_unreachable(&mut self, now: Instant, errand: Errand) {
        match errand {
            Errand::Call(key) => self
                .calls
                .unreachable(&mut self.out, &mut self.rpc, now, key),
            Errand::Publish(subscriber) => {
                self.outlets.unreachable(&mut self.pubsub, now, subscriber)
            }
        }
        self.pump(now);
    }

    /// The outcome of an [`MessagingOutput::Open`], with its lease back.
    pub fn handle_opened(
        &mut self,
        now: Instant,
        errand: Errand,
        lease: Lease,
        opened: Result<StreamId, Unopened>,
    ) {
        match errand {
            Errand::Call(key) => {
                let rpc = &mut self.rpc;
                self.calls
                    .opened(&mut self.out, rpc, now, key, lease, opened)
            }
            Errand::Publish(subscriber) => {
                let pubsub = &mut self.pubsub;
                let out = &mut self.out;
                self.outlets
                    .opened(out, pubsub, now, subscriber, lease, opened)
            }
        }
        self.pump(now);
    }

    /// `conn` allows more streams: the calls that waited for one go.
    pub fn handle_streams_available(&mut self, now: Instant, conn: ConnId) {
        self.calls.unblock(&mut self.out, &mut self.rpc, now, conn);
        self.pump(now);
    }

    /// Everything written on `stream` is out: if it is a publish stream, the
    /// pub/sub machine hears of each frame.
    pub fn handle_flushed(&mut self, now: Instant, conn: ConnId, stream: StreamId) {
        let out = &mut self.out;
        self.outlets
            .flushed(out, &mut self.pubsub, now, conn, stream);
        self.pump(now);
    }

    /// A frame on a request or publish stream of `peer`, if it is
    /// messaging's: an answer to one of our calls, a CALL, CANCEL, PUBLISH,
    /// PUBLISH_BATCH, SUBSCRIBE or UNSUBSCRIBE. Other frames come back.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        peer: NodeId,
        message: Message,
    ) -> Option<Message> {
        self.out.mark(now);
        let at = StreamKey { conn, stream };
        let other = self
            .calls
            .answer(&mut self.out, &mut self.rpc, now, at, message)
            .and_then(|message| self.request(now, at, peer, message));
        self.pump(now);
        other
    }

    /// A request from `peer` (not an answer to one of ours).
    fn request(
        &mut self,
        now: Instant,
        at: StreamKey,
        peer: NodeId,
        message: Message,
    ) -> Option<Message> {
        match message {
            Message::Call(call) => {
                self.answers.handling(peer, call.request_id, at);
                self.rpc.handle_call(now, peer, call);
            }
            Message::Cancel(cancel) => {
                if let Some(StreamKey { conn, stream }) =
                    self.answers.cancelled(peer, cancel.request_id)
                {
                    self.out.push(MessagingOutput::Reset { conn, stream });
                }
                self.rpc.handle_cancel(now, peer, cancel.request_id);
            }
            Message::Publish(publish) => self.pubsub.handle_publish(now, peer, publish),
            Message::PublishBatch(batch) => {
                for publish in batch.into_publishes() {
                    self.pubsub.handle_publish(now, peer, publish);
                }
            }
            Message::Subscribe(subscribe) => {
                self.answers.asked(peer, subscribe.request_id, at);
                self.pubsub.handle_subscribe(now, peer, subscribe);
            }
            Message::Unsubscribe(unsubscribe) => {
                self.answers.asked(peer, unsubscribe.request_id, at);
                self.pubsub.handle_unsubscribe(now, peer, unsubscribe);
            }
            other => return Some(other),
        }
        None
    }

    /// The peer reset or stopped `stream` (`refused`: with the node's
    /// "refused" code): one of our calls fails, a call we handle ends, a
    /// subscriber fed on it is disconnected.
    pub fn handle_stream_gone(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        refused: bool,
    ) {
        self.out.mark(now);
        let at = StreamKey { conn, stream };
        let rpc = &mut self.rpc;
        self.calls.stream_gone(&mut self.out, rpc, now, at, refused);
        if let Some(call) = self.answers.stream_gone(at) {
            self.rpc.handle_cancel(now, call.peer, call.request_id);
        }
        let out = &mut self.out;
        self.outlets
            .stream_gone(out, &mut self.pubsub, now, conn, stream);
        self.pump(now);
    }

    /// Connection `conn` (to `peer`, when known; `None`: it never had a
    /// pool id) is going away: its calls fail (a written CALL may have been
    /// delivered, one that waited for a stream was not), the calls it
    /// brought end, and a peer left with no other connection
    /// (`still_connected` false) is disconnected for pub/sub.
    pub fn handle_released(
        &mut self,
        now: Instant,
        conn: Option<ConnId>,
        peer: Option<NodeId>,
        still_connected: bool,
    ) {
        self.out.mark(now);
        let mut lost_outlet = None;
        if let Some(conn) = conn {
            self.calls.released(&mut self.out, &mut self.rpc, now, conn);
            for call in self.answers.released(conn) {
                self.rpc.handle_cancel(now, call.peer, call.request_id);
            }
            let out = &mut self.out;
            lost_outlet = self.outlets.released(out, &mut self.pubsub, now, conn);
        }
        if let Some(peer) = peer
            && !still_connected
            && lost_outlet != Some(peer)
        {
            self.pubsub.handle_disconnected(now, peer);
        }
        self.pump(now);
    }

    /// The query id of a [`MessagingOutput::Lookup`] the Node started.
    pub fn handle_lookup_started(&mut self, query: QueryId, owner: Owner) {
        self.directory.started(query, owner);
    }

    /// How a store under an announced `key` ended (a refusal at once, or the
    /// end of a store the DHT ran).
    pub fn handle_announced(
        &mut self,
        now: Instant,
        key: RecordKey,
        result: Result<(), AnnounceFailure>,
    ) {
        self.announced(now, key, result);
        self.pump(now);
    }

    /// A DHT event, if it ends one of our operations (a lookup's records, a
    /// store of an announced key); other events come back.
    pub fn handle_dht_event(&mut self, now: Instant, event: DhtEvent) -> Option<DhtEvent> {
        match self.directory.on_event(event) {
            Outcome::Found {
                owner,
                key,
                found,
                answered,
            } => match owner {
                Owner::Rpc => (self.rpc).handle_lookup_answered(now, key, found, answered),
                Owner::PubSub => (self.pubsub).handle_lookup_answered(now, key, found, answered),
            },
            Outcome::Stored { key, result } => self.announced(now, key, result),
            Outcome::Other(event) => return Some(event),
        }
        self.pump(now);
        None
    }

    /// Tells the machine that announces under `key` how its store ended.
    fn announced(&mut self, now: Instant, key: RecordKey, result: Result<(), AnnounceFailure>) {
        match self.directory.announcer(&key) {
            Some(Owner::Rpc) => self.rpc.handle_announced(now, key, result),
            Some(Owner::PubSub) => self.pubsub.handle_announced(now, key, result),
            None => {}
        }
    }

    /// Carries out the two machines' outputs until both are drained.
    fn pump(&mut self, now: Instant) {
        self.out.mark(now);
        loop {
            if let Some(output) = self.rpc.poll_output() {
                self.on_rpc(now, output);
            } else if let Some(output) = self.pubsub.poll_output() {
                self.on_pubsub(output);
            } else {
                return;
            }
        }
    }

    fn on_rpc(&mut self, now: Instant, output: RpcOutput) {
        let Some(output) = self_calls::to_self(self.local, &mut self.rpc, now, output) else {
            return;
        };
        match output {
            RpcOutput::Directory(request) => {
                self.directory.request(&mut self.out, Owner::Rpc, request)
            }
            RpcOutput::Call {
                provider, message, ..
            } => self.calls.start(&mut self.out, provider, message),
            RpcOutput::Cancel { provider, message } => {
                let rpc = &mut self.rpc;
                self.calls
                    .cancel(&mut self.out, rpc, now, provider, message)
            }
            RpcOutput::Answer { caller, message } => {
                let at = self.answers.answered_call(caller, &message);
                self.answer(at, message);
            }
            RpcOutput::Event(event) => self.out.push(MessagingOutput::Rpc(event)),
        }
    }

    fn on_pubsub(&mut self, output: PubSubOutput) {
        match output {
            PubSubOutput::Directory(request) => {
                self.directory
                    .request(&mut self.out, Owner::PubSub, request)
            }
            PubSubOutput::Send {
                subscriber,
                message,
            } => self.outlets.publish(&mut self.out, subscriber, message),
            PubSubOutput::Answer { peer, message } => {
                let at = self.answers.answered_ask(peer, &message);
                self.answer(at, message);
            }
            PubSubOutput::Event(event) => self.out.push(MessagingOutput::PubSub(event)),
        }
    }

    /// Writes an answer on the stream its request came on (`None`: the
    /// stream is gone, the answer too).
    fn answer(&mut self, at: Option<StreamKey>, frame: Message) {
        if let Some(StreamKey { conn, stream }) = at {
            self.out.push(MessagingOutput::Answer {
                conn,
                stream,
                frame,
            });
        }
    }
}

impl Child for Messaging {
    type Output = MessagingOutput;

    /// The next thing for the Node to do.
    fn poll_output(&mut self) -> Option<MessagingOutput> {
        self.out.pop()
    }

    /// When [`Messaging::handle_timeout`] is next needed (the last input's
    /// time while output is queued).
    fn poll_timeout(&self) -> Option<Instant> {
        self.out
            .deadline([self.rpc.poll_timeout(), self.pubsub.poll_timeout()])
    }
}
