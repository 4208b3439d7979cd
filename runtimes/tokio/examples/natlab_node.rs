//! A mesh Node for the NAT lab's node scenarios (`tests/natlab/run --node-bin`).
//!
//! ```text
//! natlab_node relay --bind ADDR --seed N [--listen ADDR]...
//!     a public node (DHT server, relay); runs until killed
//! natlab_node peer --bind ADDR --seed N --relay ADDR --relay-seed N [--listen ADDR]...
//!                  [--stun ADDR]... [--reflexive ADDR] [--gateway IP] [--upnp]
//!                  [--serve] [--dial SEED --calls N [--after-switch N]]
//!     a private node: joins the DHT through the relay, reserves on it, discovers its NAT
//!     with the STUN servers given (--stun, e.g. coturn on two IPs) and punches with the
//!     candidates it found (--reflexive: a reflexive address learned elsewhere, used until
//!     discovery reports; the lab passes none); with
//!     --serve it answers `svc.echo`; with --dial it dials node SEED through the relay,
//!     makes echo calls 20 ms apart — N in all, and once the connection switched to
//!     direct, at least --after-switch N (default 0) more issued after the switch —,
//!     and prints `result connected=1 direct=0|1 punch_ms=N switched_at_us=UNIX_US|-
//!     calls=N lost=N after_switch=N lost_after=N` and exits.
//!     With --gateway it asks that gateway for a port mapping (PCP, then NAT-PMP), waits
//!     for the answer before it dials or serves, prints `mapped EXTERNAL` (or
//!     `mapping-failed REASON`), and at exit (a dialer's end, or SIGTERM for a server)
//!     deletes the mapping and prints `unmapped requests=N deleted=N`. With --upnp (built
//!     with the feature `upnp`) it maps its port on a UPnP-IGD gateway instead
//!     (`macula_tokio::upnp`), prints `mapped EXTERNAL` or `mapping-failed REASON`, and
//!     removes the mapping at exit (`unmapped upnp`).
//! ```
//!
//! `--bind [::]:PORT` binds one dual-stack socket; the node then announces (and offers as
//! punch candidates) the addresses given with `--listen` (an IPv4 and a global IPv6 one,
//! say), since a socket bound to the unspecified address does not know its own. Without
//! `--listen` the node announces its `--bind` address.
//!
//! For the lab's count of what the relay carries after the upgrade, every mode prints
//! `circuits at_us=UNIX_US forwarded=N bytes=N written=N` after each wake-up that changed
//! one of these running totals (`RelayCounters::packets_forwarded`, `bytes_forwarded`:
//! as a relay; `packets_to_circuits`: as a circuit's end), and a peer prints
//! `path direct|relayed at_us=UNIX_US written=N [remote=ADDR]` when its connection's path
//! changes (`remote`: the direct address a punch found). The
//! stamps are wall-clock microseconds, shared by every namespace of the lab.
//!
//! Node identities come from `Identity::from_seed([seed; 32])`, so every process knows the
//! others' node ids from their seeds (a lab's shortcut: a real node's identity key is
//! secret). Each node's transport secret comes from the OS random source.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use macula::dht::{Contact, DhtEvent, Mode};
use macula::id::{Identity, Realm};
use macula::nat::portmap::{MapEvent, PortMapConfig};
use macula::nat::punch::{Candidate, CandidateKind, NatClass};
use macula::node::{Event, Node, NodeConfig, PathChange, RelayEvent};
use macula::path::PathKind;
use macula::rpc::{CallId, CallOptions, RegisterOptions, RpcEvent};
use macula_tokio::{Driver, random};
use tokio::signal::unix::{SignalKind, signal};

#[allow(clippy::disallowed_methods)] // the driver's clock
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)] // the node's wall-clock anchor and the lab's stamps
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

fn unix_us() -> u128 {
    since_epoch().as_micros()
}

