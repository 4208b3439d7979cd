//! RPC and pub/sub between nodes in the simulator, over real QUIC with
//! mutual TLS: providers found through the DHT, calls answered, cancelled
//! and failed over; publications routed to every matching subscriber.
#![cfg(feature = "sim")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::epoch;
use macula::id::NodeId;
use macula::node::{Event, NodeConfig};
use macula::pubsub::{Pattern, PubSubEvent, Topic};
use macula::rpc::{
    AnnounceFailure, CallId, CallOptions, CancelReason, RegisterOptions, RpcError, RpcEvent,
};
use macula::sim::{CALL_TIMEOUT, HostId, Link, Mesh, echo};
use macula::wire::ErrorCode;

/// `n` public nodes on 5 ms links losing `loss` of packets, each configured
/// by `configure`, bootstrapped through the first.
fn mesh_with(n: usize, seed: u64, loss: f64, configure: impl Fn(&mut NodeConfig)) -> Mesh {
    let link = Link::with_latency(Duration::from_millis(5)).loss(loss);
    let mut mesh = Mesh::public(n, seed, epoch(), link, |_, config| configure(config));
    assert!(mesh.bootstrap_all(), "bootstrap");
    mesh
}

/// As [`mesh_with`], with the default settings.
fn mesh(n: usize, seed: u64, loss: f64) -> Mesh {
    mesh_with(n, seed, loss, |_| {})
}

/// Subscribes node `i` to `pattern` for each pair.
fn subscribe(mesh: &mut Mesh, patterns: &[(usize, &str)]) {
    for &(i, pattern) in patterns {
        mesh.subscribe(mesh.hosts[i], pattern);
    }
}

/// Node `i` publishes `count` messages on `topic` (payload: the index);
/// returns their ids.
fn publish(mesh: &mut Mesh, i: usize, topic: &Topic, count: u32) -> Vec<u64> {
    (0..count)
        .map(|n| mesh.publish(mesh.hosts[i], topic, n.to_be_bytes().to_vec()))
        .collect()
}

/// Node `i` calls `procedure` with `payload`, every provider running
/// [`echo`]; returns who handled it (host, caller) and the call's result.
fn echo_call(
    mesh: &mut Mesh,
    i: usize,
    procedure: &str,
    payload: &'static [u8],
) -> (Vec<(HostId, NodeId)>, Result<Bytes, RpcError>) {
    let call = mesh.call(mesh.hosts[i], procedure, payload);
    let mut requests = Vec::new();
    let result = mesh.await_call(call, |world, host, event| {
        echo(world, host, event).unwrap();
        if let Event::Rpc(RpcEvent::Request { caller, .. }) = event {
            requests.push((host, *caller));
        }
    });
    (requests, result)
}

#[test]
fn a_call_reaches_a_registered_provider_and_returns_its_reply() {
    let mut mesh = mesh(3, 1, 0.0);
    mesh.register(mesh.hosts[1], "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let (requests, result) = echo_call(&mut mesh, 2, "svc.echo", b"hello");
    assert_eq!(result, Ok(Bytes::from_static(b"echo:hello")));
    assert_eq!(requests, vec![(mesh.hosts[1], mesh.id(mesh.hosts[2]))]);
}

#[test]
fn a_call_of_a_procedure_nobody_serves_fails_with_no_provider() {
    let mut mesh = mesh(3, 2, 0.0);
    let call = mesh.call(mesh.hosts[2], "svc.missing", &b"x"[..]);
    let mut result = None;
    let done = mesh.drive(CALL_TIMEOUT, |_, _, event| match event {
        Event::Rpc(RpcEvent::Completed { call: c, result: r }) if c == call => {
            result = Some(r);
            true
        }
        _ => false,
    });
    assert!(done, "the call completed");
    assert!(
        matches!(result, Some(Err(RpcError::NoProvider { ref procedure, tried: 0 })) if procedure == "svc.missing"),
        "{result:?}"
    );
}

#[test]
fn cancelling_a_call_reaches_the_handler() {
    let mut mesh = mesh(3, 3, 0.0);
    mesh.register(mesh.hosts[1], "svc.slow", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let call = mesh.call(mesh.hosts[2], "svc.slow", &b"wait"[..]);
    let caller = mesh.hosts[2];
    let (mut handled, mut cancelled, mut result) = (None, None, None);
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        match event {
            // The handler holds on; the caller gives up as soon as it runs.
            Event::Rpc(RpcEvent::Request { id, .. }) => {
                handled = Some((host, id));
                world
                    .with_machine(caller, |node, now| node.cancel_call(now, call))
                    .unwrap();
            }
            Event::Rpc(RpcEvent::Cancelled { id, reason }) => cancelled = Some((host, id, reason)),
            Event::Rpc(RpcEvent::Completed { call: c, result: r }) if c == call => result = Some(r),
            _ => {}
        }
        cancelled.is_some() && result.is_some()
    });
    assert!(
        done,
        "both sides ended: {handled:?} {cancelled:?} {result:?}"
    );
    let (host, id) = handled.unwrap();
    assert_eq!(host, mesh.hosts[1]);
    assert_eq!(cancelled, Some((host, id, CancelReason::Caller)));
    assert_eq!(result, Some(Err(RpcError::Cancelled)));
}

