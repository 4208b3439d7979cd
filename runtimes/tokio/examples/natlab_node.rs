//! A mesh Node for the NAT lab's node scenarios (`tests/natlab/run --node-bin`).
//!
//! ```text
//! natlab_node relay --bind ADDR --seed N
//!     a public node (DHT server, relay); runs until killed
//! natlab_node peer --bind ADDR --seed N --relay ADDR --relay-seed N --reflexive ADDR
//!                  [--serve] [--dial SEED --calls N]
//!     a private node: joins the DHT through the relay, reserves on it, punches with its
//!     LAN address (ADDR) and the reflexive address the lab learned for its port; with
//!     --serve it answers `svc.echo`; with --dial it dials node SEED through the relay,
//!     makes N echo calls 20 ms apart, and prints
//!     `result connected=1 direct=0|1 punch_ms=N calls=N lost=N` and exits
//! ```
//!
//! Node identities come from `Identity::from_seed([seed; 32])`, so every process knows the
//! others' node ids from their seeds. The reflexive address stands in for the node's own
//! NAT discovery, which fills it in a full node.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use macula::dht::{Contact, DhtEvent, Mode};
use macula::id::{Identity, Realm};
use macula::nat::punch::{Candidate, CandidateKind, NatClass};
use macula::node::{Event, Node, NodeConfig, RelayEvent};
use macula::path::PathKind;
use macula::rpc::{CallOptions, RegisterOptions, RpcEvent};
use macula_tokio::Driver;

#[allow(clippy::disallowed_methods)] // the driver's clock
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)] // the node's wall-clock anchor
fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

struct Args {
    mode: String,
    bind: SocketAddr,
    seed: u8,
    relay: Option<SocketAddr>,
    relay_seed: u8,
    reflexive: Option<SocketAddr>,
    serve: bool,
    dial: Option<u8>,
    calls: u64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("mode: relay or peer")?;
    let mut args = Args {
        mode,
        bind: "0.0.0.0:4433".parse().map_err(|_| "bind")?,
        seed: 1,
        relay: None,
        relay_seed: 1,
        reflexive: None,
        serve: false,
        dial: None,
        calls: 100,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |what: &str| format!("bad {what}");
        match flag.as_str() {
            "--bind" => args.bind = value()?.parse().map_err(|_| bad("--bind"))?,
            "--seed" => args.seed = value()?.parse().map_err(|_| bad("--seed"))?,
            "--relay" => args.relay = Some(value()?.parse().map_err(|_| bad("--relay"))?),
            "--relay-seed" => {
                args.relay_seed = value()?.parse().map_err(|_| bad("--relay-seed"))?
            }
            "--reflexive" => {
                args.reflexive = Some(value()?.parse().map_err(|_| bad("--reflexive"))?)
            }
            "--dial" => args.dial = Some(value()?.parse().map_err(|_| bad("--dial"))?),
            "--calls" => args.calls = value()?.parse().map_err(|_| bad("--calls"))?,
            "--serve" => args.serve = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn node(args: &Args, private: bool) -> Result<Node, String> {
    let realm = Realm::new("io.macula.natlab").map_err(|e| e.to_string())?;
    let mut config = NodeConfig::new(realm);
    config.listen_addrs = vec![args.bind];
    if private {
        config.dht.mode = Mode::Client;
    }
    let identity = Identity::from_seed([args.seed; 32]);
    Node::new(config, identity, u64::from(args.seed), now(), unix_ms()).map_err(|e| e.to_string())
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
        let mut driver = Driver::bind(args.bind, node(&args, false)?)
            .await
            .map_err(|e| e.to_string())?;
        println!("ready");
        loop {
            driver.next_event().await;
        }
    }
    let relay_addr = args.relay.ok_or("--relay")?;
    let reflexive = args.reflexive.ok_or("--reflexive")?;
    let relay = Contact {
        id: Identity::from_seed([args.relay_seed; 32]).node_id(),
        addrs: vec![relay_addr].into_iter().collect(),
    };
    let mut driver = Driver::bind(args.bind, node(&args, true)?)
        .await
        .map_err(|e| e.to_string())?;
    let candidates = vec![
        Candidate::new(CandidateKind::Lan, args.bind),
        Candidate::new(CandidateKind::Reflexive, reflexive),
    ];
    let t = now();
    let n = driver.machine_mut();
    n.set_punch_candidates(candidates, NatClass::UNKNOWN);
    n.bootstrap(t, vec![relay.clone()]);
    n.reserve(t, relay.clone());
    let (mut granted, mut joined) = (false, false);
    while !(granted && joined) {
        match driver.next_event().await {
            Event::Relay(RelayEvent::ReservationGranted { .. }) => granted = true,
            Event::Dht(DhtEvent::Bootstrapped { .. }) => joined = true,
            _ => {}
        }
    }
    if args.serve {
        driver
            .machine_mut()
            .register(now(), "svc.echo", RegisterOptions::default())
            .map_err(|e| format!("{e:?}"))?;
        println!("ready");
        loop {
            if let Event::Rpc(RpcEvent::Request { id, payload, .. }) = driver.next_event().await {
                let _ = driver.machine_mut().reply(now(), id, Ok(payload));
                driver.flush().await;
            }
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
    let mut connected = false;
    let mut switched: Option<Instant> = None;
    let mut issued = Vec::new();
    let mut answered = 0u64;
    let mut next_call = now();
    let deadline = now() + Duration::from_secs(30);
    let mut connected_at = None;
    while now() < deadline {
        if connected && issued.len() < args.calls as usize && now() >= next_call {
            let k = issued.len() as u64;
            let payload = Bytes::from(k.to_be_bytes().to_vec());
            let call = driver.machine_mut().call(
                now(),
                "svc.echo",
                payload,
                Duration::from_secs(20),
                CallOptions::default(),
            );
            if let Ok(call) = call {
                issued.push((call, k));
            }
            driver.flush().await;
            next_call += Duration::from_millis(20);
        }
        if issued.len() as u64 == args.calls && answered == args.calls {
            break;
        }
        driver
            .turn(tokio::time::sleep(Duration::from_millis(5)))
            .await;
        driver.flush().await;
        while let Some(event) = driver.pop_event() {
            match event {
                Event::Connected {
                    peer,
                    path: PathKind::Relayed,
                    ..
                } if peer == target => {
                    connected = true;
                    connected_at = Some(now());
                }
                Event::PathChanged { peer, path, reason } if peer == target => {
                    let at = now().saturating_duration_since(started).as_millis();
                    eprintln!("+{at}ms path {path:?}: {reason:?}");
                    if path == PathKind::Direct {
                        switched.get_or_insert(now());
                    }
                }
                Event::Rpc(RpcEvent::Completed {
                    call,
                    result: Ok(payload),
                }) => {
                    let ok = issued
                        .iter()
                        .any(|(c, k)| *c == call && payload[..] == k.to_be_bytes());
                    answered += u64::from(ok);
                }
                _ => {}
            }
        }
    }
    let punch_ms = match (connected_at, switched) {
        (Some(c), Some(s)) => s.saturating_duration_since(c).as_millis().to_string(),
        _ => "-".into(),
    };
    let lost = issued.len() as u64 - answered.min(issued.len() as u64);
    let node = driver.machine();
    eprintln!("upgrade: {:?}", node.upgrade_counters());
    eprintln!("node: {:?}", node.counters());
    println!(
        "result connected={} direct={} punch_ms={punch_ms} calls={} lost={lost}",
        u8::from(connected),
        u8::from(switched.is_some()),
        issued.len()
    );
    Ok(ExitCode::SUCCESS)
}
