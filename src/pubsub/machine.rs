//! The [`PubSub`] machine: subscriptions announced in the DHT, publications
//! routed to every matching subscriber, and ordered, deduplicated delivery of
//! what others publish to us.
//!
//! Publishing: for each prefix of the topic the machine asks the Node to look
//! up the subscriber records (cached for [`PubSubConfig::cache_ttl`]), matches
//! the patterns it finds against the topic, and queues one PUBLISH per
//! matching subscriber in that subscriber's [outbox](super::outbox).
//! Publications leave in the order they were made: one that waits for a
//! lookup holds back the ones after it. A lookup that does not come back
//! within [`PubSubConfig::lookup_timeout`] counts as having found nothing.
//!
//! Disconnects: a subscriber whose connection closed keeps what its session
//! left unsure for [`PubSubConfig::carry_over`]: the frames handed out in
//! that span (their delivery unknown) and the waiting ones
//! ([`Outbox::carry`]). Its next session (a newer epoch, sequence from 0)
//! opens when it is connected again or at the next publication for it, and
//! sends them first; the subscriber drops those it had by message id (ids
//! only grow: they start at [`PubSubConfig::first_epoch`]). What is left
//! past the span is dropped and counted. One that could not be reached at
//! all is skipped for [`PubSubConfig::retry_after`], or until it is reported
//! connected again, so a dead subscriber costs one dial per retry period
//! rather than one per message; what it left and what is published for it
//! meanwhile waits (bounded) and goes when it is tried again
//! ([`PubSub::handle_unreachable`]).

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::direct::{Direct, Refusal};
use super::outbox::{Outbox, Queued};
use super::receiver::Receiver;
use super::record::subscriber_value_matches;
use super::routes::{Route, Routes, Stamp};
use super::subscriptions::Subscriptions;
use super::{PubSubConfig, PubSubError, PubSubEvent, PubSubOutput, PubSubStats};
use crate::collections::HashMap;
use crate::contract::{Child, OutputQueue};
use crate::directory::{
    AnnounceFailure, Announcements, Answered, Cached, DirectoryRequest, Filled, Found, LookupCache,
};
use crate::id::{NodeId, RecordKey};
use crate::topic::{Pattern, Topic};
use crate::wire::{ErrorCode, ErrorReply, Message, Publish, Reply, Subscribe, Unsubscribe};

/// A publication waiting for lookups.
#[derive(Clone, Debug)]
struct Waiting {
    message_id: u64,
    topic: Topic,
    payload: Bytes,
    keys: Vec<RecordKey>,
}

/// Subscriptions, publications and delivery, with no I/O.
#[derive(Debug)]
pub struct PubSub {
    config: PubSubConfig,
    subscriptions: Subscriptions,
    /// Subscriptions other nodes made here with SUBSCRIBE.
    direct: Direct,
    announcements: Announcements,
    cache: LookupCache,
    /// The keys and routes of the topics published on lately.
    routes: Routes,
    waiting: VecDeque<Waiting>,
    outboxes: HashMap<NodeId, Outbox>,
    /// What the last session of a disconnected subscriber left unsure, and
    /// what was published for it while it was unreachable.
    carried: HashMap<NodeId, Left>,
    /// Disconnected subscribers and when they may be tried again.
    down: HashMap<NodeId, Instant>,
    /// Since when each subscriber in `down` (or with messages kept after
    /// it) has been unreachable at every try.
    unreachable_since: HashMap<NodeId, Instant>,
    receiver: Receiver,
    next_message_id: u64,
    next_epoch: u64,
    outputs: OutputQueue<PubSubOutput>,
    stats: PubSubStats,
}

