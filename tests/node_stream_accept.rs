//! A peer's streams are the node's to touch only once QUIC handed them over
//! (`accept`). quinn-proto counts a bidirectional stream the peer opened
//! when it is accepted and uncounts it when its sending half is freed; a
//! stream read, answered, reset or finished before its accept is uncounted
//! without having been counted, and a debug build (and every fuzz build)
//! panics on the underflow. A raw peer here opens streams before its
//! CONNECT, stops them, writes on them twice so QUIC reports them readable,
//! and only then says CONNECT: the node must leave them alone until it
//! accepts them, then serve them as any other.

use std::time::Instant;

use macula::node::Node;
use macula::wire::{self, Message};
use quinn_proto::{Dir, VarInt};

mod common;
use common::raw_peer::{RawPeer, config, encode, frames, node, pump, write_some};

/// The code the peer stops its streams with.
const STOPPED: u32 = 77;

fn find_node(node: &Node, request_id: u64) -> Vec<u8> {
    encode(&Message::from(wire::FindNode {
        request_id,
        target: node.node_id(),
    }))
}

/// A node and a peer whose handshake is done and whose CONNECT is not sent.
fn handshaken() -> (Node, RawPeer, Instant) {
    let mut now = common::epoch();
    let mut node = node(config(), now);
    let mut peer = RawPeer::dial(&node, now, 60, "198.51.100.2:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    (node, peer, now)
}

#[test]
fn streams_stopped_before_connect_are_left_alone_until_accepted_then_reset() {
    let (mut node, mut peer, mut now) = handshaken();
    let control = peer.conn.streams().open(Dir::Bi).unwrap();
    // Streams the node has not accepted (it accepts only the control stream
    // before CONNECT): each carries a request, then the peer stops reading
    // the answers it has not had yet.
    let mut stopped = Vec::new();
    for id in 0..4 {
        let stream = peer.conn.streams().open(Dir::Bi).unwrap();
        let request = find_node(&node, id);
        assert_eq!(write_some(&mut peer.conn, stream, &request), request.len());
        pump(&mut node, &mut [&mut peer], &mut now, 5);
        peer.conn
            .recv_stream(stream)
            .stop(VarInt::from_u32(STOPPED))
            .unwrap();
        stopped.push(stream);
    }
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert!(peer.lost.is_none(), "the connection stays: {:?}", peer.lost);

    let hello = peer.connect_frame(common::raw_peer::realm());
    assert_eq!(write_some(&mut peer.conn, control, &hello), hello.len());
    pump(&mut node, &mut [&mut peer], &mut now, 40);
    assert!(peer.lost.is_none(), "CONNECT is accepted: {:?}", peer.lost);
    assert_eq!(node.connection_count(), 1);
    // The stopped streams were read once accepted, and each answer met the
    // stop: the node reset them, which gives the peer their credit back.
    assert_eq!(
        peer.conn.stats().frame_rx.reset_stream,
        stopped.len() as u64,
        "one RESET_STREAM for each stopped stream"
    );

    // And the connection serves the next request as any other.
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    let request = find_node(&node, 9);
    assert_eq!(write_some(&mut peer.conn, stream, &request), request.len());
    let _ = peer.conn.send_stream(stream).finish();
    pump(&mut node, &mut [&mut peer], &mut now, 40);
    let answer = frames(&peer.read_available(stream));
    assert!(
        matches!(answer.as_slice(), [Message::FindNodeReply(reply)] if reply.request_id == 9),
        "{answer:?}"
    );
}

#[test]
fn streams_readable_before_connect_are_read_only_once_accepted() {
    let (mut node, mut peer, mut now) = handshaken();
    let control = peer.conn.streams().open(Dir::Bi).unwrap();
    // Each stream is written twice, a packet apart: the first write opens it
    // in QUIC, the second makes QUIC report it readable, still unaccepted.
    let mut streams = Vec::new();
    for id in 0..6 {
        let stream = peer.conn.streams().open(Dir::Bi).unwrap();
        let request = find_node(&node, id);
        let (head, tail) = request.split_at(3);
        assert_eq!(write_some(&mut peer.conn, stream, head), head.len());
        pump(&mut node, &mut [&mut peer], &mut now, 3);
        assert_eq!(write_some(&mut peer.conn, stream, tail), tail.len());
        let _ = peer.conn.send_stream(stream).finish();
        pump(&mut node, &mut [&mut peer], &mut now, 3);
        streams.push((stream, id));
    }
    let hello = peer.connect_frame(common::raw_peer::realm());
    assert_eq!(write_some(&mut peer.conn, control, &hello), hello.len());
    // Long enough for every answer, its acknowledgement and the freed
    // streams' credit to go round.
    pump(&mut node, &mut [&mut peer], &mut now, 60);
    assert!(peer.lost.is_none(), "{:?}", peer.lost);
    for (stream, id) in streams {
        let answer = frames(&peer.read_available(stream));
        assert!(
            matches!(answer.as_slice(), [Message::FindNodeReply(reply)] if reply.request_id == id),
            "stream {stream}: {answer:?}"
        );
    }
}
