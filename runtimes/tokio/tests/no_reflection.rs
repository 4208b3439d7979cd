//! No reflection over real UDP: a plain peer (an independent QUIC client with
//! its own identity, no DHT_SERVER) sends DIAL_BACK_PROBE frames to a running
//! node naming a victim socket on another IP (127.0.0.2). The node sends the
//! victim nothing; the one target on the stranger's own IP is probed, which
//! shows the frames were read.

use std::time::Duration;

use macula::wire::{DialBackProbe, Message};
use tokio::net::UdpSocket;
use tokio::time::timeout;

// Shared by the test crates; this one uses a part.
#[allow(dead_code)]
mod common;
use common::stranger::{Stranger, encode};
use common::{bind, realm};

#[tokio::test]
async fn a_plain_peers_dial_back_probes_reach_only_its_own_ip() {
    let node = bind("127.0.0.1:0").await;
    let victim = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let own = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = Stranger::new([0x6b; 32]);
    let hello = stranger.hello(realm());
    let (_conn, mut control, _recv) = stranger
        .join(node.local_addr(), node.node_id(), hello)
        .await;
    let probe = Message::from(DialBackProbe {
        nonce: *b"reflect-me!!",
        addrs: vec![victim.local_addr().unwrap(), own.local_addr().unwrap()],
    });
    let frame = encode(&probe);
    for _ in 0..4 {
        control.write_all(&frame).await.unwrap();
    }
    let mut buf = [0u8; 1500];
    let (len, from) = timeout(Duration::from_secs(5), own.recv_from(&mut buf))
        .await
        .expect("the target on the stranger's own IP is probed")
        .unwrap();
    assert_eq!(from, node.local_addr());
    assert_eq!(&buf[8..20], b"reflect-me!!", "{:?}", &buf[..len]);
    let reached = timeout(Duration::from_secs(1), victim.recv_from(&mut buf)).await;
    assert!(reached.is_err(), "the victim got {reached:?}");
}
