//! Relay → direct upgrade in the simulator: two private nodes behind Linux masquerade NATs
//! (50 ms apart) connect through a public relay, punch, switch to the direct path, fall
//! back to the relay when the direct route is cut, and upgrade again — while a stream of
//! numbered RPCs keeps running and loses nothing.
#![cfg(feature = "sim")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::dht::{DhtEvent, Mode};
use macula::id::{Identity, Realm};
use macula::nat::punch::{Candidate, CandidateKind, NatClass};
use macula::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};
use macula::node::{Event, Node, NodeConfig, PathChange, RelayEvent};
use macula::path::PathKind;
use macula::rpc::{CallId, CallOptions, RegisterOptions, RpcEvent};
use macula::sim::{HostId, Link, NatConfig, NatId, World};

const UNIX_MS: u64 = 1_795_478_400_000;
const NAT_A: [u8; 4] = [198, 51, 100, 10];
const NAT_B: [u8; 4] = [198, 51, 100, 20];

fn node(i: u8, addr: SocketAddr, seed: u64, start: Instant, private: bool) -> Node {
    let realm = Realm::new("io.macula.upgrade").unwrap();
    let mut config = NodeConfig::new(realm);
    config.listen_addrs = vec![addr];
    if private {
        config.dht.mode = Mode::Client;
    }
    config.upgrade.retry_after = Duration::from_secs(5);
    let identity = Identity::from_seed([i; 32]);
    Node::new(config, identity, seed + u64::from(i), start, UNIX_MS).unwrap()
}

/// What the stream of calls and the path events did.
#[derive(Default)]
struct Log {
    issued: Vec<(CallId, u64)>,
    answered: Vec<(CallId, Bytes)>,
    failed: Vec<String>,
    changes: Vec<(Duration, HostId, PathKind, PathChange)>,
}

struct Lab {
    world: World<Node>,
    relay: HostId,
    a: HostId,
    b: HostId,
    nats: [NatId; 2],
    log: Log,
    next: u64,
}

impl Lab {
    fn new(seed: u64, loss: f64) -> Self {
        #[allow(clippy::disallowed_methods)] // the world's one clock reading
        let start = Instant::now();
        let mut world = World::new(seed, start);
        let internet = world.internet();
        // Two WAN links per path: 12.5 ms each way each, so 50 ms RTT NAT to NAT.
        let wan = Link::with_latency(Duration::from_micros(12_500))
            .hops(2)
            .loss(loss);
        let relay_addr = SocketAddr::from(([203, 0, 113, 1], 4433));
        let relay = world.add_host(
            internet,
            relay_addr,
            wan,
            node(1, relay_addr, seed, start, false),
        );
        let masquerade = NatConfig::linux_masquerade();
        let (nat_a, lan_a) = world.add_nat(internet, NAT_A.into(), wan, masquerade);
        let (nat_b, lan_b) = world.add_nat(internet, NAT_B.into(), wan, masquerade);
        let a_addr = SocketAddr::from(([10, 1, 0, 11], 4433));
        let b_addr = SocketAddr::from(([10, 2, 0, 11], 4433));
        let a = world.add_host(
            lan_a,
            a_addr,
            Link::default(),
            node(2, a_addr, seed, start, true),
        );
        let b = world.add_host(
            lan_b,
            b_addr,
            Link::default(),
            node(3, b_addr, seed, start, true),
        );
        Self {
            world,
            relay,
            a,
            b,
            nats: [nat_a, nat_b],
            log: Log::default(),
            next: 0,
        }
    }

