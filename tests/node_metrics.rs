//! The node's metrics move as the traffic dictates: nodes in the simulator
//! over real QUIC make calls, publish, store and refuse peers, and each
//! node's [`Metrics`] counts exactly that.
#![cfg(feature = "sim")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::epoch;
use macula::dht::DhtEvent;
use macula::id::{Realm, RecordKey, RecordKind};
use macula::metrics::{
    Cache, CallResult, ConnectionDirection, ConnectionErrorKind, MessageDirection, Metrics,
    QueryKind, RpcOutcome, StoreResult,
};
use macula::node::Event;
use macula::pubsub::{Pattern, Topic};
use macula::rpc::{CallId, CallOptions, RegisterOptions, RpcError, RpcEvent};
use macula::sim::{HostId, Link, Mesh, mirror, realm};

const ONE_WAY: Duration = Duration::from_millis(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Public nodes on 5 ms links taking payloads of up to 1 KiB, each starting
/// to bootstrap through the first; `realms[i]` is node i's realm.
fn net(realms: &[Realm]) -> Mesh {
    let link = Link::with_latency(ONE_WAY);
    let mut net = Mesh::public(realms.len(), 7, epoch(), link, |i, config| {
        config.realm = realms[i].clone();
        config.rpc.max_payload = 1024;
    });
    let hosts = net.hosts.clone();
    net.begin_bootstrap(hosts[0], &hosts[1..]);
    net
}

/// Node `i` calls `procedure` with `payload`, timing out after
/// [`CALL_TIMEOUT`].
fn call(net: &mut Mesh, i: usize, procedure: &str, payload: Vec<u8>) -> Result<CallId, RpcError> {
    net.world.with_machine(net.hosts[i], |node, now| {
        let options = CallOptions::default();
        node.call(now, procedure, Bytes::from(payload), CALL_TIMEOUT, options)
    })
}

fn metrics_of(net: &Mesh, i: usize) -> &Metrics {
    net.node(net.hosts[i]).metrics()
}

/// Runs the world for `duration`; every RPC request is answered with its
/// payload, every event is handed to `seen`.
fn run(net: &mut Mesh, duration: Duration, mut seen: impl FnMut(HostId, &Event)) {
    net.drive(duration, |world, host, event| {
        mirror(world, host, &event).unwrap();
        seen(host, &event);
        false
    });
}

#[test]
fn ten_calls_count_ten_ok_with_ten_latencies_and_one_provider_lookup() {
    let mut net = net(&[realm(), realm(), realm()]);
    run(&mut net, Duration::from_secs(5), |_, _| {});
    let caller = net.hosts[2];
    net.world
        .with_machine(net.hosts[1], |node, now| {
            node.register(now, "metrics.echo", RegisterOptions::default())
        })
        .unwrap();
    run(&mut net, Duration::from_secs(2), |_, _| {});
    for n in 0..10u8 {
        call(&mut net, 2, "metrics.echo", vec![n]).unwrap();
    }
    let mut replies = 0;
    run(&mut net, CALL_TIMEOUT, |host, event| {
        if host == caller && matches!(event, Event::Rpc(RpcEvent::Completed { result: Ok(_), .. }))
        {
            replies += 1;
        }
    });
    assert_eq!(replies, 10);
    let metrics = metrics_of(&net, 2);
    assert_eq!(*metrics.rpc_calls.get(RpcOutcome::Ok), 10);
    assert_eq!(metrics.rpc_calls.total(), 10);
    let latency = metrics.rpc_call_latency.get(CallResult::Ok);
    assert_eq!(latency.count(), 10);
    assert_eq!(metrics.rpc_call_latency.get(CallResult::Error).count(), 0);
    // Every call crossed the link and back at least once.
    assert!(latency.sum() >= 10 * 2 * ONE_WAY, "{:?}", latency.sum());
    // One provider lookup went out; the other nine calls found it under way
    // or fresh.
    let providers = metrics.caches.get(Cache::RpcProviders);
    assert_eq!((providers.hits, providers.misses), (9, 1));
    // The provider made no calls.
    assert_eq!(metrics_of(&net, 1).rpc_calls.total(), 0);

    // Errors count by outcome: refused at once (too large, not timed) and
    // after a lookup (no provider, timed).
    let too_large = call(&mut net, 2, "metrics.echo", vec![0; 2048]);
    assert!(matches!(too_large, Err(RpcError::TooLarge { .. })));
    call(&mut net, 2, "metrics.nobody", vec![1]).unwrap();
    run(&mut net, CALL_TIMEOUT, |_, _| {});
    let metrics = metrics_of(&net, 2);
    assert_eq!(*metrics.rpc_calls.get(RpcOutcome::TooLarge), 1);
    assert_eq!(*metrics.rpc_calls.get(RpcOutcome::NoProvider), 1);
    assert_eq!(metrics.rpc_calls.total(), 12);
    assert_eq!(metrics.rpc_call_latency.get(CallResult::Error).count(), 1);
}

#[test]
fn publications_count_on_both_sides_with_a_latency_per_subscriber() {
    let mut net = net(&[realm(), realm(), realm()]);
    run(&mut net, Duration::from_secs(5), |_, _| {});
    for subscriber in [0, 1] {
        let pattern = Pattern::new("metrics.#").unwrap();
        let subscribed = net.world.with_machine(net.hosts[subscriber], |node, now| {
            node.subscribe(now, pattern)
        });
        assert!(subscribed.is_ok(), "{subscribed:?}");
    }
    run(&mut net, Duration::from_secs(2), |_, _| {});
    let topic = Topic::new("metrics.tick").unwrap();
    for n in 0..5u8 {
        let topic = topic.clone();
        net.world
            .with_machine(net.hosts[2], |node, now| {
                node.publish(now, topic, Bytes::from(vec![n]))
            })
            .unwrap();
    }
    let hosts = net.hosts.clone();
    let mut delivered = [0; 3];
    run(&mut net, Duration::from_secs(5), |host, event| {
        if matches!(event, Event::PubSub(_)) {
            let at = hosts.iter().position(|h| *h == host).unwrap();
            delivered[at] += 1;
        }
    });
    assert_eq!(delivered, [5, 5, 0]);
    let publisher = metrics_of(&net, 2);
    let messages = &publisher.pubsub_messages;
    assert_eq!(*messages.get(MessageDirection::Published), 5);
    assert_eq!(*messages.get(MessageDirection::Sent), 10);
    assert_eq!(*messages.get(MessageDirection::Delivered), 0);
    assert_eq!(*messages.get(MessageDirection::Dropped), 0);
    // One latency per message and subscriber; the first ones waited for
    // the subscriber lookup and the connections.
    assert_eq!(publisher.pubsub_delivery_latency.count(), 10);
    assert!(publisher.pubsub_delivery_latency.sum() >= 2 * ONE_WAY);
    // One lookup per topic prefix ("", "metrics", "metrics.tick") of each
    // publication: the first publication's three missed.
    let subscribers = publisher.caches.get(Cache::PubsubSubscribers);
    assert_eq!((subscribers.hits, subscribers.misses), (12, 3));
    for subscriber in [0, 1] {
        let messages = &metrics_of(&net, subscriber).pubsub_messages;
        assert_eq!(*messages.get(MessageDirection::Delivered), 5);
        assert_eq!(*messages.get(MessageDirection::Published), 0);
    }
}

#[test]
fn connections_stores_and_lookups_are_counted_and_timed() {
    let mut net = net(&[realm(), realm(), realm()]);
    run(&mut net, Duration::from_secs(5), |_, _| {});
    // Both joiners dialed the seed; it accepted both.
    let seed = metrics_of(&net, 0);
    assert!(*seed.connections.get(ConnectionDirection::Inbound) >= 2);
    assert!(*seed.pool_size.get(ConnectionDirection::Inbound) >= 2);
    let joiner = metrics_of(&net, 1);
    assert!(*joiner.connections.get(ConnectionDirection::Outbound) >= 1);
    assert_eq!(joiner.connection_errors.total(), 0);
    // Bootstrap's own lookups are not timed; a find_node is, once.
    assert_eq!(joiner.dht_query_latency.get(QueryKind::FindNode).count(), 0);
    let target = net.world.machine(net.hosts[2]).node_id();
    net.world
        .with_machine(net.hosts[1], |node, now| node.find_node(now, target));
    run(&mut net, Duration::from_secs(5), |_, _| {});
    let lookups = metrics_of(&net, 1)
        .dht_query_latency
        .get(QueryKind::FindNode);
    assert_eq!(lookups.count(), 1);
    assert!(lookups.sum() >= 2 * ONE_WAY);

    let stores_before = metrics_of(&net, 1).dht_store_operations.total();
    let realm = realm();
    let key = RecordKey::new(&realm, RecordKind::Rpc, "metrics.stored");
    let query = net
        .world
        .with_machine(net.hosts[1], |node, now| {
            node.store(now, key, Bytes::from_static(b"v"), Duration::from_secs(5))
        })
        .unwrap();
    let mut confirmed = None;
    run(&mut net, Duration::from_secs(6), |_, event| {
        if let Event::Dht(DhtEvent::StoreConfirmed {
            query: q, success, ..
        }) = event
            && *q == query
        {
            confirmed = Some(*success);
        }
    });
    let metrics = metrics_of(&net, 1);
    assert_eq!(confirmed, Some(true));
    assert_eq!(metrics.dht_store_operations.total(), stores_before + 1);
    assert!(*metrics.dht_store_operations.get(StoreResult::Success) >= 1);
    assert!(metrics.store_propagation_success_rate().is_some());

    // Node 2 leaves: each of its connections gets a lifetime, and a
    // shutdown is no error on either side.
    let connections = net.world.machine(net.hosts[2]).connection_count();
    assert!(connections >= 1);
    net.world
        .with_machine(net.hosts[2], |node, now| node.close_all(now));
    run(&mut net, Duration::from_secs(5), |_, _| {});
    let leaver = metrics_of(&net, 2);
    assert_eq!(
        leaver.connection_duration.count(),
        leaver.connections.total()
    );
    assert!(leaver.connection_duration.sum() >= Duration::from_secs(5));
    assert_eq!(leaver.connection_errors.total(), 0);
    assert_eq!(metrics_of(&net, 0).connection_errors.total(), 0);
}

#[test]
fn a_peer_of_another_realm_counts_as_refused_here_and_failed_there() {
    let mut net = net(&[realm(), Realm::new("io.macula.elsewhere").unwrap()]);
    run(&mut net, Duration::from_secs(5), |_, _| {});
    let seed = metrics_of(&net, 0);
    assert!(*seed.connection_errors.get(ConnectionErrorKind::Refused) >= 1);
    assert!(seed.last_connection_error.is_some());
    assert_eq!(seed.connections.total(), 0);
    let stranger = metrics_of(&net, 1);
    assert!(
        *stranger
            .connection_errors
            .get(ConnectionErrorKind::Handshake)
            >= 1
    );
    assert_eq!(stranger.connections.total(), 0);
    assert_eq!(stranger.connection_duration.count(), 0);
}
