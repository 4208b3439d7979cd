//! [`Messaging`] driven directly, with no Node: the Node's side (leases,
//! stream ids, DHT answers) is played by hand.

use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{Dir, Side, StreamId};

use super::{Errand, Messaging, MessagingOutput, Owner, Unopened};
use crate::Child;
use crate::dht::{DhtEvent, QueryId, QueryStats};
use crate::exchange::PeerRequest;
use crate::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use crate::pool::{ConnId, Lease};
use crate::pubsub::{PubSubConfig, Topic};
use crate::record::SignedRecord;
use crate::rpc::{
    CallId, CallOptions, ProviderFlags, RegisterOptions, RpcConfig, RpcError, RpcEvent,
};
use crate::wire::Message;

const TIMEOUT: Duration = Duration::from_secs(5);

fn realm() -> Realm {
    Realm::new("io.test").expect("a valid realm")
}

fn identity(byte: u8) -> Identity {
    Identity::from_seed([byte; 32])
}

fn id(byte: u8) -> NodeId {
    identity(byte).node_id()
}

/// Messaging of node 0.
fn messaging() -> Messaging {
    let rpc = RpcConfig::new(realm(), 7);
    let pubsub = PubSubConfig::new(realm(), id(0), 1_000_000);
    Messaging::new(id(0), rpc, pubsub)
}

fn lease(conn: u64) -> Lease {
    Lease {
        conn: ConnId(conn),
        slot: 0,
    }
}

fn stream(index: u64) -> StreamId {
    StreamId::new(Side::Client, Dir::Bi, index)
}

fn drain(m: &mut Messaging) -> Vec<MessagingOutput> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

/// The end of lookup `query` of `key`, which node 9 answered.
fn values_found(query: QueryId, key: RecordKey, records: Vec<SignedRecord>) -> DhtEvent {
    DhtEvent::ValuesFound {
        query,
        key,
        records,
        answered: vec![id(9)],
        from_cache: false,
        stats: QueryStats::default(),
    }
}

/// Answers every lookup among `outputs`: records of `holders` (with
/// `value`) under `key`, none under other keys; returns what followed.
fn answer_lookups(
    m: &mut Messaging,
    now: Instant,
    outputs: Vec<MessagingOutput>,
    key: RecordKey,
    holders: &[u8],
    value: &Bytes,
) -> Vec<MessagingOutput> {
    let mut after = Vec::new();
    for (n, output) in outputs.into_iter().enumerate() {
        let MessagingOutput::Lookup {
            key: asked, owner, ..
        } = output
        else {
            after.push(output);
            continue;
        };
        let query = QueryId(n as u64 + 100);
        m.handle_lookup_started(query, owner);
        let records = if asked == key {
            let sign = |b: &u8| SignedRecord::sign(&identity(*b), key, value.clone(), 0, 3600);
            holders.iter().map(sign).collect()
        } else {
            Vec::new()
        };
        let event = values_found(query, asked, records);
        assert!(m.handle_dht_event(now, event).is_none(), "our lookup");
        after.extend(drain(m));
    }
    after
}

/// Calls `procedure`, whose one provider is node `provider`; returns the
/// call and the errand the child asks a connection for.
fn call(m: &mut Messaging, now: Instant, procedure: &str, provider: u8) -> (CallId, Errand) {
    let payload = Bytes::from_static(b"hi");
    let options = CallOptions::default();
    let call = m.call(now, procedure, payload, TIMEOUT, options);
    let call = call.expect("a call starts");
    let key = RecordKey::new(&realm(), RecordKind::Rpc, procedure);
    let flags = ProviderFlags { idempotent: false }.encode();
    let outputs = drain(m);
    match answer_lookups(m, now, outputs, key, &[provider], &flags).as_slice() {
        [MessagingOutput::Connect { peer, errand }] if *peer == id(provider) => (call, *errand),
        other => panic!("expected a connect, got {other:?}"),
    }
}

/// The one open the child asks for next.
fn the_open(m: &mut Messaging) -> (Lease, Errand, Option<Message>) {
    let mut out = drain(m);
    assert_eq!(out.len(), 1, "{out:?}");
    match out.pop() {
        Some(MessagingOutput::Open {
            lease,
            errand,
            frame,
        }) => (lease, errand, frame),
        other => panic!("expected an open, got {other:?}"),
    }
}

