//! No reflection, whole nodes in the simulator: a peer cannot make a node send
//! packets to a third party. A plain peer's DIAL_BACK_PROBE toward other IPs
//! sends nothing there; a PUNCH_OFFER flood over a relayed connection naming
//! unspecified, multicast, broadcast, loopback and virtual candidates sends
//! nothing to them, and probes of a permitted victim stay within the caps.
//! (Spoofed probe answers are refused at the upgrade machine:
//! `src/path/upgrade/tests.rs`, `src/path/liveness.rs`.)
#![cfg(feature = "sim")]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::epoch;
use macula::metrics::NatRefusal;
use macula::node::UpgradeConfig;
use macula::sim::node_lab::{NodeLab, NodeLabConfig};
use macula::sim::punch_lab::{NatKind, Pairing};
use macula::sim::{Link, Mesh, NatConfig, PORT, lan_addr, public_addr};
use macula::wire::{
    CandidateType, DialBackProbe, Message, NatInfo, PunchOffer, PunchSync, WireCandidate,
};

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a test address")
}

#[test]
fn a_plain_peers_dial_back_probe_toward_other_ips_sends_nothing_to_them() {
    let mut mesh = Mesh::new(5, epoch());
    mesh.set_link(Link::with_latency(Duration::from_millis(5)));
    let node = mesh.add_public(public_addr(1, PORT), |_| {});
    let nat = (
        IpAddr::from([198, 51, 100, 50]),
        NatConfig::port_restricted_cone(),
    );
    let attacker = mesh.add_behind(&[nat], lan_addr(1), |_| {});
    assert!(mesh.bootstrap(node, &[attacker]), "the attacker connected");
    let victims: Vec<SocketAddr> = (0..4)
        .map(|i| SocketAddr::from(([192, 0, 2, 10 + i], 4433)))
        .collect();
    let target = mesh.id(node);
    // As in the issue: DIAL_BACK_PROBEs at 4 victim IPs, 10 a second for 6 s.
    for _ in 0..60 {
        let probe = Message::from(DialBackProbe {
            nonce: [7; 12],
            addrs: victims.clone(),
        });
        let sent =
            (mesh.world).with_machine(attacker, |n, now| n.send_raw_frame(now, target, &probe));
        assert!(sent);
        mesh.world.run_for(Duration::from_millis(100));
    }
    let victim_ips: BTreeSet<IpAddr> = victims.iter().map(SocketAddr::ip).collect();
    let reached = (mesh.world.trace().entries().iter())
        .filter(|e| victim_ips.contains(&e.destination.ip()))
        .count();
    assert_eq!(reached, 0, "packets sent toward the victims");
    let stats = mesh.node(node).reach_stats();
    assert_eq!(stats.probes_sent, 0);
    assert!(stats.probe_targets_refused >= 4 * 8, "{stats:?}");
    let refusals = &mesh.node(node).metrics().nat_refusals;
    assert_eq!(
        *refusals.get(NatRefusal::DialBackProbe),
        stats.probe_requests_refused
    );
    assert!(stats.probe_requests_refused >= 50, "{stats:?}");
}

#[test]
fn a_punch_offer_flood_with_bogus_candidates_sends_no_probe_to_them_and_stays_within_the_caps() {
    let pairing = Pairing::Separate(NatKind::FullCone, NatKind::FullCone);
    let config = NodeLabConfig {
        seed: 11,
        link_loss: 0.0,
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(pairing, &config, epoch());
    lab.connect().expect("connected through the relay");
    let [a, b] = lab.sides();
    let victim = b;
    let b_id = lab.world.machine(b).node_id();
    let bogus = [
        addr("0.0.0.0:4433"),
        addr("224.0.0.1:4433"),
        addr("255.255.255.255:4433"),
        addr("127.0.0.1:6499"),
        addr("[fd6d:6163:756c:6100::1]:1"),
        addr("[ff02::1]:4433"),
    ];
    let target_ip = IpAddr::from([192, 0, 2, 77]);
    let mut candidates: Vec<WireCandidate> = (bogus.iter())
        .map(|&addr| WireCandidate {
            kind: CandidateType::Reflexive,
            addr,
        })
        .collect();
    candidates.extend((0..10).map(|p| WireCandidate {
        kind: CandidateType::Lan,
        addr: SocketAddr::new(target_ip, 2000 + p),
    }));
    let start = lab.world.now();
    let flood = Duration::from_secs(10);
    let mut offers = 0u64;
    // A PUNCH_OFFER and a PUNCH_SYNC every 10 ms for 10 s.
    while lab.world.now() < start + flood {
        offers += 1;
        let offer = Message::from(PunchOffer {
            request_id: 1_000 + offers,
            tag: *b"flooding",
            key: [3; 32],
            nat: NatInfo::from(macula::nat::punch::NatClass::OPEN),
            candidates: candidates.clone(),
        });
        let sync = Message::from(PunchSync {
            request_id: 1_000 + offers,
            start_in_ms: 0,
        });
        for frame in [&offer, &sync] {
            (lab.world).with_machine(a, |n, now| n.send_raw_frame(now, b_id, frame));
        }
        lab.world.run_for(Duration::from_millis(10));
    }
    lab.world.run_for(Duration::from_secs(5));
    let from_b = lab.world.host_addr(victim);
    let entries = lab.world.trace().entries();
    for addr in bogus {
        let hits = entries.iter().filter(|e| e.destination == addr).count();
        assert_eq!(hits, 0, "probes sent to {addr}");
    }
    let to_target = (entries.iter())
        .filter(|e| e.source == from_b && e.destination.ip() == target_ip)
        .count() as u64;
    let counters = lab.world.machine(b).upgrade_counters().clone();
    // The per-connection limit: bursts of 4 frames, one more per 10 s.
    let limit = UpgradeConfig::default().offer_limit;
    let frames_allowed = u64::from(limit.burst) + 2;
    assert!(
        counters.frames_rate_limited >= 2 * offers - frames_allowed,
        "{counters:?} of {offers} offers"
    );
    let checks = u64::from(UpgradeConfig::default().punch.max_checks_per_attempt);
    assert!(
        to_target <= frames_allowed / 2 * checks,
        "{to_target} probes to the target"
    );
    assert!(counters.candidates_refused >= 6, "{counters:?}");
    let refusals = &lab.world.machine(b).metrics().nat_refusals;
    assert_eq!(
        *refusals.get(NatRefusal::PunchRateLimit),
        counters.frames_rate_limited
    );
    assert_eq!(
        *refusals.get(NatRefusal::PunchCandidate),
        counters.candidates_refused
    );
}
