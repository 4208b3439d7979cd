//! Relay circuits in the simulator: private nodes behind NATs reserve on a
//! public relay, one dials the other through it, and the end-to-end QUIC
//! connection (mutual TLS between the two private nodes) carries RPC.
#![cfg(feature = "sim")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::dht::{DhtEvent, Mode};
use macula::id::{Identity, NodeId, Realm};
use macula::node::{CircuitLoss, CloseCause, Event, Node, NodeConfig, RelayEvent};
use macula::path::PathKind;
use macula::relay::RelayCounters;
use macula::rpc::{CallId, CallOptions, RegisterOptions, RpcError, RpcEvent};
use macula::sim::{HostId, Link, NatConfig, World};
use macula::wire::RelayStatus;

const UNIX_MS: u64 = 1_795_478_400_000;
const TIMEOUT: Duration = Duration::from_secs(30);

/// R public; A behind a port-restricted cone NAT; B behind a symmetric NAT.
struct Trio {
    world: World<Node>,
    relay: HostId,
    a: HostId,
    b: HostId,
}

fn node(
    i: u8,
    addr: SocketAddr,
    seed: u64,
    start: Instant,
    configure: &dyn Fn(&mut NodeConfig),
) -> Node {
    let realm = Realm::new("io.macula.relay").unwrap();
    let mut config = NodeConfig::new(realm);
    config.listen_addrs = vec![addr];
    configure(&mut config);
    Node::new(
        config,
        Identity::from_seed([i; 32]),
        seed + u64::from(i),
        start,
        UNIX_MS,
    )
    .unwrap()
}

impl Trio {
    fn new(seed: u64, configure_relay: &dyn Fn(&mut NodeConfig)) -> Self {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut world = World::new(seed, start);
        let internet = world.internet();
        let link = || Link::with_latency(Duration::from_millis(10));
        let relay_addr = SocketAddr::from(([198, 51, 100, 1], 4433));
        let relay = world.add_host(
            internet,
            relay_addr,
            link(),
            node(1, relay_addr, seed, start, configure_relay),
        );
        let private = |config: &mut NodeConfig| config.dht.mode = Mode::Client;
        let (_, lan_a) = world.add_nat(
            internet,
            "198.51.100.10".parse().unwrap(),
            link(),
            NatConfig::port_restricted_cone(),
        );
        let (_, lan_b) = world.add_nat(
            internet,
            "198.51.100.20".parse().unwrap(),
            link(),
            NatConfig::symmetric(),
        );
        let a_addr = SocketAddr::from(([192, 168, 1, 2], 4433));
        let b_addr = SocketAddr::from(([192, 168, 2, 2], 4433));
        let a = world.add_host(
            lan_a,
            a_addr,
            link(),
            node(2, a_addr, seed, start, &private),
        );
        let b = world.add_host(
            lan_b,
            b_addr,
            link(),
            node(3, b_addr, seed, start, &private),
        );
        Self { world, relay, a, b }
    }

    fn id(&self, host: HostId) -> NodeId {
        self.world.machine(host).node_id()
    }

    fn drive(
        &mut self,
        within: Duration,
        react: impl FnMut(&mut World<Node>, HostId, Event) -> bool,
    ) -> bool {
        self.world.drive(within, react)
    }

    /// Runs for at most `within`, answering every RPC request with an echo
    /// and keeping every event, until `until` says so; the events and
    /// whether `until` was met.
    fn run(
        &mut self,
        within: Duration,
        mut until: impl FnMut(HostId, &Event) -> bool,
    ) -> (Vec<(HostId, Event)>, bool) {
        let mut seen = Vec::new();
        let met = self.drive(within, |world, host, event| {
            if let Event::Rpc(RpcEvent::Request { id, payload, .. }) = &event {
                let answer = Bytes::from([b"echo:".as_slice(), payload].concat());
                world
                    .with_machine(host, |node, now| node.reply(now, *id, Ok(answer)))
                    .unwrap();
            }
            let stop = until(host, &event);
            seen.push((host, event));
            stop
        });
        (seen, met)
    }