/// Gives the call's errand a lease on `conn` and opens its stream `index`.
fn open_call(m: &mut Messaging, now: Instant, errand: Errand, conn: u64, index: u64) {
    m.handle_connected(now, errand, lease(conn));
    let (lease, _, frame) = the_open(m);
    assert!(matches!(frame, Some(Message::Call(_))));
    m.handle_opened(now, errand, lease, Ok(stream(index)));
    assert!(drain(m).is_empty(), "the CALL is out");
}

/// The completions among `outputs`.
fn completions(outputs: &[MessagingOutput]) -> Vec<(CallId, Result<Bytes, RpcError>)> {
    let completed = |o: &MessagingOutput| match o {
        MessagingOutput::Rpc(RpcEvent::Completed { call, result }) => Some((*call, result.clone())),
        _ => None,
    };
    outputs.iter().filter_map(completed).collect()
}

fn released(outputs: &[MessagingOutput]) -> Vec<ConnId> {
    let lease = |o: &MessagingOutput| match o {
        MessagingOutput::Release(lease) => Some(lease.conn()),
        _ => None,
    };
    outputs.iter().filter_map(lease).collect()
}

#[test]
fn a_call_whose_stream_is_reset_fails_typed_and_gives_its_lease_back() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let (call, errand) = call(&mut m, now, "svc.echo", 1);
    open_call(&mut m, now, errand, 1, 0);

    m.handle_stream_gone(now, ConnId(1), stream(0), false);
    let out = drain(&mut m);
    assert!(matches!(
        out.first(),
        Some(MessagingOutput::Reset {
            conn: ConnId(1),
            ..
        })
    ));
    assert_eq!(released(&out), [ConnId(1)]);
    let done = completions(&out);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, call);
    assert!(matches!(done[0].1, Err(RpcError::Lost { .. })), "{done:?}");
    assert_eq!(m.rpc().calls_in_flight(), 0);
}

#[test]
fn release_of_a_connection_fails_exactly_its_calls() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let (on_one, errand_one) = call(&mut m, now, "svc.one", 1);
    open_call(&mut m, now, errand_one, 1, 0);
    let (_, errand_two) = call(&mut m, now, "svc.two", 2);
    open_call(&mut m, now, errand_two, 2, 0);
    // A third call waits for a stream on connection 1.
    let (blocked, errand_three) = call(&mut m, now, "svc.three", 1);
    m.handle_connected(now, errand_three, lease(1));
    let (lease, _, _) = the_open(&mut m);
    m.handle_opened(now, errand_three, lease, Err(Unopened::Blocked));
    assert!(drain(&mut m).is_empty());

    m.handle_released(now, Some(ConnId(1)), Some(id(1)), false);
    let out = drain(&mut m);
    assert_eq!(released(&out), [ConnId(1), ConnId(1)]);
    let mut done: Vec<CallId> = completions(&out).into_iter().map(|(c, _)| c).collect();
    done.sort();
    let mut expected = vec![on_one, blocked];
    expected.sort();
    assert_eq!(done, expected);
    assert_eq!(
        m.rpc().calls_in_flight(),
        1,
        "the call on connection 2 goes on"
    );
}

#[test]
fn calls_blocked_on_a_connection_go_in_order_when_it_allows_streams() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let mut errands = Vec::new();
    for procedure in ["svc.a", "svc.b"] {
        let (_, errand) = call(&mut m, now, procedure, 1);
        m.handle_connected(now, errand, lease(1));
        let (lease, _, _) = the_open(&mut m);
        m.handle_opened(now, errand, lease, Err(Unopened::Blocked));
        errands.push(errand);
    }
    m.handle_streams_available(now, ConnId(1));
    for (index, errand) in errands.into_iter().enumerate() {
        let (lease, e, _) = the_open(&mut m);
        assert_eq!(e, errand, "oldest first");
        m.handle_opened(now, errand, lease, Ok(stream(index as u64)));
    }
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.rpc().calls_in_flight(), 2);
}

#[test]
fn a_call_that_does_not_encode_fails_undelivered_and_gives_its_lease_back() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let (call, errand) = call(&mut m, now, "svc.echo", 1);
    m.handle_connected(now, errand, lease(1));
    let (lease, _, _) = the_open(&mut m);
    m.handle_opened(now, errand, lease, Err(Unopened::NotEncoded));
    let out = drain(&mut m);
    assert_eq!(released(&out), [ConnId(1)]);
    let done = completions(&out);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, call);
    assert!(done[0].1.is_err());
}

