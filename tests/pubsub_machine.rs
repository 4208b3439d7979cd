//! The pub/sub machine with explicit instants: subscriber records, routing
//! through lookups and the cache, ordering of publications, the slow
//! subscriber policy, disconnects and returns, receiving; and a small mesh of
//! machines wired through an in-memory DHT: 1,000 publications reach five
//! subscribers (some by wildcard) once each and in order, while a subscriber
//! that never reads does not hold anyone up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::Child;
use macula::access::AccessList;
use macula::directory::{Answered, UNANSWERED_RETRIES};
use macula::id::{NodeId, Realm, RecordKey, RecordKind};
use macula::pubsub::{
    Pattern, PubSub, PubSubConfig, PubSubError, PubSubEvent, PubSubOutput, Topic,
};
use macula::rpc::{DirectoryRequest, Found};
use macula::wire::{ErrorCode, ErrorReply, Message, Publish, Reply, Subscribe, Unsubscribe};

const SECOND: Duration = Duration::from_secs(1);
const EPOCH: u64 = 1_000_000;

fn realm() -> Realm {
    Realm::new("io.test").unwrap()
}

fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn config(byte: u8) -> PubSubConfig {
    PubSubConfig::new(realm(), node(byte), EPOCH)
}

fn key(prefix: &str) -> RecordKey {
    RecordKey::new(&realm(), RecordKind::Topic, prefix)
}

fn pattern(p: &str) -> Pattern {
    Pattern::new(p).unwrap()
}

fn topic(t: &str) -> Topic {
    Topic::new(t).unwrap()
}

fn drain(machine: &mut PubSub) -> Vec<PubSubOutput> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}

fn record(byte: u8, patterns: &str) -> Found {
    Found {
        provider: node(byte),
        value: Bytes::copy_from_slice(patterns.as_bytes()),
    }
}

/// The PUBLISH frames among `outputs`, as (subscriber byte, frame).
fn sends(outputs: &[PubSubOutput]) -> Vec<(u8, Publish)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            PubSubOutput::Send {
                subscriber,
                message,
            } => Some((subscriber.as_bytes()[0], message.clone())),
            _ => None,
        })
        .collect()
}

fn lookups(outputs: &[PubSubOutput]) -> Vec<RecordKey> {
    outputs
        .iter()
        .filter_map(|o| match o {
            PubSubOutput::Directory(DirectoryRequest::Lookup { key }) => Some(*key),
            _ => None,
        })
        .collect()
}

fn announce(prefix: &str, value: &str) -> PubSubOutput {
    PubSubOutput::Directory(DirectoryRequest::Announce {
        key: key(prefix),
        value: Bytes::copy_from_slice(value.as_bytes()),
    })
}

#[test]
fn subscriptions_are_announced_under_their_literal_prefix() {
    let now = t0();
    let mut ps = PubSub::new(config(1));
    assert_eq!(ps.subscribe(now, pattern("a.*.c")), Ok(true));
    assert_eq!(drain(&mut ps), [announce("a", "a.*.c")]);
    assert_eq!(ps.subscribe(now, pattern("a.#")), Ok(true));
    assert_eq!(
        drain(&mut ps),
        [announce("a", "a.#\na.*.c")],
        "one value per key"
    );
    assert_eq!(ps.subscribe(now, pattern("a.#")), Ok(false));
    assert!(drain(&mut ps).is_empty());
    assert_eq!(ps.subscribe(now, pattern("#")), Ok(true));
    assert_eq!(drain(&mut ps), [announce("", "#")]);

    // The DHT republishes the records; the machine announces each once.
    let later = now + Duration::from_secs(240);
    assert_eq!(ps.poll_timeout(), None);
    ps.handle_timeout(later);
    assert!(drain(&mut ps).is_empty());

    assert!(ps.unsubscribe(later, &pattern("a.#")));
    assert_eq!(drain(&mut ps), [announce("a", "a.*.c")]);
    assert!(ps.unsubscribe(later, &pattern("a.*.c")));
    assert_eq!(
        drain(&mut ps),
        [PubSubOutput::Directory(DirectoryRequest::Withdraw {
            key: key("a")
        })]
    );
    assert!(!ps.unsubscribe(later, &pattern("a.*.c")));
}

