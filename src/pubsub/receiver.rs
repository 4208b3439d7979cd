//! The subscriber's side of ordering: PUBLISH frames from each publisher come
//! out in `(epoch, sequence)` order, each at most once.
//!
//! Per publisher the receiver keeps the current epoch and the next sequence
//! number it expects. A frame with that number is delivered, and with it any
//! buffered successors; a later one waits in a bounded reorder buffer; an
//! earlier one, or one already buffered, is a duplicate and is dropped. A
//! newer epoch (the publisher restarted, or opened a new session after a
//! disconnect) first flushes what is buffered of the old epoch, in order,
//! then starts over. Frames of an older epoch are stale and dropped. A gap
//! that stays open [`ReceiverConfig::gap_timeout`] is given up on: the
//! receiver skips to the first buffered frame and counts the missing ones as
//! skipped.
//!
//! **Sequence numbers are attacker-chosen**, so:
//! - a frame more than [`ReceiverConfig::reorder_window`] ahead of the
//!   expected one is refused ([`Received::OutOfWindow`], counted): it is
//!   neither buffered nor allowed to move the expected number, so the
//!   publisher's later honest frames are still delivered, each once. The
//!   reorder buffer therefore never holds more than the window.
//! - `u64::MAX` is never a valid sequence number (a session ends before it:
//!   no publisher sends 2^64 frames) and is refused the same way, so every
//!   `sequence + 1` here fits.
//! - A session starts at sequence 0. When the first frame we see of a
//!   session (a publisher we hold no state for, or a newer epoch) is past the
//!   window from 0, we missed its start (we had forgotten the publisher): the
//!   receiver starts at that frame and counts the numbers before it as
//!   skipped. A publisher can only disorder its own frames this way.
//!
//! **Carried-over frames.** A publisher whose connection to us closed sends
//! the frames whose delivery it could not know again, first in its next
//! session ([`crate::pubsub::outbox`]). Its message ids only grow (across
//! sessions and restarts), so the receiver keeps the last message it
//! delivered per publisher, across sessions and for
//! [`ReceiverConfig::resend_memory`] after the publisher is forgotten, and
//! drops a frame of a later session whose id is not above that one's
//! ([`Received::Duplicate`]; its number is used up).
//!
//! Frames the subscriber does not take (no subscription matches their
//! topic, or the publisher is not authorized for it) are [passed](Receiver::pass):
//! their number is used up without keeping the payload, so the frames after
//! them do not wait for a gap; a publisher we hold no state for gets none.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::collections::HashMap;
use crate::id::NodeId;
use crate::wire::Publish;

/// Bounds and timers of the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// How far ahead of the expected sequence number a frame may be
    /// (default 256): such a frame waits in the reorder buffer, one further
    /// ahead is refused. So also the most frames buffered per publisher.
    pub reorder_window: usize,
    /// How long a gap may stay open before it is skipped (default 2 s).
    pub gap_timeout: Duration,
    /// Most publishers tracked at once (default 4096); past it the least
    /// recently heard one is forgotten (its next session starts afresh).
    pub max_publishers: usize,
    /// How long after its last delivery the highest message id of a
    /// publisher counts against a new session's frames (default 60 s). A
    /// carried-over frame can come that late: handed out up to 5 s before
    /// its connection closed, kept 5 s for the next session, then held
    /// while the publisher dials again (the 100-node cluster saw a resend
    /// 12.8 s after the original delivery, at 10 s it was taken for new). A
    /// publisher heard again later starts afresh, so a restarted one whose
    /// clock went back loses nothing for longer than this.
    pub resend_memory: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            reorder_window: 256,
            gap_timeout: Duration::from_secs(2),
            max_publishers: 4096,
            resend_memory: Duration::from_secs(60),
        }
    }
}

/// What became of one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Delivered, with any buffered successors.
    Delivered,
    /// Ahead of a gap: buffered.
    Buffered,
    /// Already delivered or buffered: dropped.
    Duplicate,
    /// Of an older epoch than the publisher's current one: dropped.
    Stale,
    /// More than the reorder window ahead of the expected sequence, or
    /// numbered `u64::MAX`: refused (see the module docs).
    OutOfWindow,
    /// Dropped unread ([`Receiver::pass`]): its number is used up, if the
    /// publisher is known.
    Passed,
}

/// Counters of the receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Frames handed on, in order.
    pub delivered: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Frames of an older epoch dropped.
    pub stale: u64,
    /// Sequence numbers given up on (gaps skipped, or the start of a
    /// session we missed).
    pub skipped: u64,
    /// Frames refused as too far ahead ([`Received::OutOfWindow`]).
    pub out_of_window: u64,
}

#[derive(Clone, Debug)]
struct Stream {
    epoch: u64,
    next: u64,
    /// Frames ahead of `next`, at most `reorder_window` of them (`None`: a
    /// passed frame, holding only its number).
    buffer: BTreeMap<u64, Option<Publish>>,
    /// When the current gap opened (the buffer is not empty).
    gap_since: Option<Instant>,
    last_heard: Instant,
    /// The last message delivered: its id, its epoch, and when.
    last_id: Option<Delivered>,
}

