//! The types the Node and the application see of pub/sub: settings,
//! errors, outputs, events and counters.

use std::time::Duration;

use bytes::Bytes;

use super::receiver::{ReceiverConfig, ReceiverStats};
use crate::access::AccessList;
use crate::directory::{AnnounceFailed, DirectoryRequest};
use crate::id::{NodeId, Realm};
use crate::topic::{Pattern, Topic};
use crate::wire::{HEADER_LEN, Limits, Message, Publish};

/// What went wrong with a pub/sub request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    /// The payload is over [`PubSubConfig::max_payload`].
    #[error("payload of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too many publications wait for lookups already.
    #[error("{waiting} publications already wait for lookups (the bound)")]
    Overloaded {
        /// How many wait.
        waiting: usize,
    },
    /// The node already has [`PubSubConfig::max_subscriptions`] subscriptions.
    #[error("already {max} subscriptions (the bound)")]
    TooManySubscriptions {
        /// The bound.
        max: usize,
    },
}

/// Settings of a [`PubSub`](super::PubSub) machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubSubConfig {
    /// The realm subscriber records are published in.
    pub realm: Realm,
    /// This node's id (our own subscriptions are served locally, not over
    /// the network).
    pub local_id: NodeId,
    /// The first publisher epoch. Each subscriber session takes the next one,
    /// so pick a value above every epoch of this node's previous run: its
    /// start time in Unix microseconds is the simple choice.
    pub first_epoch: u64,
    /// Largest payload accepted by
    /// [`PubSub::publish`](super::PubSub::publish) (default 1,000,000 bytes,
    /// so a PUBLISH fits the wire's default 1 MiB frame). A Node lowers it to
    /// what a PUBLISH carries within its own frame limit ([`Self::fit_to`]).
    pub max_payload: usize,
    /// Messages waiting per subscriber before the oldest is dropped
    /// (default 1024).
    pub queue_bound: usize,
    /// PUBLISH frames handed to the Node per subscriber and not yet written
    /// (default 64).
    pub send_window: usize,
    /// Publications waiting for lookups before `publish` says overloaded
    /// (default 1024).
    pub max_waiting_publications: usize,
    /// Local subscriptions at most (default 1024).
    pub max_subscriptions: usize,
    /// Subscriptions other nodes make here with SUBSCRIBE, at most
    /// (default 4096).
    pub max_direct_subscriptions: usize,
    /// Subscriptions one node makes here with SUBSCRIBE, at most (default 32).
    pub max_direct_per_peer: usize,
    /// How long lookup results are used (default 30 s).
    pub cache_ttl: Duration,
    /// How long a lookup may take before it counts as empty (default 5 s).
    pub lookup_timeout: Duration,
    /// How long an unreachable subscriber is skipped (default 5 s).
    pub retry_after: Duration,
    /// How long a subscriber's frames are kept for its next session once
    /// handed out (their delivery is unknown until the connection proves
    /// alive), and how long what a closed session left waits for the next
    /// one (default 5 s: longer than a dead relay or path takes to be found
    /// and left). `ZERO`: nothing is carried over, and what waited is
    /// dropped at the disconnect.
    pub carry_over: Duration,
    /// The most frames per subscriber kept for a carry-over (default 256:
    /// 5 s at 50 publications a second; each costs its topic's copy, its
    /// payload being shared).
    pub carry_bound: usize,
    /// The receiving side's bounds.
    pub receiver: ReceiverConfig,
    /// Who may publish on which topic to this node (default
    /// [`AccessList::open`]: anyone, any topic). A PUBLISH it refuses is
    /// dropped unread and counted ([`PubSubStats::unauthorized`]).
    pub publishers: AccessList,
}

impl PubSubConfig {
    /// The defaults for a node `local_id` in `realm` whose first epoch is
    /// `first_epoch`.
    pub fn new(realm: Realm, local_id: NodeId, first_epoch: u64) -> Self {
        Self {
            realm,
            local_id,
            first_epoch,
            max_payload: 1_000_000,
            queue_bound: 1024,
            send_window: 64,
            max_waiting_publications: 1024,
            max_subscriptions: 1024,
            max_direct_subscriptions: 4096,
            max_direct_per_peer: 32,
            cache_ttl: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(5),
            carry_over: Duration::from_secs(5),
            carry_bound: 256,
            receiver: ReceiverConfig::default(),
            publishers: AccessList::open(),
        }
    }

    /// Lowers [`max_payload`](Self::max_payload) to the largest payload a
    /// PUBLISH frame carries within `limits`, whatever its topic and ids, so
    /// a payload that could not be sent is refused by `publish` with
    /// [`PubSubError::TooLarge`] rather than dropped when its frame
    /// fails to encode. The Node does this with its own wire limits.
    pub fn fit_to(&mut self, limits: &Limits) {
        self.max_payload = self.max_payload.min(max_publish_payload(limits));
    }
}

