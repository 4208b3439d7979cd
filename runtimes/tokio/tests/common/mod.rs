//! Helpers the node tests share: nodes on loopback and commands bounded in
//! time.

#[allow(dead_code)] // each test crate uses a part
pub mod stranger;

use std::time::Duration;

use macula::dht::Contact;
use macula::id::{NodeId, Realm};
use macula_tokio::{FoundNodes, MaculaConfig, MaculaNode};
use tokio::time::timeout;

/// Every command of these tests finishes well within this on loopback.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn realm() -> Realm {
    Realm::new("io.macula.test").unwrap()
}

/// A node of the test realm bound at `addr`.
pub async fn bind(addr: &str) -> MaculaNode {
    let config = MaculaConfig::new(realm(), addr.parse().unwrap());
    MaculaNode::bind(config).await.unwrap()
}

/// `n` nodes on IPv4 loopback.
pub async fn start(n: usize) -> Vec<MaculaNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(bind("127.0.0.1:0").await);
    }
    nodes
}

/// `node` bootstraps from `seed`; returns its routing-table size.
pub async fn join(node: &MaculaNode, seed: Contact) -> usize {
    let joined = timeout(LIMIT, node.bootstrap(vec![seed])).await;
    joined.expect("bootstrap in time").unwrap()
}

/// `node` looks `target` up and finds it first.
pub async fn find(node: &MaculaNode, target: NodeId) -> FoundNodes {
    let found = timeout(LIMIT, node.find_node(target)).await;
    let found = found.expect("lookup in time").unwrap();
    assert_eq!(
        found.closest.first().map(|c| c.id),
        Some(target),
        "{found:?}"
    );
    found
}
