//! The NAT lab's scenarios (tests/natlab/run) replayed in the simulator.
//!
//! Each test builds the lab's topology in `macula::sim` — natA and natB as
//! `NatConfig::linux_masquerade()`, natS as `linux_fully_random()` — sends the same
//! probes at the same offsets, and asserts what real Linux NAT did in the
//! lab. Where the simulator's model does not match Linux, a test named
//! `sim_differs_*` asserts the simulator's current behaviour and says what
//! the lab measured, so the difference stays visible until the model
//! changes (then flip the test to the lab's outcome). README.md in this
//! folder lists the differences.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now: the world's start time

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::sim::{HostId, Link, NatConfig, NatEvent, NetId, Probe, ProbeEvent, World};

const NATA: &str = "198.51.100.2";
const NATB: &str = "198.51.100.10";
const NATS: &str = "198.51.100.18";
const R1: &str = "203.0.113.10:7000";
const R1P: &str = "203.0.113.10:7001";
const R2: &str = "203.0.113.11:7000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// The lab: reflectors on the internet, natA/natB (Linux masquerade) and
/// natS (masquerade `random,fully-random`) each with a LAN. A NAT's WAN link counts the lab's
/// internet router as one hop, so a TTL of 2 from a LAN host dies just past
/// its own NAT, as in the lab.
struct Lab {
    world: World<Probe>,
    lan_a: NetId,
    lan_b: NetId,
    lan_s: NetId,
}

impl Lab {
    fn new() -> Self {
        Self::with_nat_a(NatConfig::linux_masquerade())
    }

    fn with_nat_a(nat_a: NatConfig) -> Self {
        let mut world = World::new(7, Instant::now());
        let internet = world.internet();
        let wan = Link::with_latency(Duration::from_millis(1)).hops(1);
        let (_, lan_a) = world.add_nat(internet, NATA.parse().unwrap(), wan, nat_a);
        let masquerade = NatConfig::linux_masquerade();
        let (_, lan_b) = world.add_nat(internet, NATB.parse().unwrap(), wan, masquerade);
        let fully_random = NatConfig::linux_fully_random();
        let (_, lan_s) = world.add_nat(internet, NATS.parse().unwrap(), wan, fully_random);
        let mut lab = Self {
            world,
            lan_a,
            lan_b,
            lan_s,
        };
        for reflector in [R1, R1P, R2] {
            lab.public(reflector, true);
        }
        lab
    }

    /// A probe host at `address` on `net`.
    fn host(&mut self, net: NetId, address: &str) -> HostId {
        let link = Link::default();
        self.world.add_host(net, addr(address), link, Probe::new())
    }

    /// A public probe host, answering like a reflector when `reflect`.
    fn public(&mut self, address: &str, reflect: bool) -> HostId {
        let probe = if reflect {
            Probe::reflector()
        } else {
            Probe::new()
        };
        let internet = self.world.internet();
        let link = Link::with_latency(Duration::from_millis(1));
        self.world.add_host(internet, addr(address), link, probe)
    }

    /// `from` sends to `to` `after` ms from now, with an optional TTL.
    fn send(&mut self, from: HostId, after: u64, to: SocketAddr, ttl: Option<u8>) {
        let delay = Duration::from_millis(after);
        self.world.with_machine(from, |p, now| {
            p.send_with_ttl(now + delay, to, "probe", ttl);
        });
    }

    fn run_ms(&mut self, ms: u64) {
        self.world.run_for(Duration::from_millis(ms));
    }

    /// What `host` received, as (source, reflected address if any).
    fn received(&self, host: HostId) -> Vec<(SocketAddr, Option<SocketAddr>)> {
        (self.world.events().iter())
            .filter(|e| e.host == host)
            .filter_map(|e| match &e.event {
                ProbeEvent::Received { remote, .. } => Some((*remote, e.event.reflected())),
                ProbeEvent::AddressChanged { .. } => None,
            })
            .collect()
    }

    /// The address reflector `from` reported to `host` (its latest answer).
    fn reflected(&self, host: HostId, from: SocketAddr) -> Option<SocketAddr> {
        let answers = self.received(host).into_iter().filter(|(r, _)| *r == from);
        answers.filter_map(|(_, m)| m).next_back()
    }

