//! Bring your own loop: two macula nodes driven by hand with
//! `std::net::UdpSocket`, no runtime, no driver crate.
//!
//! A `Node` does no I/O. Whoever drives it keeps one promise, the drain
//! contract:
//!
//! 1. feed one input, stamped with the current time: a datagram that came
//!    in (`Input::Datagram`), the deadline that passed (`Input::Timeout`), or
//!    a command (`bootstrap`, `find_node`, `store`, `query`);
//! 2. drain `poll_output` until it returns `None`: send every `Transmit` (with
//!    its IP TTL when it names one), hand every event to the application;
//! 3. read `poll_timeout`: wait for the next datagram, but no longer than that
//!    deadline; then go back to 1.
//!
//! Here both nodes live in one thread with one socket each. std cannot wait
//! on two sockets at once, so the loop takes turns: a blocking read on one
//! socket, with the read timeout set to the nearest deadline of either node
//! (capped at a short slice so the other socket is not left waiting), then
//! the other. Node B joins through node A, each looks the other up, B stores
//! a record and reads it back from A; the program exits by itself.
//!
//! Run: `cargo run --example byo_loop`

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use macula::dht::DhtEvent;
use macula::id::{Identity, Realm, RecordKey, RecordKind};
use macula::node::{Event, Node, NodeConfig};
use macula::secret::Secret;
use macula::{Datagram, Input, Machine, Output};

/// The longest one socket is waited on while the other may have work.
const SLICE: Duration = Duration::from_millis(20);

/// The longest the whole example may run.
const LIMIT: Duration = Duration::from_secs(5);

/// The driver owns the clock; the core never reads one.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// The driver owns the OS random source too: a node's identity key and its
/// 256-bit secret (every transport secret derives from it) are never constants.
fn os_random() -> Result<[u8; 32], getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// One node, its socket, and the socket's default TTL.
struct Host {
    name: &'static str,
    node: Node,
    socket: UdpSocket,
    local: SocketAddr,
    default_ttl: u32,
}

impl Host {
    /// Binds a loopback socket and starts a node that announces it.
    fn bind(name: &'static str, realm: &Realm) -> Result<Self, Box<dyn std::error::Error>> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let local = socket.local_addr()?;
        let mut config = NodeConfig::new(realm.clone());
        config.listen_addrs = vec![local];
        #[allow(clippy::disallowed_methods)] // the wall clock, read once at start
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        let node = Node::new(
            config,
            Identity::from_seed(os_random()?),
            Secret::from_bytes(os_random()?),
            now(),
            u64::try_from(unix_ms)?,
        )?;
        println!("{name}: {} on {local}", node.node_id());
        Ok(Self {
            name,
            node,
            default_ttl: socket.ttl()?,
            socket,
            local,
        })
    }

    /// Step 1 and 2: feeds one input, then drains.
    fn feed(&mut self, input: Input, log: &mut Log) -> io::Result<()> {
        self.node.handle_input(now(), input);
        self.drain(log)
    }

    /// Step 2: drains every output. Call it after every input and command.
    fn drain(&mut self, log: &mut Log) -> io::Result<()> {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    // A TTL applies to this one datagram (hole punching sends
                    // probes that must die before the peer's NAT).
                    if let Some(ttl) = transmit.ttl {
                        self.socket.set_ttl(ttl.into())?;
                    }
                    let sent = self.socket.send_to(&transmit.payload, transmit.destination);
                    if transmit.ttl.is_some() {
                        self.socket.set_ttl(self.default_ttl)?;
                    }
                    // A refused send concerns one datagram: QUIC recovers
                    // from loss, so report it and go on.
                    if let Err(error) = sent {
                        println!(
                            "{}: send to {} failed: {error}",
                            self.name, transmit.destination
                        );
                    }
                }
                Output::Event(event) => log.record(self.name, event),
                // This loop keeps to one socket: it opens none when asked.
                Output::Sockets(macula::SocketRequest::Open { .. }) => {
                    let none = Input::SocketsOpened(Vec::new());
                    self.node.handle_input(now(), none);
                }
                Output::Sockets(macula::SocketRequest::Close(_)) => {}
            }
        }
        Ok(())
    }

    /// Step 3 and back to 1: waits on the socket at most `wait`, then feeds
    /// the datagram that came, or the timeout if the deadline passed.
    fn turn(&mut self, wait: Duration, log: &mut Log) -> io::Result<()> {
        // A zero read timeout is an error in std: wait at least 1 ms.
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; 65_535];
        match self.socket.recv_from(&mut buf) {
            Ok((len, remote)) => {
                let datagram = Datagram {
                    local: self.local,
                    remote,
                    payload: Bytes::copy_from_slice(&buf[..len]),
                };
                self.feed(Input::Datagram(datagram), log)?;
            }
            // Timed out (WouldBlock on Unix, TimedOut on Windows).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        // Early or late, a timeout is harmless: the node acts on what is due.
        if self.node.poll_timeout().is_some_and(|at| at <= now()) {
            self.feed(Input::Timeout, log)?;
        }
        Ok(())
    }
}

