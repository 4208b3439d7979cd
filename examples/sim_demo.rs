//! The simulator demo: peers behind different NATs learn their reflexive
//! addresses from a public rendezvous host, then punch holes toward each
//! other. Prints what each NAT did and which pairs got a direct path.
//!
//! Run with `cargo run --example sim_demo --features sim`.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::sim::{
    HostId, Link, NatConfig, NatEvent, NatId, NatLogEntry, NetId, Probe, ProbeEvent, World,
};
use macula::{Input, Machine, Output};

const SEED: u64 = 7;
const RENDEZVOUS: &str = "203.0.113.10:3478";
const PUNCHES: u32 = 5;
const PUNCH_INTERVAL: Duration = Duration::from_millis(200);

/// What the demo hosts report.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DemoEvent {
    /// The rendezvous told us our reflexive address.
    Reflexive(SocketAddr),
    /// A datagram from peer `peer` arrived directly, from `from`.
    Heard { peer: String, from: SocketAddr },
}

enum Role {
    /// Answers HELLO with YOU <addr>; once everyone is in, sends each peer
    /// PEER <name> <addr> for every other peer.
    Rendezvous {
        expected: usize,
        peers: Vec<(String, SocketAddr)>,
    },
    /// Says HELLO, punches every peer it is told about (after its delay),
    /// answers PUNCH with ACK to the address it came from.
    Peer {
        name: String,
        punch_delay: Duration,
        heard: BTreeSet<String>,
    },
}

/// A demo host: a role on top of a probe that does the sending.
struct DemoHost {
    probe: Probe,
    role: Role,
    ready: VecDeque<Output<DemoEvent>>,
}

impl DemoHost {
    fn rendezvous(expected: usize) -> Self {
        let peers = Vec::new();
        let role = Role::Rendezvous { expected, peers };
        Self {
            probe: Probe::new(),
            role,
            ready: VecDeque::new(),
        }
    }

    fn peer(name: &str, start: Instant, punch_delay: Duration) -> Self {
        let mut probe = Probe::new();
        probe.send(start, RENDEZVOUS.parse().unwrap(), format!("HELLO {name}"));
        let name = name.to_owned();
        let role = Role::Peer {
            name,
            punch_delay,
            heard: BTreeSet::new(),
        };
        Self {
            probe,
            role,
            ready: VecDeque::new(),
        }
    }

    /// Moves the probe's output into ours, handling what it received.
    fn pump(&mut self, now: Instant) {
        while let Some(output) = self.probe.poll_output() {
            match output {
                Output::Transmit(t) => self.ready.push_back(Output::Transmit(t)),
                Output::Sockets(r) => self.ready.push_back(Output::Sockets(r)),
                Output::Event(ProbeEvent::Received {
                    remote, payload, ..
                }) => self.on_message(now, remote, &payload),
                Output::Event(ProbeEvent::AddressChanged { .. }) => {}
            }
        }
    }

    fn on_message(&mut self, now: Instant, from: SocketAddr, payload: &Bytes) {
        let text = String::from_utf8_lossy(payload);
        let words: Vec<&str> = text.split(' ').collect();
        match (&mut self.role, words.as_slice()) {
            (Role::Rendezvous { expected, peers }, ["HELLO", name]) => {
                self.probe.send(now, from, format!("YOU {from}"));
                peers.push((name.to_string(), from));
                if peers.len() == *expected {
                    for (_, to) in peers.iter() {
                        for (other, at) in peers.iter().filter(|(_, a)| a != to) {
                            self.probe.send(now, *to, format!("PEER {other} {at}"));
                        }
                    }
                }
            }
            (Role::Peer { .. }, ["YOU", addr]) => {
                if let Ok(addr) = addr.parse() {
                    self.ready
                        .push_back(Output::Event(DemoEvent::Reflexive(addr)));
                }
            }
            (
                Role::Peer {
                    name, punch_delay, ..
                },
                ["PEER", _, addr],
            ) => {
                let Ok(addr) = addr.parse() else { return };
                for k in 0..PUNCHES {
                    let at = now + *punch_delay + PUNCH_INTERVAL * k;
                    self.probe.send(at, addr, format!("PUNCH {name}"));
                }
            }
            (Role::Peer { name, heard, .. }, [kind @ ("PUNCH" | "ACK"), peer]) => {
                if *kind == "PUNCH" {
                    self.probe.send(now, from, format!("ACK {name}"));
                }
                if heard.insert(peer.to_string()) {
                    let peer = peer.to_string();
                    self.ready
                        .push_back(Output::Event(DemoEvent::Heard { peer, from }));
                }
            }
            _ => {}
        }
    }
}

impl Machine for DemoHost {
    type Event = DemoEvent;

    fn handle_input(&mut self, now: Instant, input: Input) {
        self.probe.handle_input(now, input);
        self.pump(now);
        // Replies scheduled for `now` go out at once.
        self.probe.handle_input(now, Input::Timeout);
        self.pump(now);
    }

    fn poll_output(&mut self) -> Option<Output<DemoEvent>> {
        self.ready.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.probe.poll_timeout()
    }
}

/// A NAT of the demo: its label, config, external address, and the index
/// of the NAT it sits behind (`None`: on the internet).
struct NatSetup {
    label: &'static str,
    config: NatConfig,
    ip: &'static str,
    behind: Option<usize>,
}

/// A peer of the demo: name, the NAT it is behind, address, punch delay.
struct PeerSetup {
    name: &'static str,
    nat: usize,
    addr: &'static str,
    punch_delay_ms: u64,
}

