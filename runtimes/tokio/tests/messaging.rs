//! RPC and pub/sub through the `MaculaNode` API between nodes on real
//! loopback UDP sockets: async handlers, typed call errors, cancellation by
//! dropping a call, wildcard subscriptions, unsubscribing by drop and the
//! per-procedure concurrency limit.

use std::time::Duration;

use bytes::Bytes;
use macula::id::RecordKind;
use macula::node::Event;
use macula::pubsub::PubSubEvent;
use macula::rpc::RpcError;
use macula::wire::ErrorCode;
use macula_tokio::{
    CallError, CallOptions, HandlerError, MaculaConfig, MaculaNode, ProcedureOptions, Publication,
    RegisterError, Request, Subscription,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

// Shared by the test crates; this one uses a part.
#[allow(dead_code)]
mod common;
use common::{LIMIT, bind, join, realm, visible};

/// `n` nodes on loopback, every one bootstrapped from the first. The first
/// is the observer: it keeps no DHT cache, so it can poll for records until
/// they arrive; the tests never call or publish from it.
async fn mesh(n: usize) -> Vec<MaculaNode> {
    let mut observer = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    observer.node.dht.cache_ttl = Duration::ZERO;
    let mut nodes = vec![MaculaNode::bind(observer).await.unwrap()];
    for _ in 1..n {
        let node = bind("127.0.0.1:0").await;
        join(&node, nodes[0].contact()).await;
        nodes.push(node);
    }
    nodes
}

/// An echo handler that prefixes `echo:`.
async fn echo(request: Request) -> Result<Bytes, HandlerError> {
    Ok(Bytes::from(
        [b"echo:".as_slice(), &request.payload].concat(),
    ))
}

/// `caller` calls `procedure` with the default options, bounded by [`LIMIT`].
async fn call(
    caller: &MaculaNode,
    procedure: &str,
    payload: &'static [u8],
) -> Result<Bytes, CallError> {
    let payload = Bytes::from_static(payload);
    let called = caller.call(procedure, payload, CallOptions::default());
    timeout(LIMIT, called)
        .await
        .expect("the call ended in time")
}

#[tokio::test]
async fn a_registered_handler_answers_calls_from_other_nodes() {
    let nodes = mesh(4).await;
    let serving = nodes[1]
        .register("svc.echo", ProcedureOptions::default(), echo)
        .await
        .unwrap();
    assert_eq!(serving.procedure(), "svc.echo");
    visible(&nodes[0], RecordKind::Rpc, "svc.echo", 1).await;
    for caller in &nodes[2..] {
        for round in 0..3 {
            let reply = call(caller, "svc.echo", b"hello").await;
            assert_eq!(
                reply,
                Ok(Bytes::from_static(b"echo:hello")),
                "round {round}"
            );
        }
    }
    // The handler sees who calls.
    let (seen, mut callers) = mpsc::unbounded_channel();
    let _whoami = nodes[1]
        .register(
            "svc.whoami",
            ProcedureOptions::default(),
            move |request: Request| {
                let seen = seen.clone();
                async move {
                    seen.send(request.caller).unwrap();
                    Ok(Bytes::new())
                }
            },
        )
        .await
        .unwrap();
    visible(&nodes[0], RecordKind::Rpc, "svc.whoami", 1).await;
    call(&nodes[3], "svc.whoami", b"").await.unwrap();
    assert_eq!(callers.recv().await, Some(nodes[3].node_id()));
}

#[tokio::test]
async fn a_failing_handler_gives_the_caller_a_typed_remote_error() {
    let nodes = mesh(3).await;
    let _serving = nodes[1]
        .register(
            "svc.fail",
            ProcedureOptions::default(),
            |_: Request| async { Err::<Bytes, _>(HandlerError::failed("disk on fire")) },
        )
        .await
        .unwrap();
    visible(&nodes[0], RecordKind::Rpc, "svc.fail", 1).await;
    let failed = call(&nodes[2], "svc.fail", b"x").await;
    assert_eq!(
        failed,
        Err(CallError::Rpc(RpcError::Remote {
            provider: nodes[1].node_id(),
            code: ErrorCode::RemoteError,
            message: "disk on fire".into(),
        }))
    );
}

#[tokio::test]
async fn a_handler_that_panics_answers_with_an_error_and_frees_its_slot() {
    let nodes = mesh(3).await;
    let options = ProcedureOptions {
        max_concurrent: 1,
        ..ProcedureOptions::default()
    };
    let _serving = nodes[1]
        .register("svc.panics", options, |request: Request| async move {
            assert!(!request.payload.is_empty(), "the handler gives up");
            Ok(request.payload)
        })
        .await
        .unwrap();
    visible(&nodes[0], RecordKind::Rpc, "svc.panics", 1).await;
    let failed = call(&nodes[2], "svc.panics", b"").await;
    assert!(
        matches!(
            failed,
            Err(CallError::Rpc(RpcError::Remote {
                code: ErrorCode::RemoteError,
                ..
            }))
        ),
        "{failed:?}"
    );
    // Its one slot is free again, and the provider still serves.
    assert_eq!(
        call(&nodes[2], "svc.panics", b"ok").await,
        Ok(Bytes::from_static(b"ok"))
    );
}

#[tokio::test]
async fn a_call_nobody_serves_fails_with_no_provider_and_a_slow_one_times_out() {
    let nodes = mesh(3).await;
    let missing = call(&nodes[2], "svc.missing", b"x").await;
    assert!(
        matches!(missing, Err(CallError::Rpc(RpcError::NoProvider { ref procedure, tried: 0 })) if procedure == "svc.missing"),
        "{missing:?}"
    );

    let _slow = nodes[1]
        .register(
            "svc.slow",
            ProcedureOptions::default(),
            |request: Request| async move {
                request.cancelled().await;
                Ok(Bytes::new())
            },
        )
        .await
        .unwrap();
    visible(&nodes[0], RecordKind::Rpc, "svc.slow", 1).await;
    let options = CallOptions::with_timeout(Duration::from_millis(500));
    let slow = nodes[2].call("svc.slow", Bytes::new(), options);
    let slow = timeout(LIMIT, slow).await.expect("the call ended in time");
    assert!(
        matches!(slow, Err(CallError::Rpc(RpcError::Timeout { ref procedure, after })) if procedure == "svc.slow" && after == Duration::from_millis(500)),
        "{slow:?}"
    );
}

#[tokio::test]
async fn dropping_a_call_future_cancels_the_handler() {
    let nodes = mesh(3).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (cancelled_tx, mut cancelled) = mpsc::unbounded_channel();
    let _serving = nodes[1]
        .register(
            "svc.wait",
            ProcedureOptions::default(),
            move |request: Request| {
                let (started_tx, cancelled_tx) = (started_tx.clone(), cancelled_tx.clone());
                async move {
                    started_tx.send(request.payload.clone()).unwrap();
                    request.cancelled().await;
                    cancelled_tx.send(request.payload.clone()).unwrap();
                    Ok(Bytes::new())
                }
            },
        )
        .await
        .unwrap();
    visible(&nodes[0], RecordKind::Rpc, "svc.wait", 1).await;

    let caller = nodes[2].clone();
    let call = tokio::spawn(async move {
        caller
            .call(
                "svc.wait",
                Bytes::from_static(b"job-1"),
                CallOptions::default(),
            )
            .await
    });
    let running = timeout(LIMIT, started.recv())
        .await
        .expect("the handler started");
    assert_eq!(running, Some(Bytes::from_static(b"job-1")));
    call.abort(); // drops the call future
    let stopped = timeout(LIMIT, cancelled.recv())
        .await
        .expect("CANCEL reached the handler");
    assert_eq!(stopped, Some(Bytes::from_static(b"job-1")));
    assert!(call.await.unwrap_err().is_cancelled());
}

#[tokio::test]
async fn a_procedure_past_its_concurrency_limit_answers_overloaded() {
    let nodes = mesh(4).await;
    let (gate_tx, gate) = oneshot::channel::<()>();
    let gate = std::sync::Arc::new(tokio::sync::Mutex::new(Some(gate)));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let options = ProcedureOptions {
        max_concurrent: 1,
        ..ProcedureOptions::default()
    };
    let _serving = nodes[1]
        .register("svc.single", options, move |_: Request| {
            let (gate, started_tx) = (gate.clone(), started_tx.clone());
            async move {
                started_tx.send(()).unwrap();
                if let Some(gate) = gate.lock().await.take() {
                    let _ = gate.await;
                }
                Ok(Bytes::from_static(b"done"))
            }
        })
        .await
        .unwrap();
    visible(&nodes[0], RecordKind::Rpc, "svc.single", 1).await;

    let caller = nodes[2].clone();
    let first = tokio::spawn(async move { call(&caller, "svc.single", b"1").await });
    timeout(LIMIT, started.recv())
        .await
        .expect("the first handler runs");
    let second = call(&nodes[2], "svc.single", b"2").await;
    assert_eq!(
        second,
        Err(CallError::Rpc(RpcError::Overloaded {
            provider: Some(nodes[1].node_id()),
            bound: 0,
        }))
    );
    gate_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap(), Ok(Bytes::from_static(b"done")));
    // The slot is free again. (Another caller: the first dropped the
    // overloaded provider from its cached provider list.)
    let third = call(&nodes[3], "svc.single", b"3").await;
    assert_eq!(third, Ok(Bytes::from_static(b"done")));
}

