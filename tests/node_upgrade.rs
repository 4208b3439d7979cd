//! Relay → direct upgrade in the simulator: two private nodes behind Linux masquerade NATs
//! (50 ms apart) connect through a public relay, punch, switch to the direct path, fall
//! back to the relay when the direct route is cut, and upgrade again once it is restored —
//! while a stream of numbered RPCs keeps running and loses nothing; and a direct path whose
//! NAT reboots follows the new address without falling back, and a relayed pair survives
//! one (the relay follows).
#![cfg(feature = "sim")]

mod common;

use common::epoch;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use macula::node::PathChange;
use macula::path::PathKind;
use macula::sim::node_lab::{NodeLab, NodeLabConfig};
use macula::sim::punch_lab::{NatKind, Pairing};

#[test]
fn a_relayed_connection_goes_direct_falls_back_when_cut_and_upgrades_again_losing_no_call() {
    let masquerade = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::LinuxMasquerade);
    let config = NodeLabConfig {
        seed: 7,
        link_loss: 0.0,
        retry_after: Duration::from_secs(5),
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(masquerade, &config, epoch());
    lab.connect().expect("connected through the relay");
    let directs = |lab: &NodeLab| {
        (lab.changes().iter())
            .filter(|c| c.1 == PathKind::Direct)
            .count()
    };
    lab.calls_for(Duration::from_secs(3));
    assert_eq!(directs(&lab), 2, "{:?}", lab.changes());
    for host in lab.sides() {
        let node = lab.world.machine(host);
        // The connection to the relay and the one to the peer, both direct now.
        assert_eq!(node.connection_kinds(), (2, 0));
        assert_eq!(node.upgrade_counters().upgrades, 1);
    }
    // Once direct, the relay carries none of their traffic.
    let forwarded = lab.forwarded();
    lab.calls_for(Duration::from_secs(1));
    assert_eq!(lab.forwarded(), forwarded);

    // Cut the direct route: both fall back to the relay, calls keep completing.
    lab.cut(true);
    lab.calls_for(Duration::from_secs(3));
    let dead = (lab.changes().iter())
        .filter(|c| c.2 == PathChange::DirectPathDead)
        .count();
    assert_eq!(dead, 2, "{:?}", lab.changes());
    for host in lab.sides() {
        assert_eq!(lab.world.machine(host).upgrade_counters().fallbacks, 1);
    }
    // Restore it: the opener punches again after its retry delay.
    lab.cut(false);
    lab.calls_for(Duration::from_secs(8));
    assert_eq!(directs(&lab), 4, "{:?}", lab.changes());

    let (calls, lost) = lab.finish();
    assert_eq!(lost, 0, "of {calls}");
    assert!(calls > 700, "{calls}");
}

