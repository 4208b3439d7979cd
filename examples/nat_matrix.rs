//! The NAT matrix: every ordered pair of NAT kinds (open, full cone, address-restricted,
//! port-restricted, symmetric with random and with sequential ports, Linux masquerade with
//! the conntrack quirk, carrier-grade double NAT) plus two hosts behind one NAT without
//! hairpinning, at 50 ms RTT and ~2% loss per NAT-to-NAT path.
//!
//! ```sh
//! cargo run --release --features sim --example nat_matrix -- --seed 1 [--phase 4] [--discover | --records] [--ladder | --machine --runs 5]
//! ```
//!
//! Default: real Nodes (`macula::sim::node_lab`). Side A dials side B through a
//! public relay; every 20 ms A calls B's echo with a numbered call and publishes a
//! numbered message on a topic B subscribes to, while the connection upgrades to a direct
//! path; then the direct route is cut and the stream goes on across the fall back to the
//! relay. Per pair: connected (through the relay), direct (both sides switched), punch time
//! (relayed connection up → first switch), upgrade time (the first side's switch, the
//! moment the direct path answered → the second side's), fell back, calls and calls lost,
//! publishes and publishes lost, duplicated and reordered. The final line's `messages` is
//! every call and publish of the run, `lost_messages` every one that went wrong.
//!
//! `--phase S`: how long the stream runs before the direct route is cut, and again after
//! (4 s by default; longer runs reach the later life of a pair: lookups due again, keep-
//! alives, the relay connection through a lossy burst).
//!
//! `--ladder`: the node matrix once per rung of the link ladder (`macula::sim::ladder`,
//! good Wi-Fi to very bad cellular and satellite): side A's own access link is the rung,
//! both directions, on top of the same topology without its per-link loss; one summary
//! line per rung.
//!
//! `--discover`: the nodes run their own NAT discovery against the relay (their one
//! reflector) and punch with what it found, instead of the candidates and class the lab
//! hands them; they then also publish peer records, so a side can dial the other again by
//! record after their connection closed.
//!
//! `--records`: the nodes run their discovery too, so they publish peer records, and once
//! it has ended the lab hands them their candidates and class as it does by default.
//!
//! `--machine`: the punch machine alone between two sim hosts that gathered candidates
//! from STUN reflectors (`macula::sim::punch_lab`), several seeds per pair.

use std::time::Duration;

use macula::sim::ladder::Rung;
use macula::sim::node_lab::{NatKnowledge, NodeLabConfig, NodePairReport, run_node_pair};
use macula::sim::punch_lab::{LabConfig, Pairing, run_pair};

fn main() {
    let (mut seed, mut runs, mut machine, mut ladder) = (1u64, 5u64, false, false);
    let mut lab = NodeLabConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--machine" => machine = true,
            "--ladder" => ladder = true,
            "--discover" => lab.knowledge = NatKnowledge::Discovered,
            "--records" => lab.knowledge = NatKnowledge::HandedWithRecords,
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(usage)
            }
            "--phase" => {
                let secs = args.next().and_then(|v| v.parse().ok());
                lab.phase = Duration::from_secs(secs.unwrap_or_else(usage));
            }
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(usage)
            }
            _ => usage(),
        }
    }
    if machine {
        machine_matrix(seed, runs.max(1));
    } else if ladder {
        ladder_matrix(NodeLabConfig { seed, ..lab });
    } else {
        node_matrix(NodeLabConfig { seed, ..lab });
    }
}

fn usage<T>() -> T {
    eprintln!(
        "usage: nat_matrix [--seed S] [--phase S] [--discover | --records] [--ladder | --machine [--runs N]]"
    );
    std::process::exit(2)
}

fn node_matrix(config: NodeLabConfig) {
    println!(
        "{:<11} {:<11} {:>8} {:>9} {:>6} {:>8} {:>10} {:>9} {:>6} {:>10} {:>9} {:>8} {:>7} {:>9}",
        "a (dialer)",
        "b",
        "possible",
        "connected",
        "direct",
        "punch_ms",
        "upgrade_ms",
        "fell_back",
        "calls",
        "calls_lost",
        "publishes",
        "pub_lost",
        "pub_dup",
        "pub_reord"
    );
    let summary = matrix(&config, |r| {
        let (a, b) = r.pairing.names();
        let p = r.publishes;
        println!(
            "{a:<11} {b:<11} {:>8} {:>9} {:>6} {:>8} {:>10} {:>9} {:>6} {:>10} {:>9} {:>8} {:>7} {:>9}",
            r.possible,
            r.connected,
            r.direct,
            ms(r.punch_time),
            ms(r.upgrade_time),
            r.fell_back,
            r.calls,
            r.calls_lost,
            p.published,
            p.lost,
            p.duplicated,
            p.reordered
        );
    });
    println!(
        "calls in all: {}, publishes in all: {}",
        summary.calls, summary.publishes
    );
    println!("pairs={} {}", summary.pairs, summary.rates());
}

