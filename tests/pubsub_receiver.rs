//! The receiver's ordering and deduplication: explicit cases, and op
//! sequences checked against a simple reference model.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::id::NodeId;
use macula::pubsub::{Received, Receiver, ReceiverConfig};
use macula::wire::Publish;
use proptest::prelude::*;

/// A frame whose id grows with `(epoch, sequence)` (epochs below 2^24), as
/// an honest publisher's ids do across sessions.
fn frame(epoch: u64, sequence: u64) -> Publish {
    Publish {
        message_id: (epoch << 40) | sequence.min((1 << 40) - 1),
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

/// A sink recording (publisher byte, epoch, sequence) into `delivered`.
fn sink(delivered: &mut Vec<(u8, u64, u64)>) -> impl FnMut(NodeId, Publish) + '_ {
    |p, m| delivered.push((p.as_bytes()[0], m.epoch, m.sequence))
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
        self.receiver.receive(
            now,
            node(from),
            frame(epoch, sequence),
            &mut sink(delivered),
        )
    }

    fn timeout(&mut self, now: Instant) {
        let delivered = &mut self.delivered;
        self.receiver.handle_timeout(now, &mut sink(delivered));
    }

    fn forget(&mut self, now: Instant, from: u8) {
        let delivered = &mut self.delivered;
        self.receiver.forget(now, &node(from), &mut sink(delivered));
    }

    fn pass(&mut self, now: Instant, from: u8, epoch: u64, sequence: u64) -> Received {
        let delivered = &mut self.delivered;
        self.receiver
            .pass(now, node(from), (epoch, sequence), &mut sink(delivered))
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
fn a_frame_past_the_window_is_refused_and_moves_nothing() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig {
        reorder_window: 2,
        ..ReceiverConfig::default()
    });
    assert_eq!(h.receive(now, 1, 0, 2), Received::Buffered);
    assert_eq!(h.receive(now, 1, 0, 3), Received::OutOfWindow);
    assert_eq!(h.receive(now, 1, 0, 5), Received::OutOfWindow);
    assert!(h.taken().is_empty());
    assert_eq!(h.receive(now, 1, 0, 0), Received::Delivered);
    assert_eq!(h.receive(now, 1, 0, 1), Received::Delivered);
    assert_eq!(h.taken(), [(1, 0, 0), (1, 0, 1), (1, 0, 2)]);
    assert_eq!(h.receive(now, 1, 0, 3), Received::Delivered, "in reach now");
    let stats = h.receiver.stats();
    assert_eq!((stats.out_of_window, stats.skipped), (2, 0));
}

/// The attack of issue 13: a PUBLISH numbered `u64::MAX`, then normal ones.
/// Before, a debug build panicked and a release build delivered the normal
/// ones two or three times.
#[test]
fn sequence_u64_max_is_refused_and_later_frames_are_delivered_once() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig::default());
    assert_eq!(h.receive(now, 1, 7, u64::MAX), Received::OutOfWindow);
    assert_eq!(h.receiver.next_deadline(), None, "nothing kept");
    for sequence in 0..3 {
        assert_eq!(h.receive(now, 1, 7, sequence), Received::Delivered);
        assert_eq!(h.receive(now, 1, 7, u64::MAX), Received::OutOfWindow);
        assert_eq!(h.receive(now, 1, 7, u64::MAX - 1), Received::OutOfWindow);
    }
    for sequence in 0..3 {
        assert_eq!(h.receive(now, 1, 7, sequence), Received::Duplicate);
    }
    assert_eq!(h.taken(), [(1, 7, 0), (1, 7, 1), (1, 7, 2)]);
    let stats = h.receiver.stats();
    assert_eq!((stats.delivered, stats.out_of_window), (3, 7));
    assert_eq!(stats.skipped, 0);
}

#[test]
fn a_session_first_seen_past_the_window_starts_there() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig {
        reorder_window: 4,
        ..ReceiverConfig::default()
    });
    // A publisher we hold nothing for (forgotten mid-session): starts at 10.
    assert_eq!(h.receive(now, 1, 3, 10), Received::Delivered);
    assert_eq!(h.receive(now, 1, 3, 11), Received::Delivered);
    assert_eq!(h.receive(now, 1, 3, 9), Received::Duplicate);
    // A newer epoch likewise; the very end of the numbers cannot overflow.
    assert_eq!(h.receive(now, 1, 4, u64::MAX - 1), Received::Delivered);
    assert_eq!(h.receive(now, 1, 4, u64::MAX), Received::OutOfWindow);
    assert_eq!(h.receive(now, 1, 4, u64::MAX - 1), Received::Duplicate);
    assert_eq!(h.receive(now, 1, 4, 0), Received::Duplicate);
    assert_eq!(h.receive(now, 1, 5, 0), Received::Delivered);
    assert_eq!(
        h.taken(),
        [(1, 3, 10), (1, 3, 11), (1, 4, u64::MAX - 1), (1, 5, 0)]
    );
    assert_eq!(h.receiver.stats().skipped, u64::MAX, "saturates");
}

