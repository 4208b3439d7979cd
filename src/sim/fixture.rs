//! One test fixture for nodes in the simulator: a [`Mesh`] of
//! [`Node`]s over a [`World`], and the constants every node-level test shares.
//!
//! A mesh adds public nodes, nodes behind nested NATs ([`NatConfig`]) and
//! relays, bootstraps them through a seed, registers, calls, subscribes and
//! publishes, answers requests with [`echo`] or [`mirror`], and runs the
//! world with [`World::drive`] or until a predicate holds
//! ([`Mesh::run_until`]). Each node gets its identity and randomness from its
//! place in the mesh and the mesh's seed, so the same test makes the same
//! world every time. The fixture reads no clock: the caller hands it the
//! virtual clock's first instant.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{HostId, Link, NatConfig, NetId, World};
use crate::dht::{Contact, DhtEvent, Diversity};
use crate::id::{Identity, NodeId, Realm};
use crate::node::{Event, Node, NodeConfig};
use crate::pubsub::{Pattern, SubscriberId, Topic};
use crate::rpc::{CallId, CallOptions, RegisterOptions, RpcError, RpcEvent};
use crate::secret::Secret;

/// The wall-clock time (Unix milliseconds) of every node's first instant.
pub const UNIX_MS: u64 = 1_795_478_400_000;

/// The wall-clock time (Unix milliseconds) at `now` of a world that started at `start`.
pub fn unix_ms_at(start: Instant, now: Instant) -> u64 {
    UNIX_MS + now.saturating_duration_since(start).as_millis() as u64
}

/// The port every fixture node listens on.
pub const PORT: u16 = 4433;

/// The timeout of calls made through [`Mesh::call`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The realm of every fixture node.
pub fn realm() -> Realm {
    Realm::new("io.macula.test").unwrap_or_else(|_| unreachable!("a valid realm name"))
}

/// Public address `198.51.100.<ip>:<port>` (TEST-NET-2).
pub fn public_addr(ip: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, ip], port))
}

/// The address of the only host on private network `lan`:
/// `192.168.<lan>.2:`[`PORT`].
pub fn lan_addr(lan: u8) -> SocketAddr {
    SocketAddr::from(([192, 168, lan, 2], PORT))
}

/// A simulated network of nodes; see the module docs.
pub struct Mesh {
    /// The world the nodes run in, for whatever the fixture does not wrap.
    pub world: World<Node>,
    /// Every node, in the order it was added.
    pub hosts: Vec<HostId>,
    seed: u64,
    link: Link,
}

