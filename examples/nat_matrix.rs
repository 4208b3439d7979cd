//! The hole-punch matrix: every ordered pair of NAT kinds (and two hosts behind one NAT
//! without hairpinning) in the simulator, at 50 ms RTT and 2% loss, several seeds each.
//!
//! ```sh
//! cargo run --release --features sim --example nat_matrix -- --seed 1 [--runs 5]
//! ```
//!
//! What it measures: the punch machine (`macula::nat::punch`) between two sim hosts that
//! gathered their candidates from STUN reflectors and swapped them over a side channel
//! standing in for the relayed connection (`macula::nat::punch::lab`). Per pair: whether
//! the RFC 4787 oracle calls a direct path possible, how many runs went direct, and the
//! punch time (from the agreed start to the later side's winning answer). The Node-level
//! figures the issue also asks for — connected through the relay, messages lost across the
//! upgrade — are not measured here and print as `na`.

use std::time::Duration;

use macula::nat::punch::lab::{LabConfig, Pairing, run_pair};

fn main() {
    let mut seed = 1u64;
    let mut runs = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--seed", Some(v)) => seed = v,
            ("--runs", Some(v)) => runs = v.max(1),
            _ => {
                eprintln!("usage: nat_matrix [--seed S] [--runs N]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "{:<11} {:<11} {:>8} {:>7} {:>9} {:>9} {:>8}",
        "a (opener)", "b", "possible", "direct", "p50_ms", "max_ms", "skipped"
    );
    let (mut pairs, mut direct_runs, mut possible_runs, mut direct_possible_runs) = (0, 0, 0, 0);
    let mut all_times: Vec<Duration> = Vec::new();
    for pairing in Pairing::all() {
        pairs += 1;
        let mut times = Vec::new();
        let (mut direct, mut skipped) = (0, 0);
        for run in 0..runs {
            let config = LabConfig {
                seed: seed.wrapping_mul(1000).wrapping_add(run),
                ..LabConfig::default()
            };
            let report = run_pair(pairing, &config);
            direct += u64::from(report.direct);
            skipped += u64::from(report.skipped);
            times.extend(report.punch_time);
        }
        let possible = pairing.possible();
        direct_runs += direct;
        if possible {
            possible_runs += runs;
            direct_possible_runs += direct;
        }
        times.sort();
        all_times.extend(&times);
        let (a, b) = pairing.names();
        println!(
            "{a:<11} {b:<11} {possible:>8} {:>7} {:>9} {:>9} {skipped:>8}",
            format!("{direct}/{runs}"),
            ms(percentile(&times, 50)),
            ms(times.last().copied()),
        );
    }
    all_times.sort();
    let total_runs = pairs * runs;
    println!(
        "pairs={pairs} connected_rate=na direct_rate={:.3} direct_when_possible_rate={:.3} upgrade_p50_ms={} upgrade_p99_ms={} lost_messages=na",
        direct_runs as f64 / total_runs as f64,
        direct_possible_runs as f64 / possible_runs.max(1) as f64,
        ms(percentile(&all_times, 50)),
        ms(percentile(&all_times, 99)),
    );
    println!(
        "(upgrade_*: punch time from the agreed start to both sides' winning answer, machine level)"
    );
}

/// The `p`th percentile (nearest rank) of sorted `times`.
fn percentile(times: &[Duration], p: usize) -> Option<Duration> {
    let rank = (times.len() * p).div_ceil(100).max(1);
    times.get(rank - 1).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}
