//! The demo's last part: each node's metrics (the same numbers `macula
//! node --metrics-addr` serves to Prometheus).

use std::time::Duration;

use macula::metrics::{
    CallResult, ConnectionDirection, Histogram, MessageDirection, Metrics, RpcOutcome, StoreResult,
};
use macula_tokio::MaculaNode;

use crate::failure::Failure;

/// Prints one line of metrics per node.
pub async fn print(nodes: &[MaculaNode]) -> Result<(), Failure> {
    println!("\nmetrics (per node):");
    println!(
        "  {:<6} {:>9} {:>9} {:>11} {:>10} {:>9} {:>10} {:>10}",
        "node", "conns", "dht store", "rpc calls", "rpc p50", "published", "sent", "delivered"
    );
    for (index, node) in nodes.iter().enumerate() {
        let stats = node.stats().await?;
        let m = &stats.metrics;
        println!(
            "  {:<6} {:>9} {:>9} {:>11} {:>10} {:>9} {:>10} {:>10}",
            index,
            format!(
                "{} ({}+{})",
                stats.connections,
                m.connections.get(ConnectionDirection::Outbound),
                m.connections.get(ConnectionDirection::Inbound)
            ),
            format!(
                "{}/{}",
                m.dht_store_operations.get(StoreResult::Success),
                stores(m)
            ),
            format!(
                "{}/{}",
                m.rpc_calls.get(RpcOutcome::Ok),
                m.rpc_calls.iter().map(|(_, n)| n).sum::<u64>()
            ),
            median(m.rpc_call_latency.get(CallResult::Ok)),
            m.pubsub_messages.get(MessageDirection::Published),
            m.pubsub_messages.get(MessageDirection::Sent),
            m.pubsub_messages.get(MessageDirection::Delivered),
        );
    }
    println!("  conns: open now (ever dialed + ever accepted); dht store: succeeded/all;");
    println!("  rpc calls: ok/all; rpc p50: the histogram bucket holding the median");
    Ok(())
}

/// Store operations of any result.
fn stores(m: &Metrics) -> u64 {
    m.dht_store_operations.iter().map(|(_, n)| n).sum()
}

/// "≤ N ms" for the bucket holding the median, or "-".
fn median(histogram: &Histogram) -> String {
    match histogram.quantile_bound(0.5) {
        None => "-".into(),
        Some(None) => "> max".into(),
        Some(Some(bound)) => format!("<= {}", ms(bound)),
    }
}

fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
