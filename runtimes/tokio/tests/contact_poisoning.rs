//! Contact poisoning over real UDP (issue 13): a stranger's CONNECT claims
//! DHT_SERVER with listen addresses it does not send from — a port on the
//! victim's own loopback, the unspecified address, a multicast group, and
//! an address of the virtual range — then asks a DHT question so the victim
//! sees it as a live server. Neither another stranger's FIND_NODE nor an
//! honest node's lookup is ever handed any of them.

use std::net::SocketAddr;

use macula::id::NodeId;
use macula::wire::{self, Capabilities, Message};
use tokio::time::timeout;

// Shared by the test crates; this one uses a part.
#[allow(dead_code)]
mod common;
use common::stranger::{Stranger, ask};
use common::{LIMIT, bind, join, realm};

/// What the liar claims.
const CLAIMS: [&str; 4] = [
    "127.0.0.1:6499",
    "0.0.0.0:1",
    "224.0.0.1:1",
    "[fd6d:6163:756c:6100::9]:1",
];

/// `stranger` (already joined) asks the node on `conn` for the contacts
/// closest to `target`.
async fn find_node(conn: &quinn::Connection, target: NodeId) -> Vec<wire::Contact> {
    let request = Message::from(wire::FindNode {
        request_id: 7,
        target,
    });
    match ask(conn, &request).await {
        Message::FindNodeReply(reply) => reply.contacts,
        other => panic!("expected FIND_NODE_REPLY, got {other:?}"),
    }
}

#[tokio::test]
async fn claimed_listen_addresses_are_never_handed_out() {
    let victim = bind("127.0.0.1:0").await;
    let honest = bind("127.0.0.1:0").await;
    join(&honest, victim.contact()).await;
    let claims: Vec<SocketAddr> = CLAIMS.iter().map(|a| a.parse().unwrap()).collect();

    let liar = Stranger::new([0x66; 32]);
    let hello = Message::from(wire::Connect {
        node_id: liar.node_id(),
        realm: realm(),
        capabilities: Capabilities::DHT_SERVER,
        listen_addrs: claims.clone(),
    });
    let (liar_conn, _control, _control_recv) = liar
        .join(victim.local_addr(), victim.node_id(), hello)
        .await;
    // A question makes the victim see the liar as a live DHT server.
    let answered = find_node(&liar_conn, victim.node_id()).await;
    assert!(answered.iter().any(|c| c.node_id == honest.node_id()));

    let asker = Stranger::new([0x67; 32]);
    let (ask_conn, _control, _control_recv) = asker
        .join(victim.local_addr(), victim.node_id(), asker.hello(realm()))
        .await;
    let contacts = find_node(&ask_conn, liar.node_id()).await;
    let handed: Vec<SocketAddr> = contacts.iter().flat_map(|c| c.addrs.clone()).collect();
    assert!(
        contacts.iter().all(|c| c.node_id != liar.node_id()),
        "the liar is not handed out: {contacts:?}"
    );
    assert!(claims.iter().all(|a| !handed.contains(a)), "{handed:?}");
    // The honest node is still handed out, at its real address.
    let at = contacts.iter().find(|c| c.node_id == honest.node_id());
    assert_eq!(at.map(|c| c.addrs.clone()), Some(vec![honest.local_addr()]));

    // An honest node's own lookup learns none of them either.
    let found = timeout(LIMIT, honest.find_node(liar.node_id()))
        .await
        .expect("lookup in time")
        .unwrap();
    let learned: Vec<SocketAddr> = found.closest.iter().flat_map(|c| c.addrs.clone()).collect();
    assert!(claims.iter().all(|a| !learned.contains(a)), "{learned:?}");
    assert!(found.closest.iter().all(|c| c.id != liar.node_id()));
}