impl Mesh {
    /// An empty mesh: a world seeded with `seed` whose clock starts at
    /// `start`; hosts and NATs attach through 5 ms links until
    /// [`set_link`](Self::set_link) says otherwise.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            world: World::new(seed, start),
            hosts: Vec::new(),
            seed,
            link: Link::with_latency(Duration::from_millis(5)),
        }
    }

    /// The link nodes and NATs added from now on attach through.
    pub fn set_link(&mut self, link: Link) {
        self.link = link;
    }

    /// `n` public nodes at [`public_addr`]`(1..=n, PORT)`, each configured by
    /// `configure(index, config)`, not yet bootstrapped
    /// ([`bootstrap_all`](Self::bootstrap_all)).
    pub fn public(
        n: usize,
        seed: u64,
        start: Instant,
        link: Link,
        configure: impl Fn(usize, &mut NodeConfig),
    ) -> Self {
        let mut mesh = Self::new(seed, start);
        mesh.set_link(link);
        for i in 0..n {
            mesh.add_public(public_addr(i as u8 + 1, PORT), |c| configure(i, c));
        }
        mesh
    }

    /// Adds a node at `addr` on the internet, configured by `configure`.
    pub fn add_public(
        &mut self,
        addr: SocketAddr,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        let internet = self.world.internet();
        self.add_node(internet, addr, configure)
    }

    /// Adds a node at `addr` behind `nats` (outermost first, each with its
    /// external IP, so two make a home NAT behind a carrier NAT), configured
    /// by `configure`.
    pub fn add_behind(
        &mut self,
        nats: &[(IpAddr, NatConfig)],
        addr: SocketAddr,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        let mut net = self.world.internet();
        for &(ip, config) in nats {
            net = self.world.add_nat(net, ip, self.link, config).1;
        }
        self.add_node(net, addr, configure)
    }

    /// Adds a node at `addr` on `net`. Its config starts from [`realm`] and
    /// listens on `addr`, with no IP-diversity limits (every public fixture
    /// node is in 198.51.100.0/24, one network as far as
    /// [`Diversity`](crate::dht::Diversity) is concerned), before
    /// `configure` changes it; the node added
    /// `i`-th (from 0) has identity seed `[i + 1; 32]` and randomness seed
    /// `seed + i`.
    ///
    /// # Panics
    /// If the node cannot be built from the configuration.
    pub fn add_node(
        &mut self,
        net: NetId,
        addr: SocketAddr,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        let i = self.hosts.len();
        let node = self.build_node(i, addr, configure, 0);
        let host = self.world.add_host(net, addr, self.link, node);
        self.hosts.push(host);
        host
    }

    /// Kills `host`'s node (it tells no one) and starts it again at once on
    /// its address, with its identity, configured as
    /// [`add_node`](Self::add_node) does by `configure`, and with a new
    /// randomness seed (`incarnation` apart from its first, which is 0): it
    /// remembers nothing, neither peers nor connections.
    ///
    /// # Panics
    /// If `host` is not one of the mesh's nodes or cannot be built.
    pub fn restart(
        &mut self,
        host: HostId,
        incarnation: u64,
        configure: impl FnOnce(&mut NodeConfig),
    ) {
        let i = (self.hosts.iter().position(|h| *h == host)).expect("a node of the mesh");
        let addr = self.world.host_addr(host);
        let node = self.build_node(i, addr, configure, incarnation);
        self.world.restart(host, node);
    }

    /// The `i`-th node's machine listening on `addr`, in its `incarnation`,
    /// starting now (see [`add_node`](Self::add_node)).
    fn build_node(
        &self,
        i: usize,
        addr: SocketAddr,
        configure: impl FnOnce(&mut NodeConfig),
        incarnation: u64,
    ) -> Node {
        let mut config = NodeConfig::new(realm());
        config.listen_addrs = vec![addr];
        config.dht.diversity = Diversity::UNLIMITED;
        configure(&mut config);
        let identity = Identity::from_seed([i as u8 + 1; 32]);
        let now = self.world.now();
        let unix_ms = unix_ms_at(self.world.start(), now);
        let seed = (self.seed.wrapping_add(i as u64)).wrapping_add(incarnation << 32);
        let secret = Secret::deterministic(seed);
        match Node::new(config, identity, secret, now, unix_ms) {
            Ok(node) => node,
            Err(e) => panic!("node {i}: {e}"),
        }
    }

    /// A node.
    pub fn node(&self, host: HostId) -> &Node {
        self.world.machine(host)
    }

    /// A node's id.
    pub fn id(&self, host: HostId) -> NodeId {
        self.node(host).node_id()
    }

    /// A node's contact, to bootstrap or reserve through.
    pub fn contact(&self, host: HostId) -> Contact {
        self.node(host).contact()
    }

    /// Has `hosts` start bootstrapping through `seed`.
    pub fn begin_bootstrap(&mut self, seed: HostId, hosts: &[HostId]) {
        let contact = self.contact(seed);
        for &host in hosts {
            let seeds = vec![contact.clone()];
            self.world
                .with_machine(host, |node, now| node.bootstrap(now, seeds));
        }
    }

    /// Has `hosts` bootstrap through `seed` and runs until each reported
    /// [`DhtEvent::Bootstrapped`] (at most a minute); false if one did not.
    pub fn bootstrap(&mut self, seed: HostId, hosts: &[HostId]) -> bool {
        self.begin_bootstrap(seed, hosts);
        self.run_until(
            |world| {
                hosts.iter().all(|&h| {
                    events_of(world, h)
                        .any(|e| matches!(e, Event::Dht(DhtEvent::Bootstrapped { .. })))
                })
            },
            Duration::from_secs(60),
        )
    }

    /// Bootstraps every node after the first through the first, as
    /// [`bootstrap`](Self::bootstrap).
    pub fn bootstrap_all(&mut self) -> bool {
        match self.hosts.clone().split_first() {
            Some((&seed, rest)) => self.bootstrap(seed, rest),
            None => true,
        }
    }

    /// Has `host` reserve a slot on `relay`.
    pub fn reserve(&mut self, host: HostId, relay: HostId) {
        let contact = self.contact(relay);
        self.world
            .with_machine(host, |node, now| node.reserve(now, contact));
    }

    /// Has `host` serve `procedure`.
    ///
    /// # Panics
    /// If the node refuses (a local check, e.g. a bad procedure name).
    pub fn register(&mut self, host: HostId, procedure: &str, options: RegisterOptions) {
        let registered =
            (self.world).with_machine(host, |node, now| node.register(now, procedure, options));
        registered.unwrap_or_else(|e| panic!("register {procedure}: {e}"));
    }

    /// Has `host` call `procedure` with `payload` and the default options,
    /// timing out after [`CALL_TIMEOUT`].
    ///
    /// # Panics
    /// If the node refuses the call (a local check, e.g. a payload over its
    /// limit).
    pub fn call(&mut self, host: HostId, procedure: &str, payload: impl Into<Bytes>) -> CallId {
        let payload = payload.into();
        let call = self.world.with_machine(host, |node, now| {
            node.call(
                now,
                procedure,
                payload,
                CALL_TIMEOUT,
                CallOptions::default(),
            )
        });
        call.unwrap_or_else(|e| panic!("call {procedure}: {e}"))
    }

    /// Adds a local subscriber of `pattern` on `host`.
    ///
    /// # Panics
    /// If `pattern` is not a valid pattern or the node refuses it.
    pub fn subscribe(&mut self, host: HostId, pattern: &str) -> SubscriberId {
        let parsed = Pattern::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let subscribed = (self.world).with_machine(host, |node, now| node.subscribe(now, parsed));
        subscribed.unwrap_or_else(|e| panic!("subscribe {pattern}: {e}"))
    }

    /// Has `host` publish `payload` on `topic`; the message id.
    ///
    /// # Panics
    /// If the node refuses (a local check, e.g. a payload over its limit).
    pub fn publish(&mut self, host: HostId, topic: &Topic, payload: impl Into<Bytes>) -> u64 {
        let (topic, payload) = (topic.clone(), payload.into());
        let published =
            (self.world).with_machine(host, |node, now| node.publish(now, topic, payload));
        published.unwrap_or_else(|e| panic!("publish: {e}"))
    }

    /// [`World::drive`]: steps for at most `within`, handing each event to
    /// `react` until it returns true; false when time ran out first.
    pub fn drive(
        &mut self,
        within: Duration,
        react: impl FnMut(&mut World<Node>, HostId, Event) -> bool,
    ) -> bool {
        self.world.drive(within, react)
    }

    /// Lets `duration` pass, taking (and dropping) the events.
    pub fn settle(&mut self, duration: Duration) {
        self.drive(duration, |_, _, _| false);
    }

    /// Steps until `done(world)` holds, for at most `limit`
    /// ([`World::run_while`]); true if it did (the clock stays there), false
    /// at the limit (the clock moves to it). Events are kept, for
    /// [`events_of`].
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&World<Node>) -> bool,
        limit: Duration,
    ) -> bool {
        let now = self.world.now();
        let until = now.checked_add(limit).unwrap_or(now);
        self.world.run_while(until, |world| !done(world))
    }

    /// Drives the mesh until `call` completes (within [`CALL_TIMEOUT`]),
    /// handing every event to `on_event` first; returns the call's result.
    ///
    /// # Panics
    /// If the call did not complete in time.
    pub fn await_call(
        &mut self,
        call: CallId,
        mut on_event: impl FnMut(&mut World<Node>, HostId, &Event),
    ) -> Result<Bytes, RpcError> {
        let mut result = None;
        let done = self.drive(CALL_TIMEOUT, |world, host, event| {
            on_event(world, host, &event);
            result = completion(&event, call);
            result.is_some()
        });
        assert!(done, "the call completed");
        result.unwrap_or_else(|| unreachable!("done means a result"))
    }

    /// The events `host` reported since the world's events were last taken.
    pub fn events_of(&self, host: HostId) -> impl Iterator<Item = &Event> + '_ {
        events_of(&self.world, host)
    }
}