impl PubSub {
    /// A machine with no subscriptions.
    pub fn new(config: PubSubConfig) -> Self {
        Self {
            announcements: Announcements::new(announce_seed(&config.local_id)),
            cache: LookupCache::new(config.cache_ttl, config.lookup_timeout),
            receiver: Receiver::new(config.receiver.clone()),
            next_epoch: config.first_epoch,
            subscriptions: Subscriptions::new(config.realm.clone()),
            routes: Routes::default(),
            waiting: VecDeque::new(),
            outboxes: HashMap::default(),
            carried: HashMap::default(),
            direct: Direct::new(config.max_direct_subscriptions, config.max_direct_per_peer),
            down: HashMap::default(),
            unreachable_since: HashMap::default(),
            // Ids grow across restarts too, as epochs do: a subscriber tells
            // a frame carried over from one it had by its id.
            next_message_id: config.first_epoch,
            outputs: OutputQueue::new(),
            stats: PubSubStats::default(),
            config,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> PubSubStats {
        PubSubStats {
            receiver: self.receiver.stats(),
            ..self.stats
        }
    }

    /// Hits and misses of the subscriber cache (one lookup per topic
    /// prefix of each publication).
    pub fn subscriber_cache(&self) -> crate::metrics::CacheCounts {
        self.cache.counts()
    }

    /// Messages waiting in `subscriber`'s queue.
    pub fn queued_for(&self, subscriber: &NodeId) -> usize {
        self.outboxes.get(subscriber).map_or(0, Outbox::waiting)
    }

    /// Messages for `subscriber` never handed to the Node yet: waiting in
    /// its queue, or left by its last session for the next.
    pub fn unsent_for(&self, subscriber: &NodeId) -> usize {
        let queued = self.outboxes.get(subscriber).map_or(0, Outbox::unsent);
        let carried = (self.carried.get(subscriber)).map_or(0, |left| unsent(&left.messages));
        queued + carried as usize
    }

    fn topic_key(&self, prefix: &str) -> RecordKey {
        self.subscriptions.key(prefix)
    }

    fn announce(&mut self, key: RecordKey) {
        let request = match self.subscriptions.record_value(&key) {
            Some(value) => Some(self.announcements.set(key, value)),
            None => self.announcements.remove(&key),
        };
        self.outputs.extend(request.map(PubSubOutput::Directory));
    }

    /// How the DHT store of our subscriber record under `key` ended: `Ok`
    /// once it reached its quorum. A failure becomes
    /// [`PubSubEvent::SubscriptionFailed`] and the record is announced again
    /// after a backoff, until a store succeeds or the patterns are withdrawn.
    pub fn handle_announced(
        &mut self,
        now: Instant,
        key: RecordKey,
        result: Result<(), AnnounceFailure>,
    ) {
        self.outputs.mark(now);
        let failed = self.announcements.stored(now, &key, result);
        if let (Some(failed), Some(patterns)) = (failed, self.subscriptions.under(&key)) {
            let patterns = patterns.iter().cloned().collect();
            let event = PubSubEvent::SubscriptionFailed { patterns, failed };
            self.outputs.push(PubSubOutput::Event(event));
        }
    }

    /// Whether the node holds any subscription (it announces PUBSUB and
    /// takes publish streams).
    pub fn subscribed(&self) -> bool {
        self.subscriptions.any()
    }

    /// Subscribes to `pattern`: announces it under its literal prefix.
    /// Returns false when already subscribed.
    pub fn subscribe(&mut self, now: Instant, pattern: Pattern) -> Result<bool, PubSubError> {
        self.outputs.mark(now);
        let key = self.topic_key(pattern.literal_prefix());
        let subscriptions = &mut self.subscriptions;
        if subscriptions
            .under(&key)
            .is_some_and(|s| s.contains(&pattern))
        {
            return Ok(false);
        }
        if subscriptions.count() >= self.config.max_subscriptions {
            return Err(PubSubError::TooManySubscriptions {
                max: self.config.max_subscriptions,
            });
        }
        subscriptions.insert(key, pattern);
        self.announce(key);
        Ok(true)
    }

    /// Withdraws `pattern`. Returns false when it was not subscribed.
    pub fn unsubscribe(&mut self, now: Instant, pattern: &Pattern) -> bool {
        self.outputs.mark(now);
        let key = self.topic_key(pattern.literal_prefix());
        if !self.subscriptions.remove(&key, pattern) {
            return false;
        }
        self.announce(key);
        true
    }

    /// Publishes `payload` on `topic`; returns the message id. Routing may
    /// wait for lookups; publications leave in order.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        payload: Bytes,
    ) -> Result<u64, PubSubError> {
        self.outputs.mark(now);
        if payload.len() > self.config.max_payload {
            return Err(PubSubError::TooLarge {
                size: payload.len(),
                max: self.config.max_payload,
            });
        }
        if self.waiting.len() >= self.config.max_waiting_publications {
            return Err(PubSubError::Overloaded {
                waiting: self.waiting.len(),
            });
        }
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        self.stats.published += 1;
        let mut keys = Vec::new();
        let subscriptions = &self.subscriptions;
        for &key in self.routes.keys(&topic, |prefix| subscriptions.key(prefix)) {
            let (look_up, wait) = match self.cache.consult(now, &key) {
                Cached::Fresh(_) => (false, false),
                Cached::Stale(_) => (true, false),
                Cached::Pending => (false, true),
                Cached::Missing => (true, true),
            };
            if look_up {
                self.cache.started(now, key);
                self.outputs
                    .push(PubSubOutput::Directory(DirectoryRequest::Lookup { key }));
            }
            if wait {
                keys.push(key);
            }
        }
        self.waiting.push_back(Waiting {
            message_id,
            topic,
            payload,
            keys,
        });
        self.route_ready(now);
        Ok(message_id)
    }

    /// The answer to a [`DirectoryRequest::Lookup`] of a topic prefix, fully
    /// answered.
    pub fn handle_lookup(&mut self, now: Instant, key: RecordKey, found: Vec<Found>) {
        self.handle_lookup_answered(now, key, found, Answered::Fully);
    }

    /// As [`PubSub::handle_lookup`] for a lookup `answered` as it was
    /// ([`Answered`]): what it found joins the subscribers known (one no
    /// answer found for two TTLs goes); a thin answer is due again after
    /// [`THIN_TTL`](crate::directory::THIN_TTL); after one no node answered,
    /// the subscribers known stay, the publications waiting for it go to
    /// them (or to the ones known otherwise), and the next publication after
    /// [`UNANSWERED_TTL`](crate::directory::UNANSWERED_TTL) looks it up again.
    pub fn handle_lookup_answered(
        &mut self,
        now: Instant,
        key: RecordKey,
        found: Vec<Found>,
        answered: Answered,
    ) {
        self.outputs.mark(now);
        match self.cache.fill(now, key, found, answered) {
            Filled::Stored => self.resolved(now, key),
            Filled::LookAgain => self
                .outputs
                .push(PubSubOutput::Directory(DirectoryRequest::Lookup { key })),
            Filled::Unasked => {}
        }
    }

    fn resolved(&mut self, now: Instant, key: RecordKey) {
        for waiting in &mut self.waiting {
            waiting.keys.retain(|k| *k != key);
        }
        self.route_ready(now);
    }

    /// Routes the publications at the front whose lookups are all done.
    fn route_ready(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|w| w.keys.is_empty()) {
            let Some(publication) = self.waiting.pop_front() else {
                break;
            };
            self.route(now, publication);
        }
    }

