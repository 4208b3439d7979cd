//! The demo's RPC part: the last node serves `demo.greet`, node 1 calls it
//! once (the provider is looked up in the DHT) and then many times over the
//! pooled connection, checking every reply.

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use macula::id::{NodeId, Realm, RecordKey, RecordKind};
use macula::node::Event;
use macula_tokio::{CallOptions, Events, MaculaNode, ProcedureOptions, Request};

use super::{Problems, REALM, SEED, name};
use crate::announced;
use crate::failure::Failure;
use crate::latency::{Latencies, Ms};
use crate::progress::Step;
use crate::settings::DEFAULT_TIMEOUT;

/// The procedure the demo serves.
const PROCEDURE: &str = "demo.greet";

/// The caller.
pub const CALLER: usize = 1;

/// The reply `demo.greet` gives to `payload`.
fn greeting(payload: &[u8]) -> Bytes {
    let mut reply = b"hello, ".to_vec();
    reply.extend_from_slice(payload);
    Bytes::from(reply)
}

/// Serves, calls, prints the latencies; returns what went wrong.
/// `caller_events` are the caller's events since before it joined.
pub async fn run(
    nodes: &[MaculaNode],
    mut caller_events: Events,
    calls: u32,
) -> Result<Problems, Failure> {
    let provider_index = nodes.len() - 1;
    let (provider, caller) = (&nodes[provider_index], &nodes[CALLER]);
    println!(
        "\nRPC: {} serves {PROCEDURE}; {} calls it",
        name(provider_index, nodes),
        name(CALLER, nodes)
    );

    let step = Step::start(
        format!("registering {PROCEDURE} and announcing it in the DHT"),
        0,
    );
    let _serving = provider
        .register(
            PROCEDURE,
            ProcedureOptions::default(),
            |request: Request| async move { Ok(greeting(&request.payload)) },
        )
        .await
        .map_err(|e| Failure::other(format!("cannot register {PROCEDURE}: {e}")))?;
    let realm = Realm::new(REALM).map_err(|e| Failure::other(e.to_string()))?;
    let key = RecordKey::new(&realm, RecordKind::Rpc, PROCEDURE);
    let what = format!("the provider record of {PROCEDURE}");
    announced::wait_for(
        &nodes[SEED],
        key,
        provider.node_id(),
        DEFAULT_TIMEOUT,
        &what,
    )
    .await?;
    step.finish(&format!("visible from node {SEED}"));

    let mut problems = Problems::new();
    let options = CallOptions::with_timeout(DEFAULT_TIMEOUT);
    let connected = connected_to(&mut caller_events, provider.node_id()).await;
    let started = Instant::now();
    let first = caller
        .call(PROCEDURE, Bytes::from_static(b"mesh"), options)
        .await;
    let first_latency = started.elapsed();
    check(&mut problems, "first call", first, b"mesh");
    let how = if connected {
        "provider lookup in the DHT + call on the connection open since bootstrap"
    } else {
        "provider lookup in the DHT + a new QUIC connection + call"
    };
    println!("  first call    {} ({how})", Ms(first_latency));

    let step = Step::start(format!("{calls} calls one after another"), calls as usize);
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for i in 0..calls {
        let payload = format!("call {i}");
        let sent = Instant::now();
        let reply = caller
            .call(PROCEDURE, Bytes::from(payload.clone()), options)
            .await;
        latencies.push(sent.elapsed());
        check(&mut problems, &payload, reply, payload.as_bytes());
        step.advance(i as usize + 1);
    }
    let total = started.elapsed();
    step.finish(&format!("{} answered", latencies.len()));
    println!(
        "  pooled calls  {} over {calls} calls ({:.0} calls/s, provider cached, connection pooled)",
        latencies.summary(),
        f64::from(calls) / total.as_secs_f64().max(f64::EPSILON)
    );
    Ok(problems)
}

/// Records a problem unless `reply` is the greeting for `payload`.
fn check(
    problems: &mut Problems,
    what: &str,
    reply: Result<Bytes, macula_tokio::CallError>,
    payload: &[u8],
) {
    match reply {
        Ok(reply) if reply == greeting(payload) => {}
        Ok(reply) => problems.push(format!(
            "{what}: wrong reply {:?}",
            String::from_utf8_lossy(&reply)
        )),
        Err(error) => problems.push(format!("{what}: {error}")),
    }
}

/// Whether `events` (pending ones only, without waiting) show a
/// connection to `peer` that is still up.
async fn connected_to(events: &mut Events, peer: NodeId) -> bool {
    let mut up = false;
    // A zero timeout still polls the receive once: it takes what is pending.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, events.recv()).await {
        match event {
            Event::Connected { peer: p, .. } if p == peer => up = true,
            Event::Disconnected { peer: Some(p), .. } if p == peer => up = false,
            _ => {}
        }
    }
    up
}
