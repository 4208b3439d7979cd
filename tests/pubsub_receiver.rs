//! The receiver's ordering and deduplication: explicit cases, and op
//! sequences checked against a simple reference model.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::id::NodeId;
use macula::pubsub::{Received, Receiver, ReceiverConfig};
use macula::wire::Publish;
use proptest::prelude::*;

fn frame(epoch: u64, sequence: u64) -> Publish {
    Publish {
        message_id: epoch * 1000 + sequence,
        epoch,
        sequence,
        topic: "t".into(),
        payload: Bytes::new(),
    }
}

fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

/// A receiver and what it delivered as (publisher byte, epoch, sequence).
struct Harness {
    receiver: Receiver,
    delivered: Vec<(u8, u64, u64)>,
}

impl Harness {
    fn new(config: ReceiverConfig) -> Self {
        Self {
            receiver: Receiver::new(config),
            delivered: Vec::new(),
        }
    }

    fn receive(&mut self, now: Instant, from: u8, epoch: u64, sequence: u64) -> Received {
        let delivered = &mut self.delivered;
        self.receiver
            .receive(now, node(from), frame(epoch, sequence), &mut |p, m| {
                delivered.push((p.as_bytes()[0], m.epoch, m.sequence))
            })
    }

    fn timeout(&mut self, now: Instant) {
        let delivered = &mut self.delivered;
        self.receiver.handle_timeout(now, &mut |p, m| {
            delivered.push((p.as_bytes()[0], m.epoch, m.sequence))
        });
    }

    fn taken(&mut self) -> Vec<(u8, u64, u64)> {
        std::mem::take(&mut self.delivered)
    }
}

#[test]
fn in_order_duplicates_and_reordering() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig::default());
    assert_eq!(h.receive(now, 1, 5, 0), Received::Delivered);
    assert_eq!(h.receive(now, 1, 5, 0), Received::Duplicate);
    assert_eq!(h.receive(now, 1, 5, 2), Received::Buffered);
    assert_eq!(
        h.receive(now, 1, 5, 2),
        Received::Duplicate,
        "already buffered"
    );
    assert_eq!(h.taken(), [(1, 5, 0)]);
    assert_eq!(h.receive(now, 1, 5, 1), Received::Delivered);
    assert_eq!(h.taken(), [(1, 5, 1), (1, 5, 2)]);
    assert_eq!(h.receiver.next_deadline(), None, "gap closed");
    // Another publisher is independent.
    assert_eq!(h.receive(now, 2, 1, 0), Received::Delivered);
    let stats = h.receiver.stats();
    assert_eq!((stats.delivered, stats.duplicates), (4, 2));
}

#[test]
fn a_newer_epoch_flushes_the_old_one_and_an_older_is_stale() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig::default());
    h.receive(now, 1, 5, 0);
    h.receive(now, 1, 5, 3);
    assert_eq!(h.receive(now, 1, 6, 0), Received::Delivered);
    assert_eq!(h.taken(), [(1, 5, 0), (1, 5, 3), (1, 6, 0)]);
    assert_eq!(h.receiver.stats().skipped, 2);
    assert_eq!(h.receive(now, 1, 5, 4), Received::Stale);
    assert_eq!(h.receiver.stats().stale, 1);
    assert_eq!(h.receiver.next_deadline(), None);
}

#[test]
fn a_gap_is_skipped_after_the_gap_timeout() {
    let now = t0();
    let config = ReceiverConfig::default();
    let gap = config.gap_timeout;
    let mut h = Harness::new(config);
    h.receive(now, 1, 0, 1);
    h.receive(now + gap / 2, 1, 0, 3);
    assert_eq!(h.receiver.next_deadline(), Some(now + gap));
    h.timeout(now + gap - Duration::from_millis(1));
    assert!(h.taken().is_empty(), "early timeout is a no-op");
    h.timeout(now + gap);
    assert_eq!(h.taken(), [(1, 0, 1)], "skipped 0, delivered 1");
    assert_eq!(
        h.receiver.next_deadline(),
        Some(now + 2 * gap),
        "gap before 3 counts anew"
    );
    h.timeout(now + 2 * gap);
    assert_eq!(h.taken(), [(1, 0, 3)]);
    assert_eq!(h.receiver.stats().skipped, 2);
}