    fn route(&mut self, now: Instant, publication: Waiting) {
        let Waiting {
            message_id,
            topic,
            payload,
            ..
        } = publication;
        let stamp = Stamp {
            cache: self.cache.generation(),
            direct: self.direct.generation(),
            subscriptions: self.subscriptions.generation(),
        };
        let (subscriptions, cache, direct) = (&self.subscriptions, &self.cache, &self.direct);
        let local_id = self.config.local_id;
        let route = self.routes.route(
            &topic,
            stamp,
            |prefix| subscriptions.key(prefix),
            |keys| work_out(now, &topic, keys, (local_id, cache, direct, subscriptions)),
        );
        // Shared with the memo, so the queues can be written.
        let Route { subscribers, local } = route.clone();
        if local {
            self.outputs.push(PubSubOutput::Event(PubSubEvent::Message {
                publisher: self.config.local_id,
                message_id,
                topic: topic.clone(),
                payload: payload.clone(),
            }));
        }
        for &subscriber in subscribers.iter() {
            self.enqueue(now, subscriber, message_id, topic.clone(), payload.clone());
        }
    }

    fn enqueue(&mut self, now: Instant, subscriber: NodeId, id: u64, topic: Topic, payload: Bytes) {
        if let Some(&retry) = self.down.get(&subscriber).filter(|until| now < **until) {
            self.hold(subscriber, retry, Queued::new(id, topic, payload));
            return;
        }
        self.down.remove(&subscriber);
        let bound = self.config.queue_bound;
        let outbox = self.session(now, subscriber);
        self.stats.dropped_slow += outbox.push(bound, id, topic, payload);
        self.pump(now, subscriber);
    }

    /// Keeps `message` for `subscriber`, unreachable until `retry`, to send
    /// once it is tried again: at most `queue_bound` wait (the oldest goes
    /// first, counted), for `carry_over` past the retry. Without a
    /// carry-over the message is dropped (counted).
    fn hold(&mut self, subscriber: NodeId, retry: Instant, message: Queued) {
        let span = self.config.carry_over;
        if span.is_zero() {
            self.stats.dropped_disconnected += 1;
            return;
        }
        let left = self.carried.entry(subscriber).or_insert_with(|| Left {
            until: retry + span,
            messages: Vec::new(),
        });
        left.until = left.until.max(retry + span);
        left.messages.push(message);
        let skip = left.messages.len().saturating_sub(self.config.queue_bound);
        self.stats.dropped_disconnected += unsent(&left.messages[..skip]);
        left.messages.drain(..skip);
    }