#[test]
fn a_passed_frame_uses_up_its_number_and_a_stranger_leaves_no_state() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig::default());
    assert_eq!(h.pass(now, 9, 0, 5), Received::Passed);
    assert!(h.taken().is_empty());
    assert_eq!(
        h.receive(now, 9, 0, 0),
        Received::Delivered,
        "no state was kept"
    );
    assert_eq!(h.receive(now, 9, 0, 2), Received::Buffered);
    assert_eq!(h.pass(now, 9, 0, 1), Received::Passed);
    assert_eq!(h.taken(), [(9, 0, 0), (9, 0, 2)], "2 no longer waits for 1");
    assert_eq!(h.receiver.next_deadline(), None);
    assert_eq!(h.receive(now, 9, 0, 1), Received::Duplicate);
    assert_eq!(h.receiver.stats().delivered, 2);
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

impl Harness {
    /// Receives a frame of `from` carrying message id `id`.
    fn receive_id(
        &mut self,
        now: Instant,
        from: u8,
        (epoch, sequence): (u64, u64),
        id: u64,
    ) -> Received {
        let delivered = &mut self.delivered;
        let message = Publish {
            message_id: id,
            ..frame(epoch, sequence)
        };
        self.receiver
            .receive(now, node(from), message, &mut sink(delivered))
    }
}

#[test]
fn a_later_session_drops_the_carried_frames_it_had_by_id_and_delivers_the_rest() {
    let now = t0();
    let mut h = Harness::new(ReceiverConfig::default());
    // Session 5 delivers ids 100..=102; the connection dies, the receiver forgets.
    for sequence in 0..3 {
        h.receive_id(now, 1, (5, sequence), 100 + sequence);
    }
    h.forget(now, 1);
    h.taken();
    // Session 6 carries 101..=104 over, then goes on with 105; it comes 12.8 s after the
    // last delivery, as in the 100-node cluster (publisher 3 to node 6: a memory of 10 s
    // delivered eight publications twice).
    let later = now + Duration::from_millis(12_800);
    let verdicts: Vec<Received> = (0..5)
        .map(|sequence| h.receive_id(later, 1, (6, sequence), 101 + sequence))
        .collect();
    use Received::*;
    assert_eq!(
        verdicts,
        [Duplicate, Duplicate, Delivered, Delivered, Delivered]
    );
    let got: Vec<u64> = h.taken().iter().map(|d| d.2).collect();
    assert_eq!(got, [2, 3, 4], "sequences of ids 103..=105, in order");
    assert_eq!(h.receiver.stats().duplicates, 2);
    // Without a forget (the receiver never saw the connection die) the same holds.
    let mut kept = Harness::new(ReceiverConfig::default());
    kept.receive_id(now, 1, (5, 0), 100);
    assert_eq!(kept.receive_id(later, 1, (6, 0), 100), Duplicate);
    assert_eq!(kept.receive_id(later, 1, (6, 1), 101), Delivered);
}

