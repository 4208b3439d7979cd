//! Pool hot paths against the `lru` crate, in one run.
//!
//! Three workloads at 100 and 10,000 entries, each on the pool and on
//! `lru::LruCache` (same keys, same fixed-seed hasher):
//!
//! - **acquire-hit**: acquire a ready, idle peer (pool) vs `get` of a present
//!   key (lru). Both promote the entry; the pool's lease is given back
//!   outside the timed part.
//! - **miss-evict**: a peer not in the pool at its cap: acquire (evicting the
//!   LRU idle entry), the connect reported done, the lease released (pool)
//!   vs a missing `get` plus a `push` that evicts (lru).
//! - **release**: giving back a lease (pool) vs `get` of a present key (lru:
//!   it has no release; `get` is its one touch).
//!
//! At 10,000 entries the hit workload also runs over a hot set of 100 of
//! them: the per-operation cost at the same cache footprint as the small
//! pool, which isolates the algorithm from the memory hierarchy.
//!
//! Keys are visited in a shuffled order, so neither side gets a sequential
//! memory pattern. Each benchmark records its fastest sample (ns/op); the
//! summary prints pool/lru ratios and the 10,000/100 ratio of each pool path.
//! Targets (issue 4): hit path within 1.5x of `lru::get`; no path slower per
//! operation at 10,000 entries than at 100.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use criterion::Criterion;
use lru::LruCache;
use macula::Child;
use macula::collections::FixedState;
use macula::id::NodeId;
use macula::pool::{Acquired, Action, Lease, Pool, PoolConfig};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 2] = [100, 10_000];
/// Size of the hot set touched in the large pool's second hit workload.
const HOT: usize = 100;
const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4433);

/// Timing is what a benchmark does: the ban on clocks is for the core.
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

fn keys(count: usize, rng: &mut ChaCha8Rng) -> Vec<NodeId> {
    (0..count)
        .map(|_| {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            NodeId::from_bytes(bytes)
        })
        .collect()
}

/// A pool at its outbound cap `keys.len()`, every entry ready and idle.
fn full_pool(keys: &[NodeId], now: Instant) -> Pool {
    let config = PoolConfig {
        max_outbound: keys.len(),
        ..PoolConfig::new(NodeId::from_bytes([0; 32]))
    };
    let mut pool = Pool::new(config).expect("valid config");
    for &key in keys {
        let lease = connect(&mut pool, key, now);
        pool.release(now, lease);
    }
    pool
}

/// Acquires `key`, which must miss, and completes its connect: the lease.
fn connect(pool: &mut Pool, key: NodeId, now: Instant) -> Lease {
    let Ok(Acquired::Waiting(_)) = pool.acquire(now, key, ADDR) else {
        panic!("expected a miss");
    };
    let mut granted = None;
    while let Some(action) = pool.poll_output() {
        match action {
            Action::Connect { peer, conn, .. } => pool.handle_connected(now, peer, conn),
            Action::Ready { lease, .. } => granted = Some(lease),
            _ => {}
        }
    }
    granted.expect("the connect completes at once")
}

