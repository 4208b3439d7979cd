//! Claimed listen addresses verified by dial-back, whole nodes in the
//! simulator (docs/PROTOCOL.md §12.4): a DHT server whose claimed address
//! differs from the address its packets come from is handed out at it once
//! the address answered a check under the connection's key; a claim naming
//! a victim that does not answer, or answers as another node, is never
//! handed out, and the victim gets at most one probe per address per
//! interval; a flood of claims stays within the pending, per-network and
//! per-address bounds.
#![cfg(feature = "sim")]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::epoch;
use macula::dht::Mode;
use macula::id::NodeId;
use macula::metrics::ClaimCheckResult;
use macula::sim::{HostId, Link, Mesh, NatConfig, PORT, public_addr};

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a test address")
}

/// Packets the world carried toward `destination` (delivered or not).
fn packets_to(mesh: &Mesh, destination: SocketAddr) -> usize {
    (mesh.world.trace().entries().iter())
        .filter(|e| e.destination == destination && e.size > 0)
        .count()
}

/// Has `host` run a lookup of `target` through its table every `every`,
/// `times` times (each asks the DHT servers it knows: our verifier).
fn keep_asking(mesh: &mut Mesh, hosts: &[HostId], every: Duration, times: usize) {
    for round in 0..times {
        for (i, &host) in hosts.iter().enumerate() {
            let target = NodeId::from_bytes([(round * 31 + i) as u8; 32]);
            (mesh.world).with_machine(host, |n, now| n.find_node(now, target));
        }
        mesh.world.run_for(every);
    }
}

#[test]
fn a_server_whose_claim_differs_from_its_source_is_handed_out_once_the_claim_answers() {
    let mut mesh = Mesh::new(21, epoch());
    mesh.set_link(Link::with_latency(Duration::from_millis(5)));
    let seed = mesh.add_public(public_addr(1, PORT), |c| c.dht.mode = Mode::Server);
    // Two DHT servers behind one port-preserving full-cone NAT with
    // hairpinning: P lists its LAN address and the NAT's external address
    // (its port is preserved); X, on the same LAN, sees P's packets come
    // from the LAN address, so the external one needs a check.
    let nat_ip = IpAddr::from([203, 0, 113, 9]);
    let internet = mesh.world.internet();
    let (_, lan) = mesh
        .world
        .add_nat(internet, nat_ip, Link::default(), NatConfig::full_cone());
    let x_addr = addr("192.168.7.3:4433");
    let p_addr = addr("192.168.7.2:4434");
    let p_external = SocketAddr::new(nat_ip, p_addr.port());
    let x = mesh.add_node(lan, x_addr, |c| {
        c.dht.mode = Mode::Server;
        c.reach.auto_discover = false;
    });
    let p = mesh.add_node(lan, p_addr, |c| {
        c.dht.mode = Mode::Server;
        c.reach.auto_discover = false;
        c.listen_addrs = vec![p_addr, p_external];
    });
    // P talks to the internet first: its NAT mapping (external port = its
    // own) exists from then on.
    assert!(mesh.bootstrap(seed, &[x, p]), "both joined");
    let p_id = mesh.id(p);
    let listed = |mesh: &Mesh| (mesh.node(x).dht().table().get(&p_id)).map(|c| c.addrs.to_vec());
    // P asks X over the LAN: X checks P's external address.
    let x_lan = macula::dht::Contact {
        id: mesh.id(x),
        addrs: vec![x_addr].into_iter().collect(),
    };
    (mesh.world).with_machine(p, |n, now| n.bootstrap(now, vec![x_lan]));
    let verified = mesh.run_until(
        |w| w.machine(x).reach_stats().claim_checks.verified > 0,
        Duration::from_secs(30),
    );
    assert!(verified, "{:?}", mesh.node(x).reach_stats().claim_checks);
    mesh.world.run_for(Duration::from_secs(1));
    let stats = mesh.node(x).reach_stats().claim_checks;
    println!("port-preserving: {stats:?} at {:?}", mesh.world.elapsed());
    assert_eq!((stats.probed, stats.verified, stats.failed), (1, 1, 0));
    // Handed out at both verified addresses: the LAN one (its source) and
    // the external one (answered the check), and nothing else.
    let addrs = listed(&mesh).expect("P is in X's table");
    assert_eq!(addrs, vec![p_addr, p_external], "{addrs:?}");
    let checks = &mesh.node(x).metrics().nat_claim_checks;
    assert_eq!(*checks.get(ClaimCheckResult::Verified), 1);
    // P answered exactly one check.
    assert_eq!(mesh.node(p).reach_stats().claim_checks.answered, 1);
}

