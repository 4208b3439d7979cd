//! Relay circuits in the simulator: private nodes behind NATs reserve on a
//! public relay, one dials the other through it, and the end-to-end QUIC
//! connection (mutual TLS between the two private nodes) carries RPC.
#![cfg(feature = "sim")]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::epoch;

use bytes::Bytes;
use macula::dht::{DhtEvent, Mode};
use macula::id::NodeId;
use macula::node::{CircuitLoss, CloseCause, Event, NodeConfig, RelayEvent};
use macula::path::{PathKind, RealPath};
use macula::pubsub::{Pattern, PubSubEvent, Topic};
use macula::relay::{RelayCounters, RelayLoad, RelayMode};
use macula::rpc::{CallId, CallOptions, RegisterOptions, RpcError, RpcEvent};
use macula::sim::{CALL_TIMEOUT, HostId, Link, Mesh, NatConfig, PORT, echo, lan_addr, public_addr};
use macula::wire::RelayStatus;

const TIMEOUT: Duration = CALL_TIMEOUT;

/// R public; A behind a port-restricted cone NAT; B behind a symmetric NAT.
struct Trio {
    mesh: Mesh,
    relay: HostId,
    a: HostId,
    b: HostId,
}

impl Trio {
    /// `configure` applies to all three nodes (A and B are also made DHT
    /// clients).
    fn new(seed: u64, configure: &dyn Fn(&mut NodeConfig)) -> Self {
        Self::with(seed, configure, configure)
    }

    /// As [`Trio::new`], with `relay_only` applied to R after `configure`.
    fn with(
        seed: u64,
        configure: &dyn Fn(&mut NodeConfig),
        relay_only: &dyn Fn(&mut NodeConfig),
    ) -> Self {
        let nats = [
            vec![NatConfig::port_restricted_cone()],
            vec![NatConfig::symmetric()],
        ];
        Self::behind(seed, configure, relay_only, nats)
    }

    /// The general trio: A and B each behind the NATs listed for them
    /// (outermost first, so two make a home NAT behind a carrier NAT).
    fn behind(
        seed: u64,
        configure: &dyn Fn(&mut NodeConfig),
        relay_only: &dyn Fn(&mut NodeConfig),
        nats: [Vec<NatConfig>; 2],
    ) -> Self {
        let link = Link::with_latency(Duration::from_millis(10));
        let mut mesh = Mesh::new(seed, epoch());
        mesh.set_link(link);
        let relay = mesh.add_public(public_addr(1, PORT), |config| {
            configure(config);
            relay_only(config);
        });
        let [a, b] = [0u8, 1].map(|side| {
            let nats: Vec<_> = (nats[usize::from(side)].iter().enumerate())
                .map(|(depth, nat)| (IpAddr::from([198, 51, 100 + depth as u8, 10 + side]), *nat))
                .collect();
            mesh.add_behind(&nats, lan_addr(1 + side), |config| {
                configure(config);
                config.dht.mode = Mode::Client;
            })
        });
        Self { mesh, relay, a, b }
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
        let met = self.mesh.drive(within, |world, host, event| {
            echo(world, host, &event).unwrap();
            let stop = until(host, &event);
            seen.push((host, event));
            stop
        });
        (seen, met)
    }