    /// `subscriber`'s session, opened now (the next epoch) if it has none,
    /// with what its last session left ([`PubSub::handle_disconnected`]).
    fn session(&mut self, now: Instant, subscriber: NodeId) -> &mut Outbox {
        let (epoch, carried, stats) = (&mut self.next_epoch, &mut self.carried, &mut self.stats);
        self.outboxes.entry(subscriber).or_insert_with(|| {
            let left = match carried.remove(&subscriber) {
                Some(left) if now < left.until => left.messages,
                Some(expired) => {
                    stats.dropped_disconnected += unsent(&expired.messages);
                    Vec::new()
                }
                None => Vec::new(),
            };
            let outbox = Outbox::resume(*epoch, left);
            *epoch += 1;
            outbox
        })
    }

    /// Frames a session keeps for a carry-over (0: none).
    fn kept_frames(&self) -> usize {
        if self.config.carry_over.is_zero() {
            0
        } else {
            self.config.carry_bound
        }
    }

    /// Hands `subscriber` as many frames as its window takes.
    fn pump(&mut self, now: Instant, subscriber: NodeId) {
        let keep = self.kept_frames();
        let Some(outbox) = self.outboxes.get_mut(&subscriber) else {
            return;
        };
        while let Some((message, again)) = outbox.next_frame(now, self.config.send_window, keep) {
            self.stats.sent += 1;
            self.stats.resent += u64::from(again);
            self.outputs.push(PubSubOutput::Send {
                subscriber,
                message,
            });
        }
    }

    /// The Node wrote one PUBLISH frame of `epoch` to `subscriber`'s stream
    /// (a frame of an earlier session of that subscriber counts for nothing).
    pub fn handle_written(&mut self, now: Instant, subscriber: NodeId, epoch: u64) {
        self.outputs.mark(now);
        if let Some(outbox) = self.outboxes.get_mut(&subscriber) {
            outbox.written(epoch);
        }
        self.pump(now, subscriber);
    }

    /// The connection to `peer` closed (idle, or by either side): as a
    /// subscriber its session ends, what it left unsure is carried into its
    /// next one (module docs); its direct subscriptions end; as a publisher
    /// its buffered frames are delivered and its state forgotten.
    pub fn handle_disconnected(&mut self, now: Instant, peer: NodeId) {
        self.outputs.mark(now);
        if let Some(outbox) = self.outboxes.remove(&peer) {
            let (span, bound) = (self.config.carry_over, self.config.queue_bound);
            if span.is_zero() {
                self.stats.dropped_disconnected += outbox.unsent() as u64;
                return self.forget_peer(now, peer);
            }
            let mut left = outbox.carry(now, span, bound);
            if let Some(older) = self.carried.remove(&peer) {
                // A session that never got going: what its predecessor left comes first.
                left.splice(0..0, older.messages);
                let skip = left.len().saturating_sub(bound);
                self.stats.dropped_disconnected += unsent(&left[..skip]);
                left.drain(..skip);
            }
            if !left.is_empty() {
                let until = now + span;
                self.carried.insert(
                    peer,
                    Left {
                        until,
                        messages: left,
                    },
                );
            }
        }
        self.forget_peer(now, peer);
    }

    /// `peer`'s direct subscriptions end; as a publisher its buffered
    /// frames are delivered and its state forgotten.
    fn forget_peer(&mut self, now: Instant, peer: NodeId) {
        self.direct.remove_peer(&peer);
        self.receive_with(|receiver, deliver| receiver.forget(now, &peer, deliver));
    }

    /// `peer` could not be reached to deliver PUBLISH frames: as
    /// [`PubSub::handle_disconnected`], and it is not tried again for
    /// [`PubSubConfig::retry_after`] or until [`PubSub::handle_connected`].
    /// What it left, and what is published for it meanwhile, waits for that
    /// (at most `queue_bound`); when the retry time comes a session opens
    /// with it. A subscriber whose messages waited longer than six retry
    /// periods in all (30 s by default) loses them (counted), so a dead one
    /// costs one dial per retry period while there is something for it, as
    /// before.
    pub fn handle_unreachable(&mut self, now: Instant, peer: NodeId) {
        self.handle_disconnected(now, peer);
        let retry = now + self.config.retry_after;
        self.down.insert(peer, retry);
        let limit = self.config.retry_after.saturating_mul(6);
        let span = self.config.carry_over;
        let since = *self.unreachable_since.entry(peer).or_insert(now);
        match self.carried.get_mut(&peer) {
            Some(left) if now.saturating_duration_since(since) > limit || span.is_zero() => {
                self.stats.dropped_disconnected += unsent(&left.messages);
                self.carried.remove(&peer);
                self.unreachable_since.remove(&peer);
            }
            Some(left) => left.until = left.until.max(retry + span),
            None => {}
        }
    }

