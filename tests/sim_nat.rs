//! NAT boxes in the simulator behave as RFC 4787 describes: mapping,
//! filtering, port allocation, binding timeout, hairpinning, nesting and the
//! Linux conntrack quirk, each observed from public reflector hosts.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now: the world's start time

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::sim::{
    Behavior, DropReason, HostId, Link, NatConfig, NatEvent, NatId, NetId, PortAllocation, Probe,
    ProbeEvent, World,
};

const NAT_IP: &str = "198.51.100.1";
const INSIDE_A: &str = "10.0.0.2:5000";
/// Reflectors: two ports on one address, and a second address.
const REFLECTORS: [&str; 3] = ["203.0.113.1:3478", "203.0.113.1:3479", "203.0.113.2:3478"];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn wan() -> Link {
    Link::with_latency(Duration::from_millis(10)).hops(2)
}

/// One NAT on the internet, host `a` behind it, and public reflectors.
struct Lab {
    world: World<Probe>,
    nat: NatId,
    inside: NetId,
    a: HostId,
    reflectors: Vec<HostId>,
}

impl Lab {
    fn new(seed: u64, config: NatConfig, reflectors: &[&str]) -> Self {
        let mut world = World::new(seed, Instant::now());
        let internet = world.internet();
        let (nat, inside) = world.add_nat(internet, NAT_IP.parse().unwrap(), wan(), config);
        let a = world.add_host(inside, addr(INSIDE_A), Link::default(), Probe::new());
        let reflectors = (reflectors.iter())
            .map(|r| world.add_host(internet, addr(r), wan(), Probe::reflector()))
            .collect();
        Lab {
            world,
            nat,
            inside,
            a,
            reflectors,
        }
    }

    /// Adds a host behind the NAT that sends to the first reflector now.
    fn add_inside(&mut self, inside: &str) -> HostId {
        let mut probe = Probe::new();
        probe.send(self.world.now(), addr(REFLECTORS[0]), "map");
        let host = self
            .world
            .add_host(self.inside, addr(inside), Link::default(), probe);
        self.world.run_for(Duration::from_secs(1));
        host
    }

    /// The external address the first reflector told `host`.
    fn reflected_to(&self, host: HostId) -> SocketAddr {
        let mut events = self.world.events().iter().filter(|e| e.host == host);
        events.find_map(|e| e.event.reflected()).unwrap()
    }

    /// `from` sends one datagram to `to` now, then the world runs a second.
    fn send(&mut self, from: HostId, to: SocketAddr, payload: &'static str) {
        self.world
            .with_machine(from, |p, now| p.send(now, to, payload));
        self.world.run_for(Duration::from_secs(1));
    }

    /// The sources of the datagrams `host` received, oldest first.
    fn sources_seen_by(&self, host: HostId) -> Vec<SocketAddr> {
        let events = self.world.events().iter().filter(|e| e.host == host);
        events.filter_map(|e| e.event.remote()).collect()
    }

    /// The sources of the datagrams `host` received with `payload`.
    fn senders_of(&self, host: HostId, payload: &str) -> Vec<SocketAddr> {
        (self.world.events().iter())
            .filter(|e| e.host == host)
            .filter_map(|e| match &e.event {
                ProbeEvent::Received {
                    remote, payload: p, ..
                } if p == payload => Some(*remote),
                _ => None,
            })
            .collect()
    }

    /// How many log entries of the NAT match `pred`.
    fn logged(&self, pred: impl Fn(&NatEvent) -> bool) -> usize {
        let log = self.world.nat(self.nat).log();
        log.iter().filter(|e| pred(&e.event)).count()
    }

    /// `a` sends to every reflector (twice to the first); returns the source
    /// each reflector saw first, and checks the second send reused the first
    /// mapping.
    fn mapped_addresses(&mut self) -> Vec<SocketAddr> {
        for r in REFLECTORS {
            self.send(self.a, addr(r), "map");
        }
        self.send(self.a, addr(REFLECTORS[0]), "again");
        let first = self.sources_seen_by(self.reflectors[0]);
        assert_eq!(
            first[0], first[1],
            "a mapping is reused for the same remote"
        );
        let seen = self.reflectors.iter().map(|&r| self.sources_seen_by(r)[0]);
        seen.collect()
    }
}

fn with_mapping(mapping: Behavior) -> NatConfig {
    NatConfig {
        mapping,
        ports: PortAllocation::Sequential {
            first: 20000,
            step: 1,
        },
        ..NatConfig::full_cone()
    }
}