/// Runs `count` calls of `svc.once` from node 3 with distinct payloads and
/// the echo handler; returns each call's payload and result, and how often
/// each payload was handled.
fn call_round(
    mesh: &mut Mesh,
    first: u8,
    count: u8,
) -> (
    BTreeMap<Bytes, Result<Bytes, RpcError>>,
    BTreeMap<Bytes, usize>,
) {
    let calls: BTreeMap<CallId, Bytes> = (first..first + count)
        .map(|i| {
            let payload = Bytes::from(vec![i]);
            (
                mesh.call(mesh.hosts[3], "svc.once", payload.clone()),
                payload,
            )
        })
        .collect();
    let (mut runs, mut results) = (BTreeMap::new(), BTreeMap::new());
    let done = mesh.drive(CALL_TIMEOUT * 2, |world, host, event| {
        echo(world, host, &event).unwrap();
        match event {
            Event::Rpc(RpcEvent::Request { payload, .. }) => {
                *runs.entry(payload).or_default() += 1;
            }
            Event::Rpc(RpcEvent::Completed { call, result }) => {
                let payload = calls[&call].clone();
                assert!(
                    results.insert(payload, result).is_none(),
                    "one end per call"
                );
            }
            _ => {}
        }
        results.len() == calls.len()
    });
    assert!(done, "every call ended: {results:?}");
    (results, runs)
}