    /// `peer` is connected again: if it is a subscriber, it may receive at
    /// once, starting with what its last session left.
    pub fn handle_connected(&mut self, now: Instant, peer: NodeId) {
        self.outputs.mark(now);
        self.down.remove(&peer);
        self.unreachable_since.remove(&peer);
        self.resume_left(now, peer);
    }

    /// Opens `peer`'s next session with what its last one left (and what
    /// waited for it meanwhile), if anything did and none is open.
    fn resume_left(&mut self, now: Instant, peer: NodeId) {
        if self.carried.contains_key(&peer) && !self.outboxes.contains_key(&peer) {
            self.session(now, peer);
            self.pump(now, peer);
        }
    }

    /// SUBSCRIBE from `peer` arrived: it subscribes here directly, until
    /// UNSUBSCRIBE or until it disconnects. Answered with an empty REPLY, or
    /// ERROR `bad request` (not a pattern) or `overloaded` (too many).
    pub fn handle_subscribe(&mut self, now: Instant, peer: NodeId, subscribe: Subscribe) {
        self.outputs.mark(now);
        let Subscribe {
            request_id,
            pattern,
        } = subscribe;
        let refusal = match Pattern::new(&pattern) {
            Err(e) => Some((ErrorCode::BadRequest, e.to_string())),
            Ok(pattern) => match self.direct.insert(peer, pattern) {
                Ok(()) => None,
                Err(Refusal::Full(max)) => {
                    Some((ErrorCode::Overloaded, format!("{max} direct subscriptions")))
                }
                Err(Refusal::PeerFull(max)) => Some((
                    ErrorCode::Overloaded,
                    format!("{max} direct subscriptions per peer"),
                )),
            },
        };
        self.down.remove(&peer);
        self.answer(peer, request_id, refusal);
    }

    /// UNSUBSCRIBE from `peer` arrived; answered with an empty REPLY (also
    /// when there was no such subscription), or ERROR `bad request`.
    pub fn handle_unsubscribe(&mut self, now: Instant, peer: NodeId, unsubscribe: Unsubscribe) {
        self.outputs.mark(now);
        let Unsubscribe {
            request_id,
            pattern,
        } = unsubscribe;
        let refusal = match Pattern::new(&pattern) {
            Err(e) => Some((ErrorCode::BadRequest, e.to_string())),
            Ok(pattern) => {
                self.direct.remove(&peer, &pattern);
                None
            }
        };
        self.answer(peer, request_id, refusal);
    }

    fn answer(&mut self, peer: NodeId, request_id: u64, refusal: Option<(ErrorCode, String)>) {
        let message = match refusal {
            None => Message::Reply(Reply {
                request_id,
                payload: Bytes::new(),
            }),
            Some((code, message)) => Message::ErrorReply(ErrorReply {
                request_id,
                code,
                message,
            }),
        };
        self.outputs.push(PubSubOutput::Answer { peer, message });
    }

    /// A PUBLISH frame from `publisher` arrived. One on a topic we do not
    /// subscribe to, or from a publisher [`PubSubConfig::publishers`] does
    /// not allow on it, is dropped at once and counted, never buffered (its
    /// sequence number is used up: [`Receiver::pass`]).
    pub fn handle_publish(&mut self, now: Instant, publisher: NodeId, message: Publish) {
        self.outputs.mark(now);
        let wanted = self.subscriptions.wanted(&message.topic);
        let refused = match wanted {
            None => Some(&mut self.stats.unsolicited),
            Some(topic) if !self.config.publishers.allows(&publisher, topic.as_str()) => {
                Some(&mut self.stats.unauthorized)
            }
            Some(_) => None,
        };
        if let Some(counter) = refused {
            *counter += 1;
            let number = (message.epoch, message.sequence);
            self.receive_with(|receiver, deliver| {
                receiver.pass(now, publisher, number, deliver);
            });
            return;
        }
        self.receive_with(|receiver, deliver| {
            receiver.receive(now, publisher, message, deliver);
        });
    }

