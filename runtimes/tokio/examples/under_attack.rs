//! An honest caller's RPC latency while a node is under attack, over real
//! UDP on loopback:
//!
//! ```text
//! cargo run --release -p macula-tokio --example under_attack
//! ```
//!
//! The victim is a `MaculaNode` in a child process (this same program, run
//! as `under_attack victim`), so its peak RSS is its own: the parent reads
//! the child's `VmHWM` from `/proc/<pid>/status` and resets it
//! (`/proc/<pid>/clear_refs`) before each phase. The victim serves
//! `svc.echo`, subscribes to `news.#`, relays, and runs with a memory budget
//! of [`BUDGET`] (`config.node.admission.memory_budget`).
//!
//! In the parent, an honest `MaculaNode` calls `svc.echo` in a loop, one
//! call after another, for [`PHASE`] without attack (the baseline), then
//! during each flood, each from attackers with identities of their own
//! (plain quinn, mutual TLS as the protocol asks, then whatever bytes they
//! like). Attackers and the honest caller run on separate tokio runtimes of
//! one worker thread each; every process shares the machine's cores, so an
//! attacker's own CPU use shows in the figures too. The floods:
//!
//! - handshake: handshakes from 64 loopback addresses (127.0.1.x), a fresh
//!   identity each, that never send CONNECT;
//! - ping: PINGs on the control stream, PONGs never read;
//! - publish: PUBLISH frames on a stream, on a topic the victim subscribes
//!   to, without any SUBSCRIBE asking for them;
//! - store: fresh identities each STORE a 16 KiB record with ttl `u32::MAX`
//!   under the key of `svc.echo`;
//! - relay: one attacker reserves on the victim, another opens a circuit to
//!   it and sends 1,200-byte packets through it as fast as it can.
//!
//! Printed: a table of p50, p99, their ratio to the baseline's p99, failed
//! calls and the victim's peak RSS beside its budget; the issue's targets are
//! p99 under attack <= 3x baseline and peak RSS <= budget + 16 MiB.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use macula::dht::Contact;
use macula::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use macula::record::SignedRecord;
use macula::relay::encode_frame;
use macula::tls::{NodeTls, PeerVerification, WallClock};
use macula::wire::{self, HEADER_LEN, Limits, Message};
use macula_tokio::{
    CallOptions, HandlerError, MaculaConfig, MaculaNode, ProcedureOptions, Request,
};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

/// The victim's node-wide memory budget.
const BUDGET: usize = 64 << 20;
/// How long each phase (baseline, each flood) measures.
const PHASE: Duration = Duration::from_secs(4);
/// How long a flood runs before measuring starts.
const WARM_UP: Duration = Duration::from_millis(500);
/// A call slower than this counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The procedure the honest caller calls.
const PROCEDURE: &str = "svc.echo";

fn realm() -> Realm {
    Realm::new("io.macula.attack").unwrap()
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("victim") {
        victim();
        return;
    }
    let (mut child, contact) = spawn_victim();
    let honest_rt = runtime();
    let attack_rt = attack_runtime();
    let caller = honest_rt.block_on(honest_caller(contact.clone()));
    let target = Target {
        addr: contact.addrs[0],
        id: contact.id,
    };

    println!(
        "victim pid {} at {}, memory budget {} MiB; {} s per phase",
        child.id(),
        target.addr,
        BUDGET >> 20,
        PHASE.as_secs()
    );
    let mut rows = Vec::new();
    let floods: [(&str, Option<Flood>); 6] = [
        ("none (baseline)", None),
        ("handshake", Some(handshake_flood)),
        ("ping", Some(ping_flood)),
        ("publish", Some(publish_flood)),
        ("store", Some(store_flood)),
        ("relay", Some(relay_flood)),
    ];
    for (name, flood) in floods {
        reset_peak(&child);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let attack = flood.map(|flood| {
            attack_rt.spawn(flood(
                target,
                Attack {
                    stop: stop.clone(),
                    sent: sent.clone(),
                },
            ))
        });
        std::thread::sleep(WARM_UP);
        let cpu_before = cpu_ticks(&child);
        let latencies = honest_rt.block_on(measure(&caller));
        let cpu = cpu_ticks(&child).saturating_sub(cpu_before);
        stop.store(true, Ordering::Relaxed);
        if let Some(attack) = attack {
            let ended =
                attack_rt.block_on(async { timeout(Duration::from_secs(10), attack).await });
            if !matches!(ended, Ok(Ok(()))) {
                eprintln!("{name}: the attack did not end cleanly: {ended:?}");
            }
        }
        let peak = peak_rss(&child);
        rows.push(Row {
            name,
            latencies,
            cpu,
            peak,
            sent: sent.load(Ordering::Relaxed),
        });
        // Let the victim close what the attack left.
        std::thread::sleep(Duration::from_millis(500));
    }
    print_table(&rows);
    drop(child.stdin.take());
    let _ = child.wait();
}