/// The node matrix once per rung, one line each (see the module docs).
fn ladder_matrix(lab: NodeLabConfig) {
    for rung in Rung::ALL {
        let config = NodeLabConfig {
            link_loss: 0.0,
            access: Some(rung.link()),
            ..lab.clone()
        };
        let mut missed = Vec::new();
        let summary = matrix(&config, |r| {
            if (r.possible && !r.direct) || r.lost_messages() > 0 || !r.connected {
                let (a, b) = r.pairing.names();
                missed.push(format!(
                    "{a}x{b}(direct={},lost={})",
                    r.direct,
                    r.lost_messages()
                ));
            }
        });
        println!(
            "rung={:<18} pairs={} {} missed=[{}]",
            rung.name(),
            summary.pairs,
            summary.rates(),
            missed.join(" ")
        );
    }
}

/// What a matrix run adds up to.
#[derive(Default)]
struct Summary {
    pairs: usize,
    connected: usize,
    direct: usize,
    possible: usize,
    direct_possible: usize,
    lost: usize,
    messages: usize,
    calls: usize,
    publishes: usize,
    upgrades: Vec<Duration>,
}

impl Summary {
    /// The rates and totals line.
    fn rates(&self) -> String {
        let mut upgrades = self.upgrades.clone();
        upgrades.sort();
        format!(
            "connected_rate={:.3} direct_rate={:.3} direct_when_possible_rate={:.3} upgrade_p50_ms={} upgrade_p99_ms={} lost_messages={} messages={}",
            self.connected as f64 / self.pairs as f64,
            self.direct as f64 / self.pairs as f64,
            self.direct_possible as f64 / self.possible.max(1) as f64,
            ms(percentile(&upgrades, 50)),
            ms(percentile(&upgrades, 99)),
            self.lost,
            self.messages,
        )
    }
}

/// Runs every pairing with `config`, handing each report to `each`.
fn matrix(config: &NodeLabConfig, mut each: impl FnMut(&NodePairReport)) -> Summary {
    let mut s = Summary::default();
    for pairing in Pairing::all() {
        let r = run_node_pair(pairing, config, epoch());
        s.pairs += 1;
        s.connected += usize::from(r.connected);
        s.direct += usize::from(r.direct);
        s.possible += usize::from(r.possible);
        s.direct_possible += usize::from(r.possible && r.direct);
        s.lost += r.lost_messages();
        s.messages += r.messages();
        s.calls += r.calls;
        s.publishes += r.publishes.published;
        s.upgrades.extend(r.upgrade_time);
        each(&r);
    }
    s
}

fn machine_matrix(seed: u64, runs: u64) {
    println!(
        "{:<11} {:<11} {:>8} {:>7} {:>9} {:>9}",
        "a (opener)", "b", "possible", "direct", "p50_ms", "max_ms"
    );
    let (mut total, mut direct_runs, mut possible_runs, mut direct_possible_runs) = (0, 0, 0, 0);
    for pairing in Pairing::all() {
        let mut times = Vec::new();
        let mut direct = 0;
        for run in 0..runs {
            let config = LabConfig {
                seed: seed.wrapping_mul(1000).wrapping_add(run),
                ..LabConfig::default()
            };
            let report = run_pair(pairing, &config, epoch());
            direct += u64::from(report.direct);
            times.extend(report.punch_time);
        }
        total += runs;
        direct_runs += direct;
        if pairing.possible() {
            possible_runs += runs;
            direct_possible_runs += direct;
        }
        times.sort();
        let (a, b) = pairing.names();
        println!(
            "{a:<11} {b:<11} {:>8} {:>7} {:>9} {:>9}",
            pairing.possible(),
            format!("{direct}/{runs}"),
            ms(percentile(&times, 50)),
            ms(times.last().copied()),
        );
    }
    println!(
        "runs={total} direct_rate={:.3} direct_when_possible_rate={:.3} (punch time: agreed start to both sides' winning answer)",
        direct_runs as f64 / total as f64,
        direct_possible_runs as f64 / possible_runs.max(1) as f64,
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

/// The virtual clock's first instant: this program's one clock reading.
#[allow(clippy::disallowed_methods)]
fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
