//! Idle connections over real UDP on loopback: a hub holds `direct` punched and
//! `relayed` relayed idle connections, each peer its own node and socket; what the hub
//! sends over [`Idle::span`] of wall-clock time, per second.
//!
//! Every connection is dialed through a relay node, as between two NATed nodes, the dials
//! spread over [`Idle::spread`] with the two kinds interleaved, so the direct connections'
//! keep-alives are spread over their period (the relayed ones PING together at the hub's
//! beat, once per 30 s, whenever they were dialed: the span is a whole beat period, so it
//! holds exactly one beat); the
//! peers' NAT classes, handed to them, decide which punch (open peers: the punch
//! succeeds on loopback) and which stay relayed (random symmetric peers against the
//! hub's port-restricted class: the classes rule the punch out, and no node runs the
//! birthday search, which on loopback, with no NAT in the way, would make them direct).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use macula::dht::{Contact, Mode};
use macula::id::{Identity, Realm};
use macula::nat::punch::{Candidate, CandidateKind, NatClass};
use macula::node::{Node, NodeConfig};
use macula::relay::RelayMode;
use macula::secret::Secret;
use macula::sim::punch_lab::NatKind;
use macula_tokio::Driver;
use tokio::task::JoinSet;

use super::common::clock;
use super::unix_ms;

/// Longer than any run: the relay and the peers are driven until the measurement aborts
/// them.
pub(super) const FOREVER: Duration = Duration::from_secs(3600);

/// What the idle measurement holds and for how long.
pub struct Idle {
    /// Punched (direct) idle connections.
    pub direct: usize,
    /// Relayed idle connections.
    pub relayed: usize,
    /// How long the datagrams are counted: a whole number of the relayed connections'
    /// keep-alive beats (30 s by default), or the count depends on whether a beat fell in
    /// the span.
    pub span: Duration,
    /// Over how long the dials are spread: the longest keep-alive period (a relayed
    /// connection's dialer pings every 30 s by default), so that every kind's keep-alives
    /// are spread over their whole period.
    pub spread: Duration,
}

/// What the hub sent while idle.
pub struct IdleReport {
    /// Its direct connections (the relay's included) and relayed ones once settled.
    pub kinds: (usize, usize),
    /// Datagrams per second over the span.
    pub per_sec: f64,
}

/// A free loopback port (the OS's pick, released for the node to bind).
fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback socket");
    socket.local_addr().expect("a bound address")
}

/// Node `seed` at `addr`: relay limits and stream credit for hundreds of circuits (and no
/// rate limit: [`super::relay`] measures forwarding at full speed), a pool that keeps idle
/// connections, no discovery; then `tweak`.
fn node(seed: u8, addr: SocketAddr, relay: bool, tweak: fn(&mut NodeConfig)) -> Node {
    let realm = Realm::new("io.macula.bench").expect("a valid realm");
    let mut config = NodeConfig::new(realm);
    config.listen_addrs = vec![addr];
    config.dht.mode = if relay { Mode::Server } else { Mode::Client };
    config.relay.mode = if relay {
        RelayMode::Always
    } else {
        RelayMode::Never
    };
    config.reach.auto_discover = false;
    // The relayed peers (random symmetric class) stay relayed: no birthday search, which
    // on loopback (no NAT) makes them direct, as the simulator's idle lab does.
    config.upgrade.search = false;
    let r = &mut config.relay;
    (r.max_reservations, r.max_reservations_per_ip) = (1024, 1024);
    (
        r.max_circuits,
        r.max_circuits_per_peer,
        r.max_circuits_per_ip,
    ) = (1024, 1024, 1024);
    (r.peer_rate, r.total_rate, r.max_circuit_bytes) = (1 << 40, 1 << 40, 1 << 50);
    config.admission.max_per_ip = 1024;
    config.admission.handshakes_per_network = 1024;
    config.pool.max_outbound = 1024;
    config.pool.idle_ttl = Duration::from_secs(86_400);
    config.transport.max_concurrent_bidi_streams = 1024;
    // `IDLE_IMMEDIATE_ACKS=1` measures with `TransportSettings::immediate_acks` on.
    config.transport.immediate_acks = std::env::var_os("IDLE_IMMEDIATE_ACKS").is_some();
    tweak(&mut config);
    let identity = Identity::from_seed([seed; 32]);
    let secret = Secret::deterministic(u64::from(seed));
    Node::new(config, identity, secret, clock(), unix_ms()).expect("a valid node")
}

