//! CPU time per call, with the caller's few connections and then with many
//! idle ones open beside them: what an idle connection costs the calls of
//! others. The seed, the provider and the caller (and the calling loop) run
//! on a thread of their own (a one-thread tokio runtime), whose CPU time
//! (`getrusage(RUSAGE_THREAD)`, user plus system) is what is measured; the
//! idle peers run on the bench's runtime, so their own work is not counted,
//! only what their connections cost the measured nodes (their keep-alives
//! among it: one exchange per connection per 15 s).

use std::time::Duration;

use macula::dht::Mode;
use macula::node::NodeConfig;
use macula_tokio::MaculaNode;
use tokio::task::JoinSet;

use super::common::clock;
use tokio::sync::oneshot;

use super::{Mesh, PATIENCE, bind, timed_call};

/// How many peers bootstrap at once while the idle connections open.
const DIALS_AT_ONCE: usize = 50;
/// How long the process rests before a series is timed.
const QUIET: Duration = Duration::from_secs(1);

/// Runs the future `make` builds on a thread of its own, in a one-thread
/// tokio runtime, so that thread's CPU time is the future's (and the tasks
/// it spawns).
pub fn on_own_thread<F, Fut>(make: F) -> std::thread::JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(make())
    })
}

/// The calling thread's CPU time so far (user and system).
pub fn thread_cpu_time() -> Duration {
    usage(libc::RUSAGE_THREAD)
}

/// `getrusage(who)`'s user plus system time.
fn usage(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage works");
    // SAFETY: it succeeded, so the value is initialised.
    let usage = unsafe { usage.assume_init() };
    let of = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    of(usage.ru_utime) + of(usage.ru_stime)
}

/// Settings for every node of the measurement: room for as many inbound
/// connections from loopback as it opens, kept while idle.
pub fn roomy(config: &mut NodeConfig) {
    let a = &mut config.admission;
    (a.max_per_ip, a.max_handshakes, a.max_awaiting_connect) = (4096, 4096, 4096);
    (a.handshakes_per_second, a.handshakes_per_network) = (100_000, 100_000);
    a.retry_above = 4096;
    (config.pool.max_inbound, config.pool.max_outbound) = (4096, 4096);
    config.pool.idle_ttl = Duration::from_secs(86_400);
}

/// Series each measurement is split into: its figure is their median, so a
/// burst of the machine's other work (this is a shared two-core VM, where one
/// whole series varied by 1.7× from run to run) moves one series, not the figure.
const SERIES: usize = 5;

/// CPU time of this thread per sequential call, in µs, after [`QUIET`]
/// without calls (whatever ran before, a handshake, a bootstrap, is over):
/// the median of [`SERIES`] series of `calls / SERIES` calls.
async fn per_call(mesh: &Mesh, calls: usize) -> f64 {
    tokio::time::sleep(QUIET).await;
    let each = (calls / SERIES).max(1);
    let mut series = Vec::with_capacity(SERIES);
    for _ in 0..SERIES {
        let before = thread_cpu_time();
        for _ in 0..each {
            timed_call(&mesh.caller).await;
        }
        series.push((thread_cpu_time() - before).as_secs_f64() * 1e6 / each as f64);
    }
    series.sort_by(f64::total_cmp);
    series[SERIES / 2]
}

/// What the measurement found.
pub struct CpuReport {
    /// The caller's connections in the first series.
    pub few: usize,
    /// The caller's connections in the second.
    pub many: usize,
    /// CPU µs per call in the first series.
    pub few_us: f64,
    /// And in the second.
    pub many_us: f64,
}

/// CPU time per call (after `warmup` calls) before and after `idle` peers
/// (DHT clients, so no node adds them to its table) bootstrap off the caller
/// and stay connected (module docs).
pub async fn per_call_cpu(calls: usize, idle: usize, warmup: usize) -> CpuReport {
    let (contact_tx, contact_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let measured = on_own_thread(move || async move {
        let mesh = super::mesh(roomy, |_| {}).await;
        for _ in 0..warmup {
            timed_call(&mesh.caller).await;
        }
        let stats = || async { mesh.caller.stats().await.expect("the node runs") };
        let few = stats().await.connections;
        let few_us = per_call(&mesh, calls).await;
        let _ = contact_tx.send(mesh.caller.contact());
        ready_rx.await.expect("the peers are up");
        let limit = clock() + PATIENCE;
        loop {
            // The idle peers' connections and at least the provider's.
            let open = stats().await.connections;
            let want = idle + 1;
            if open >= want {
                break;
            }
            assert!(
                clock() < limit,
                "gave up waiting for {want} connections: {open} open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let many = stats().await.connections;
        let many_us = per_call(&mesh, calls).await;
        CpuReport {
            few,
            many,
            few_us,
            many_us,
        }
    });
    let caller = contact_rx.await.expect("the measured mesh is up");
    let client = |c: &mut NodeConfig| {
        roomy(c);
        c.dht.mode = Mode::Client;
    };
    let mut peers: Vec<MaculaNode> = Vec::with_capacity(idle);
    while peers.len() < idle {
        let mut dials = JoinSet::new();
        for _ in 0..DIALS_AT_ONCE.min(idle - peers.len()) {
            let seed = caller.clone();
            dials.spawn(async move {
                let peer = bind(client).await;
                peer.bootstrap(vec![seed]).await.expect("a bootstrap");
                peer
            });
        }
        peers.extend(dials.join_all().await);
    }
    let _ = ready_tx.send(());
    let report = tokio::task::spawn_blocking(move || measured.join())
        .await
        .expect("the join runs")
        .expect("the measured thread ends");
    for peer in &peers {
        peer.shutdown().await;
    }
    report
}
