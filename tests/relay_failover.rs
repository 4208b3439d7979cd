//! Relay death in the simulator: two private nodes behind symmetric NATs
//! (never direct) hold reservations on two of three public relays each,
//! and one calls or publishes to the other over a circuit. The relay that
//! circuit runs through dies (stops answering entirely) or turns into a
//! blackhole (keeps its QUIC connections alive, drops circuit traffic): the
//! ends notice from QUIC's own acknowledgements within seconds, the circuit
//! moves to the other relay, calls work again and pub/sub goes on without
//! losing a publication.
#![cfg(feature = "sim")]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::id::NodeId;
use macula::node::Event;
use macula::path::RealPath;
use macula::pubsub::{PubSubEvent, Topic};
use macula::rpc::{CallId, CallOptions, RpcError};
use macula::sim::{HostId, Link, Mesh, completion, mirror};

/// How long a call waits here: long enough that a call failing fast shows
/// the failover, not its timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Three public relays (DHT servers), and A and B behind symmetric NATs.
struct Failover {
    mesh: Mesh,
    relays: Vec<HostId>,
    a: HostId,
    b: HostId,
}

impl Failover {
    /// Every node joins through the first relay; A and B run until their
    /// peer records name two relays each, and A serves `svc.echo`.
    fn new(seed: u64) -> Self {
        let (mut mesh, relays, a, b) = common::private_pair::build(seed);
        let rest: Vec<HostId> = relays[1..].iter().copied().chain([a, b]).collect();
        mesh.begin_bootstrap(relays[0], &rest);
        let ready = mesh.run_until(
            |w| {
                [a, b].iter().all(|h| {
                    w.machine(*h)
                        .peer_record()
                        .is_some_and(|r| r.relays.len() == 2)
                })
            },
            Duration::from_secs(90),
        );
        assert!(ready, "A and B published two relays each");
        mesh.register(a, "svc.echo", Default::default());
        mesh.settle(Duration::from_secs(2));
        Self { mesh, relays, a, b }
    }

    /// [`Failover::new`] and a first call from B to A: the relay it went
    /// through, and whether A and B hold a reservation there.
    fn calling(seed: u64) -> (Self, HostId, [bool; 2]) {
        let mut lab = Self::new(seed);
        assert!(lab.call().is_ok(), "a first call over the relay");
        let relay = lab.relay_in_use();
        let id = lab.mesh.id(relay);
        let held = [lab.a, lab.b].map(|h| lab.mesh.node(h).reserved_relays().contains(&id));
        (lab, relay, held)
    }

    /// Has B call `svc.echo` and drives until the call ends (the world's
    /// time then is when); the result.
    fn call(&mut self) -> Result<Bytes, RpcError> {
        let call = self.start_call();
        self.finish(call)
    }

    fn start_call(&mut self) -> CallId {
        let payload = Bytes::from_static(b"ping");
        let options = CallOptions::default();
        let call = self.mesh.world.with_machine(self.b, |node, now| {
            node.call(now, "svc.echo", payload, CALL_TIMEOUT, options)
        });
        call.expect("B may call")
    }

    fn finish(&mut self, call: CallId) -> Result<Bytes, RpcError> {
        let mut result = None;
        let done = self.mesh.drive(CALL_TIMEOUT * 2, |world, host, event| {
            mirror(world, host, &event).expect("A answers");
            result = result.take().or_else(|| completion(&event, call));
            result.is_some()
        });
        assert!(done, "the call ended");
        result.expect("done means a result")
    }

    /// The relay B's connection to A runs through now.
    fn relay_in_use(&self) -> HostId {
        let a = self.mesh.id(self.a);
        let paths = self
            .mesh
            .node(self.b)
            .paths_to(&a)
            .expect("B is connected to A");
        let RealPath::Relay { relay, .. } = paths.0 else {
            panic!("B reaches A over a relay, not {:?}", paths.0);
        };
        self.host_of(relay)
    }

    /// Runs until `host` holds two reservations again and its published
    /// peer record no longer names `gone` (at most 10 s).
    fn await_republished(&mut self, host: HostId, gone: NodeId) {
        let settled = self.mesh.run_until(
            |w| {
                let node = w.machine(host);
                let record = node.peer_record();
                node.reserved_relays().len() == 2
                    && record.is_some_and(|r| r.relays.iter().all(|c| c.node_id != gone))
            },
            Duration::from_secs(10),
        );
        assert!(settled, "{host:?} reserved elsewhere and republished");
    }

    fn host_of(&self, id: NodeId) -> HostId {
        *(self.relays.iter())
            .find(|h| self.mesh.id(**h) == id)
            .expect("one of the relays")
    }

    /// [`Failover::call_until_ok`] from `from`, checking that a call
    /// succeeds within 5 s; the failures before.
    fn calls_work_again(&mut self, from: Instant) -> Vec<(Duration, RpcError)> {
        let (failures, ok_at) = self.call_until_ok(from, Duration::from_secs(30));
        eprintln!("failures {failures:?}, first success after {ok_at:?}");
        let ok_at = ok_at.expect("a call succeeded again");
        let limit = Duration::from_secs(5);
        assert!(ok_at <= limit, "calls work again within 5 s: {ok_at:?}");
        failures
    }

