//! RPC and pub/sub on the node: the [`Rpc`] and [`PubSub`] machines'
//! outputs carried out on the DHT and on QUIC streams, and their inputs
//! gathered from both.
//!
//! Directory requests become DHT operations: `Lookup` runs
//! `query_with_response` and its `ValuesFound` records go back to the machine
//! that asked (as [`Found`]) — our own records included, so a node finds
//! itself among the providers of what it serves, and calls to itself run
//! in-process ([`super::self_calls`]); `Announce` runs `store_with_confirmation` (the
//! DHT signs with the node identity and alone republishes it); `Withdraw`
//! runs `unpublish`. The DHT events of these operations stay inside the node;
//! the end of every store of an announced key (republishes included) goes to
//! the machine that announces it, which reports failures to the application
//! and announces again after a backoff.
//!
//! **Where a peer is.** Provider and subscriber records name a node, not an
//! address. To reach one the node takes, in order: a ready connection to it
//! (the pool reuses it whatever the address), its routing-table contact, or
//! else the contact a `find_node` of its id returns, or else its peer record
//! (`node::dial`: a direct address, or a circuit through one of its relays).
//! When none works the CALL fails as [`Delivery::NotDelivered`] and a
//! subscriber is reported unreachable.
//!
//! The streams themselves are in [`super::rpc_streams`] (CALL, CANCEL and
//! their answers) and [`super::publish_streams`] (one long-lived PUBLISH
//! stream per subscriber).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, StreamId, VarInt};

use super::conn::Phase;
use super::publish_streams::Outlet;
use super::rpc_streams::OutCall;
use super::{Event, Node};
use crate::collections::HashMap;
use crate::contract::{Child, Output};
use crate::dht::{DhtEvent, QueryId};
use crate::id::{NodeId, RecordKey};
use crate::pool::{Acquired, Lease, WaitId};
use crate::pubsub::{Pattern, PubSub, PubSubError, PubSubOutput, Topic};
use crate::rpc::{
    AnnounceFailure, CallId, CallOptions, Delivery, DirectoryRequest, Found, HandlerError,
    InboundId, RegisterOptions, Rpc, RpcError, RpcOutput,
};
use crate::wire::Message;

/// Stream code for a stream given up after its request was read (the call
/// was cancelled, or its answer could not be sent).
pub(super) const STREAM_ABANDONED: VarInt = VarInt::from_u32(0x102);

/// Which machine a DHT lookup runs for.
#[derive(Clone, Copy, Debug)]
enum Owner {
    Rpc,
    PubSub,
}

/// Something that waits for a connection to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Errand {
    /// A CALL, by provider and request id.
    Call(NodeId, u64),
    /// The publish stream to a subscriber.
    Publish(NodeId),
}

/// The node's messaging state besides the two machines.
#[derive(Default)]
pub(super) struct Messaging {
    /// Lookups run for a machine.
    lookups: HashMap<QueryId, Owner>,
    /// The keys our machines announce under, and which one does: the
    /// outcome of every store of them (republishes included) goes to it.
    announced: HashMap<RecordKey, Owner>,
    /// `find_node` queries run to learn a peer's address.
    resolving: HashMap<QueryId, NodeId>,
    /// What waits for each peer's address.
    unresolved: HashMap<NodeId, Vec<Errand>>,
    /// What waits for a pooled connection.
    waiting: HashMap<WaitId, Errand>,
    /// Our calls, by provider and request id.
    pub(super) calls: HashMap<(NodeId, u64), OutCall>,
    /// Our calls waiting for a stream on each connection, oldest first.
    pub(super) blocked: HashMap<ConnectionHandle, VecDeque<(NodeId, u64)>>,
    /// The open stream of each of our calls.
    pub(super) call_streams: HashMap<(ConnectionHandle, StreamId), (NodeId, u64)>,
    /// Calls we handle, by caller and request id, and their streams.
    pub(super) handling: HashMap<(NodeId, u64), (ConnectionHandle, StreamId)>,
    /// The same, by stream.
    pub(super) handling_streams: HashMap<(ConnectionHandle, StreamId), (NodeId, u64)>,
    /// SUBSCRIBE and UNSUBSCRIBE requests waiting for their answers.
    pub(super) asked: HashMap<(NodeId, u64), (ConnectionHandle, StreamId)>,
    /// The publish stream to each subscriber.
    pub(super) outlets: HashMap<NodeId, Outlet>,
}