/// A tokio runtime of one worker thread.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The attackers' runtime: one worker thread at the lowest CPU priority
/// (nice 19), so that on one machine it takes only the CPU time the victim
/// and the honest caller leave idle, as an attacker on a host of its own
/// would, and the table measures the victim's defences rather than the
/// attacker's share of the machine. The flood is as fast as that time
/// allows (the "attack units sent" column).
fn attack_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(lowest_priority)
        .enable_all()
        .build()
        .unwrap()
}

/// Gives the calling thread the lowest CPU priority (nice 19).
fn lowest_priority() {
    // SAFETY: gettid and setpriority take and return plain integers; on
    // Linux, PRIO_PROCESS with a thread id sets that one thread's nice value.
    let failed = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) != 0
    };
    if failed {
        eprintln!("cannot lower the attackers' priority: they compete for the CPU");
    }
}

// ---------------------------------------------------------------------------
// The victim (child process)

/// Runs the victim until its stdin closes; prints `<addr> <node id>` first.
fn victim() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (node, _registration) = rt.block_on(async {
        let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
        config.node.admission.memory_budget = BUDGET;
        config.node.relay.mode = macula::relay::RelayMode::Always;
        let node = MaculaNode::bind(config).await.unwrap();
        let registration = node
            .register(
                PROCEDURE,
                ProcedureOptions::default(),
                |request: Request| async move { Ok::<_, HandlerError>(request.payload) },
            )
            .await
            .unwrap();
        let mut news = node.subscribe("news.#").await.unwrap();
        tokio::spawn(async move { while news.recv().await.is_some() {} });
        (node, registration)
    });
    println!("{} {}", node.local_addr(), node.node_id());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Starts the victim and reads its contact.
fn spawn_victim() -> (Child, Contact) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("victim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (addr, id) = line.trim().split_once(' ').expect("address and node id");
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap();
    }
    let contact = Contact::new(NodeId::from_bytes(bytes), addr.parse().unwrap());
    (child, contact)
}

/// Forgets the child's peak RSS so far (`VmHWM` starts again from `VmRSS`).
fn reset_peak(child: &Child) {
    let path = format!("/proc/{}/clear_refs", child.id());
    if let Err(error) = std::fs::write(&path, "5") {
        eprintln!("cannot reset the peak RSS ({path}: {error}): peaks accumulate");
    }
}

