//! Relay circuits in the simulator: private nodes behind NATs reserve on a
//! public relay, one dials the other through it, and the end-to-end QUIC
//! connection (mutual TLS between the two private nodes) carries RPC.
#![cfg(feature = "sim")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::dht::{DhtEvent, Mode};
use macula::id::{Identity, NodeId, Realm};
use macula::node::{Event, Node, NodeConfig, RelayEvent};
use macula::path::PathKind;
use macula::rpc::{CallId, CallOptions, RegisterOptions, RpcError, RpcEvent};
use macula::sim::{HostId, Link, NatConfig, World};

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

    /// Runs until `call` completes, A echoing every request.
    fn complete(&mut self, call: CallId) -> Result<Bytes, RpcError> {
        let mut result = None;
        let done = self.drive(
            TIMEOUT + Duration::from_secs(1),
            |world, host, event| match event {
                Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
                    let answer = Bytes::from([b"echo:".as_slice(), &payload].concat());
                    world
                        .with_machine(host, |node, now| node.reply(now, id, Ok(answer)))
                        .unwrap();
                    false
                }
                Event::Rpc(RpcEvent::Completed { call: c, result: r }) if c == call => {
                    result = Some(r);
                    true
                }
                _ => false,
            },
        );
        assert!(done, "the call completed");
        result.unwrap()
    }
}

#[test]
fn a_call_runs_end_to_end_between_two_private_nodes_through_a_relay() {
    let mut trio = Trio::new(1, &|_| {});
    trio.reserve_both();
    let (at_a, at_b) = trio.dial_b_to_a();
    assert_eq!((at_a, at_b), (PathKind::Relayed, PathKind::Relayed));

    trio.world
        .with_machine(trio.a, |node, now| {
            node.register(now, "svc.echo", RegisterOptions::default())
        })
        .unwrap();
    trio.drive(Duration::from_secs(2), |_, _, _| false);
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
