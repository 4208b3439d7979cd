//! The subscriber's side of ordering: PUBLISH frames from each publisher come
//! out in `(epoch, sequence)` order, each at most once.
//!
//! Per publisher the receiver keeps the current epoch and the next sequence
//! number it expects. A frame with that number is delivered, and with it any
//! buffered successors; a later one waits in a bounded reorder buffer; an
//! earlier one, or one already buffered, is a duplicate and is dropped. A
//! newer epoch (the publisher restarted, or opened a new session after a
//! disconnect) first flushes what is buffered of the old epoch, in order,
//! then starts over at sequence 0; frames of an older epoch are stale and
//! dropped. A gap that stays open [`ReceiverConfig::gap_timeout`], or a
//! reorder buffer that fills up, is given up on: the receiver skips to the
//! first buffered frame and counts the missing ones as skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::collections::HashMap;
use crate::id::NodeId;
use crate::wire::Publish;

/// Bounds and timers of the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Most out-of-order frames buffered per publisher (default 256).
    pub reorder_window: usize,
    /// How long a gap may stay open before it is skipped (default 2 s).
    pub gap_timeout: Duration,
    /// Most publishers tracked at once (default 4096); past it the least
    /// recently heard one is forgotten (its next session starts afresh).
    pub max_publishers: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            reorder_window: 256,
            gap_timeout: Duration::from_secs(2),
            max_publishers: 4096,
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
    /// Sequence numbers given up on (gaps skipped).
    pub skipped: u64,
}

#[derive(Clone, Debug)]
struct Stream {
    epoch: u64,
    next: u64,
    buffer: BTreeMap<u64, Publish>,
    /// When the current gap opened (the buffer is not empty).
    gap_since: Option<Instant>,
    last_heard: Instant,
}

/// Per-publisher ordering and deduplication.
#[derive(Clone, Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    streams: HashMap<NodeId, Stream>,
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
        if !self.streams.contains_key(&publisher) {
            self.make_room(now, publisher);
        }
        let stream = self.streams.entry(publisher).or_insert(Stream {
            epoch: message.epoch,
            next: 0,
            buffer: BTreeMap::new(),
            gap_since: None,
            last_heard: now,
        });
        stream.last_heard = now;
        if message.epoch < stream.epoch {
            self.stats.stale += 1;
            return Received::Stale;
        }
        if message.epoch > stream.epoch {
            let epoch = message.epoch;
            self.flush(now, publisher, deliver);
            let stream = stream_of(&mut self.streams, publisher);
            stream.epoch = epoch;
            stream.next = 0;
        }
        let stream = stream_of(&mut self.streams, publisher);
        if message.sequence < stream.next || stream.buffer.contains_key(&message.sequence) {
            self.stats.duplicates += 1;
            return Received::Duplicate;
        }
        if message.sequence > stream.next {
            stream.buffer.insert(message.sequence, message);
            if stream.gap_since.is_none() {
                stream.gap_since = Some(now);
                self.gaps.insert((now + self.config.gap_timeout, publisher));
            }
            if stream_of(&mut self.streams, publisher).buffer.len() > self.config.reorder_window {
                self.skip_gap(now, publisher, deliver);
            }
            return Received::Buffered;
        }
        stream.next += 1;
        self.stats.delivered += 1;
        deliver(publisher, message);
        self.drain_ready(now, publisher, deliver);
        Received::Delivered
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
            self.streams.remove(publisher);
        }
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
            self.stats.skipped += first - stream.next;
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
        while let Some(message) = stream.buffer.remove(&stream.next) {
            stream.next += 1;
            self.stats.delivered += 1;
            deliver(publisher, message);
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
