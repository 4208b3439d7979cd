//! `macula demo`: a mesh of real nodes on 127.0.0.1 in this process, each
//! with its own socket, showing the DHT, RPC and pub/sub at work.

use macula::id::Realm;
use macula_tokio::{MaculaConfig, MaculaNode};
use tokio::task::JoinSet;

use crate::args::DemoArgs;
use crate::failure::Failure;
use crate::progress::Step;
use crate::settings::DEFAULT_TIMEOUT;

/// The demo's realm.
const REALM: &str = "io.macula.demo";

/// Runs the demo; fails with [`crate::failure::FailureKind::DemoIncomplete`]
/// unless every expected call and delivery happened.
pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let nodes = start_nodes(usize::from(args.nodes)).await?;
    bootstrap(&nodes).await?;
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}

/// Binds `count` nodes on 127.0.0.1, any port.
async fn start_nodes(count: usize) -> Result<Vec<MaculaNode>, Failure> {
    let realm = Realm::new(REALM).expect("the demo realm is valid");
    let step = Step::start(format!("starting {count} nodes on 127.0.0.1"), count);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let config = MaculaConfig::new(realm.clone(), "127.0.0.1:0".parse().expect("an address"));
        let node = MaculaNode::bind(config)
            .await
            .map_err(|e| Failure::network(format!("cannot start demo node {i}: {e}")))?;
        nodes.push(node);
        step.advance(i + 1);
    }
    let ports: Vec<String> = nodes.iter().map(|n| n.local_addr().port().to_string()).collect();
    step.finish(&format!("UDP ports {}", ports.join(", ")));
    Ok(nodes)
}

/// Every node but the first joins through the first, all at once.
async fn bootstrap(nodes: &[MaculaNode]) -> Result<(), Failure> {
    let step = Step::start("bootstrapping the DHT through node 0", nodes.len() - 1);
    let seed = nodes[0].contact();
    let mut joins = JoinSet::new();
    for node in &nodes[1..] {
        let (node, seed) = (node.clone(), seed.clone());
        joins.spawn(async move { crate::mesh::join(&node, &[seed], DEFAULT_TIMEOUT).await });
    }
    let mut joined = 0;
    let mut tables = Vec::new();
    while let Some(outcome) = joins.join_next().await {
        let table = outcome.map_err(|e| Failure::other(format!("a join task failed: {e}")))??;
        tables.push(table);
        joined += 1;
        step.advance(joined);
    }
    step.finish(&format!("{joined} joined, routing tables of {tables:?} peers"));
    Ok(())
}
