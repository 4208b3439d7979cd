//! Helpers the node tests share: nodes on loopback and commands bounded in
//! time.

#[allow(dead_code)] // each test crate uses a part
pub mod stranger;

use std::time::Duration;

use macula::dht::Contact;
use macula::id::{NodeId, Realm, RecordKey, RecordKind};
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

/// Waits until the observer finds `count` records under `kind`/`name`: a
/// provider or subscriber record has spread, so the first lookup of a caller
/// or publisher finds it.
#[allow(dead_code)] // not every test program waits for records
pub async fn visible(observer: &MaculaNode, kind: RecordKind, name: &str, count: usize) {
    let key = RecordKey::new(&realm(), kind, name);
    let spread = async {
        loop {
            let found = observer.query(key, Duration::from_secs(2)).await.unwrap();
            if found.records.len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(LIMIT, spread)
        .await
        .expect("the record spread in time");
}