#[test]
fn bounds_give_typed_errors() {
    let now = t0();
    let mut ps = PubSub::new(PubSubConfig {
        max_subscriptions: 1,
        max_payload: 3,
        max_waiting_publications: 1,
        ..config(1)
    });
    ps.subscribe(now, pattern("a")).unwrap();
    assert_eq!(
        ps.subscribe(now, pattern("b")),
        Err(PubSubError::TooManySubscriptions { max: 1 })
    );
    assert_eq!(
        ps.publish(now, topic("a"), Bytes::from_static(b"1234")),
        Err(PubSubError::TooLarge { size: 4, max: 3 })
    );
    ps.publish(now, topic("a"), Bytes::new()).unwrap();
    assert_eq!(
        ps.publish(now, topic("a"), Bytes::new()),
        Err(PubSubError::Overloaded { waiting: 1 })
    );
}

/// A publisher that looked up every prefix of "a.b" and found node 2 with
/// `a.*`, node 3 with `a.b` and `#` (two matches, one copy), node 4 with `x.#`
/// under "" (no match) and itself (served locally, not over the network).
fn routed_publisher(now: Instant) -> (PubSub, Vec<PubSubOutput>) {
    let mut ps = PubSub::new(config(1));
    ps.subscribe(now, pattern("a.b")).unwrap();
    drain(&mut ps);
    let id = ps
        .publish(now, topic("a.b"), Bytes::from_static(b"m0"))
        .unwrap();
    assert_eq!(id, EPOCH);
    assert_eq!(ps.poll_timeout(), Some(now), "output is queued");
    let out = drain(&mut ps);
    assert_eq!(lookups(&out), [key(""), key("a"), key("a.b")]);
    ps.handle_lookup(now, key(""), vec![record(3, "#"), record(4, "x.#")]);
    ps.handle_lookup(now, key("a"), vec![record(2, "a.*")]);
    assert!(drain(&mut ps).is_empty(), "waits for every prefix");
    ps.handle_lookup(now, key("a.b"), vec![record(3, "a.b"), record(1, "a.b")]);
    let out = drain(&mut ps);
    (ps, out)
}

/// Issue 14's link ladder (congested cellular, seed 6): a publisher's first lookups, whose
/// one request each was lost to a burst on its link, ended with no node answering, and the
/// 174 publications waiting for them went to no one. Lookups no node answered, of prefixes
/// nothing is known under, are made again at once (twice), the publications waiting; the
/// third such answer lets them go.
#[test]
fn a_publication_waits_while_lookups_no_node_answered_are_made_again() {
    let now = t0();
    let mut ps = PubSub::new(config(1));
    ps.publish(now, topic("a"), Bytes::from_static(b"m0"))
        .unwrap();
    let keys = [key(""), key("a")];
    assert_eq!(lookups(&drain(&mut ps)), keys);
    for _ in 0..UNANSWERED_RETRIES {
        for k in keys {
            ps.handle_lookup_answered(now, k, vec![], Answered::Nobody);
        }
        assert_eq!(lookups(&drain(&mut ps)), keys, "made again, nothing sent");
    }
    // An answer that found the subscriber sends the publication to it.
    ps.handle_lookup_answered(now, key(""), vec![record(2, "#")], Answered::Thinly);
    assert!(
        drain(&mut ps).is_empty(),
        "still waits for the other prefix"
    );
    ps.handle_lookup_answered(now, key("a"), vec![], Answered::Nobody);
    let sent = sends(&drain(&mut ps));
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [2]);
    assert_eq!(ps.stats().sent, 1);
}

