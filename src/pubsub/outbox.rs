//! The publisher's side of one subscriber: a bounded queue that a slow
//! subscriber cannot grow and that never makes the publisher wait.
//!
//! At most [`send_window`](crate::pubsub::PubSubConfig::send_window)
//! PUBLISH frames are handed to the Node and not yet reported written; the
//! rest wait here. **Slow-subscriber policy: drop oldest.** When the queue
//! is full, the oldest waiting message is dropped and counted, so a
//! subscriber that catches up gets the freshest data, and the publisher and
//! every other subscriber go on at full speed. Sequence numbers are given
//! when a frame leaves the queue, so drops leave no gap the receiver would
//! wait for. Each outbox is one session with its own epoch: a subscriber
//! that comes back after a disconnect gets a new outbox, a newer epoch and
//! sequence numbers from 0.
//!
//! **Carry-over.** QUIC tells when it took a frame, not when the subscriber
//! got it, so a connection that dies (a relay that stops answering, a NAT
//! that reboots) takes with it the frames of the last round trips. The
//! outbox keeps the frames it handed out during the last
//! [`carry_over`](crate::pubsub::PubSubConfig::carry_over) (at most
//! [`carry_bound`](crate::pubsub::PubSubConfig::carry_bound) of them): at a
//! disconnect they and the waiting ones are [carried](Outbox::carry) into
//! the subscriber's next session, where the receiver drops the ones it
//! already had by their message ids (which only grow, across sessions and
//! restarts: [`crate::pubsub::receiver`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::topic::Topic;
use crate::wire::Publish;

/// A message waiting for the subscriber's window.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    message_id: u64,
    topic: Topic,
    payload: Bytes,
    /// Handed out before, in an earlier session (carried over).
    sent: bool,
}

impl Queued {
    /// A message never handed out.
    pub(crate) fn new(message_id: u64, topic: Topic, payload: Bytes) -> Self {
        Self {
            message_id,
            topic,
            payload,
            sent: false,
        }
    }

    /// Whether it was handed out before, in an earlier session.
    pub(crate) fn sent(&self) -> bool {
        self.sent
    }
}

/// One subscriber's queue and window.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    epoch: u64,
    next_sequence: u64,
    queue: VecDeque<Queued>,
    in_flight: usize,
    /// The frames handed out lately, oldest first, with when.
    recent: VecDeque<(Instant, Queued)>,
}

impl Outbox {
    /// A new session numbered in `epoch`.
    pub(crate) fn new(epoch: u64) -> Self {
        Self {
            epoch,
            next_sequence: 0,
            queue: VecDeque::new(),
            in_flight: 0,
            recent: VecDeque::new(),
        }
    }

    /// A new session numbered in `epoch` that first sends `carried` (what an
    /// earlier session of the same subscriber left: [`Outbox::carry`]).
    pub(crate) fn resume(epoch: u64, carried: Vec<Queued>) -> Self {
        Self {
            queue: carried.into(),
            ..Self::new(epoch)
        }
    }