fn created(e: &NatEvent) -> bool {
    matches!(e, NatEvent::MappingCreated { .. })
}

#[test]
fn endpoint_independent_mapping_reuses_one_mapping_for_every_remote() {
    let mut lab = Lab::new(1, with_mapping(Behavior::EndpointIndependent), &REFLECTORS);
    let seen = lab.mapped_addresses();
    assert_eq!(seen, vec![addr("198.51.100.1:20000"); 3]);
    assert_eq!(lab.logged(created), 1);
}

#[test]
fn address_dependent_mapping_reuses_a_mapping_only_for_the_same_remote_ip() {
    let mut lab = Lab::new(1, with_mapping(Behavior::AddressDependent), &REFLECTORS);
    let seen = lab.mapped_addresses();
    assert_eq!(seen[0], seen[1]);
    assert_ne!(seen[0], seen[2]);
    assert_eq!(lab.logged(created), 2);
}

#[test]
fn address_and_port_dependent_mapping_uses_a_mapping_per_remote_endpoint() {
    let mut lab = Lab::new(
        1,
        with_mapping(Behavior::AddressAndPortDependent),
        &REFLECTORS,
    );
    let seen = lab.mapped_addresses();
    assert!(seen[0] != seen[1] && seen[1] != seen[2] && seen[0] != seen[2]);
    assert_eq!(lab.logged(created), 3);
}

/// `a` opens a mapping toward the first reflector, then every reflector
/// sends to it: returns which got through.
fn admitted(filtering: Behavior) -> (Vec<SocketAddr>, Lab) {
    let config = NatConfig {
        filtering,
        ..NatConfig::full_cone()
    };
    let mut lab = Lab::new(1, config, &REFLECTORS);
    lab.send(lab.a, addr(REFLECTORS[0]), "open");
    let mapped = lab.sources_seen_by(lab.reflectors[0])[0];
    for r in lab.reflectors.clone() {
        lab.send(r, mapped, "in");
    }
    (lab.senders_of(lab.a, "in"), lab)
}

#[test]
fn endpoint_independent_filtering_admits_anyone_once_mapped() {
    let (admitted, lab) = admitted(Behavior::EndpointIndependent);
    assert_eq!(admitted, REFLECTORS.map(addr));
    // Without a mapping nothing gets in, even through a full cone.
    let mut lab = lab;
    lab.send(lab.reflectors[2], addr("198.51.100.1:5001"), "in");
    let unmapped = |e: &NatEvent| matches!(e, NatEvent::Filtered { mapped: false, .. });
    assert_eq!(lab.logged(unmapped), 1);
}

#[test]
fn address_dependent_filtering_admits_any_port_of_an_ip_sent_to() {
    let (admitted, lab) = admitted(Behavior::AddressDependent);
    assert_eq!(admitted, [addr(REFLECTORS[0]), addr(REFLECTORS[1])]);
    let other_ip = addr(REFLECTORS[2]);
    let refused = |e: &NatEvent| matches!(e, NatEvent::Filtered { mapped: true, remote, .. } if *remote == other_ip);
    assert_eq!(lab.logged(refused), 1);
}

#[test]
fn address_and_port_dependent_filtering_admits_only_the_endpoint_sent_to() {
    let (admitted, lab) = admitted(Behavior::AddressAndPortDependent);
    assert_eq!(admitted, [addr(REFLECTORS[0])]);
    let nat = lab.nat;
    assert_eq!(lab.world.trace().drops(DropReason::Filtered(nat)), 2);
}

/// The external ports of `a`'s mappings toward each of `count` reflectors
/// on different addresses, through an APDM NAT allocating with `ports`.
fn allocated_ports(seed: u64, ports: PortAllocation, count: u8) -> Vec<u16> {
    let reflectors: Vec<String> = (1..=count).map(|i| format!("203.0.113.{i}:3478")).collect();
    let names: Vec<&str> = reflectors.iter().map(String::as_str).collect();
    let config = NatConfig {
        ports,
        ..NatConfig::symmetric()
    };
    let mut lab = Lab::new(seed, config, &names);
    for r in &names {
        lab.send(lab.a, addr(r), "map");
    }
    let seen = lab
        .reflectors
        .iter()
        .map(|&r| lab.sources_seen_by(r)[0].port());
    seen.collect()
}

