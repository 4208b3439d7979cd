//! A driver's read of several datagrams is one input of the Node
//! ([`Machine::handle_inputs`]): what they make it send is gathered once, so
//! the answers to a burst of requests share packets, where datagrams fed one
//! by one are each answered in packets of their own. Same requests, same
//! answers either way.
#![cfg(feature = "sim")]

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use common::raw_peer::{NODE, RawPeer, config, encode, node, pump, write_some};
use macula::node::Node;
use macula::wire::{self, Message};
use macula::{Datagram, Input, Machine, Output};
use quinn_proto::{Dir, StreamId};

/// Requests in the burst.
const REQUESTS: u64 = 20;

/// A node and a raw peer that said CONNECT, and the peer's `REQUESTS`
/// FIND_NODE requests, each on a stream of its own and in a datagram of
/// its own, not yet delivered.
fn burst() -> (Node, RawPeer, Instant, Vec<(StreamId, Bytes)>) {
    let mut now = common::epoch();
    let mut node = node(config(), now);
    let mut peer = RawPeer::dial(&node, now, 9, "198.51.100.9:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let mut sent = Vec::new();
    for request_id in 0..REQUESTS {
        let stream = peer.conn.streams().open(Dir::Bi).expect("a stream");
        let find = encode(&Message::from(wire::FindNode {
            request_id,
            target: node.node_id(),
        }));
        assert_eq!(write_some(&mut peer.conn, stream, &find), find.len());
        let packets = peer.transmits(now);
        assert_eq!(packets.len(), 1, "one datagram per request");
        sent.extend(packets.into_iter().map(|p| (stream, p)));
    }
    (node, peer, now, sent)
}

/// `payload` as a datagram from `peer` to the node.
fn datagram(peer: SocketAddr, payload: Bytes) -> Input {
    Input::Datagram(Datagram {
        local: NODE.parse().unwrap(),
        remote: peer,
        payload,
    })
}

/// Drains the node's transmits into `peer`; how many datagrams they held.
fn answer(node: &mut Node, peer: &mut RawPeer, now: Instant) -> usize {
    let mut datagrams = 0;
    while let Some(output) = node.poll_output() {
        if let Output::Transmit(t) = output {
            let size = t.segment_size.unwrap_or(t.payload.len()).max(1);
            for segment in t.payload.chunks(size) {
                datagrams += 1;
                peer.receive(now, segment);
            }
        }
    }
    datagrams
}

/// The streams of `sent` the peer got an answer on.
fn answered(peer: &mut RawPeer, sent: &[(StreamId, Bytes)]) -> usize {
    (sent.iter())
        .filter(|(stream, _)| !peer.read_available(*stream).is_empty())
        .count()
}

#[test]
fn a_read_of_several_datagrams_is_answered_in_shared_packets() {
    let (mut node, mut peer, now, sent) = burst();
    let mut one_by_one = 0;
    for (_, payload) in sent.clone() {
        node.handle_input(now, datagram(peer.addr, payload));
        one_by_one += answer(&mut node, &mut peer, now);
    }
    assert_eq!(answered(&mut peer, &sent), REQUESTS as usize);

    let (mut node, mut peer, now, sent) = burst();
    let inputs = (sent.clone().into_iter()).map(|(_, payload)| datagram(peer.addr, payload));
    node.handle_inputs(now, inputs);
    let together = answer(&mut node, &mut peer, now);
    assert_eq!(
        answered(&mut peer, &sent),
        REQUESTS as usize,
        "every one answered"
    );
    eprintln!(
        "{REQUESTS} requests answered in {one_by_one} datagrams one by one, {together} as one read"
    );
    assert!(
        one_by_one >= REQUESTS as usize,
        "a packet per request: {one_by_one}"
    );
    assert!(together <= 4, "the answers share packets: {together}");
}