/// The last message delivered of a publisher.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    id: u64,
    epoch: u64,
    at: Instant,
}

impl Stream {
    /// Hands `message` on unless it is of a later session than the last
    /// delivered and its id is not above that one's (a frame carried over
    /// that we had; within a session the sequence numbers tell, and an
    /// earlier session after a forget is a publisher starting afresh); true
    /// when handed on.
    fn hand_on(
        &mut self,
        now: Instant,
        stats: &mut ReceiverStats,
        publisher: NodeId,
        message: Publish,
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) -> bool {
        if (self.last_id)
            .is_some_and(|last| message.epoch > last.epoch && message.message_id <= last.id)
        {
            stats.duplicates += 1;
            return false;
        }
        self.last_id = Some(Delivered {
            id: message.message_id,
            epoch: message.epoch,
            at: now,
        });
        stats.delivered += 1;
        deliver(publisher, message);
        true
    }
}

/// Per-publisher ordering and deduplication.
#[derive(Clone, Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    streams: HashMap<NodeId, Stream>,
    /// The last message delivered of publishers forgotten lately (at most
    /// `max_publishers`).
    remembered: HashMap<NodeId, Delivered>,
    /// Open gaps by the time they are given up on.
    gaps: BTreeSet<(Instant, NodeId)>,
    stats: ReceiverStats,
}

impl Receiver {
    /// An empty receiver.
    pub fn new(config: ReceiverConfig) -> Self {
        Self {
            config,
            streams: HashMap::default(),
            remembered: HashMap::default(),
            gaps: BTreeSet::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// Takes one frame from `publisher` at `now`; every frame that becomes
    /// deliverable goes to `deliver`, in order.
    pub fn receive(
        &mut self,
        now: Instant,
        publisher: NodeId,
        message: Publish,
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) -> Received {
        let (epoch, sequence) = (message.epoch, message.sequence);
        self.take(now, publisher, (epoch, sequence), Some(message), deliver)
    }

    /// A frame from `publisher` numbered `(epoch, sequence)` that is dropped
    /// unread: if the publisher is known its number is used up (so what
    /// follows does not wait for it), else nothing is kept. Frames it
    /// releases go to `deliver`.
    pub fn pass(
        &mut self,
        now: Instant,
        publisher: NodeId,
        (epoch, sequence): (u64, u64),
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) -> Received {
        if !self.streams.contains_key(&publisher) {
            return Received::Passed;
        }
        match self.take(now, publisher, (epoch, sequence), None, deliver) {
            Received::Delivered | Received::Buffered => Received::Passed,
            other => other,
        }
    }

    /// The reorder window as a sequence distance.
    fn window(&self) -> u64 {
        u64::try_from(self.config.reorder_window).unwrap_or(u64::MAX)
    }

    /// Where a session whose first frame seen is `sequence` starts: 0, or
    /// that frame when it is past the window (we missed the start; the
    /// numbers before it count as skipped).
    fn start_of(&mut self, sequence: u64) -> u64 {
        if sequence <= self.window() {
            return 0;
        }
        self.stats.skipped = self.stats.skipped.saturating_add(sequence);
        sequence
    }

    /// One frame, read (`message`) or passed (`None`).
    fn take(
        &mut self,
        now: Instant,
        publisher: NodeId,
        (epoch, sequence): (u64, u64),
        message: Option<Publish>,
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) -> Received {
        if sequence == u64::MAX {
            self.stats.out_of_window += 1;
            return Received::OutOfWindow;
        }
        if !self.streams.contains_key(&publisher) {
            self.make_room(now, publisher);
            let next = self.start_of(sequence);
            let last_id = (self.remembered.remove(&publisher))
                .filter(|last| now.saturating_duration_since(last.at) <= self.config.resend_memory);
            let stream = Stream {
                epoch,
                next,
                buffer: BTreeMap::new(),
                gap_since: None,
                last_heard: now,
                last_id,
            };
            self.streams.insert(publisher, stream);
        }
        let stream = stream_of(&mut self.streams, publisher);
        stream.last_heard = now;
        if epoch < stream.epoch {
            self.stats.stale += 1;
            return Received::Stale;
        }
        if epoch > stream.epoch {
            self.flush(now, publisher, deliver);
            let next = self.start_of(sequence);
            let memory = self.config.resend_memory;
            let stream = stream_of(&mut self.streams, publisher);
            stream.epoch = epoch;
            stream.next = next;
            if (stream.last_id).is_some_and(|last| now.saturating_duration_since(last.at) > memory)
            {
                stream.last_id = None;
            }
        }
        let window = self.window();
        let stream = stream_of(&mut self.streams, publisher);
        if sequence < stream.next || stream.buffer.contains_key(&sequence) {
            self.stats.duplicates += 1;
            return Received::Duplicate;
        }
        if sequence - stream.next > window {
            self.stats.out_of_window += 1;
            return Received::OutOfWindow;
        }
        if sequence > stream.next {
            stream.buffer.insert(sequence, message);
            if stream.gap_since.is_none() {
                stream.gap_since = Some(now);
                self.gaps.insert((now + self.config.gap_timeout, publisher));
            }
            return Received::Buffered;
        }
        stream.next = sequence + 1;
        let fresh = match message {
            Some(message) => stream.hand_on(now, &mut self.stats, publisher, message, deliver),
            None => true,
        };
        self.drain_ready(now, publisher, deliver);
        if fresh {
            Received::Delivered
        } else {
            Received::Duplicate
        }
    }

    /// Skips the gaps that stayed open until `now`.
    pub fn handle_timeout(&mut self, now: Instant, deliver: &mut dyn FnMut(NodeId, Publish)) {
        while let Some(&(at, publisher)) = self.gaps.first() {
            if at > now {
                break;
            }
            self.skip_gap(now, publisher, deliver);
        }
    }

    /// When the earliest open gap is given up on.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gaps.first().map(|(at, _)| *at)
    }

    /// Forgets `publisher` (it disconnected: its next session starts a newer
    /// epoch). What was buffered is delivered first, in order.
    pub fn forget(
        &mut self,
        now: Instant,
        publisher: &NodeId,
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) {
        if self.streams.contains_key(publisher) {
            self.flush(now, *publisher, deliver);
            let last_id = self.streams.remove(publisher).and_then(|s| s.last_id);
            if let Some(last) = last_id {
                self.remember(now, *publisher, last);
            }
        }
    }

    /// Keeps the highest id delivered of a publisher being forgotten for
    /// [`ReceiverConfig::resend_memory`]; when the table is full, the ones
    /// past it go first, then the oldest.
    fn remember(&mut self, now: Instant, publisher: NodeId, last: Delivered) {
        let memory = self.config.resend_memory;
        if now.saturating_duration_since(last.at) > memory {
            return;
        }
        if self.remembered.len() >= self.config.max_publishers {
            self.remembered
                .retain(|_, d| now.saturating_duration_since(d.at) <= memory);
        }
        if self.remembered.len() >= self.config.max_publishers {
            let oldest = (self.remembered.iter())
                .min_by_key(|(id, d)| (d.at, **id))
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.remembered.remove(&oldest);
            }
        }
        self.remembered.insert(publisher, last);
    }