/// The child's CPU time so far (user and system), in clock ticks
/// (`/proc/<pid>/stat` fields 14 and 15, 100 a second).
fn cpu_ticks(child: &Child) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // The command name may hold spaces: count fields after its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is the first after ')', so field n is at n - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// The child's peak RSS (`VmHWM`) in bytes.
fn peak_rss(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------
// The honest caller

/// A node that found the victim's `svc.echo` and called it once.
async fn honest_caller(victim: Contact) -> MaculaNode {
    let config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    let caller = MaculaNode::bind(config).await.unwrap();
    caller.bootstrap(vec![victim]).await.unwrap();
    let key = RecordKey::new(&realm(), RecordKind::Rpc, PROCEDURE);
    while caller
        .query(key, Duration::from_secs(2))
        .await
        .unwrap()
        .records
        .is_empty()
    {
        sleep(Duration::from_millis(20)).await;
    }
    echo(&caller).await.expect("the first call is answered");
    caller
}

async fn echo(caller: &MaculaNode) -> Result<(), ()> {
    let options = CallOptions::with_timeout(CALL_TIMEOUT);
    match caller
        .call(PROCEDURE, Bytes::from_static(b"ping"), options)
        .await
    {
        Ok(reply) if reply == Bytes::from_static(b"ping") => Ok(()),
        _ => Err(()),
    }
}

/// What one phase measured.
struct Latencies {
    /// Round trips of the calls answered.
    answered: Vec<Duration>,
    /// Calls that failed or timed out.
    failed: usize,
}

/// Calls in a loop for [`PHASE`].
#[allow(clippy::disallowed_methods)] // a benchmark reads the clock
async fn measure(caller: &MaculaNode) -> Latencies {
    let mut answered = Vec::new();
    let mut failed = 0;
    let start = Instant::now();
    while start.elapsed() < PHASE {
        let began = Instant::now();
        match echo(caller).await {
            Ok(()) => answered.push(began.elapsed()),
            Err(()) => failed += 1,
        }
    }
    answered.sort();
    Latencies { answered, failed }
}

// ---------------------------------------------------------------------------
// The report

struct Row {
    name: &'static str,
    latencies: Latencies,
    /// The victim's CPU time while measuring, in clock ticks.
    cpu: u64,
    peak: u64,
    sent: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    let at = ((last as f64) * p).round() as usize;
    sorted.get(at).copied()
}

fn print_table(rows: &[Row]) {
    let baseline = rows
        .first()
        .and_then(|row| percentile(&row.latencies.answered, 0.99))
        .unwrap_or(Duration::MAX);
    let ms =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.3}", d.as_secs_f64() * 1e3));
    println!();
    println!(
        "| flood | calls | failed | p50 ms | p99 ms | p99 / baseline p99 | victim CPU % | peak RSS MiB | budget MiB | attack units sent |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let p99 = percentile(&row.latencies.answered, 0.99);
        let ratio = p99.map_or("-".to_owned(), |p| {
            format!("{:.2}", p.as_secs_f64() / baseline.as_secs_f64())
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {} |",
            row.name,
            row.latencies.answered.len() + row.latencies.failed,
            row.latencies.failed,
            ms(percentile(&row.latencies.answered, 0.5)),
            ms(p99),
            ratio,
            row.cpu as f64 / PHASE.as_secs_f64(),
            row.peak as f64 / f64::from(1 << 20),
            BUDGET >> 20,
            row.sent,
        );
    }
    println!();
    println!(
        "targets: p99 under attack <= 3x baseline p99; peak RSS <= budget + 16 MiB ({} MiB)",
        (BUDGET >> 20) + 16
    );
    println!(
        "attack units: handshakes completed, PINGs, PUBLISHes, STOREs, circuit packets written"
    );
    println!("victim CPU: the victim's user and system time while measuring, in % of one core");
}

// ---------------------------------------------------------------------------
// The attackers: plain quinn clients with identities of their own

/// The victim.
#[derive(Clone, Copy)]
struct Target {
    addr: SocketAddr,
    id: NodeId,
}

/// An attack's controls: when to stop, and how much it sent.
struct Attack {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl Attack {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
}

type Flood = fn(Target, Attack) -> Boxed;

/// A flood's future.
type Boxed = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fresh identity, different for every `n`.
fn identity(n: u64) -> Identity {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    seed[8..16].copy_from_slice(&unix_ms().to_be_bytes());
    Identity::from_seed(seed)
}

#[allow(clippy::disallowed_methods)] // certificates and records carry wall-clock time
fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// A quinn client endpoint on `ip`, any port.
fn endpoint(ip: Ipv4Addr) -> quinn::Endpoint {
    quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap()
}

/// A handshake with the victim as `identity` (mutual TLS, nothing on any
/// stream yet).
async fn connect(
    endpoint: &quinn::Endpoint,
    target: Target,
    identity: &Identity,
) -> Option<quinn::Connection> {
    let clock = WallClock::at(unix_ms() / 1000);
    let tls = NodeTls::self_signed(identity, PeerVerification::Identity, clock).ok()?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config(target.id)).ok()?;
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let connecting = endpoint.connect_with(config, target.addr, "macula").ok()?;
    timeout(Duration::from_secs(5), connecting).await.ok()?.ok()
}

/// Connects as `identity`, opens the control stream and writes an honest
/// CONNECT on it.
async fn join(
    endpoint: &quinn::Endpoint,
    target: Target,
    identity: &Identity,
) -> Option<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let conn = connect(endpoint, target, identity).await?;
    let (mut send, recv) = conn.open_bi().await.ok()?;
    let hello = Message::from(wire::Connect {
        node_id: identity.node_id(),
        realm: realm(),
        capabilities: wire::Capabilities::NONE,
        listen_addrs: Vec::new(),
    });
    send.write_all(&encode(&hello)).await.ok()?;
    Some((conn, send, recv))
}

fn encode(message: &Message) -> Vec<u8> {
    message.to_vec(&Limits::default()).unwrap()
}