/// The largest payload of a PUBLISH frame within `limits`: the frame limit
/// less the other fields at their widest (a topic of
/// [`topic::MAX_LEN`](crate::topic::MAX_LEN) bytes, or the string limit if
/// lower); 0 when not even an empty payload fits.
pub fn max_publish_payload(limits: &Limits) -> usize {
    let topic_len = crate::topic::MAX_LEN.min(limits.max_string_len);
    let widest = Message::Publish(Publish {
        message_id: u64::MAX,
        epoch: u64::MAX,
        sequence: u64::MAX,
        topic: "t".repeat(topic_len).into(),
        payload: Bytes::new(),
    });
    let unbounded = Limits {
        max_frame_len: u32::MAX,
        ..*limits
    };
    let frame = usize::try_from(limits.max_frame_len).unwrap_or(usize::MAX);
    (widest.encoded_len(&unbounded)).map_or(0, |empty| {
        frame.saturating_sub(empty.saturating_sub(HEADER_LEN))
    })
}

/// What the pub/sub machine tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubSubEvent {
    /// A message on a topic we subscribe to.
    Message {
        /// Who published it (ourselves for local delivery).
        publisher: NodeId,
        /// The publisher's id of the message.
        message_id: u64,
        /// The topic.
        topic: Topic,
        /// The payload.
        payload: Bytes,
    },
    /// Our subscriber record for these patterns (those sharing one literal
    /// prefix) could not be stored in the DHT, so publishers may not find
    /// it; it is announced again in `retry_in` (and so on, backing off,
    /// until a store succeeds).
    SubscriptionFailed {
        /// The patterns the record holds.
        patterns: Vec<Pattern>,
        /// Why, and when it is tried again.
        failed: AnnounceFailed,
    },
}

/// What the pub/sub machine asks the Node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubSubOutput {
    /// A DHT request: look up, announce, withdraw.
    Directory(DirectoryRequest),
    /// Write `message` on the publish stream to `subscriber` (connecting
    /// first if needed). Report
    /// [`handle_written`](super::PubSub::handle_written) once the stream
    /// took it, [`handle_unreachable`](super::PubSub::handle_unreachable) if
    /// the subscriber cannot be reached, or
    /// [`handle_disconnected`](super::PubSub::handle_disconnected) if the
    /// connection closes.
    Send {
        /// The subscriber.
        subscriber: NodeId,
        /// The frame.
        message: Publish,
    },
    /// Write this answer (REPLY or ERROR) on the stream a SUBSCRIBE or
    /// UNSUBSCRIBE from `peer` came on, then finish it.
    Answer {
        /// Who asked.
        peer: NodeId,
        /// The answer.
        message: Message,
    },
    /// Tell the application.
    Event(PubSubEvent),
}

/// Counters of the pub/sub machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PubSubStats {
    /// Publications made.
    pub published: u64,
    /// PUBLISH frames handed to the Node.
    pub sent: u64,
    /// Messages dropped because a subscriber's queue was full.
    pub dropped_slow: u64,
    /// Messages dropped because their subscriber was disconnected.
    pub dropped_disconnected: u64,
    /// PUBLISH frames handed to the Node again in a later session of their
    /// subscriber: carried over from a session that closed with their
    /// delivery unknown (counted in `sent` too; the receiver drops the ones
    /// it had). Messages never handed out that a closed session left count
    /// in `dropped_disconnected` only if they are dropped unsent.
    pub resent: u64,
    /// Received messages on topics we do not subscribe to (or invalid
    /// ones): dropped unread.
    pub unsolicited: u64,
    /// Received messages whose publisher [`PubSubConfig::publishers`] does
    /// not allow on their topic: dropped unread.
    pub unauthorized: u64,
    /// The receiving side's counters.
    pub receiver: ReceiverStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic_len: usize, payload: usize) -> Message {
        Message::Publish(Publish {
            message_id: u64::MAX,
            epoch: u64::MAX,
            sequence: u64::MAX,
            topic: "t".repeat(topic_len).into(),
            payload: Bytes::from(vec![0; payload]),
        })
    }

    #[test]
    fn the_largest_publish_payload_fits_the_frame_with_the_longest_topic_and_one_more_byte_does_not()
     {
        for frame in [1 << 20, 4096, 600] {
            let limits = Limits {
                max_frame_len: frame,
                ..Limits::DEFAULT
            };
            let max = max_publish_payload(&limits);
            assert!(max > 0 && max < frame as usize, "{max} for {frame}");
            let longest = crate::topic::MAX_LEN;
            assert!(publish(longest, max).encoded_len(&limits).is_ok());
            assert!(publish(longest, max + 1).encoded_len(&limits).is_err());
        }
    }

    #[test]
    fn a_frame_too_small_for_any_publish_leaves_no_payload_and_the_config_follows() {
        let limits = Limits {
            max_frame_len: 100,
            ..Limits::DEFAULT
        };
        assert_eq!(max_publish_payload(&limits), 0);
        let realm = Realm::new("io.macula.test").unwrap();
        let mut config = PubSubConfig::new(realm, NodeId::from_bytes([1; 32]), 1);
        config.fit_to(&Limits::DEFAULT);
        assert_eq!(
            config.max_payload, 1_000_000,
            "the default fits the default frame"
        );
        config.fit_to(&limits);
        assert_eq!(config.max_payload, 0);
    }
}