/// The application's side: prints every event and keeps the DHT ones.
struct Log {
    start: Instant,
    dht: Vec<(&'static str, DhtEvent)>,
}

impl Log {
    fn record(&mut self, name: &'static str, event: Event) {
        let at = now().duration_since(self.start).as_secs_f64() * 1000.0;
        match event {
            Event::Connected {
                peer, direction, ..
            } => {
                println!("{at:7.1} ms {name}: connected to {peer} ({direction:?})");
            }
            Event::Disconnected { peer, cause, .. } => {
                println!("{at:7.1} ms {name}: disconnected from {peer:?}: {cause:?}");
            }
            Event::Dht(event) => {
                println!("{at:7.1} ms {name}: {}", describe(&event));
                self.dht.push((name, event));
            }
            other @ (Event::Rpc(_)
            | Event::PubSub(_)
            | Event::Relay(_)
            | Event::Nat(_)
            | Event::PortMapping(_)
            | Event::PeerRecord { .. }
            | Event::PathChanged { .. }) => {
                println!("{at:7.1} ms {name}: {other:?}");
            }
        }
    }

    /// Takes the first DHT event of `name` that `pick` picks, and what it
    /// picked from it.
    fn take<T>(&mut self, name: &str, pick: impl Fn(&DhtEvent) -> Option<T>) -> Option<T> {
        let (at, picked) = self
            .dht
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n == name)
            .find_map(|(at, (_, e))| pick(e).map(|p| (at, p)))?;
        self.dht.remove(at);
        Some(picked)
    }
}

fn describe(event: &DhtEvent) -> String {
    match event {
        DhtEvent::Bootstrapped { table_size, .. } => {
            format!("bootstrapped, {table_size} node(s) in the routing table")
        }
        DhtEvent::NodesFound {
            target, closest, ..
        } => {
            let found = closest.iter().any(|c| c.id == *target);
            format!(
                "lookup of {target}: found={found}, {} contact(s)",
                closest.len()
            )
        }
        DhtEvent::StoreConfirmed {
            acked,
            quorum,
            success,
            ..
        } => {
            format!(
                "store acknowledged by {} node(s), quorum {quorum}, success={success}",
                acked.len()
            )
        }
        DhtEvent::ValuesFound {
            records, answered, ..
        } => {
            let values: Vec<_> = records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.value))
                .collect();
            format!(
                "query found {values:?}, answered by {} node(s)",
                answered.len()
            )
        }
    }
}

/// Runs both hosts until `done` takes what it waits for from the log.
fn run_until<T>(
    hosts: &mut [Host; 2],
    log: &mut Log,
    mut done: impl FnMut(&mut Log) -> Option<T>,
) -> Result<T, Box<dyn std::error::Error>> {
    loop {
        if let Some(found) = done(log) {
            return Ok(found);
        }
        if now().duration_since(log.start) > LIMIT {
            return Err("the nodes did not finish in time".into());
        }
        for i in 0..hosts.len() {
            // The nearest deadline of either node bounds every wait.
            let deadline = hosts.iter().filter_map(|h| h.node.poll_timeout()).min();
            let wait = deadline.map_or(SLICE, |at| at.saturating_duration_since(now()).min(SLICE));
            hosts[i].turn(wait, log)?;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let realm = Realm::new("io.macula.byo")?;
    let mut log = Log {
        start: now(),
        dht: Vec::new(),
    };
    let mut hosts = [Host::bind("A", &realm)?, Host::bind("B", &realm)?];
    let [a_id, b_id] = [hosts[0].node.node_id(), hosts[1].node.node_id()];

    // A command is an input too: call it with the time, then drain.
    let seeds = vec![hosts[0].node.contact()];
    hosts[1].node.bootstrap(now(), seeds);
    hosts[1].drain(&mut log)?;
    run_until(&mut hosts, &mut log, |log| {
        log.take("B", |e| {
            matches!(e, DhtEvent::Bootstrapped { .. }).then_some(())
        })
    })?;

    // Each looks the other up.
    hosts[0].node.find_node(now(), b_id);
    hosts[0].drain(&mut log)?;
    hosts[1].node.find_node(now(), a_id);
    hosts[1].drain(&mut log)?;
    for (name, target) in [("A", b_id), ("B", a_id)] {
        let closest = run_until(&mut hosts, &mut log, |log| {
            log.take(name, |e| match e {
                DhtEvent::NodesFound { closest, .. } => Some(closest.clone()),
                _ => None,
            })
        })?;
        if !closest.iter().any(|c| c.id == target) {
            return Err(format!("{name} did not find {target}").into());
        }
    }

    // B publishes a signed record (it lands on A, the node closest to the
    // key) and reads it back through the DHT.
    let key = RecordKey::new(&realm, RecordKind::Rpc, "greeting");
    hosts[1].node.store(
        now(),
        key,
        Bytes::from_static(b"hello from B"),
        Duration::from_secs(3),
    )?;
    hosts[1].drain(&mut log)?;
    run_until(&mut hosts, &mut log, |log| {
        log.take("B", |e| {
            matches!(e, DhtEvent::StoreConfirmed { success: true, .. }).then_some(())
        })
    })?;
    hosts[1].node.query(now(), key, Duration::from_secs(3));
    hosts[1].drain(&mut log)?;
    let (records, answered) = run_until(&mut hosts, &mut log, |log| {
        log.take("B", |e| match e {
            DhtEvent::ValuesFound {
                records, answered, ..
            } => Some((records.clone(), answered.clone())),
            _ => None,
        })
    })?;
    if records.first().map(|r| &r.value[..]) != Some(b"hello from B") || answered != [a_id] {
        return Err("B did not read its record back from A".into());
    }
    println!(
        "done in {:.1} ms: A and B found each other, B's record was stored on A and read back",
        now().duration_since(log.start).as_secs_f64() * 1000.0
    );
    Ok(())
}