#[test]
fn a_self_call_is_answered_without_any_connection() {
    let now = crate::test_epoch();
    let mut m = messaging();
    m.register(now, "svc.echo", RegisterOptions::default())
        .expect("registered");
    drain(&mut m);
    let payload = Bytes::from_static(b"ping");
    let call = m.call(
        now,
        "svc.echo",
        payload.clone(),
        TIMEOUT,
        CallOptions::default(),
    );
    let call = call.expect("a call starts");
    let key = RecordKey::new(&realm(), RecordKind::Rpc, "svc.echo");
    let flags = ProviderFlags { idempotent: false }.encode();
    let outputs = drain(&mut m);
    let out = answer_lookups(&mut m, now, outputs, key, &[0], &flags);
    let [
        MessagingOutput::Rpc(RpcEvent::Request {
            id: inbound,
            caller,
            ..
        }),
    ] = out.as_slice()
    else {
        panic!("expected the request, got {out:?}");
    };
    assert_eq!(*caller, id(0));
    m.reply(now, *inbound, Ok(payload.clone()))
        .expect("answered");
    let out = drain(&mut m);
    assert_eq!(completions(&out), [(call, Ok(payload))]);
    assert_eq!(out.len(), 1, "nothing but the completion: {out:?}");
}

/// Publishes on "news" to subscriber 1 and opens its outlet on `conn`;
/// returns the publish stream.
fn feed(m: &mut Messaging, now: Instant, conn: u64, index: u64) -> StreamId {
    let topic = Topic::new("news").expect("a topic");
    m.publish(now, topic, Bytes::from_static(b"x"))
        .expect("published");
    let key = RecordKey::new(&realm(), RecordKind::Topic, "news");
    let value = Bytes::from_static(b"news");
    let outputs = drain(m);
    let out = answer_lookups(m, now, outputs, key, &[1], &value);
    let [MessagingOutput::Connect { errand, .. }] = out.as_slice() else {
        panic!("expected a connect, got {out:?}");
    };
    assert_eq!(*errand, Errand::Publish(id(1)));
    m.handle_connected(now, *errand, lease(conn));
    let (lease, _, frame) = the_open(m);
    assert!(frame.is_none(), "a publish stream opens empty");
    m.handle_opened(now, Errand::Publish(id(1)), lease, Ok(stream(index)));
    let out = drain(m);
    assert!(
        matches!(out.as_slice(), [MessagingOutput::Publish { conn: c, .. }] if *c == ConnId(conn)),
        "{out:?}"
    );
    stream(index)
}

#[test]
fn a_publish_after_the_outlet_is_gone_opens_a_new_one() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let first = feed(&mut m, now, 1, 0);
    m.handle_flushed(now, ConnId(1), first);
    let out = drain(&mut m);
    assert!(matches!(
        out.as_slice(),
        [MessagingOutput::PublishWritten { .. }]
    ));

    m.handle_stream_gone(now, ConnId(1), first, false);
    assert_eq!(released(&drain(&mut m)), [ConnId(1)]);
    assert_eq!(
        m.pubsub().stats().dropped_disconnected,
        0,
        "all was written"
    );

    // The subscriber's cached record still holds: a new outlet, on another
    // connection.
    let topic = Topic::new("news").expect("a topic");
    m.publish(now, topic, Bytes::from_static(b"y"))
        .expect("published");
    let out = drain(&mut m);
    assert!(
        matches!(out.as_slice(), [MessagingOutput::Connect { errand: Errand::Publish(p), .. }] if *p == id(1)),
        "{out:?}"
    );
}

#[test]
fn frames_for_an_unreachable_subscriber_are_dropped() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let topic = Topic::new("news").expect("a topic");
    m.publish(now, topic.clone(), Bytes::from_static(b"x"))
        .expect("published");
    let key = RecordKey::new(&realm(), RecordKind::Topic, "news");
    let value = Bytes::from_static(b"news");
    let outputs = drain(&mut m);
    let out = answer_lookups(&mut m, now, outputs, key, &[1], &value);
    assert!(matches!(out.as_slice(), [MessagingOutput::Connect { .. }]));
    m.handle_unreachable(now, Errand::Publish(id(1)));
    assert!(drain(&mut m).is_empty());
    // For a while, what follows for it is dropped without a connect.
    m.publish(now, topic, Bytes::from_static(b"y"))
        .expect("published");
    assert!(drain(&mut m).is_empty());
    assert_eq!(
        m.pubsub().stats().sent,
        1,
        "only the first frame was handed over"
    );
}

