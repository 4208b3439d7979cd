//! A peer that never sends CONNECT gets nothing served (docs/PROTOCOL.md
//! §2), over real UDP: an independent QUIC client (plain quinn, its own
//! Ed25519 identity, mutual TLS as the protocol asks) opens request streams
//! on a running node and writes CALL, PUBLISH, FIND_NODE and RELAY_RESERVE on
//! them — in both stream orders, whole or split across packets — without ever
//! writing CONNECT. Nothing is answered, no handler runs, no publication is
//! delivered, the node keeps serving an honest peer meanwhile, and the
//! connection is closed at the CONNECT deadline with DISCONNECT `protocol
//! error` (2). And the other side of the rule: an honest dialer whose
//! CONNECT arrives after its request (a lost packet, a reordered stream)
//! loses nothing: the request is held, then answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use macula::id::{NodeId, RecordKind};
use macula::wire::{self, Limits, Message};
use macula_tokio::{
    CallOptions, HandlerError, MaculaConfig, MaculaNode, ProcedureOptions, Request,
};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

// Shared by the test crates; this one uses a part.
#[allow(dead_code)]
mod common;
use common::stranger::{Stranger, encode};
use common::{LIMIT, bind, join, realm, visible};

/// The stranger's identity key seed.
const STRANGER_SEED: [u8; 32] = [0x5a; 32];

/// The victim's CONNECT deadline: short, so the test is quick.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// A request a stranger sends before CONNECT.
#[derive(Clone, Copy, Debug)]
enum Forged {
    Call,
    Publish,
    FindNode,
    RelayReserve,
}

impl Forged {
    fn frame(self, target: NodeId) -> Vec<u8> {
        let message = match self {
            Forged::Call => Message::from(wire::Call {
                request_id: 1,
                procedure: "svc.echo".into(),
                timeout_ms: 5_000,
                idempotent: false,
                payload: Bytes::from_static(b"stolen"),
            }),
            Forged::Publish => Message::from(wire::Publish {
                message_id: 1,
                epoch: 1,
                sequence: 1,
                topic: "news.today".into(),
                payload: Bytes::from_static(b"forged"),
            }),
            Forged::FindNode => Message::from(wire::FindNode {
                request_id: 1,
                target,
            }),
            Forged::RelayReserve => Message::from(wire::RelayReserve { request_id: 1 }),
        };
        encode(&message)
    }
}

/// One attack: a connection of identity `seed` that writes `request` on
/// two request streams (stream 8 first when `reversed`; each frame in two
/// packets when `split`), never CONNECT. Returns the close code and whether
/// any byte came back. (Each attack has an identity of its own: ids are
/// free, and one id gets only a few connections.)
async fn attack(
    victim: SocketAddr,
    victim_id: NodeId,
    seed: u8,
    request: Forged,
    reversed: bool,
    split: bool,
) -> (Option<u64>, usize) {
    let conn = Stranger::new([seed; 32]).connect(victim, victim_id).await;
    // Stream 0 (the control stream) is opened and left silent.
    let (_control_send, _control_recv) = conn.open_bi().await.unwrap();
    let first = conn.open_bi().await.unwrap();
    let second = conn.open_bi().await.unwrap();
    let mut streams = vec![first, second];
    if reversed {
        streams.reverse();
    }
    let frame = request.frame(victim_id);
    let (head, tail) = frame.split_at(if split { 5 } else { frame.len() });
    for (send, _) in &mut streams {
        send.write_all(head).await.unwrap();
    }
    if split {
        sleep(Duration::from_millis(50)).await;
        for (send, _) in &mut streams {
            send.write_all(tail).await.unwrap();
        }
    }
    for (send, _) in &mut streams {
        let _ = send.finish();
    }
    let mut answered = 0;
    for (_, recv) in &mut streams {
        if let Ok(Ok(bytes)) = timeout(LIMIT, recv.read_to_end(1 << 20)).await {
            answered += bytes.len();
        }
    }
    let closed = timeout(LIMIT, conn.closed()).await.expect("closed in time");
    let code = match closed {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    };
    (code, answered)
}

