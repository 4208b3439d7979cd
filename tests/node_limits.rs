//! A peer that opens streams and never lets frames complete cannot make a
//! node's buffers grow past their bound: the node stops reading, and QUIC
//! flow control stops the peer. Nor can one that declares a giant streamed
//! payload: it is refused on its declared length and dropped as it comes.
//! A request it never answers times out and its stream is stopped, and a
//! publication no frame could carry is refused when it is made.
//!
//! The peer here is a raw quinn-proto endpoint with valid TLS and a valid
//! CONNECT, so the node serves it; then it opens every stream it may and
//! writes frame headers announcing 1 MiB bodies that never arrive in full.

use std::time::Instant;

use bytes::Bytes;

use macula::id::Identity;
use macula::node::Node;
use macula::quic::TransportSettings;
use macula::secret::Secret;
use macula::wire::{self, Limits, Message};
use quinn_proto::Dir;

mod common;
use common::raw_peer::{RawPeer, UNIX_MS, config, node, pump, write_some};

/// A node, and a peer whose connection it serves (a valid CONNECT went on
/// the control stream).
fn served_peer() -> (Node, RawPeer, Instant) {
    let mut now = common::epoch();
    let mut node = Node::new(
        config(),
        Identity::from_seed([1; 32]),
        Secret::deterministic(1),
        now,
        UNIX_MS,
    )
    .unwrap();
    let mut peer = RawPeer::dial(&node, now, 50, "198.51.100.2:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert_eq!(node.connection_count(), 1);
    (node, peer, now)
}

#[test]
fn trickled_partial_frames_on_every_stream_stay_within_the_buffer_budget() {
    let budget = config().connection_buffer_budget();
    let (mut node, mut peer, mut now) = served_peer();

    // Every other stream: a FIND_NODE header announcing a 1 MiB body, then
    // as much of that body as the node lets through, never all of it.
    let mut header = vec![wire::VERSION, 0x40, 0, 0];
    header.extend_from_slice(&(1u32 << 20).to_be_bytes());
    let body = vec![0u8; (1 << 20) - 1];
    let mut streams = Vec::new();
    while let Some(stream) = peer.conn.streams().open(Dir::Bi) {
        assert_eq!(write_some(&mut peer.conn, stream, &header), header.len());
        streams.push((stream, 0usize));
    }
    assert!(
        streams.len() >= 50,
        "the peer opened {} streams",
        streams.len()
    );
    let mut sent = 0usize;
    let mut peak = 0usize;
    for _ in 0..200 {
        for (stream, offset) in &mut streams {
            let taken = write_some(&mut peer.conn, *stream, &body[*offset..]);
            *offset += taken;
            sent += taken;
        }
        pump(&mut node, &mut [&mut peer], &mut now, 1);
        peak = peak.max(node.buffered_bytes());
    }
    assert!(
        peak <= budget + (1 << 20),
        "node buffers peaked at {peak} bytes, budget {budget}"
    );
    let window = TransportSettings::default().connection_receive_window as usize;
    assert!(
        sent <= budget + window + (1 << 20),
        "the peer got {sent} bytes in; the node's budget {budget} plus QUIC's window {window} should stop it"
    );
    assert!(
        sent > budget / 2,
        "the test pushed real data ({sent} bytes)"
    );
    assert_eq!(
        node.connection_count(),
        1,
        "a slow peer is throttled, not dropped"
    );
}

#[test]
fn a_peer_declaring_a_giant_payload_is_refused_and_never_buffered() {
    let (mut node, mut peer, mut now) = served_peer();
    node.register(now, "svc.big", Default::default()).unwrap();
    let limits = Limits::default();

    // A CALL declaring a 1 TiB payload, then chunk after chunk of it.
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    let size = Message::from(wire::PayloadSize {
        request_id: 1,
        total_len: 1 << 40,
    });
    let head = Message::from(wire::Call {
        request_id: 1,
        procedure: "svc.big".into(),
        timeout_ms: 10_000,
        idempotent: false,
        payload: Bytes::from(vec![7; 1 << 19]),
    });
    let chunk = Message::from(wire::PayloadChunk {
        request_id: 1,
        data: Bytes::from(vec![7; 1 << 19]),
    });
    let mut pending = size.to_vec(&limits).unwrap();
    pending.extend(head.to_vec(&limits).unwrap());
    let chunk = chunk.to_vec(&limits).unwrap();
    let (mut sent, mut peak, mut answer) = (0usize, 0usize, Vec::new());
    for _ in 0..400 {
        if pending.len() < chunk.len() {
            pending.extend_from_slice(&chunk);
        }
        let taken = write_some(&mut peer.conn, stream, &pending);
        pending.drain(..taken);
        sent += taken;
        pump(&mut node, &mut [&mut peer], &mut now, 1);
        peak = peak.max(node.buffered_bytes());
        if let Ok(mut chunks) = peer.conn.recv_stream(stream).read(true) {
            while let Ok(Some(part)) = chunks.next(usize::MAX) {
                answer.extend_from_slice(&part.bytes);
            }
            let _ = chunks.finalize();
        }
    }
    let Ok(wire::Decoded::Complete(Message::ErrorReply(error), _)) = wire::decode(&answer, &limits)
    else {
        panic!("an ERROR answers the CALL: {answer:?}");
    };
    assert_eq!(
        (error.request_id, error.code),
        (1, wire::ErrorCode::TooLarge)
    );
    assert!(sent > 8 << 20, "the peer kept sending ({sent} bytes)");
    assert!(peak <= 2 << 20, "the node held {peak} bytes");
    assert_eq!(node.counters().protocol_errors, 0);
    assert_eq!(node.connection_count(), 1, "refused, not dropped");
}

fn small_limits() -> Limits {
    Limits {
        max_frame_len: 4096,
        ..Limits::DEFAULT
    }
}

#[test]
fn a_publication_larger_than_a_frame_carries_is_refused_with_a_typed_error() {
    let now = common::epoch();
    let mut small = config();
    small.limits = small_limits();
    let mut node = node(small, now);
    let max = macula::pubsub::max_publish_payload(&small_limits());
    assert!(max < 4096);
    let topic = macula::pubsub::Topic::new("sensors.temperature").unwrap();
    let refused = node.publish(now, topic.clone(), Bytes::from(vec![0; max + 1]));
    assert_eq!(
        refused,
        Err(macula::pubsub::PubSubError::TooLarge { size: max + 1, max }),
        "refused at publish, not dropped when its frame fails to encode"
    );
    assert!(node.publish(now, topic, Bytes::from(vec![0; max])).is_ok());
}

/// A peer that takes a DHT request and never answers: once the request's
/// deadline passes the node counts a timeout and stops the stream with
/// `STREAM_TIMED_OUT` (0x100): an answer the peer writes late is refused.
#[test]
fn a_dht_request_the_peer_never_answers_times_out_and_its_stream_is_stopped() {
    let (mut node, mut peer, mut now) = served_peer();
    let contact = macula::dht::Contact::new(peer.identity.node_id(), peer.addr);
    node.bootstrap(now, vec![contact]);
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let mut requests = Vec::new();
    while let Some(stream) = peer.conn.streams().accept(Dir::Bi) {
        requests.push(stream);
    }
    assert!(!requests.is_empty(), "the node asked the peer");
    for &stream in &requests {
        assert!(!peer.read_available(stream).is_empty(), "a request came");
    }
    // Never answered: well past the node's request timeout (10 s).
    for _ in 0..12 {
        pump(&mut node, &mut [&mut peer], &mut now, 500);
    }
    assert!(node.counters().request_timeouts >= 1);
    // The node stopped the stream: an answer written now is refused with its code.
    let mut reset = 0;
    for &stream in &requests {
        if let Err(quinn_proto::WriteError::Stopped(code)) =
            peer.conn.send_stream(stream).write(b"late")
        {
            // docs/PROTOCOL.md: 0x100, a request whose answer did not come in time.
            assert_eq!(code, quinn_proto::VarInt::from_u32(0x100));
            reset += 1;
        }
    }
    assert!(reset >= 1, "the node stopped the request's stream");
}
