//! The simulator's world and links: TTL expiry, MTU, loss, duplication and
//! reordering rates, offline hosts, address changes and determinism.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now: the world's start time

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::sim::{DropReason, HostId, Link, NatConfig, NatEvent, Probe, ProbeEvent, World};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The payloads `host` received, oldest first.
fn received(world: &World<Probe>, host: HostId) -> Vec<String> {
    (world.events().iter())
        .filter(|e| e.host == host)
        .filter_map(|e| match &e.event {
            ProbeEvent::Received { payload, .. } => {
                Some(String::from_utf8_lossy(payload).into_owned())
            }
            ProbeEvent::AddressChanged { .. } => None,
        })
        .collect()
}

/// Two hosts behind port-restricted NATs whose WAN links have 2 routers.
struct Pair {
    world: World<Probe>,
    a: HostId,
    b: HostId,
    nats: [macula::sim::NatId; 2],
}

const A_EXTERNAL: &str = "198.51.100.1:5000";
const B_EXTERNAL: &str = "198.51.100.2:6000";

fn pair() -> Pair {
    let mut world = World::new(1, Instant::now());
    let internet = world.internet();
    let wan = Link::with_latency(ms(10)).hops(2);
    let config = NatConfig::port_restricted_cone();
    let (nat_a, lan_a) = world.add_nat(internet, "198.51.100.1".parse().unwrap(), wan, config);
    let (nat_b, lan_b) = world.add_nat(internet, "198.51.100.2".parse().unwrap(), wan, config);
    let a = world.add_host(lan_a, addr("10.0.0.2:5000"), Link::default(), Probe::new());
    let b = world.add_host(lan_b, addr("10.0.1.2:6000"), Link::default(), Probe::new());
    Pair {
        world,
        a,
        b,
        nats: [nat_a, nat_b],
    }
}

impl Pair {
    fn send(&mut self, from: HostId, to: &str, payload: &'static str, ttl: Option<u8>) {
        let to = addr(to);
        self.world
            .with_machine(from, |p, now| p.send_with_ttl(now, to, payload, ttl));
        self.world.run_for(Duration::from_secs(1));
    }
}

#[test]
fn a_ttl_limited_packet_opens_the_local_mapping_but_dies_before_the_peer() {
    let mut p = pair();
    // TTL 2: the home NAT takes it to 1, the first WAN router drops it.
    p.send(p.a, B_EXTERNAL, "probe", Some(2));
    assert_eq!(p.world.trace().drops(DropReason::TtlExpired), 1);
    assert_eq!(p.world.nat(p.nats[0]).bindings().count(), 1);
    assert!(
        p.world.nat(p.nats[1]).log().is_empty(),
        "never reached B's NAT"
    );
    // The mapping it opened admits B's packet.
    p.send(p.b, A_EXTERNAL, "hello", None);
    assert_eq!(received(&p.world, p.a), ["hello"]);
}

#[test]
fn a_packet_with_ttl_1_dies_at_the_nat_without_a_mapping() {
    let mut p = pair();
    p.send(p.a, B_EXTERNAL, "probe", Some(1));
    assert_eq!(p.world.trace().drops(DropReason::TtlExpired), 1);
    assert!(p.world.nat(p.nats[0]).log().is_empty());
    // Without a mapping toward B, B's packet is filtered.
    p.send(p.b, A_EXTERNAL, "hello", None);
    assert!(received(&p.world, p.a).is_empty());
    let filtered = |e: &NatEvent| matches!(e, NatEvent::Filtered { .. });
    assert_eq!(
        p.world
            .nat(p.nats[0])
            .log()
            .iter()
            .filter(|e| filtered(&e.event))
            .count(),
        1
    );
}

/// Two public hosts; `a`'s link is `link`. Returns the world and both.
fn public_pair(seed: u64, link: Link) -> (World<Probe>, HostId, HostId) {
    let mut world = World::new(seed, Instant::now());
    let internet = world.internet();
    let a = world.add_host(internet, addr("203.0.113.1:1000"), link, Probe::new());
    let b = world.add_host(
        internet,
        addr("203.0.113.2:2000"),
        Link::default(),
        Probe::new(),
    );
    (world, a, b)
}

#[test]
fn packets_larger_than_the_mtu_are_dropped_and_counted() {
    let (mut world, a, b) = public_pair(1, Link::default().mtu(1280));
    let to = world.host_addr(b);
    world.with_machine(a, |p, now| {
        p.send(now, to, vec![0; 1252]); // 1252 + 28 header bytes = 1280
        p.send(now, to, vec![0; 1253]);
    });
    world.run_for(Duration::from_secs(1));
    assert_eq!(received(&world, b).len(), 1);
    assert_eq!(world.trace().drops(DropReason::TooBig), 1);
}

const PACKETS: u32 = 2000;