#[test]
fn a_claim_naming_a_victim_is_never_handed_out_and_the_victim_gets_at_most_one_probe_per_interval()
{
    let mut mesh = Mesh::new(22, epoch());
    mesh.set_link(Link::with_latency(Duration::from_millis(5)));
    let verifier = mesh.add_public(public_addr(1, PORT), |c| {
        c.dht.mode = Mode::Server;
        c.reach.auto_discover = false;
    });
    // A real node (answers STUN, as another node id) and an address where
    // nobody listens.
    let other = mesh.add_public(public_addr(30, PORT), |c| {
        c.reach.auto_discover = false;
    });
    let other_addr = public_addr(30, PORT);
    let silent = addr("198.51.100.99:4433");
    let refused = [
        addr("127.0.0.1:6499"),
        addr("0.0.0.0:4433"),
        addr("224.0.0.1:4433"),
    ];
    let liar = mesh.add_public(public_addr(20, PORT), |c| {
        c.dht.mode = Mode::Server;
        c.reach.auto_discover = false;
        c.listen_addrs = [silent, other_addr].into_iter().chain(refused).collect();
    });
    // The other node never talks to the verifier: every packet toward it
    // is a check.
    assert!(mesh.bootstrap(verifier, &[liar]), "joined");
    let _ = other;
    // The liar keeps asking for 25 minutes: two and a half check intervals.
    keep_asking(&mut mesh, &[liar], Duration::from_secs(10), 150);
    let liar_id = mesh.id(liar);
    let node = mesh.node(verifier);
    assert!(!node.dht().table().contains(&liar_id), "the liar is listed");
    let stats = node.reach_stats().claim_checks;
    println!("victims: {stats:?}");
    assert_eq!(stats.verified, 0, "{stats:?}");
    assert!(stats.failed >= 2, "{stats:?}");
    assert!(stats.refused > 0, "{stats:?}");
    // One probe per claimed address per 10 minutes: at most 3 in 25 min,
    // each no larger than a STUN header, MESSAGE-INTEGRITY and FINGERPRINT.
    let mut probes = 0;
    for victim in [silent, other_addr] {
        let sizes: Vec<usize> = (mesh.world.trace().entries().iter())
            .filter(|e| e.destination == victim && e.size > 0)
            .map(|e| e.size)
            .collect();
        assert!((1..=3).contains(&sizes.len()), "{victim}: {sizes:?}");
        assert!(sizes.iter().all(|s| *s == 64), "{victim}: {sizes:?}");
        probes += sizes.len();
    }
    assert_eq!(probes as u64, stats.probed);
    for victim in refused {
        assert_eq!(packets_to(&mesh, victim), 0, "{victim} got packets");
    }
    // The other node answered as itself (plain STUN, no key): ignored.
    assert!(stats.ignored >= 1, "{stats:?}");
    let metrics = &node.metrics().nat_claim_checks;
    assert_eq!(*metrics.get(ClaimCheckResult::Failed), stats.failed);
    assert_eq!(*metrics.get(ClaimCheckResult::Probed), stats.probed);
}

#[test]
fn a_flood_of_claims_stays_within_the_pending_per_network_and_per_address_bounds() {
    let mut mesh = Mesh::new(23, epoch());
    mesh.set_link(Link::with_latency(Duration::from_millis(5)));
    let verifier_addr = public_addr(1, PORT);
    let verifier = mesh.add_public(verifier_addr, |c| {
        c.dht.mode = Mode::Server;
        c.reach.auto_discover = false;
    });
    // 40 liars, each claiming 2 addresses in one victim /24 and 2 in
    // networks of their own: 80 addresses in one network, 80 elsewhere.
    let liars: Vec<HostId> = (0..40u8)
        .map(|i| {
            let claims: Vec<SocketAddr> = (0..2u8)
                .map(|j| SocketAddr::from(([192, 0, 2, i * 2 + j + 1], 4433)))
                .chain((0..2u8).map(|j| SocketAddr::from(([100 + j, 10, i, 1], 4433))))
                .collect();
            mesh.add_public(public_addr(100 + i, PORT), move |c| {
                c.dht.mode = Mode::Server;
                c.reach.auto_discover = false;
                c.listen_addrs = claims;
            })
        })
        .collect();
    assert!(mesh.bootstrap(verifier, &liars), "joined");
    keep_asking(&mut mesh, &liars, Duration::from_secs(1), 60);
    let probes: Vec<(Duration, SocketAddr)> = (mesh.world.trace().entries().iter())
        .filter(|e| e.source == verifier_addr && e.size > 0)
        .map(|e| (e.elapsed, e.destination))
        .filter(|(_, d)| d.ip() != verifier_addr.ip() && !liar_ip(d.ip()))
        .collect();
    // Each address at most once (the interval is 10 minutes).
    let mut per_address: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for (_, destination) in &probes {
        *per_address.entry(*destination).or_default() += 1;
    }
    assert!(per_address.values().all(|n| *n == 1), "{per_address:?}");
    // One victim /24: at most 2 pending at a time, each waiting 5 s: in
    // any 5 s window at most 2 new probes (plus the 2 of the window's edge).
    let network: Vec<Duration> = (probes.iter())
        .filter(|(_, d)| matches!(d.ip(), IpAddr::V4(v4) if v4.octets()[..3] == [192, 0, 2]))
        .map(|(at, _)| *at)
        .collect();
    assert!(!network.is_empty());
    for (i, start) in network.iter().enumerate() {
        let within = network[i..]
            .iter()
            .take_while(|at| **at < *start + Duration::from_secs(5))
            .count();
        assert!(within <= 2, "{within} probes into one /24 within 5 s");
    }
    // At most 64 pending in all: within any 5 s, at most 64 probes.
    for (i, (start, _)) in probes.iter().enumerate() {
        let within = probes[i..]
            .iter()
            .take_while(|(at, _)| *at < *start + Duration::from_secs(5))
            .count();
        assert!(within <= 64, "{within} probes within 5 s");
    }
    let stats = mesh.node(verifier).reach_stats().claim_checks;
    println!("flood: {stats:?}, {} probes into the /24", network.len());
    assert_eq!(stats.probed as usize, probes.len(), "{stats:?}");
    // The 64-check table filled: the other networks' 80 addresses could not
    // all go out at once.
    assert!(stats.refused > 0, "{stats:?}");
    let first_burst = probes
        .iter()
        .take_while(|(at, _)| *at < probes[0].0 + Duration::from_secs(5))
        .count();
    assert_eq!(first_burst, 64, "the pending table's size");
    assert_eq!(stats.verified, 0);
    // The node still serves honest lookups meanwhile.
    assert!(mesh.node(verifier).dht().metrics().requests_served >= 40 * 60);
}

/// The liars' own IPs (198.51.100.100 and up).
fn liar_ip(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [198, 51, 100] && v4.octets()[3] >= 100)
}
