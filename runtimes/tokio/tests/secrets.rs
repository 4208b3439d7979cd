//! Every transport secret of a node comes from 256 bits of OS randomness
//! (issue 13, item 7), seen from the wire: two nodes started the same way
//! (same identity, same settings) answer a client's Initial with server
//! connection ids from different generators, so their stateless-reset and
//! token keys, which derive from the same secret, differ too. The same
//! observation on two nodes given one secret shows the same id: what the
//! test sees follows the secret and nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use macula::id::Identity;
use macula::quic::CID_LEN;
use macula::secret::Secret;
use macula_tokio::{MaculaConfig, MaculaNode, random};
use tokio::net::UdpSocket;
use tokio::time::timeout;

#[allow(dead_code)] // each test crate uses a part
mod common;
use common::realm;
use common::stranger::Stranger;

/// How long the node may take to answer an Initial on loopback.
const ANSWER: Duration = Duration::from_secs(10);

/// A node of the test realm on loopback with `identity` and, when given,
/// `secret` (otherwise the driver draws one).
async fn node(identity: &Identity, secret: Option<Secret>) -> MaculaNode {
    let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    config.identity = Some(identity.clone());
    config.secret = secret;
    MaculaNode::bind(config).await.unwrap()
}

/// The source connection id of the first packet `node` sends a fresh
/// client: a stranger's Initial goes through a relay socket that reads the
/// node's answer (Initial or Retry, both long-header packets).
async fn server_cid(node: &MaculaNode) -> Vec<u8> {
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = Stranger::new([0x33; 32]);
    let connecting = stranger.connecting(relay.local_addr().unwrap(), node.node_id());
    let attempt = tokio::spawn(connecting);
    let mut buf = vec![0u8; 2048];
    let (n, _client) = timeout(ANSWER, relay.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let node_addr: SocketAddr = node.local_addr();
    relay.send_to(&buf[..n], node_addr).await.unwrap();
    let (n, from) = timeout(ANSWER, relay.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    attempt.abort();
    assert_eq!(from, node_addr);
    long_header_scid(&buf[..n]).expect("the node answers with a long-header packet")
}

/// The source connection id of a QUIC long-header packet (RFC 9000 §17.2).
fn long_header_scid(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.first()? & 0x80 == 0 {
        return None;
    }
    let dcid_len = usize::from(*packet.get(5)?);
    let scid_at = 6 + dcid_len;
    let scid_len = usize::from(*packet.get(scid_at)?);
    Some(packet.get(scid_at + 1..scid_at + 1 + scid_len)?.to_vec())
}

#[tokio::test]
async fn two_nodes_started_the_same_way_have_different_secrets() {
    let identity = random::identity().unwrap();
    let a = node(&identity, None).await;
    let b = node(&identity, None).await;
    let (cid_a, cid_b) = (server_cid(&a).await, server_cid(&b).await);
    assert_eq!(cid_a.len(), CID_LEN);
    assert_ne!(cid_a, cid_b, "two nodes drew the same secret");
}

#[tokio::test]
async fn the_observed_connection_id_follows_the_secret() {
    let identity = random::identity().unwrap();
    let a = node(&identity, Some(Secret::from_bytes([9; 32]))).await;
    let b = node(&identity, Some(Secret::from_bytes([9; 32]))).await;
    assert_eq!(server_cid(&a).await, server_cid(&b).await);
}
