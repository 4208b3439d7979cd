//! How a node closes a connection on purpose, seen from the wire
//! (docs/PROTOCOL.md §2 "Closing", §7): a raw quinn-proto peer breaks a
//! rule and must first read DISCONNECT on the control stream, then see the
//! QUIC close with the same reason code and the message as reason phrase. A
//! connection with no control stream is just closed.

use std::time::{Duration, Instant};

use macula::id::Realm;
use macula::node::{Node, NodeConfig};
use macula::wire::{DisconnectReason, FindNode, Message};
use quinn_proto::{Dir, StreamId};

mod common;
use common::raw_peer::{
    RawPeer, config, encode, frames, node, pump, pump_until_lost, realm, write_some,
};

fn node_with(config: NodeConfig) -> (Node, Instant) {
    let now = common::epoch();
    (node(config, now), now)
}

/// A node and a peer through the QUIC handshake, nothing written yet.
fn handshaken() -> (Node, RawPeer, Instant) {
    let (mut node, mut now) = node_with(config());
    let mut peer = RawPeer::dial(&node, now, 50, "198.51.100.2:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert_eq!(node.connection_count(), 1);
    (node, peer, now)
}

/// The last frame on the control stream must be DISCONNECT `reason`, and
/// the QUIC close must carry its code and message.
fn assert_told(peer: &RawPeer, control_data: &[u8], reason: DisconnectReason) {
    let frames = frames(control_data);
    let Some(Message::Disconnect(bye)) = frames.last() else {
        panic!("no DISCONNECT before the close; the control stream carried {frames:?}");
    };
    assert_eq!(bye.reason, reason);
    assert_eq!(peer.close_code(), Some(u64::from(reason.code())));
    assert_eq!(peer.close_reason().as_deref(), Some(bye.message.as_str()));
}

/// A ready peer writes `offence` on its control stream; returns what the
/// node wrote on that stream until the connection was lost.
fn offend(offence: impl FnOnce(&Node, &RawPeer) -> Vec<u8>) -> (RawPeer, Vec<u8>, Duration) {
    let (mut node, mut peer, mut now) = handshaken();
    let control = peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert!(peer.lost.is_none(), "the first CONNECT is accepted");
    let bytes = offence(&node, &peer);
    assert_eq!(write_some(&mut peer.conn, control, &bytes), bytes.len());
    let start = now;
    let data = pump_until_lost(&mut node, &mut peer, &mut now, 1000, control);
    (peer, data, now - start)
}

#[test]
fn a_second_connect_is_told_disconnect_protocol_error_then_closed() {
    let (peer, data, _) = offend(|_, peer| peer.connect_frame(realm()));
    assert_told(&peer, &data, DisconnectReason::ProtocolError);
}

#[test]
fn a_connect_from_another_realm_is_told_realm_mismatch_then_closed() {
    let (mut node, mut peer, mut now) = handshaken();
    let control: StreamId = peer.conn.streams().open(Dir::Bi).unwrap();
    let hello = peer.connect_frame(Realm::new("io.other").unwrap());
    assert_eq!(write_some(&mut peer.conn, control, &hello), hello.len());
    let data = pump_until_lost(&mut node, &mut peer, &mut now, 100, control);
    assert_told(&peer, &data, DisconnectReason::RealmMismatch);
}

#[test]
fn a_request_on_the_control_stream_is_told_protocol_error_then_closed() {
    let (peer, data, _) = offend(|node, _| {
        encode(&Message::from(FindNode {
            request_id: 1,
            target: node.node_id(),
        }))
    });
    assert_told(&peer, &data, DisconnectReason::ProtocolError);
}

#[test]
fn the_close_follows_the_disconnect_within_the_linger_bound() {
    let (peer, _, took) = offend(|_, peer| peer.connect_frame(realm()));
    assert!(peer.lost.is_some());
    // 2 ms a hop: the DISCONNECT's round trip, not the 100 ms bound.
    assert!(
        took < Duration::from_millis(50),
        "closed {took:?} after the offence"
    );
}

#[test]
fn a_connection_without_a_control_stream_is_just_closed() {
    let mut config = config();
    config.connect_timeout = Duration::from_millis(100);
    let (mut node, mut now) = node_with(config);
    let mut peer = RawPeer::dial(&node, now, 51, "198.51.100.3:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 200);
    assert_eq!(
        peer.close_code(),
        Some(u64::from(DisconnectReason::ProtocolError.code()))
    );
}

/// The code the node reset `stream` with, if it did.
fn reset_code(peer: &mut RawPeer, stream: StreamId) -> Option<u64> {
    let mut recv = peer.conn.recv_stream(stream);
    let mut chunks = recv.read(true).ok()?;
    let code = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(_)) => continue,
            Err(quinn_proto::ReadError::Reset(code)) => break Some(code.into_inner()),
            Ok(None) | Err(_) => break None,
        }
    };
    let _ = chunks.finalize();
    code
}