#[test]
fn calls_fail_over_from_an_offline_provider_and_never_run_a_handler_twice() {
    // Dead connections are noticed within seconds, not the default minute.
    let mut mesh = mesh_with(5, 4, 0.0, |config| {
        config.transport.keep_alive = Duration::from_millis(500);
        config.transport.idle_timeout = Duration::from_secs(3);
    });
    mesh.register(mesh.hosts[1], "svc.once", RegisterOptions::default());
    mesh.register(mesh.hosts[2], "svc.once", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let offline = mesh.id(mesh.hosts[1]);
    mesh.world.set_online(mesh.hosts[1], false);

    // Calls written to the dead provider's connection may have been
    // delivered: they end with `Lost` and are not run elsewhere. The others
    // are answered by the live provider, once.
    let (results, runs) = call_round(&mut mesh, 0, 10);
    for (payload, result) in &results {
        match result {
            Ok(answer) => {
                assert_eq!(answer[5..], payload[..]);
                assert_eq!(runs.get(payload), Some(&1), "{payload:?} ran once");
            }
            Err(RpcError::Lost { provider }) => {
                assert_eq!(*provider, offline);
                assert_eq!(runs.get(payload), None, "{payload:?} was not run elsewhere");
            }
            Err(other) => panic!("{payload:?}: {other}"),
        }
    }

    // Once the provider list is due again (30 s), the next calls go to the
    // live provider known meanwhile and start a new lookup, which finds the
    // dead provider again; it cannot be reached, so the calls sent its way
    // after that move to the live one: every call is answered, once.
    mesh.settle(Duration::from_secs(31));
    for first in [10, 20] {
        let (results, runs) = call_round(&mut mesh, first, 10);
        for (payload, result) in &results {
            let answer = result.as_ref().expect("answered");
            assert_eq!(answer[5..], payload[..]);
            assert_eq!(runs.get(payload), Some(&1), "{payload:?} ran once");
        }
    }
    let stats = mesh.world.machine(mesh.hosts[3]).rpc().stats();
    assert!(
        stats.failovers >= 1,
        "the offline provider was tried: {stats:?}"
    );
}

/// With the default settings (a 60 s idle timeout), a provider that dies under calls in
/// flight is found within the silence limit: the node's data to it stays unacknowledged
/// and its probes unanswered for 1.5 s on this 10 ms round trip, the connection closes
/// (`peer silent`), and every call in flight ends `Lost`. Before the direct connection had
/// a silence watch they all waited out their 30 s timeout.
#[test]
fn calls_in_flight_to_a_dead_provider_end_within_seconds_with_the_defaults() {
    let mut mesh = mesh(4, 4, 0.0);
    mesh.register(mesh.hosts[1], "svc.once", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let (results, _) = call_round(&mut mesh, 0, 1);
    assert!(results.values().all(Result::is_ok), "{results:?}");
    let provider = mesh.id(mesh.hosts[1]);
    mesh.world.set_online(mesh.hosts[1], false);
    let died = mesh.world.now();
    let calls: Vec<CallId> = (1..6u8)
        .map(|i| mesh.call(mesh.hosts[3], "svc.once", vec![i]))
        .collect();
    let mut ended = Vec::new();
    let mut closed = None;
    mesh.drive(CALL_TIMEOUT, |world, _, event| {
        match event {
            Event::Rpc(RpcEvent::Completed { call, result }) if calls.contains(&call) => {
                ended.push((world.now() - died, result));
            }
            Event::Disconnected { peer, cause, .. } if peer == Some(provider) => {
                closed = Some(cause);
            }
            _ => {}
        }
        ended.len() == calls.len()
    });
    assert_eq!(ended.len(), calls.len(), "every call ended: {ended:?}");
    for (after, result) in &ended {
        assert_eq!(result, &Err(RpcError::Lost { provider }));
        assert!(
            *after < Duration::from_secs(3),
            "ended {after:?} after the death"
        );
    }
    let cause = format!("{closed:?}");
    assert!(cause.contains("peer silent"), "{cause}");
    let caller = mesh.world.machine(mesh.hosts[3]);
    assert_eq!(caller.counters().silent_peers, 1);
}

#[test]
fn a_provider_dying_after_taking_a_call_is_not_called_again() {
    let mut mesh = mesh_with(4, 8, 0.0, |config| {
        config.transport.keep_alive = Duration::from_millis(500);
        config.transport.idle_timeout = Duration::from_secs(3);
    });
    mesh.register(mesh.hosts[1], "svc.once", RegisterOptions::default());
    mesh.register(mesh.hosts[2], "svc.once", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let call = mesh.call(mesh.hosts[3], "svc.once", &b"charge"[..]);
    let (mut taken, mut runs, mut result) = (None, 0, None);
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        match event {
            // The provider that takes the call dies before it answers.
            Event::Rpc(RpcEvent::Request { .. }) => {
                runs += 1;
                taken = Some(world.machine(host).node_id());
                world.set_online(host, false);
            }
            Event::Rpc(RpcEvent::Completed { call: c, result: r }) if c == call => {
                result = Some(r);
                return true;
            }
            _ => {}
        }
        false
    });
    assert!(done, "the call ended");
    let provider = taken.expect("a provider took the call");
    assert_eq!(result, Some(Err(RpcError::Lost { provider })));
    // Give a wrong failover time to show itself.
    mesh.drive(Duration::from_secs(5), |_, _, event| {
        runs += usize::from(matches!(event, Event::Rpc(RpcEvent::Request { .. })));
        false
    });
    assert_eq!(runs, 1, "the handler ran once");
}

#[test]
fn publications_reach_every_matching_subscriber_once_and_in_order() {
    let mut mesh = mesh(6, 5, 0.0);
    let patterns = [
        (2, "news.sports"),
        (3, "news.*"),
        (4, "news.#"),
        (5, "weather.*"),
    ];
    subscribe(&mut mesh, &patterns);
    mesh.settle(Duration::from_secs(2));
    let topic = Topic::new("news.sports").unwrap();
    let sent = publish(&mut mesh, 1, &topic, 50);
    let publisher_id = mesh.id(mesh.hosts[1]);
    let mut received: BTreeMap<HostId, Vec<u64>> = BTreeMap::new();
    // Runs the whole time, so late duplicates would be seen too.
    mesh.drive(Duration::from_secs(10), |_, host, event| {
        if let Event::PubSub(PubSubEvent::Message {
            publisher: from,
            message_id,
            topic: t,
            ..
        }) = event
        {
            assert_eq!((from, &t), (publisher_id, &topic));
            received.entry(host).or_default().push(message_id);
        }
        false
    });
    let expected = [2, 3, 4].map(|i| mesh.hosts[i]);
    for host in expected {
        let got = received.get(&host);
        assert_eq!(
            got,
            Some(&sent),
            "{host:?}: every message in order, once each"
        );
    }
    assert!(
        !received.contains_key(&mesh.hosts[5]),
        "weather.* got nothing"
    );
}

/// What `host` delivered of `publisher`'s messages within 5 s, and how many
/// QUIC datagrams it received meanwhile.
fn delivered_and_datagrams(mesh: &mut Mesh, host: HostId, publisher: NodeId) -> (Vec<u64>, u64) {
    let before = mesh.node(host).counters().quic_datagrams;
    let mut delivered = Vec::new();
    mesh.drive(Duration::from_secs(5), |_, at, event| {
        if let Event::PubSub(PubSubEvent::Message {
            publisher: from,
            message_id,
            ..
        }) = event
            && at == host
            && from == publisher
        {
            delivered.push(message_id);
        }
        false
    });
    let datagrams = mesh.node(host).counters().quic_datagrams - before;
    (delivered, datagrams)
}

#[test]
fn a_batch_of_publications_shares_packets_and_arrives_in_order() {
    let mut mesh = mesh(3, 6, 0.0);
    subscribe(&mut mesh, &[(2, "ticks")]);
    mesh.settle(Duration::from_secs(2));
    let topic = Topic::new("ticks").unwrap();
    let (publisher, subscriber) = (mesh.hosts[1], mesh.hosts[2]);
    let publisher_id = mesh.id(publisher);
    // The first publication looks the subscribers up and connects.
    let first = publish(&mut mesh, 1, &topic, 1);
    let (got, _) = delivered_and_datagrams(&mut mesh, subscriber, publisher_id);
    assert_eq!(got, first);
    // 50 one by one at the same instant: each its own input, its own packet.
    let singles = publish(&mut mesh, 1, &topic, 50);
    let (got, single_datagrams) = delivered_and_datagrams(&mut mesh, subscriber, publisher_id);
    assert_eq!(got, singles);
    // 50 in one batch: one input, the frames share packets.
    let payloads: Vec<Bytes> = (0..50u32)
        .map(|n| Bytes::from(n.to_be_bytes().to_vec()))
        .collect();
    let batch: Vec<u64> = mesh.world.with_machine(publisher, |node, now| {
        let results = node.publish_batch(now, &topic, payloads);
        results.into_iter().map(|r| r.expect("published")).collect()
    });
    let (got, batch_datagrams) = delivered_and_datagrams(&mut mesh, subscriber, publisher_id);
    assert_eq!(got, batch, "every one, once, in order");
    eprintln!(
        "datagrams at the subscriber: {single_datagrams} one by one, {batch_datagrams} batched"
    );
    assert!(
        batch_datagrams * 5 <= single_datagrams,
        "{batch_datagrams} batched against {single_datagrams} one by one"
    );
}

/// Drives until every one of `calls` ended, answering with [`echo`], then 1 s
/// more (every acknowledgement sent); how many datagrams from `caller`
/// reached `provider` within 15 ms of `since` (the trace records arrivals,
/// 10 ms after sending over the two 5 ms links; anything the caller sends in
/// answer to the provider arrives 30 ms after at the earliest): the packets
/// the calls left in.
fn call_packets(
    mesh: &mut Mesh,
    calls: &[CallId],
    since: Duration,
    [caller, provider]: [HostId; 2],
) -> usize {
    let mut ended = Vec::new();
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        echo(world, host, &event).unwrap();
        if let Event::Rpc(RpcEvent::Completed { call, result }) = event {
            assert_eq!(result, Ok(Bytes::from_static(b"echo:x")));
            ended.push(call);
        }
        ended.len() == calls.len()
    });
    assert!(done, "every call answered");
    mesh.world.run_for(Duration::from_secs(1));
    let [from, to] = [caller, provider].map(|h| mesh.world.host_addr(h).ip());
    let window = since..since + Duration::from_millis(15);
    (mesh.world.trace().entries().iter())
        .filter(|e| window.contains(&e.elapsed) && e.size > 0)
        .filter(|e| e.source.ip() == from && e.destination.ip() == to)
        .count()
}