fn hit(pool: &mut Pool, key: NodeId, now: Instant) -> Lease {
    match pool.acquire(now, key, ADDR) {
        Ok(Acquired::Ready(lease)) => lease,
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// The fastest ns/op seen per benchmark name.
struct Best(RefCell<BTreeMap<String, f64>>);

impl Best {
    fn record(&self, name: &str, elapsed: Duration, ops: u64) {
        let per_op = elapsed.as_nanos() as f64 / ops.max(1) as f64;
        let mut best = self.0.borrow_mut();
        let entry = best.entry(name.to_owned()).or_insert(f64::INFINITY);
        *entry = entry.min(per_op);
    }

    /// The fastest ns/op of `name` at `size`, if it ran (a filter may skip it).
    fn get(&self, name: &str, size: usize) -> Option<f64> {
        self.0.borrow().get(&format!("{name}/{size}")).copied()
    }
}

/// Runs `op` on `iters` keys in batches of at most `batch`, timing only
/// the `op` loop; `reset` (untimed) restores the state after each batch.
fn batched<S>(
    iters: u64,
    keys: &[NodeId],
    cursor: &mut usize,
    state: &mut S,
    mut op: impl FnMut(&mut S, NodeId),
    mut reset: impl FnMut(&mut S),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let batch = (iters - done).min(keys.len() as u64) as usize;
        let start = clock();
        for i in 0..batch {
            op(state, keys[(*cursor + i) % keys.len()]);
        }
        total += start.elapsed();
        reset(state);
        *cursor = (*cursor + batch) % keys.len();
        done += batch as u64;
    }
    total
}

fn bench_size(c: &mut Criterion, best: &Best, size: usize) {
    let now = clock();
    let mut rng = ChaCha8Rng::seed_from_u64(size as u64);
    let resident = keys(size, &mut rng);
    let mut order = resident.clone();
    order.shuffle(&mut rng);
    let cap = NonZeroUsize::new(size).expect("non-zero size");
    let mut group = c.benchmark_group(format!("pool/{size}"));
    let record = |group: &mut criterion::BenchmarkGroup<_>,
                  name: &str,
                  f: &mut dyn FnMut(u64) -> Duration| {
        let full = format!("{name}/{size}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = f(iters);
                best.record(&full, elapsed, iters);
                elapsed
            })
        });
    };

    // acquire-hit: over all entries, and (in a large pool) over a hot set
    // of HOT entries, which separates the per-operation cost from the cache
    // footprint of the keys touched.
    let mut pool = full_pool(&resident, now);
    let mut leases = Vec::with_capacity(size);
    let mut lru: LruCache<NodeId, u64, FixedState> = LruCache::with_hasher(cap, FixedState);
    for (i, &key) in resident.iter().enumerate() {
        lru.put(key, i as u64);
    }
    let mut sink = Vec::with_capacity(size);
    let hot = &order[..HOT.min(size)];
    let sets: &[(&str, &[NodeId])] = match size > HOT {
        true => &[("", &order), ("-hot100", hot)],
        false => &[("", &order)],
    };
    for &(suffix, keys) in sets {
        let mut cursor = 0;
        record(
            &mut group,
            &format!("pool-acquire-hit{suffix}"),
            &mut |iters| {
                batched(
                    iters,
                    keys,
                    &mut cursor,
                    &mut (&mut pool, &mut leases),
                    |(pool, leases), key| leases.push(hit(pool, key, now)),
                    |(pool, leases)| leases.drain(..).for_each(|l| pool.release(now, l)),
                )
            },
        );
        let mut cursor = 0;
        record(&mut group, &format!("lru-get-hit{suffix}"), &mut |iters| {
            batched(
                iters,
                keys,
                &mut cursor,
                &mut (&mut lru, &mut sink),
                |(lru, sink), key| sink.push(*lru.get(&key).expect("present")),
                |(_, sink)| sink.clear(),
            )
        });
    }

    // release
    let mut cursor = 0;
    record(&mut group, "pool-release", &mut |iters| {
        let mut total = Duration::ZERO;
        let mut done = 0u64;
        while done < iters {
            let batch = (iters - done).min(size as u64) as usize;
            leases.extend((0..batch).map(|i| hit(&mut pool, order[(cursor + i) % size], now)));
            let start = clock();
            for lease in leases.drain(..) {
                pool.release(now, lease);
            }
            total += start.elapsed();
            cursor = (cursor + batch) % size;
            done += batch as u64;
        }
        total
    });

    // miss-evict: cycle through twice as many keys as fit, so every access
    // misses and evicts the least recently used entry.
    let mut cycle = resident.clone();
    cycle.extend(keys(size, &mut rng));
    let mut cursor = size; // the second half is not resident yet
    record(&mut group, "pool-miss-evict", &mut |iters| {
        batched(
            iters,
            &cycle,
            &mut cursor,
            &mut pool,
            |pool, key| {
                let lease = connect(pool, key, now);
                pool.release(now, lease);
            },
            |_| {},
        )
    });

    let mut cursor = size;
    record(&mut group, "lru-miss-evict", &mut |iters| {
        batched(
            iters,
            &cycle,
            &mut cursor,
            &mut lru,
            |lru, key| {
                if lru.get(&key).is_none() {
                    black_box(lru.push(key, 0));
                }
            },
            |_| {},
        )
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let best = Best(RefCell::new(BTreeMap::new()));
    for size in SIZES {
        bench_size(&mut c, &best, size);
    }
    c.final_summary();

    let show = |x: Option<f64>, unit: &str| x.map_or("-".to_owned(), |x| format!("{x:.2}{unit}"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    println!("\nfastest sample, ns/op         100      10000   10000/100");
    for name in [
        "pool-acquire-hit",
        "lru-get-hit",
        "pool-release",
        "pool-miss-evict",
        "lru-miss-evict",
    ] {
        let (small, large) = (best.get(name, 100), best.get(name, 10_000));
        let scale = show(ratio(large, small), "x");
        println!(
            "{name:<24} {:>10} {:>10} {scale:>10}",
            show(small, ""),
            show(large, "")
        );
    }
    let hot = |name: &str| best.get(&format!("{name}-hot100"), 10_000);
    for name in ["pool-acquire-hit", "lru-get-hit"] {
        let scale = show(ratio(hot(name), best.get(name, 100)), "x");
        let label = format!("{name}, 100 hot of 10000");
        println!("{label:<35} {:>10} {scale:>10}", show(hot(name), ""));
    }
    println!("\npool / lru                            100      10000");
    for (pool, lru) in [
        ("pool-acquire-hit", "lru-get-hit"),
        ("pool-release", "lru-get-hit"),
        ("pool-miss-evict", "lru-miss-evict"),
    ] {
        let at = |size| show(ratio(best.get(pool, size), best.get(lru, size)), "x");
        println!("{pool:<17} / {lru:<14} {:>7} {:>10}", at(100), at(10_000));
    }
}