#[test]
fn a_publication_goes_once_to_every_matching_subscriber() {
    let now = t0();
    let (mut ps, out) = routed_publisher(now);
    let local = PubSubOutput::Event(PubSubEvent::Message {
        publisher: node(1),
        message_id: EPOCH,
        topic: topic("a.b"),
        payload: Bytes::from_static(b"m0"),
    });
    assert_eq!(out[0], local);
    let sent = sends(&out);
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [2, 3]);
    let frame = &sent[0].1;
    assert_eq!(
        (frame.epoch, frame.sequence, frame.message_id),
        (EPOCH, 0, EPOCH),
        "message ids start at the first epoch too: they grow across restarts"
    );
    assert_eq!(
        sent[1].1.epoch,
        EPOCH + 1,
        "each subscriber session has its own epoch"
    );

    // Cached: the next publication goes out at once, numbered on.
    ps.publish(now + SECOND, topic("a.b"), Bytes::new())
        .unwrap();
    let sent = sends(&drain(&mut ps));
    assert_eq!(sent.len(), 2);
    assert_eq!((sent[0].1.sequence, sent[0].1.message_id), (1, EPOCH + 1));
    assert_eq!(ps.stats().sent, 4);

    // After the TTL, looked up again.
    let later = now + Duration::from_secs(31);
    ps.handle_timeout(later);
    ps.publish(later, topic("a.b"), Bytes::new()).unwrap();
    assert_eq!(lookups(&drain(&mut ps)).len(), 3);
}

#[test]
fn publications_leave_in_order_and_lookups_time_out() {
    let now = t0();
    let mut ps = PubSub::new(config(1));
    ps.publish(now, topic("a"), Bytes::from_static(b"first"))
        .unwrap();
    let out = drain(&mut ps);
    ps.handle_lookup(now, key(""), vec![record(2, "#")]);
    ps.publish(now, topic("b"), Bytes::from_static(b"second"))
        .unwrap();
    let out2 = drain(&mut ps);
    assert_eq!(lookups(&out), [key(""), key("a")]);
    assert_eq!(lookups(&out2), [key("b")]);
    ps.handle_lookup(now, key("b"), vec![]);
    assert!(
        sends(&drain(&mut ps)).is_empty(),
        "the second waits behind the first"
    );
    let deadline = now + 5 * SECOND;
    assert_eq!(ps.poll_timeout(), Some(deadline));
    ps.handle_timeout(deadline);
    let sent = sends(&drain(&mut ps));
    let payloads: Vec<_> = sent
        .iter()
        .map(|s| (s.0, s.1.payload.clone(), s.1.sequence))
        .collect();
    assert_eq!(
        payloads,
        [
            (2, Bytes::from_static(b"first"), 0),
            (2, Bytes::from_static(b"second"), 1)
        ],
        "the timed-out lookup counts as empty; order is kept"
    );
}

#[test]
fn a_slow_subscriber_loses_its_oldest_messages_and_holds_no_one_up() {
    let now = t0();
    let mut ps = PubSub::new(PubSubConfig {
        send_window: 2,
        queue_bound: 3,
        ..config(1)
    });
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    drain(&mut ps);
    ps.handle_lookup(now, key(""), vec![]);
    ps.handle_lookup(now, key("t"), vec![record(2, "t"), record(3, "t")]);
    let mut fast = sends(&drain(&mut ps));
    for _ in 1..10 {
        ps.publish(now, topic("t"), Bytes::new()).unwrap();
        let sent = sends(&drain(&mut ps));
        for (_, frame) in sent.iter().filter(|s| s.0 == 3) {
            ps.handle_written(now, node(3), frame.epoch);
        }
        fast.extend(sent);
    }
    let fast_ids: Vec<u64> = fast
        .iter()
        .filter(|s| s.0 == 3)
        .map(|s| s.1.message_id - EPOCH)
        .collect();
    assert_eq!(
        fast_ids,
        (0..10).collect::<Vec<_>>(),
        "the fast subscriber got everything"
    );
    let slow: Vec<&Publish> = fast.iter().filter(|s| s.0 == 2).map(|s| &s.1).collect();
    assert_eq!(slow.len(), 2, "two in its window");
    assert_eq!(ps.queued_for(&node(2)), 3);
    assert_eq!(ps.stats().dropped_slow, 5);
    // It catches up: the newest three, numbered on without a gap.
    let slow_epoch = slow[0].epoch;
    for _ in 0..3 {
        ps.handle_written(now, node(2), slow_epoch);
    }
    let caught_up: Vec<(u64, u64)> = sends(&drain(&mut ps))
        .iter()
        .map(|s| (s.1.message_id - EPOCH, s.1.sequence))
        .collect();
    assert_eq!(caught_up, [(7, 2), (8, 3), (9, 4)]);
}

