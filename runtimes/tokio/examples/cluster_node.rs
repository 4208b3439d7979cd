//! One node of the chaos cluster (`tests/cluster/run`) and its workload, logging a history.
//!
//! ```text
//! cluster_node clock
//!     prints CLOCK_MONOTONIC in microseconds (the script stamps its faults with it)
//! cluster_node node --dir DIR --index N --bind ADDR --announce ADDR [--seed ID@ADDR]...
//!                   [--relay] [--provide] [--call-every-ms MS] [--publish-every-ms MS]
//!                   [--subscribe PATTERN]...
//!     runs a mesh node until SIGTERM (a graceful stop) or SIGKILL
//! ```
//!
//! The node keeps its identity in `DIR/identity.pem` (created on the first start) and
//! writes its node id to `DIR/id`; it joins through the seeds and the peers saved in
//! `DIR/peers`, which it rewrites every 20 s, so a restart rejoins through the peers it
//! knew. `DIR/incarnation` counts its starts: request ids and publication numbers carry
//! it, so they stay unique across restarts.
//!
//! Workload: `--provide` serves `work.idem` (registered idempotent) and `work.once` (not
//! idempotent); `--call-every-ms` calls them in turn with a request id
//! (`N.INCARNATION.SEQ`) as payload; `--publish-every-ms` publishes numbered messages on
//! `t.pN.x`; each `--subscribe` pattern (exact, `*`, `#`) is subscribed to.
//!
//! Every step is one JSON line on stdout with `t` (CLOCK_MONOTONIC µs, shared by every
//! namespace of the host, so it orders the events of all processes), `n` (the node's
//! cluster index) and `ev`:
//! `start` (with `id`, the node id), `joined`, `call`/`reply` (`rid`, `proc`; a reply has
//! `by`, the provider's index, or `err`, the typed error), `exec` (provider side: `rid`,
//! `proc`), `sub` (`pat`), `pub` (`topic`, `inc`, `seq`), `dlv` (`pat`, `from`, `inc`,
//! `seq`), `conn`/`path` (`peer`, `kind`: direct or relayed), `disc` (`peer`, `reason`),
//! `nat` (a discovery `report`), `relay` (an `event` of our reservations and circuits),
//! `lookup` (a DHT lookup that went to the network: `op` find_node or find_value, `hops`,
//! the discovery depth of the closest node that answered, -1 if none did; `ms`, its
//! duration; `timed_out`), `stats` (every 5 s: counters, caches, routing table,
//! connections), `subs` (a publisher's view of the subscriber records under `t`, every
//! 5 s: `subs`, `answered`, `cached`), `stop`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use macula::dht::{Contact, DhtEvent, QueryStats};
use macula::directory::AnnounceFailed;
use macula::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use macula::node::{Event, load_peers, save_peers};
use macula::path::PathKind;
use macula::pubsub::PubSubEvent;
use macula::relay::RelayMode;
use macula::rpc::RpcEvent;
use macula_tokio::{CallOptions, MaculaConfig, MaculaNode, ProcedureOptions, Request};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

/// How long a call may take before it ends with a typed timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the peers file is rewritten.
const PEERS_SAVE_EVERY: Duration = Duration::from_secs(20);

/// How often a node logs its counters (`stats`).
const STATS_EVERY: Duration = Duration::from_secs(5);

/// How long joining retries before the node gives up and runs alone.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// CLOCK_MONOTONIC in microseconds: the same clock in every network namespace.
fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000
}

/// The history: one JSON line per event, stamped and signed with the node's index.
#[derive(Clone, Copy)]
struct History {
    index: u32,
}

impl History {
    /// Prints `{"t":..,"n":..,"ev":EV,FIELDS}`; `fields` is JSON members (or empty).
    fn log(self, ev: &str, fields: &str) {
        let sep = if fields.is_empty() { "" } else { "," };
        println!(
            "{{\"t\":{},\"n\":{},\"ev\":\"{ev}\"{sep}{fields}}}",
            mono_us(),
            self.index
        );
    }
}

