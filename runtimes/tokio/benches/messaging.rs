//! RPC and publish through the `MaculaNode` API, against plain quinn and a
//! new connection per message, in one run.
//!
//! Prints `key=value` lines. Run it as `cargo bench -p macula-tokio --bench
//! messaging` (from `runtimes/tokio`: `cargo bench --bench messaging`);
//! without `--bench` on the command line (as under `cargo test --benches`)
//! it runs a few iterations of everything as a smoke test.
//!
//! - **Loopback** (real UDP sockets on 127.0.0.1, one tokio runtime with two
//!   workers for everything): three nodes (a seed, a provider, a caller);
//!   the provider serves `bench.echo` with an async handler that returns the
//!   payload ([`PAYLOAD`] bytes). *rpc*: sequential `call`s over the pooled
//!   connection, timed from the call to its reply; *calls/s*: [`Plan::in_flight`]
//!   tasks calling at once. *publish*: the caller publishes to a subscription
//!   on the provider, at most [`WINDOW`] messages ahead of what the
//!   subscriber received; messages/s from the first publish to the last
//!   receipt. *new connection*: a caller whose pool closes a connection as
//!   soon as its call is done (idle TTL zero); before each call it waits,
//!   untimed, until the last connection has drained, so each call dials
//!   (TLS 1.3 handshake with mutual authentication, CONNECT, CALL). Its
//!   provider list is cached for the whole run, so no DHT lookup is timed.
//! - The **floor** is plain quinn on the same runtime: one connection, one
//!   bidirectional stream per request carrying the same payload, echoed
//!   (server authentication only). Quinn with a new connection per request
//!   is printed for reference.
//! - **Idle**: a hub holds 100 punched and 100 relayed idle connections over
//!   loopback (every peer its own node and socket, dialed through a relay
//!   node, [`idle`]); `idle_datagrams_per_sec` is what its socket sent per
//!   second over 10 s (target ≤ 14: one keep-alive per connection per 15 s).
//! - **Simulator**: core nodes in `macula::sim::World` on links of 12.5 ms
//!   each way per host (50 ms RTT between two hosts), timed on the virtual
//!   clock: a call over the pooled connection, a call on a new connection,
//!   and a publication's delivery (one way).
//!
//! Every node uses the defaults except that nothing runs in the background
//! (no bootstrap retries or bucket refreshes) and the DHT's inbound request
//! budget cannot throttle the loops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use macula::id::{Identity, Realm, RecordKey, RecordKind};
use macula::node::{Event, Node, NodeConfig};
use macula::pubsub::{Pattern, PubSubEvent, Topic};
use macula::rpc::{CallId, RegisterOptions, RpcEvent};
use macula::secret::Secret;
use macula::sim::{HostId, Link, World};
use macula_tokio::{
    CallOptions, MaculaConfig, MaculaNode, ProcedureOptions, Registration, Request,
};
use tokio::task::JoinSet;

#[path = "../../../benches/common/mod.rs"]
mod common;
#[path = "messaging/idle.rs"]
mod idle;
use common::{
    Series, clock, micros, quinn_connect, quinn_exchange, quinn_pair, quinn_series, ratio,
    serve_quinn,
};

/// Bytes of every request (and its echo).
const PAYLOAD: usize = 64;
/// The procedure the provider serves.
const PROCEDURE: &str = "bench.echo";
/// The topic of the publish series.
const TOPIC: &str = "bench.ticks";
/// Publications at most in flight (published, not yet received): well
/// under the core's per-subscriber queue (1024), so none is dropped.
const WINDOW: u64 = 256;
/// Longest wait for anything the bench expects to happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// How many samples each part takes.
struct Plan {
    /// Calls before timing starts.
    warmup: usize,
    /// Timed sequential calls over one connection.
    calls: usize,
    /// Calls of the throughput run.
    throughput_calls: usize,
    /// Tasks calling at once in the throughput run.
    in_flight: usize,
    /// Timed calls with a new connection each.
    fresh: usize,
    /// Publications of the publish run.
    publishes: u64,
    /// Timed calls (and publications) in the simulator, per series.
    simulated: usize,
    /// The idle connections' measurement.
    idle: idle::Idle,
}

/// A full run (`cargo bench`).
const FULL: Plan = Plan {
    warmup: 200,
    calls: 3000,
    throughput_calls: 20_000,
    in_flight: 32,
    fresh: 200,
    publishes: 20_000,
    simulated: 100,
    idle: idle::Idle {
        direct: 100,
        relayed: 100,
        span: Duration::from_secs(10),
    },
};