#[test]
fn a_disconnected_subscriber_resumes_in_a_new_epoch_and_an_unreachable_one_waits() {
    let now = t0();
    let mut ps = PubSub::new(PubSubConfig {
        send_window: 1,
        ..config(1)
    });
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    drain(&mut ps);
    ps.handle_lookup(now, key(""), vec![]);
    ps.handle_lookup(now, key("t"), vec![record(2, "t")]);
    assert_eq!(sends(&drain(&mut ps))[0].1.epoch, EPOCH);
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    assert!(sends(&drain(&mut ps)).is_empty(), "window of one is full");

    // The connection closed: the frame handed out (its delivery unknown) and
    // the waiting one go first in a new session, opened at the next message.
    ps.handle_disconnected(now, node(2));
    assert_eq!(ps.stats().dropped_disconnected, 0, "carried, not dropped");
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    let sent = sends(&drain(&mut ps));
    let first = &sent[0].1;
    assert_eq!(
        (first.epoch, first.sequence, first.message_id),
        (EPOCH + 1, 0, EPOCH)
    );
    assert_eq!(ps.stats().resent, 1, "the one handed out before");
    assert_eq!((ps.queued_for(&node(2)), ps.unsent_for(&node(2))), (2, 2));

    // Unreachable: skipped until the retry time; what the session left, and what is
    // published for it meanwhile, waits for that.
    ps.handle_unreachable(now, node(2));
    ps.publish(now + SECOND, topic("t"), Bytes::new()).unwrap();
    assert!(sends(&drain(&mut ps)).is_empty());
    assert_eq!(ps.stats().dropped_disconnected, 0);
    assert_eq!(
        ps.unsent_for(&node(2)),
        3,
        "two left, one published while down"
    );
    let retry = now + 5 * SECOND;
    assert_eq!(ps.poll_timeout(), Some(retry));
    ps.handle_timeout(retry);
    let sent = sends(&drain(&mut ps));
    let first = &sent[0].1;
    assert_eq!(
        (first.epoch, first.sequence, first.message_id),
        (EPOCH + 2, 0, EPOCH),
        "tried again at the retry time, oldest first"
    );

    // Reported connected before the retry time: it resumes at once.
    ps.handle_unreachable(retry, node(2));
    ps.handle_connected(retry, node(2));
    assert_eq!(sends(&drain(&mut ps))[0].1.epoch, EPOCH + 3);

    // Unreachable at every try: after six retry periods what waits is dropped, counted.
    let mut at = retry;
    while ps.unsent_for(&node(2)) > 0 {
        ps.handle_unreachable(at, node(2));
        at += 5 * SECOND;
        ps.handle_timeout(at);
        drain(&mut ps);
        assert!(at < retry + 60 * SECOND, "gave up in time");
    }
    assert_eq!(ps.stats().dropped_disconnected, 3, "the three never sent");
    assert!(
        at <= retry + 40 * SECOND,
        "six retry periods, then one more try"
    );
}