#[test]
fn calls_made_in_one_batch_share_packets() {
    let mut mesh = mesh(3, 7, 0.0);
    let hosts = [mesh.hosts[2], mesh.hosts[1]];
    mesh.register(hosts[1], "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let (_, first) = echo_call(&mut mesh, 2, "svc.echo", b"x");
    assert!(first.is_ok(), "connected: {first:?}");
    mesh.world.run_for(Duration::from_secs(1));
    let since = mesh.world.elapsed();
    let singles: Vec<CallId> = (0..30)
        .map(|_| mesh.call(hosts[0], "svc.echo", Bytes::from_static(b"x")))
        .collect();
    let one_by_one = call_packets(&mut mesh, &singles, since, hosts);
    let since = mesh.world.elapsed();
    let batched: Vec<CallId> = mesh
        .world
        .with_machine(hosts[0], |node, now| {
            node.batch(now, |node| {
                (0..30)
                    .map(|_| {
                        let payload = Bytes::from_static(b"x");
                        node.call(now, "svc.echo", payload, CALL_TIMEOUT, Default::default())
                    })
                    .collect::<Result<_, _>>()
            })
        })
        .expect("calls made");
    let in_batch = call_packets(&mut mesh, &batched, since, hosts);
    eprintln!("packets the 30 calls left in: {one_by_one} one by one, {in_batch} in one batch");
    assert!(one_by_one >= 30, "one packet per call: {one_by_one}");
    assert!(in_batch <= 2, "the batch shares packets: {in_batch}");
}

#[test]
fn local_subscribers_of_one_pattern_share_one_subscription_until_the_last_goes() {
    let mut mesh = mesh(3, 12, 0.0);
    let subscriber = mesh.hosts[2];
    let first = mesh.subscribe(subscriber, "news.*");
    let second = mesh.subscribe(subscriber, "news.*");
    assert_ne!(first, second);
    mesh.settle(Duration::from_secs(2));
    let topic = Topic::new("news.sports").unwrap();
    publish(&mut mesh, 1, &topic, 1);
    let mut arrived = 0;
    mesh.drive(Duration::from_secs(3), |_, host, event| {
        if host == subscriber && matches!(event, Event::PubSub(PubSubEvent::Message { .. })) {
            arrived += 1;
        }
        false
    });
    assert_eq!(arrived, 1, "one subscription on the wire: the message once");
    let node = mesh.node(subscriber);
    let for_whom: Vec<_> = node.subscribers_of(&topic).collect();
    assert_eq!(for_whom, [first, second], "handed to both subscribers");
    let other = Topic::new("weather.today").unwrap();
    assert_eq!(node.subscribers_of(&other).count(), 0);

    let unsubscribe = |mesh: &mut Mesh, id| {
        (mesh.world).with_machine(subscriber, |node, now| node.unsubscribe(now, id))
    };
    assert!(unsubscribe(&mut mesh, first));
    assert!(
        mesh.node(subscriber).pubsub().subscribed(),
        "the second subscriber keeps the subscription"
    );
    assert!(!unsubscribe(&mut mesh, first), "unsubscribed once only");
    assert!(unsubscribe(&mut mesh, second));
    assert!(
        !mesh.node(subscriber).pubsub().subscribed(),
        "the last one withdrew it"
    );
    // Withdrawn on the wire too: a new publication no longer arrives.
    mesh.settle(Duration::from_secs(2));
    let mut late = 0;
    publish(&mut mesh, 1, &topic, 1);
    mesh.drive(Duration::from_secs(3), |_, host, event| {
        if host == subscriber && matches!(event, Event::PubSub(PubSubEvent::Message { .. })) {
            late += 1;
        }
        false
    });
    assert_eq!(late, 0);
}

#[test]
fn a_procedure_is_registered_once_per_node() {
    let mut mesh = mesh(2, 13, 0.0);
    let host = mesh.hosts[1];
    mesh.register(host, "svc.once", RegisterOptions::default());
    let again = (mesh.world).with_machine(host, |node, now| {
        node.register(now, "svc.once", RegisterOptions::default())
    });
    assert_eq!(again, Err(RpcError::AlreadyRegistered("svc.once".into())));
    let unregistered =
        (mesh.world).with_machine(host, |node, now| node.unregister(now, "svc.once"));
    assert!(unregistered);
    mesh.register(host, "svc.once", RegisterOptions::default());
}

/// The sizes: 20 nodes on links losing 5% of packets.
#[test]
fn a_thousand_calls_over_lossy_links_all_end_and_no_handler_runs_twice() {
    let mut mesh = mesh(20, 6, 0.05);
    for provider in 1..=3 {
        mesh.register(
            mesh.hosts[provider],
            "svc.scale",
            RegisterOptions::default(),
        );
    }
    mesh.settle(Duration::from_secs(5));
    let mut calls = BTreeMap::new();
    for n in 0..1000u32 {
        let caller = 4 + n as usize % 16;
        let payload = Bytes::from(n.to_be_bytes().to_vec());
        calls.insert(
            (caller, mesh.call(mesh.hosts[caller], "svc.scale", payload)),
            n,
        );
    }
    let (mut runs, mut results) = (BTreeMap::<Bytes, usize>::new(), BTreeMap::new());
    let hosts = mesh.hosts.clone();
    let done = mesh.drive(
        CALL_TIMEOUT + Duration::from_secs(5),
        |world, host, event| {
            echo(world, host, &event).unwrap();
            match event {
                Event::Rpc(RpcEvent::Request { payload, .. }) => {
                    *runs.entry(payload).or_default() += 1;
                }
                Event::Rpc(RpcEvent::Completed { call, result }) => {
                    let caller = hosts.iter().position(|h| *h == host).unwrap();
                    assert!(results.insert((caller, call), result).is_none());
                }
                _ => {}
            }
            results.len() == calls.len()
        },
    );
    assert!(done, "{} of {} calls ended", results.len(), calls.len());
    let answered = results.values().filter(|r| r.is_ok()).count();
    eprintln!("answered {answered} of {}", calls.len());
    for (key, n) in &calls {
        if let Ok(answer) = &results[key] {
            assert_eq!(&answer[5..], n.to_be_bytes());
        }
    }
    assert!(runs.values().all(|&r| r == 1), "a handler ran twice");
    assert!(answered >= 990, "only {answered} answered");
}

#[test]
fn a_thousand_publications_over_lossy_links_reach_five_subscribers_in_order() {
    let mut mesh = mesh(20, 7, 0.05);
    let patterns = [
        (2, "metrics.cpu.load"),
        (5, "metrics.cpu.*"),
        (8, "metrics.#"),
        (11, "metrics.*.load"),
        (14, "#"),
    ];
    subscribe(&mut mesh, &patterns);
    mesh.settle(Duration::from_secs(5));
    let publisher = mesh.hosts[17];
    let sent = publish(
        &mut mesh,
        17,
        &Topic::new("metrics.cpu.load").unwrap(),
        1000,
    );
    let mut received: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let hosts = mesh.hosts.clone();
    mesh.drive(Duration::from_secs(30), |_, host, event| {
        if let Event::PubSub(PubSubEvent::Message { message_id, .. }) = event {
            let at = hosts.iter().position(|h| *h == host).unwrap();
            received.entry(at).or_default().push(message_id);
        }
        false
    });
    for (i, _) in patterns {
        let got = received.get(&i).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got, sent.as_slice(), "subscriber {i}: all, in order, once");
    }
    assert_eq!(received.len(), patterns.len(), "nobody else: {received:?}");
    let stats = mesh.world.machine(publisher).pubsub().stats();
    assert_eq!(
        stats.dropped_slow + stats.dropped_disconnected,
        0,
        "{stats:?}"
    );
}