#[test]
fn preserving_allocation_keeps_the_internal_port_unless_taken() {
    let mut lab = Lab::new(1, NatConfig::port_restricted_cone(), &REFLECTORS[..1]);
    lab.send(lab.a, addr(REFLECTORS[0]), "map");
    let b = lab.add_inside("10.0.0.3:5000");
    assert_eq!(lab.reflected_to(lab.a), addr("198.51.100.1:5000"));
    // Port 5000 is taken: no overloading (REQ-3), the scan starts at 1024.
    assert_eq!(lab.reflected_to(b), addr("198.51.100.1:1024"));
}

#[test]
fn sequential_allocation_steps_through_the_ports() {
    let ports = PortAllocation::Sequential {
        first: 20000,
        step: 2,
    };
    assert_eq!(allocated_ports(1, ports, 4), [20000, 20002, 20004, 20006]);
}

#[test]
fn random_allocation_is_spread_out_and_reproducible() {
    let ports = allocated_ports(1, PortAllocation::Random, 8);
    let mut distinct = ports.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "{ports:?}");
    assert!(ports.iter().all(|&p| p >= 1024));
    let steps: Vec<i32> = ports
        .windows(2)
        .map(|w| i32::from(w[1]) - i32::from(w[0]))
        .collect();
    assert!(
        steps.windows(2).any(|w| w[0] != w[1]),
        "{ports:?} is sequential"
    );
    assert_eq!(allocated_ports(1, PortAllocation::Random, 8), ports);
    assert_ne!(allocated_ports(2, PortAllocation::Random, 8), ports);
}

#[test]
fn a_binding_expires_after_its_timeout_unless_outbound_traffic_refreshes_it() {
    let config = NatConfig {
        binding_timeout: Duration::from_secs(30),
        ports: PortAllocation::Sequential {
            first: 30000,
            step: 1,
        },
        ..NatConfig::port_restricted_cone()
    };
    let mut lab = Lab::new(1, config, &REFLECTORS);
    let start = lab.world.start();
    let r = addr(REFLECTORS[0]);
    lab.send(lab.a, r, "t=0");
    lab.world.run_until(start + Duration::from_secs(20));
    lab.send(lab.a, r, "t=20, refreshes");
    lab.world.run_until(start + Duration::from_secs(51));
    lab.send(lab.a, r, "t=51, after expiry");
    let ports: Vec<u16> = lab
        .sources_seen_by(lab.reflectors[0])
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(ports, [30000, 30000, 30001]);
    let expired: Vec<_> = (lab.world.nat(lab.nat).log().iter())
        .filter(|e| matches!(e.event, NatEvent::MappingExpired { .. }))
        .map(|e| e.at - start)
        .collect();
    assert_eq!(expired, [Duration::from_secs(50)]);
}

#[test]
fn inbound_traffic_refreshes_a_binding_only_when_configured_to() {
    for refresh_on_inbound in [true, false] {
        let config = NatConfig {
            binding_timeout: Duration::from_secs(30),
            refresh_on_inbound,
            ..NatConfig::port_restricted_cone()
        };
        let mut lab = Lab::new(1, config, &REFLECTORS);
        lab.send(lab.a, addr(REFLECTORS[0]), "open");
        let mapped = lab.sources_seen_by(lab.reflectors[0])[0];
        let start = lab.world.start();
        for secs in [20, 40, 60] {
            lab.world.run_until(start + Duration::from_secs(secs));
            lab.send(lab.reflectors[0], mapped, "keepalive");
        }
        let got = lab.senders_of(lab.a, "keepalive").len();
        assert_eq!(got, if refresh_on_inbound { 3 } else { 1 });
    }
}

/// Hosts `a` and `b` behind one NAT learn their external addresses, then `a`
/// sends to `b`'s: returns what `b` saw, and the lab.
fn hairpin(hairpinning: bool) -> (Vec<SocketAddr>, Lab) {
    let config = NatConfig {
        hairpinning,
        ..NatConfig::full_cone()
    };
    let mut lab = Lab::new(1, config, &REFLECTORS[..1]);
    lab.send(lab.a, addr(REFLECTORS[0]), "map");
    let b = lab.add_inside("10.0.0.3:6000");
    lab.send(lab.a, lab.reflected_to(b), "hairpin");
    (lab.senders_of(b, "hairpin"), lab)
}

#[test]
fn hairpinned_packets_carry_the_external_source() {
    let (seen, lab) = hairpin(true);
    assert_eq!(seen, [addr("198.51.100.1:5000")]);
    let hairpinned = |e: &NatEvent| matches!(e, NatEvent::Hairpinned { .. });
    assert_eq!(lab.logged(hairpinned), 1);
}

