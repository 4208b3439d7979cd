//! The scale scenario: bootstrap a network, kill some nodes, look up and
//! store, and grade the results against a brute-force oracle.
//!
//! Shared by `examples/dht_scale.rs` (which times the phases on the wall
//! clock) and the N = 1,000 test, so both measure the same thing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use crate::collections::HashMap;
use crate::id::{NodeId, RecordKey};

use super::dht_net::{Command, SimConfig, SimNet};
use crate::dht::{DhtEvent, QueryId};

/// What to run.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    /// The network.
    pub sim: SimConfig,
    /// Lookups of random ids from random live nodes.
    pub lookups: usize,
    /// Confirmed stores of random keys from random live nodes.
    pub stores: usize,
    /// Share of nodes that die silently after bootstrap.
    pub churn: f64,
    /// Virtual time between two operations being started.
    pub spacing: Duration,
}

/// How the lookups and stores went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleReport {
    /// Lookups that finished.
    pub lookups: usize,
    /// Share of lookups whose first result was the closest live node.
    pub closest_found_rate: f64,
    /// Mean share of the true k closest live nodes among the results.
    pub k_overlap: f64,
    /// Median discovery depth of the closest result.
    pub median_hops: f64,
    /// 90th percentile of the same.
    pub p90_hops: f64,
    /// Median lookup duration (virtual ms).
    pub median_latency_ms: f64,
    /// 99th percentile of the same.
    pub p99_latency_ms: f64,
    /// Mean requests sent per lookup.
    pub msgs_per_lookup: f64,
    /// Share of stores that reached their quorum.
    pub store_quorum_rate: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// A network being put through the scenario.
#[derive(Debug)]
pub struct Scale {
    config: ScaleConfig,
    net: SimNet,
}

impl Scale {
    /// A fresh network at virtual time `start`.
    pub fn new(config: ScaleConfig, start: Instant) -> Self {
        let net = SimNet::new(config.sim.clone(), start);
        Self { config, net }
    }

    /// The network.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// Every node joins; then `churn` of them die silently.
    pub fn bootstrap(&mut self) {
        self.net.bootstrap_all(Duration::from_secs(30));
        let n = self.config.sim.nodes;
        let dead = ((n as f64) * self.config.churn).round() as usize;
        let mut killed = 0;
        while killed < dead.min(n.saturating_sub(1)) {
            let i = self.net.rng().random_range(0..n);
            if self.net.is_alive(i) {
                self.net.kill(i);
                killed += 1;
            }
        }
    }

    fn random_live(&mut self) -> usize {
        let n = self.config.sim.nodes;
        loop {
            let i = self.net.rng().random_range(0..n);
            if self.net.is_alive(i) {
                return i;
            }
        }
    }

    /// Runs the lookups and stores and grades them.
    pub fn run(&mut self) -> ScaleReport {
        let k = self.config.sim.dht.k;
        let mut at = self.net.now();
        let mut expected = 0;
        for _ in 0..self.config.lookups {
            let from = self.random_live();
            let target = NodeId::from_bytes(self.net.rng().random());
            self.net.command(at, from, Command::FindNode(target));
            at += self.config.spacing;
            expected += 1;
        }
        for _ in 0..self.config.stores {
            let from = self.random_live();
            let key = RecordKey::from_bytes(self.net.rng().random());
            let value = Bytes::from(self.net.rng().random::<[u8; 32]>().to_vec());
            let timeout = Duration::from_secs(30);
            self.net
                .command(at, from, Command::Store(key, value, timeout));
            at += self.config.spacing;
            expected += 1;
        }
        let mut finished: HashMap<(usize, QueryId), DhtEvent> = HashMap::default();
        self.net
            .run_while_pending(|reported| reported.len() >= expected);
        for r in self.net.take_reported() {
            let query = match &r.event {
                DhtEvent::NodesFound { query, .. } | DhtEvent::StoreConfirmed { query, .. } => {
                    *query
                }
                _ => continue,
            };
            finished.insert((r.node, query), r.event);
        }
        let mut report = ScaleReport::default();
        let (mut hops, mut latency) = (Vec::new(), Vec::new());
        let (mut found, mut overlap, mut msgs) = (0usize, 0.0, 0u64);
        let (mut stores, mut quorate) = (0usize, 0usize);
        for event in finished.values() {
            match event {
                DhtEvent::NodesFound {
                    target,
                    closest,
                    stats,
                    ..
                } => {
                    let truth = self.net.oracle_closest(target, k);
                    report.lookups += 1;
                    if closest.first().map(|c| c.id) == truth.first().copied() {
                        found += 1;
                    }
                    let shared = closest.iter().filter(|c| truth.contains(&c.id)).count();
                    overlap += shared as f64 / truth.len().max(1) as f64;
                    msgs += u64::from(stats.requests);
                    hops.push(f64::from(stats.closest_depth.unwrap_or(u8::MAX)));
                    latency.push(stats.duration.as_secs_f64() * 1000.0);
                }
                DhtEvent::StoreConfirmed { success, .. } => {
                    stores += 1;
                    quorate += usize::from(*success);
                }
                _ => {}
            }
        }
        hops.sort_by(f64::total_cmp);
        latency.sort_by(f64::total_cmp);
        let lookups = report.lookups.max(1) as f64;
        report.closest_found_rate = found as f64 / lookups;
        report.k_overlap = overlap / lookups;
        report.median_hops = quantile(&hops, 0.5);
        report.p90_hops = quantile(&hops, 0.9);
        report.median_latency_ms = quantile(&latency, 0.5);
        report.p99_latency_ms = quantile(&latency, 0.99);
        report.msgs_per_lookup = msgs as f64 / lookups;
        report.store_quorum_rate = quorate as f64 / stores.max(1) as f64;
        report
    }
}