/// A smoke run (`cargo test --benches`).
const SMOKE: Plan = Plan {
    warmup: 2,
    calls: 20,
    throughput_calls: 100,
    in_flight: 4,
    fresh: 3,
    publishes: 100,
    simulated: 3,
    idle: idle::Idle {
        direct: 3,
        relayed: 3,
        span: Duration::from_secs(2),
    },
};

/// Wall-clock time for `Node::new`.
#[allow(clippy::disallowed_methods)]
fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

fn realm() -> Realm {
    Realm::new("io.macula.bench").expect("a valid realm")
}

fn payload() -> Bytes {
    Bytes::from(vec![0x5a; PAYLOAD])
}

/// A node's settings here: the defaults, except that nothing runs in the
/// background and the inbound request budget cannot throttle a loop.
fn quiet(config: &mut NodeConfig) {
    config.dht.bootstrap_retries = 0;
    config.dht.bootstrap_refresh_below = 0;
    config.dht.inbound_burst = 1_000_000;
    config.dht.inbound_per_sec = 1_000_000;
}

/// Closes a connection as soon as its call is done, and keeps provider
/// lists for the whole run.
fn fresh_connections(config: &mut NodeConfig) {
    config.pool.idle_ttl = Duration::ZERO;
    config.rpc.cache_ttl = Duration::from_secs(3600);
}

// ---- loopback ---------------------------------------------------------------

/// A quiet node on loopback, changed by `tweak`.
async fn bind(tweak: impl FnOnce(&mut NodeConfig)) -> MaculaNode {
    let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().expect("an address"));
    quiet(&mut config.node);
    tweak(&mut config.node);
    MaculaNode::bind(config).await.expect("a loopback node")
}

/// Three nodes on loopback; the provider serves [`PROCEDURE`] while this
/// lives.
struct Mesh {
    /// Keeps no DHT cache, so it can poll for the records it announces (it
    /// never calls nor publishes), and subscribes.
    provider: MaculaNode,
    caller: MaculaNode,
    _seed: MaculaNode,
    _registration: Registration,
}

/// Seed, provider (serving [`PROCEDURE`]) and caller (set up by `tweak`),
/// with the provider record spread.
async fn mesh(tweak: impl FnOnce(&mut NodeConfig)) -> Mesh {
    let seed = bind(|_| {}).await;
    let provider = bind(|c| c.dht.cache_ttl = Duration::ZERO).await;
    let caller = bind(tweak).await;
    for node in [&provider, &caller] {
        node.bootstrap(vec![seed.contact()])
            .await
            .expect("bootstrap");
    }
    let echo = |request: Request| async move { Ok(request.payload) };
    let registration = provider
        .register(PROCEDURE, ProcedureOptions::default(), echo)
        .await
        .expect("a registration");
    spread(&provider, RecordKind::Rpc, PROCEDURE).await;
    Mesh {
        provider,
        caller,
        _seed: seed,
        _registration: registration,
    }
}

