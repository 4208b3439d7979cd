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
//! a record and reads it back from A. Then messaging, with the core's rules
//! (the same a tokio or mio driver applies):
//!
//! - A serves `demo.echo` with a concurrency limit of 1. B makes two calls
//!   at once: A's node hands the first to the application (an
//!   `RpcEvent::Request`) and answers the second `overloaded` itself, so B's
//!   second call ends with `RpcError::Overloaded`; then A's application
//!   answers the first (`Node::reply`) and B gets the echo.
//! - B has two local subscribers of `news.*`: one subscription on the wire.
//!   A publishes; the message arrives once, and `Node::subscribers_of` its
//!   topic names both subscribers. The first unsubscribe keeps the
//!   subscription, the second withdraws it.
//!
//! The program exits by itself.
//!
//! Run: `cargo run --example byo_loop`

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use macula::dht::DhtEvent;
use macula::id::{Identity, Realm, RecordKey, RecordKind};
use macula::node::{Event, Node, NodeConfig};
use macula::pubsub::{Pattern, PubSubEvent, Topic};
use macula::rpc::{CallOptions, RegisterOptions, RpcError, RpcEvent};
use macula::secret::Secret;
use macula::{Datagram, Input, Machine, Output};

/// The longest one socket is waited on while the other may have work.
const SLICE: Duration = Duration::from_millis(20);

/// The longest the whole example may run.
const LIMIT: Duration = Duration::from_secs(15);

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
                    // Several datagrams back to back (a segment size) are sent one by
                    // one here; a GSO socket takes them in one call.
                    let destination = transmit.destination;
                    let sent = (transmit.clone().split(1))
                        .try_for_each(|d| self.socket.send_to(&d.payload, destination).map(drop));
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
                // A buffer of its own: the node hands it to QUIC without
                // another copy (`Datagram::payload`).
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