#[test]
fn a_publisher_heard_again_after_the_memory_or_in_an_older_session_starts_afresh() {
    let now = t0();
    let config = ReceiverConfig {
        max_publishers: 2,
        ..ReceiverConfig::default()
    };
    let memory = config.resend_memory;
    let mut h = Harness::new(config);
    h.receive_id(now, 1, (5, 0), 100);
    h.forget(now, 1);
    // Past the memory: a restarted publisher whose clock went back loses nothing.
    let late = now + memory + Duration::from_millis(1);
    assert_eq!(h.receive_id(late, 1, (6, 0), 7), Received::Delivered);
    // An older session after a forget is not checked against the ids either.
    h.receive_id(late, 2, (9, 0), 500);
    h.forget(late, 2);
    assert_eq!(h.receive_id(late, 2, (8, 0), 3), Received::Delivered);
    // The memory of forgotten publishers is bounded: the oldest goes first.
    for from in [3, 4, 5] {
        let at = late + Duration::from_millis(u64::from(from));
        h.receive_id(at, from, (1, 0), 50);
        h.forget(at, from);
    }
    assert_eq!(
        h.receive_id(late, 3, (2, 0), 10),
        Received::Delivered,
        "forgotten"
    );
    assert_eq!(
        h.receive_id(late, 5, (2, 0), 10),
        Received::Duplicate,
        "remembered"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Receive { from: u8, epoch: u64, sequence: u64 },
    Wait(u64),
    Forget(u8),
}

fn op() -> impl Strategy<Value = Op> {
    op_with(0u64..12)
}

/// Ops whose sequence numbers come from `sequences`.
fn op_with(sequences: impl Strategy<Value = u64> + 'static) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3, 0u64..3, sequences)
            .prop_map(|(from, epoch, sequence)| Op::Receive { from, epoch, sequence }),
        1 => (0u64..3000).prop_map(Op::Wait),
        1 => (0u8..3).prop_map(Op::Forget),
    ]
}

/// Sequence numbers an attacker would pick: small ones, the last few, any.
fn hostile_sequence() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..12,
        2 => (0u64..4).prop_map(|back| u64::MAX - back),
        1 => any::<u64>(),
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
    /// Whether the frame is new to the model; it is recorded unless
    /// `refused` (a frame refused out of window was never taken, so it may
    /// come again). `u64::MAX` is never new.
    fn receive(&mut self, from: u8, epoch: u64, sequence: u64, refused: bool) -> bool {
        if sequence == u64::MAX {
            return false;
        }
        let slot = &mut self.epochs[usize::from(from)];
        if slot.as_ref().is_none_or(|(current, _)| epoch > *current) {
            *slot = Some((epoch, BTreeSet::new()));
        }
        match slot {
            Some((current, seen)) if epoch == *current && refused => !seen.contains(&sequence),
            Some((current, seen)) if epoch == *current => seen.insert(sequence),
            _ => false,
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
                    let verdict = h.receive(now, from, epoch, sequence);
                    let refused = verdict == Received::OutOfWindow;
                    let fresh = model.receive(from, epoch, sequence, refused);
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
                    h.forget(now, from);
                    model.epochs[usize::from(from)] = None;
                }
            }
        }
        while let Some(at) = h.receiver.next_deadline() {
            h.timeout(at);
        }
        let stats = h.receiver.stats();
        let given_up = stats.skipped + stats.out_of_window;
        prop_assert!(turned_away <= given_up, "{} > {}", turned_away, given_up);
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

    /// Hostile numbers (`u64::MAX` and its neighbours, any `u64`) never
    /// panic, never deliver a frame twice, and never block an honest session
    /// that follows: its frames, in order from 0 in a newer epoch, are each
    /// delivered once.
    #[test]
    fn hostile_sequences_never_break_the_honest_session_after(
        ops in prop::collection::vec(op_with(hostile_sequence()), 1..80),
    ) {
        let mut h = Harness::new(ReceiverConfig { reorder_window: 4, ..ReceiverConfig::default() });
        let mut model = Model::default();
        let mut now = t0();
        let mut accepted = 0u64;
        for op in ops {
            match op {
                Op::Receive { from, epoch, sequence } => {
                    let verdict = h.receive(now, from, epoch, sequence);
                    let refused = verdict == Received::OutOfWindow;
                    let fresh = model.receive(from, epoch, sequence, refused);
                    let taken = matches!(verdict, Received::Delivered | Received::Buffered);
                    prop_assert!(!taken || fresh, "accepted a frame seen before: {:?}", verdict);
                    accepted += u64::from(taken);
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    h.timeout(now);
                }
                Op::Forget(from) => {
                    h.forget(now, from);
                    model.epochs[usize::from(from)] = None;
                }
            }
        }
        while let Some(at) = h.receiver.next_deadline() {
            h.timeout(at);
        }
        prop_assert_eq!(h.receiver.stats().delivered, h.delivered.len() as u64);
        prop_assert!(h.delivered.len() as u64 <= accepted);
        h.taken();
        for sequence in 0..20 {
            prop_assert_eq!(h.receive(now, 1, 3, sequence), Received::Delivered);
        }
        let honest: Vec<u64> = h.taken().iter().map(|d| d.2).collect();
        prop_assert_eq!(honest, (0..20).collect::<Vec<_>>());
    }
}