    /// `host` asks R1 for its reflexive address.
    fn learn(&mut self, host: HostId) -> SocketAddr {
        self.send(host, 0, addr(R1), None);
        self.run_ms(100);
        self.reflected(host, addr(R1)).expect("R1 answers")
    }

    fn got_from(&self, host: HostId, from: SocketAddr) -> bool {
        self.received(host).iter().any(|(r, _)| *r == from)
    }

    /// `host` sends to R1, R1' and R2, 50 ms apart: what each reflected.
    fn map_to_reflectors(&mut self, host: HostId) -> [Option<SocketAddr>; 3] {
        for (i, r) in (0..).zip([R1, R1P, R2]) {
            self.send(host, 50 * i, addr(r), None);
        }
        self.run_ms(300);
        [R1, R1P, R2].map(|r| self.reflected(host, addr(r)))
    }
}

/// Lab `mapping-masquerade`: one port-preserved mapping for every destination.
#[test]
fn mapping_masquerade_is_endpoint_independent_and_port_preserving() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:40001");
    assert_eq!(lab.map_to_reflectors(a1), [Some(at(NATA, 40001)); 3]);
}

/// Lab `mapping-fully-random`: a new mapping per destination.
#[test]
fn mapping_symmetric_is_per_destination() {
    let mut lab = Lab::new();
    let s1 = lab.host(lab.lan_s, "10.3.0.11:40001");
    let seen = lab.map_to_reflectors(s1).map(Option::unwrap);
    assert!(seen[0] != seen[1] && seen[1] != seen[2] && seen[0] != seen[2]);
    assert!(
        seen.iter()
            .all(|m| m.ip() == NATS.parse::<std::net::IpAddr>().unwrap())
    );
}

/// Lab `filtering-masquerade`: only the exact endpoint sent to gets in.
#[test]
fn filtering_masquerade_is_address_and_port_dependent() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:40002");
    let m = lab.learn(a1);
    let same_ip = lab.public("203.0.113.10:7100", false);
    let other_ip = lab.public("203.0.113.12:7101", false);
    let sent_to = lab.public("203.0.113.12:7102", false);
    lab.send(same_ip, 0, m, None);
    lab.send(other_ip, 0, m, None);
    lab.send(a1, 300, addr("203.0.113.12:7102"), None);
    lab.send(sent_to, 500, m, None);
    lab.run_ms(900);
    assert!(!lab.got_from(a1, addr("203.0.113.10:7100")));
    assert!(!lab.got_from(a1, addr("203.0.113.12:7101")));
    assert!(lab.got_from(a1, addr("203.0.113.12:7102")));
}

/// Lab `ttl-opens-mapping`: TTL 2 opens the mapping without reaching the
/// far NAT; TTL 1 dies at the host's own NAT and opens nothing.
#[test]
fn a_ttl_limited_probe_opens_the_local_mapping() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:41001");
    let b1 = lab.host(lab.lan_b, "10.2.0.11:42001");
    let a2 = lab.host(lab.lan_a, "10.1.0.11:41002");
    let b2 = lab.host(lab.lan_b, "10.2.0.11:42002");
    let (a1m, b1m, a2m, b2m) = (lab.learn(a1), lab.learn(b1), lab.learn(a2), lab.learn(b2));
    lab.send(a1, 0, b1m, Some(1));
    lab.send(b1, 200, a1m, None);
    lab.send(a2, 0, b2m, Some(2));
    lab.send(b2, 200, a2m, None);
    lab.send(a2, 400, b2m, None);
    lab.run_ms(700);
    assert!(!lab.got_from(a1, b1m), "ttl 1 opens nothing");
    assert!(lab.got_from(a2, b2m), "ttl 2 opened a2's mapping");
    assert!(lab.got_from(b2, a2m), "and a2's answer reaches b2");
}