/// Prints a path change of a connection, stamped for the lab, and returns the stamp.
fn print_path(node: &Node, path: PathKind, reason: &PathChange) -> u128 {
    let at = unix_us();
    let kind = if path == PathKind::Direct {
        "direct"
    } else {
        "relayed"
    };
    let written = node.relay_counters().packets_to_circuits;
    let remote = match reason {
        PathChange::Punched { remote, .. } => format!(" remote={remote}"),
        PathChange::DirectPathDead => String::new(),
    };
    println!("path {kind} at_us={at} written={written}{remote}");
    at
}

/// The circuit totals last printed.
#[derive(Default, PartialEq)]
struct CircuitTotals {
    forwarded: u64,
    bytes: u64,
    written: u64,
}

impl CircuitTotals {
    /// Prints the node's circuit totals, stamped, when they changed since the last print.
    fn print_changes(&mut self, node: &Node) {
        let counters = node.relay_counters();
        let now = Self {
            forwarded: counters.packets_forwarded,
            bytes: counters.bytes_forwarded,
            written: counters.packets_to_circuits,
        };
        if now != *self {
            println!(
                "circuits at_us={} forwarded={} bytes={} written={}",
                unix_us(),
                now.forwarded,
                now.bytes,
                now.written
            );
            *self = now;
        }
    }
}