/// The events `host` reported since `world`'s events were last taken.
pub fn events_of(world: &World<Node>, host: HostId) -> impl Iterator<Item = &Event> + '_ {
    (world.events().iter())
        .filter(move |e| e.host == host)
        .map(|e| &e.event)
}

/// Answers an RPC request at `host` with `echo:` and its payload; other
/// events pass. The reply's error, if the request can no longer be answered.
pub fn echo(world: &mut World<Node>, host: HostId, event: &Event) -> Result<(), RpcError> {
    answer(world, host, event, |payload| {
        Bytes::from([b"echo:".as_slice(), payload].concat())
    })
}

/// Answers an RPC request at `host` with its own payload; other events pass.
/// The reply's error, if the request can no longer be answered.
pub fn mirror(world: &mut World<Node>, host: HostId, event: &Event) -> Result<(), RpcError> {
    answer(world, host, event, Bytes::clone)
}

/// Answers a request with `reply(payload)`.
fn answer(
    world: &mut World<Node>,
    host: HostId,
    event: &Event,
    reply: impl FnOnce(&Bytes) -> Bytes,
) -> Result<(), RpcError> {
    match event {
        Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
            let answer = Ok(reply(payload));
            world.with_machine(host, |node, now| node.reply(now, *id, answer))
        }
        _ => Ok(()),
    }
}