/// Waits until `observer` finds a record under `kind`/`name` in the DHT (a
/// node's query asks the others, not its own store).
async fn spread(observer: &MaculaNode, kind: RecordKind, name: &str) {
    let key = RecordKey::new(&realm(), kind, name);
    let limit = clock() + PATIENCE;
    loop {
        let found = observer.query(key, Duration::from_secs(2)).await;
        if found.is_ok_and(|f| !f.records.is_empty()) {
            return;
        }
        assert!(clock() < limit, "gave up waiting for the {name} record");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One timed call.
async fn timed_call(caller: &MaculaNode) -> Duration {
    let start = clock();
    let reply = caller
        .call(PROCEDURE, payload(), CallOptions::default())
        .await;
    let elapsed = start.elapsed();
    assert_eq!(reply.expect("the call succeeds").len(), PAYLOAD);
    elapsed
}

/// What the loopback run over pooled connections measured.
struct Pooled {
    rpc: Series,
    calls_per_sec: f64,
    publishes_per_sec: f64,
    publishes_dropped: u64,
}

/// Sequential calls, concurrent calls and publications over pooled
/// connections.
async fn pooled(plan: &Plan) -> Pooled {
    let mesh = mesh(|_| {}).await;
    let caller = &mesh.caller;
    for _ in 0..plan.warmup {
        timed_call(caller).await;
    }
    let mut samples = Vec::with_capacity(plan.calls);
    for _ in 0..plan.calls {
        samples.push(timed_call(caller).await);
    }

    let per_task = plan.throughput_calls / plan.in_flight;
    let start = clock();
    let mut tasks = JoinSet::new();
    for _ in 0..plan.in_flight {
        let caller = caller.clone();
        tasks.spawn(async move {
            for _ in 0..per_task {
                timed_call(&caller).await;
            }
        });
    }
    tasks.join_all().await;
    let calls_per_sec = (per_task * plan.in_flight) as f64 / start.elapsed().as_secs_f64();

    let (publishes_per_sec, publishes_dropped) = publish(plan, &mesh).await;
    Pooled {
        rpc: Series(samples),
        calls_per_sec,
        publishes_per_sec,
        publishes_dropped,
    }
}

/// The caller publishes `plan.publishes` messages to a subscription on the
/// provider, at most [`WINDOW`] ahead; returns messages/s and how many the
/// subscription dropped.
async fn publish(plan: &Plan, mesh: &Mesh) -> (f64, u64) {
    let (subscriber, publisher) = (&mesh.provider, &mesh.caller);
    let mut subscription = subscriber.subscribe(TOPIC).await.expect("a subscription");
    spread(subscriber, RecordKind::Topic, TOPIC).await;
    let received = Arc::new(AtomicU64::new(0));
    let total = plan.publishes;
    let counter = received.clone();
    let receiving = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) + subscription.dropped() < total {
            let next = tokio::time::timeout(PATIENCE, subscription.recv()).await;
            next.expect("publications keep coming")
                .expect("the node runs");
            counter.fetch_add(1, Ordering::Relaxed);
        }
        subscription.dropped()
    });
    let start = clock();
    for sent in 0..total {
        while sent - received.load(Ordering::Relaxed) >= WINDOW {
            tokio::task::yield_now().await;
        }
        let payload = Bytes::from(sent.to_be_bytes().to_vec());
        publisher
            .publish(TOPIC, payload)
            .await
            .expect("a publication");
    }
    let dropped = receiving.await.expect("the receiver ends");
    let rate = received.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    (rate, dropped)
}

