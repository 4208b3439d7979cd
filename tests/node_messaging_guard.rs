//! Whole nodes in the simulator guard their messaging: only the callers
//! `rpc.callers` allows reach a handler (the others get ERROR
//! `unauthorized`), only the publishers `pubsub.publishers` allows reach a
//! subscriber, and one caller cannot take every handler slot. Each refusal
//! shows in the node's metrics.
#![cfg(feature = "sim")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::epoch;
use macula::access::AccessList;
use macula::id::{Identity, NodeId};
use macula::metrics::{CallRefusal, PublishDrop};
use macula::node::{Event, NodeConfig};
use macula::pubsub::{Pattern, PubSubEvent, Topic};
use macula::rpc::{CallId, RegisterOptions, RpcError, RpcEvent};
use macula::sim::{CALL_TIMEOUT, HostId, Link, Mesh, completion, echo};

/// The id of the mesh's `i`-th node (the fixture's identity seeds).
fn id_of(i: usize) -> NodeId {
    Identity::from_seed([i as u8 + 1; 32]).node_id()
}

fn pattern(text: &str) -> Pattern {
    Pattern::new(text).unwrap()
}

/// `n` public nodes on 5 ms links, bootstrapped; node 1 configured by
/// `guard`.
fn mesh(n: usize, seed: u64, guard: impl Fn(&mut NodeConfig)) -> Mesh {
    let link = Link::with_latency(Duration::from_millis(5));
    let mut mesh = Mesh::public(n, seed, epoch(), link, |i, config| {
        if i == 1 {
            guard(config);
        }
    });
    assert!(mesh.bootstrap_all(), "bootstrap");
    mesh
}

/// How a call ended.
type CallResult = Result<Bytes, RpcError>;

/// Runs the calls (each with the host that made it: call ids are per node)
/// to their ends with the echo handler; their results, and who the
/// handlers saw calling what.
fn run_calls(
    mesh: &mut Mesh,
    calls: &[(HostId, CallId)],
) -> (Vec<CallResult>, Vec<(NodeId, String)>) {
    let mut results = BTreeMap::new();
    let mut seen = Vec::new();
    let done = mesh.drive(CALL_TIMEOUT, |world, host, event| {
        if let Event::Rpc(RpcEvent::Request {
            caller, procedure, ..
        }) = &event
        {
            seen.push((*caller, procedure.clone()));
        }
        echo(world, host, &event).unwrap();
        for &(caller, call) in calls {
            if let Some(result) = completion(&event, call).filter(|_| caller == host) {
                results.insert((caller, call), result);
            }
        }
        results.len() == calls.len()
    });
    assert!(done, "every call ended: {results:?}");
    (calls.iter().map(|c| results[c].clone()).collect(), seen)
}

#[test]
fn only_the_callers_a_provider_allows_reach_its_handler() {
    let mut mesh = mesh(4, 31, |config| {
        config.rpc.callers = AccessList::open().allow(pattern("admin.#"), [id_of(2)]);
    });
    let provider = mesh.hosts[1];
    for procedure in ["admin.reboot", "svc.echo"] {
        mesh.register(provider, procedure, RegisterOptions::default());
    }
    mesh.settle(Duration::from_secs(2));
    let (allowed, stranger) = (mesh.hosts[2], mesh.hosts[3]);
    let calls = [
        (allowed, mesh.call(allowed, "admin.reboot", &b"allowed"[..])),
        (
            stranger,
            mesh.call(stranger, "admin.reboot", &b"stranger"[..]),
        ),
        (stranger, mesh.call(stranger, "svc.echo", &b"open"[..])),
    ];
    let (results, seen) = run_calls(&mut mesh, &calls);
    assert_eq!(results[0], Ok(Bytes::from_static(b"echo:allowed")));
    assert!(
        matches!(&results[1], Err(RpcError::Unauthorized { provider: p, .. }) if *p == id_of(1)),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(Bytes::from_static(b"echo:open")));
    seen.iter().for_each(|(caller, procedure)| {
        assert!(
            !(procedure == "admin.reboot" && *caller == id_of(3)),
            "the refused call never reached the handler"
        )
    });
    assert_eq!(seen.len(), 2);
    let metrics = mesh.node(provider).metrics();
    assert_eq!(*metrics.rpc_calls_refused.get(CallRefusal::Unauthorized), 1);
}

