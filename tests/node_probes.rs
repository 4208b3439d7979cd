//! A node answering the signed probes of a silent connection (docs/PROTOCOL.md §11,
//! "Probes"), tested as a peer and an attacker would: a raw QUIC peer exports the probe
//! key from its own TLS session (label `EXPORTER-macula-probe`, 32 bytes), sends STUN
//! Binding requests marked `mprb` and signed with MESSAGE-INTEGRITY-SHA256, and gets a
//! signed answer of the same size from the node. A probe signed with another key, an
//! unsigned one, one from an address with no connection, and a flood past the answer
//! budget go unanswered and are counted; nothing goes to an address that is not the
//! connection's own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::nat::stun::{Class, IntegrityKey, Message, TransactionId, decode};
use macula::{Datagram, Input, Machine, Output};

mod common;
use common::raw_peer::{NODE, RawPeer, config, node, pump};

/// The probe key the peer derives from its own side of the TLS session.
fn exported_key(peer: &RawPeer) -> IntegrityKey {
    let mut key = [0u8; 32];
    peer.conn
        .crypto_session()
        .export_keying_material(&mut key, b"EXPORTER-macula-probe", &[])
        .expect("32 bytes export");
    IntegrityKey(key)
}

/// A probe numbered `n`, signed with `key` (unsigned without one).
fn probe(n: u64, key: Option<&IntegrityKey>) -> Bytes {
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(b"mprb");
    id[4..].copy_from_slice(&n.to_be_bytes());
    let message = Message::binding(Class::Request, TransactionId(id));
    match key {
        Some(key) => message.encode_with_integrity(key),
        None => message.encode(),
    }
    .expect("encodes")
}

/// Hands `payload` from `from` to the node at `now`; the datagrams it sends back, by
/// destination.
fn send(
    node: &mut macula::node::Node,
    now: Instant,
    from: SocketAddr,
    payload: Bytes,
) -> Vec<(SocketAddr, Bytes)> {
    let datagram = Datagram {
        local: NODE.parse().unwrap(),
        remote: from,
        payload,
    };
    node.handle_input(now, Input::Datagram(datagram));
    let mut out = Vec::new();
    while let Some(output) = node.poll_output() {
        if let Output::Transmit(t) = output {
            out.push((t.destination, t.payload));
        }
    }
    out
}

/// A node and a raw peer connected to it (CONNECT exchanged).
fn connected() -> (macula::node::Node, RawPeer, Instant) {
    let mut now = common::epoch();
    let mut node = node(config(), now);
    let addr = SocketAddr::from(([203, 0, 113, 9], 5000));
    let mut peer = RawPeer::dial(&node, now, 9, addr);
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert_eq!(node.connection_count(), 1, "connected");
    (node, peer, now)
}

#[test]
fn a_signed_probe_of_a_connected_peer_gets_a_signed_answer_of_its_size() {
    let (mut node, peer, now) = connected();
    let key = exported_key(&peer);
    let request = probe(1, Some(&key));
    let answers = send(&mut node, now, peer.addr, request.clone());
    assert_eq!(answers.len(), 1, "one answer");
    let (to, answer) = &answers[0];
    assert_eq!(*to, peer.addr, "to the connection's own address");
    assert_eq!(answer.len(), request.len(), "no amplification");
    assert!(key.verifies(answer), "signed with the same key");
    let message = decode(answer).expect("a STUN message").message;
    assert_eq!(message.class, Class::Success);
    let asked = decode(&request).unwrap().message.transaction_id;
    assert_eq!(message.transaction_id, asked);
    assert_eq!(node.counters().probes_answered, 1);
    assert_eq!(node.counters().probes_dropped, 0);
}

#[test]
fn forged_unsigned_and_strangers_probes_go_unanswered_and_are_counted() {
    let (mut node, peer, now) = connected();
    let wrong = IntegrityKey([9; 32]);
    assert!(send(&mut node, now, peer.addr, probe(1, Some(&wrong))).is_empty());
    assert!(send(&mut node, now, peer.addr, probe(2, None)).is_empty());
    // Signed right, but from an address with no connection: a stranger cannot make the
    // node answer toward an address of its choosing.
    let key = exported_key(&peer);
    let stranger = SocketAddr::from(([192, 0, 2, 66], 4433));
    assert!(send(&mut node, now, stranger, probe(3, Some(&key))).is_empty());
    // An answer nobody asked for.
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(b"mprb");
    let unasked = Message::binding(Class::Success, TransactionId(id))
        .encode_with_integrity(&key)
        .unwrap();
    assert!(send(&mut node, now, peer.addr, unasked).is_empty());
    assert_eq!(node.counters().probes_dropped, 4);
    assert_eq!(node.counters().probes_answered, 0);
    assert_eq!(node.counters().probe_answers, 0);
}

#[test]
fn a_probe_flood_is_answered_within_the_budget() {
    let (mut node, peer, now) = connected();
    let key = exported_key(&peer);
    let answered: usize = (0..200)
        .map(|n| send(&mut node, now, peer.addr, probe(n, Some(&key))).len())
        .sum();
    assert_eq!(answered, 20, "the burst");
    let later = now + Duration::from_millis(100);
    let answered: usize = (200..400)
        .map(|n| send(&mut node, later, peer.addr, probe(n, Some(&key))).len())
        .sum();
    assert_eq!(answered, 10, "one per 10 ms");
    assert_eq!(node.counters().probes_dropped, 370);
}