#[tokio::test]
async fn nothing_is_served_before_connect_and_the_deadline_closes_with_protocol_error() {
    let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    config.node.connect_timeout = CONNECT_TIMEOUT;
    let seed = bind("127.0.0.1:0").await;
    let victim = MaculaNode::bind(config).await.unwrap();
    join(&victim, seed.contact()).await;
    let honest = bind("127.0.0.1:0").await;
    join(&honest, seed.contact()).await;

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
    let mut news = victim.subscribe("news.#").await.unwrap();
    // The honest caller calls once the provider record has spread (a caller
    // remembers an empty lookup for a while).
    visible(&honest, RecordKind::Rpc, "svc.echo", 1).await;
    assert_eq!(echo_once(&honest, "ready").await, "ready");

    let mut attacks = JoinSet::new();
    let requests = [
        Forged::Call,
        Forged::Publish,
        Forged::FindNode,
        Forged::RelayReserve,
    ];
    let mut seed = 0x60;
    for request in requests {
        for reversed in [false, true] {
            for split in [false, true] {
                let (addr, id) = (victim.local_addr(), victim.node_id());
                seed += 1;
                attacks.spawn(async move {
                    let outcome = attack(addr, id, seed, request, reversed, split).await;
                    (request, reversed, split, outcome)
                });
            }
        }
    }

    // The node serves an honest peer while the attacks are open.
    let reply = timeout(
        LIMIT,
        honest.call(
            "svc.echo",
            Bytes::from_static(b"hi"),
            CallOptions::default(),
        ),
    )
    .await
    .expect("the honest call ended in time");
    assert_eq!(reply.unwrap(), Bytes::from_static(b"hi"));

    let mut seen = 0;
    while let Some(joined) = attacks.join_next().await {
        let (request, reversed, split, (code, answered)) = joined.unwrap();
        let case = format!("{request:?} reversed={reversed} split={split}");
        assert_eq!(answered, 0, "{case}: nothing is answered before CONNECT");
        assert_eq!(
            code,
            Some(2),
            "{case}: closed with DISCONNECT protocol error"
        );
        seen += 1;
    }
    assert_eq!(seen, 16);
    assert_eq!(
        handled.load(Ordering::SeqCst),
        2,
        "only the honest calls reached the handler"
    );
    assert!(
        timeout(Duration::from_millis(200), news.recv())
            .await
            .is_err(),
        "no forged publication was delivered"
    );

    // And the node still serves after all of it.
    assert_eq!(echo_once(&honest, "again").await, "again");
}

/// `caller` calls `svc.echo` with `text`, within [`LIMIT`].
async fn echo_once(caller: &MaculaNode, text: &'static str) -> String {
    let payload = Bytes::from_static(text.as_bytes());
    let called = caller.call("svc.echo", payload, CallOptions::default());
    let reply = timeout(LIMIT, called)
        .await
        .expect("the call ended in time");
    String::from_utf8(reply.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn a_request_written_before_a_late_connect_is_held_then_answered() {
    let node = bind("127.0.0.1:0").await;
    let stranger = Stranger::new(STRANGER_SEED);
    let conn = stranger.connect(node.local_addr(), node.node_id()).await;
    let (mut control, _control_recv) = conn.open_bi().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // FIND_NODE first, split over two packets, on stream 4...
    let target = node.node_id();
    let frame = Forged::FindNode.frame(target);
    send.write_all(&frame[..5]).await.unwrap();
    sleep(Duration::from_millis(50)).await;
    send.write_all(&frame[5..]).await.unwrap();
    send.finish().unwrap();
    sleep(Duration::from_millis(200)).await;
    // ...then, late, the CONNECT on stream 0.
    control
        .write_all(&encode(&stranger.hello(realm())))
        .await
        .unwrap();
    let answer = timeout(LIMIT, recv.read_to_end(1 << 20))
        .await
        .expect("answered in time")
        .expect("the stream ends with the answer");
    let decoded = wire::decode(&answer, &Limits::default()).unwrap();
    let wire::Decoded::Complete(Message::FindNodeReply(reply), used) = decoded else {
        panic!("expected FIND_NODE_REPLY, got {decoded:?}");
    };
    assert_eq!(used, answer.len());
    assert_eq!(reply.request_id, 1);
    assert!(conn.close_reason().is_none(), "the connection stays open");
}
