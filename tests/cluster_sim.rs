//! The chaos cluster in the simulator (`macula::sim::cluster`, issue 17): the same seed
//! replays the same run, and the run plays the fault schedule the live run reads.
#![cfg(feature = "sim")]

mod common;

use std::time::Duration;

use macula::sim::cluster::scenario::{ClusterConfig, run};
use macula::sim::cluster::schedule::{Fault, schedule};

fn config(seed: u64) -> ClusterConfig {
    ClusterConfig {
        seed,
        nodes: 12,
        total: Duration::from_secs(25),
        faults: true,
    }
}

/// The `kind` of each fault-log line, in order.
fn kinds(faults: &[String]) -> Vec<String> {
    (faults.iter())
        .filter_map(|line| line.split("\"kind\":\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_seed_replays_the_same_history_and_plays_the_schedule_the_live_run_reads() {
    let seed = 5;
    let first = run(&config(seed), common::epoch());
    let again = run(&config(seed), common::epoch());
    assert_eq!(first, again, "the same seed, the same logs");

    let planned = schedule(seed, 12, config(seed).total);
    assert!(!planned.is_empty(), "seed {seed} has faults in 25 s");
    let mut expected = vec!["begin".to_owned()];
    for fault in &planned {
        expected.extend(
            match fault.fault {
                Fault::Kill { .. } => ["kill9", "restart"].as_slice(),
                Fault::Stop { .. } => &["stop", "restart"],
                Fault::Partition { .. } => &["partition", "heal"],
                Fault::NatReboot { .. } => &["nat_reboot"],
                Fault::Readdress { .. } => &["readdress"],
            }
            .iter()
            .map(|k| (*k).to_owned()),
        );
    }
    expected.push("end".to_owned());
    assert_eq!(kinds(&first.faults), expected);

    // Every node started, and the workload ran: calls, replies, publications.
    let count = |ev: &str| {
        let tag = format!("\"ev\":\"{ev}\"");
        first.history.iter().filter(|l| l.contains(&tag)).count()
    };
    assert!(count("start") >= 12);
    assert!(count("reply") > 50 && count("pub") > 50 && count("dlv") > 50);
    assert_eq!(first.topology.len(), 12);
}