    /// A and B bootstrap through R and reserve on it.
    fn reserve_both(&mut self) {
        let (relay, a, b) = (self.relay, self.a, self.b);
        for host in [a, b] {
            self.mesh.begin_bootstrap(relay, &[host]);
            self.mesh.reserve(host, relay);
        }
        let (mut granted, mut bootstrapped) = (0, 0);
        let done = self.mesh.drive(Duration::from_secs(30), |_, _, event| {
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
        let relay = self.mesh.world.machine(self.relay).contact();
        let target = self.mesh.id(self.a);
        self.mesh
            .world
            .with_machine(self.b, |node, now| node.dial_via_relay(now, relay, target));
        let (a, b) = (self.a, self.b);
        let (a_id, b_id) = (self.mesh.id(a), self.mesh.id(b));
        let (mut at_a, mut at_b) = (None, None);
        let done = self.mesh.drive(Duration::from_secs(30), |_, host, event| {
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
        let a = self.a;
        self.mesh
            .register(a, "svc.echo", RegisterOptions::default());
        self.mesh.settle(Duration::from_secs(2));
    }

    /// B asks R for a circuit to `target` and waits for the relay's verdict.
    fn refused_circuit(&mut self, target: NodeId) -> RelayStatus {
        let relay = self.mesh.world.machine(self.relay).contact();
        self.mesh
            .world
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
        self.mesh.world.machine(host).relay_counters().clone()
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
    let relay_id = trio.mesh.id(trio.relay);
    let (now, circuits) = trio
        .mesh
        .world
        .machine(trio.b)
        .paths_to(&trio.mesh.id(trio.a))
        .unwrap();
    assert!(
        matches!(now, RealPath::Relay { relay, .. } if relay == relay_id),
        "{now:?}"
    );
    assert_eq!(circuits, vec![now]);
    let (at_a_now, _) = trio
        .mesh
        .world
        .machine(trio.a)
        .paths_to(&trio.mesh.id(trio.b))
        .unwrap();
    assert_eq!(at_a_now, now, "both ends name the circuit alike");

    trio.serve_echo();
    let call = trio.mesh.call(trio.b, "svc.echo", &b"over the relay"[..]);
    assert_eq!(
        trio.complete(call),
        Ok(Bytes::from_static(b"echo:over the relay"))
    );

    let relay = trio.mesh.world.machine(trio.relay).relay_counters().clone();
    assert_eq!(relay.reservations_granted, 2);
    assert_eq!(relay.circuits_opened, 1);
    eprintln!("relay counters: {relay:?}");
    assert!(relay.bytes_forwarded > 2400, "{relay:?}");
    // Every forwarded packet is counted; a QUIC packet (header, tag) plus its
    // frame prefix is more than 20 bytes.
    assert!(relay.packets_forwarded > 0, "{relay:?}");
    assert!(
        relay.bytes_forwarded > relay.packets_forwarded * 20,
        "{relay:?}"
    );
    // The relay forwards what the two ends wrote onto the circuit, no more.
    let written: u64 = [trio.a, trio.b]
        .iter()
        .map(|&h| {
            trio.mesh
                .world
                .machine(h)
                .relay_counters()
                .packets_to_circuits
        })
        .sum();
    assert!(written >= relay.packets_forwarded, "{written} < {relay:?}");
    assert_eq!(
        relay.packets_to_circuits, 0,
        "the relay is no circuit's end"
    );
    for host in [trio.a, trio.b] {
        assert_eq!(
            trio.mesh
                .world
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
    let b = trio.mesh.id(trio.b);
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
    let mut trio = Trio::new(3, &|config| config.relay.mode = RelayMode::Never);
    let relay = trio.mesh.world.machine(trio.relay).contact();
    trio.mesh
        .world
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
    assert!(trio.mesh.world.machine(trio.a).reserved_relays().is_empty());
    let a = trio.mesh.id(trio.a);
    assert_eq!(trio.refused_circuit(a), RelayStatus::RelayDisabled);
    assert_eq!(trio.counters(trio.relay).refused_disabled, 2);
}

#[test]
fn reservation_and_circuit_limits_refuse_with_a_typed_status() {
    let mut trio = Trio::new(4, &|config| {
        config.relay.max_reservations = 1;
        config.relay.max_circuits_per_peer = 1;
    });
    let relay = trio.mesh.world.machine(trio.relay).contact();
    let mut statuses = Vec::new();
    for host in [trio.a, trio.b] {
        let relay = relay.clone();
        trio.mesh
            .world
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
    let a = trio.mesh.id(trio.a);
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
        .mesh
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
        .mesh
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
    let (a_id, b_id) = (trio.mesh.id(a), trio.mesh.id(b));
    let (events, done) = trio.run(
        TIMEOUT + Duration::from_secs(1),
        |_, event| matches!(event, Event::Rpc(RpcEvent::Completed { call: c, .. }) if *c == call),
    );
    assert!(done, "the call ended");
    let relay_id = trio.mesh.id(trio.relay);
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
    let (a_id, b) = (trio.mesh.id(trio.a), trio.b);
    let (events, done) = trio.run(Duration::from_secs(30), |host, event| {
        host == b && matches!(event, Event::Disconnected { .. })
    });
    assert!(done, "B's relayed connection closed");
    let relay_id = trio.mesh.id(trio.relay);
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
    trio.mesh
        .world
        .with_machine(trio.relay, |node, _| node.tap_relayed(1 << 20));
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.serve_echo();
    let call = trio.mesh.call(trio.b, "svc.echo", SECRET);
    let reply = trio.complete(call).expect("the call completes");
    // The reply carries the secret too: both directions were relayed.
    assert!(reply.ends_with(SECRET));

    let packets = trio.mesh.world.machine(trio.relay).relayed_packets();
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
    // No packet is larger than quinn's MTU discovery ceiling (1452), well
    // inside a circuit frame.
    let largest = packets.iter().map(|p| p.len()).max().unwrap_or(0);
    eprintln!("largest relayed packet: {largest} bytes");
    assert!(largest <= 1452);
}

#[test]
fn a_relay_shutting_down_closes_its_circuits_and_reservations() {
    let mut trio = Trio::new(9, &|_| {});
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.mesh
        .world
        .with_machine(trio.relay, |node, now| node.close_all(now));
    let (a, b) = (trio.a, trio.b);
    let (a_id, b_id, relay) = (trio.mesh.id(a), trio.mesh.id(b), trio.mesh.id(trio.relay));
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
        assert!(trio.mesh.world.machine(host).reserved_relays().is_empty());
        assert_eq!(trio.counters(host).reservations_lost, 1);
    }
}

#[test]
fn a_relay_that_crashes_is_noticed_as_lost_reservations_and_circuits() {
    let mut trio = Trio::new(10, &|_| {});
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.mesh.world.set_online(trio.relay, false);
    let (a, b) = (trio.a, trio.b);
    let (a_id, b_id, relay) = (trio.mesh.id(a), trio.mesh.id(b), trio.mesh.id(trio.relay));
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
    // Ten lifetimes, past the pools' idle TTL (5 min): each reservation is
    // renewed at half its lifetime and never lost, and the relay keeps the
    // reserved connections.
    let (events, _) = trio.run(Duration::from_secs(400), |_, _| false);
    let granted = |host| {
        events
            .iter()
            .filter(|(h, e)| {
                *h == host && matches!(e, Event::Relay(RelayEvent::ReservationGranted { .. }))
            })
            .count()
    };
    assert!(granted(trio.a) >= 19, "A renewed {} times", granted(trio.a));
    assert!(granted(trio.b) >= 19, "B renewed {} times", granted(trio.b));
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::Relay(RelayEvent::ReservationLost { .. })))
    );
    let relay_id = trio.mesh.id(trio.relay);
    assert_eq!(
        trio.mesh.world.machine(trio.a).reserved_relays(),
        vec![relay_id]
    );

    // Still reserved: a circuit opens.
    trio.dial_b_to_a();
    // A releases: the relay forgets it and refuses the next circuit.
    trio.mesh
        .world
        .with_machine(trio.a, |node, now| node.release(now, relay_id));
    trio.run(Duration::from_secs(2), |_, _| false);
    assert!(trio.mesh.world.machine(trio.a).reserved_relays().is_empty());
    assert_eq!(trio.counters(trio.relay).reservations_ended, 1);
    let a = trio.mesh.id(trio.a);
    assert_eq!(trio.refused_circuit(a), RelayStatus::NoReservation);
}

#[test]
fn an_unused_relayed_connection_closes_and_takes_its_circuit_along() {
    let mut trio = Trio::new(12, &|config| config.pool.idle_ttl = Duration::from_secs(20));
    trio.reserve_both();
    trio.dial_b_to_a();
    assert_eq!(trio.counters(trio.relay).circuits_opened, 1);
    // Nobody uses the connection: the pools close it after their idle TTL,
    // the circuit ends with it, and the reservations stay.
    trio.run(Duration::from_secs(60), |_, _| false);
    let relay = trio.counters(trio.relay);
    assert_eq!(relay.circuits_closed, 1, "{relay:?}");
    assert_eq!(relay.reservations_ended, 0, "{relay:?}");
    let relay_id = trio.mesh.id(trio.relay);
    for host in [trio.a, trio.b] {
        assert_eq!(
            trio.mesh.world.machine(host).reserved_relays(),
            vec![relay_id]
        );
        // Only the connection to the relay is left.
        assert_eq!(trio.mesh.world.machine(host).connection_count(), 1);
    }
    // A new circuit works.
    trio.dial_b_to_a();
}

#[test]
fn publications_reach_a_subscriber_over_the_relay_in_order() {
    let mut trio = Trio::new(13, &|_| {});
    trio.reserve_both();
    trio.dial_b_to_a();
    let pattern = Pattern::new("room.*").unwrap();
    let subscribed = trio
        .mesh
        .world
        .with_machine(trio.b, |node, now| node.subscribe(now, pattern));
    assert!(subscribed.is_ok(), "{subscribed:?}");
    trio.run(Duration::from_secs(2), |_, _| false);
    let topic = Topic::new("room.lobby").unwrap();
    let sent: Vec<u64> = (0..5u8)
        .map(|n| {
            let topic = topic.clone();
            trio.mesh
                .world
                .with_machine(trio.a, |node, now| {
                    node.publish(now, topic, Bytes::from(vec![n]))
                })
                .unwrap()
        })
        .collect();
    let b = trio.b;
    let mut received = Vec::new();
    trio.run(Duration::from_secs(10), |host, event| {
        if let Event::PubSub(PubSubEvent::Message { message_id, .. }) = event {
            assert_eq!(host, b);
            received.push(*message_id);
        }
        false
    });
    assert_eq!(received, sent, "all, in order, once");
    assert_eq!(trio.counters(trio.relay).circuits_opened, 1);
}

#[test]
fn a_second_circuit_to_a_connected_peer_is_closed_and_gauges_follow() {
    let mut trio = Trio::new(14, &|_| {});
    trio.reserve_both();
    trio.dial_b_to_a();
    let load = |trio: &Trio, host| trio.mesh.world.machine(host).relay_load();
    assert_eq!(
        load(&trio, trio.relay),
        RelayLoad {
            reservations_served: 2,
            circuits_relayed: 1,
            reservations_held: 0,
            circuit_ends: 0,
        }
    );
    assert_eq!(load(&trio, trio.b).circuit_ends, 1);
    assert_eq!(load(&trio, trio.b).reservations_held, 1);

    // B is already connected to A: the new circuit opens, finds nothing to
    // carry and closes; the first one stays.
    let relay = trio.mesh.world.machine(trio.relay).contact();
    let target = trio.mesh.id(trio.a);
    trio.mesh
        .world
        .with_machine(trio.b, |node, now| node.dial_via_relay(now, relay, target));
    trio.run(Duration::from_secs(5), |_, _| false);
    let counters = trio.counters(trio.relay);
    assert_eq!((counters.circuits_opened, counters.circuits_closed), (2, 1));
    assert_eq!(load(&trio, trio.relay).circuits_relayed, 1);
    assert_eq!(load(&trio, trio.a).circuit_ends, 1);
    assert_eq!(load(&trio, trio.b).circuit_ends, 1);
    assert_eq!(trio.mesh.world.machine(trio.b).connection_count(), 2);
}

#[test]
fn a_full_circuit_queue_drops_packets_and_quic_recovers_them() {
    // quinn takes what fits its send window (per connection) before our
    // queue starts: a relay with a send window below the ends' (which let
    // the end-to-end connection put more in flight than the relay's
    // connection to A takes) fills its queue.
    let mut trio = Trio::with(
        15,
        &|config| config.relay.max_queued_per_circuit = 4 << 10,
        &|config| config.transport.send_window = 16 << 10,
    );
    trio.reserve_both();
    trio.dial_b_to_a();
    trio.serve_echo();
    let payload = Bytes::from(vec![0x33; 512 << 10]);
    let call = trio
        .mesh
        .world
        .with_machine(trio.b, |node, now| {
            node.call(now, "svc.echo", payload, TIMEOUT, CallOptions::default())
        })
        .unwrap();
    let reply = trio.complete(call).expect("the call completes");
    assert_eq!(reply.len(), (512 << 10) + 5);
    let dropped = trio.counters(trio.relay).dropped_queue_full;
    eprintln!("dropped on the relay's full queues: {dropped}");
    assert!(dropped > 0);
}

#[test]
fn a_relayed_run_is_deterministic() {
    let run = || {
        let mut trio = Trio::new(16, &|_| {});
        trio.reserve_both();
        trio.dial_b_to_a();
        trio.serve_echo();
        let call = trio.mesh.call(trio.b, "svc.echo", &b"same every time"[..]);
        trio.complete(call).unwrap();
        (
            trio.mesh.world.trace_hash(),
            trio.mesh.world.trace().entries().len(),
        )
    };
    let first = run();
    assert!(first.1 > 100, "the run exchanged packets: {first:?}");
    assert_eq!(first, run());
}

#[test]
fn a_circuit_no_connection_ever_uses_is_closed() {
    let mut trio = Trio::new(17, &|_| {});
    trio.reserve_both();
    let relay = trio.mesh.world.machine(trio.relay).contact();
    let target = trio.mesh.id(trio.a);
    trio.mesh
        .world
        .with_machine(trio.b, |node, now| node.dial_via_relay(now, relay, target));
    // B vanishes as soon as A hears of the circuit: no handshake follows.
    let (a, b) = (trio.a, trio.b);
    let (_, announced) = trio.run(Duration::from_secs(5), |host, event| {
        host == a && matches!(event, Event::Relay(RelayEvent::CircuitOpened { .. }))
    });
    assert!(announced);
    trio.mesh.world.set_online(b, false);
    assert_eq!(trio.mesh.world.machine(a).relay_load().circuit_ends, 1);
    // Within the request timeout (10 s), long before the relay would notice
    // B is gone (60 s of silence), A gives the circuit up and the relay
    // closes it.
    trio.run(Duration::from_secs(15), |_, _| false);
    assert_eq!(trio.mesh.world.machine(a).relay_load().circuit_ends, 0);
    assert_eq!(
        trio.mesh
            .world
            .machine(trio.relay)
            .relay_load()
            .circuits_relayed,
        0
    );
    assert_eq!(
        trio.mesh.world.machine(a).connection_count(),
        1,
        "only the relay"
    );
}

#[test]
fn every_kind_of_nat_reaches_every_other_through_the_relay() {
    let kinds = [
        ("full cone", vec![NatConfig::full_cone()]),
        ("restricted cone", vec![NatConfig::restricted_cone()]),
        (
            "port-restricted cone",
            vec![NatConfig::port_restricted_cone()],
        ),
        ("symmetric", vec![NatConfig::symmetric()]),
        ("linux masquerade", vec![NatConfig::linux_masquerade()]),
        (
            "home NAT behind carrier NAT",
            vec![NatConfig::carrier_grade(), NatConfig::linux_masquerade()],
        ),
    ];
    for (i, (name_a, nat_a)) in kinds.iter().enumerate() {
        for (j, (name_b, nat_b)) in kinds.iter().enumerate().skip(i) {
            let seed = 100 + (i * kinds.len() + j) as u64;
            let nats = [nat_a.clone(), nat_b.clone()];
            let mut trio = Trio::behind(seed, &|_| {}, &|_| {}, nats);
            trio.reserve_both();
            let paths = trio.dial_b_to_a();
            assert_eq!(
                paths,
                (PathKind::Relayed, PathKind::Relayed),
                "{name_a} / {name_b}"
            );
            trio.serve_echo();
            let call = trio.mesh.call(trio.b, "svc.echo", &b"ping"[..]);
            let reply = trio.complete(call);
            assert_eq!(
                reply,
                Ok(Bytes::from_static(b"echo:ping")),
                "{name_a} / {name_b}"
            );
        }
    }
}

/// B makes 10 echo calls of 16 KiB to A one after the other, while `flooder` (if
/// any) floods its circuit to the node given with 48 KB every 10 ms; the
/// calls answered and the virtual time they took.
fn echo_calls(trio: &mut Trio, flooder: Option<(HostId, NodeId)>) -> (usize, Duration) {
    let start = trio.mesh.world.now();
    let mut answered = 0;
    for _ in 0..10 {
        // Full-size packets: they compete with the flood's for the tokens.
        let call = trio.mesh.call(trio.b, "svc.echo", vec![7u8; 16 << 10]);
        let mut result = None;
        for _ in 0..3000 {
            if let Some((host, target)) = flooder {
                (trio.mesh.world)
                    .with_machine(host, |node, now| node.flood_circuit(now, &target, 40));
            }
            trio.mesh.world.run_for(Duration::from_millis(10));
            // Echo what came meanwhile; find the call's end.
            let (events, _) = trio.run(Duration::ZERO, |_, _| false);
            result = events.into_iter().find_map(|(_, event)| match event {
                Event::Rpc(RpcEvent::Completed { call: c, result }) if c == call => Some(result),
                _ => None,
            });
            if result.is_some() {
                break;
            }
        }
        if matches!(result, Some(Ok(_))) {
            answered += 1;
        }
    }
    (answered, trio.mesh.world.now() - start)
}

#[test]
fn a_flooding_circuit_does_not_starve_another_circuits_traffic() {
    // No hole punching: every connection stays on its circuit.
    let mut trio = Trio::with(21, &|config| config.upgrade.auto = false, &|config| {
        config.relay.peer_rate = 32 << 10;
        config.relay.total_rate = 128 << 10;
    });
    trio.reserve_both();
    trio.serve_echo();
    trio.dial_b_to_a();
    // F, behind a NAT of its own, opens a circuit to A and floods it.
    let nat = [(IpAddr::from([198, 51, 100, 30]), NatConfig::full_cone())];
    let flooder = trio
        .mesh
        .add_behind(&nat, lan_addr(9), |config| config.upgrade.auto = false);
    let relay = trio.mesh.contact(trio.relay);
    let a_id = trio.mesh.id(trio.a);
    (trio.mesh.world).with_machine(flooder, |node, now| node.dial_via_relay(now, relay, a_id));
    let (_, up) = trio.run(Duration::from_secs(30), |host, event| {
        host == flooder
            && matches!(
                event,
                Event::Connected {
                    path: PathKind::Relayed,
                    ..
                }
            )
    });
    assert!(up, "the flooder's circuit is up");
    let (answered, quiet) = echo_calls(&mut trio, None);
    assert_eq!(answered, 10, "the baseline");
    let (answered, flooded) = echo_calls(&mut trio, Some((flooder, a_id)));
    eprintln!("10 calls: {quiet:?} quiet, {flooded:?} under the flood");
    assert_eq!(
        answered, 10,
        "every call through the other circuit was answered"
    );
    // Virtual time: the same every run. A flood that drained the shared
    // budget made QUIC wait out retransmissions.
    assert!(
        flooded <= quiet * 3,
        "{flooded:?} against {quiet:?} without the flood"
    );
    let relay = trio.counters(trio.relay);
    eprintln!("relay counters: {relay:?}");
    assert!(
        relay.dropped_rate > 1000,
        "the flood was refused: {relay:?}"
    );
    assert_eq!(
        relay.dropped_total_rate, 0,
        "the flood spent no shared tokens"
    );
    let b_to_a = trio.mesh.node(trio.b).paths_to(&a_id).map(|(now, _)| now);
    assert!(
        matches!(b_to_a, Some(RealPath::Relay { .. })),
        "B's calls went over the relay: {b_to_a:?}"
    );
}

#[test]
fn many_ids_from_one_ip_get_no_more_than_the_per_ip_reservations() {
    let mut trio = Trio::with(22, &|_| {}, &|config| {
        config.relay.max_reservations_per_ip = 2
    });
    // Four nodes behind one NAT: one public IP, four free ids.
    let internet = trio.mesh.world.internet();
    let (_, lan) = trio.mesh.world.add_nat(
        internet,
        IpAddr::from([198, 51, 100, 40]),
        Link::with_latency(Duration::from_millis(5)),
        NatConfig::full_cone(),
    );
    let crowd: Vec<HostId> = (0..4u8)
        .map(|i| {
            let addr = std::net::SocketAddr::from(([192, 168, 40, 2 + i], PORT));
            trio.mesh
                .add_node(lan, addr, |config| config.dht.mode = Mode::Client)
        })
        .collect();
    for &host in &crowd {
        trio.mesh.reserve(host, trio.relay);
    }
    let (mut granted, mut refused) = (0, 0);
    let done = trio.mesh.drive(Duration::from_secs(30), |_, host, event| {
        if crowd.contains(&host) {
            match event {
                Event::Relay(RelayEvent::ReservationGranted { .. }) => granted += 1,
                Event::Relay(RelayEvent::ReservationRefused {
                    status: RelayStatus::LimitReached,
                    ..
                }) => refused += 1,
                _ => {}
            }
        }
        granted + refused == crowd.len()
    });
    assert!(done, "granted {granted}, refused {refused}");
    assert_eq!((granted, refused), (2, 2));
    // Others still get theirs.
    trio.reserve_both();
    let relay = trio.counters(trio.relay);
    assert_eq!((relay.refused_ip_limit, relay.refused_limit), (2, 0));
    assert_eq!(
        trio.mesh.node(trio.relay).relay_load().reservations_served,
        4
    );
}