    /// Calls from B one after the other (the next as soon as one ends)
    /// until one succeeds or `within` passed since `from`: each failure's
    /// time and error, and when the first success came.
    fn call_until_ok(
        &mut self,
        from: Instant,
        within: Duration,
    ) -> (Vec<(Duration, RpcError)>, Option<Duration>) {
        let mut failures = Vec::new();
        while self.mesh.world.now() < from + within {
            let result = self.call();
            let at = self.mesh.world.now() - from;
            match result {
                Ok(_) => return (failures, Some(at)),
                Err(error) => {
                    eprintln!("call failed at {at:?}: {error:?}");
                    failures.push((at, error));
                    // A caller retries after a short pause, not in a spin.
                    self.mesh.world.run_for(Duration::from_millis(100));
                }
            }
        }
        (failures, None)
    }
}

#[test]
fn calls_succeed_again_within_five_seconds_of_a_relay_dying() {
    let (mut lab, dead, held_dead) = Failover::calling(21);
    let dead_id = lab.mesh.id(dead);
    let a_id = lab.mesh.id(lab.a);
    // The relay dies with a call in flight.
    lab.mesh.world.set_online(dead, false);
    let killed = lab.mesh.world.now();
    let in_flight = lab.start_call();
    let failed = lab.finish(in_flight);
    let failed_after = lab.mesh.world.now() - killed;
    eprintln!("in flight: {failed:?} after {failed_after:?}");
    assert!(failed.is_err(), "the call in flight fails");
    assert!(
        failed_after < Duration::from_secs(4),
        "and fast: {failed_after:?}"
    );
    lab.calls_work_again(killed);
    let b = lab.mesh.node(lab.b);
    assert_eq!(b.relay_counters().silent_relays, 1, "B noticed the silence");
    assert!(!b.reserved_relays().contains(&dead_id));
    let (_, behind) = b.paths_to(&a_id).expect("connected again");
    assert!(
        behind
            .iter()
            .all(|p| !matches!(p, RealPath::Relay { relay, .. } if *relay == dead_id))
    );
    // B's own reservation there (if it had one) moves.
    eprintln!(
        "held the dead relay: A {}, B {}",
        held_dead[0], held_dead[1]
    );
    if held_dead[1] {
        lab.await_republished(lab.b, dead_id);
    }
}

#[test]
fn a_relay_that_drops_circuit_traffic_is_noticed_and_replaced() {
    let (mut lab, bad, held_bad) = Failover::calling(22);
    let bad_id = lab.mesh.id(bad);
    // The relay keeps answering on its own connections and drops what its
    // circuits carry.
    lab.mesh
        .world
        .with_machine(bad, |node, _| node.blackhole_circuits(true));
    let turned = lab.mesh.world.now();
    let failures = lab.calls_work_again(turned);
    assert!(
        failures.len() <= 1,
        "only the call that met the blackhole failed: {failures:?}"
    );
    let a_id = lab.mesh.id(lab.a);
    let (path, _) = lab
        .mesh
        .node(lab.b)
        .paths_to(&a_id)
        .expect("connected again");
    assert!(!matches!(path, RealPath::Relay { relay, .. } if relay == bad_id));
    // The end whose data went unacknowledged found the circuit silent while
    // the relay answered, and convicted the relay once the other end
    // answered through another one: it let its reservation there go.
    let mut convicted = 0;
    for (host, held) in [lab.a, lab.b].into_iter().zip(held_bad) {
        let counters = lab.mesh.node(host).relay_counters();
        eprintln!(
            "{host:?}: dead circuits {}, dead relays {}, held the bad one {held}",
            counters.dead_circuits, counters.dead_relays
        );
        assert_eq!(
            counters.silent_relays, 0,
            "the relay's own connections answered"
        );
        if counters.dead_relays == 0 {
            continue;
        }
        convicted += 1;
        assert_eq!((counters.dead_circuits, counters.dead_relays), (1, 1));
        assert!(!lab.mesh.node(host).reserved_relays().contains(&bad_id));
        if held {
            lab.await_republished(host, bad_id);
        }
    }
    assert_eq!(convicted, 1, "one end noticed and replaced the relay");
}

