//! Simulator twins of the NAT lab's node scenarios that no other test mirrors
//! (tests/natlab/README.md, "Lab scenarios and their simulator twins", maps every one):
//! the same pairing of NAT kinds, the same event, the outcome the lab reports.
#![cfg(feature = "sim")]

mod common;

use common::epoch;
use std::net::IpAddr;
use std::time::Duration;

use macula::node::PathChange;
use macula::path::PathKind;
use macula::sim::NatEvent;
use macula::sim::node_lab::{NatKnowledge, NodeLab, NodeLabConfig, run_node_pair};
use macula::sim::punch_lab::{NatKind, Pairing};

/// Lab `node-public-symmetric`: a public dialer and a host behind a random-port symmetric
/// NAT go direct (through the peer-reflexive address of the symmetric side's probe), and
/// no call or publish is lost across the upgrade and the fall back.
#[test]
fn public_by_symmetric_goes_direct() {
    let pairing = Pairing::Separate(NatKind::Open, NatKind::SymmetricRandom);
    let r = run_node_pair(pairing, &NodeLabConfig::default(), epoch());
    assert!(r.connected && r.direct, "{r:?}");
    assert_eq!(r.lost_messages(), 0, "{r:?}");
}

/// Lab `node-masquerade-symmetric`: a1 (masquerade) dials s1 (random-port symmetric). Only
/// the birthday search joins them: s1's node opens extra sockets, a1's probes random ports
/// of natS, and both go direct well within 20 s in every seed, without losing a call or a
/// publish; s1's packets leave from the extra socket the search found.
#[test]
fn masquerade_by_symmetric_goes_direct_through_the_birthday_search() {
    let pairing = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::SymmetricRandom);
    for seed in 1..=10 {
        let config = NodeLabConfig {
            seed,
            ..NodeLabConfig::default()
        };
        let r = run_node_pair(pairing, &config, epoch());
        assert!(r.connected && r.direct, "seed {seed}: {r:?}");
        assert!(r.punch_time < Some(Duration::from_secs(20)), "{r:?}");
        assert_eq!(r.lost_messages(), 0, "seed {seed}: {r:?}");
    }
    // Without the search the pair stays relayed, as before it.
    let config = NodeLabConfig {
        search: false,
        ..NodeLabConfig::default()
    };
    let r = run_node_pair(pairing, &config, epoch());
    assert!(r.connected && !r.direct, "{r:?}");
}

/// Lab `node-symmetric-symmetric`: two random-port symmetric NATs stay relayed, and the
/// calls work there.
#[test]
fn symmetric_by_symmetric_stays_relayed_and_works() {
    let pairing = Pairing::Separate(NatKind::SymmetricRandom, NatKind::SymmetricRandom);
    let r = run_node_pair(pairing, &NodeLabConfig::default(), epoch());
    assert!(r.connected && !r.direct, "{r:?}");
    assert!(r.calls > 300, "{r:?}");
    assert_eq!(r.lost_messages(), 0, "{r:?}");
}

/// Lab `node-reboot-masquerade`: a1 and b1 (both masquerade, each discovering its own
/// address against the relay) are direct; natA reboots with a new IP. Both fall back to the
/// relay, whose connection to a1 follows a1's new address, every call comes back, and the
/// pair is direct again within 5 s of the reboot: a1 learns its new address and re-punches
/// from a fresh port. Without the fresh port (the node before it) the re-punch fails, as in
/// the lab: a1's packets from its new address planted unreplied entries at natB, which move
/// b1's flow toward that address off its port (a quirk hit), and the pair stays relayed.
#[test]
fn a_masquerade_pair_falls_back_when_one_nat_reboots_with_a_new_ip() {
    let fresh = reboot_masquerade_pair(true);
    assert!(
        fresh.back.is_some_and(|b| b <= Duration::from_secs(5)),
        "direct again within 5 s: {fresh:?}"
    );
    let stale = reboot_masquerade_pair(false);
    assert_eq!(stale.back, None, "not direct again: {stale:?}");
    assert!(stale.quirk_hits > 0, "natB moved b1's flow: {stale:?}");
}

/// What [`reboot_masquerade_pair`] saw after the reboot.
#[derive(Debug)]
struct Rebooted {
    /// From the reboot until both ends were direct again, if within the run.
    back: Option<Duration>,
    /// natB's flows moved off their port by an unreplied entry from a1's new address.
    quirk_hits: usize,
}