#[test]
fn what_a_closed_session_left_goes_at_the_reconnect_and_the_subscriber_drops_what_it_had() {
    // Issue 17: a relay died with publications in flight over its circuit; the
    // subscriber never got them and nothing sent them again.
    let now = t0();
    let mut publisher = PubSub::new(config(1));
    let mut subscriber = PubSub::new(config(2));
    subscriber.subscribe(now, pattern("t")).unwrap();
    drain(&mut subscriber);
    publisher.publish(now, topic("t"), Bytes::new()).unwrap();
    drain(&mut publisher);
    publisher.handle_lookup(now, key(""), vec![]);
    publisher.handle_lookup(now, key("t"), vec![record(2, "t")]);
    let mut frames = sends(&drain(&mut publisher));
    for _ in 0..4 {
        publisher.publish(now, topic("t"), Bytes::new()).unwrap();
        frames.extend(sends(&drain(&mut publisher)));
    }
    assert_eq!(frames.len(), 5);
    // The subscriber got the first three; the connection died with two in flight.
    for (_, frame) in &frames[..3] {
        subscriber.handle_publish(now, node(1), frame.clone());
    }
    assert_eq!(delivered(drain(&mut subscriber)).len(), 3);
    let later = now + 2 * SECOND;
    publisher.handle_disconnected(later, node(2));
    subscriber.handle_disconnected(later, node(1));
    // Connected again: the five go at once in a new session, and only the two
    // it missed come out, in order; the next publication follows.
    publisher.handle_connected(later, node(2));
    let again = sends(&drain(&mut publisher));
    assert_eq!(again.len(), 5);
    assert_eq!((again[0].1.epoch, again[0].1.sequence), (EPOCH + 1, 0));
    publisher.publish(later, topic("t"), Bytes::new()).unwrap();
    let next = sends(&drain(&mut publisher));
    for (_, frame) in again.iter().chain(&next) {
        subscriber.handle_publish(later, node(1), frame.clone());
    }
    let got: Vec<u64> = (delivered(drain(&mut subscriber)).into_iter())
        .map(|(_, id)| id - EPOCH)
        .collect();
    assert_eq!(got, [3, 4, 5]);
    assert_eq!(subscriber.stats().receiver.duplicates, 3);
    assert_eq!(publisher.stats().resent, 5);

    // Unclaimed, what a session left expires at the end of the span, once.
    publisher.handle_disconnected(later, node(2));
    let expiry = later + 5 * SECOND;
    assert_eq!(publisher.poll_timeout(), Some(expiry));
    let dropped = publisher.stats().dropped_disconnected;
    publisher.handle_timeout(expiry);
    assert_eq!(
        publisher.stats().dropped_disconnected,
        dropped,
        "all six were sent: none dropped unsent"
    );
    assert_eq!(publisher.unsent_for(&node(2)), 0);
    assert!(publisher.poll_timeout().is_none_or(|t| t > expiry));

    // Past the carry-over span, a session leaves nothing.
    let much_later = later + 10 * SECOND;
    publisher.handle_disconnected(much_later, node(2));
    publisher.handle_connected(much_later, node(2));
    assert!(sends(&drain(&mut publisher)).is_empty());
    // And with the carry-over off, the waiting ones are dropped at the disconnect.
    let mut off = PubSub::new(PubSubConfig {
        carry_over: Duration::ZERO,
        send_window: 1,
        ..config(1)
    });
    off.publish(now, topic("t"), Bytes::new()).unwrap();
    drain(&mut off);
    off.handle_lookup(now, key(""), vec![]);
    off.handle_lookup(now, key("t"), vec![record(2, "t")]);
    off.publish(now, topic("t"), Bytes::new()).unwrap();
    drain(&mut off);
    off.handle_disconnected(now, node(2));
    off.handle_connected(now, node(2));
    assert!(sends(&drain(&mut off)).is_empty());
    assert_eq!(off.stats().dropped_disconnected, 1);
}

#[test]
fn a_direct_subscription_is_served_without_the_dht_until_withdrawn() {
    let now = t0();
    let mut ps = PubSub::new(config(1));
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    drain(&mut ps);
    ps.handle_lookup(now, key(""), vec![]);
    ps.handle_lookup(now, key("t"), vec![]);
    assert!(sends(&drain(&mut ps)).is_empty());

    let answered = |ps: &mut PubSub| match &drain(ps)[..] {
        [PubSubOutput::Answer { peer, message }] => (peer.as_bytes()[0], message.clone()),
        other => panic!("{other:?}"),
    };
    let ok = |request_id| {
        Message::Reply(Reply {
            request_id,
            payload: Bytes::new(),
        })
    };
    let subscribe = |request_id, pattern: &str| Subscribe {
        request_id,
        pattern: pattern.into(),
    };
    ps.handle_subscribe(now, node(2), subscribe(1, "a..b"));
    let (_, refused) = answered(&mut ps);
    assert!(matches!(
        refused,
        Message::ErrorReply(ErrorReply {
            request_id: 1,
            code: ErrorCode::BadRequest,
            ..
        })
    ));
    ps.handle_subscribe(now, node(2), subscribe(2, "*"));
    assert_eq!(answered(&mut ps), (2, ok(2)));
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    assert_eq!(
        sends(&drain(&mut ps)).len(),
        1,
        "served from the cache plus the direct table"
    );

    ps.handle_unsubscribe(
        now,
        node(2),
        Unsubscribe {
            request_id: 3,
            pattern: "*".into(),
        },
    );
    assert_eq!(answered(&mut ps), (2, ok(3)));
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    assert!(sends(&drain(&mut ps)).is_empty());

    ps.handle_subscribe(now, node(2), subscribe(4, "t"));
    drain(&mut ps);
    ps.handle_disconnected(now, node(2));
    ps.handle_connected(now, node(2));
    let resent = sends(&drain(&mut ps));
    assert_eq!(resent.len(), 1, "what its last session left, sent again");
    ps.publish(now, topic("t"), Bytes::new()).unwrap();
    assert!(
        sends(&drain(&mut ps)).is_empty(),
        "a disconnect ends direct subscriptions"
    );
}