/// Calls from a caller that dials anew for every call.
async fn new_connection(plan: &Plan) -> Series {
    let mesh = mesh(fresh_connections).await;
    let caller = &mesh.caller;
    let warmup = plan.warmup.min(10);
    let mut samples = Vec::with_capacity(plan.fresh);
    for i in 0..warmup + plan.fresh {
        let limit = clock() + PATIENCE;
        while caller.stats().await.expect("the node runs").connections > 0 {
            assert!(clock() < limit, "gave up waiting for a drained connection");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let elapsed = timed_call(caller).await;
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    Series(samples)
}

/// What plain quinn measured.
struct Floor {
    rpc: Series,
    new_connection: Series,
    calls_per_sec: f64,
}

/// Plain quinn: the same payload echoed, one stream per request.
async fn quinn_floor(plan: &Plan) -> Floor {
    let (server, client) = quinn_pair();
    let addr: SocketAddr = server.local_addr().expect("a bound endpoint");
    let echo = |request: Vec<u8>| Bytes::from(request);
    tokio::spawn(serve_quinn(server, echo, false));
    let request = payload();
    let rpc = quinn_series(&client, addr, &request, (plan.warmup, plan.calls), false).await;
    let fresh = (plan.warmup.min(10), plan.fresh);
    let new_connection = quinn_series(&client, addr, &request, fresh, true).await;

    // Throughput against a server that takes each stream in a task, as the
    // provider runs each handler in a task.
    let (server, client) = quinn_pair();
    let addr = server.local_addr().expect("a bound endpoint");
    tokio::spawn(serve_quinn(server, echo, true));
    let conn = quinn_connect(&client, addr).await;
    let per_task = plan.throughput_calls / plan.in_flight;
    let start = clock();
    let mut tasks = JoinSet::new();
    for _ in 0..plan.in_flight {
        let (conn, request) = (conn.clone(), request.clone());
        tasks.spawn(async move {
            for _ in 0..per_task {
                quinn_exchange(&conn, &request).await;
            }
        });
    }
    tasks.join_all().await;
    let calls_per_sec = (per_task * plan.in_flight) as f64 / start.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    Floor {
        rpc,
        new_connection,
        calls_per_sec,
    }
}

// ---- the simulator ----------------------------------------------------------

/// Seed, provider and caller (set up by `tweak`) as core nodes in a world
/// with 50 ms RTT between hosts.
struct Sim {
    world: World<Node>,
    provider: HostId,
    caller: HostId,
}

impl Sim {
    fn new(tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let start = clock();
        let mut world = World::new(11, start);
        let internet = world.internet();
        let link = Link::with_latency(Duration::from_micros(12_500));
        let mut tweak = Some(tweak);
        let hosts: Vec<HostId> = (1..=3u8)
            .map(|n| {
                let addr = SocketAddr::from(([198, 51, 100, n], 4433));
                let mut config = NodeConfig::new(realm());
                config.listen_addrs = vec![addr];
                quiet(&mut config);
                if n == 3
                    && let Some(tweak) = tweak.take()
                {
                    tweak(&mut config);
                }
                let identity = Identity::from_seed([n; 32]);
                let node = Node::new(
                    config,
                    identity,
                    Secret::deterministic(u64::from(n)),
                    start,
                    unix_ms(),
                );
                world.add_host(internet, addr, link, node.expect("a valid config"))
            })
            .collect();
        let seed = world.machine(hosts[0]).contact();
        for &host in &hosts[1..] {
            let seeds = vec![seed.clone()];
            world.with_machine(host, |node, now| node.bootstrap(now, seeds));
        }
        let mut sim = Self {
            world,
            provider: hosts[1],
            caller: hosts[2],
        };
        sim.settle();
        sim.world
            .with_machine(sim.provider, |node, now| {
                node.register(now, PROCEDURE, RegisterOptions::default())
            })
            .expect("a valid procedure");
        sim.settle();
        sim
    }

    /// Runs the world for a few virtual seconds (bootstraps, announcements).
    fn settle(&mut self) {
        let until = self.world.now() + Duration::from_secs(5);
        self.drive("nothing", until, |_| false);
    }

    /// Steps the world, echoing every request at the provider, until `done`
    /// says an event ends the wait; returns when that event happened.
    /// Panics when `limit` passes first, unless `done` never can be true
    /// (`what` is "nothing").
    fn drive(
        &mut self,
        what: &str,
        limit: Instant,
        mut done: impl FnMut(&Event) -> bool,
    ) -> Option<Instant> {
        loop {
            for event in self.world.take_events() {
                if let Event::Rpc(RpcEvent::Request { id, payload, .. }) = &event.event {
                    let answer = Ok(payload.clone());
                    self.world
                        .with_machine(event.host, |node, now| node.reply(now, *id, answer))
                        .expect("the request is open");
                }
                if done(&event.event) {
                    return Some(event.at);
                }
            }
            match self.world.next_time() {
                Some(at) if at <= limit => {
                    self.world.step();
                }
                _ => {
                    assert_eq!(what, "nothing", "gave up waiting for {what}");
                    return None;
                }
            }
        }
    }

    /// One call from the caller, timed on the virtual clock.
    fn call(&mut self) -> Duration {
        let asked = self.world.now();
        let call: CallId = self.world.with_machine(self.caller, |node, now| {
            let options = macula::rpc::CallOptions::default();
            node.call(now, PROCEDURE, payload(), PATIENCE, options)
                .expect("a valid call")
        });
        let answered = self.drive("a reply", asked + PATIENCE, |event| {
            matches!(event, Event::Rpc(RpcEvent::Completed { call: c, result })
                if *c == call && result.as_ref().is_ok_and(|r| r.len() == PAYLOAD))
        });
        answered.expect("the call ended") - asked
    }

    /// Waits until the caller has no connection left.
    fn drain(&mut self) {
        let limit = self.world.now() + PATIENCE;
        let caller = self.caller;
        let drained = self
            .world
            .run_while(limit, |w| w.machine(caller).connection_count() > 0);
        assert!(drained, "gave up waiting for a drained connection");
    }

    /// One publication from the caller to the provider's subscription,
    /// timed from publish to delivery.
    fn publish(&mut self, n: u64) -> Duration {
        let asked = self.world.now();
        let topic = Topic::new(TOPIC).expect("a valid topic");
        let payload = Bytes::from(n.to_be_bytes().to_vec());
        let id = self.world.with_machine(self.caller, |node, now| {
            node.publish(now, topic, payload).expect("a publication")
        });
        let delivered = self.drive("a publication", asked + PATIENCE, |event| {
            matches!(event, Event::PubSub(PubSubEvent::Message { message_id, .. }) if *message_id == id)
        });
        delivered.expect("the publication arrived") - asked
    }
}

/// Calls over the pooled connection, calls on new connections, and
/// publications, in the simulator.
fn simulated(plan: &Plan) -> (Series, Series, Series) {
    let mut sim = Sim::new(|_| {});
    sim.call(); // looks the provider up and connects
    let pooled = (0..plan.simulated).map(|_| sim.call()).collect();
    let pattern = Pattern::new(TOPIC).expect("a valid pattern");
    let subscribed = sim
        .world
        .with_machine(sim.provider, |node, now| node.subscribe(now, pattern));
    subscribed.expect("a subscription");
    sim.settle();
    sim.publish(0); // looks the subscribers up
    let published = (1..=plan.simulated as u64)
        .map(|n| sim.publish(n))
        .collect();

    let mut fresh = Sim::new(fresh_connections);
    fresh.call(); // fills the provider cache
    let new_connection = (0..plan.simulated)
        .map(|_| {
            fresh.drain();
            fresh.call()
        })
        .collect();
    (Series(pooled), Series(new_connection), Series(published))
}

// ---- the report ---------------------------------------------------------------

fn main() {
    let plan = if std::env::args().any(|a| a == "--bench") {
        &FULL
    } else {
        &SMOKE
    };
    let began = clock();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (pooled, fresh, floor, idle) = runtime.block_on(async {
        let pooled = pooled(plan).await;
        let fresh = new_connection(plan).await;
        let floor = quinn_floor(plan).await;
        let idle = idle::idle(&plan.idle).await;
        (pooled, fresh, floor, idle)
    });
    drop(runtime);

    println!("payload_bytes={PAYLOAD}");
    pooled.rpc.print("rpc");
    fresh.print("rpc_new_conn");
    floor.rpc.print("quinn");
    floor.new_connection.print("quinn_new_conn");
    println!("rpc_in_flight={}", plan.in_flight);
    println!("rpc_calls_per_sec={:.0}", pooled.calls_per_sec);
    println!("quinn_calls_per_sec={:.0}", floor.calls_per_sec);
    println!(
        "rpc_calls_per_sec_vs_quinn={:.2}",
        pooled.calls_per_sec / floor.calls_per_sec
    );
    println!("publish_window={WINDOW}");
    println!("publish_messages_per_sec={:.0}", pooled.publishes_per_sec);
    println!("publish_dropped={}", pooled.publishes_dropped);
    println!("idle_direct_connections={}", idle.kinds.0.saturating_sub(1));
    println!("idle_relayed_connections={}", idle.kinds.1);
    println!("idle_seconds={}", plan.idle.span.as_secs());
    println!("idle_datagrams_per_sec={:.2}", idle.per_sec);
    // Over UDP it was not measured before the change; the simulator's figure then was
    // 21.8 (cargo bench --bench node --features sim -- keepalive).
    println!(
        "target_idle_datagrams_per_sec_le_14={}",
        if idle.per_sec <= 14.0 {
            "met"
        } else {
            "missed"
        }
    );

    let p50 = |s: &Series| micros(s.quantile(0.5));
    let vs_quinn = p50(&pooled.rpc) / p50(&floor.rpc);
    println!("rpc_p50_vs_quinn={vs_quinn:.2}");
    let met = |ok: bool| if ok { "met" } else { "missed" };
    println!("target_rpc_p50_le_2x_quinn={}", met(vs_quinn <= 2.0));
    let conn_per_msg = p50(&fresh) / p50(&pooled.rpc);
    println!("conn_per_msg_vs_pooled={conn_per_msg:.2}");
    println!(
        "target_conn_per_msg_ge_30x_pooled={}",
        met(conn_per_msg >= 30.0)
    );
    ratio("ratio_rpc_over_quinn", &pooled.rpc, &floor.rpc, None);
    ratio(
        "ratio_rpc_new_conn_over_quinn_new_conn",
        &fresh,
        &floor.new_connection,
        None,
    );

    let (sim_rpc, sim_fresh, sim_publish) = simulated(plan);
    sim_rpc.print("sim_50ms_rtt_rpc");
    sim_fresh.print("sim_50ms_rtt_rpc_new_conn");
    sim_publish.print("sim_50ms_rtt_publish_delivery");
    ratio("sim_ratio_new_conn_over_pooled", &sim_fresh, &sim_rpc, None);
    println!("bench_seconds={:.1}", began.elapsed().as_secs_f64());
}