/// Runs lab `node-reboot-masquerade` with or without the fresh-port re-punch, asserting
/// what holds either way: direct before, the fall back, no call lost, natB's planted entries,
/// the relay following a1.
fn reboot_masquerade_pair(fresh_port: bool) -> Rebooted {
    let pairing = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::LinuxMasquerade);
    let config = NodeLabConfig {
        seed: 26,
        link_loss: 0.0,
        knowledge: NatKnowledge::Discovered,
        fresh_port,
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(pairing, &config, epoch());
    lab.connect().expect("connected through the relay");
    lab.calls_for(Duration::from_secs(2));
    let direct_after = |lab: &NodeLab, t| {
        let changes = lab.changes().iter();
        let times = changes.filter(|c| c.1 == PathKind::Direct && c.0 > t);
        times.map(|c| c.0).collect::<Vec<_>>()
    };
    let before = direct_after(&lab, epoch());
    assert_eq!(before.len(), 2, "direct before: {:?}", lab.changes());
    let new_ip = IpAddr::from([192, 0, 2, 202]);
    lab.reboot_nat(0, Some(new_ip), false);
    let rebooted = lab.world.now();
    lab.calls_for(Duration::from_secs(8));
    let (calls, lost) = lab.finish();
    assert_eq!(lost, 0, "of {calls}");
    let again = direct_after(&lab, rebooted);
    let back = (again.len() >= 2).then(|| again[1] - rebooted);
    let nat_b = lab.world.nats().nth(1).expect("natB");
    let since = |l: &&macula::sim::NatLogEntry| l.at > rebooted;
    let planted = (nat_b.log().iter().filter(since))
        .any(|l| matches!(l.event, NatEvent::Filtered { remote, .. } if remote.ip() == new_ip));
    assert!(
        planted,
        "natB holds unreplied entries from a1's new address"
    );
    let quirk_hits = (nat_b.log().iter().filter(since))
        .filter(|l| matches!(l.event, NatEvent::QuirkHit { remote, .. } if remote.ip() == new_ip))
        .count();
    let dead = (lab.changes().iter())
        .filter(|c| c.2 == PathChange::DirectPathDead)
        .count();
    assert!(dead >= 1, "fell back: {:?}", lab.changes());
    assert_eq!(lab.world.machine(lab.relay()).counters().rebindings, 1);
    Rebooted { back, quirk_hits }
}

/// Lab `node-carrier-masquerade`, `node-masquerade-carrier` and `node-carrier-carrier`: a
/// host behind a Linux home router inside a Linux carrier NAT goes direct with a host
/// behind masquerade (either side dialing) and with another such host, once each node
/// counted its hops to its reflector (the relay) and opens its NATs with one less.
#[test]
fn carrier_nat_pairs_go_direct_with_counted_hops() {
    let pairings = [
        (NatKind::LinuxDouble, NatKind::LinuxMasquerade),
        (NatKind::LinuxMasquerade, NatKind::LinuxDouble),
        (NatKind::LinuxDouble, NatKind::LinuxDouble),
    ];
    for (seed, (a, b)) in (40..).zip(pairings) {
        let config = NodeLabConfig {
            seed,
            link_loss: 0.0,
            knowledge: NatKnowledge::Discovered,
            ..NodeLabConfig::default()
        };
        let r = run_node_pair(Pairing::Separate(a, b), &config, epoch());
        assert!(r.connected && r.direct, "{a:?} x {b:?}: {r:?}");
        assert_eq!(r.lost_messages(), 0, "{a:?} x {b:?}: {r:?}");
    }
}

/// The same pairs without the hop count (the growing schedule, the node before issue 14's
/// item 3), as the NAT lab measured them then: when the carrier side opens, its TTL 2 dies
/// inside the carrier NAT and the peer's probe plants an entry there, so the pair stays
/// relayed; when the masquerade side opens, its TTL 2 is right and the pair goes direct.
#[test]
fn without_counted_hops_a_carrier_nat_opener_stays_relayed_as_in_the_lab() {
    let pairings = [
        (NatKind::LinuxDouble, NatKind::LinuxMasquerade, false),
        (NatKind::LinuxMasquerade, NatKind::LinuxDouble, true),
        (NatKind::LinuxDouble, NatKind::LinuxDouble, false),
    ];
    for (seed, (a, b, direct)) in (40..).zip(pairings) {
        let config = NodeLabConfig {
            seed,
            link_loss: 0.0,
            ..NodeLabConfig::default()
        };
        let r = run_node_pair(Pairing::Separate(a, b), &config, epoch());
        assert!(r.connected, "{a:?} x {b:?}: {r:?}");
        assert_eq!(r.direct, direct, "{a:?} x {b:?}: {r:?}");
        assert_eq!(r.lost_messages(), 0, "{a:?} x {b:?}: {r:?}");
    }
}
