//! The link ladder's two ends (`macula::sim::ladder`, iroh patchbay's rungs) under the
//! Node-level NAT matrix, seed 1: side A's own access link is good Wi-Fi (16 ms RTT,
//! 0.1 % loss in bursts of 5) or very bad cellular (450 ms RTT, 60 ms jitter, 8 % loss in
//! bursts of 20), on a few pairs. On good Wi-Fi every pair connects through the relay,
//! goes direct exactly when the oracle allows it and loses no call or publish across the
//! upgrade and the fall back; on slow 3G neither do pairs whose two sides fall back at
//! different times. On very bad cellular the pairs connect and go direct, but bursts of
//! lost packets that silence the relay connection for over 3 s still cost calls
//! (tests/natlab/README.md, "The link ladder"): that target is the ignored test, as iroh
//! marks its own failing rungs. `nat_matrix --ladder` runs every rung over every pair.
#![cfg(feature = "sim")]

mod common;

use common::epoch;

use macula::sim::ladder::Rung;
use macula::sim::node_lab::{NodeLabConfig, NodePairReport, run_node_pair};
use macula::sim::punch_lab::{NatKind, Pairing};

/// Runs `pairs` with side A on `rung`, checking each connected, direct exactly when
/// possible, and made its calls.
fn run_rung(rung: Rung, pairs: &[Pairing]) -> Vec<NodePairReport> {
    let config = NodeLabConfig {
        seed: 1,
        link_loss: 0.0,
        access: Some(rung.link()),
        ..NodeLabConfig::default()
    };
    let reports: Vec<NodePairReport> = (pairs.iter())
        .map(|&pairing| run_node_pair(pairing, &config, epoch()))
        .collect();
    for r in &reports {
        eprintln!("{} {r:?}", rung.name());
        assert!(r.connected, "{r:?}");
        assert_eq!(r.direct, r.possible, "{r:?}");
        assert!(r.calls > 300, "{r:?}");
    }
    reports
}

#[test]
fn good_wifi_loses_nothing() {
    use NatKind::*;
    let pairs = [
        Pairing::Separate(LinuxMasquerade, LinuxMasquerade),
        Pairing::Separate(CarrierGradeDouble, CarrierGradeDouble),
        Pairing::Separate(SymmetricRandom, SymmetricRandom),
        Pairing::SharedNat,
    ];
    for r in run_rung(Rung::GoodWifi, &pairs) {
        assert_eq!(r.lost_messages(), 0, "{r:?}");
    }
}

#[test]
fn very_bad_cellular_connects_and_goes_direct() {
    use NatKind::*;
    let pairs = [
        Pairing::Separate(LinuxMasquerade, FullCone),
        Pairing::Separate(CarrierGradeDouble, CarrierGradeDouble),
        Pairing::Separate(SymmetricRandom, SymmetricRandom),
        Pairing::SharedNat,
    ];
    let reports = run_rung(Rung::VeryBadCellular, &pairs);
    // Seed 1: cgn-double × cgn-double and the relayed pair lose nothing; the other two
    // lose the calls in flight at the fall back (the ignored test below).
    assert_eq!(reports[1].lost_messages(), 0, "{:?}", reports[1]);
    assert_eq!(reports[2].lost_messages(), 0, "{:?}", reports[2]);
}

/// Slow 3G (200 ms RTT, 3 % loss in bursts of 10), seed 1, on pairs that lost every call
/// in flight at the fall back (about 408 messages each) while one side, still on its dead
/// direct path, sent its acknowledgements there: it now follows its peer onto the relay
/// circuit at the peer's first relayed packet, so nothing is lost.
#[test]
fn slow_3g_fall_back_loses_nothing() {
    use NatKind::*;
    let pairs = [
        Pairing::Separate(Open, FullCone),
        Pairing::Separate(LinuxMasquerade, SymmetricRandom),
    ];
    for r in run_rung(Rung::Slow3g, &pairs) {
        assert!(r.fell_back, "{r:?}");
        assert_eq!(r.lost_messages(), 0, "{r:?}");
    }
}

/// Slow 3G, seed 1, full-cone × open lost 464 messages: after the fall back a burst on
/// A's uplink lost its packets for a second, QUIC backed off, and the probe that got
/// through went out 2.4 s into the silence; the silence watch closed A's relay connection
/// 35 ms before that probe's acknowledgement came back. A probe sent late in a silence is
/// now given its round trip before the silence is judged.
#[test]
fn slow_3g_a_late_probe_is_given_its_round_trip() {
    let pairs = [Pairing::Separate(NatKind::FullCone, NatKind::Open)];
    for r in run_rung(Rung::Slow3g, &pairs) {
        assert!(r.fell_back, "{r:?}");
        assert_eq!(r.lost_messages(), 0, "{r:?}");
    }
}

#[test]
#[ignore = "not yet passing: bursts of 20 lost packets silence the relay connection for over 3 s (tests/natlab/README.md, The link ladder)"]
fn very_bad_cellular_loses_nothing() {
    use NatKind::*;
    let pairs = [
        Pairing::Separate(LinuxMasquerade, FullCone),
        Pairing::Separate(LinuxMasquerade, LinuxMasquerade),
        Pairing::SharedNat,
    ];
    for r in run_rung(Rung::VeryBadCellular, &pairs) {
        assert_eq!(r.lost_messages(), 0, "{r:?}");
    }
}