    /// Forgets the least recently heard publisher when the table is full.
    fn make_room(&mut self, now: Instant, newcomer: NodeId) {
        if self.streams.len() < self.config.max_publishers {
            return;
        }
        let oldest = self
            .streams
            .iter()
            .filter(|(id, _)| **id != newcomer)
            .min_by_key(|(id, s)| (s.last_heard, **id))
            .map(|(id, _)| *id);
        if let Some(oldest) = oldest {
            self.forget(now, &oldest, &mut |_, _| {});
        }
    }

    /// Gives up on the open gap of `publisher`: skips to its first buffered
    /// frame and delivers from there.
    fn skip_gap(
        &mut self,
        now: Instant,
        publisher: NodeId,
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) {
        let stream = stream_of(&mut self.streams, publisher);
        if let Some(&first) = stream.buffer.keys().next() {
            let skipped = first.saturating_sub(stream.next);
            self.stats.skipped = self.stats.skipped.saturating_add(skipped);
            stream.next = first;
        }
        self.drain_ready(now, publisher, deliver);
    }

    /// Delivers every buffered frame, in order, skipping gaps.
    fn flush(&mut self, now: Instant, publisher: NodeId, deliver: &mut dyn FnMut(NodeId, Publish)) {
        while !stream_of(&mut self.streams, publisher).buffer.is_empty() {
            self.skip_gap(now, publisher, deliver);
        }
    }

    /// Delivers the buffered frames that follow on from `next`, and keeps the
    /// gap timer in step with whether a gap is still open (a gap left after
    /// progress counts from `now`).
    fn drain_ready(
        &mut self,
        now: Instant,
        publisher: NodeId,
        deliver: &mut dyn FnMut(NodeId, Publish),
    ) {
        let stream = stream_of(&mut self.streams, publisher);
        // Buffered numbers are below u64::MAX (it is refused), so `next`
        // never passes it.
        while let Some(message) = stream.buffer.remove(&stream.next) {
            stream.next = stream.next.saturating_add(1);
            if let Some(message) = message {
                stream.hand_on(now, &mut self.stats, publisher, message, deliver);
            }
        }
        if let Some(since) = stream.gap_since.take() {
            self.gaps
                .remove(&(since + self.config.gap_timeout, publisher));
        }
        if !stream.buffer.is_empty() {
            stream.gap_since = Some(now);
            self.gaps.insert((now + self.config.gap_timeout, publisher));
        }
    }
}

/// The stream of `publisher`, which exists while it is being worked on.
fn stream_of(streams: &mut HashMap<NodeId, Stream>, publisher: NodeId) -> &mut Stream {
    streams
        .get_mut(&publisher)
        .expect("the stream exists while it is being worked on")
}
