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
        // The birthday search needs both classes: without them those pairs stay relayed.
        let reachable = r.possible && !r.pairing.needs_search();
        assert_eq!(r.direct, reachable, "{}", show(&r));
        if !reachable {
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

/// Masquerade (endpoint-independent, port-dependent filtering) and a random symmetric NAT
/// meet only through the birthday search, either side opening, in the first attempt, with
/// the easy side's draw well within its budget; two random symmetric NATs stay apart.
#[test]
fn the_birthday_search_joins_masquerade_and_random_symmetric_but_not_two_random() {
    let (easy, hard) = (NatKind::LinuxMasquerade, NatKind::SymmetricRandom);
    for seed in 1..=10 {
        let config = LabConfig {
            seed,
            ..LabConfig::default()
        };
        // The easy side wins on the searched port, or (its answer lost) on the hard side's
        // retried check from that port, learned peer-reflexive.
        let found = [CandidateKind::Searched, CandidateKind::PeerReflexive];
        for (pairing, winners) in [
            (Pairing::Separate(easy, hard), &found[..]),
            (
                Pairing::Separate(hard, easy),
                &[CandidateKind::Reflexive][..],
            ),
        ] {
            assert!(pairing.needs_search());
            let r = run_pair(pairing, &config, epoch());
            assert!(r.direct, "seed {seed}: {}", show(&r));
            assert_eq!(r.attempts, 1, "{}", show(&r));
            assert!(
                r.winner.is_some_and(|w| winners.contains(&w)),
                "{}",
                show(&r)
            );
            assert!(r.punch_time < Some(Duration::from_secs(5)), "{}", show(&r));
        }
        let both = Pairing::Separate(hard, hard);
        let r = run_pair(both, &config, epoch());
        assert!(r.skipped && !r.direct, "seed {seed}: {}", show(&r));
    }
    // Without the search (no sockets: the budget is zero) the pair fails every attempt.
    let none = LabConfig {
        punch: PunchConfig {
            search_sockets: 0,
            search_probes: 0,
            ..PunchConfig::default()
        },
        ..LabConfig::default()
    };
    let r = run_pair(Pairing::Separate(easy, hard), &none, epoch());
    assert!(!r.direct && r.attempts == 3, "{}", show(&r));
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
        let reachable = r.possible && (known || !pairing.needs_search());
        proptest::prop_assert_eq!(r.direct, reachable, "{}", show(&r));
        proptest::prop_assert_eq!(r.quirk_hits, 0, "{}", show(&r));
        if reachable {
            proptest::prop_assert_eq!(r.attempts, 1, "{}", show(&r));
        }
    }
}

/// The virtual clock's first instant: this program's one clock reading.
#[allow(clippy::disallowed_methods)]
fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