/// `a` sends `PACKETS` numbered datagrams 1 ms apart over `link`; returns
/// the numbers `b` received, in arrival order.
fn numbers_through(link: Link) -> Vec<u32> {
    let (mut world, a, b) = public_pair(9, link);
    let to = world.host_addr(b);
    world.with_machine(a, |p, now| {
        for i in 0..PACKETS {
            p.send(now + ms(u64::from(i)), to, i.to_string());
        }
    });
    world.run_for(Duration::from_secs(5));
    (received(&world, b).iter())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn loss_matches_the_configured_rate() {
    let got = numbers_through(Link::with_latency(ms(10)).loss(0.1));
    let lost = PACKETS as usize - got.len();
    assert!((150..=250).contains(&lost), "{lost} lost of {PACKETS}");
}

#[test]
fn duplication_matches_the_configured_rate() {
    let got = numbers_through(Link::with_latency(ms(10)).duplicate(0.05));
    let extra = got.len() - PACKETS as usize;
    assert!(
        (60..=140).contains(&extra),
        "{extra} duplicates of {PACKETS}"
    );
}

#[test]
fn reordering_matches_the_configured_rate() {
    let got = numbers_through(Link::with_latency(ms(10)).reorder(0.1, ms(5)));
    assert_eq!(got.len(), PACKETS as usize);
    let mut highest = 0;
    let mut late = 0;
    for n in got {
        late += usize::from(n < highest);
        highest = highest.max(n);
    }
    assert!((150..=250).contains(&late), "{late} late of {PACKETS}");
}

#[test]
fn an_offline_host_receives_nothing_and_its_timers_wait() {
    let (mut world, a, b) = public_pair(1, Link::with_latency(ms(10)));
    let start = world.start();
    let (to_a, to_b) = (world.host_addr(a), world.host_addr(b));
    world.with_machine(a, |p, _| {
        for s in 1..=3 {
            p.send(start + Duration::from_secs(s), to_b, format!("t={s}"));
        }
    });
    world.with_machine(b, |p, _| {
        p.send(start + Duration::from_secs(2), to_a, "from b")
    });
    world.run_until(start + ms(1500));
    world.set_online(b, false);
    world.run_until(start + ms(2500));
    world.set_online(b, true);
    world.run_until(start + Duration::from_secs(4));

    assert_eq!(received(&world, b), ["t=1", "t=3"]);
    assert_eq!(world.trace().drops(DropReason::HostOffline), 1);
    let answer = world.events().iter().find(|e| e.host == a).unwrap();
    assert_eq!(
        answer.at - start,
        ms(2510),
        "b's 2 s send waited for it to come back"
    );
}

#[test]
fn run_while_stops_as_soon_as_the_condition_fails() {
    let (mut world, a, b) = public_pair(1, Link::with_latency(ms(30)));
    let to = world.host_addr(b);
    world.with_machine(a, |p, now| p.send(now, to, "ping"));
    let limit = world.start() + Duration::from_secs(1);
    assert!(world.run_while(limit, |w| w.events().is_empty()));
    assert_eq!(world.elapsed(), ms(30));
    assert!(!world.run_while(limit, |_| true));
    assert_eq!(world.now(), limit);
}

#[test]
fn a_cut_link_drops_everything_until_it_is_restored() {
    let (mut world, a, b) = public_pair(1, Link::default());
    let to = world.host_addr(b);
    world.set_host_link(a, Link::default().loss(1.0));
    world.with_machine(a, |p, now| p.send(now, to, "cut"));
    world.run_for(ms(10));
    world.set_host_link(a, Link::default());
    world.with_machine(a, |p, now| p.send(now, to, "restored"));
    world.run_for(ms(10));
    assert_eq!(received(&world, b), ["restored"]);
    assert_eq!(world.trace().drops(DropReason::Lost), 1);
}

#[test]
fn a_moved_host_is_told_and_is_reached_only_at_its_new_address() {
    let mut world = World::new(1, Instant::now());
    let internet = world.internet();
    let wan = Link::with_latency(ms(10));
    let r = world.add_host(internet, addr("203.0.113.1:3478"), wan, Probe::reflector());
    let b = world.add_host(internet, addr("203.0.113.5:7000"), wan, Probe::new());
    let (old, new) = (world.host_addr(b), addr("203.0.113.6:7000"));
    world.with_machine(r, |p, now| p.send(now, old, "in flight"));
    world.run_for(ms(5));
    world.move_host(b, internet, new);
    let reflector = world.host_addr(r);
    world.with_machine(b, |p, now| p.send(now, reflector, "who am i"));
    world.run_for(Duration::from_secs(1));

    let events: Vec<_> = world.events().iter().filter(|e| e.host == b).collect();
    assert_eq!(events[0].event, ProbeEvent::AddressChanged { old, new });
    assert_eq!(events[1].event.reflected(), Some(new));
    assert_eq!(events.len(), 2);
    assert_eq!(world.trace().drops(DropReason::NoListener), 1);
}

/// A lossy, jittery scenario through NATs with random ports; returns the
/// trace hash.
fn scenario(seed: u64) -> u64 {
    let mut world = World::new(seed, Instant::now());
    let internet = world.internet();
    let wan = (Link::with_latency(ms(20)).jitter(ms(10)).loss(0.05))
        .duplicate(0.05)
        .reorder(0.05, ms(15))
        .hops(3);
    let r = world.add_host(internet, addr("203.0.113.1:3478"), wan, Probe::reflector());
    let reflector = world.host_addr(r);
    for i in 1..=3u8 {
        let ip = format!("198.51.100.{i}").parse().unwrap();
        let (_, lan) = world.add_nat(internet, ip, wan, NatConfig::carrier_grade());
        let mut probe = Probe::new();
        for k in 0..50 {
            probe.send(world.start() + ms(k * 7), reflector, format!("{i}/{k}"));
        }
        world.add_host(lan, addr("10.0.0.2:5000"), Link::default(), probe);
    }
    world.run_for(Duration::from_secs(2));
    assert!(world.trace().entries().len() > 300);
    world.trace_hash()
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_a_different_one() {
    assert_eq!(scenario(42), scenario(42));
    assert_ne!(scenario(42), scenario(43));
}