#[test]
fn only_the_publishers_a_subscriber_allows_reach_it() {
    let mut mesh = mesh(4, 32, |config| {
        config.pubsub.publishers = AccessList::open().allow(pattern("alerts.#"), [id_of(2)]);
    });
    let subscriber = mesh.hosts[1];
    mesh.subscribe(subscriber, "alerts.#");
    mesh.subscribe(subscriber, "news.#");
    mesh.settle(Duration::from_secs(2));
    let alerts = Topic::new("alerts.fire").unwrap();
    let news = Topic::new("news.today").unwrap();
    for n in 0..5u8 {
        mesh.publish(mesh.hosts[2], &alerts, vec![n]);
        mesh.publish(mesh.hosts[3], &alerts, vec![n]);
        mesh.publish(mesh.hosts[3], &news, vec![n]);
    }
    let mut received: BTreeMap<(NodeId, Topic), Vec<u64>> = BTreeMap::new();
    mesh.drive(Duration::from_secs(5), |_, host, event| {
        if let Event::PubSub(PubSubEvent::Message {
            publisher,
            message_id,
            topic,
            ..
        }) = event
            && host == subscriber
        {
            received
                .entry((publisher, topic))
                .or_default()
                .push(message_id);
        }
        false
    });
    let keys: Vec<_> = received.keys().cloned().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(received[&(id_of(2), alerts)].len(), 5);
    assert_eq!(
        received[&(id_of(3), news)].len(),
        5,
        "the refused frames hold up nothing after them"
    );
    let node = mesh.node(subscriber);
    assert_eq!(node.pubsub().stats().unauthorized, 5);
    let dropped = &node.metrics().pubsub_received_dropped;
    assert_eq!(*dropped.get(PublishDrop::Unauthorized), 5);
}

#[test]
fn one_caller_cannot_take_every_handler_slot() {
    let mut mesh = mesh(4, 33, |config| {
        config.rpc.max_handlers = 4;
        config.rpc.max_handlers_per_caller = 2;
    });
    let provider = mesh.hosts[1];
    mesh.register(provider, "svc.hold", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    // The handler never answers: each call it takes holds a slot.
    let greedy_host = mesh.hosts[2];
    let greedy: Vec<CallId> = (0..4u8)
        .map(|n| mesh.call(greedy_host, "svc.hold", vec![n]))
        .collect();
    let (mut overloaded, mut handled) = (0, Vec::new());
    let done = mesh.drive(CALL_TIMEOUT / 2, |_, host, event| {
        match &event {
            Event::Rpc(RpcEvent::Request { caller, .. }) => handled.push(*caller),
            event if host == greedy_host => {
                let ended = greedy.iter().find_map(|call| completion(event, *call));
                if let Some(result) = ended {
                    assert!(
                        matches!(
                            result,
                            Err(RpcError::Overloaded {
                                provider: Some(_),
                                ..
                            })
                        ),
                        "{result:?}"
                    );
                    overloaded += 1;
                }
            }
            _ => {}
        }
        overloaded == 2 && handled.len() == 2
    });
    assert!(done, "two greedy calls refused: {overloaded}, {handled:?}");
    assert_eq!(handled, [id_of(2), id_of(2)]);
    let honest_host = mesh.hosts[3];
    let honest = mesh.call(honest_host, "svc.hold", &b"mine"[..]);
    let reached = mesh.drive(CALL_TIMEOUT / 2, |_, host, event| {
        let ended = completion(&event, honest).filter(|_| host == honest_host);
        assert!(ended.is_none(), "not refused: {ended:?}");
        matches!(event, Event::Rpc(RpcEvent::Request { caller, .. }) if caller == id_of(3) && host == provider)
    });
    assert!(reached, "another caller still finds a free slot");
    let metrics = mesh.node(provider).metrics();
    assert_eq!(*metrics.rpc_calls_refused.get(CallRefusal::CallerShare), 2);
    assert_eq!(*metrics.rpc_calls_refused.get(CallRefusal::Overloaded), 0);
}
