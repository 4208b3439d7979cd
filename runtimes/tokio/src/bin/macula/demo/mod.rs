//! `macula demo`: a mesh of real nodes on 127.0.0.1 in this process, each
//! with its own UDP socket, showing the DHT, RPC and pub/sub at work, then
//! the nodes' metrics. It succeeds only if every expected call and delivery
//! happened.
//!
//! Roles: node 0 is the seed and the publisher, node 1 the caller, the
//! last node the provider; nodes 1 to 4 subscribe (see [`pubsub`]).

mod metrics;
mod pubsub;
mod rpc;

use std::time::Duration;

use macula::id::Realm;
use macula_tokio::{MaculaConfig, MaculaNode};
use tokio::task::JoinSet;

use crate::args::DemoArgs;
use crate::failure::{Failure, FailureKind};
use crate::progress::Step;
use crate::settings::DEFAULT_TIMEOUT;

/// The demo's realm.
const REALM: &str = "io.macula.demo";

/// The seed and publisher.
const SEED: usize = 0;

/// What went wrong in a part of the demo that ran to its end.
type Problems = Vec<String>;

/// Runs the demo; fails with [`FailureKind::DemoIncomplete`] unless every
/// expected call and delivery happened.
pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    eprintln!(
        "macula demo: {} nodes on 127.0.0.1, realm {REALM}",
        args.nodes
    );
    let nodes = start_nodes(usize::from(args.nodes)).await?;
    let outcome = scenario(&nodes, args.calls).await;
    for node in &nodes {
        node.shutdown().await;
    }
    let problems = outcome?;
    if problems.is_empty() {
        println!("\nall calls answered and all publications delivered as expected");
        Ok(())
    } else {
        Err(Failure::new(
            FailureKind::DemoIncomplete,
            format!(
                "the demo saw {} problems:\n  {}",
                problems.len(),
                problems.join("\n  ")
            ),
        ))
    }
}

/// Everything the demo does with its running nodes.
async fn scenario(nodes: &[MaculaNode], calls: u32) -> Result<Problems, Failure> {
    // From before the first connection, to tell whether the first call
    // needs a new one.
    let caller_events = nodes[rpc::CALLER].events();
    bootstrap(nodes).await?;
    let mut problems = rpc::run(nodes, caller_events, calls).await?;
    problems.extend(pubsub::run(nodes).await?);
    metrics::print(nodes).await?;
    Ok(problems)
}

/// Binds `count` nodes on 127.0.0.1, any port.
async fn start_nodes(count: usize) -> Result<Vec<MaculaNode>, Failure> {
    let realm = Realm::new(REALM).map_err(|e| Failure::other(format!("demo realm: {e}")))?;
    let step = Step::start(format!("starting {count} nodes"), count);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let mut config = MaculaConfig::new(realm.clone(), ([127, 0, 0, 1], 0).into());
        if i == SEED {
            // The seed checks that announcements are visible before they
            // are used (see `announced`): its lookups must ask the network.
            config.node.dht.cache_ttl = Duration::ZERO;
        }
        let node = MaculaNode::bind(config)
            .await
            .map_err(|e| Failure::network(format!("cannot start demo node {i}: {e}")))?;
        nodes.push(node);
        step.advance(i + 1);
    }
    let ports: Vec<String> = nodes
        .iter()
        .map(|n| n.local_addr().port().to_string())
        .collect();
    step.finish(&format!("UDP ports {}", ports.join(", ")));
    Ok(nodes)
}

/// Every node but the seed joins through the seed, all at once.
async fn bootstrap(nodes: &[MaculaNode]) -> Result<(), Failure> {
    let step = Step::start(
        format!("joining the DHT through node {SEED}"),
        nodes.len() - 1,
    );
    let seed = nodes[SEED].contact();
    let mut joins = JoinSet::new();
    for node in nodes.iter().skip(1) {
        let (node, seed) = (node.clone(), seed.clone());
        joins.spawn(async move { crate::mesh::join(&node, &[seed], DEFAULT_TIMEOUT).await });
    }
    let mut tables = Vec::new();
    while let Some(outcome) = joins.join_next().await {
        let table = outcome.map_err(|e| Failure::other(format!("a join task failed: {e}")))??;
        tables.push(table.to_string());
        step.advance(tables.len());
    }
    step.finish(&format!(
        "{} joined; routing tables of {} peers",
        tables.len(),
        tables.join(", ")
    ));
    Ok(())
}

/// "node N" with its role, for the report.
fn name(index: usize, nodes: &[MaculaNode]) -> String {
    format!(
        "node {index} ({})",
        nodes[index].node_id().to_string().get(..8).unwrap_or("")
    )
}