    /// Runs for `within` (or until `stop` says so), answering calls at A and logging.
    fn run(&mut self, within: Duration, mut stop: impl FnMut(&Log) -> bool) -> bool {
        let log = &mut self.log;
        let start = self.world.start();
        let limit = self.world.now() + within;
        let done = self.world.drive(within, |world, host, event| {
            match event {
                Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
                    world
                        .with_machine(host, |node, now| node.reply(now, id, Ok(payload)))
                        .unwrap();
                }
                Event::Rpc(RpcEvent::Completed { call, result }) => match result {
                    Ok(payload) => log.answered.push((call, payload)),
                    Err(e) => log.failed.push(format!("{call:?}: {e:?}")),
                },
                Event::PathChanged { path, reason, .. } => {
                    let at = world.now().saturating_duration_since(start);
                    log.changes.push((at, host, path, reason));
                }
                _ => {}
            }
            stop(log)
        });
        if !done {
            // Nothing more is due before the limit: let the clock get there.
            self.world.run_until(limit);
        }
        done
    }

    /// Both private nodes bootstrap and reserve on the relay, learn their candidates, A
    /// registers the echo procedure, and B dials A through the relay.
    fn connect(&mut self) {
        let relay = self.world.machine(self.relay).contact();
        for host in [self.a, self.b] {
            let seeds = vec![relay.clone()];
            self.world
                .with_machine(host, |n, now| n.bootstrap(now, seeds));
            let relay = relay.clone();
            self.world
                .with_machine(host, |n, now| n.reserve(now, relay));
        }
        let (mut granted, mut bootstrapped) = (0, 0);
        let ok = self.world.drive(Duration::from_secs(30), |_, _, event| {
            match event {
                Event::Relay(RelayEvent::ReservationGranted { .. }) => granted += 1,
                Event::Dht(DhtEvent::Bootstrapped { .. }) => bootstrapped += 1,
                _ => {}
            }
            granted == 2 && bootstrapped == 2
        });
        assert!(ok, "reserved {granted}, bootstrapped {bootstrapped}");
        for (host, nat) in [(self.a, self.nats[0]), (self.b, self.nats[1])] {
            let candidates = self.candidates(host, nat);
            self.world.with_machine(host, |n, _| {
                n.set_punch_candidates(candidates, masquerade_class())
            });
        }
        self.world
            .with_machine(self.a, |n, now| {
                n.register(now, "svc.echo", RegisterOptions::default())
            })
            .unwrap();
        self.world.run_for(Duration::from_secs(2));
        let target = self.world.machine(self.a).node_id();
        self.world
            .with_machine(self.b, |n, now| n.dial_via_relay(now, relay, target));
        let mut connected = 0;
        let ok = self.world.drive(Duration::from_secs(30), |_, _, event| {
            if let Event::Connected { path, .. } = event {
                assert_eq!(path, PathKind::Relayed);
                connected += 1;
            }
            connected == 2
        });
        assert!(ok, "the relayed connection came up");
    }

    /// A node's LAN address and the external address its NAT maps it to toward the relay
    /// (what a STUN reflector would report; NAT discovery feeds these in a full node).
    fn candidates(&self, host: HostId, nat: NatId) -> Vec<Candidate> {
        let local = self.world.host_addr(host);
        let mapped = self
            .world
            .nat(nat)
            .bindings()
            .find(|b| b.internal == local)
            .unwrap()
            .external;
        vec![
            Candidate::new(CandidateKind::Lan, local),
            Candidate::new(CandidateKind::Reflexive, mapped),
        ]
    }

    /// B calls A's echo with the next number.
    fn call(&mut self) {
        self.next += 1;
        let n = self.next;
        let payload = Bytes::from(n.to_be_bytes().to_vec());
        let call = self
            .world
            .with_machine(self.b, |node, now| {
                node.call(
                    now,
                    "svc.echo",
                    payload,
                    Duration::from_secs(30),
                    CallOptions::default(),
                )
            })
            .unwrap();
        self.log.issued.push((call, n));
    }

    /// Issues a call every `gap` for `span`, running the world in between.
    fn calls_for(&mut self, span: Duration, gap: Duration) {
        let until = self.world.now() + span;
        while self.world.now() < until {
            self.call();
            self.run(gap, |_| false);
        }
    }

    fn changes(&self, path: PathKind) -> usize {
        self.log.changes.iter().filter(|c| c.2 == path).count()
    }

    fn relay_forwarded(&self) -> u64 {
        self.world
            .machine(self.relay)
            .relay_counters()
            .bytes_forwarded
    }
}

fn masquerade_class() -> NatClass {
    NatClass {
        mapping: MappingBehaviour::EndpointIndependent,
        filtering: FilteringBehaviour::AddressAndPortDependent,
        ports: PortAllocation::Preserving,
    }
}

#[test]
fn a_relayed_connection_goes_direct_falls_back_when_cut_and_upgrades_again_losing_no_call() {
    let mut lab = Lab::new(7, 0.0);
    lab.connect();
    // Calls every 20 ms across the upgrade.
    lab.calls_for(Duration::from_secs(3), Duration::from_millis(20));
    assert_eq!(lab.changes(PathKind::Direct), 2, "{:?}", lab.log.changes);
    for host in [lab.a, lab.b] {
        assert_eq!(lab.world.machine(host).connection_kinds(), (2, 0));
        assert_eq!(lab.world.machine(host).upgrade_counters().upgrades, 1);
    }
    // Once direct, the relay carries none of their traffic.
    let forwarded = lab.relay_forwarded();
    lab.calls_for(Duration::from_secs(1), Duration::from_millis(20));
    assert_eq!(
        lab.relay_forwarded(),
        forwarded,
        "the relay forwarded after the upgrade"
    );

    // Cut the direct route: both fall back to the relay, calls keep completing.
    lab.world.cut(NAT_A.into(), NAT_B.into(), true);
    lab.calls_for(Duration::from_secs(3), Duration::from_millis(20));
    let dead: Vec<_> = (lab.log.changes.iter())
        .filter(|c| c.3 == PathChange::DirectPathDead)
        .collect();
    assert_eq!(dead.len(), 2, "{:?}", lab.log.changes);
    // Restore it: the opener punches again after its retry delay.
    lab.world.cut(NAT_A.into(), NAT_B.into(), false);
    lab.calls_for(Duration::from_secs(8), Duration::from_millis(20));
    assert_eq!(lab.changes(PathKind::Direct), 4, "{:?}", lab.log.changes);

    lab.run(Duration::from_secs(10), |log| {
        log.answered.len() + log.failed.len() == log.issued.len()
    });
    let failed = &lab.log.failed;
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(lab.log.answered.len(), lab.log.issued.len());
    for (call, payload) in &lab.log.answered {
        let n = lab.log.issued.iter().find(|(c, _)| c == call).unwrap().1;
        assert_eq!(payload[..], n.to_be_bytes());
    }
    eprintln!(
        "{} calls, changes {:?}",
        lab.log.issued.len(),
        lab.log.changes
    );
}