#[test]
fn a_stream_opened_for_an_ended_errand_is_reset_and_its_lease_released() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let key = PeerRequest {
        peer: id(1),
        request_id: 99,
    };
    m.handle_opened(now, Errand::Call(key), lease(3), Ok(stream(0)));
    let out = drain(&mut m);
    assert!(matches!(
        out.as_slice(),
        [
            MessagingOutput::Reset {
                conn: ConnId(3),
                ..
            },
            MessagingOutput::Release(_)
        ]
    ));
}

#[test]
fn dht_events_not_ours_come_back() {
    let now = crate::test_epoch();
    let mut m = messaging();
    let key = RecordKey::new(&realm(), RecordKind::Rpc, "svc.echo");
    let event = values_found(QueryId(5), key, Vec::new());
    assert!(
        m.handle_dht_event(now, event).is_some(),
        "no lookup of ours"
    );
    m.handle_lookup_started(QueryId(5), Owner::Rpc);
    let event = values_found(QueryId(5), key, Vec::new());
    assert!(m.handle_dht_event(now, event).is_none(), "ours now");
    assert!(
        m.handle_dht_event(now, values_found(QueryId(5), key, Vec::new()))
            .is_some(),
        "once"
    );
}

/// The lookups among `m`'s outputs (the others are dropped), each started as
/// query 200, 201, ...
fn start_lookups(m: &mut Messaging) -> Vec<(QueryId, RecordKey)> {
    let mut started = Vec::new();
    for output in &drain(m) {
        if let MessagingOutput::Lookup { key, owner, .. } = output {
            let query = QueryId(200 + started.len() as u64);
            m.handle_lookup_started(query, *owner);
            started.push((query, *key));
        }
    }
    started
}

#[test]
fn a_lookup_no_node_answered_is_made_again_then_asked_again_after_a_second() {
    // Issue 17: the empty answer of a lookup that ran during a partition was kept for
    // the cache's 30 s TTL, so calls failed with `NoProvider` long after the heal.
    // Issue 14's ladder: a first lookup whose one request was lost to a lossy link
    // failed every call made meanwhile; it is made again at once, twice at most.
    let t0 = crate::test_epoch();
    let mut m = messaging();
    let call = |m: &mut Messaging, now| {
        let payload = Bytes::from_static(b"hi");
        m.call(now, "svc.echo", payload, TIMEOUT, CallOptions::default())
            .expect("a call starts")
    };
    let first = call(&mut m, t0);
    let mut lookups = start_lookups(&mut m);
    let mut outputs = Vec::new();
    for attempt in 0..=crate::directory::UNANSWERED_RETRIES {
        let [(query, key)] = lookups[..] else {
            panic!("one lookup at attempt {attempt}: {lookups:?}");
        };
        let unanswered = DhtEvent::ValuesFound {
            query,
            key,
            records: Vec::new(),
            answered: Vec::new(),
            from_cache: false,
            stats: QueryStats::default(),
        };
        assert!(m.handle_dht_event(t0, unanswered).is_none());
        outputs = drain(&mut m);
        let again: Vec<_> = (outputs.iter())
            .filter_map(|o| match o {
                MessagingOutput::Lookup { key, owner, .. } => Some((*key, *owner)),
                _ => None,
            })
            .collect();
        if attempt < crate::directory::UNANSWERED_RETRIES {
            assert_eq!(again, [(key, Owner::Rpc)], "made again at once");
            m.handle_lookup_started(QueryId(300 + u64::from(attempt)), Owner::Rpc);
            lookups = vec![(QueryId(300 + u64::from(attempt)), key)];
        } else {
            assert!(again.is_empty(), "then given up: {again:?}");
        }
    }
    let ended = outputs.into_iter().any(|o| {
        matches!(o, MessagingOutput::Rpc(RpcEvent::Completed { call, result: Err(RpcError::NoProvider { .. }) }) if call == first)
    });
    assert!(ended, "the waiting call found no provider");

    call(&mut m, t0 + Duration::from_millis(500));
    assert!(
        start_lookups(&mut m).is_empty(),
        "within the second the answer stands"
    );
    call(&mut m, t0 + crate::directory::UNANSWERED_TTL);
    assert_eq!(start_lookups(&mut m).len(), 1, "then it is looked up again");
}

