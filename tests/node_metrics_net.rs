//! The relay and NAT traversal metric families in the simulator: two private nodes behind
//! Linux masquerade NATs connect through a public relay, punch, go direct, and fall back to
//! the relay when the direct route is cut. The relay's and the nodes' metrics move with each
//! step, and the families carry them as exported.
#![cfg(feature = "sim")]

mod common;

use common::epoch;
use std::time::Duration;

use macula::metrics::{
    ConnectionPath, Family, Label, Metrics, NatType, PunchResult, ReservationChange, Series, Value,
    Visitor,
};
use macula::sim::node_lab::{NodeLab, NodeLabConfig};
use macula::sim::punch_lab::{NatKind, Pairing};

/// The value of the series of `family` with exactly `labels`, as text (`None`: no such
/// series).
fn exported(metrics: &Metrics, family: &str, labels: &[Label]) -> Option<String> {
    struct Find<'a> {
        family: &'a str,
        labels: &'a [Label],
        found: Option<String>,
    }
    impl Visitor for Find<'_> {
        fn family(&mut self, family: &Family, series: &[Series<'_>]) {
            if family.name != self.family {
                return;
            }
            let one = series.iter().find(|s| s.labels == self.labels);
            self.found = one.map(|s| match s.value {
                Value::Counter(n) => n.to_string(),
                Value::Gauge(g) => g.to_string(),
                Value::Histogram(h) => format!("count={}", h.count()),
            });
        }
    }
    let mut find = Find {
        family,
        labels,
        found: None,
    };
    metrics.visit(&mut find);
    find.found
}

fn by_path(metrics: &Metrics) -> (u64, u64) {
    let paths = &metrics.connections_by_path;
    (
        *paths.get(ConnectionPath::Direct),
        *paths.get(ConnectionPath::Relayed),
    )
}

#[test]
fn relay_and_nat_families_follow_a_relayed_pair_through_upgrade_and_fallback() {
    let masquerade = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::LinuxMasquerade);
    let config = NodeLabConfig {
        seed: 11,
        link_loss: 0.0,
        retry_after: Duration::from_secs(30),
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(masquerade, &config, epoch());
    lab.connect().expect("connected through the relay");

    // The relay granted both reservations and opened one circuit.
    let relay = lab.world.machine(lab.relay()).metrics().clone();
    let granted = *relay.relay_reservations.get(ReservationChange::Granted);
    assert_eq!(granted, 2);
    assert_eq!(relay.relay_circuits, 1);
    assert_eq!(relay.relay_circuits_active, 1);
    assert_eq!(relay.relay_refusals.total(), 0);
    assert_eq!(
        exported(&relay, "relay_reservations_total", &[("change", "granted")]).as_deref(),
        Some("2")
    );
    for host in lab.sides() {
        let metrics = lab.world.machine(host).metrics();
        let acquired = *metrics.relay_reservations.get(ReservationChange::Acquired);
        assert_eq!(acquired, 1);
        assert_eq!(metrics.relay_connections, 1);
    }

    // Calls run; the pair punches and both go direct.
    lab.calls_for(Duration::from_secs(3));
    let forwarded = lab.world.machine(lab.relay()).metrics().relay_bytes;
    assert!(forwarded > 0);
    assert_eq!(forwarded, lab.forwarded());
    let (nat, pair) = (
        NatType::PortRestricted,
        [
            ("local_nat", "port_restricted"),
            ("remote_nat", "port_restricted"),
        ],
    );
    for host in lab.sides() {
        let node = lab.world.machine(host);
        let metrics = node.metrics();
        let punches = metrics.nat_punches.get(nat, nat);
        assert_eq!(punches.attempts, 1);
        assert_eq!(*punches.results.get(PunchResult::Success), 1);
        assert_eq!(punches.results.total(), 1);
        assert_eq!(metrics.nat_upgrade_time.count(), 1);
        assert!(metrics.nat_upgrade_time.sum() > Duration::ZERO);
        // The connection to the relay and the one to the peer, both direct.
        assert_eq!(by_path(metrics), (2, 0));
        let (direct, relayed) = node.connection_kinds();
        assert_eq!(by_path(metrics), (direct as u64, relayed as u64));
        let success = [("result", "success"), pair[0], pair[1]];
        assert_eq!(
            exported(metrics, "nat_punch_results_total", &success).as_deref(),
            Some("1")
        );
        assert_eq!(
            exported(metrics, "nat_punch_attempts_total", &pair).as_deref(),
            Some("1")
        );
        assert_eq!(
            exported(metrics, "p2p_connections_by_path", &[("path", "direct")]).as_deref(),
            Some("2")
        );
        assert_eq!(metrics.nat_fallbacks, 0);
    }

    // Cut the direct route: both fall back to the relay, which carries their traffic again.
    lab.cut(true);
    lab.calls_for(Duration::from_secs(3));
    let relay = lab.world.machine(lab.relay()).metrics();
    assert!(relay.relay_bytes > forwarded);
    assert_eq!(relay.relay_circuits, 1);
    for host in lab.sides() {
        let metrics = lab.world.machine(host).metrics();
        assert_eq!(metrics.nat_fallbacks, 1);
        assert_eq!(
            exported(metrics, "nat_fallbacks_total", &[]).as_deref(),
            Some("1")
        );
        assert_eq!(by_path(metrics), (1, 1));
        assert_eq!(metrics.nat_upgrade_time.count(), 1);
    }
    let (calls, lost) = lab.finish();
    assert_eq!(lost, 0, "of {calls}");
    let (a, relay) = (lab.sides()[0], lab.world.machine(lab.relay()).metrics());
    let upgrade = lab.world.machine(a).metrics().nat_upgrade_time.sum();
    println!(
        "calls={calls} upgrade_time_a={upgrade:?} relay_bytes={} relay_circuits={}",
        relay.relay_bytes, relay.relay_circuits
    );
}