    /// A and B bootstrap through R and reserve on it.
    fn reserve_both(&mut self) {
        let relay = self.world.machine(self.relay).contact();
        for host in [self.a, self.b] {
            let seeds = vec![relay.clone()];
            self.world
                .with_machine(host, |node, now| node.bootstrap(now, seeds));
            let relay = relay.clone();
            self.world
                .with_machine(host, |node, now| node.reserve(now, relay));
        }
        let (mut granted, mut bootstrapped) = (0, 0);
        let done = self.drive(Duration::from_secs(30), |_, _, event| {
            match event {
                Event::Relay(RelayEvent::ReservationGranted { .. }) => granted += 1,
                Event::Dht(DhtEvent::Bootstrapped { .. }) => bootstrapped += 1,
                _ => {}
            }
            granted == 2 && bootstrapped == 2
        });
        assert!(
            done,
            "both reserved ({granted}) and bootstrapped ({bootstrapped})"
        );
    }

    /// B dials A through R; returns the Connected events' paths seen at B
    /// and A.
    fn dial_b_to_a(&mut self) -> (PathKind, PathKind) {
        let relay = self.world.machine(self.relay).contact();
        let target = self.id(self.a);
        self.world
            .with_machine(self.b, |node, now| node.dial_via_relay(now, relay, target));
        let (a, b) = (self.a, self.b);
        let (a_id, b_id) = (self.id(a), self.id(b));
        let (mut at_a, mut at_b) = (None, None);
        let done = self.drive(Duration::from_secs(30), |_, host, event| {
            if let Event::Connected { peer, path, .. } = event {
                if host == a && peer == b_id {
                    at_a = Some(path);
                }
                if host == b && peer == a_id {
                    at_b = Some(path);
                }
            }
            at_a.is_some() && at_b.is_some()
        });
        assert!(
            done,
            "the end-to-end connection came up: A {at_a:?}, B {at_b:?}"
        );
        (at_a.unwrap(), at_b.unwrap())
    }

    fn call(&mut self, host: HostId, procedure: &str, payload: &'static [u8]) -> CallId {
        self.world
            .with_machine(host, |node, now| {
                node.call(
                    now,
                    procedure,
                    Bytes::from_static(payload),
                    TIMEOUT,
                    CallOptions::default(),
                )
            })
            .unwrap()
    }

    /// Runs until `call` completes, echoing every request.
    fn complete(&mut self, call: CallId) -> Result<Bytes, RpcError> {
        let (events, done) = self.run(TIMEOUT + Duration::from_secs(1), |_, event| {
            matches!(event, Event::Rpc(RpcEvent::Completed { call: c, .. }) if *c == call)
        });
        assert!(done, "the call completed");
        events
            .into_iter()
            .find_map(|(_, event)| match event {
                Event::Rpc(RpcEvent::Completed { call: c, result }) if c == call => Some(result),
                _ => None,
            })
            .unwrap()
    }

    /// A serves `svc.echo`, announced in the DHT.
    fn serve_echo(&mut self) {
        self.world
            .with_machine(self.a, |node, now| {
                node.register(now, "svc.echo", RegisterOptions::default())
            })
            .unwrap();
        self.drive(Duration::from_secs(2), |_, _, _| false);
    }

    /// B asks R for a circuit to `target` and waits for the relay's verdict.
    fn refused_circuit(&mut self, target: NodeId) -> RelayStatus {
        let relay = self.world.machine(self.relay).contact();
        self.world
            .with_machine(self.b, |node, now| node.dial_via_relay(now, relay, target));
        let (events, done) = self.run(Duration::from_secs(10), |_, event| {
            matches!(event, Event::Relay(RelayEvent::CircuitRefused { .. }))
        });
        assert!(done, "refused: {events:?}");
        events
            .into_iter()
            .find_map(|(host, event)| match event {
                Event::Relay(RelayEvent::CircuitRefused {
                    target: t, status, ..
                }) if host == self.b && t == target => Some(status),
                _ => None,
            })
            .unwrap()
    }

    fn counters(&self, host: HostId) -> RelayCounters {
        self.world.machine(host).relay_counters().clone()
    }
}