/// The next publication of `subscription`, bounded by [`LIMIT`].
async fn next(subscription: &mut Subscription) -> Publication {
    let received = timeout(LIMIT, subscription.recv()).await;
    received
        .expect("a publication in time")
        .expect("the node runs")
}

#[tokio::test]
async fn wildcard_subscribers_get_each_publication_once_and_in_order() {
    let nodes = mesh(5).await;
    let mut one = nodes[1].subscribe("sensors.*.temp").await.unwrap();
    let mut rest = nodes[2].subscribe("sensors.#").await.unwrap();
    let mut exact = nodes[3].subscribe("sensors.kitchen.temp").await.unwrap();
    assert_eq!(one.pattern().as_str(), "sensors.*.temp");
    // Both wildcard records live under "sensors", the exact one under the topic.
    visible(&nodes[0], RecordKind::Topic, "sensors", 2).await;
    visible(&nodes[0], RecordKind::Topic, "sensors.kitchen.temp", 1).await;

    let publisher = &nodes[4];
    for i in 0..20u32 {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        publisher
            .publish("sensors.kitchen.temp", payload)
            .await
            .unwrap();
    }
    publisher
        .publish("sensors.kitchen.humidity", Bytes::from_static(b"h"))
        .await
        .unwrap();
    for subscription in [&mut one, &mut rest, &mut exact] {
        for i in 0..20u32 {
            let publication = next(subscription).await;
            assert_eq!(publication.topic.as_str(), "sensors.kitchen.temp");
            assert_eq!(publication.payload, Bytes::from(i.to_be_bytes().to_vec()));
            assert_eq!(publication.publisher, publisher.node_id());
        }
    }
    // Only `sensors.#` matches the humidity topic; nothing else arrives.
    assert_eq!(
        next(&mut rest).await.topic.as_str(),
        "sensors.kitchen.humidity"
    );
    for subscription in [&mut one, &mut rest, &mut exact] {
        let more = timeout(Duration::from_millis(300), subscription.recv()).await;
        assert!(more.is_err(), "no duplicate: {more:?}");
        assert_eq!(subscription.dropped(), 0);
    }
}

