//! The DHT at scale over the DHT-only network model.
//!
//! `cargo run --release --features sim --example dht_scale -- --nodes N
//! --lookups L --loss P --churn C --seed S [--stores M] [--rtt-ms R]
//! [--refresh-below B] [--paths D] [--near-margin-percent M]`
//! prints one line of key=value figures (see issue 3).

use std::time::{Duration, Instant};

use macula::dht::DhtConfig;
use macula::sim::dht_net::SimConfig;
use macula::sim::dht_scale::{Scale, ScaleConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}"))
        })
        .unwrap_or(default)
}

/// Peak resident set size in MB (Linux `VmHWM`), 0 when unknown.
fn max_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

// The wall clock only times the phases and anchors the virtual clock.
#[allow(clippy::disallowed_methods)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes = arg(&args, "--nodes", 1000usize);
    let lookups = arg(&args, "--lookups", 1000usize);
    let config = ScaleConfig {
        sim: SimConfig {
            nodes,
            rtt: Duration::from_millis(arg(&args, "--rtt-ms", 50u64)),
            jitter: 0.1,
            loss: arg(&args, "--loss", 0.0f64),
            join_spacing: Duration::from_millis(10),
            seed: arg(&args, "--seed", 1u64),
            dht: DhtConfig {
                bootstrap_refresh_below: arg(&args, "--refresh-below", 20usize),
                disjoint_paths: arg(&args, "--paths", 1usize),
                near_margin_percent: arg(
                    &args,
                    "--near-margin-percent",
                    DhtConfig::default().near_margin_percent,
                ),
                ..DhtConfig::default()
            },
        },
        lookups,
        stores: arg(&args, "--stores", lookups.div_ceil(10)),
        churn: arg(&args, "--churn", 0.0f64),
        spacing: Duration::from_millis(5),
    };
    let wall = Instant::now();
    let mut scale = Scale::new(config, wall);
    scale.bootstrap();
    let bootstrap_s = wall.elapsed().as_secs_f64();
    let wall = Instant::now();
    let r = scale.run();
    let lookup_s = wall.elapsed().as_secs_f64();
    println!(
        "nodes={nodes} lookups={} closest_found_rate={:.4} k_overlap={:.4} median_hops={} p90_hops={} median_latency_ms={:.1} p99_latency_ms={:.1} msgs_per_lookup={:.1} store_quorum_rate={:.4} bootstrap_s={bootstrap_s:.2} lookup_s={lookup_s:.2} max_rss_mb={:.0}",
        r.lookups,
        r.closest_found_rate,
        r.k_overlap,
        r.median_hops,
        r.p90_hops,
        r.median_latency_ms,
        r.p99_latency_ms,
        r.msgs_per_lookup,
        r.store_quorum_rate,
        max_rss_mb(),
    );
}
