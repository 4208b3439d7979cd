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

use std::collections::VecDeque;

use bytes::Bytes;

use crate::topic::Topic;
use crate::wire::Publish;

/// A message waiting for the subscriber's window.
#[derive(Clone, Debug)]
struct Queued {
    message_id: u64,
    topic: Topic,
    payload: Bytes,
}

/// One subscriber's queue and window.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    epoch: u64,
    next_sequence: u64,
    queue: VecDeque<Queued>,
    in_flight: usize,
}

impl Outbox {
    /// A new session numbered in `epoch`.
    pub(crate) fn new(epoch: u64) -> Self {
        Self {
            epoch,
            next_sequence: 0,
            queue: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// Queues a message; returns how many were dropped to make room (0 or 1)
    /// under a bound of `capacity` waiting messages.
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
            self.queue.pop_front();
            1
        } else {
            0
        };
        self.queue.push_back(Queued {
            message_id,
            topic,
            payload,
        });
        dropped
    }

    /// The next frame to hand to the Node, if the window of `window` frames
    /// has room.
    pub(crate) fn next_frame(&mut self, window: usize) -> Option<Publish> {
        if self.in_flight >= window {
            return None;
        }
        let queued = self.queue.pop_front()?;
        self.in_flight += 1;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Some(Publish {
            message_id: queued.message_id,
            epoch: self.epoch,
            sequence,
            topic: queued.topic.as_str().into(),
            payload: queued.payload,
        })
    }

    /// One frame of `epoch` handed out was written (frames of another
    /// session do not count).
    pub(crate) fn written(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// How many messages are waiting (not handed out).
    pub(crate) fn waiting(&self) -> usize {
        self.queue.len()
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
        let first = outbox.next_frame(2).unwrap();
        assert_eq!((first.message_id, first.epoch, first.sequence), (1, 9, 0));
        assert_eq!(outbox.next_frame(2).unwrap().sequence, 1);
        assert!(outbox.next_frame(2).is_none(), "window full");
        outbox.written(8);
        assert!(outbox.next_frame(2).is_none(), "another session's write");
        outbox.written(9);
        let third = outbox.next_frame(2).unwrap();
        assert_eq!((third.message_id, third.sequence), (3, 2));
        assert!(outbox.next_frame(2).is_none());
        assert_eq!(push(&mut outbox, 0, 4), 1, "no room at all");
        assert_eq!(outbox.waiting(), 0);
    }
}