/// Binds node `seed` with its candidates and class, reserved on `relay` when given.
pub(super) async fn bind(seed: u8, class: NatClass, relay: Option<&Contact>) -> Driver<Node> {
    bind_with(seed, class, relay, |_| {}).await
}

/// [`bind`], with the node's settings changed by `tweak`.
pub(super) async fn bind_with(
    seed: u8,
    class: NatClass,
    relay: Option<&Contact>,
    tweak: fn(&mut NodeConfig),
) -> Driver<Node> {
    let addr = free_addr();
    let mut driver = Driver::bind(addr, node(seed, addr, relay.is_none(), tweak))
        .await
        .expect("a loopback socket");
    let n = driver.machine_mut();
    n.set_punch_candidates(vec![Candidate::new(CandidateKind::Lan, addr)], class);
    if let Some(relay) = relay {
        n.reserve(clock(), relay.clone());
    }
    driver.flush().await;
    driver
}

/// Drives `driver` for `span`.
pub(super) async fn drive_for(driver: &mut Driver<Node>, span: Duration) {
    let until = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < until {
        driver.turn(tokio::time::sleep_until(until)).await;
        driver.flush().await;
        while driver.pop_event().is_some() {}
    }
}

/// Runs the measurement (see the module docs).
pub async fn idle(plan: &Idle) -> IdleReport {
    let mut tasks = JoinSet::new();
    let mut relay = bind(1, NatClass::OPEN, None).await;
    let relay_contact = relay.machine().contact();
    tasks.spawn(async move { drive_for(&mut relay, FOREVER).await });
    let mut hub = bind(2, NatKind::PortRestricted.class(), Some(&relay_contact)).await;
    let mut targets = Vec::new();
    let total = plan.direct + plan.relayed;
    let peers = (0..total).map(|i| {
        // Interleaved: peer i is direct when the running share of direct peers steps up.
        let direct = (i + 1) * plan.direct / total > i * plan.direct / total;
        let class = if direct {
            NatClass::OPEN
        } else {
            NatKind::SymmetricRandom.class()
        };
        (u8::try_from(i + 3).expect("at most 250 peers"), class)
    });
    for (seed, class) in peers {
        let mut peer = bind(seed, class, Some(&relay_contact)).await;
        targets.push(peer.machine().node_id());
        tasks.spawn(async move { drive_for(&mut peer, FOREVER).await });
    }
    // Reservations first, then the dials.
    drive_for(&mut hub, Duration::from_secs(2)).await;
    // Spread over the longest keep-alive period, so the keep-alives are too and the span
    // samples them fairly.
    let gap = plan.spread / u32::try_from(targets.len().max(1)).unwrap_or(1);
    for target in targets {
        let now = clock();
        (hub.machine_mut()).dial_via_relay(now, relay_contact.clone(), target);
        hub.flush().await;
        drive_for(&mut hub, gap).await;
    }
    // Connections up and punched, then a keep-alive period to settle.
    let settled = clock() + Duration::from_secs(30);
    let want = (plan.direct + 1, plan.relayed);
    while clock() < settled && hub.machine().connection_kinds() != want {
        drive_for(&mut hub, Duration::from_millis(100)).await;
    }
    drive_for(&mut hub, Duration::from_secs(15)).await;
    let kinds = hub.machine().connection_kinds();
    let before = hub.counters().datagrams_sent;
    let started = clock();
    drive_for(&mut hub, plan.span).await;
    let sent = hub.counters().datagrams_sent - before;
    let per_sec = sent as f64 / started.elapsed().as_secs_f64();
    tasks.abort_all();
    IdleReport { kinds, per_sec }
}