/// Lab `conntrack-quirk`: a peer's early packet moves the host's flow to
/// that peer onto another port; the mapping toward others stays.
#[test]
fn the_conntrack_quirk_moves_the_flow_to_an_early_peer() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:43001");
    let control = lab.host(lab.lan_a, "10.1.0.11:43002");
    let (m, c) = (lab.learn(a1), lab.learn(control));
    let peer = lab.public("203.0.113.12:7201", true);
    lab.public("203.0.113.12:7202", true);
    lab.send(peer, 0, m, None);
    lab.send(a1, 200, addr("203.0.113.12:7201"), None);
    lab.send(a1, 400, addr(R1), None);
    lab.send(control, 200, addr("203.0.113.12:7202"), None);
    lab.run_ms(700);
    let moved = lab.reflected(a1, addr("203.0.113.12:7201")).unwrap();
    assert_ne!(moved, m);
    assert_eq!(moved.ip(), m.ip());
    assert_eq!(lab.reflected(a1, addr(R1)), Some(m));
    assert_eq!(lab.reflected(control, addr("203.0.113.12:7202")), Some(c));
    let early = lab
        .received(a1)
        .iter()
        .filter(|(r, _)| r.port() == 7201)
        .count();
    assert_eq!(early, 1, "only the answer to a1's own packet got in");
}

/// Lab `naive-punch-race`: the peer's probe wins the race, and nothing
/// gets through in either direction.
#[test]
fn a_naive_race_lost_to_the_peer_fails_both_ways() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:44001");
    let b1 = lab.host(lab.lan_b, "10.2.0.11:44101");
    let (am, bm) = (lab.learn(a1), lab.learn(b1));
    for t in [0, 400, 600] {
        lab.send(b1, t, am, None);
    }
    for t in [200, 500] {
        lab.send(a1, t, bm, None);
    }
    lab.run_ms(1000);
    assert!(!lab.got_from(a1, bm));
    assert!(lab.received(b1).iter().all(|(r, _)| *r == addr(R1)));
}

/// Lab `quirk-needs-input-accept`: a router whose input policy drops the
/// early packet never confirms its conntrack entry. The simulator models
/// that router as `linux_masquerade()` without the quirk.
#[test]
fn without_the_quirk_the_flow_to_an_early_peer_keeps_its_port() {
    let config = NatConfig {
        conntrack_quirk: None,
        ..NatConfig::linux_masquerade()
    };
    let mut lab = Lab::with_nat_a(config);
    let a1 = lab.host(lab.lan_a, "10.1.0.11:43003");
    let m = lab.learn(a1);
    let peer = lab.public("203.0.113.12:7203", true);
    lab.send(peer, 0, m, None);
    lab.send(a1, 200, addr("203.0.113.12:7203"), None);
    lab.run_ms(500);
    assert_eq!(lab.reflected(a1, addr("203.0.113.12:7203")), Some(m));
}

/// Lab `two-hosts-one-nat`, the parts the simulator agrees on: the same
/// port toward the same destination gets two mappings, LAN addresses reach
/// each other, and masquerade does not hairpin.
#[test]
fn two_hosts_behind_one_masquerade() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:45001");
    let a2 = lab.host(lab.lan_a, "10.1.0.12:45001");
    let (p1, p2) = (lab.learn(a1), lab.learn(a2));
    assert_ne!(p1, p2);
    let l1 = lab.host(lab.lan_a, "10.1.0.11:45003");
    let l2 = lab.host(lab.lan_a, "10.1.0.12:45003");
    lab.send(l1, 0, addr("10.1.0.12:45003"), None);
    lab.send(l2, 100, addr("10.1.0.11:45003"), None);
    let h2 = lab.host(lab.lan_a, "10.1.0.12:45004");
    let hm = lab.learn(h2);
    let h1 = lab.host(lab.lan_a, "10.1.0.11:45004");
    lab.send(h1, 0, hm, None);
    lab.run_ms(300);
    assert!(lab.got_from(l1, addr("10.1.0.12:45003")));
    assert!(lab.got_from(l2, addr("10.1.0.11:45003")));
    assert!(!lab.got_from(h2, at(NATA, 45004)), "no hairpinning");
}