/// A ready peer opens a stream, writes `bytes` and finishes it; returns
/// the code the node reset the stream with.
fn finished_stream_answer(bytes: &[u8]) -> Option<u64> {
    let (mut node, mut peer, mut now) = handshaken();
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    assert_eq!(write_some(&mut peer.conn, stream, bytes), bytes.len());
    peer.conn.send_stream(stream).finish().unwrap();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert!(peer.lost.is_none(), "the connection stays");
    reset_code(&mut peer, stream)
}

/// Stream code `refused` (docs/PROTOCOL.md §7).
const REFUSED: u64 = 0x101;

#[test]
fn a_request_stream_finished_mid_frame_is_reset_refused() {
    let find = encode(&Message::from(FindNode {
        request_id: 1,
        target: macula::id::NodeId::from_bytes([7; 32]),
    }));
    assert_eq!(
        finished_stream_answer(&find[..find.len() - 5]),
        Some(REFUSED)
    );
    // The whole request is answered, not refused.
    assert_eq!(finished_stream_answer(&find), None);
}

#[test]
fn a_stream_carrying_only_an_unknown_frame_is_reset_refused() {
    let unknown = [1, 0x7f, 0, 0, 0, 0, 0, 3, 9, 9, 9];
    assert_eq!(finished_stream_answer(&unknown), Some(REFUSED));
}

#[test]
fn an_idle_connection_is_closed_with_idle() {
    let mut config = config();
    config.pool.idle_ttl = Duration::from_secs(1);
    let (mut node, mut now) = node_with(config);
    let mut peer = RawPeer::dial(&node, now, 52, "198.51.100.4:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let control = peer.hello();
    let data = pump_until_lost(&mut node, &mut peer, &mut now, 2000, control);
    assert_told(&peer, &data, DisconnectReason::Idle);
}

/// Stream code `cancelled` (docs/PROTOCOL.md §7).
const CANCELLED: u64 = 0x102;

#[test]
fn a_request_stream_the_peer_abandons_is_reset_back_and_its_credit_returns() {
    let (mut node, mut peer, mut now) = handshaken();
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let find = encode(&Message::from(FindNode {
        request_id: 1,
        target: macula::id::NodeId::from_bytes([7; 32]),
    }));
    // More abandoned requests than the streams the node allows at once (100): each
    // half written, then reset (every other one also stopped: a cancelled call). The
    // node must reset its side of each back, or the stream and its credit stay open
    // forever and `open` runs out.
    let code = quinn_proto::VarInt::from_u32(CANCELLED as u32);
    for i in 0..150 {
        let stream = peer.conn.streams().open(Dir::Bi).expect("stream credit");
        write_some(&mut peer.conn, stream, &find[..find.len() / 2]);
        peer.conn.send_stream(stream).reset(code).unwrap();
        let stopped = i % 2 == 1;
        if stopped {
            peer.conn.recv_stream(stream).stop(code).unwrap();
        }
        pump(&mut node, &mut [&mut peer], &mut now, 10);
        if !stopped {
            assert_eq!(reset_code(&mut peer, stream), Some(CANCELLED), "stream {i}");
        }
    }
    // A whole request still gets its answer.
    let stream = peer.conn.streams().open(Dir::Bi).expect("credit returned");
    assert_eq!(write_some(&mut peer.conn, stream, &find), find.len());
    peer.conn.send_stream(stream).finish().unwrap();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let answer = frames(&peer.read_available(stream));
    assert!(
        matches!(answer.first(), Some(Message::FindNodeReply(_))),
        "{answer:?}"
    );
    assert!(peer.lost.is_none());
}