#[tokio::test]
async fn dropping_a_subscription_stops_delivery() {
    let nodes = mesh(3).await;
    let (subscriber, publisher) = (&nodes[1], &nodes[2]);
    let mut news = subscriber.subscribe("news.*").await.unwrap();
    let mut twin = subscriber.subscribe("news.*").await.unwrap();
    let mut alerts = subscriber.subscribe("alerts.#").await.unwrap();
    visible(&nodes[0], RecordKind::Topic, "news", 1).await;
    visible(&nodes[0], RecordKind::Topic, "alerts", 1).await;

    publisher
        .publish("news.today", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(next(&mut news).await.payload, Bytes::from_static(b"1"));
    assert_eq!(next(&mut twin).await.payload, Bytes::from_static(b"1"));

    // The node still subscribes while one subscription of the pattern lives.
    drop(news);
    publisher
        .publish("news.today", Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(next(&mut twin).await.payload, Bytes::from_static(b"2"));

    // The last one gone, the node no longer takes the topic. Notices go
    // before commands, so once `stats` answered the drop was handled.
    drop(twin);
    subscriber.stats().await.unwrap();
    let mut events = subscriber.events();
    publisher
        .publish("news.today", Bytes::from_static(b"3"))
        .await
        .unwrap();
    publisher
        .publish("alerts.now", Bytes::from_static(b"marker"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut alerts).await.payload,
        Bytes::from_static(b"marker")
    );
    let delivered = async {
        let mut topics = Vec::new();
        while let Some(event) = events.recv().await {
            if let Event::PubSub(PubSubEvent::Message { topic, .. }) = event {
                let marker = topic.as_str() == "alerts.now";
                topics.push(topic);
                if marker {
                    return topics;
                }
            }
        }
        topics
    };
    let topics = timeout(LIMIT, delivered).await.expect("the marker arrived");
    let topics: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        topics,
        ["alerts.now"],
        "news.today was not delivered after the drop"
    );
}

#[tokio::test]
async fn a_slow_subscription_drops_the_oldest_and_counts_them() {
    let nodes = mesh(2).await;
    let node = &nodes[1];
    let mut slow = node.subscribe_with_capacity("ticks", 4).await.unwrap();
    let mut events = node.events();
    // Our own publications are delivered locally.
    let mut last = 0;
    for i in 0..10u32 {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        last = node.publish("ticks", payload).await.unwrap();
    }
    // The task hands each message to the subscriptions, then to the event
    // stream: once the last is there, all ten were offered to `slow`.
    let routed = async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::PubSub(PubSubEvent::Message { message_id, .. }) if message_id == last)
            {
                return;
            }
        }
    };
    timeout(LIMIT, routed)
        .await
        .expect("the last publication was routed");
    let mut kept = Vec::new();
    while let Ok(Some(publication)) = timeout(Duration::from_millis(200), slow.recv()).await {
        kept.push(u32::from_be_bytes(
            publication.payload[..].try_into().unwrap(),
        ));
    }
    assert_eq!(kept, [6, 7, 8, 9], "the newest are kept");
    assert_eq!(slow.dropped(), 6);
}