/// Lab `public-symmetric`: a public peer answers a symmetric NAT's host.
#[test]
fn a_public_peer_reaches_a_symmetric_host_that_sent_first() {
    let mut lab = Lab::new();
    let s1 = lab.host(lab.lan_s, "10.3.0.11:47001");
    let peer = addr("203.0.113.12:7301");
    lab.public("203.0.113.12:7301", true);
    lab.send(s1, 0, peer, None);
    lab.send(s1, 300, peer, None);
    lab.run_ms(500);
    assert_eq!(lab.received(s1).len(), 2);
}

/// Lab `two-hosts-one-nat`: Linux masquerade keeps a port unique per
/// destination, not per NAT. a1:45002 -> R1 and a2:45002 -> R2 both leave
/// from NAT port 45002, and a2 -> R1 then gets another port: a2's mapping
/// is not endpoint-independent. The simulator's port-preserving allocator
/// keeps ports unique per NAT: a2 gets another port toward R2 already, and
/// reuses it toward R1.
#[test]
fn sim_differs_linux_masquerade_shares_a_port_across_destinations() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:45002");
    let a2 = lab.host(lab.lan_a, "10.1.0.12:45002");
    let q1 = lab.learn(a1);
    lab.send(a2, 0, addr(R2), None);
    lab.run_ms(100);
    let q2 = lab.reflected(a2, addr(R2)).unwrap();
    let q3 = lab.learn(a2);
    assert_eq!(q1, at(NATA, 45002));
    // Linux: q2 == NATA:45002 (shared) and q3 != q2.
    assert_ne!(q2, q1, "the simulator does not share the port");
    assert_eq!(
        q3, q2,
        "the simulator keeps a2's mapping endpoint-independent"
    );
}

/// Lab `binding-timeouts`: conntrack drops a mapping that never saw a reply
/// after nf_conntrack_udp_timeout (30 s by default) and refreshes mappings
/// on inbound packets too; a replied one lives 120 s from its last packet.
#[test]
fn linux_masquerade_timers() {
    let mut lab = Lab::new();
    // Unreplied: b1 sends to a silent peer, which answers 60 s later.
    let b1 = lab.host(lab.lan_b, "10.2.0.11:48001");
    let silent = lab.public("203.0.113.12:7401", false);
    lab.send(b1, 0, addr("203.0.113.12:7401"), None);
    lab.send(silent, 60_000, at(NATB, 48001), None);
    // Inbound refresh: one exchange, then only the peer sends, every 50 s.
    let b2 = lab.host(lab.lan_b, "10.2.0.11:48003");
    let talker = lab.public("203.0.113.12:7403", true);
    lab.send(b2, 0, addr("203.0.113.12:7403"), None);
    for t in (1..=6).map(|i| i * 50_000) {
        lab.send(talker, t, at(NATB, 48003), None);
    }
    // Replied, then quiet: gone 120 s after its last packet.
    let b3 = lab.host(lab.lan_b, "10.2.0.11:48005");
    let late = lab.public("203.0.113.12:7405", true);
    lab.send(b3, 0, addr("203.0.113.12:7405"), None);
    lab.send(late, 110_000, at(NATB, 48005), None);
    lab.send(late, 240_000, at(NATB, 48005), None);
    lab.run_ms(301_000);
    assert!(
        !lab.got_from(b1, addr("203.0.113.12:7401")),
        "unreplied: 30 s"
    );
    let inbound = lab.received(b2).len() - 1;
    assert_eq!(inbound, 6, "each inbound packet refreshes the mapping");
    let late_in = lab.received(b3).len() - 1;
    assert_eq!(late_in, 1, "in at 110 s, gone 120 s after it");
}

