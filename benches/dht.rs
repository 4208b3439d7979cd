//! DHT hot paths against sort-everything baselines, in one run.
//!
//! - **insert**: 10,000 contacts (40 in each of buckets 6-255, bucket size
//!   40) into an empty routing table, vs pushing them into a flat list that
//!   checks for duplicates (what a table without buckets does).
//! - **closest**: the 20 entries closest to a random target in that table,
//!   vs sorting all 10,000 entries by distance and taking 20.
//! - **lookup**: a whole iterative lookup over a 2,000-node network whose
//!   peers answer at once from their own routing tables; reported as lookup
//!   iterator steps (every `step` and `on_success` call) per second.
//!
//! Each benchmark records its fastest sample; the summary prints the ratios.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::Criterion;
use macula::dht::{ClosestPeersIter, Contact, LookupConfig, LookupStep, RoutingTable};
use macula::id::{Distance, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PER_BUCKET: usize = 40;
const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4433);

/// Timing is what a benchmark does: the ban on clocks is for the core.
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

/// `PER_BUCKET` random contacts in each bucket of `local` from 6 up (buckets
/// 0-5 cannot hold 40 distinct ids): 10,000 in all.
fn spread_contacts(local: &NodeId, rng: &mut ChaCha8Rng) -> Vec<Contact> {
    let mut out = Vec::new();
    for bucket in 6..256usize {
        let mut here: Vec<NodeId> = Vec::new();
        while here.len() < PER_BUCKET {
            let mut d: [u8; 32] = rng.random();
            let byte = 31 - bucket / 8;
            d[..byte].fill(0);
            d[byte] &= ((1u16 << (bucket % 8 + 1)) - 1) as u8;
            d[byte] |= 1 << (bucket % 8);
            let mut id = *local.as_bytes();
            id.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
            let id = NodeId::from_bytes(id);
            if !here.contains(&id) {
                here.push(id);
            }
        }
        out.extend(here.into_iter().map(|id| Contact::new(id, ADDR)));
    }
    out
}

/// The fastest ns/op per benchmark name.
#[derive(Default)]
struct Fastest(RefCell<BTreeMap<&'static str, f64>>);

impl Fastest {
    fn bench(&self, c: &mut Criterion, name: &'static str, mut op: impl FnMut() -> u64) {
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = clock();
                let mut per_op_units = 0;
                for _ in 0..iters {
                    per_op_units = black_box(op());
                }
                let elapsed = start.elapsed();
                let ns = elapsed.as_nanos() as f64 / iters as f64 / per_op_units.max(1) as f64;
                let mut best = self.0.borrow_mut();
                let slot = best.entry(name).or_insert(f64::MAX);
                *slot = slot.min(ns);
                elapsed
            })
        });
    }

    fn get(&self, name: &str) -> f64 {
        self.0.borrow().get(name).copied().unwrap_or(f64::NAN)
    }
}

/// The baseline: every entry keyed by its distance, sorted, the first 20.
fn sort_all(all: &[Contact], target: &NodeId) -> Vec<Contact> {
    let mut keyed: Vec<(Distance, &Contact)> =
        all.iter().map(|c| (target.distance(&c.id), c)).collect();
    keyed.sort_unstable_by_key(|(d, _)| *d);
    keyed.into_iter().take(20).map(|(_, c)| c.clone()).collect()
}

/// A network of `n` nodes, each table holding every other node the
/// k-bucket rules let in.
fn network(n: usize, rng: &mut ChaCha8Rng) -> (Vec<NodeId>, Vec<RoutingTable>) {
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId::from_bytes(rng.random())).collect();
    let tables = ids
        .iter()
        .map(|&me| {
            let mut t = RoutingTable::new(me, 20);
            for &other in &ids {
                t.insert(Contact::new(other, ADDR));
            }
            t
        })
        .collect();
    (ids, tables)
}

/// One lookup with immediate answers; returns the iterator steps taken.
fn lookup(
    ids: &[NodeId],
    index: &macula::collections::HashMap<NodeId, usize>,
    tables: &[RoutingTable],
    target: NodeId,
) -> u64 {
    let seeds = tables[0].closest(&target, 20, None);
    let mut it = ClosestPeersIter::new(target, LookupConfig::default(), seeds);
    let mut steps = 0;
    let mut asked = Vec::new();
    loop {
        steps += 1;
        match it.step() {
            LookupStep::Contact(c) => asked.push(c.id),
            LookupStep::Finished => break,
            LookupStep::Waiting | LookupStep::AtCapacity => {
                for peer in asked.drain(..) {
                    steps += 1;
                    let reply = tables[index[&peer]].closest(&target, 20, Some(&ids[0]));
                    it.on_success(&peer, reply);
                }
            }
        }
    }
    steps
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let fastest = Fastest::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let local = NodeId::from_bytes(rng.random());
    let contacts = spread_contacts(&local, &mut rng);

    fastest.bench(&mut c, "insert/table", || {
        let mut t = RoutingTable::new(local, PER_BUCKET);
        for contact in &contacts {
            t.insert(contact.clone());
        }
        assert_eq!(t.len(), contacts.len());
        contacts.len() as u64
    });
    fastest.bench(&mut c, "insert/flat-list", || {
        let mut list: Vec<Contact> = Vec::new();
        for contact in &contacts {
            if !list.iter().any(|c| c.id == contact.id) {
                list.push(contact.clone());
            }
        }
        contacts.len() as u64
    });

    let mut table = RoutingTable::new(local, PER_BUCKET);
    contacts.iter().for_each(|c| {
        table.insert(c.clone());
    });
    let targets: Vec<NodeId> = (0..64).map(|_| NodeId::from_bytes(rng.random())).collect();
    let mut i = 0;
    fastest.bench(&mut c, "closest/table", || {
        i = (i + 1) % targets.len();
        black_box(table.closest(&targets[i], 20, None));
        1
    });
    let all: Vec<Contact> = table.contacts().cloned().collect();
    let mut j = 0;
    fastest.bench(&mut c, "closest/sort-all", || {
        j = (j + 1) % targets.len();
        black_box(sort_all(&all, &targets[j]));
        1
    });
    // Same answers, or the comparison means nothing.
    for target in &targets {
        assert_eq!(table.closest(target, 20, None), sort_all(&all, target));
    }

    let (ids, tables) = network(2000, &mut rng);
    let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut n = 0u64;
    fastest.bench(&mut c, "lookup/steps", || {
        n += 1;
        let target = NodeId::from_bytes(ChaCha8Rng::seed_from_u64(n).random());
        lookup(&ids, &index, &tables, target)
    });
    c.final_summary();

    let ratio = |a: &str, b: &str| fastest.get(b) / fastest.get(a);
    println!("\nfastest sample                      ns/op   baseline ns/op   speed-up");
    println!(
        "insert (10,000 entries)        {:>10.1} {:>16.1} {:>9.1}x",
        fastest.get("insert/table"),
        fastest.get("insert/flat-list"),
        ratio("insert/table", "insert/flat-list")
    );
    println!(
        "closest 20 (10,000 entries)    {:>10.1} {:>16.1} {:>9.1}x",
        fastest.get("closest/table"),
        fastest.get("closest/sort-all"),
        ratio("closest/table", "closest/sort-all")
    );
    let step_ns = fastest.get("lookup/steps");
    println!(
        "lookup iterator: {:.1} ns/step = {:.2} M steps/s (2,000-node network, replies from routing tables)",
        step_ns,
        1e3 / step_ns
    );
}