#[test]
fn a_full_reorder_buffer_skips_the_gap() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig {
        reorder_window: 2,
        ..ReceiverConfig::default()
    });
    h.receive(now, 1, 0, 2);
    h.receive(now, 1, 0, 3);
    assert!(h.taken().is_empty());
    h.receive(now, 1, 0, 5);
    assert_eq!(h.taken(), [(1, 0, 2), (1, 0, 3)]);
    assert_eq!(h.receive(now, 1, 0, 4), Received::Delivered);
    assert_eq!(h.taken(), [(1, 0, 4), (1, 0, 5)]);
}

#[test]
fn the_least_recently_heard_publisher_is_forgotten_past_the_bound() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig {
        max_publishers: 2,
        ..ReceiverConfig::default()
    });
    h.receive(now, 1, 0, 0);
    h.receive(now + Duration::from_millis(1), 2, 0, 0);
    h.receive(now + Duration::from_millis(2), 3, 0, 0);
    // Publisher 1 was forgotten: sequence 0 of epoch 0 is new to it again.
    assert_eq!(h.receive(now, 1, 0, 0), Received::Delivered);
    // Publisher 3 was kept.
    assert_eq!(h.receive(now, 3, 0, 0), Received::Duplicate);
}

#[derive(Clone, Debug)]
enum Op {
    Receive { from: u8, epoch: u64, sequence: u64 },
    Wait(u64),
    Forget(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3, 0u64..3, 0u64..12)
            .prop_map(|(from, epoch, sequence)| Op::Receive { from, epoch, sequence }),
        1 => (0u64..3000).prop_map(Op::Wait),
        1 => (0u8..3).prop_map(Op::Forget),
    ]
}

/// The reference: per publisher the current epoch and the set of sequence
/// numbers seen in it. A frame is new when its epoch is not older and its
/// sequence was not seen in that epoch.
#[derive(Default)]
struct Model {
    epochs: [Option<(u64, BTreeSet<u64>)>; 3],
}

impl Model {
    /// Whether the frame is new to the model (and records it).
    fn receive(&mut self, from: u8, epoch: u64, sequence: u64) -> bool {
        let slot = &mut self.epochs[usize::from(from)];
        match slot {
            Some((current, _)) if epoch < *current => false,
            Some((current, seen)) if epoch == *current => seen.insert(sequence),
            _ => {
                *slot = Some((epoch, BTreeSet::from([sequence])));
                true
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever arrives, in whatever order: the receiver accepts only frames
    /// new to the reference model (no duplicate, nothing stale); the new
    /// frames it turns away are at most the sequence numbers it counted as
    /// skipped; and everything it accepted is delivered once every gap
    /// timed out.
    #[test]
    fn accepts_only_new_frames_and_delivers_all_it_accepts(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness::new(ReceiverConfig { reorder_window: 4, ..ReceiverConfig::default() });
        let mut model = Model::default();
        let mut now = t0();
        let (mut accepted, mut turned_away) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Receive { from, epoch, sequence } => {
                    let fresh = model.receive(from, epoch, sequence);
                    let verdict = h.receive(now, from, epoch, sequence);
                    let taken = matches!(verdict, Received::Delivered | Received::Buffered);
                    prop_assert!(!taken || fresh, "accepted a frame seen before: {:?}", verdict);
                    accepted += u64::from(taken);
                    turned_away += u64::from(fresh && !taken);
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    h.timeout(now);
                }
                Op::Forget(from) => {
                    let delivered = &mut h.delivered;
                    h.receiver.forget(now, &node(from), &mut |p, m| {
                        delivered.push((p.as_bytes()[0], m.epoch, m.sequence))
                    });
                    model.epochs[usize::from(from)] = None;
                }
            }
        }
        while let Some(at) = h.receiver.next_deadline() {
            h.timeout(at);
        }
        let stats = h.receiver.stats();
        prop_assert!(turned_away <= stats.skipped, "{} > {}", turned_away, stats.skipped);
        prop_assert_eq!(accepted, h.delivered.len() as u64);
        prop_assert_eq!(stats.delivered, accepted);
    }

    /// Without forgets, each publisher's deliveries are strictly increasing.
    #[test]
    fn strictly_increasing_per_publisher(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut now = t0();
        let mut h = Harness::new(ReceiverConfig { reorder_window: 4, ..ReceiverConfig::default() });
        for op in ops {
            match op {
                Op::Receive { from, epoch, sequence } => {
                    h.receive(now, from, epoch, sequence);
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    h.timeout(now);
                }
                Op::Forget(_) => {}
            }
        }
        for from in 0..3u8 {
            let mine: Vec<_> = h.delivered.iter().filter(|d| d.0 == from).map(|d| (d.1, d.2)).collect();
            prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "{:?}", mine);
        }
    }
}
