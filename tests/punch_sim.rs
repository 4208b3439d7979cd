//! The punch machine against the simulator's NAT boxes: every ordered pair of NAT kinds
//! and two hosts behind one NAT, at 50 ms RTT and 2% loss, checked against the RFC 4787
//! oracle (`macula::nat::punch::oracle`).
#![cfg(feature = "sim")]

use std::time::Duration;

use macula::nat::punch::{CandidateKind, PunchConfig};
use macula::sim::punch_lab::{LabConfig, NatKind, PairReport, Pairing, run_pair};

fn run_all(config: &LabConfig) -> Vec<PairReport> {
    Pairing::all()
        .into_iter()
        .map(|p| run_pair(p, config, epoch()))
        .collect()
}

fn show(r: &PairReport) -> String {
    let (a, b) = r.pairing.names();
    format!(
        "{a} x {b}: possible={} skipped={} direct={} time={:?} attempts={} winner={:?} quirk={}",
        r.possible, r.skipped, r.direct, r.punch_time, r.attempts, r.winner, r.quirk_hits
    )
}

#[test]
fn every_possible_pair_goes_direct_and_impossible_ones_are_skipped() {
    for seed in [1, 2] {
        let config = LabConfig {
            seed,
            ..LabConfig::default()
        };
        for r in run_all(&config) {
            eprintln!("{}", show(&r));
            assert_eq!(r.direct, r.possible, "seed {seed}: {}", show(&r));
            assert_eq!(r.skipped, !r.possible, "seed {seed}: {}", show(&r));
            assert_eq!(r.quirk_hits, 0, "seed {seed}: {}", show(&r));
            if r.possible {
                assert_eq!(r.attempts, 1, "seed {seed}: {}", show(&r));
            }
        }
    }
}

#[test]
fn without_class_knowledge_the_oracles_impossible_pairs_really_fail() {
    let config = LabConfig {
        known_classes: false,
        seed: 3,
        ..LabConfig::default()
    };
    for r in run_all(&config) {
        assert!(!r.skipped);
        assert_eq!(r.direct, r.possible, "{}", show(&r));
        if !r.possible {
            assert_eq!(r.attempts, 3, "{}", show(&r));
        }
    }
}

#[test]
fn two_hosts_behind_one_nat_without_hairpinning_meet_on_their_lan() {
    let r = run_pair(Pairing::SharedNat, &LabConfig::default(), epoch());
    assert!(r.direct, "{}", show(&r));
    assert_eq!(r.winner, Some(CandidateKind::Lan));
}

/// A random symmetric NAT's port toward the peer is learned from its probe
/// (peer-reflexive); a sequential one's is predicted from the reflectors' answers.
#[test]
fn symmetric_nats_are_found_through_peer_reflexive_and_predicted_candidates() {
    let cases = [
        (
            NatKind::FullCone,
            NatKind::SymmetricRandom,
            CandidateKind::PeerReflexive,
        ),
        (
            NatKind::SymmetricSequential,
            NatKind::SymmetricSequential,
            CandidateKind::Predicted,
        ),
    ];
    for (a, b, winner) in cases {
        let r = run_pair(Pairing::Separate(a, b), &LabConfig::default(), epoch());
        assert!(r.direct, "{}", show(&r));
        assert_eq!(r.winner, Some(winner), "{}", show(&r));
    }
}

/// Two Linux masquerades with the follower's clock 40 ms ahead: the naive punch loses the
/// race (the peer's probe reaches the NAT first, the quirk moves the flow) in every
/// attempt, the opener's TTL-limited burst plus the lead does not.
#[test]
fn the_opening_burst_and_lead_beat_the_conntrack_quirk_where_the_naive_race_loses() {
    let pairing = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::LinuxMasquerade);
    let skewed = LabConfig {
        skew: Duration::from_millis(40),
        path_loss: 0.0,
        ..LabConfig::default()
    };
    let ours = run_pair(pairing, &skewed, epoch());
    assert!(ours.direct, "{}", show(&ours));
    assert_eq!((ours.attempts, ours.quirk_hits), (1, 0), "{}", show(&ours));
    let naive = LabConfig {
        punch: PunchConfig::naive(),
        ..skewed
    };
    let race = run_pair(pairing, &naive, epoch());
    assert!(!race.direct, "{}", show(&race));
    assert!(race.quirk_hits > 0, "{}", show(&race));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any pair, any seed, loss up to 3%, the follower's clock up to 40 ms ahead: the
    /// punch goes direct exactly when the oracle allows, in its first attempt, and never
    /// trips the conntrack quirk.
    #[test]
    fn the_punch_agrees_with_the_oracle_under_loss_and_skew(
        pair in 0..Pairing::all().len(),
        seed in 0u64..1_000_000,
        loss in 0.0f64..0.03,
        skew_ms in 0u64..40,
        known in proptest::bool::ANY,
    ) {
        let pairing = Pairing::all()[pair];
        let config = LabConfig {
            seed,
            path_loss: loss,
            skew: Duration::from_millis(skew_ms),
            known_classes: known,
            ..LabConfig::default()
        };
        let r = run_pair(pairing, &config, epoch());
        proptest::prop_assert_eq!(r.direct, r.possible, "{}", show(&r));
        proptest::prop_assert_eq!(r.quirk_hits, 0, "{}", show(&r));
        if r.possible {
            proptest::prop_assert_eq!(r.attempts, 1, "{}", show(&r));
        }
    }
}

/// The virtual clock's first instant: this program's one clock reading.
#[allow(clippy::disallowed_methods)]
fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