/// The causes of the Disconnected events `host` saw for `peer`.
fn causes(events: &[(HostId, Event)], host: HostId, peer: NodeId) -> Vec<CloseCause> {
    events
        .iter()
        .filter_map(|(h, event)| match event {
            Event::Disconnected {
                peer: Some(p),
                cause,
                ..
            } if *h == host && *p == peer => Some(cause.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_runs_end_to_end_between_two_private_nodes_through_a_relay() {
    let mut trio = Trio::new(1, &|_| {});
    trio.reserve_both();
    let (at_a, at_b) = trio.dial_b_to_a();
    assert_eq!((at_a, at_b), (PathKind::Relayed, PathKind::Relayed));

    trio.serve_echo();
    let call = trio.call(trio.b, "svc.echo", b"over the relay");
    assert_eq!(
        trio.complete(call),
        Ok(Bytes::from_static(b"echo:over the relay"))
    );

    let relay = trio.world.machine(trio.relay).relay_counters().clone();
    assert_eq!(relay.reservations_granted, 2);
    assert_eq!(relay.circuits_opened, 1);
    eprintln!("relay counters: {relay:?}");
    assert!(relay.bytes_forwarded > 2400, "{relay:?}");
    for host in [trio.a, trio.b] {
        assert_eq!(
            trio.world
                .machine(host)
                .relay_counters()
                .relayed_connections,
            1
        );
    }
}

#[test]
fn circuits_to_unreserved_nodes_or_to_oneself_are_refused() {
    let mut trio = Trio::new(2, &|_| {});
    trio.reserve_both();
    let stranger = NodeId::from_bytes([9; 32]);
    assert_eq!(trio.refused_circuit(stranger), RelayStatus::NoReservation);
    let b = trio.id(trio.b);
    assert_eq!(trio.refused_circuit(b), RelayStatus::BadRequest);
    let relay = trio.counters(trio.relay);
    assert_eq!(
        (
            relay.refused_no_reservation,
            relay.refused_bad_request,
            relay.circuits_opened
        ),
        (1, 1, 0)
    );
}

#[test]
fn a_node_that_does_not_relay_refuses_reservations_and_circuits() {
    let mut trio = Trio::new(3, &|config| config.relay.enabled = false);
    let relay = trio.world.machine(trio.relay).contact();
    trio.world
        .with_machine(trio.a, |node, now| node.reserve(now, relay));
    let (events, done) = trio.run(Duration::from_secs(10), |_, event| {
        matches!(event, Event::Relay(RelayEvent::ReservationRefused { .. }))
    });
    assert!(done, "{events:?}");
    assert!(events.iter().any(|(_, e)| matches!(
        e,
        Event::Relay(RelayEvent::ReservationRefused {
            status: RelayStatus::RelayDisabled,
            ..
        })
    )));
    assert!(trio.world.machine(trio.a).reserved_relays().is_empty());
    let a = trio.id(trio.a);
    assert_eq!(trio.refused_circuit(a), RelayStatus::RelayDisabled);
    assert_eq!(trio.counters(trio.relay).refused_disabled, 2);
}

#[test]
fn reservation_and_circuit_limits_refuse_with_a_typed_status() {
    let mut trio = Trio::new(4, &|config| {
        config.relay.max_reservations = 1;
        config.relay.max_circuits_per_peer = 1;
    });
    let relay = trio.world.machine(trio.relay).contact();
    let mut statuses = Vec::new();
    for host in [trio.a, trio.b] {
        let relay = relay.clone();
        trio.world
            .with_machine(host, |node, now| node.reserve(now, relay));
        let (events, done) = trio.run(Duration::from_secs(10), |_, event| {
            matches!(
                event,
                Event::Relay(
                    RelayEvent::ReservationGranted { .. } | RelayEvent::ReservationRefused { .. }
                )
            )
        });
        assert!(done);
        statuses.extend(events.into_iter().filter_map(|(_, e)| match e {
            Event::Relay(RelayEvent::ReservationGranted { .. }) => Some(RelayStatus::Ok),
            Event::Relay(RelayEvent::ReservationRefused { status, .. }) => Some(status),
            _ => None,
        }));
    }
    assert_eq!(statuses, vec![RelayStatus::Ok, RelayStatus::LimitReached]);

    // A holds the one reservation; B's first circuit to it opens, its second
    // is one too many.
    let a = trio.id(trio.a);
    trio.dial_b_to_a();
    assert_eq!(trio.refused_circuit(a), RelayStatus::LimitReached);
    let relay = trio.counters(trio.relay);
    assert_eq!((relay.refused_limit, relay.circuits_opened), (2, 1));
}

#[test]
fn the_rate_limit_drops_packets_and_quic_recovers_them() {
    let mut trio = Trio::new(5, &|config| config.relay.peer_rate = 64 << 10);
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.serve_echo();
    let payload = vec![0x5a; 256 << 10];
    let call = trio
        .world
        .with_machine(trio.b, |node, now| {
            node.call(
                now,
                "svc.echo",
                Bytes::from(payload.clone()),
                TIMEOUT,
                CallOptions::default(),
            )
        })
        .unwrap();
    let reply = trio.complete(call).expect("the call completes");
    assert_eq!(reply.len(), payload.len() + 5);
    let relay = trio.counters(trio.relay);
    eprintln!("relay counters: {relay:?}");
    assert!(relay.dropped_rate > 0, "{relay:?}");
}

#[test]
fn a_circuit_closes_at_its_byte_limit_and_both_ends_hear_why() {
    let mut trio = Trio::new(6, &|config| config.relay.max_circuit_bytes = 64 << 10);
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.serve_echo();
    let call = trio
        .world
        .with_machine(trio.b, |node, now| {
            node.call(
                now,
                "svc.echo",
                Bytes::from(vec![1; 128 << 10]),
                TIMEOUT,
                CallOptions::default(),
            )
        })
        .unwrap();
    let (a, b) = (trio.a, trio.b);
    let (a_id, b_id) = (trio.id(a), trio.id(b));
    let (events, done) = trio.run(
        TIMEOUT + Duration::from_secs(1),
        |_, event| matches!(event, Event::Rpc(RpcEvent::Completed { call: c, .. }) if *c == call),
    );
    assert!(done, "the call ended");
    let relay_id = trio.id(trio.relay);
    let limit = CloseCause::CircuitClosed {
        relay: relay_id,
        loss: CircuitLoss::LimitReached,
    };
    assert_eq!(causes(&events, b, a_id), vec![limit.clone()]);
    assert_eq!(causes(&events, a, b_id), vec![limit]);
    let result = events.iter().find_map(|(_, e)| match e {
        Event::Rpc(RpcEvent::Completed { result, .. }) => Some(result.clone()),
        _ => None,
    });
    assert!(matches!(result, Some(Err(_))), "{result:?}");
    let relay = trio.counters(trio.relay);
    assert_eq!((relay.circuits_over_limit, relay.circuits_closed), (1, 1));
}

#[test]
fn a_circuit_closes_at_the_end_of_its_lifetime() {
    let mut trio = Trio::new(7, &|config| {
        config.relay.max_circuit_lifetime = Duration::from_secs(20);
    });
    trio.reserve_both();
    trio.dial_b_to_a();
    let (a_id, b) = (trio.id(trio.a), trio.b);
    let (events, done) = trio.run(Duration::from_secs(30), |host, event| {
        host == b && matches!(event, Event::Disconnected { .. })
    });
    assert!(done, "B's relayed connection closed");
    let relay_id = trio.id(trio.relay);
    assert_eq!(
        causes(&events, b, a_id),
        vec![CloseCause::CircuitClosed {
            relay: relay_id,
            loss: CircuitLoss::LimitReached
        }]
    );
    assert_eq!(trio.counters(trio.relay).circuits_over_limit, 1);
}

#[test]
fn the_relay_forwards_ciphertext_only() {
    const SECRET: &[u8] = b"plaintext-the-relay-must-never-see";
    let mut trio = Trio::new(8, &|_| {});
    trio.world
        .with_machine(trio.relay, |node, _| node.tap_relayed(1 << 20));
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.serve_echo();
    let call = trio.call(trio.b, "svc.echo", SECRET);
    let reply = trio.complete(call).expect("the call completes");
    // The reply carries the secret too: both directions were relayed.
    assert!(reply.ends_with(SECRET));

    let packets = trio.world.machine(trio.relay).relayed_packets();
    let bytes: usize = packets.iter().map(|p| p.len()).sum();
    eprintln!("{} packets, {bytes} bytes relayed", packets.len());
    assert!(bytes > 4 * SECRET.len(), "the tap saw the traffic");
    let seen = packets
        .iter()
        .filter(|p| p.windows(SECRET.len()).any(|w| w == SECRET))
        .count();
    assert_eq!(seen, 0, "a relayed packet holds the plaintext");
    // Every relayed packet is a QUIC packet (the fixed bit set): the relay
    // forwarded the two ends' packets unchanged.
    assert!(packets.iter().all(|p| p[0] & 0x40 != 0));
}

#[test]
fn a_relay_shutting_down_closes_its_circuits_and_reservations() {
    let mut trio = Trio::new(9, &|_| {});
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.world
        .with_machine(trio.relay, |node, now| node.close_all(now));
    let (a, b) = (trio.a, trio.b);
    let (a_id, b_id, relay) = (trio.id(a), trio.id(b), trio.id(trio.relay));
    let mut lost = 0;
    let (events, done) = trio.run(Duration::from_secs(10), |_, event| {
        lost += usize::from(matches!(
            event,
            Event::Relay(RelayEvent::ReservationLost { .. })
        ));
        lost == 2
    });
    assert!(done, "both reservations lost: {events:?}");
    let relay_lost = CloseCause::CircuitClosed {
        relay,
        loss: CircuitLoss::RelayLost,
    };
    assert_eq!(causes(&events, a, b_id), vec![relay_lost.clone()]);
    assert_eq!(causes(&events, b, a_id), vec![relay_lost]);
    for host in [a, b] {
        assert!(trio.world.machine(host).reserved_relays().is_empty());
        assert_eq!(trio.counters(host).reservations_lost, 1);
    }
}

#[test]
fn a_relay_that_crashes_is_noticed_as_lost_reservations_and_circuits() {
    let mut trio = Trio::new(10, &|_| {});
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.world.set_online(trio.relay, false);
    let (a, b) = (trio.a, trio.b);
    let (a_id, b_id, relay) = (trio.id(a), trio.id(b), trio.id(trio.relay));
    let mut lost = 0;
    let (events, done) = trio.run(Duration::from_secs(120), |_, event| {
        lost += usize::from(matches!(
            event,
            Event::Relay(RelayEvent::ReservationLost { .. })
        ));
        lost == 2
    });
    assert!(done, "both reservations lost");
    // The end-to-end connection and the one to the relay go silent at the
    // same moment; whichever idle timer fires first, the cause names the
    // relay circuit.
    for (host, peer) in [(a, b_id), (b, a_id)] {
        let causes = causes(&events, host, peer);
        eprintln!("{host:?}: {causes:?}");
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(
            matches!(
                causes[0],
                CloseCause::CircuitClosed { relay: r, loss: CircuitLoss::RelayLost | CircuitLoss::TimedOut } if r == relay
            ),
            "{causes:?}"
        );
    }
}

#[test]
fn reservations_are_renewed_before_they_lapse_and_end_when_released() {
    let mut trio = Trio::new(11, &|config| {
        config.relay.reservation_ttl = Duration::from_secs(40);
    });
    trio.reserve_both();
    // Five lifetimes: each reservation renewed at half its lifetime, never
    // lost.
    let (events, _) = trio.run(Duration::from_secs(200), |_, _| false);
    let granted = |host| {
        events
            .iter()
            .filter(|(h, e)| {
                *h == host && matches!(e, Event::Relay(RelayEvent::ReservationGranted { .. }))
            })
            .count()
    };
    assert!(granted(trio.a) >= 9, "A renewed {} times", granted(trio.a));
    assert!(granted(trio.b) >= 9, "B renewed {} times", granted(trio.b));
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::Relay(RelayEvent::ReservationLost { .. })))
    );
    let relay_id = trio.id(trio.relay);
    assert_eq!(trio.world.machine(trio.a).reserved_relays(), vec![relay_id]);

    // Still reserved: a circuit opens.
    trio.dial_b_to_a();
    // A releases: the relay forgets it and refuses the next circuit.
    trio.world
        .with_machine(trio.a, |node, now| node.release(now, relay_id));
    trio.run(Duration::from_secs(2), |_, _| false);
    assert!(trio.world.machine(trio.a).reserved_relays().is_empty());
    assert_eq!(trio.counters(trio.relay).reservations_ended, 1);
    let a = trio.id(trio.a);
    assert_eq!(trio.refused_circuit(a), RelayStatus::NoReservation);
}