fn main() {
    #[allow(clippy::disallowed_methods)] // the world's start: the only clock read
    let start = Instant::now();
    let mut world = World::new(SEED, start);
    let ms = Duration::from_millis;
    let wan = Link::with_latency(ms(15)).jitter(ms(5)).loss(0.01).hops(3);
    let lan = Link::with_latency(ms(1));

    let nat_setups = [
        NatSetup {
            label: "full cone",
            config: NatConfig::full_cone(),
            ip: "198.51.100.1",
            behind: None,
        },
        NatSetup {
            label: "linux masquerade (port-restricted, conntrack quirk)",
            config: NatConfig::linux_masquerade(),
            ip: "198.51.100.2",
            behind: None,
        },
        NatSetup {
            label: "symmetric",
            config: NatConfig::symmetric(),
            ip: "198.51.100.3",
            behind: None,
        },
        NatSetup {
            label: "carrier-grade",
            config: NatConfig::carrier_grade(),
            ip: "198.51.100.4",
            behind: None,
        },
        NatSetup {
            label: "home linux masquerade, inside the carrier-grade NAT",
            config: NatConfig::linux_masquerade(),
            ip: "100.64.0.2",
            behind: Some(3),
        },
    ];
    let peer_setups = [
        PeerSetup {
            name: "alice",
            nat: 0,
            addr: "192.168.1.10:5000",
            punch_delay_ms: 0,
        },
        PeerSetup {
            name: "amy",
            nat: 0,
            addr: "192.168.1.11:5000",
            punch_delay_ms: 50,
        },
        PeerSetup {
            name: "bob",
            nat: 1,
            addr: "192.168.2.10:5000",
            punch_delay_ms: 100,
        },
        PeerSetup {
            name: "carol",
            nat: 2,
            addr: "192.168.3.10:5000",
            punch_delay_ms: 150,
        },
        PeerSetup {
            name: "dave",
            nat: 4,
            addr: "192.168.4.10:5000",
            punch_delay_ms: 200,
        },
    ];

    let mut nats: Vec<(NatId, NetId)> = Vec::new();
    for setup in &nat_setups {
        let outside = setup.behind.map_or(world.internet(), |i| nats[i].1);
        let link = if setup.behind.is_some() { lan } else { wan };
        nats.push(world.add_nat(outside, setup.ip.parse().unwrap(), link, setup.config));
    }
    let peers: Vec<(&str, HostId)> = (peer_setups.iter())
        .map(|p| {
            let machine = DemoHost::peer(p.name, start, ms(p.punch_delay_ms));
            let net = nats[p.nat].1;
            (
                p.name,
                world.add_host(net, p.addr.parse().unwrap(), lan, machine),
            )
        })
        .collect();
    let internet = world.internet();
    let rendezvous = DemoHost::rendezvous(peers.len());
    world.add_host(internet, RENDEZVOUS.parse().unwrap(), wan, rendezvous);

    world.run_for(Duration::from_secs(3));

    println!(
        "macula simulator demo (seed {SEED}): {} peers, rendezvous {RENDEZVOUS}\n",
        peers.len()
    );
    println!("Peers and their reflexive addresses (as the rendezvous saw them):");
    for (&(name, host), setup) in peers.iter().zip(&peer_setups) {
        let reflexive = world.events().iter().find_map(|e| match e.event {
            DemoEvent::Reflexive(a) if e.host == host => Some(a.to_string()),
            _ => None,
        });
        let nat = nat_setups[setup.nat].label;
        let reflexive = reflexive.unwrap_or_else(|| "(no answer)".into());
        println!(
            "  {name:<6} {:<18} -> {reflexive:<20} behind {nat}",
            setup.addr
        );
    }

    println!("\nWhat each NAT did (repeats folded):");
    for (setup, &(nat, _)) in nat_setups.iter().zip(&nats) {
        println!("  [{}: {}]", setup.ip, setup.label);
        for (first, last, count, event) in fold(world.nat(nat).log()) {
            let first = (first - start).as_secs_f64();
            let repeats = match count {
                1 => String::new(),
                n => format!("  (x{n}, last at {:.3}s)", (last - start).as_secs_f64()),
            };
            println!("    {first:>6.3}s  {event}{repeats}");
        }
    }

    println!("\nDirect paths after punching:");
    let heard = |listener: HostId, speaker: &str| {
        world.events().iter().any(|e| {
            e.host == listener
                && matches!(&e.event, DemoEvent::Heard { peer, .. } if peer == speaker)
        })
    };
    for (i, &(a, host_a)) in peers.iter().enumerate() {
        for &(b, host_b) in &peers[i + 1..] {
            let verdict = match (heard(host_b, a), heard(host_a, b)) {
                (true, true) => "direct, both ways".to_owned(),
                (true, false) => format!("one way only ({b} heard {a})"),
                (false, true) => format!("one way only ({a} heard {b})"),
                (false, false) => "no direct path: needs a relay".to_owned(),
            };
            println!("  {a:<6} <-> {b:<6} {verdict}");
        }
    }
    let trace = world.trace();
    println!(
        "\nTrace: {} entries over {:?} of virtual time, hash {:016x} (same seed, same hash)",
        trace.entries().len(),
        world.elapsed(),
        trace.hash()
    );
}

/// Folds equal log events: (first time, last time, count, event), in order
/// of first appearance.
fn fold(log: &[NatLogEntry]) -> Vec<(Instant, Instant, usize, &NatEvent)> {
    let mut folded: Vec<(Instant, Instant, usize, &NatEvent)> = Vec::new();
    for entry in log {
        match folded.iter_mut().find(|f| *f.3 == entry.event) {
            Some(f) => {
                f.1 = entry.at;
                f.2 += 1;
            }
            None => folded.push((entry.at, entry.at, 1, &entry.event)),
        }
    }
    folded
}
