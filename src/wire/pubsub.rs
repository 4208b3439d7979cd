//! Pub/sub messages (0x1_): publications and subscriptions.

use std::sync::Arc;

use bytes::Bytes;

use super::field::wire_struct;
use super::{Limits, Message};

wire_struct! {
    /// PUBLISH (0x10): one message on a topic, from publisher to subscriber.
    /// `(publisher epoch, sequence)` orders one publisher's messages; a new
    /// epoch (a restarted publisher) starts a new sequence.
    pub struct Publish {
        /// Unique per publisher epoch; lets receivers drop duplicates.
        pub message_id: u64,
        /// The publisher's epoch (changes when it restarts).
        pub epoch: u64,
        /// Position in the publisher's stream of messages for this epoch.
        pub sequence: u64,
        /// The topic (dot-separated segments).
        pub topic: Arc<str>,
        /// The application payload.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// SUBSCRIBE (0x11): asks the receiver to send PUBLISH frames matching
    /// `pattern` (`*` one segment, `#` the rest). Answered by REPLY (empty
    /// payload) or ERROR.
    pub struct Subscribe {
        /// Echoed by the answer.
        pub request_id: u64,
        /// The topic pattern.
        pub pattern: String,
    }
}

wire_struct! {
    /// UNSUBSCRIBE (0x12): withdraws a subscription. Answered by REPLY (empty
    /// payload) or ERROR.
    pub struct Unsubscribe {
        /// Echoed by the answer.
        pub request_id: u64,
        /// The pattern given to SUBSCRIBE.
        pub pattern: String,
    }
}

wire_struct! {
    /// One publication of a PUBLISH_BATCH: what a PUBLISH carries besides
    /// the session, the sequence number and the topic.
    pub struct Published {
        /// As PUBLISH's `message_id`.
        pub message_id: u64,
        /// The application payload.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// PUBLISH_BATCH (0x13): PUBLISH frames of one session and one topic
    /// with consecutive sequence numbers, in one frame: the receiver takes
    /// entry `i` as the PUBLISH numbered `first_sequence + i` (see
    /// [`PublishBatch::into_publishes`]). Sent only to a peer that
    /// announced [`Capabilities::PUBLISH_BATCH`](super::Capabilities::PUBLISH_BATCH).
    pub struct PublishBatch {
        /// The publisher→subscriber session, as PUBLISH's `epoch`.
        pub epoch: u64,
        /// The sequence number of the first entry.
        pub first_sequence: u64,
        /// The topic of every entry.
        pub topic: Arc<str>,
        /// The publications, in sequence order (at most
        /// [`Limits::max_list_len`](super::Limits::max_list_len)).
        pub entries: Vec<Published>,
    }
}

impl PublishBatch {
    /// The PUBLISH frames this one stands for, in order. A sequence number
    /// past `u64::MAX` stays at `u64::MAX`, which no session reaches (a
    /// receiver drops it).
    pub fn into_publishes(self) -> impl Iterator<Item = Publish> {
        let Self {
            epoch,
            first_sequence,
            topic,
            entries,
        } = self;
        entries
            .into_iter()
            .zip(0u64..)
            .map(move |(entry, i)| Publish {
                message_id: entry.message_id,
                epoch,
                sequence: first_sequence.saturating_add(i),
                topic: topic.clone(),
                payload: entry.payload,
            })
    }
}

/// Bytes of a PUBLISH_BATCH body besides its topic's text and its entries:
/// epoch, first sequence, the topic's length, the entry count.
const BATCH_FIXED: usize = 8 + 8 + 2 + 2;

/// Bytes of one entry besides its payload: message id, payload length.
const ENTRY_FIXED: usize = 8 + 4;

/// `frames`, in order, as the fewest frames that say the same within
/// `limits`: each run of two or more PUBLISH of one session and topic with
/// consecutive sequence numbers becomes PUBLISH_BATCH frames (as many
/// entries each as the frame and list limits let in), the rest stay
/// PUBLISH. For a peer that announced
/// [`Capabilities::PUBLISH_BATCH`](super::Capabilities::PUBLISH_BATCH).
pub fn pack_publishes(frames: Vec<Publish>, limits: &Limits) -> Vec<Message> {
    let max_body = limits.max_frame_len as usize;
    let max_entries = limits.max_list_len.min(usize::from(u16::MAX));
    let mut packed: Vec<Message> = Vec::new();
    let mut run: Option<(PublishBatch, usize)> = None;
    for frame in frames {
        let entry_len = ENTRY_FIXED + frame.payload.len();
        if let Some((batch, len)) = &mut run {
            let next = batch.first_sequence.checked_add(batch.entries.len() as u64);
            let joins = batch.epoch == frame.epoch
                && batch.topic == frame.topic
                && next == Some(frame.sequence)
                && batch.entries.len() < max_entries
                && *len + entry_len <= max_body;
            if joins {
                *len += entry_len;
                batch.entries.push(Published {
                    message_id: frame.message_id,
                    payload: frame.payload,
                });
                continue;
            }
        }
        packed.extend(run.take().map(|(batch, _)| close(batch)));
        let len = BATCH_FIXED + frame.topic.len() + entry_len;
        let batch = PublishBatch {
            epoch: frame.epoch,
            first_sequence: frame.sequence,
            topic: frame.topic,
            entries: vec![Published {
                message_id: frame.message_id,
                payload: frame.payload,
            }],
        };
        run = Some((batch, len));
    }
    packed.extend(run.map(|(batch, _)| close(batch)));
    packed
}

/// A run of one entry is sent as the PUBLISH it is, a longer one as a batch.
fn close(batch: PublishBatch) -> Message {
    match <[Published; 1]>::try_from(batch.entries) {
        Ok(
            [
                Published {
                    message_id,
                    payload,
                },
            ],
        ) => Message::Publish(Publish {
            message_id,
            epoch: batch.epoch,
            sequence: batch.first_sequence,
            topic: batch.topic,
            payload,
        }),
        Err(entries) => Message::PublishBatch(PublishBatch { entries, ..batch }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::HEADER_LEN;
    use super::*;

    fn publish(epoch: u64, sequence: u64, topic: &str, payload: usize) -> Publish {
        Publish {
            message_id: 100 + sequence,
            epoch,
            sequence,
            topic: topic.into(),
            payload: Bytes::from(vec![7; payload]),
        }
    }

    fn shape(packed: &[Message]) -> Vec<(&'static str, usize)> {
        let entries = |m: &Message| match m {
            Message::PublishBatch(batch) => batch.entries.len(),
            _ => 1,
        };
        packed
            .iter()
            .map(|m| (m.message_type().name(), entries(m)))
            .collect()
    }

    fn unpacked(packed: Vec<Message>) -> Vec<Publish> {
        packed
            .into_iter()
            .flat_map(|m| -> Box<dyn Iterator<Item = Publish>> {
                match m {
                    Message::Publish(p) => Box::new(std::iter::once(p)),
                    Message::PublishBatch(b) => Box::new(b.into_publishes()),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn runs_of_one_session_and_topic_become_batches_and_unpack_to_the_same_frames() {
        let frames = vec![
            publish(1, 0, "a", 3),
            publish(1, 1, "a", 3),
            publish(1, 2, "a", 3),
            publish(1, 3, "b", 3), // another topic
            publish(2, 0, "b", 3), // another session
            publish(2, 1, "b", 3),
            publish(2, 5, "b", 3), // a gap
        ];
        let packed = pack_publishes(frames.clone(), &Limits::default());
        assert_eq!(
            shape(&packed),
            [
                ("PUBLISH_BATCH", 3),
                ("PUBLISH", 1),
                ("PUBLISH_BATCH", 2),
                ("PUBLISH", 1)
            ]
        );
        assert_eq!(unpacked(packed), frames);
        assert!(pack_publishes(Vec::new(), &Limits::default()).is_empty());
    }

    #[test]
    fn a_batch_stays_within_the_frame_and_list_limits() {
        let frames: Vec<_> = (0..10).map(|s| publish(1, s, "topic", 100)).collect();
        // Room for the fixed part, the topic and exactly three entries.
        let three = BATCH_FIXED + "topic".len() + 3 * (ENTRY_FIXED + 100);
        let limits = Limits {
            max_frame_len: u32::try_from(three).unwrap(),
            ..Limits::default()
        };
        let packed = pack_publishes(frames.clone(), &limits);
        assert_eq!(
            shape(&packed).iter().map(|s| s.1).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let full = message_len(&packed[0], &limits);
        assert_eq!(full, three, "a full batch fills the frame exactly");
        assert!(packed.iter().all(|m| message_len(m, &limits) <= three));
        assert_eq!(unpacked(packed), frames);
        let limits = Limits {
            max_list_len: 4,
            ..Limits::default()
        };
        let packed = pack_publishes(frames.clone(), &limits);
        assert_eq!(
            shape(&packed).iter().map(|s| s.1).collect::<Vec<_>>(),
            [4, 4, 2]
        );
    }

    fn message_len(message: &Message, limits: &Limits) -> usize {
        message.to_vec(limits).unwrap().len() - HEADER_LEN
    }

    #[test]
    fn sequence_numbers_past_the_end_stay_at_the_end() {
        let batch = PublishBatch {
            epoch: 1,
            first_sequence: u64::MAX - 1,
            topic: "t".into(),
            entries: vec![
                Published {
                    message_id: 1,
                    payload: Bytes::new(),
                };
                3
            ],
        };
        let sequences: Vec<_> = batch.into_publishes().map(|p| p.sequence).collect();
        assert_eq!(sequences, [u64::MAX - 1, u64::MAX, u64::MAX]);
    }
}
