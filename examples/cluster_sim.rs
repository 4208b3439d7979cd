//! The chaos cluster's plan and fault schedule, and the cluster in the simulator.
//!
//! ```text
//! cluster_sim plan --nodes N
//!     one line per node: INDEX HOST relay|- FLAGS (cluster_node's workload flags)
//! cluster_sim schedule --seed S --nodes N --minutes M
//!     the fault schedule, one line per fault: AT_MS KIND TARGET LASTS_MS
//! cluster_sim run --seed S --nodes N --minutes M [--no-faults] [--out DIR]
//!     the cluster in the simulator with that schedule; writes faults.jsonl, merged.jsonl
//!     and topology.jsonl to DIR (default: a temporary directory) and runs
//!     tests/cluster/check.py over them (its lines, then `sim_wall_s=`)
//! cluster_sim sweep --seeds A..B --nodes N --minutes M
//!     runs seeds A to B in turn and stops at the first one that breaks an invariant:
//!     `first_failing_seed=S` (exit 1), or `first_failing_seed=none`
//! ```
//!
//! `tests/cluster/run` reads `plan` and `schedule`, so the live run and the simulated
//! one play the same workload and faults; a seed that fails live replays here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use macula::sim::cluster::plan::{MIN_NODES, roles};
use macula::sim::cluster::scenario::{ClusterConfig, ClusterLogs, run};
use macula::sim::cluster::schedule::schedule;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => (args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a value")),
    }
}

fn minutes(args: &[String]) -> Result<Duration, String> {
    let m: f64 = arg(args, "--minutes", 2.0)?;
    Duration::try_from_secs_f64(m * 60.0).map_err(|_| "bad --minutes".to_owned())
}

fn write(dir: &Path, logs: &ClusterLogs) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (name, lines) in [
        ("faults.jsonl", &logs.faults),
        ("merged.jsonl", &logs.history),
        ("topology.jsonl", &logs.topology),
    ] {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the checker over a run's logs in `dir`: (passed, its output).
fn check(dir: &Path) -> Result<(bool, String), String> {
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/check.py");
    let out = Command::new("python3")
        .arg(checker)
        .arg("--faults")
        .arg(dir.join("faults.jsonl"))
        .arg("--history")
        .arg(dir.join("merged.jsonl"))
        .arg("--topology")
        .arg(dir.join("topology.jsonl"))
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

// The wall clock anchors the virtual one and times the run.
#[allow(clippy::disallowed_methods)]
fn simulate(
    seed: u64,
    nodes: usize,
    total: Duration,
    faults: bool,
    dir: &Path,
) -> Result<(bool, String), String> {
    let wall = Instant::now();
    let logs = run(
        &ClusterConfig {
            seed,
            nodes,
            total,
            faults,
        },
        Instant::now(),
    );
    write(dir, &logs)?;
    let (passed, text) = check(dir)?;
    Ok((
        passed,
        format!("{text}sim_wall_s={:.1}", wall.elapsed().as_secs_f64()),
    ))
}

fn scratch(seed: u64) -> PathBuf {
    std::env::temp_dir().join(format!("cluster_sim.{}.{seed}", std::process::id()))
}

fn main() -> ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cluster_sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_cli() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: usize = arg(&args, "--nodes", 30)?;
    if nodes < MIN_NODES {
        return Err(format!("--nodes: at least {MIN_NODES}"));
    }
    match args.first().map(String::as_str) {
        Some("plan") => {
            for role in roles(nodes) {
                let relay = if role.relay { "relay" } else { "-" };
                println!(
                    "{} {} {relay} {}",
                    role.index,
                    role.host,
                    role.flags().join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("schedule") => {
            for fault in schedule(arg(&args, "--seed", 1)?, nodes, minutes(&args)?) {
                println!("{fault}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("run") => {
            let seed = arg(&args, "--seed", 1)?;
            let dir = args
                .iter()
                .position(|a| a == "--out")
                .and_then(|i| args.get(i + 1));
            let dir = dir.map_or_else(|| scratch(seed), PathBuf::from);
            let faults = !args.iter().any(|a| a == "--no-faults");
            let (passed, text) = simulate(seed, nodes, minutes(&args)?, faults, &dir)?;
            println!("{text}\nlogs in {}", dir.display());
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some("sweep") => {
            let range: String = arg(&args, "--seeds", "1..200".to_owned())?;
            let (from, to) = range.split_once("..").ok_or("--seeds A..B")?;
            let from: u64 = from.parse().map_err(|_| "--seeds A..B")?;
            let to: u64 = to.parse().map_err(|_| "--seeds A..B")?;
            for seed in from..=to {
                let dir = scratch(seed);
                let (passed, text) = simulate(seed, nodes, minutes(&args)?, true, &dir)?;
                let last = text
                    .lines()
                    .rfind(|l| l.starts_with("nodes="))
                    .unwrap_or("");
                let wall = text.lines().last().unwrap_or("");
                println!("seed={seed} {last} {wall}");
                if !passed {
                    println!(
                        "{text}\nlogs in {}\nfirst_failing_seed={seed}",
                        dir.display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            println!("first_failing_seed=none");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err("usage: cluster_sim plan | schedule | run | sweep (see the source's docs)".into()),
    }
}