#[test]
fn a_subscriber_that_goes_away_stops_receiving_and_resumes_when_back() {
    let mut mesh = mesh_with(4, 9, 0.0, |config| {
        config.transport.keep_alive = Duration::from_millis(500);
        config.transport.idle_timeout = Duration::from_secs(3);
    });
    subscribe(&mut mesh, &[(2, "alerts.*")]);
    mesh.settle(Duration::from_secs(2));
    let topic = Topic::new("alerts.disk").unwrap();
    let subscriber = mesh.hosts[2];
    let mut received = Vec::new();
    let mut collect = |mesh: &mut Mesh, duration| {
        mesh.drive(duration, |_, host, event| {
            if let Event::PubSub(PubSubEvent::Message { payload, .. }) = event {
                assert_eq!(host, subscriber);
                received.push(u32::from_be_bytes(payload[..].try_into().unwrap()));
            }
            false
        });
    };
    let before = publish(&mut mesh, 1, &topic, 10);
    collect(&mut mesh, Duration::from_secs(2));
    mesh.world.set_online(subscriber, false);
    let away = publish(&mut mesh, 1, &topic, 10);
    collect(&mut mesh, Duration::from_secs(10));
    mesh.world.set_online(subscriber, true);
    collect(&mut mesh, Duration::from_secs(10));
    let after = publish(&mut mesh, 1, &topic, 10);
    collect(&mut mesh, Duration::from_secs(5));
    assert_eq!((before.len(), away.len(), after.len()), (10, 10, 10));
    // Payloads are the index within each burst: the first and the last
    // burst arrive whole and in order, nothing of the one sent while away.
    let burst: Vec<u32> = (0..10).collect();
    assert_eq!(received, [burst.clone(), burst].concat());
}