/// A public node A and B behind masquerade, direct after 3 s of calls;
/// `change` then moves B's address (its NAT's, or its own), 3 s more calls
/// run, and A must have followed B there once, with no call lost and no
/// fall back to the relay on either side.
fn stays_direct_when_b_moves(seed: u64, change: impl FnOnce(&mut NodeLab)) {
    let pairing = Pairing::Separate(NatKind::Open, NatKind::LinuxMasquerade);
    let config = NodeLabConfig {
        seed,
        link_loss: 0.0,
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(pairing, &config, epoch());
    lab.connect().expect("connected through the relay");
    lab.calls_for(Duration::from_secs(3));
    let [open, behind] = lab.sides();
    assert_eq!(lab.world.machine(open).upgrade_counters().upgrades, 1);
    change(&mut lab);
    lab.calls_for(Duration::from_secs(3));
    let (calls, lost) = lab.finish();
    assert_eq!(lost, 0, "of {calls}");
    assert_eq!(lab.world.machine(open).counters().rebindings, 1);
    for host in [open, behind] {
        let node = lab.world.machine(host);
        assert_eq!(node.upgrade_counters().fallbacks, 0, "the path never died");
    }
}

#[test]
fn a_direct_path_follows_a_rebooted_nat_to_its_new_address_losing_no_call() {
    // B's NAT reboots: B's packets come from a new address, and A's
    // connection follows them there on the first authentic one.
    let new_ip = IpAddr::from([192, 0, 2, 200]);
    stays_direct_when_b_moves(21, |lab| lab.reboot_nat(1, Some(new_ip), false));
    stays_direct_when_b_moves(22, |lab| lab.reboot_nat(1, None, true));
}

#[test]
fn a_host_that_moves_to_another_address_behind_its_nat_stays_direct() {
    // B's host gets a new LAN address (a DHCP renewal, a roam between
    // access points of one network): the node hears LocalAddressChanged,
    // its NAT maps the new address to a new port, A follows it there.
    stays_direct_when_b_moves(23, |lab| {
        let behind = lab.sides()[1];
        let net = lab.world.host_net(behind);
        let moved = SocketAddr::from(([10, 1, 0, 9], 5000));
        lab.world.move_host(behind, net, moved);
    });
}

#[test]
fn a_relayed_pair_survives_a_nat_reboot_the_relay_follows_the_new_address() {
    // The twin of the NAT lab's node-reboot-relayed: no direct path is
    // possible (masquerade x random-port symmetric), so the calls run over
    // the relay; A's NAT reboots with a new IP and the relay's connection
    // to A follows A there.
    let pairing = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::SymmetricRandom);
    let config = NodeLabConfig {
        seed: 25,
        link_loss: 0.0,
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(pairing, &config, epoch());
    lab.connect().expect("connected through the relay");
    lab.calls_for(Duration::from_secs(2));
    lab.reboot_nat(0, Some(IpAddr::from([192, 0, 2, 201])), false);
    lab.calls_for(Duration::from_secs(3));
    let (calls, lost) = lab.finish();
    assert_eq!(lost, 0, "of {calls}");
    assert_eq!(lab.world.machine(lab.relay()).counters().rebindings, 1);
    for host in lab.sides() {
        // Its connection to the relay, and the relayed one to the peer.
        assert_eq!(lab.world.machine(host).connection_kinds(), (1, 1));
    }
}

/// Issue 14 (the ladder at `--phase 12`, very bad cellular): the circuit behind a direct
/// connection closed when A's relay connection went silent, and the fall back 10 s later
/// landed on a circuit that was gone: 1,712 calls and publishes lost per pair. Now the
/// dialer (A) asks the relay for a spare circuit as soon as its relay connection is back,
/// B takes the announced circuit for A's spare, and the fall back lands on it.
#[test]
fn a_direct_connection_whose_circuit_died_falls_back_onto_a_spare_losing_nothing() {
    let pairing = Pairing::Separate(NatKind::FullCone, NatKind::LinuxMasquerade);
    let config = NodeLabConfig {
        seed: 3,
        link_loss: 0.0,
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(pairing, &config, epoch());
    lab.connect().expect("connected through the relay");
    lab.calls_for(Duration::from_secs(3));
    let [a, b] = lab.sides();
    let peer_of = |lab: &NodeLab, host| lab.world.machine(host).node_id();
    let (id_a, id_b) = (peer_of(&lab, a), peer_of(&lab, b));
    let (now, behind) = lab
        .world
        .machine(a)
        .paths_to(&id_b)
        .expect("a connection to B");
    assert!(matches!(now, macula::path::RealPath::Direct(_)), "{now:?}");
    assert_eq!(behind.len(), 1, "the circuit it came up over");
    // A's relay connection goes silent for 5 s and is closed, its circuit with it; the
    // relay closes B's end. The direct path carries the calls meanwhile.
    lab.cut_relay(0, true);
    lab.calls_for(Duration::from_secs(5));
    let (_, behind) = lab
        .world
        .machine(a)
        .paths_to(&id_b)
        .expect("still connected");
    assert_eq!(behind, [], "A's end of the circuit is gone");
    lab.cut_relay(0, false);
    lab.calls_for(Duration::from_secs(5));
    for (host, peer) in [(a, id_b), (b, id_a)] {
        let node = lab.world.machine(host);
        let counters = node.relay_counters();
        assert_eq!(counters.spares_opened, 1, "{counters:?}");
        // B closed its end of the old circuit when the spare came.
        let (_, behind) = node.paths_to(&peer).expect("still connected");
        assert_eq!(behind, [], "the spare has an address of its own");
    }
    // The direct route dies: both fall back onto the spare, and the calls go on.
    lab.cut(true);
    lab.calls_for(Duration::from_secs(6));
    let (messages, lost) = lab.finish();
    let dead = (lab.changes().iter())
        .filter(|c| c.2 == PathChange::DirectPathDead)
        .count();
    assert_eq!(dead, 2, "{:?}", lab.changes());
    for host in [a, b] {
        let node = lab.world.machine(host);
        assert_eq!(node.relay_counters().spares_adopted, 1);
        assert_eq!(node.connection_kinds().1, 1, "relayed");
    }
    assert_eq!(lost, 0, "of {messages}");
}
