//! Admission over real UDP (docs/SECURITY.md): strangers with their own
//! identities (plain quinn) flood a running node with PINGs it may not
//! answer, and open more connections under one node id than it allows;
//! honest calls are answered meanwhile, and /metrics counts every refusal.

use std::time::Duration;

use bytes::Bytes;
use macula::id::RecordKind;
use macula::wire::{Message, Ping};
use macula_tokio::{
    CallOptions, HandlerError, MaculaNode, ProcedureOptions, Registration, Request,
};
use tokio::time::{sleep, timeout};

// Shared by the test crates; this one uses a part.
#[allow(dead_code)]
mod common;
use common::stranger::{Stranger, encode};
use common::{LIMIT, bind, join, realm, visible};

/// A seed, a provider of `svc.echo` (while the registration lives) and a
/// caller that found it.
async fn pair() -> (MaculaNode, MaculaNode, MaculaNode, Registration) {
    let seed = bind("127.0.0.1:0").await;
    let victim = bind("127.0.0.1:0").await;
    join(&victim, seed.contact()).await;
    let honest = bind("127.0.0.1:0").await;
    join(&honest, seed.contact()).await;
    let registration = victim
        .register(
            "svc.echo",
            ProcedureOptions::default(),
            |request: Request| async move { Ok::<_, HandlerError>(request.payload) },
        )
        .await
        .unwrap();
    // The caller calls once the provider record has spread (a caller
    // remembers an empty lookup for a while).
    visible(&honest, RecordKind::Rpc, "svc.echo", 1).await;
    (seed, victim, honest, registration)
}

async fn echo(caller: &MaculaNode) -> Bytes {
    let call = caller.call(
        "svc.echo",
        Bytes::from_static(b"hi"),
        CallOptions::default(),
    );
    timeout(LIMIT, call)
        .await
        .expect("in time")
        .expect("answered")
}

#[tokio::test]
async fn a_ping_flood_is_cut_off_and_honest_calls_go_on() {
    let (_seed, victim, honest, _registration) = pair().await;
    let stranger = Stranger::new([0x71; 32]);
    let (addr, id) = (victim.local_addr(), victim.node_id());
    let (conn, mut control, _pongs) = stranger.join(addr, id, stranger.hello(realm())).await;
    // 200,000 PINGs, PONGs never read.
    let pings: Vec<u8> = (0..200_000u64)
        .flat_map(|request_id| encode(&Message::from(Ping { request_id })))
        .collect();
    let flood = tokio::spawn(async move {
        let _ = timeout(Duration::from_secs(5), control.write_all(&pings)).await;
        control
    });
    for _ in 0..7 {
        assert_eq!(echo(&honest).await, Bytes::from_static(b"hi"));
        sleep(Duration::from_millis(100)).await;
    }
    let _control = flood.await.unwrap();
    // Far past the rate, the flooder was closed `protocol error` (2).
    let closed = timeout(LIMIT, conn.closed()).await.expect("closed in time");
    let quinn::ConnectionError::ApplicationClosed(close) = closed else {
        panic!("not closed by the victim: {closed:?}");
    };
    assert_eq!(close.error_code.into_inner(), 2);
    let metrics = victim.metrics().await.unwrap();
    let refusals = &metrics.admission.refusals;
    use macula::metrics::AdmissionRefusal::{Flooding, PingRate};
    assert!(
        *refusals.get(PingRate) > 0,
        "PINGs past the rate went unanswered"
    );
    assert_eq!(
        *refusals.get(Flooding),
        1,
        "one connection closed for flooding"
    );
}

#[tokio::test]
async fn one_node_id_gets_only_a_few_connections() {
    let (_seed, victim, honest, _registration) = pair().await;
    let (addr, id) = (victim.local_addr(), victim.node_id());
    // Twelve handshakes under one id, none saying CONNECT yet (a CONNECT
    // would let the pool keep one and close the others as duplicates).
    let stranger = Stranger::new([0x72; 32]);
    let mut conns = Vec::new();
    for _ in 0..12 {
        conns.push(stranger.connect(addr, id).await);
    }
    sleep(Duration::from_millis(300)).await;
    let overloaded = conns
        .iter()
        .filter(|conn| {
            matches!(conn.close_reason(), Some(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code.into_inner() == 4)
        })
        .count();
    assert_eq!(
        overloaded, 4,
        "8 connections per node id; the rest overloaded"
    );
    assert_eq!(echo(&honest).await, Bytes::from_static(b"hi"));
    let metrics = victim.metrics().await.unwrap();
    let refused = *metrics
        .admission
        .refusals
        .get(macula::metrics::AdmissionRefusal::NodeId);
    assert_eq!(refused, 4);
}