#[test]
fn a_subscriber_that_stops_reading_does_not_hold_up_the_others() {
    // A small send buffer, so a peer that acknowledges nothing soon stops
    // taking frames.
    let mut mesh = mesh_with(4, 10, 0.0, |config| {
        config.transport.send_window = 64 << 10;
    });
    subscribe(&mut mesh, &[(2, "feed.#"), (3, "feed.#")]);
    mesh.settle(Duration::from_secs(2));
    let topic = Topic::new("feed.prices").unwrap();
    let mut sent = publish(&mut mesh, 1, &topic, 10);
    mesh.settle(Duration::from_secs(1));
    let (fast, slow) = (mesh.hosts[2], mesh.hosts[3]);
    mesh.world.set_online(slow, false);
    let publisher = mesh.hosts[1];
    let payload = Bytes::from(vec![7; 1000]);
    let mut received = Vec::new();
    // 3,000 messages of 1 kB at 3 MB/s, then time to drain.
    for burst in 0..101 {
        if burst < 100 {
            for _ in 0..30 {
                let (topic, payload) = (topic.clone(), payload.clone());
                let id = mesh
                    .world
                    .with_machine(publisher, |node, now| node.publish(now, topic, payload));
                sent.push(id.unwrap());
            }
        }
        let pause = if burst < 100 { 10 } else { 5000 };
        mesh.drive(Duration::from_millis(pause), |_, host, event| {
            if let Event::PubSub(PubSubEvent::Message { message_id, .. }) = event {
                assert_eq!(host, fast, "the slow subscriber is offline");
                received.push(message_id);
            }
            false
        });
    }
    assert_eq!(received, sent[10..], "the fast subscriber got everything");
    let node = mesh.world.machine(publisher);
    let slow_id = mesh.world.machine(slow).node_id();
    assert!(node.pubsub().queued_for(&slow_id) <= 1024);
    assert!(
        node.pubsub().stats().dropped_slow > 0,
        "the oldest were dropped"
    );
}

#[test]
fn calls_beyond_the_stream_limit_wait_for_streams_and_are_all_answered() {
    let mut mesh = mesh(3, 11, 0.0);
    mesh.register(mesh.hosts[1], "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    // More calls at once than the provider allows streams (100).
    let calls: BTreeMap<CallId, u32> = (0..300u32)
        .map(|n| {
            (
                mesh.call(mesh.hosts[2], "svc.echo", n.to_be_bytes().to_vec()),
                n,
            )
        })
        .collect();
    let mut results = BTreeMap::new();
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        echo(world, host, &event).unwrap();
        if let Event::Rpc(RpcEvent::Completed { call, result }) = event {
            results.insert(call, result);
        }
        results.len() == calls.len()
    });
    assert!(done, "{} of {} calls ended", results.len(), calls.len());
    for (call, n) in &calls {
        let answer = results[call].as_ref().expect("answered");
        assert_eq!(answer[5..], n.to_be_bytes());
    }
}

#[test]
fn a_node_calls_a_procedure_it_serves_itself() {
    let mut mesh = mesh(3, 21, 0.0);
    mesh.register(mesh.hosts[1], "svc.self", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let (requests, result) = echo_call(&mut mesh, 1, "svc.self", b"me");
    assert_eq!(result, Ok(Bytes::from_static(b"echo:me")));
    assert_eq!(requests, vec![(mesh.hosts[1], mesh.id(mesh.hosts[1]))]);
    let stats = mesh.world.machine(mesh.hosts[1]).rpc().stats();
    assert_eq!((stats.attempts, stats.handled), (1, 1), "{stats:?}");
}

#[test]
fn one_republish_period_stores_each_announced_record_once() {
    let mut mesh = mesh(4, 22, 0.0);
    mesh.register(mesh.hosts[1], "svc.echo", RegisterOptions::default());
    subscribe(&mut mesh, &[(2, "news.*")]);
    mesh.settle(Duration::from_secs(2));
    let stores = |mesh: &Mesh, i: usize| mesh.world.machine(mesh.hosts[i]).dht().metrics().stores;
    // Each node stores two records: what it announced (a provider or a
    // subscriber record) and its peer record (PROTOCOL §12.3).
    let before = [stores(&mesh, 1), stores(&mesh, 2)];
    assert_eq!(before, [2, 2], "each record announced once");
    // One DHT republish interval (240 s) and a little more, short of two.
    mesh.settle(Duration::from_secs(250));
    let after = [stores(&mesh, 1), stores(&mesh, 2)];
    assert_eq!(after, [4, 4], "one STORE round per record per period");
}

#[test]
fn failed_registrations_and_subscriptions_are_reported_and_retried_until_stored() {
    let mut mesh = mesh_with(3, 23, 0.0, |config| {
        config.transport.keep_alive = Duration::from_millis(500);
        config.transport.idle_timeout = Duration::from_secs(3);
    });
    // Node 1 is alone: no store can reach a quorum.
    mesh.world.set_online(mesh.hosts[0], false);
    mesh.world.set_online(mesh.hosts[2], false);
    mesh.register(mesh.hosts[1], "svc.lonely", RegisterOptions::default());
    subscribe(&mut mesh, &[(1, "lonely.*")]);
    let (mut registration, mut subscription) = (Vec::new(), Vec::new());
    let done = mesh.drive(Duration::from_secs(60), |_, _, event| {
        match event {
            Event::Rpc(RpcEvent::RegistrationFailed { procedure, failed }) => {
                registration.push((procedure, failed.reason, failed.failures))
            }
            Event::PubSub(PubSubEvent::SubscriptionFailed { patterns, failed }) => {
                subscription.push((patterns, failed.failures))
            }
            _ => {}
        }
        registration.len() >= 2 && subscription.len() >= 2
    });
    assert!(done, "failures reported: {registration:?} {subscription:?}");
    assert_eq!(registration[0].0, "svc.lonely");
    assert!(
        matches!(registration[0].1, AnnounceFailure::Quorum { acked: 0, .. }),
        "{registration:?}"
    );
    assert_eq!(
        (registration[0].2, registration[1].2),
        (1, 2),
        "retried, counting"
    );
    let lonely = Pattern::new("lonely.*").unwrap();
    assert_eq!(subscription[0], (vec![lonely.clone()], 1));
    assert_eq!(subscription[1], (vec![lonely], 2));

    // The others come back: a retry stores both records, the failures stop
    // and the procedure can be called.
    mesh.world.set_online(mesh.hosts[0], true);
    mesh.world.set_online(mesh.hosts[2], true);
    count_failures(&mut mesh, Duration::from_secs(120));
    let (_, result) = echo_call(&mut mesh, 2, "svc.lonely", b"found");
    assert_eq!(result, Ok(Bytes::from_static(b"echo:found")));
    // A whole republish period passes without a failure.
    assert_eq!(count_failures(&mut mesh, Duration::from_secs(300)), 0);
}

/// Registration and subscription failures reported within `within`.
fn count_failures(mesh: &mut Mesh, within: Duration) -> usize {
    let mut failures = 0;
    mesh.drive(within, |_, _, event| {
        failures += usize::from(matches!(
            event,
            Event::Rpc(RpcEvent::RegistrationFailed { .. })
                | Event::PubSub(PubSubEvent::SubscriptionFailed { .. })
        ));
        false
    });
    failures
}

#[test]
fn an_idempotent_call_moves_on_when_its_provider_dies_mid_call() {
    // Default transport timers: the dead connection itself would only be
    // noticed after the 60 s idle timeout, past the call's 30 s.
    let mut mesh = mesh(4, 24, 0.0);
    let idempotent = RegisterOptions {
        idempotent: true,
        ..RegisterOptions::default()
    };
    mesh.register(mesh.hosts[1], "svc.retry", idempotent);
    mesh.register(mesh.hosts[2], "svc.retry", idempotent);
    mesh.settle(Duration::from_secs(2));
    let call = mesh.call(mesh.hosts[3], "svc.retry", &b"again"[..]);
    let mut handled_by = Vec::new();
    let result = mesh.await_call(call, |world, host, event| {
        // The first provider to take it dies without answering; the next
        // one answers.
        if let Event::Rpc(RpcEvent::Request { id, .. }) = event {
            handled_by.push(host);
            if handled_by.len() == 1 {
                world.set_online(host, false);
            } else {
                let answer = Bytes::from_static(b"done");
                world
                    .with_machine(host, |node, now| node.reply(now, *id, Ok(answer)))
                    .unwrap();
            }
        }
    });
    assert_eq!(result, Ok(Bytes::from_static(b"done")));
    assert_eq!(handled_by.len(), 2, "{handled_by:?}");
    assert_ne!(handled_by[0], handled_by[1], "moved to the other provider");
    let stats = mesh.world.machine(mesh.hosts[3]).rpc().stats();
    assert_eq!((stats.attempts, stats.failovers), (2, 1), "{stats:?}");
}

/// `len` bytes that differ from one position to the next.
fn patterned(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>())
}