#[tokio::test]
async fn an_unregistered_procedure_is_no_longer_served() {
    let nodes = mesh(4).await;
    let serving = nodes[1]
        .register("svc.once", ProcedureOptions::default(), echo)
        .await
        .unwrap();
    let again = nodes[1].register("svc.once", ProcedureOptions::default(), echo);
    assert!(
        matches!(again.await, Err(RegisterError::AlreadyRegistered(ref p)) if p == "svc.once"),
        "one registration per procedure and node"
    );
    visible(&nodes[0], RecordKind::Rpc, "svc.once", 1).await;
    assert_eq!(
        call(&nodes[2], "svc.once", b"a").await,
        Ok(Bytes::from_static(b"echo:a"))
    );
    serving.unregister().await;
    // The record may linger in the DHT; the provider refuses the call
    // before running anything, and the caller has nobody else to try.
    let refused = call(&nodes[3], "svc.once", b"b").await;
    assert!(
        matches!(
            refused,
            Err(CallError::Rpc(RpcError::NoProvider { tried: 1, .. }))
        ),
        "{refused:?}"
    );
    // The name is free again.
    let _back = nodes[1]
        .register("svc.once", ProcedureOptions::default(), echo)
        .await
        .unwrap();
}

#[tokio::test]
async fn unconfirmed_publications_arrive_once_in_order_and_a_refused_one_is_counted() {
    let nodes = mesh(3).await;
    let (subscriber, publisher) = (&nodes[1], &nodes[2]);
    let mut subscription = subscriber.subscribe("feed.#").await.unwrap();
    visible(&nodes[0], RecordKind::Topic, "feed", 1).await;
    // Over the limit: queued without a word, refused by the node, counted.
    let refused = publisher.metrics().await.unwrap().pubsub_publish_refused;
    assert_eq!(refused, 0);
    let too_large = Bytes::from(vec![0; 2 << 20]);
    publisher
        .publish_unconfirmed("feed.big", too_large)
        .await
        .unwrap();
    for i in 0..200u32 {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        publisher
            .publish_unconfirmed("feed.n", payload)
            .await
            .unwrap();
    }
    for i in 0..200u32 {
        let publication = next(&mut subscription).await;
        assert_eq!(publication.topic.as_str(), "feed.n");
        assert_eq!(publication.payload, Bytes::from(i.to_be_bytes().to_vec()));
    }
    let more = timeout(Duration::from_millis(300), subscription.recv()).await;
    assert!(
        more.is_err(),
        "no duplicate, nothing refused delivered: {more:?}"
    );
    let metrics = publisher.metrics().await.unwrap();
    assert_eq!(metrics.pubsub_publish_refused, 1);
    let bad = publisher.publish_unconfirmed("feed.*", Bytes::new()).await;
    assert!(matches!(bad, Err(macula_tokio::PublishError::BadTopic(_))));
}

