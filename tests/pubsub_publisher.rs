//! The publisher side under arbitrary publications, write completions,
//! disconnects, unreachable subscribers and returns: every subscriber sees, per session, sequence
//! numbers 0, 1, 2, ... without a gap, epochs that only grow, message ids
//! that only grow within a session (a new one may start with frames carried
//! over from the last), never more than the window in flight, queues within
//! their bound, and every message accounted for (sent once, not counting the
//! frames sent again; dropped as slow or while disconnected; or not sent yet).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::Child;
use macula::id::{NodeId, Realm, RecordKey, RecordKind};
use macula::pubsub::{PubSub, PubSubConfig, PubSubOutput, Topic};
use macula::rpc::{DirectoryRequest, Found};
use proptest::prelude::*;

fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

#[derive(Clone, Debug)]
enum Op {
    Publish,
    Written(u8),
    Disconnect(u8),
    Unreachable(u8),
    Connect(u8),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Publish),
        4 => (1u8..4).prop_map(Op::Written),
        1 => (1u8..4).prop_map(Op::Disconnect),
        1 => (1u8..4).prop_map(Op::Unreachable),
        1 => (1u8..4).prop_map(Op::Connect),
        1 => (0u64..4000).prop_map(Op::Wait),
    ]
}

const WINDOW: usize = 3;

/// What one subscriber has been sent.
#[derive(Default, Debug)]
struct Seen {
    /// (epoch, next sequence) of the current session.
    session: Option<(u64, u64)>,
    last_message: Option<u64>,
    in_flight: Vec<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn sessions_are_gapless_and_everything_is_accounted_for(
        ops in prop::collection::vec(op(), 1..120),
    ) {
        #[allow(clippy::disallowed_methods)]
        let mut now = Instant::now();
        let realm = Realm::new("io.test").unwrap();
        let mut ps = PubSub::new(PubSubConfig {
            send_window: WINDOW,
            queue_bound: 4,
            cache_ttl: Duration::from_secs(3600),
            ..PubSubConfig::new(realm.clone(), node(0), 10)
        });
        let topic = Topic::new("t").unwrap();
        ps.publish(now, topic.clone(), Bytes::new()).unwrap();
        let subscribers: Vec<Found> = (1..4u8)
            .map(|b| Found { provider: node(b), value: Bytes::from_static(b"t") })
            .collect();
        ps.handle_lookup(now, RecordKey::new(&realm, RecordKind::Topic, ""), vec![]);
        ps.handle_lookup(now, RecordKey::new(&realm, RecordKind::Topic, "t"), subscribers);
        let mut seen: BTreeMap<NodeId, Seen> = BTreeMap::new();
        let mut frames = 0u64;
        for op in std::iter::once(Op::Wait(0)).chain(ops) {
            match op {
                Op::Publish => {
                    ps.publish(now, topic.clone(), Bytes::new()).unwrap();
                }
                Op::Written(b) => {
                    let s = seen.entry(node(b)).or_default();
                    if !s.in_flight.is_empty() {
                        let epoch = s.in_flight.remove(0);
                        ps.handle_written(now, node(b), epoch);
                    }
                }
                Op::Disconnect(b) => {
                    ps.handle_disconnected(now, node(b));
                    seen.entry(node(b)).or_default().in_flight.clear();
                }
                Op::Unreachable(b) => {
                    ps.handle_unreachable(now, node(b));
                    seen.entry(node(b)).or_default().in_flight.clear();
                }
                Op::Connect(b) => ps.handle_connected(now, node(b)),
                Op::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    ps.handle_timeout(now);
                }
            }
            while let Some(output) = ps.poll_output() {
                let PubSubOutput::Send { subscriber, message } = output else {
                    let lookup = matches!(output, PubSubOutput::Directory(DirectoryRequest::Lookup { .. }));
                    prop_assert!(lookup, "only sends and lookups here: {:?}", output);
                    continue;
                };
                frames += 1;
                let s = seen.entry(subscriber).or_default();
                match s.session {
                    Some((epoch, next)) if epoch == message.epoch => {
                        prop_assert_eq!(message.sequence, next, "gapless in a session");
                    }
                    Some((epoch, _)) => {
                        prop_assert!(message.epoch > epoch, "epochs only grow");
                        prop_assert_eq!(message.sequence, 0);
                    }
                    None => prop_assert_eq!(message.sequence, 0),
                }
                s.session = Some((message.epoch, message.sequence + 1));
                if message.sequence > 0 {
                    prop_assert!(s.last_message.is_none_or(|m| message.message_id > m), "ids grow in a session");
                }
                s.last_message = Some(message.message_id);
                s.in_flight.push(message.epoch);
                prop_assert!(
                    s.in_flight.iter().filter(|e| **e == message.epoch).count() <= WINDOW,
                    "within the window"
                );
            }
        }
        let stats = ps.stats();
        prop_assert!((1..4u8).all(|b| ps.queued_for(&node(b)) <= 4), "queues stay bounded");
        let unsent: u64 = (1..4u8).map(|b| ps.unsent_for(&node(b)) as u64).sum();
        prop_assert_eq!(stats.sent, frames);
        prop_assert_eq!(
            stats.sent - stats.resent + stats.dropped_slow + stats.dropped_disconnected + unsent,
            3 * stats.published,
            "every message to every subscriber is accounted for"
        );
    }
}