/// The application's side: prints every event and keeps the DHT, RPC and
/// pub/sub ones for the steps below to take.
struct Log {
    start: Instant,
    kept: Vec<(&'static str, Event)>,
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
            Event::Dht(ref dht) => {
                println!("{at:7.1} ms {name}: {}", describe(dht));
                self.kept.push((name, event));
            }
            Event::Rpc(_) | Event::PubSub(_) => {
                println!("{at:7.1} ms {name}: {event:?}");
                self.kept.push((name, event));
            }
            other @ (Event::Relay(_)
            | Event::Nat(_)
            | Event::PortMapping(_)
            | Event::PeerRecord { .. }
            | Event::PathChanged { .. }) => {
                println!("{at:7.1} ms {name}: {other:?}");
            }
        }
    }

    /// Takes the first kept event of `name` that `pick` picks, and what it
    /// picked from it.
    fn take_event<T>(&mut self, name: &str, pick: impl Fn(&Event) -> Option<T>) -> Option<T> {
        let (at, picked) = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n == name)
            .find_map(|(at, (_, e))| pick(e).map(|p| (at, p)))?;
        self.kept.remove(at);
        Some(picked)
    }

    /// [`Log::take_event`] of a DHT event.
    fn take<T>(&mut self, name: &str, pick: impl Fn(&DhtEvent) -> Option<T>) -> Option<T> {
        self.take_event(name, |event| match event {
            Event::Dht(dht) => pick(dht),
            _ => None,
        })
    }

    /// [`Log::take_event`] of an RPC event.
    fn take_rpc<T>(&mut self, name: &str, pick: impl Fn(&RpcEvent) -> Option<T>) -> Option<T> {
        self.take_event(name, |event| match event {
            Event::Rpc(rpc) => pick(rpc),
            _ => None,
        })
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
        kept: Vec::new(),
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
    serve_rpc(&mut hosts, &mut log, &realm)?;
    share_a_subscription(&mut hosts, &mut log, &realm)?;
    println!(
        "done in {:.1} ms: A and B found each other, B's record was stored on A and read back, \
         A served B within its limit and B's two subscribers shared one subscription",
        now().duration_since(log.start).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Queries `key` from host `asker` until it sees a record there (a provider
/// or subscriber record takes a DHT store to arrive).
fn wait_for_record(
    hosts: &mut [Host; 2],
    log: &mut Log,
    asker: usize,
    key: RecordKey,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = hosts[asker].name;
    loop {
        hosts[asker].node.query(now(), key, Duration::from_secs(1));
        hosts[asker].drain(log)?;
        let found = run_until(hosts, log, |log| {
            log.take(name, |e| match e {
                DhtEvent::ValuesFound { records, .. } => Some(!records.is_empty()),
                _ => None,
            })
        })?;
        if found {
            return Ok(());
        }
        // Let the store travel before asking again (a cached empty answer
        // comes back at once, without the network).
        let until = now() + Duration::from_millis(50);
        run_until(hosts, log, |_| (now() >= until).then_some(()))?;
    }
}

/// A serves `demo.echo`, at most one call at a time; B calls it twice at
/// once. The node refuses the second (the limit is the node's rule); the
/// application answers the first.
fn serve_rpc(
    hosts: &mut [Host; 2],
    log: &mut Log,
    realm: &Realm,
) -> Result<(), Box<dyn std::error::Error>> {
    let one_at_a_time = RegisterOptions {
        max_concurrent: 1,
        ..RegisterOptions::default()
    };
    hosts[0].node.register(now(), "demo.echo", one_at_a_time)?;
    // Registering twice is an error of its own: one registration per name.
    let again = hosts[0]
        .node
        .register(now(), "demo.echo", RegisterOptions::default());
    if again != Err(RpcError::AlreadyRegistered("demo.echo".into())) {
        return Err(format!("a second registration was not refused: {again:?}").into());
    }
    hosts[0].drain(log)?;
    // The caller must see the provider record before it calls.
    let provider_record = RecordKey::new(realm, RecordKind::Rpc, "demo.echo");
    wait_for_record(hosts, log, 1, provider_record)?;

    let timeout = Duration::from_secs(3);
    let [first, second] = [b"one", b"two"].map(|payload| {
        let payload = Bytes::from_static(payload);
        let call = hosts[1]
            .node
            .call(now(), "demo.echo", payload, timeout, CallOptions::default());
        call.map_err(|e| format!("B could not call: {e}"))
    });
    let (first, second) = (first?, second?);
    hosts[1].drain(log)?;
    // A's application gets the request the node let through ...
    let (request, payload) = run_until(hosts, log, |log| {
        log.take_rpc("A", |e| match e {
            RpcEvent::Request { id, payload, .. } => Some((*id, payload.clone())),
            _ => None,
        })
    })?;
    // ... and, while it holds that one, B's other call comes back
    // `overloaded` from A's node without reaching the application.
    let refused = run_until(hosts, log, |log| {
        log.take_rpc("B", |e| match e {
            RpcEvent::Completed { call, result } if *call == second || *call == first => {
                Some((*call, result.clone()))
            }
            _ => None,
        })
    })?;
    let refused_ok = matches!(refused.1, Err(RpcError::Overloaded { provider: Some(p), .. }) if p == hosts[0].node.node_id());
    if !refused_ok {
        return Err(format!("expected the other call overloaded, got {refused:?}").into());
    }
    println!("A refused one call past its limit of 1: {:?}", refused.1);
    let mut echo = b"echo:".to_vec();
    echo.extend_from_slice(&payload);
    hosts[0].node.reply(now(), request, Ok(Bytes::from(echo)))?;
    hosts[0].drain(log)?;
    let answered = if refused.0 == first { second } else { first };
    let reply = run_until(hosts, log, |log| {
        log.take_rpc("B", |e| match e {
            RpcEvent::Completed { call, result } if *call == answered => Some(result.clone()),
            _ => None,
        })
    })?;
    let reply = reply.map_err(|e| format!("B's call failed: {e}"))?;
    println!("B got {:?}", String::from_utf8_lossy(&reply));
    if !reply.starts_with(b"echo:") {
        return Err("B did not get the echo".into());
    }
    Ok(())
}

/// B subscribes twice to `news.*` (one subscription on the wire), A
/// publishes, B's application hands the message to both subscribers; the
/// subscription goes with the last of them.
fn share_a_subscription(
    hosts: &mut [Host; 2],
    log: &mut Log,
    realm: &Realm,
) -> Result<(), Box<dyn std::error::Error>> {
    let news = Pattern::new("news.*")?;
    let reader = hosts[1].node.subscribe(now(), news.clone())?;
    let archive = hosts[1].node.subscribe(now(), news)?;
    hosts[1].drain(log)?;
    // One subscriber record for both: one pattern under the prefix `news`;
    // the publisher must see it before it publishes.
    let subscriber_record = RecordKey::new(realm, RecordKind::Topic, "news");
    wait_for_record(hosts, log, 0, subscriber_record)?;

    let topic = Topic::new("news.today")?;
    hosts[0]
        .node
        .publish(now(), topic.clone(), Bytes::from_static(b"all quiet"))?;
    hosts[0].drain(log)?;
    let arrived = run_until(hosts, log, |log| {
        log.take_event("B", |e| match e {
            Event::PubSub(PubSubEvent::Message { topic, payload, .. }) => {
                Some((topic.clone(), payload.clone()))
            }
            _ => None,
        })
    })?;
    // The fan-out: the node names the local subscribers the message is for.
    let for_whom: Vec<_> = hosts[1].node.subscribers_of(&arrived.0).collect();
    println!(
        "B got {:?} on {} once, for subscribers {for_whom:?}",
        String::from_utf8_lossy(&arrived.1),
        arrived.0
    );
    if for_whom != [reader, archive] {
        return Err("the message was not for both subscribers".into());
    }
    // The first unsubscribe keeps the subscription; the last withdraws it.
    hosts[1].node.unsubscribe(now(), reader);
    let still = hosts[1].node.pubsub().subscribed();
    hosts[1].node.unsubscribe(now(), archive);
    let after = hosts[1].node.pubsub().subscribed();
    hosts[1].drain(log)?;
    println!("B subscribed after the first unsubscribe: {still}, after the last: {after}");
    if !still || after {
        return Err("the subscription did not follow its subscribers".into());
    }
    Ok(())
}