#[test]
fn a_five_mib_call_and_reply_stream_intact_over_a_lossy_link() {
    let mut mesh = mesh(3, 25, 0.02);
    mesh.register(mesh.hosts[1], "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let payload = patterned(5 << 20);
    let call = mesh.call(mesh.hosts[2], "svc.echo", payload.clone());
    let mut handled = Vec::new();
    let result = mesh.await_call(call, |world, host, event| {
        if let Event::Rpc(RpcEvent::Request { payload, .. }) = event {
            handled.push(payload.len());
        }
        echo(world, host, event).unwrap();
    });
    assert_eq!(handled, vec![5 << 20], "the handler got the whole payload");
    let answer = result.expect("answered");
    assert_eq!(answer.len(), (5 << 20) + 5);
    assert!(
        answer[..5] == *b"echo:" && answer[5..] == payload[..],
        "intact"
    );
    for host in &mesh.hosts {
        assert_eq!(mesh.world.machine(*host).counters().protocol_errors, 0);
    }
}

/// The call failed because a payload was over the receiver's limit.
fn assert_refused_too_large(result: &Result<Bytes, RpcError>) {
    let code = match result {
        Err(RpcError::Remote { code, .. }) => Some(*code),
        _ => None,
    };
    assert_eq!(code, Some(ErrorCode::TooLarge), "{result:?}");
}

/// Three nodes, node 1 serving `svc.echo`; node `large` takes payloads of
/// up to 64 MiB, the others the default 16 MiB.
fn echo_mesh_with_one_large_limit(seed: u64, large: usize) -> Mesh {
    let link = Link::with_latency(Duration::from_millis(5));
    let mut mesh = Mesh::public(3, seed, epoch(), link, |i, config| {
        if i == large {
            config.rpc.max_payload = 64 << 20;
        }
    });
    assert!(mesh.bootstrap_all(), "bootstrap");
    mesh.register(mesh.hosts[1], "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    mesh
}

#[test]
fn a_payload_over_the_limit_is_refused_before_it_is_sent_or_read() {
    // Node 2 may send up to 64 MiB; the provider takes the default 16.
    let mut mesh = echo_mesh_with_one_large_limit(26, 2);
    let limit = 16 << 20;
    let over = mesh.world.with_machine(mesh.hosts[1], |node, now| {
        node.call(
            now,
            "svc.echo",
            patterned(limit + 1),
            CALL_TIMEOUT,
            CallOptions::default(),
        )
    });
    assert_eq!(
        over,
        Err(RpcError::TooLarge {
            size: limit + 1,
            max: limit
        })
    );

    // Node 2 sends 17 MiB anyway: node 1 refuses it on its declared length,
    // never runs the handler and never buffers the payload.
    let call = mesh.call(mesh.hosts[2], "svc.echo", patterned(17 << 20));
    let (mut handled, mut peak) = (0, 0);
    let provider = mesh.hosts[1];
    let result = mesh.await_call(call, |world, host, event| {
        handled += usize::from(matches!(event, Event::Rpc(RpcEvent::Request { .. })));
        peak = peak.max(world.machine(provider).buffered_bytes());
        echo(world, host, event).unwrap();
    });
    assert_refused_too_large(&result);
    assert_eq!(handled, 0);
    assert!(peak <= 2 << 20, "the provider held {peak} bytes");
}

#[test]
fn a_reply_over_the_callers_limit_fails_the_call_typed() {
    // Node 1 may answer with up to 64 MiB; node 2 takes 16.
    let mut mesh = echo_mesh_with_one_large_limit(27, 1);
    mesh.register(mesh.hosts[1], "svc.big", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let call = mesh.call(mesh.hosts[2], "svc.big", &b"17 MiB please"[..]);
    let result = mesh.await_call(call, |world, host, event| {
        if let Event::Rpc(RpcEvent::Request { id, .. }) = event {
            let answer = patterned(17 << 20);
            world
                .with_machine(host, |node, now| node.reply(now, *id, Ok(answer)))
                .unwrap();
        }
    });
    assert_refused_too_large(&result);
    // The connection survives: a normal call still goes through.
    let (_, result) = echo_call(&mut mesh, 2, "svc.echo", b"small");
    assert_eq!(result, Ok(Bytes::from_static(b"echo:small")));
    for host in &mesh.hosts {
        assert_eq!(mesh.world.machine(*host).counters().protocol_errors, 0);
    }
}

#[test]
fn a_payload_of_exactly_the_limit_streams_and_a_second_one_without_room_is_refused_typed() {
    let mut mesh = mesh(3, 28, 0.0);
    mesh.register(mesh.hosts[1], "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    // 16 MiB, the default limit, and 1 MiB at the same time: the provider's
    // room for payloads being reassembled (the limit) holds the first only,
    // so the second is refused `overloaded` before its handler runs.
    let limit = 16 << 20;
    let whole = mesh.call(mesh.hosts[2], "svc.echo", patterned(limit));
    let second = mesh.call(mesh.hosts[2], "svc.echo", patterned(2 << 20));
    let (mut results, mut handled) = (BTreeMap::new(), Vec::new());
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        if let Event::Rpc(RpcEvent::Request { id, payload, .. }) = &event {
            handled.push(payload.len());
            let answer = Bytes::from_static(b"got it");
            world
                .with_machine(host, |node, now| node.reply(now, *id, Ok(answer)))
                .unwrap();
        }
        if let Event::Rpc(RpcEvent::Completed { call, result }) = event {
            results.insert(call, result);
        }
        results.len() == 2
    });
    assert!(done, "both calls ended: {results:?}");
    assert_eq!(results[&whole], Ok(Bytes::from_static(b"got it")));
    assert!(
        matches!(
            results[&second],
            Err(RpcError::Overloaded {
                provider: Some(_),
                ..
            })
        ),
        "{results:?}"
    );
    assert_eq!(handled, vec![limit]);
}

#[test]
fn two_nodes_calling_each_other_at_once_lose_no_call() {
    // Idle connections close after a second, so the two start unconnected
    // and both dial at once; the pool keeps one connection on both sides
    // and the other is closed only by its dialer once its calls are done.
    let mut mesh = mesh_with(3, 31, 0.0, |config| {
        config.pool.idle_ttl = Duration::from_secs(1);
    });
    mesh.register(mesh.hosts[1], "svc.one", RegisterOptions::default());
    mesh.register(mesh.hosts[2], "svc.two", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    // One call each way first: each caller knows its provider from then on,
    // so the calls below leave right behind the CONNECT of their dial.
    for (i, procedure) in [(1, "svc.two"), (2, "svc.one")] {
        assert!(echo_call(&mut mesh, i, procedure, b"warm").1.is_ok());
    }
    mesh.settle(Duration::from_secs(3));
    let (one, two) = (mesh.id(mesh.hosts[1]), mesh.id(mesh.hosts[2]));
    assert_eq!(
        mesh.world.machine(mesh.hosts[1]).pool().peer_state(&two),
        None
    );
    assert_eq!(
        mesh.world.machine(mesh.hosts[2]).pool().peer_state(&one),
        None
    );
    let mut calls = Vec::new();
    for n in 0..50u32 {
        calls.push((
            mesh.hosts[1],
            mesh.call(mesh.hosts[1], "svc.two", n.to_be_bytes().to_vec()),
        ));
        calls.push((
            mesh.hosts[2],
            mesh.call(mesh.hosts[2], "svc.one", n.to_be_bytes().to_vec()),
        ));
    }
    let mut results = BTreeMap::new();
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        match event {
            // A call whose connection went away cannot be answered.
            Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
                let _ = world.with_machine(host, |node, now| node.reply(now, id, Ok(payload)));
            }
            Event::Rpc(RpcEvent::Completed { call, result }) => {
                results.insert((host, call), result);
            }
            _ => {}
        }
        results.len() == calls.len()
    });
    assert!(done, "{} of {} calls ended", results.len(), calls.len());
    let failed: Vec<_> = results.values().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let duplicates: u64 = [1, 2]
        .iter()
        .map(|i| {
            mesh.world
                .machine(mesh.hosts[*i])
                .pool()
                .metrics()
                .closed_duplicate
        })
        .sum();
    assert!(duplicates > 0, "both ends dialed");
}