struct Args {
    mode: String,
    bind: SocketAddr,
    listen: Vec<SocketAddr>,
    seed: u8,
    relays: Vec<SocketAddr>,
    relay_seeds: Vec<u8>,
    reflexive: Option<SocketAddr>,
    stun: Vec<SocketAddr>,
    gateway: Option<std::net::IpAddr>,
    upnp: bool,
    serve: bool,
    dial: Option<u8>,
    calls: u64,
    after_switch: u64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("mode: relay or peer")?;
    let mut args = Args {
        mode,
        bind: "0.0.0.0:4433".parse().map_err(|_| "bind")?,
        listen: Vec::new(),
        seed: 1,
        relays: Vec::new(),
        relay_seeds: Vec::new(),
        reflexive: None,
        stun: Vec::new(),
        gateway: None,
        upnp: false,
        serve: false,
        dial: None,
        calls: 100,
        after_switch: 0,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |what: &str| format!("bad {what}");
        match flag.as_str() {
            "--bind" => args.bind = value()?.parse().map_err(|_| bad("--bind"))?,
            "--seed" => args.seed = value()?.parse().map_err(|_| bad("--seed"))?,
            "--listen" => args
                .listen
                .push(value()?.parse().map_err(|_| bad("--listen"))?),
            "--relay" => args
                .relays
                .push(value()?.parse().map_err(|_| bad("--relay"))?),
            "--relay-seed" => {
                (args.relay_seeds).push(value()?.parse().map_err(|_| bad("--relay-seed"))?)
            }
            "--reflexive" => {
                args.reflexive = Some(value()?.parse().map_err(|_| bad("--reflexive"))?)
            }
            "--stun" => args.stun.push(value()?.parse().map_err(|_| bad("--stun"))?),
            "--gateway" => args.gateway = Some(value()?.parse().map_err(|_| bad("--gateway"))?),
            "--dial" => args.dial = Some(value()?.parse().map_err(|_| bad("--dial"))?),
            "--calls" => args.calls = value()?.parse().map_err(|_| bad("--calls"))?,
            "--after-switch" => {
                args.after_switch = value()?.parse().map_err(|_| bad("--after-switch"))?
            }
            "--serve" => args.serve = true,
            "--upnp" if cfg!(feature = "upnp") => args.upnp = true,
            "--upnp" => return Err("--upnp needs the feature `upnp`".into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn node(args: &Args, private: bool) -> Result<Node, String> {
    let realm = Realm::new("io.macula.natlab").map_err(|e| e.to_string())?;
    let mut config = NodeConfig::new(realm);
    config.listen_addrs = if args.listen.is_empty() {
        vec![args.bind]
    } else {
        args.listen.clone()
    };
    if private {
        config.dht.mode = Mode::Client;
    }
    config.reach.stun_servers = args.stun.clone();
    config.port_mapping = args.gateway.map(PortMapConfig::new);
    let identity = Identity::from_seed([args.seed; 32]);
    let secret = random::secret().map_err(|e| e.to_string())?;
    Node::new(config, identity, secret, now(), unix_ms()).map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("natlab_node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, String> {
    let args = parse()?;
    if args.mode == "relay" {
        let driver = Driver::bind(args.bind, node(&args, false)?)
            .await
            .map_err(|e| e.to_string())?;
        println!("ready");
        return relay(driver).await;
    }
    if args.relays.is_empty() {
        return Err("--relay".into());
    }
    // The i-th --relay has the i-th --relay-seed (1 when not given).
    let relays: Vec<Contact> = (args.relays.iter().enumerate())
        .map(|(i, &addr)| Contact {
            id: Identity::from_seed([args.relay_seeds.get(i).copied().unwrap_or(1); 32]).node_id(),
            addrs: vec![addr].into_iter().collect(),
        })
        .collect();
    let relay = relays[0].clone();
    let mut driver = Driver::bind(args.bind, node(&args, true)?)
        .await
        .map_err(|e| e.to_string())?;
    let upnp = upnp_map(&mut driver, &args).await;
    let t = now();
    let n = driver.machine_mut();
    if let Some(reflexive) = args.reflexive {
        let candidates = vec![
            Candidate::new(CandidateKind::Lan, args.bind),
            Candidate::new(CandidateKind::Reflexive, reflexive),
        ];
        n.set_punch_candidates(candidates, NatClass::UNKNOWN);
    }
    n.bootstrap(t, relays.clone());
    for relay in &relays {
        n.reserve(t, relay.clone());
    }
    // With STUN servers the node discovers its own NAT (and punch candidates)
    // after joining; it dials only once it knows.
    // With a gateway it also waits for the port mapping's answer.
    let (mut granted, mut joined, mut discovered) = (0, false, args.stun.is_empty());
    let mut mapped = args.gateway.is_none();
    while !(granted >= relays.len() && joined && discovered && mapped) {
        match driver.next_event().await {
            Event::Relay(RelayEvent::ReservationGranted { .. }) => granted += 1,
            Event::Dht(DhtEvent::Bootstrapped { .. }) => joined = true,
            Event::Nat(report) => {
                eprintln!("nat: {report:?}");
                discovered = true;
            }
            Event::PortMapping(event) => mapped |= print_mapping(event),
            _ => {}
        }
    }
    if args.serve {
        driver
            .machine_mut()
            .register(now(), "svc.echo", RegisterOptions::default())
            .map_err(|e| format!("{e:?}"))?;
        println!("ready");
        let mut totals = CircuitTotals::default();
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        loop {
            if driver.turn(term.recv()).await.is_some() {
                return stop(driver, upnp).await;
            }
            while let Some(event) = driver.pop_event() {
                match event {
                    Event::Rpc(RpcEvent::Request { id, payload, .. }) => {
                        let _ = driver.machine_mut().reply(now(), id, Ok(payload));
                        driver.flush().await;
                    }
                    Event::PathChanged { path, reason, .. } => {
                        print_path(driver.machine(), path, &reason);
                    }
                    Event::Nat(report) => eprintln!("nat: {report:?}"),
                    Event::PortMapping(event) => {
                        print_mapping(event);
                    }
                    _ => {}
                }
            }
            totals.print_changes(driver.machine());
        }
    }
    let target = Identity::from_seed([args.dial.ok_or("--serve or --dial")?; 32]).node_id();
    // Give the echo's record time to be stored on the relay, then dial.
    driver
        .turn(tokio::time::sleep(Duration::from_millis(500)))
        .await;
    let started = now();
    driver.machine_mut().dial_via_relay(started, relay, target);
    driver.flush().await;
    let mut calls = Calls::default();
    let mut totals = CircuitTotals::default();
    let mut connected_at = None;
    let mut switched: Option<(Instant, u128)> = None;
    let mut next_call = now();
    let deadline = now() + Duration::from_secs(30);
    while now() < deadline {
        let after = switched.is_some();
        let wanted = calls.issued.len() < args.calls as usize
            || (after && calls.after_switch() < args.after_switch);
        if connected_at.is_some() && wanted && now() >= next_call {
            let k = calls.issued.len() as u64;
            let payload = Bytes::from(k.to_be_bytes().to_vec());
            let call = driver.machine_mut().call(
                now(),
                "svc.echo",
                payload,
                Duration::from_secs(20),
                CallOptions::default(),
            );
            if let Ok(call) = call {
                calls.issued.push(Issued {
                    call,
                    number: k,
                    after_switch: after,
                    answered: false,
                    failed: false,
                });
            }
            driver.flush().await;
            next_call += Duration::from_millis(20);
        }
        if connected_at.is_some() && !wanted && calls.all_ended() {
            break;
        }
        driver
            .turn(tokio::time::sleep(Duration::from_millis(5)))
            .await;
        driver.flush().await;
        totals.print_changes(driver.machine());
        while let Some(event) = driver.pop_event() {
            match event {
                Event::Connected {
                    peer,
                    path: PathKind::Relayed,
                    ..
                } if peer == target && connected_at.is_none() => {
                    connected_at = Some(now());
                    println!("connected at_us={}", unix_us());
                }
                Event::PathChanged { peer, path, reason } if peer == target => {
                    let at = now().saturating_duration_since(started).as_millis();
                    eprintln!("+{at}ms path {path:?}: {reason:?}");
                    let stamp = print_path(driver.machine(), path, &reason);
                    if path == PathKind::Direct && switched.is_none() {
                        switched = Some((now(), stamp));
                    }
                }
                Event::Rpc(RpcEvent::Completed {
                    call,
                    result: Ok(payload),
                }) => calls.answer(call, &payload, now()),
                Event::Rpc(RpcEvent::Completed {
                    call,
                    result: Err(error),
                }) => {
                    eprintln!("call failed: {error}");
                    calls.fail(call);
                }
                Event::Nat(report) => {
                    let at = now().saturating_duration_since(started).as_millis();
                    eprintln!("+{at}ms nat: {report:?}");
                }
                Event::PortMapping(event) => {
                    print_mapping(event);
                }
                _ => {}
            }
        }
    }
    let punch_ms = match (connected_at, switched) {
        (Some(c), Some((s, _))) => s.saturating_duration_since(c).as_millis().to_string(),
        _ => "-".into(),
    };
    let switched_at = switched.map_or("-".into(), |(_, stamp)| stamp.to_string());
    let node = driver.machine();
    eprintln!("upgrade: {:?}", node.upgrade_counters());
    eprintln!("node: {:?}", node.counters());
    println!(
        "result connected={} direct={} punch_ms={punch_ms} switched_at_us={switched_at} \
         calls={} lost={} errors={} max_gap_ms={} after_switch={} lost_after={}",
        u8::from(connected_at.is_some()),
        u8::from(switched.is_some()),
        calls.issued.len(),
        calls.lost(|_| true),
        calls.issued.iter().filter(|i| i.failed).count(),
        calls.max_gap.as_millis(),
        calls.after_switch(),
        calls.lost(|i| i.after_switch),
    );
    stop(driver, upnp).await
}

/// Prints a port-mapping event for the lab; true when the mapping's first
/// answer is in (mapped or failed).
fn print_mapping(event: MapEvent) -> bool {
    match event {
        MapEvent::Mapped { external, .. } => println!("mapped {external}"),
        MapEvent::Lost => println!("mapping-lost"),
        MapEvent::Failed(error) => println!("mapping-failed {error}"),
    }
    !matches!(event, MapEvent::Lost)
}

#[cfg(feature = "upnp")]
type Upnp = Option<macula_tokio::upnp::UpnpMapping>;
#[cfg(not(feature = "upnp"))]
type Upnp = ();

/// With --upnp: maps the node's port on the UPnP-IGD gateway and hands the external
/// address to the node.
#[cfg(feature = "upnp")]
async fn upnp_map(driver: &mut Driver<Node>, args: &Args) -> Upnp {
    if !args.upnp {
        return None;
    }
    let lease = Duration::from_secs(3600);
    match macula_tokio::upnp::UpnpMapping::map(args.bind, lease, Duration::from_secs(5)).await {
        Ok(mapping) => {
            println!("mapped {}", mapping.external());
            let external = Some(mapping.external());
            driver.machine_mut().set_mapped_address(now(), external);
            Some(mapping)
        }
        Err(error) => {
            println!("mapping-failed {error}");
            None
        }
    }
}

#[cfg(not(feature = "upnp"))]
async fn upnp_map(_: &mut Driver<Node>, _: &Args) -> Upnp {}

/// Stops the node: the port mapping is deleted (PCP / NAT-PMP by the node, UPnP here)
/// and the peers told, and what the port mapper did is printed.
async fn stop(mut driver: Driver<Node>, upnp: Upnp) -> Result<ExitCode, String> {
    driver.machine_mut().shutdown(now());
    driver.flush().await;
    #[cfg(feature = "upnp")]
    if let Some(mapping) = upnp {
        match mapping.remove().await {
            Ok(()) => println!("unmapped upnp"),
            Err(error) => println!("unmapping-failed {error}"),
        }
    }
    #[cfg(not(feature = "upnp"))]
    let () = upnp;
    if let Some(stats) = driver.machine().port_mapping_stats() {
        println!(
            "unmapped requests={} deleted={}",
            stats.requests_sent, stats.deleted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The relay: serves until killed, printing its circuit totals when they change.
async fn relay(mut driver: Driver<Node>) -> Result<ExitCode, String> {
    let mut totals = CircuitTotals::default();
    loop {
        driver.turn(std::future::pending::<()>()).await;
        while driver.pop_event().is_some() {}
        totals.print_changes(driver.machine());
    }
}

/// One echo call of the dialer.
struct Issued {
    call: CallId,
    number: u64,
    /// Issued after the connection switched to direct.
    after_switch: bool,
    /// Came back with its own number.
    answered: bool,
    /// Ended with a typed error.
    failed: bool,
}

/// The dialer's echo calls.
#[derive(Default)]
struct Calls {
    issued: Vec<Issued>,
    /// When the last answer came.
    last_answer: Option<Instant>,
    /// The longest time between two answers.
    max_gap: Duration,
}

impl Calls {
    /// Marks `call` answered at `at` when `payload` is its own number.
    fn answer(&mut self, call: CallId, payload: &[u8], at: Instant) {
        if let Some(i) = self.issued.iter_mut().find(|i| i.call == call) {
            i.answered |= payload == i.number.to_be_bytes();
        }
        if let Some(last) = self.last_answer {
            self.max_gap = self.max_gap.max(at.saturating_duration_since(last));
        }
        self.last_answer = Some(at);
    }

    /// Marks `call` ended with a typed error.
    fn fail(&mut self, call: CallId) {
        if let Some(i) = self.issued.iter_mut().find(|i| i.call == call) {
            i.failed = true;
        }
    }

    /// Whether every call ended, answered or with a typed error.
    fn all_ended(&self) -> bool {
        self.issued.iter().all(|i| i.answered || i.failed)
    }

    fn after_switch(&self) -> u64 {
        self.issued.iter().filter(|i| i.after_switch).count() as u64
    }

    /// The calls `which` selects that got no answer (typed errors included).
    fn lost(&self, which: impl Fn(&Issued) -> bool) -> u64 {
        (self.issued.iter())
            .filter(|i| which(i) && !i.answered)
            .count() as u64
    }
}
