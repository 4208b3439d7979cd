//! Messaging against a stranger over real UDP (an independent QUIC client
//! with its own Ed25519 identity, see `common/stranger.rs`):
//! - a PUBLISH numbered `u64::MAX`, then normal ones: each normal message is
//!   delivered once, the huge one never, and the node keeps running past the
//!   gap timeout (before, a debug build panicked there and a release build
//!   delivered the normal ones again);
//! - a CALL from a caller the node's access list does not allow is answered
//!   ERROR `unauthorized` (10) and never reaches the handler, while an
//!   allowed caller's CALL is answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use macula::access::AccessList;
use macula::id::NodeId;
use macula::metrics::{CallRefusal, PublishDrop};
use macula::pubsub::Pattern;
use macula::wire::{self, ErrorCode, Message};
use macula_tokio::{HandlerError, MaculaConfig, MaculaNode, ProcedureOptions, Request};
use tokio::time::{sleep, timeout};

// Shared by the test crates; this one uses a part.
#[allow(dead_code)]
mod common;
use common::stranger::{Stranger, ask, encode};
use common::{LIMIT, realm};

/// The victim's gap timeout: short, so the test waits past it quickly.
const GAP_TIMEOUT: Duration = Duration::from_millis(200);

fn publish(message_id: u64, sequence: u64) -> Vec<u8> {
    encode(&Message::from(wire::Publish {
        message_id,
        epoch: 5,
        sequence,
        topic: "news.today".into(),
        payload: Bytes::from_static(b"x"),
    }))
}

#[tokio::test]
async fn a_publish_numbered_u64_max_then_normal_ones_are_each_delivered_once() {
    let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    config.node.pubsub.receiver.gap_timeout = GAP_TIMEOUT;
    let victim = MaculaNode::bind(config).await.unwrap();
    let mut news = victim.subscribe("news.#").await.unwrap();
    let stranger = Stranger::new([0x6b; 32]);
    let hello = stranger.hello(realm());
    let (conn, _control, _control_recv) = stranger
        .join(victim.local_addr(), victim.node_id(), hello)
        .await;
    let (mut stream, _recv) = conn.open_bi().await.unwrap();
    stream.write_all(&publish(999, u64::MAX)).await.unwrap();
    for (sequence, id) in [(0, 100), (1, 101), (2, 102)] {
        stream.write_all(&publish(id, sequence)).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let got = timeout(LIMIT, news.recv())
            .await
            .expect("delivered in time");
        ids.push(got.expect("the subscription lives").message_id);
    }
    assert_eq!(ids, [100, 101, 102]);
    // Past the gap timeout nothing more comes, and the node still serves.
    sleep(GAP_TIMEOUT * 3).await;
    stream.write_all(&publish(103, 3)).await.unwrap();
    let next = timeout(LIMIT, news.recv())
        .await
        .expect("delivered in time");
    assert_eq!(next.expect("the subscription lives").message_id, 103);
    assert!(
        timeout(GAP_TIMEOUT, news.recv()).await.is_err(),
        "nothing delivered twice"
    );
    let metrics = timeout(LIMIT, victim.metrics()).await.unwrap().unwrap();
    let dropped = &metrics.pubsub_received_dropped;
    assert_eq!(*dropped.get(PublishDrop::OutOfWindow), 1);
    assert!(conn.close_reason().is_none(), "the connection stays open");
}

/// Writes `call` on a new request stream of `conn` and reads the answer.
async fn call_once(conn: &quinn::Connection, request_id: u64) -> Message {
    let call = Message::from(wire::Call {
        request_id,
        procedure: "svc.echo".into(),
        timeout_ms: 5_000,
        idempotent: false,
        payload: Bytes::from_static(b"hi"),
    });
    ask(conn, &call).await
}

#[tokio::test]
async fn a_call_from_a_caller_not_allowed_is_answered_unauthorized() {
    let (friend, stranger) = (Stranger::new([0x71; 32]), Stranger::new([0x72; 32]));
    let allowed: [NodeId; 1] = [friend.node_id()];
    let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    config.node.rpc.callers = AccessList::open().allow(Pattern::new("svc.#").unwrap(), allowed);
    let victim = MaculaNode::bind(config).await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let _registration = victim
        .register(
            "svc.echo",
            ProcedureOptions::default(),
            move |request: Request| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, HandlerError>(request.payload) }
            },
        )
        .await
        .unwrap();
    let (addr, id) = (victim.local_addr(), victim.node_id());

    let (conn, _control, _control_recv) = stranger.join(addr, id, stranger.hello(realm())).await;
    let Message::ErrorReply(refused) = call_once(&conn, 1).await else {
        panic!("expected ERROR");
    };
    assert_eq!(
        (refused.request_id, refused.code),
        (1, ErrorCode::Unauthorized)
    );
    assert_eq!(handled.load(Ordering::SeqCst), 0, "the handler never ran");

    let (conn, _control, _control_recv) = friend.join(addr, id, friend.hello(realm())).await;
    let answer = call_once(&conn, 1).await;
    let Message::Reply(reply) = answer else {
        panic!("expected REPLY, got {answer:?}");
    };
    assert_eq!(reply.payload, Bytes::from_static(b"hi"));
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    let metrics = timeout(LIMIT, victim.metrics()).await.unwrap().unwrap();
    let refusals = &metrics.rpc_calls_refused;
    assert_eq!(*refusals.get(CallRefusal::Unauthorized), 1);
}