/// Reads one frame from `recv`.
async fn read_message(recv: &mut quinn::RecvStream) -> Option<Message> {
    let mut frame = vec![0u8; HEADER_LEN];
    recv.read_exact(&mut frame).await.ok()?;
    let header = wire::Header::parse(frame.first_chunk()?, &Limits::default()).ok()?;
    frame.resize(header.frame_len(), 0);
    recv.read_exact(&mut frame[HEADER_LEN..]).await.ok()?;
    match wire::decode(&frame, &Limits::default()).ok()? {
        wire::Decoded::Complete(message, _) => Some(message),
        wire::Decoded::NeedMore(_) => None,
    }
}

/// Runs `fut` to its end, or until the attack stops (then `None`; a write
/// cut short leaves a partial frame, which no longer matters).
async fn unless_stopped<F: Future>(attack: &Attack, fut: F) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = sleep(Duration::from_millis(50)) => {
                if !attack.running() {
                    return None;
                }
            }
        }
    }
}

/// Writes the batches `batch` makes on `send` until the attack stops or
/// the stream fails (the error is returned); each batch counts `units`.
async fn pour(
    attack: &Attack,
    send: &mut quinn::SendStream,
    units: u64,
    mut batch: impl FnMut() -> Vec<u8>,
) -> Option<quinn::WriteError> {
    while attack.running() {
        match unless_stopped(attack, send.write_all(&batch())).await? {
            Ok(()) => attack.count(units),
            Err(error) => return Some(error),
        }
    }
    None
}

/// The i-th attacker address: 127.0.1.(1 + i % 64).
fn attacker_ip(i: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 1 + (i % 64) as u8)
}

/// Runs `job(endpoint, n)` for n = 1, 2, ... with `in_flight` at once, over
/// endpoints on 64 attacker addresses, until the attack stops; counts and
/// keeps what each job yields.
async fn crowd<T, F>(
    attack: &Attack,
    in_flight: usize,
    job: impl Fn(quinn::Endpoint, u64) -> F,
) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = Option<T>> + Send + 'static,
{
    let endpoints: Vec<quinn::Endpoint> = (0..64).map(|i| endpoint(attacker_ip(i))).collect();
    let mut kept = Vec::new();
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    while attack.running() {
        while tasks.len() < in_flight {
            n += 1;
            tasks.spawn(job(endpoints[(n % 64) as usize].clone(), n));
        }
        if let Some(Ok(Some(done))) = tasks.join_next().await {
            attack.count(1);
            kept.push(done);
        }
    }
    tasks.abort_all();
    for endpoint in endpoints {
        endpoint.close(0u32.into(), b"");
    }
    kept
}

/// Handshakes from 64 addresses, 32 in flight, each under a fresh identity,
/// none ever sending CONNECT; the connections are held until the end.
fn handshake_flood(target: Target, attack: Attack) -> Boxed {
    Box::pin(async move {
        let held = crowd(&attack, 32, move |endpoint, n| async move {
            connect(&endpoint, target, &identity(n)).await
        })
        .await;
        drop(held);
    })
}

/// One member writing PINGs on its control stream as fast as flow control
/// lets it; it never reads a PONG.
fn ping_flood(target: Target, attack: Attack) -> Boxed {
    Box::pin(async move {
        let endpoint = endpoint(attacker_ip(0));
        let Some((_conn, mut control, _pongs)) = join(&endpoint, target, &identity(1)).await else {
            eprintln!("ping flood: could not join");
            return;
        };
        let mut next = 0u64;
        pour(&attack, &mut control, 1_000, || {
            next += 1_000;
            (next - 1_000..next)
                .flat_map(|request_id| encode(&Message::from(wire::Ping { request_id })))
                .collect()
        })
        .await;
        endpoint.close(0u32.into(), b"");
    })
}

/// One member writing 1 KiB PUBLISH frames on `news.flood` on a stream of
/// its own; the victim subscribes to `news.#` but never asked this peer.
fn publish_flood(target: Target, attack: Attack) -> Boxed {
    Box::pin(async move {
        let endpoint = endpoint(attacker_ip(1));
        let Some((conn, _control, _recv)) = join(&endpoint, target, &identity(2)).await else {
            eprintln!("publish flood: could not join");
            return;
        };
        let Ok((mut send, _replies)) = conn.open_bi().await else {
            return;
        };
        let payload = Bytes::from(vec![0x42; 1024]);
        let epoch = unix_ms() * 1000;
        let mut sequence = 0u64;
        pour(&attack, &mut send, 64, || {
            let mut frames = Vec::new();
            for _ in 0..64 {
                sequence += 1;
                frames.extend(encode(&Message::from(wire::Publish {
                    message_id: sequence,
                    epoch,
                    sequence,
                    topic: "news.flood".into(),
                    payload: payload.clone(),
                })));
            }
            frames
        })
        .await;
        endpoint.close(0u32.into(), b"");
    })
}