impl Node {
    /// The RPC machine, to read its counters.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The pub/sub machine, to read its counters.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
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
        self.enter(now);
        let registered = self.rpc.register(now, procedure, options);
        self.settle(now);
        registered
    }

    /// Stops serving `procedure`; false when it was not registered.
    pub fn unregister(&mut self, now: Instant, procedure: &str) -> bool {
        self.enter(now);
        let was = self.rpc.unregister(now, procedure);
        self.settle(now);
        was
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
        self.enter(now);
        let call = self.rpc.call(now, procedure, payload, timeout, options);
        self.instruments.call_started(now, &call);
        self.settle(now);
        call
    }

    /// Cancels a call of ours: CANCEL goes to the provider and the call
    /// ends with [`RpcError::Cancelled`].
    pub fn cancel_call(&mut self, now: Instant, call: CallId) -> Result<(), RpcError> {
        self.enter(now);
        let cancelled = self.rpc.cancel(now, call);
        self.settle(now);
        cancelled
    }

    /// Answers a call we handle.
    pub fn reply(
        &mut self,
        now: Instant,
        id: InboundId,
        result: Result<Bytes, HandlerError>,
    ) -> Result<(), RpcError> {
        self.enter(now);
        let replied = self.rpc.reply(now, id, result);
        self.settle(now);
        replied
    }

    /// Subscribes to `pattern`; messages arrive as
    /// [`PubSubEvent::Message`](crate::pubsub::PubSubEvent::Message)
    /// events. False when already subscribed.
    pub fn subscribe(&mut self, now: Instant, pattern: Pattern) -> Result<bool, PubSubError> {
        self.enter(now);
        let subscribed = self.pubsub.subscribe(now, pattern);
        self.settle(now);
        subscribed
    }

    /// Withdraws `pattern`; false when it was not subscribed.
    pub fn unsubscribe(&mut self, now: Instant, pattern: &Pattern) -> bool {
        self.enter(now);
        let was = self.pubsub.unsubscribe(now, pattern);
        self.settle(now);
        was
    }

    /// Publishes `payload` on `topic` to every matching subscriber; returns
    /// the message id.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        payload: Bytes,
    ) -> Result<u64, PubSubError> {
        self.enter(now);
        let published = self.pubsub.publish(now, topic, payload);
        self.instruments.published(now, &published);
        self.settle(now);
        published
    }

    /// Carries out the two machines' outputs; true when there were any.
    pub(super) fn drive_messaging(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(output) = self.rpc.poll_output() {
            busy = true;
            let Some(output) = self.rpc_to_self(now, output) else {
                continue;
            };
            match output {
                RpcOutput::Directory(request) => self.directory(now, Owner::Rpc, request),
                RpcOutput::Call {
                    provider, message, ..
                } => self.start_call(now, provider, message),
                RpcOutput::Cancel { provider, message } => self.cancel_out(now, provider, message),
                RpcOutput::Answer { caller, message } => self.answer_call(caller, message),
                RpcOutput::Event(event) => self.out.push_back(Output::Event(Event::Rpc(event))),
            }
        }
        while let Some(output) = self.pubsub.poll_output() {
            busy = true;
            match output {
                PubSubOutput::Directory(request) => self.directory(now, Owner::PubSub, request),
                PubSubOutput::Send {
                    subscriber,
                    message,
                } => self.publish_to(now, subscriber, message),
                PubSubOutput::Answer { peer, message } => {
                    let at = message
                        .request_id()
                        .and_then(|id| self.messaging.asked.remove(&(peer, id)));
                    self.write_answer(at, &message);
                }
                PubSubOutput::Event(event) => {
                    self.out.push_back(Output::Event(Event::PubSub(event)))
                }
            }
        }
        busy
    }

    /// Carries out a machine's DHT request.
    fn directory(&mut self, now: Instant, owner: Owner, request: DirectoryRequest) {
        let unix_ms = self.unix_ms(now);
        match request {
            DirectoryRequest::Lookup { key } => {
                let timeout = match owner {
                    Owner::Rpc => self.config.rpc.lookup_timeout,
                    Owner::PubSub => self.config.pubsub.lookup_timeout,
                };
                let query = self.dht.query_with_response(now, unix_ms, key, timeout);
                self.messaging.lookups.insert(query, owner);
            }
            DirectoryRequest::Announce { key, value } => {
                let timeout = self.config.dht.query_timeout;
                self.messaging.announced.insert(key, owner);
                let stored = self
                    .dht
                    .store_with_confirmation(now, unix_ms, key, value, timeout);
                if let Err(error) = stored {
                    let failure = AnnounceFailure::Rejected(error.to_string());
                    self.announced(now, key, Err(failure));
                }
            }
            DirectoryRequest::Withdraw { key } => {
                self.messaging.announced.remove(&key);
                self.dht.unpublish(&key);
            }
        }
    }

    /// A DHT event: the end of one of our operations, or news for the
    /// application.
    pub(super) fn on_dht_event(&mut self, now: Instant, event: DhtEvent) {
        match event {
            DhtEvent::ValuesFound {
                query,
                key,
                records,
                ..
            } if self.messaging.lookups.contains_key(&query) => {
                let found: Vec<Found> = records.iter().map(Found::from).collect();
                match self.messaging.lookups.remove(&query) {
                    Some(Owner::Rpc) => self.rpc.handle_lookup(now, key, found),
                    Some(Owner::PubSub) => self.pubsub.handle_lookup(now, key, found),
                    None => {}
                }
            }
            DhtEvent::StoreConfirmed {
                key,
                acked,
                quorum,
                success,
                ..
            } if self.messaging.announced.contains_key(&key) => {
                let result = if success {
                    Ok(())
                } else {
                    let acked = acked.len();
                    Err(AnnounceFailure::Quorum { acked, quorum })
                };
                self.announced(now, key, result);
            }
            DhtEvent::NodesFound { query, closest, .. }
                if self.messaging.resolving.contains_key(&query) =>
            {
                let Some(peer) = self.messaging.resolving.remove(&query) else {
                    return;
                };
                let addr = closest
                    .iter()
                    .find(|contact| contact.id == peer)
                    .and_then(|contact| contact.addrs.first().copied());
                let errands = self.messaging.unresolved.remove(&peer).unwrap_or_default();
                match addr {
                    Some(addr) => {
                        for errand in errands {
                            self.connect_for(now, peer, addr, errand);
                        }
                    }
                    // Not a DHT server: its peer record says where it is.
                    None => self.dial_by_record(now, peer, errands),
                }
            }
            other if self.reach_dht_event(&other) => {}
            other => {
                self.reach_saw(now, &other);
                self.out.push_back(Output::Event(Event::Dht(other)));
            }
        }
    }

    /// Tells the machine that announces under `key` how its store ended.
    fn announced(&mut self, now: Instant, key: RecordKey, result: Result<(), AnnounceFailure>) {
        match self.messaging.announced.get(&key) {
            Some(Owner::Rpc) => self.rpc.handle_announced(now, key, result),
            Some(Owner::PubSub) => self.pubsub.handle_announced(now, key, result),
            None => {}
        }
    }

    /// Gets a connection to `peer` for `errand`, finding its address first
    /// when needed (see the module docs).
    pub(super) fn reach(&mut self, now: Instant, peer: NodeId, errand: Errand) {
        if let Some(addr) = self.address_of(&peer) {
            self.connect_for(now, peer, addr, errand);
            return;
        }
        let waiting = self.messaging.unresolved.entry(peer).or_default();
        waiting.push(errand);
        if waiting.len() == 1 {
            let query = self.dht.find_node(now, peer);
            self.messaging.resolving.insert(query, peer);
        }
    }

    /// The address of `peer` known without asking the network.
    fn address_of(&self, peer: &NodeId) -> Option<SocketAddr> {
        let connected = self
            .conns
            .values()
            .find(|c| c.peer == Some(*peer) && c.phase == Phase::Ready)
            .map(|c| c.remote);
        connected.or_else(|| {
            let contact = self.dht.table().get(peer)?;
            contact.addrs.first().copied()
        })
    }

    pub(super) fn connect_for(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        errand: Errand,
    ) {
        match self.pool.acquire(now, peer, addr) {
            Ok(Acquired::Ready(lease)) => self.connected_for(now, errand, lease),
            Ok(Acquired::Waiting(wait)) => {
                self.messaging.waiting.insert(wait, errand);
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "no connection for messaging");
                self.unreachable_for(now, errand);
            }
        }
    }

    fn connected_for(&mut self, now: Instant, errand: Errand, lease: Lease) {
        match errand {
            Errand::Call(provider, request_id) => {
                self.send_call(now, (provider, request_id), lease)
            }
            Errand::Publish(subscriber) => self.open_outlet(now, subscriber, lease),
        }
    }

    pub(super) fn unreachable_for(&mut self, now: Instant, errand: Errand) {
        match errand {
            Errand::Call(provider, request_id) => {
                if self
                    .messaging
                    .calls
                    .remove(&(provider, request_id))
                    .is_some()
                {
                    self.rpc
                        .handle_failure(now, &provider, request_id, Delivery::NotDelivered);
                }
            }
            Errand::Publish(subscriber) => {
                self.messaging.outlets.remove(&subscriber);
                self.pubsub.handle_unreachable(now, subscriber);
            }
        }
    }

    /// The pool has a connection for a wait that is not the DHT's (given
    /// back at once when nothing waits for it any more).
    pub(super) fn messaging_ready(&mut self, now: Instant, wait: WaitId, lease: Lease) {
        match self.messaging.waiting.remove(&wait) {
            Some(errand) => self.connected_for(now, errand, lease),
            None => self.pool.release(now, lease),
        }
    }

    /// The pool could not connect for a wait that is not the DHT's.
    pub(super) fn messaging_failed(&mut self, now: Instant, wait: WaitId) {
        if let Some(errand) = self.messaging.waiting.remove(&wait) {
            self.unreachable_for(now, errand);
        }
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
        let peer = self.conns.get(&handle)?.peer?;
        match self.rpc_frame(now, handle, stream, peer, message)? {
            Message::Publish(publish) => self.pubsub.handle_publish(now, peer, publish),
            Message::Subscribe(subscribe) => {
                let key = (peer, subscribe.request_id);
                self.messaging.asked.insert(key, (handle, stream));
                self.pubsub.handle_subscribe(now, peer, subscribe);
            }
            Message::Unsubscribe(unsubscribe) => {
                let key = (peer, unsubscribe.request_id);
                self.messaging.asked.insert(key, (handle, stream));
                self.pubsub.handle_unsubscribe(now, peer, unsubscribe);
            }
            other => return Some(other),
        }
        None
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
        self.call_stream_gone(now, handle, stream, code);
        if let Some((caller, request_id)) =
            self.messaging.handling_streams.remove(&(handle, stream))
        {
            self.messaging.handling.remove(&(caller, request_id));
            self.rpc.handle_cancel(now, caller, request_id);
        }
        self.outlet_gone(now, handle, stream);
    }

    /// A connection is going away: its calls fail, the calls it brought end,
    /// and a peer left with no connection is disconnected for pub/sub.
    pub(super) fn release_messaging(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        peer: Option<NodeId>,
    ) {
        self.release_calls(now, handle);
        let handled: Vec<_> = self
            .messaging
            .handling_streams
            .extract_if(|(h, _), _| *h == handle)
            .map(|(_, call)| call)
            .collect();
        for (caller, request_id) in handled {
            self.messaging.handling.remove(&(caller, request_id));
            self.rpc.handle_cancel(now, caller, request_id);
        }
        self.messaging.asked.retain(|_, (h, _)| *h != handle);
        let lost_outlet = self.release_outlet(now, handle);
        let Some(peer) = peer else {
            return;
        };
        let other = self
            .conns
            .iter()
            .any(|(h, c)| *h != handle && c.peer == Some(peer) && c.phase == Phase::Ready);
        if !other && lost_outlet != Some(peer) {
            self.pubsub.handle_disconnected(now, peer);
        }
    }

    /// Writes an answer on the stream its request came on (`None` when the
    /// stream is gone), then finishes it.
    pub(super) fn write_answer(
        &mut self,
        at: Option<(ConnectionHandle, StreamId)>,
        message: &Message,
    ) {
        let Some((handle, stream)) = at else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        conn.forget(stream);
        if conn.send(stream, message, true).is_err() {
            self.counters.protocol_errors += 1;
            conn.abandon(stream, STREAM_ABANDONED);
        }
    }
}
