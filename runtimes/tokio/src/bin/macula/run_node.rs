//! `macula node`: a long-running mesh node. It prints its seed line, joins
//! through its seeds and saved peers, logs what happens, keeps its peers
//! file fresh, and shuts down cleanly on Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use macula::nat::portmap::PortMapConfig;
use macula_tokio::{MaculaNode, Registration};
use tokio::time::{MissedTickBehavior, interval};

use crate::args::NodeArgs;
use crate::contact::SeedLine;
use crate::event_log::EventLog;
use crate::failure::Failure;
use crate::settings::{self, DEFAULT_NODE_LISTEN};
use crate::{mesh, peers};

/// How often the peers file is rewritten while the node runs.
const PEERS_SAVE_EVERY: Duration = Duration::from_secs(60);

/// How often a node alone checks whether a peer has entered its routing
/// table, so that it can announce its procedures.
const SERVE_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long saving the peers may hold up shutting down.
const PEERS_SAVE_AT_EXIT: Duration = Duration::from_secs(2);

/// Runs `macula node` until Ctrl-C (or SIGTERM).
pub async fn run(args: NodeArgs) -> Result<(), Failure> {
    let (mut settings, node_file) = settings::from_args(args.mesh)?;
    let peers_file = args.peers_file.or(node_file.peers_file);
    let echo = if args.echo.is_empty() {
        node_file.echo.unwrap_or_default()
    } else {
        args.echo
    };
    let saved = match &peers_file {
        Some(path) => peers::load(path)?,
        None => Vec::new(),
    };
    let log = EventLog::new();
    let mut config = mesh::config(&settings, Some(DEFAULT_NODE_LISTEN))?;
    config.metrics_addr = args.metrics_addr.or(node_file.metrics_addr);
    config.node.rpc.callers =
        settings::access_list(args.allow_callers, node_file.allow_caller, "--allow-caller")?;
    config.node.pubsub.publishers = settings::access_list(
        args.allow_publishers,
        node_file.allow_publisher,
        "--allow-publisher",
    )?;
    let relay = args.relay.or(node_file.relay).unwrap_or_default();
    config.node.relay.mode = relay.into();
    if let Some(gateway) = args.gateway.or(node_file.gateway) {
        config.node.port_mapping = Some(PortMapConfig::new(gateway.resolve()?));
    }
    let node = mesh::bind(config).await?;
    // From bind on: the port mapping is granted before the first line prints.
    let mut events = node.events_since_bind().unwrap_or_else(|| node.events());
    println!("node id   {}", node.node_id());
    println!("realm     {}", settings.realm);
    println!("listening {}", node.local_addr());
    println!("seed      {}", SeedLine(&node.contact()));
    if let Some(addr) = node.metrics_addr() {
        println!("metrics   http://{addr}/metrics and http://{addr}/health");
    }
    if settings.identity.is_none() {
        eprintln!("note: no --identity file, so this node id is new each run");
    }

    let shutdown = crate::stop::requested();
    tokio::pin!(shutdown);
    let had_seeds = !settings.seeds.is_empty();
    // A node announces its procedures to its peers: alone, it would
    // announce them to nobody, so it serves once it has a peer.
    let mut has_peers = false;
    settings.seeds.extend(saved);
    if settings.seeds.is_empty() {
        log.line(
            "no seeds: this node starts a new mesh; others join with --seed <the seed line above>",
        );
    } else {
        log.line(&format!(
            "joining through {} seeds and saved peers",
            settings.seeds.len()
        ));
        let joined = tokio::select! {
            _ = &mut shutdown => return shut(node, Ok(())).await,
            joined = mesh::join(&node, &settings.seeds, settings.timeout) => joined,
        };
        match joined {
            Ok(_) => {
                save_peers(&node, peers_file.as_ref(), &log).await;
                has_peers = true;
            }
            // The saved peers may all have moved on; the seeds given are the contract.
            Err(failure) if had_seeds => return shut(node, Err(failure)).await,
            Err(failure) => log.line(&format!("{failure}; waiting for others to join us")),
        }
    }

    let mut served = Vec::new();
    let mut to_serve = echo;
    if has_peers {
        serve(&node, &mut to_serve, &mut served).await?;
    } else if !to_serve.is_empty() {
        log.line("the echo procedures are served once another node has joined");
    }
    let mut save_tick = interval(PEERS_SAVE_EVERY);
    save_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    save_tick.reset();
    let mut serve_tick = interval(SERVE_CHECK_EVERY);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.recv() => match event {
                Some(event) => log.event(&event),
                None => return Err(Failure::other("the node stopped unexpectedly")),
            },
            _ = save_tick.tick() => save_peers(&node, peers_file.as_ref(), &log).await,
            // Clients (`macula call`) never enter the routing table: a
            // procedure is announced once a peer that stores records has.
            _ = serve_tick.tick(), if !to_serve.is_empty() => {
                if node.stats().await?.routing_table > 0 {
                    serve(&node, &mut to_serve, &mut served).await?;
                }
            }
        }
    }
    log.line("shutting down");
    if let Some(path) = &peers_file {
        let saving = tokio::time::timeout(PEERS_SAVE_AT_EXIT, peers::save(&node, path)).await;
        if let Ok(Err(failure)) = saving {
            log.line(&failure.message);
        }
    }
    shut(node, Ok(())).await
}

/// Starts serving the echo procedures in `to_serve`, if any are left.
async fn serve(
    node: &MaculaNode,
    to_serve: &mut Vec<String>,
    served: &mut Vec<Registration>,
) -> Result<(), Failure> {
    if !to_serve.is_empty() {
        served.extend(crate::services::serve_echo(node, to_serve).await?);
        to_serve.clear();
    }
    Ok(())
}

/// Rewrites the peers file, if there is one; a failure is logged, not fatal.
async fn save_peers(node: &MaculaNode, path: Option<&PathBuf>, log: &EventLog) {
    if let Some(path) = path {
        match peers::save(node, path).await {
            Ok(count) => log.line(&format!("saved {count} peers to {}", path.display())),
            Err(failure) => log.line(&failure.message),
        }
    }
}

/// Shuts the node down, then returns `outcome`.
async fn shut(node: MaculaNode, outcome: Result<(), Failure>) -> Result<(), Failure> {
    node.shutdown().await;
    outcome
}