/// The result of `call`, if `event` is its completion.
pub fn completion(event: &Event, call: CallId) -> Option<Result<Bytes, RpcError>> {
    match event {
        Event::Rpc(RpcEvent::Completed { call: c, result }) if *c == call => Some(result.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::{Mesh, completion, echo};
    use crate::rpc::RegisterOptions;
    use crate::sim::Link;
    use crate::test_epoch;

    #[test]
    fn two_public_nodes_connect_and_an_echo_call_returns() {
        let link = Link::with_latency(Duration::from_millis(5));
        let mut mesh = Mesh::public(2, 1, test_epoch(), link, |_, _| {});
        assert!(mesh.bootstrap_all());
        let (server, client) = (mesh.hosts[0], mesh.hosts[1]);
        let options = RegisterOptions::default();
        mesh.register(server, "svc.echo", options);
        mesh.settle(Duration::from_secs(2));
        let call = mesh.call(client, "svc.echo", &b"hi"[..]);
        let mut result = None;
        let done = mesh.drive(Duration::from_secs(10), |world, host, event| {
            assert_eq!(echo(world, host, &event), Ok(()));
            result = result.take().or_else(|| completion(&event, call));
            result.is_some()
        });
        assert!(done, "the call completed");
        assert_eq!(result, Some(Ok(Bytes::from_static(b"echo:hi"))));
    }

    #[test]
    fn run_until_returns_false_at_its_limit_and_moves_the_clock_there() {
        let mut mesh = Mesh::new(2, test_epoch());
        let start = mesh.world.now();
        assert!(!mesh.run_until(|_| false, Duration::from_secs(3)));
        assert_eq!(mesh.world.now(), start + Duration::from_secs(3));
        assert!(mesh.run_until(|_| true, Duration::from_secs(3)));
        assert_eq!(mesh.world.now(), start + Duration::from_secs(3));
    }
}