    /// The session ends (its connection closed): the frames handed out
    /// within `span` before `now` (their delivery unknown), then the waiting
    /// ones, at most `bound` in all (the newest kept).
    pub(crate) fn carry(self, now: Instant, span: Duration, bound: usize) -> Vec<Queued> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) <= span;
        let recent = (self.recent.into_iter())
            .filter(|(at, _)| fresh(at))
            .map(|(_, queued)| Queued {
                sent: true,
                ..queued
            });
        let all: Vec<Queued> = recent.chain(self.queue).collect();
        let skip = all.len().saturating_sub(bound);
        all.into_iter().skip(skip).collect()
    }

    /// Queues a message; returns how many never handed out were dropped to
    /// make room (0 or 1) under a bound of `capacity` waiting messages.
    pub(crate) fn push(
        &mut self,
        capacity: usize,
        message_id: u64,
        topic: Topic,
        payload: Bytes,
    ) -> u64 {
        if capacity == 0 {
            return 1;
        }
        let dropped = if self.queue.len() >= capacity {
            self.queue.pop_front().map_or(0, |q| u64::from(!q.sent))
        } else {
            0
        };
        self.queue
            .push_back(Queued::new(message_id, topic, payload));
        dropped
    }

    /// The next frame to hand to the Node at `now`, if the window of `window`
    /// frames has room, and whether it was handed out before (a carried-over
    /// one); it is kept for a carry-over (at most `keep` frames, 0: none).
    pub(crate) fn next_frame(
        &mut self,
        now: Instant,
        window: usize,
        keep: usize,
    ) -> Option<(Publish, bool)> {
        if self.in_flight >= window {
            return None;
        }
        let queued = self.queue.pop_front()?;
        self.in_flight += 1;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let frame = Publish {
            message_id: queued.message_id,
            epoch: self.epoch,
            sequence,
            topic: queued.topic.to_shared(),
            payload: queued.payload.clone(),
        };
        let again = queued.sent;
        if keep > 0 {
            if self.recent.len() >= keep {
                self.recent.pop_front();
            }
            self.recent.push_back((now, queued));
        }
        Some((frame, again))
    }

    /// One frame of `epoch` handed out was written (frames of another
    /// session do not count).
    pub(crate) fn written(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// How many messages are waiting (not handed out in this session).
    pub(crate) fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// How many waiting messages were never handed out.
    pub(crate) fn unsent(&self) -> usize {
        self.queue.iter().filter(|q| !q.sent).count()
    }

    /// Forgets the frames handed out before `now - span`.
    pub(crate) fn prune(&mut self, now: Instant, span: Duration) {
        while (self.recent.front()).is_some_and(|(at, _)| now.saturating_duration_since(*at) > span)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(outbox: &mut Outbox, capacity: usize, id: u64) -> u64 {
        outbox.push(capacity, id, Topic::new("t").unwrap(), Bytes::new())
    }

    #[test]
    fn drops_oldest_when_full_and_numbers_on_the_way_out() {
        let mut outbox = Outbox::new(9);
        for id in 0..3 {
            assert_eq!(push(&mut outbox, 3, id), 0);
        }
        assert_eq!(push(&mut outbox, 3, 3), 1, "message 0 dropped");
        assert_eq!(outbox.waiting(), 3);
        let now = crate::test_epoch();
        let first = outbox.next_frame(now, 2, 0).unwrap().0;
        assert_eq!((first.message_id, first.epoch, first.sequence), (1, 9, 0));
        assert_eq!(outbox.next_frame(now, 2, 0).unwrap().0.sequence, 1);
        assert!(outbox.next_frame(now, 2, 0).is_none(), "window full");
        outbox.written(8);
        assert!(
            outbox.next_frame(now, 2, 0).is_none(),
            "another session's write"
        );
        outbox.written(9);
        let third = outbox.next_frame(now, 2, 0).unwrap().0;
        assert_eq!((third.message_id, third.sequence), (3, 2));
        assert!(outbox.next_frame(now, 2, 0).is_none());
        assert_eq!(push(&mut outbox, 0, 4), 1, "no room at all");
        assert_eq!(outbox.waiting(), 0);
    }

    #[test]
    fn a_closed_session_carries_its_recent_and_waiting_frames_into_the_next() {
        let t0 = crate::test_epoch();
        let span = Duration::from_secs(5);
        let mut outbox = Outbox::new(1);
        for id in 0..6 {
            push(&mut outbox, 16, id);
        }
        // Frames 0 and 1 go out at t0, 2 and 3 four seconds later; 4 and 5 wait.
        for (at, id) in [(t0, 0), (t0, 1)] {
            assert_eq!(outbox.next_frame(at, 8, 3).unwrap().0.message_id, id);
        }
        let later = t0 + Duration::from_secs(4);
        for id in [2, 3] {
            assert_eq!(outbox.next_frame(later, 8, 3).unwrap().0.message_id, id);
            outbox.written(1);
        }
        outbox.written(1);
        // At t0 + 6 s frames 0 and 1 are older than the span (and frame 0 is
        // past the three kept anyway).
        let carried = outbox.clone().carry(t0 + Duration::from_secs(6), span, 16);
        let ids: Vec<u64> = carried.iter().map(|q| q.message_id).collect();
        assert_eq!(ids, [2, 3, 4, 5]);
        let bounded = outbox.clone().carry(later, span, 3);
        let ids: Vec<u64> = bounded.iter().map(|q| q.message_id).collect();
        assert_eq!(ids, [3, 4, 5], "the newest kept under the bound");
        outbox.prune(t0 + Duration::from_secs(10), span);
        assert!(
            outbox.clone().carry(later, span, 16).len() == 2,
            "pruned: the waiting two"
        );
        // The next session sends them first, numbered from 0 in its epoch.
        let mut next = Outbox::resume(2, carried);
        let (frame, again) = next.next_frame(later, 8, 0).unwrap();
        assert_eq!((frame.message_id, frame.epoch, frame.sequence), (2, 2, 0));
        assert!(again, "sent before");
        assert_eq!((next.waiting(), next.unsent()), (3, 2));
    }
}