#[test]
fn without_hairpinning_packets_to_the_own_external_address_are_dropped() {
    let (seen, lab) = hairpin(false);
    assert!(seen.is_empty());
    let refused = |e: &NatEvent| matches!(e, NatEvent::HairpinRefused { .. });
    assert_eq!(lab.logged(refused), 1);
    let drops = lab.world.trace().drops(DropReason::HairpinRefused(lab.nat));
    assert_eq!(drops, 1);
}

#[test]
fn behind_nested_nats_the_reflector_sees_the_carrier_address() {
    let mut world = World::new(1, Instant::now());
    let internet = world.internet();
    let cgn_ip = "198.51.100.1".parse().unwrap();
    let (cgn, carrier) = world.add_nat(internet, cgn_ip, wan(), NatConfig::carrier_grade());
    let home_ip = "100.64.0.2".parse().unwrap();
    let home_config = NatConfig::port_restricted_cone();
    let (home, lan) = world.add_nat(carrier, home_ip, Link::default(), home_config);
    let r = world.add_host(internet, addr(REFLECTORS[0]), wan(), Probe::reflector());
    let mut probe = Probe::new();
    probe.send(world.now(), addr(REFLECTORS[0]), "map");
    let a = world.add_host(lan, addr("192.168.1.2:5000"), Link::default(), probe);
    world.run_for(Duration::from_secs(1));

    let seen = world.events().iter().find(|e| e.host == r).unwrap();
    let observed = seen.event.remote().unwrap();
    assert_eq!(observed.ip(), cgn_ip);
    let answer = world.events().iter().find(|e| e.host == a).unwrap();
    assert_eq!(answer.event.reflected(), Some(observed));
    let home_mapping = world.nat(home).bindings().next().unwrap();
    assert_eq!(home_mapping.external, addr("100.64.0.2:5000"));
    let cgn_mapping = world.nat(cgn).bindings().next().unwrap();
    assert_eq!(
        (cgn_mapping.internal, cgn_mapping.external),
        (home_mapping.external, observed)
    );
}

/// Behind a Linux NAT, `a` maps port 5000 toward a reflector; public host `b`
/// sends to that port 1 s later (filtered), and `a` sends to `b` after
/// `gap`. Returns the source `b` saw and the lab.
fn conntrack(quirk: Option<Duration>, gap: Duration) -> (SocketAddr, Lab, HostId) {
    let config = NatConfig {
        conntrack_quirk: quirk,
        ..NatConfig::linux_masquerade()
    };
    let mut lab = Lab::new(1, config, &REFLECTORS[..1]);
    let b_addr = addr("198.51.100.7:6000");
    let internet = lab.world.internet();
    let b = lab.world.add_host(internet, b_addr, wan(), Probe::new());
    lab.send(lab.a, addr(REFLECTORS[0]), "map");
    let mapped = lab.reflected_to(lab.a);
    lab.send(b, mapped, "inbound first");
    lab.world.run_for(gap);
    lab.send(lab.a, b_addr, "outbound");
    let seen = lab.senders_of(b, "outbound");
    (seen[0], lab, b)
}

#[test]
fn the_conntrack_quirk_moves_the_outbound_flow_to_a_new_port() {
    let (seen, mut lab, b) = conntrack(Some(Duration::from_secs(30)), Duration::ZERO);
    assert_eq!(seen.ip().to_string(), NAT_IP);
    assert_ne!(seen.port(), 5000);
    let hit = |e: &NatEvent| matches!(e, NatEvent::QuirkHit { avoided: 5000, .. });
    assert_eq!(lab.logged(hit), 1);
    // The peer only gets in through the new port: the old one stays shut.
    lab.send(b, seen, "via new port");
    lab.send(b, addr("198.51.100.1:5000"), "via old port");
    assert_eq!(lab.senders_of(lab.a, "via new port").len(), 1);
    assert!(lab.senders_of(lab.a, "via old port").is_empty());
}

#[test]
fn without_the_quirk_the_outbound_flow_keeps_its_port() {
    let (seen, lab, _) = conntrack(None, Duration::ZERO);
    assert_eq!(seen, addr("198.51.100.1:5000"));
    assert_eq!(lab.logged(|e| matches!(e, NatEvent::QuirkHit { .. })), 0);
}

#[test]
fn the_quirk_ends_when_the_unreplied_entry_times_out() {
    let (seen, _, _) = conntrack(Some(Duration::from_secs(30)), Duration::from_secs(30));
    assert_eq!(seen, addr("198.51.100.1:5000"));
}