fn frame(epoch: u64, sequence: u64, topic: &str) -> Publish {
    Publish {
        message_id: sequence,
        epoch,
        sequence,
        topic: topic.into(),
        payload: Bytes::new(),
    }
}

#[test]
fn received_messages_are_delivered_in_order_once_and_only_if_subscribed() {
    let now = t0();
    let mut ps = PubSub::new(config(1));
    ps.subscribe(now, pattern("s.*")).unwrap();
    drain(&mut ps);
    ps.handle_publish(now, node(2), frame(7, 1, "s.x"));
    assert!(drain(&mut ps).is_empty(), "waits for sequence 0");
    ps.handle_publish(now, node(2), frame(7, 0, "s.y"));
    ps.handle_publish(now, node(2), frame(7, 0, "s.y"));
    ps.handle_publish(now, node(2), frame(7, 2, "other"));
    ps.handle_publish(now, node(2), frame(7, 3, "not a topic"));
    let delivered: Vec<(u64, Topic)> = drain(&mut ps)
        .into_iter()
        .map(|o| match o {
            PubSubOutput::Event(PubSubEvent::Message {
                message_id, topic, ..
            }) => (message_id, topic),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(delivered, [(0, topic("s.y")), (1, topic("s.x"))]);
    let stats = ps.stats();
    assert_eq!((stats.unsolicited, stats.receiver.duplicates), (2, 1));
}

/// The message ids among `outputs`' deliveries, as (publisher byte, id).
fn delivered(outputs: Vec<PubSubOutput>) -> Vec<(u8, u64)> {
    outputs
        .into_iter()
        .map(|o| match o {
            PubSubOutput::Event(PubSubEvent::Message {
                publisher,
                message_id,
                ..
            }) => (publisher.as_bytes()[0], message_id),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn unsolicited_and_unauthorized_publishes_are_dropped_unread_and_never_held() {
    let now = t0();
    let publishers = AccessList::open().allow(pattern("s.secret"), [node(2)]);
    let mut ps = PubSub::new(PubSubConfig {
        publishers,
        ..config(1)
    });
    ps.subscribe(now, pattern("s.*")).unwrap();
    drain(&mut ps);
    // A stranger's frames on a topic nobody here wants: nothing is kept,
    // not even its sequence numbers.
    for sequence in 1..=300 {
        ps.handle_publish(now, node(3), frame(7, sequence, "other"));
    }
    assert!(drain(&mut ps).is_empty());
    ps.handle_publish(now, node(3), frame(7, 0, "s.x"));
    ps.handle_publish(now, node(3), frame(7, 1, "s.x"));
    // Once it is known, an unwanted frame uses up its number: 3 does not
    // wait for 2.
    ps.handle_publish(now, node(3), frame(7, 2, "other"));
    ps.handle_publish(now, node(3), frame(7, 3, "s.x"));
    assert_eq!(delivered(drain(&mut ps)), [(3, 0), (3, 1), (3, 3)]);
    // Only node 2 may publish on s.secret.
    ps.handle_publish(now, node(4), frame(7, 0, "s.open"));
    ps.handle_publish(now, node(4), frame(7, 1, "s.secret"));
    ps.handle_publish(now, node(2), frame(7, 0, "s.secret"));
    ps.handle_publish(now, node(4), frame(7, 2, "s.open"));
    assert_eq!(delivered(drain(&mut ps)), [(4, 0), (2, 0), (4, 2)]);
    let stats = ps.stats();
    assert_eq!((stats.unsolicited, stats.unauthorized), (301, 1));
    assert_eq!(stats.receiver.delivered, 6);
}

/// An in-memory DHT: every node's value under every key.
#[derive(Default)]
struct Dht(BTreeMap<RecordKey, BTreeMap<NodeId, Bytes>>);

/// A few machines wired together; frames arrive at once, and only the
/// subscribers in `slow` never report writes.
struct Mesh {
    now: Instant,
    nodes: BTreeMap<NodeId, PubSub>,
    dht: Dht,
    slow: Vec<NodeId>,
    /// Deliveries per subscriber: (publisher, message id).
    got: BTreeMap<NodeId, Vec<(NodeId, u64)>>,
}

impl Mesh {
    fn new(ids: &[u8]) -> Self {
        Self {
            now: t0(),
            nodes: ids
                .iter()
                .map(|&b| (node(b), PubSub::new(config(b))))
                .collect(),
            dht: Dht::default(),
            slow: Vec::new(),
            got: BTreeMap::new(),
        }
    }

    /// Carries out every output until all machines are drained.
    fn run(&mut self) {
        loop {
            let mut work = Vec::new();
            for (id, machine) in &mut self.nodes {
                work.extend(drain(machine).into_iter().map(|o| (*id, o)));
            }
            if work.is_empty() {
                return;
            }
            for (from, output) in work {
                self.carry(from, output);
            }
        }
    }

    fn carry(&mut self, from: NodeId, output: PubSubOutput) {
        let now = self.now;
        match output {
            PubSubOutput::Directory(DirectoryRequest::Announce { key, value }) => {
                self.dht.0.entry(key).or_default().insert(from, value);
            }
            PubSubOutput::Directory(DirectoryRequest::Withdraw { key }) => {
                self.dht.0.entry(key).or_default().remove(&from);
            }
            PubSubOutput::Directory(DirectoryRequest::Lookup { key }) => {
                let found = self.dht.0.get(&key).into_iter().flatten();
                let found = found
                    .map(|(provider, value)| Found {
                        provider: *provider,
                        value: value.clone(),
                    })
                    .collect();
                self.nodes
                    .get_mut(&from)
                    .unwrap()
                    .handle_lookup(now, key, found);
            }
            PubSubOutput::Send {
                subscriber,
                message,
            } => {
                let epoch = message.epoch;
                self.nodes
                    .get_mut(&subscriber)
                    .unwrap()
                    .handle_publish(now, from, message);
                if !self.slow.contains(&subscriber) {
                    self.nodes
                        .get_mut(&from)
                        .unwrap()
                        .handle_written(now, subscriber, epoch);
                }
            }
            PubSubOutput::Answer { .. } => unreachable!("no SUBSCRIBE in this mesh"),
            PubSubOutput::Event(PubSubEvent::Message {
                publisher,
                message_id,
                ..
            }) => {
                self.got
                    .entry(from)
                    .or_default()
                    .push((publisher, message_id));
            }
            PubSubOutput::Event(PubSubEvent::SubscriptionFailed { .. }) => {
                unreachable!("this mesh's stores never fail")
            }
        }
    }
}

#[test]
fn a_thousand_publications_reach_five_subscribers_once_and_in_order() {
    let mut mesh = Mesh::new(&[1, 2, 3, 4, 5, 6, 7]);
    let subscriptions = [
        (2, "sensors.kitchen.temp"),
        (3, "sensors.*.temp"),
        (4, "sensors.#"),
        (5, "#"),
        (6, "*.kitchen.*"),
        (7, "sensors.*.temp"), // never reads
    ];
    for (b, p) in subscriptions {
        let now = mesh.now;
        mesh.nodes
            .get_mut(&node(b))
            .unwrap()
            .subscribe(now, pattern(p))
            .unwrap();
    }
    mesh.slow.push(node(7));
    let publisher_config = PubSubConfig {
        queue_bound: 100,
        ..config(1)
    };
    mesh.nodes.insert(node(1), PubSub::new(publisher_config));
    mesh.run();
    let publisher = node(1);
    for i in 0..1000u64 {
        mesh.now += Duration::from_millis(10);
        let now = mesh.now;
        let t = if i % 10 == 0 {
            "sensors.hall.temp"
        } else {
            "sensors.kitchen.temp"
        };
        let machine = mesh.nodes.get_mut(&publisher).unwrap();
        machine.handle_timeout(now);
        machine.publish(now, topic(t), Bytes::new()).unwrap();
        mesh.run();
    }
    let every: Vec<(NodeId, u64)> = (0..1000).map(|i| (publisher, EPOCH + i)).collect();
    let kitchen: Vec<(NodeId, u64)> = (every.iter().copied())
        .filter(|(_, i)| (i - EPOCH) % 10 != 0)
        .collect();
    assert_eq!(mesh.got[&node(2)], kitchen);
    for b in [3, 4, 5] {
        assert_eq!(mesh.got[&node(b)], every, "subscriber {b}");
    }
    assert_eq!(mesh.got[&node(6)], kitchen);
    let slow = &mesh.got[&node(7)];
    assert_eq!(slow.len(), 64, "the window only: it never reads");
    let stats = mesh.nodes[&publisher].stats();
    assert_eq!(stats.dropped_slow, 1000 - 64 - 100);
    assert_eq!(mesh.nodes[&publisher].queued_for(&node(7)), 100);
    assert_eq!(stats.published, 1000);
}

/// Who a publication on `t` at `now` went to: the subscribers sent a frame,
/// and whether it was delivered here too.
fn routed(ps: &mut PubSub, now: Instant, t: &str) -> (Vec<u8>, bool) {
    ps.publish(now, topic(t), Bytes::new()).unwrap();
    let out = drain(ps);
    let local = out
        .iter()
        .any(|o| matches!(o, PubSubOutput::Event(PubSubEvent::Message { .. })));
    (sends(&out).iter().map(|s| s.0).collect(), local)
}

/// A publisher remembers where a topic's publications go (issue 16: routing
/// every publication anew was a third of a publishing node's time); each
/// change of what the route came from shows in the next publication: a
/// lookup that found another subscriber, our own subscription made and
/// withdrawn, a direct subscription.
#[test]
fn a_remembered_route_follows_every_change_of_what_it_came_from() {
    let now = t0();
    let mut ps = PubSub::new(config(1));
    ps.publish(now, topic("a.b"), Bytes::new()).unwrap();
    drain(&mut ps);
    ps.handle_lookup(now, key(""), vec![]);
    ps.handle_lookup(now, key("a"), vec![record(2, "a.*")]);
    ps.handle_lookup(now, key("a.b"), vec![]);
    drain(&mut ps);
    assert_eq!(routed(&mut ps, now, "a.b"), (vec![2], false));
    assert_eq!(
        routed(&mut ps, now, "a.c"),
        (vec![], false),
        "keys of its own"
    );
    drain(&mut ps);
    ps.handle_lookup(now, key("a.c"), vec![record(4, "a.c")]);
    let last = sends(&drain(&mut ps));
    assert_eq!(last.iter().map(|s| s.0).collect::<Vec<_>>(), [2, 4]);

    // Our own subscription, made and withdrawn.
    ps.subscribe(now, pattern("a.#")).unwrap();
    assert_eq!(routed(&mut ps, now, "a.b"), (vec![2], true));
    assert!(ps.unsubscribe(now, &pattern("a.#")));
    assert_eq!(routed(&mut ps, now, "a.b"), (vec![2], false));

    // A direct subscription.
    let subscribe = Subscribe {
        request_id: 1,
        pattern: "a.b".into(),
    };
    ps.handle_subscribe(now, node(5), subscribe);
    drain(&mut ps);
    assert_eq!(routed(&mut ps, now, "a.b"), (vec![2, 5], false));

    // Due again: the lookup of "a" finds node 3 as well.
    let later = now + Duration::from_secs(31);
    ps.handle_timeout(later);
    ps.publish(later, topic("a.b"), Bytes::new()).unwrap();
    assert_eq!(lookups(&drain(&mut ps)).len(), 3);
    ps.handle_lookup(later, key("a"), vec![record(2, "a.*"), record(3, "a.b")]);
    ps.handle_lookup(later, key(""), vec![]);
    ps.handle_lookup(later, key("a.b"), vec![]);
    let sent = sends(&drain(&mut ps));
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [2, 3, 5]);
    assert_eq!(routed(&mut ps, later, "a.b"), (vec![2, 3, 5], false));
}
