//! An idle node sleeps: once bootstrapped, two nodes with nothing to do use
//! almost no CPU. A behaviour check on sleeping (one timer, no busy loop),
//! not a performance claim. Its own test binary, so the process's CPU time
//! is these nodes' alone.

use std::time::Duration;

mod common;
use common::{find, join, start};

/// CPU time (user + system) this process used so far, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks of the fixed
/// 100 Hz `USER_HZ`, so 10 ms resolution).
#[cfg(target_os = "linux")]
fn process_cpu_time() -> Duration {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name may hold spaces: count fields after its closing ')'.
    let after_name = &stat[stat.rfind(')').expect("comm field") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

/// The measure sees work: spinning shows up as CPU time. It spins until
/// 100 ms of CPU are counted (at most 10 s of wall time), so a loaded
/// machine that gives the spin less than a full core does not fail it.
#[cfg(target_os = "linux")]
fn check_the_measure() {
    let before = process_cpu_time();
    let start = tokio::time::Instant::now();
    let mut spins = 0u64;
    while process_cpu_time() - before < Duration::from_millis(100) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "10 s of spinning never showed 100 ms of CPU time"
        );
        for _ in 0..100_000 {
            spins = std::hint::black_box(spins + 1);
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_idle_bootstrapped_node_uses_under_50_ms_of_cpu_in_5_s() {
    let nodes = start(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    join(b, a.contact()).await;
    find(a, b.node_id()).await;
    // Let the bucket refreshes that follow a bootstrap finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_the_measure();

    let (cpu, wakeups) = (
        process_cpu_time(),
        a.counters().wakeups + b.counters().wakeups,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = process_cpu_time() - cpu;
    let woke = a.counters().wakeups + b.counters().wakeups - wakeups;
    eprintln!(
        "idle for 5 s: {} ms of CPU, {woke} wake-ups (two nodes)",
        used.as_millis()
    );
    assert!(
        used < Duration::from_millis(50),
        "idle nodes used {used:?} of CPU"
    );
    // Keep-alives come every 15 s; a busy loop would wake thousands of times.
    assert!(woke < 50, "idle nodes woke {woke} times in 5 s");
}