    /// Acts on the timers due by `now`: lookups given up on, announcements
    /// to retry, gaps skipped, disconnected subscribers that may be tried again.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.outputs.mark(now);
        for key in self.cache.expire(now) {
            self.resolved(now, key);
        }
        self.cache.prune(now);
        let due = self.announcements.due(now);
        self.outputs
            .extend(due.into_iter().map(PubSubOutput::Directory));
        self.receive_with(|receiver, deliver| receiver.handle_timeout(now, deliver));
        let mut retry: Vec<NodeId> = (self.down.iter())
            .filter(|(peer, until)| now >= **until && self.carried.contains_key(*peer))
            .map(|(peer, _)| *peer)
            .collect();
        retry.sort();
        self.down.retain(|_, until| now < *until);
        let stats = &mut self.stats;
        self.carried.retain(|_, left| {
            let keep = now < left.until;
            if !keep {
                stats.dropped_disconnected += unsent(&left.messages);
            }
            keep
        });
        let (down, carried) = (&self.down, &self.carried);
        (self.unreachable_since)
            .retain(|peer, _| down.contains_key(peer) || carried.contains_key(peer));
        // Subscribers whose retry time came, with messages waiting: tried again.
        for peer in retry {
            self.resume_left(now, peer);
        }
        let span = self.config.carry_over;
        for outbox in self.outboxes.values_mut() {
            outbox.prune(now, span);
        }
    }

    /// Runs `act` on the receiver with a sink that hands each message it
    /// releases to the application if we subscribe to its topic, and counts
    /// it as unsolicited otherwise.
    fn receive_with(&mut self, act: impl FnOnce(&mut Receiver, &mut dyn FnMut(NodeId, Publish))) {
        let (subscriptions, outputs, stats) =
            (&mut self.subscriptions, &mut self.outputs, &mut self.stats);
        let mut sink = |publisher: NodeId, message: Publish| {
            let Some(topic) = subscriptions.wanted(&message.topic) else {
                stats.unsolicited += 1;
                return;
            };
            outputs.push(PubSubOutput::Event(PubSubEvent::Message {
                publisher,
                message_id: message.message_id,
                topic,
                payload: message.payload,
            }));
        };
        act(&mut self.receiver, &mut sink);
    }
}

/// Where a publication on `topic` goes, from the values known under its
/// prefixes' `keys`, the direct subscriptions and our own: every other node
/// whose record or direct subscription has a pattern matching it, in id
/// order, and whether we want it ourselves.
fn work_out(
    now: Instant,
    topic: &Topic,
    keys: &[RecordKey],
    (local_id, cache, direct, subscriptions): (NodeId, &LookupCache, &Direct, &Subscriptions),
) -> Route {
    let mut subscribers = BTreeSet::new();
    for key in keys {
        let Some(found) = cache.get(now, key).values() else {
            continue;
        };
        for entry in found {
            if entry.provider != local_id && subscriber_value_matches(&entry.value, topic) {
                subscribers.insert(entry.provider);
            }
        }
    }
    subscribers.extend(direct.matching(topic));
    Route {
        subscribers: subscribers.into_iter().collect(),
        local: subscriptions.want(topic),
    }
}

/// The seed of the announcement retries' jitter: the first bytes of our id.
fn announce_seed(local: &NodeId) -> u64 {
    let mut seed = [0; 8];
    seed.copy_from_slice(&local.as_bytes()[..8]);
    u64::from_le_bytes(seed)
}

impl Child for PubSub {
    type Output = PubSubOutput;

    /// The next thing for the Node to do.
    fn poll_output(&mut self) -> Option<PubSubOutput> {
        self.outputs.pop()
    }

    /// When [`PubSub::handle_timeout`] is next needed (the last input's time
    /// while output is queued).
    fn poll_timeout(&self) -> Option<Instant> {
        self.outputs.deadline([
            self.cache.next_deadline(),
            self.announcements.next_deadline(),
            self.receiver.next_deadline(),
            self.down.values().min().copied(),
            self.carried.values().map(|left| left.until).min(),
        ])
    }
}

/// Messages kept for a subscriber's next session.
#[derive(Debug)]
struct Left {
    /// Until when they are kept.
    until: Instant,
    /// Oldest first.
    messages: Vec<Queued>,
}

/// How many of `messages` were never handed out.
fn unsent(messages: &[Queued]) -> u64 {
    messages.iter().filter(|q| !q.sent()).count() as u64
}