#[test]
fn a_lookup_few_nodes_answered_is_asked_again_after_five_seconds_and_a_full_one_later() {
    // Issue 17: a publisher's first subscriber lookup after a partition healed was
    // answered by 2 nodes (its routing table mostly stale), missed two subscribers, and
    // was kept for the cache's 30 s TTL.
    let t0 = crate::test_epoch();
    let mut m = messaging();
    let topic = Topic::new("t.x").expect("a topic");
    let publish = |m: &mut Messaging, now| {
        m.publish(now, topic.clone(), Bytes::from_static(b"m"))
            .expect("published")
    };
    let answer = |m: &mut Messaging, now, answered: Vec<NodeId>| {
        for (query, key) in start_lookups(m) {
            let event = DhtEvent::ValuesFound {
                query,
                key,
                records: Vec::new(),
                answered: answered.clone(),
                from_cache: false,
                stats: QueryStats::default(),
            };
            assert!(m.handle_dht_event(now, event).is_none());
        }
    };
    publish(&mut m, t0);
    answer(&mut m, t0, vec![id(8), id(9)]);
    publish(&mut m, t0 + Duration::from_secs(4));
    assert!(
        start_lookups(&mut m).is_empty(),
        "the thin answer stands 5 s"
    );
    let later = t0 + crate::directory::THIN_TTL;
    publish(&mut m, later);
    let again = start_lookups(&mut m);
    assert!(!again.is_empty(), "then the topic is looked up again");
    // Answered by three nodes, but three requests failed: thin again.
    let answered_by_three = |m: &mut Messaging, now, lookups: Vec<(QueryId, RecordKey)>, failed| {
        for (query, key) in lookups {
            let event = DhtEvent::ValuesFound {
                query,
                key,
                records: Vec::new(),
                answered: vec![id(7), id(8), id(9)],
                from_cache: false,
                stats: QueryStats {
                    failed,
                    ..QueryStats::default()
                },
            };
            assert!(m.handle_dht_event(now, event).is_none());
        }
    };
    answered_by_three(&mut m, later, again, 3);
    let last = later + crate::directory::THIN_TTL;
    publish(&mut m, last);
    let again = start_lookups(&mut m);
    assert!(!again.is_empty(), "looked up again after 5 s");
    // Three answers, one failure: kept for the cache's TTL.
    answered_by_three(&mut m, last, again, 1);
    publish(&mut m, last + Duration::from_secs(20));
    assert!(
        start_lookups(&mut m).is_empty(),
        "a full answer stands longer"
    );
}

#[test]
fn a_provider_due_again_is_called_while_the_new_lookup_runs_and_kept_when_nobody_answers() {
    // Issue 14's link ladder: in a small network every lookup is thin, so the provider
    // was due again every 5 s, and a new lookup lost to a lossy link failed the calls
    // made meanwhile although the provider was still there.
    let t0 = crate::test_epoch();
    let mut m = messaging();
    let (_, errand) = call(&mut m, t0, "svc.echo", 3);
    open_call(&mut m, t0, errand, 1, 0);
    let again = |m: &mut Messaging, now| {
        let payload = Bytes::from_static(b"hi");
        m.call(now, "svc.echo", payload, TIMEOUT, CallOptions::default())
            .expect("a call starts");
        drain(m)
    };
    let due = t0 + crate::directory::THIN_TTL;
    let out = again(&mut m, due);
    let lookups: Vec<_> = (out.iter())
        .filter_map(|o| match o {
            MessagingOutput::Lookup { key, owner, .. } => Some((*key, *owner)),
            _ => None,
        })
        .collect();
    let [(key, owner)] = lookups[..] else {
        panic!("one new lookup: {out:?}");
    };
    let to_provider =
        |o: &MessagingOutput| matches!(o, MessagingOutput::Connect { peer, .. } if *peer == id(3));
    assert!(
        out.iter().any(to_provider),
        "the call goes to the provider known meanwhile: {out:?}"
    );
    m.handle_lookup_started(QueryId(300), owner);
    let unanswered = DhtEvent::ValuesFound {
        query: QueryId(300),
        key,
        records: Vec::new(),
        answered: Vec::new(),
        from_cache: false,
        stats: QueryStats::default(),
    };
    assert!(m.handle_dht_event(due, unanswered).is_none());
    let out = again(&mut m, due + Duration::from_millis(500));
    assert!(
        out.iter()
            .all(|o| !matches!(o, MessagingOutput::Lookup { .. })),
        "no new lookup within the second: {out:?}"
    );
    assert!(
        out.iter().any(to_provider),
        "nobody answered: the provider stays: {out:?}"
    );
}