/// A JSON string literal of `text` (the values logged here need no escapes but quotes).
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace(['"', '\\'], "_"))
}

/// The first 8 hex digits of a node id: enough to tell the cluster's nodes apart.
fn short(id: &NodeId) -> String {
    id.to_string()[..8].to_owned()
}

struct Args {
    dir: PathBuf,
    index: u32,
    bind: SocketAddr,
    announce: SocketAddr,
    seeds: Vec<Contact>,
    relay: bool,
    provide: bool,
    call_every: Option<Duration>,
    publish_every: Option<Duration>,
    subscribe: Vec<String>,
}

fn parse_seed(text: &str) -> Result<Contact, String> {
    let (id, addr) = text.split_once('@').ok_or("a seed is ID@ADDR")?;
    Ok(Contact {
        id: id.parse().map_err(|_| format!("bad seed id {id}"))?,
        addrs: vec![
            addr.parse()
                .map_err(|_| format!("bad seed address {addr}"))?,
        ]
        .into_iter()
        .collect(),
    })
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut dir, mut index, mut bind, mut announce) = (None, None, None, None);
    let mut args = Args {
        dir: PathBuf::new(),
        index: 0,
        bind: "0.0.0.0:0".parse().map_err(|_| "bind")?,
        announce: "0.0.0.0:0".parse().map_err(|_| "announce")?,
        seeds: Vec::new(),
        relay: false,
        provide: false,
        call_every: None,
        publish_every: None,
        subscribe: Vec::new(),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |what: &str| format!("bad {what}");
        let millis = |text: String| -> Result<Duration, String> {
            Ok(Duration::from_millis(
                text.parse().map_err(|_| bad("milliseconds"))?,
            ))
        };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--index" => index = Some(value()?.parse().map_err(|_| bad("--index"))?),
            "--bind" => bind = Some(value()?.parse().map_err(|_| bad("--bind"))?),
            "--announce" => announce = Some(value()?.parse().map_err(|_| bad("--announce"))?),
            "--seed" => args.seeds.push(parse_seed(&value()?)?),
            "--relay" => args.relay = true,
            "--provide" => args.provide = true,
            "--call-every-ms" => args.call_every = Some(millis(value()?)?),
            "--publish-every-ms" => args.publish_every = Some(millis(value()?)?),
            "--subscribe" => args.subscribe.push(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    args.dir = dir.ok_or("--dir")?;
    args.index = index.ok_or("--index")?;
    args.bind = bind.ok_or("--bind")?;
    args.announce = announce.ok_or("--announce")?;
    Ok(args)
}

/// The identity in `dir/identity.pem`, created on the first start; its id goes to `dir/id`.
fn identity(dir: &Path) -> Result<Identity, String> {
    let path = dir.join("identity.pem");
    let identity = if path.exists() {
        macula::tls::read_identity(&path).map_err(|e| e.to_string())?
    } else {
        let fresh = macula_tokio::random::identity().map_err(|e| e.to_string())?;
        std::fs::write(&path, macula::tls::identity_to_pem(&fresh)).map_err(|e| e.to_string())?;
        fresh
    };
    std::fs::write(dir.join("id"), identity.node_id().to_string()).map_err(|e| e.to_string())?;
    Ok(identity)
}

/// Counts this start in `dir/incarnation` and returns the count.
fn incarnation(dir: &Path) -> Result<u64, String> {
    let path = dir.join("incarnation");
    let last: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(&path, (last + 1).to_string()).map_err(|e| e.to_string())?;
    Ok(last + 1)
}

/// The peers saved by an earlier run, if any (a damaged file counts as none).
fn saved_peers(dir: &Path) -> Vec<Contact> {
    std::fs::read_to_string(dir.join("peers"))
        .ok()
        .and_then(|text| load_peers(&text).ok())
        .unwrap_or_default()
}

/// Saves the closest live peers to `dir/peers` (written aside, then renamed).
async fn save(node: &MaculaNode, dir: &Path) {
    let Ok(found) = node.find_node(node.node_id()).await else {
        return;
    };
    let peers: Vec<&Contact> = found
        .closest
        .iter()
        .filter(|c| c.id != node.node_id())
        .collect();
    let partial = dir.join("peers.partial");
    if std::fs::write(&partial, save_peers(peers.iter().copied())).is_ok() {
        let _ = std::fs::rename(&partial, dir.join("peers"));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    // A debugging aid: `MACULA_LOG=macula::node=debug` logs to stderr (the run
    // script keeps it as the node's `stderr` file).
    if let Ok(filter) = std::env::var("MACULA_LOG") {
        let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let mut it = std::env::args().skip(1);
    match it.next().as_deref() {
        Some("clock") => {
            println!("{}", mono_us());
            Ok(())
        }
        Some("node") => run(parse(it)?).await,
        _ => Err("usage: cluster_node clock | node --dir DIR --index N ...".into()),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let history = History { index: args.index };
    let inc = incarnation(&args.dir)?;
    let realm = Realm::new("io.macula.cluster").map_err(|e| e.to_string())?;
    let mut config = MaculaConfig::new(realm.clone(), args.bind);
    config.identity = Some(identity(&args.dir)?);
    config.node.listen_addrs = vec![args.announce];
    if args.relay {
        config.node.relay.mode = RelayMode::Always;
    }
    let node = Arc::new(MaculaNode::bind(config).await.map_err(|e| e.to_string())?);
    history.log(
        "start",
        &format!(
            "\"id\":{},\"inc\":{inc},\"pid\":{}",
            quoted(&node.node_id().to_string()),
            std::process::id()
        ),
    );
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut events = node.events();
    let mut peers = saved_peers(&args.dir);
    peers.extend(args.seeds.iter().cloned());
    peers.retain(|c| c.id != node.node_id());
    if !peers.is_empty() {
        let joining = join(&node, &peers, history);
        tokio::select! {
            _ = term.recv() => return stop(&node, history, JoinSet::new()).await,
            () = joining => {}
        }
    }
    let _served = if args.provide {
        Some(serve(&node, args.index, history).await?)
    } else {
        None
    };
    let mut tasks = JoinSet::new();
    for pattern in &args.subscribe {
        let mut subscription = node.subscribe(pattern).await.map_err(|e| e.to_string())?;
        history.log("sub", &format!("\"pat\":{}", quoted(pattern)));
        let pattern = pattern.clone();
        tasks.spawn(async move {
            while let Some(publication) = subscription.recv().await {
                let text = String::from_utf8_lossy(&publication.payload).into_owned();
                history.log(
                    "dlv",
                    &format!(
                        "\"pat\":{},\"topic\":{},\"msg\":{}",
                        quoted(&pattern),
                        quoted(publication.topic.as_str()),
                        quoted(&text)
                    ),
                );
            }
        });
    }
    let mut save_tick = tokio::time::interval(PEERS_SAVE_EVERY);
    let mut stats_tick = tokio::time::interval(STATS_EVERY);
    let mut call_tick = tokio::time::interval(args.call_every.unwrap_or(Duration::MAX / 4));
    let mut publish_tick = tokio::time::interval(args.publish_every.unwrap_or(Duration::MAX / 4));
    let (mut calls, mut published) = (0u64, 0u64);
    let mut calling = JoinSet::new();
    let topic = format!("t.p{}.x", args.index);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            event = events.recv() => match event {
                Some(event) => log_event(history, &event),
                None => return Err("the node stopped".into()),
            },
            _ = save_tick.tick() => save(&node, &args.dir).await,
            _ = stats_tick.tick() => {
                log_stats(&node, history).await;
                if args.publish_every.is_some() {
                    calling.spawn(log_subscribers(Arc::clone(&node), realm.clone(), history));
                }
            }
            _ = call_tick.tick(), if args.call_every.is_some() => {
                calls += 1;
                let procedure = if calls % 2 == 0 { "work.idem" } else { "work.once" };
                let rid = format!("{}.{inc}.{calls}", args.index);
                calling.spawn(call(Arc::clone(&node), procedure, rid, history));
            }
            _ = publish_tick.tick(), if args.publish_every.is_some() => {
                published += 1;
                let message = format!("{}.{inc}.{published}", args.index);
                let fields = format!("\"topic\":{},\"msg\":{}", quoted(&topic), quoted(&message));
                match node.publish(&topic, Bytes::from(message)).await {
                    Ok(_) => history.log("pub", &fields),
                    Err(e) => history.log("puberr", &format!("{fields},\"err\":{}", quoted(&e.to_string()))),
                }
            }
            Some(_) = calling.join_next(), if !calling.is_empty() => {}
        }
    }
    // A graceful stop: the calls under way end (each within its timeout) first.
    while calling.join_next().await.is_some() {}
    stop(&node, history, tasks).await
}

/// Joins through `peers`, retrying until one answers or [`JOIN_PATIENCE`] passes.
async fn join(node: &MaculaNode, peers: &[Contact], history: History) {
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok(table)) =
            tokio::time::timeout(Duration::from_secs(5), node.bootstrap(peers.to_vec())).await
            && table > 0
        {
            history.log("joined", &format!("\"table\":{table}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    history.log("join_failed", "");
}

/// Serves `work.idem` and `work.once`; each execution is logged with its request id.
async fn serve(
    node: &MaculaNode,
    index: u32,
    history: History,
) -> Result<Vec<macula_tokio::Registration>, String> {
    let mut served = Vec::new();
    for (procedure, idempotent) in [("work.idem", true), ("work.once", false)] {
        let options = ProcedureOptions {
            idempotent,
            ..ProcedureOptions::default()
        };
        let handler = move |request: Request| async move {
            let rid = String::from_utf8_lossy(&request.payload).into_owned();
            history.log(
                "exec",
                &format!("\"rid\":{},\"proc\":\"{procedure}\"", quoted(&rid)),
            );
            Ok(Bytes::from(index.to_string()))
        };
        served.push(
            node.register(procedure, options, handler)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    history.log("serve", "");
    Ok(served)
}

/// One call: `call` before it goes, `reply` with the provider or the typed error after.
async fn call(node: Arc<MaculaNode>, procedure: &'static str, rid: String, history: History) {
    let fields = format!("\"rid\":{},\"proc\":\"{procedure}\"", quoted(&rid));
    history.log("call", &fields);
    let options = CallOptions::with_timeout(CALL_TIMEOUT);
    match node.call(procedure, Bytes::from(rid), options).await {
        Ok(reply) => {
            let by = String::from_utf8_lossy(&reply).into_owned();
            history.log("reply", &format!("{fields},\"by\":{}", quoted(&by)));
        }
        Err(e) => history.log(
            "reply",
            &format!("{fields},\"err\":{}", quoted(&format!("{e:?}"))),
        ),
    }
}

/// The fields of an `announce_failed` line.
fn announce_fields(what: &str, failed: &AnnounceFailed) -> String {
    format!(
        "\"what\":\"{what}\",\"failures\":{},\"retry_ms\":{},\"reason\":{}",
        failed.failures,
        failed.retry_in.as_millis(),
        quoted(&format!("{:?}", failed.reason))
    )
}

/// Logs the node's publishing counters, lookup caches, routing table and connections
/// (`stats`, debugging aids).
async fn log_stats(node: &MaculaNode, history: History) {
    if let Ok(stats) = node.stats().await {
        let metrics = &stats.metrics;
        history.log(
            "stats",
            &format!(
                "\"pubsub\":{},\"caches\":{},\"table\":{},\"conns\":{},\"counters\":{}",
                quoted(&format!("{:?}", metrics.pubsub_messages)),
                quoted(&format!("{:?}", metrics.caches)),
                stats.routing_table,
                stats.connections,
                quoted(&format!("{:?}", stats.counters))
            ),
        );
    }
}

/// Logs whom the DHT names as subscribers under the topic prefix `t` (every pattern of
/// the workload is stored there), as a publisher's subscriber lookup sees it: `subs`
/// (the short ids of the records' providers), `answered` (how many nodes answered) and
/// `cached` (the DHT's value cache answered; a publisher's own lookups bypass it).
async fn log_subscribers(node: Arc<MaculaNode>, realm: Realm, history: History) {
    let key = RecordKey::new(&realm, RecordKind::Topic, "t");
    if let Ok(found) = node.query(key, Duration::from_secs(5)).await {
        let subs: Vec<String> = (found.records.iter())
            .map(|r| format!("\"{}\"", short(&r.provider())))
            .collect();
        let fields = format!(
            "\"subs\":[{}],\"answered\":{},\"cached\":{}",
            subs.join(","),
            found.answered.len(),
            found.from_cache
        );
        history.log("subs", &fields);
    }
}

/// Logs a connection's path (when it is ready and when it moves) and its end, NAT
/// discovery reports, relay events, and announcements of our subscriber and provider
/// records that the DHT did not take.
fn log_event(history: History, event: &Event) {
    let (ev, peer, path) = match event {
        Event::Connected { peer, path, .. } => ("conn", peer, path),
        Event::PathChanged { peer, path, .. } => ("path", peer, path),
        Event::PubSub(PubSubEvent::SubscriptionFailed { failed, .. }) => {
            return history.log("announce_failed", &announce_fields("sub", failed));
        }
        Event::Rpc(RpcEvent::RegistrationFailed { failed, .. }) => {
            return history.log("announce_failed", &announce_fields("proc", failed));
        }
        Event::Nat(report) => {
            return history.log(
                "nat",
                &format!("\"report\":{}", quoted(&format!("{report:?}"))),
            );
        }
        Event::Relay(relay) => {
            return history.log(
                "relay",
                &format!("\"event\":{}", quoted(&format!("{relay:?}"))),
            );
        }
        Event::Dht(DhtEvent::NodesFound { stats, .. }) => {
            return log_lookup(history, "find_node", stats);
        }
        Event::Dht(DhtEvent::ValuesFound {
            stats,
            from_cache: false,
            ..
        }) => return log_lookup(history, "find_value", stats),
        Event::Disconnected { peer, cause, .. } => {
            let peer = peer.as_ref().map_or_else(|| "?".to_owned(), short);
            let reason = quoted(&format!("{cause:?}"));
            return history.log("disc", &format!("\"peer\":\"{peer}\",\"reason\":{reason}"));
        }
        _ => return,
    };
    let kind = if *path == PathKind::Direct {
        "direct"
    } else {
        "relayed"
    };
    history.log(
        ev,
        &format!("\"peer\":\"{}\",\"kind\":\"{kind}\"", short(peer)),
    );
}

/// Logs a DHT lookup that went to the network: its hops and how long it took.
fn log_lookup(history: History, op: &str, stats: &QueryStats) {
    let hops = stats.closest_depth.map_or(-1, i32::from);
    history.log(
        "lookup",
        &format!(
            "\"op\":\"{op}\",\"hops\":{hops},\"ms\":{},\"timed_out\":{}",
            stats.duration.as_millis(),
            stats.timed_out
        ),
    );
}

/// Stops gracefully: logs `stop`, shuts the node down (peers are told).
async fn stop(node: &MaculaNode, history: History, mut tasks: JoinSet<()>) -> Result<(), String> {
    history.log("stop", "");
    node.shutdown().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