#[tokio::test]
async fn batches_and_single_publications_arrive_once_in_the_order_made() {
    let nodes = mesh(3).await;
    let (subscriber, publisher) = (&nodes[1], &nodes[2]);
    let mut subscription = subscriber.subscribe("feed.#").await.unwrap();
    visible(&nodes[0], RecordKind::Topic, "feed", 1).await;
    let payload = |i: u32| Bytes::from(i.to_be_bytes().to_vec());
    let mut expected = Vec::new();
    let mut i = 0;
    for round in 0..20u32 {
        // A batch on one topic, a single one on the other, a batch holding
        // one payload over the limit (refused alone), a confirmed one.
        let batch: Vec<Bytes> = (i..i + 5).map(payload).collect();
        expected.extend((i..i + 5).map(|n| ("feed.a", n)));
        publisher.publish_batch("feed.a", batch).await.unwrap();
        i += 5;
        publisher
            .publish_unconfirmed("feed.b", payload(i))
            .await
            .unwrap();
        expected.push(("feed.b", i));
        i += 1;
        let with_refused = vec![payload(i), Bytes::from(vec![0; 2 << 20]), payload(i + 1)];
        expected.extend([("feed.a", i), ("feed.a", i + 1)]);
        publisher
            .publish_batch("feed.a", with_refused)
            .await
            .unwrap();
        i += 2;
        if round % 5 == 0 {
            publisher.publish("feed.b", payload(i)).await.unwrap();
            expected.push(("feed.b", i));
            i += 1;
        }
    }
    publisher.publish_batch("feed.a", Vec::new()).await.unwrap();
    for (topic, n) in expected {
        let publication = next(&mut subscription).await;
        assert_eq!(
            (publication.topic.as_str(), publication.payload),
            (topic, payload(n))
        );
    }
    let more = timeout(Duration::from_millis(300), subscription.recv()).await;
    assert!(more.is_err(), "no duplicate, nothing refused: {more:?}");
    let metrics = publisher.metrics().await.unwrap();
    assert_eq!(metrics.pubsub_publish_refused, 20);
    let bad = publisher.publish_batch("feed.#", vec![Bytes::new()]).await;
    assert!(matches!(bad, Err(macula_tokio::PublishError::BadTopic(_))));
}