/// Fresh identities, 16 at a time from 64 addresses, each joining and
/// storing a 16 KiB record with ttl `u32::MAX` under `svc.echo`'s key.
fn store_flood(target: Target, attack: Attack) -> Boxed {
    Box::pin(async move {
        let key = RecordKey::new(&realm(), RecordKind::Rpc, PROCEDURE);
        let value = Bytes::from(vec![0x17; 16 << 10]);
        crowd(&attack, 16, move |endpoint, n| {
            let value = value.clone();
            async move {
                let identity = identity(1_000_000 + n);
                let (conn, _control, _recv) = join(&endpoint, target, &identity).await?;
                let (mut send, mut recv) = conn.open_bi().await.ok()?;
                let record = SignedRecord::sign(&identity, key, value, unix_ms(), u32::MAX);
                let store = Message::from(wire::Store {
                    request_id: 1,
                    record: Box::new(record),
                });
                send.write_all(&encode(&store)).await.ok()?;
                let ack = timeout(Duration::from_secs(2), read_message(&mut recv)).await;
                conn.close(0u32.into(), b"");
                ack.ok().flatten()
            }
        })
        .await;
    })
}

/// One member reserves on the victim and reads whatever reaches it;
/// another opens a circuit to it and writes 1,200-byte packets through it.
fn relay_flood(target: Target, attack: Attack) -> Boxed {
    Box::pin(async move {
        let (a, b) = (endpoint(attacker_ip(2)), endpoint(attacker_ip(3)));
        let (reserver, dialer) = (identity(3), identity(4));
        let Some((reserved, _control)) = reserve(&a, target, &reserver).await else {
            eprintln!("relay flood: no reservation");
            return;
        };
        let sink = tokio::spawn(async move {
            while let Ok((send, mut recv)) = reserved.accept_bi().await {
                tokio::spawn(async move {
                    let _open = send; // a finished side would end the circuit
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(Some(_)) = recv.read(&mut buf).await {}
                });
            }
        });
        let Some((conn, _control, _events)) = join(&b, target, &dialer).await else {
            eprintln!("relay flood: the dialer could not join");
            return;
        };
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            return;
        };
        let open = Message::from(wire::CircuitOpen {
            request_id: 1,
            target: reserver.node_id(),
        });
        if send.write_all(&encode(&open)).await.is_err() {
            return;
        }
        match read_message(&mut recv).await {
            Some(Message::CircuitStatus(status)) if status.status == wire::RelayStatus::Ok => {}
            other => {
                eprintln!("relay flood: no circuit: {other:?}");
                return;
            }
        }
        let packet = encode_frame(&[0xc3; 1200]).unwrap();
        let frames: Vec<u8> = (0..64).flat_map(|_| packet.iter().copied()).collect();
        if let Some(error) = pour(&attack, &mut send, 64, || frames.clone()).await {
            let closed = conn.close_reason();
            eprintln!("relay flood: the circuit ended: {error} (connection: {closed:?})");
        }
        sink.abort();
        a.close(0u32.into(), b"");
        b.close(0u32.into(), b"");
    })
}

/// Joins as `identity` and takes a relay reservation on the victim;
/// returns the connection and its control stream (kept open).
async fn reserve(
    endpoint: &quinn::Endpoint,
    target: Target,
    identity: &Identity,
) -> Option<(quinn::Connection, (quinn::SendStream, quinn::RecvStream))> {
    let (conn, control, events) = join(endpoint, target, identity).await?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    let reserve = Message::from(wire::RelayReserve { request_id: 1 });
    send.write_all(&encode(&reserve)).await.ok()?;
    match read_message(&mut recv).await? {
        Message::RelayReserveStatus(status) if status.status == wire::RelayStatus::Ok => {
            Some((conn, (control, events)))
        }
        other => {
            eprintln!("relay flood: reservation refused: {other:?}");
            None
        }
    }
}