/// Lab `ttl-too-large`: a probe that reaches the far NAT with TTL 1 is
/// addressed to that router itself, so Linux delivers it locally without a
/// TTL check; conntrack confirms its entry, the quirk moves the peer's flow
/// back, and the punch fails both ways. (The simulator's hop count per link
/// counts the lab's inet router twice on a NAT-to-NAT path, so the lab's
/// TTL 3 is TTL 4 here; both reach natB with TTL 1.)
#[test]
fn a_ttl_expiring_at_the_far_nat_still_plants_the_quirk() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:41003");
    let b1 = lab.host(lab.lan_b, "10.2.0.11:42003");
    let (am, bm) = (lab.learn(a1), lab.learn(b1));
    lab.send(a1, 0, bm, Some(4));
    lab.send(b1, 200, am, None);
    lab.send(a1, 400, bm, None);
    lab.run_ms(700);
    assert!(
        !lab.got_from(a1, bm),
        "b1's flow back was moved off its port"
    );
    assert!(
        !lab.got_from(b1, am),
        "and a1's retry hits that moved flow's old port"
    );
    let natb = lab.world.nats().nth(1).unwrap();
    let hit = natb
        .log()
        .iter()
        .any(|l| matches!(l.event, NatEvent::QuirkHit { .. }));
    assert!(hit, "natB moved b1's flow");
}

/// Lab `stale-entry-wait-out`, with the default timers: after a lost race
/// both sides stay quiet for 31 s, then punch with TTL 2. The stale entry
/// and a1's moved flow (unreplied, 30 s) are both gone, a1's flow gets its
/// port back and the punch works.
#[test]
fn waiting_out_a_lost_race_takes_the_unreplied_timeout() {
    let mut lab = Lab::new();
    let a1 = lab.host(lab.lan_a, "10.1.0.11:44202");
    let b1 = lab.host(lab.lan_b, "10.2.0.11:44302");
    let (am, bm) = (lab.learn(a1), lab.learn(b1));
    lab.send(b1, 0, am, None);
    lab.send(a1, 200, bm, None);
    lab.send(a1, 31_000, bm, Some(2));
    lab.send(b1, 31_200, am, None);
    lab.send(a1, 31_400, bm, None);
    lab.run_ms(32_000);
    assert!(lab.got_from(a1, bm), "a1's flow is back on its port");
    assert!(lab.got_from(b1, am));
}

/// Lab `conntrack-quirk` and `two-hosts-one-nat`: where masquerade cannot
/// keep a flow's port (a quirk entry, another host on it) it picks a
/// pseudo-random one, not the next free port from the bottom of the range.
#[test]
fn a_moved_flow_gets_a_random_port() {
    let mut lab = Lab::new();
    let first = lab.host(lab.lan_a, "10.1.0.11:49001");
    lab.learn(first);
    let ports: Vec<u16> = (12..17)
        .map(|i| {
            let host = lab.host(lab.lan_a, &format!("10.1.0.{i}:49001"));
            lab.learn(host).port()
        })
        .collect();
    assert!(!ports.contains(&49001), "{ports:?}");
    let ascending = ports.windows(2).all(|w| w[1] == w[0] + 1);
    assert!(!ascending && ports[0] != 1024, "{ports:?}");
}

// --- IPv6 behind stateful firewalls (no NAT) ---------------------------------------

const V6A: &str = "2001:db8:a::11";
const V6B: &str = "2001:db8:b::11";
const V6_R1: &str = "[2001:db8:ff::10]:7000";

/// The lab's IPv6 sites: v6a behind fw6a, v6b behind fw6b, each a
/// `NatConfig::stateful_firewall()` whose external address is its host's own
/// (so nothing is translated), and R6 on the internet.
struct Lab6 {
    lab: Lab,
    site_a: NetId,
    site_b: NetId,
}

impl Lab6 {
    fn new() -> Self {
        let mut lab = Lab::new();
        let internet = lab.world.internet();
        let wan = Link::with_latency(Duration::from_millis(1)).hops(1);
        let firewall = NatConfig::stateful_firewall();
        let (_, site_a) = lab
            .world
            .add_nat(internet, V6A.parse().unwrap(), wan, firewall);
        let (_, site_b) = lab
            .world
            .add_nat(internet, V6B.parse().unwrap(), wan, firewall);
        lab.public(V6_R1, true);
        Self {
            lab,
            site_a,
            site_b,
        }
    }

    fn a(&mut self, port: u16) -> HostId {
        let site = self.site_a;
        self.lab.host(site, &at(V6A, port).to_string())
    }

