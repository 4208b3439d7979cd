//! The targets on a smaller run of the Node-level NAT matrix
//! (`examples/nat_matrix.rs` runs every pair): at 50 ms RTT and ~2% loss per NAT-to-NAT
//! path, every pair connects through the relay, every pair the RFC 4787 oracle allows
//! goes direct, the second side switches within 100 ms of the first (p50), and no message
//! of the stream running across the upgrade and the fall back (numbered calls, and
//! numbered publishes that must each arrive once and in order) is lost.
#![cfg(feature = "sim")]

mod common;

use common::epoch;
use std::time::Duration;

use macula::sim::node_lab::{NodeLabConfig, run_node_pair};
use macula::sim::punch_lab::{NatKind, Pairing};

#[test]
fn a_smaller_matrix_meets_the_targets() {
    use NatKind::*;
    let pairs = [
        Pairing::Separate(LinuxMasquerade, LinuxMasquerade),
        Pairing::Separate(SymmetricSequential, CarrierGradeDouble),
        Pairing::Separate(FullCone, SymmetricRandom),
        Pairing::Separate(LinuxMasquerade, SymmetricRandom),
        Pairing::Separate(Open, PortRestricted),
        Pairing::SharedNat,
    ];
    let config = NodeLabConfig {
        phase: Duration::from_secs(3),
        ..NodeLabConfig::default()
    };
    let mut upgrades = Vec::new();
    for pairing in pairs {
        let r = run_node_pair(pairing, &config, epoch());
        eprintln!("{r:?}");
        assert!(r.connected, "{r:?}");
        assert_eq!(r.direct, r.possible, "{r:?}");
        assert_eq!(r.lost_messages(), 0, "{r:?}");
        assert!(r.calls > 200, "{r:?}");
        assert_eq!(r.publishes.published, r.calls, "{r:?}");
        if r.direct {
            assert!(r.fell_back, "{r:?}");
            assert_eq!(r.relayed_after_upgrade, 0, "{r:?}");
            upgrades.extend(r.upgrade_time);
        }
    }
    upgrades.sort();
    let p50 = upgrades[upgrades.len() / 2];
    assert!(p50 < Duration::from_millis(100), "{upgrades:?}");
}

#[test]
fn an_upgrade_run_is_deterministic() {
    use macula::sim::node_lab::NodeLab;
    let pairing = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::SymmetricSequential);
    let config = NodeLabConfig::default();
    let hashes: Vec<u64> = (0..2)
        .map(|_| {
            let mut lab = NodeLab::new(pairing, &config, epoch());
            lab.connect().expect("connected");
            lab.calls_for(Duration::from_secs(1));
            assert!(!lab.changes().is_empty());
            lab.world.trace_hash()
        })
        .collect();
    assert_eq!(hashes[0], hashes[1]);
}