#[test]
fn publications_keep_arriving_across_a_relay_death() {
    let mut lab = Failover::new(23);
    lab.mesh.subscribe(lab.a, "news.feed");
    lab.mesh.settle(Duration::from_secs(2));
    let topic = Topic::new("news.feed").expect("a topic");
    let (a, b) = (lab.a, lab.b);
    let mut received: Vec<u64> = Vec::new();
    let mut publish_times: Vec<Instant> = Vec::new();
    // One publication every 100 ms for 12 s; the relay carrying them dies
    // after 2 s.
    for n in 0..120u64 {
        if n == 20 {
            let dead = lab.relay_in_use();
            lab.mesh.world.set_online(dead, false);
        }
        publish_times.push(lab.mesh.world.now());
        lab.mesh
            .publish(b, &topic, Bytes::from(n.to_be_bytes().to_vec()));
        lab.mesh
            .drive(Duration::from_millis(100), |_, host, event| {
                if let Event::PubSub(PubSubEvent::Message { payload, .. }) = event
                    && host == a
                {
                    let n = u64::from_be_bytes(payload.as_ref().try_into().expect("8 bytes"));
                    received.push(n);
                }
                false
            });
        let next = publish_times[n as usize] + Duration::from_millis(100);
        let now = lab.mesh.world.now();
        lab.mesh.world.run_for(next.saturating_duration_since(now));
    }
    lab.mesh.drive(Duration::from_secs(2), |_, host, event| {
        if let Event::PubSub(PubSubEvent::Message { payload, .. }) = event
            && host == a
        {
            received.push(u64::from_be_bytes(
                payload.as_ref().try_into().expect("8 bytes"),
            ));
        }
        false
    });
    let lost: Vec<u64> = (0..120).filter(|n| !received.contains(n)).collect();
    eprintln!("lost {lost:?} of 120");
    let mut sorted = received.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), received.len(), "no duplicates");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order: {received:?}"
    );
    // Nothing is lost: what went into the dead circuit (45 of 120 before the
    // carry-over, 2.0 to 6.4 s of publications) is sent again on the new one.
    assert_eq!(lost, [] as [u64; 0], "lost across the relay death");
}

#[test]
fn a_node_whose_own_uplink_was_cut_reserves_again_once_it_is_back() {
    // B's NAT loses its uplink for 5 s with a call over the relay in
    // flight: every relay of B falls silent at once. That was B's network,
    // not the relays (the chaos cluster's partition of natB): once the
    // uplink is back and the relays answer again, B holds two reservations
    // again within seconds rather than avoiding every relay for ten
    // minutes, unreachable through any.
    let (mut lab, _, _) = Failover::calling(24);
    let b_ip = IpAddr::from([203, 0, 113, 2]);
    let nat = (lab.mesh.world.nats())
        .find(|n| n.external_ip() == b_ip)
        .map(|n| n.id())
        .expect("B's NAT");
    let link = Link::with_latency(Duration::from_millis(10));
    lab.mesh.world.set_nat_link(nat, link.loss(1.0));
    let in_flight = lab.start_call();
    assert!(lab.finish(in_flight).is_err(), "cut off");
    lab.mesh.world.run_for(Duration::from_secs(5));
    let b = lab.mesh.node(lab.b);
    assert!(
        b.relay_counters().silent_relays >= 1,
        "B found relays silent"
    );
    assert!(b.reserved_relays().len() < 2, "and let reservations go");
    lab.mesh.world.set_nat_link(nat, link);
    let back = lab.mesh.world.now();
    let b = lab.b;
    let reserved = lab.mesh.run_until(
        |w| w.machine(b).reserved_relays().len() == 2,
        Duration::from_secs(10),
    );
    let after = lab.mesh.world.now() - back;
    eprintln!("two reservations again {after:?} after the uplink came back");
    assert!(
        reserved,
        "two reservations again 10 s after the uplink came back"
    );
    lab.calls_work_again(back);
}

#[test]
fn a_circuit_announced_on_a_dead_connection_ends_in_seconds_and_the_call_takes_another_relay() {
    // The chaos cluster's partition heal: a relay still holds the
    // reservation of a node it can no longer reach (the node gave that
    // connection up, or its NAT lost the mapping) and announces a new circuit
    // on it. A's path to the relay B tries first (the last of A's record)
    // is cut while the connection is idle, so neither side has noticed. The
    // announcement stays unacknowledged: the relay judges the connection
    // silent as a client judges its relay's, closes it with A's reservation
    // and the circuit, and B's call, whose connection failed with the
    // circuit, reaches A again through A's record and its other relay.
    // Before, B's handshake waited out its 10 s over the announced circuit
    // and the call failed.
    let mut lab = Failover::new(25);
    let record = lab.mesh.node(lab.a).peer_record().expect("A's record");
    let first = record.relays.last().expect("two relays").node_id;
    let relay = lab.host_of(first);
    let a_ip = IpAddr::from([203, 0, 113, 1]);
    let relay_ip = lab.mesh.world.host_addr(relay).ip();
    lab.mesh.world.cut(a_ip, relay_ip, true);
    let cut = lab.mesh.world.now();
    let result = lab.call();
    let took = lab.mesh.world.now() - cut;
    eprintln!("call {result:?} after {took:?}");
    assert!(result.is_ok(), "the call went through A's other relay");
    assert!(took < Duration::from_secs(5), "within seconds: {took:?}");
    let counters = lab.mesh.node(relay).relay_counters();
    assert_eq!(
        counters.silent_circuit_ends, 1,
        "the relay closed A's connection"
    );
    assert_eq!(counters.circuits_closed, counters.circuits_opened);
    let a_id = lab.mesh.id(lab.a);
    let (path, _) = lab.mesh.node(lab.b).paths_to(&a_id).expect("connected");
    assert!(matches!(path, RealPath::Relay { relay, .. } if relay != first));
}