    fn b(&mut self, port: u16) -> HostId {
        let site = self.site_b;
        self.lab.host(site, &at(V6B, port).to_string())
    }
}

/// Lab `ipv6-filtering`: nothing is translated, and only the exact endpoint
/// the host sent to gets in.
#[test]
fn an_ipv6_firewall_translates_nothing_and_admits_only_the_endpoint_sent_to() {
    let mut six = Lab6::new();
    let a = six.a(40601);
    let b = six.b(40602);
    let lab = &mut six.lab;
    let before = lab.public("[2001:db8:ff::12]:7610", false);
    let other_ip = lab.public("[2001:db8:ff::11]:7611", false);
    let other_port = lab.public("[2001:db8:ff::12]:7613", false);
    let sent_to = lab.public("[2001:db8:ff::12]:7612", false);
    let me = at(V6A, 40601);
    lab.send(before, 0, me, None);
    lab.send(b, 100, me, None);
    lab.send(a, 300, addr(V6_R1), None);
    lab.send(a, 300, addr("[2001:db8:ff::12]:7612"), None);
    for stranger in [other_ip, other_port, sent_to] {
        lab.send(stranger, 500, me, None);
    }
    lab.run_ms(900);
    assert_eq!(lab.reflected(a, addr(V6_R1)), Some(me));
    for dropped in [
        "[2001:db8:ff::12]:7610",
        "[2001:db8:b::11]:40602",
        "[2001:db8:ff::11]:7611",
        "[2001:db8:ff::12]:7613",
    ] {
        assert!(!lab.got_from(a, addr(dropped)), "{dropped}");
    }
    assert!(lab.got_from(a, addr("[2001:db8:ff::12]:7612")));
}

/// Lab `ipv6-naive-race`: the peer's early probe is dropped and changes
/// nothing, so the race the peer wins still works both ways.
#[test]
fn a_naive_race_between_ipv6_firewalls_works_both_ways() {
    let mut six = Lab6::new();
    let (a, b) = (six.a(44501), six.b(44601));
    let (am, bm) = (at(V6A, 44501), at(V6B, 44601));
    let lab = &mut six.lab;
    lab.send(b, 0, am, None);
    lab.send(a, 200, bm, None);
    lab.send(b, 400, am, None);
    lab.run_ms(900);
    assert_eq!(lab.received(a).len(), 1, "only the probe after a's own");
    assert_eq!(lab.received(b).len(), 1);
}

/// Lab `ipv6-hop-limit`: hop limit 1 opens nothing, 2 opens the host's own
/// firewall, and one that reaches the far firewall with hop limit 1 (the
/// lab's 3, the simulator's 4: the inet router counts on both WAN links)
/// plants nothing there, so the punch after it still works.
#[test]
fn hop_limits_behind_ipv6_firewalls_open_the_own_one_and_harm_nothing() {
    let mut six = Lab6::new();
    let (a1, b1) = (six.a(41601), six.b(42601));
    let (a2, b2) = (six.a(41602), six.b(42602));
    let (a3, b3) = (six.a(41603), six.b(42603));
    let lab = &mut six.lab;
    lab.send(a1, 0, at(V6B, 42601), Some(1));
    lab.send(b1, 200, at(V6A, 41601), None);
    lab.send(a2, 0, at(V6B, 42602), Some(2));
    lab.send(b2, 200, at(V6A, 41602), None);
    lab.send(a2, 400, at(V6B, 42602), None);
    lab.send(a3, 0, at(V6B, 42603), Some(4));
    lab.send(b3, 200, at(V6A, 41603), None);
    lab.send(a3, 400, at(V6B, 42603), None);
    lab.run_ms(900);
    assert!(lab.received(a1).is_empty(), "hop limit 1 opens nothing");
    assert!(lab.got_from(a2, at(V6B, 42602)) && lab.got_from(b2, at(V6A, 41602)));
    assert!(lab.got_from(a3, at(V6B, 42603)) && lab.got_from(b3, at(V6A, 41603)));
    assert_eq!(lab.received(b3).len(), 1, "the limited probe never arrived");
}
