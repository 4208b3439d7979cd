//! Admission, tested as an attacker would (docs/SECURITY.md): raw QUIC
//! peers (quinn-proto, their own identities) against one Node, with every
//! packet moved by hand. Handshakes past the threshold must prove their
//! address (Retry) and past the cap are refused; one network gets only its
//! share of connections; connections that never say CONNECT are capped;
//! PINGs are answered at a bounded rate; datagrams that start nothing leave
//! nothing behind. Every refusal is counted, and honest peers are served
//! meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::id::Identity;
use macula::node::{Node, NodeConfig};
use macula::secret::Secret;
use macula::wire::{self, Message};
use macula::{Datagram, Input, Machine};
use quinn_proto::Dir;

mod common;
use common::raw_peer::{NODE, RawPeer, UNIX_MS, config, encode, pump, write_some};

/// DISCONNECT `overloaded` as a QUIC application close code.
const OVERLOADED: u64 = 4;

fn node_with(config: NodeConfig) -> (Node, Instant) {
    let now = common::epoch();
    let secret = Secret::deterministic(1);
    let node = Node::new(config, Identity::from_seed([1; 32]), secret, now, UNIX_MS).unwrap();
    (node, now)
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, host], port))
}

/// Peers `seeds` dialing from one host each.
fn dial_all(node: &Node, now: Instant, seeds: std::ops::Range<u8>) -> Vec<RawPeer> {
    seeds
        .map(|s| RawPeer::dial(node, now, s, addr(s, 5000)))
        .collect()
}

fn pump_all(node: &mut Node, peers: &mut [RawPeer], now: &mut Instant, rounds: usize) {
    let mut refs: Vec<&mut RawPeer> = peers.iter_mut().collect();
    pump(node, &mut refs, now, rounds);
}

#[test]
fn handshakes_past_the_threshold_prove_their_address_and_past_the_cap_are_refused() {
    let mut config = config();
    config.admission.retry_above = 2;
    config.admission.max_handshakes = 4;
    let (mut node, mut now) = node_with(config);
    // Six strangers start handshakes and stop after their first flight:
    // the node sees them as handshakes in progress.
    let mut peers = dial_all(&node, now, 10..16);
    for peer in &mut peers {
        for payload in peer.transmits(now) {
            let datagram = Datagram {
                local: NODE.parse().unwrap(),
                remote: peer.addr,
                payload,
            };
            node.handle_input(now, Input::Datagram(datagram));
        }
    }
    let admission = *node.admission_counters();
    assert_eq!(node.connection_count(), 2, "two handshakes, then Retry");
    assert_eq!(admission.retries, 4);
    // The first two stall; the retried ones get their Retry, come back with
    // the token and are let in up to the cap; the last two are refused.
    pump_all(&mut node, &mut peers[2..], &mut now, 2);
    let admission = *node.admission_counters();
    assert_eq!(node.connection_count(), 4);
    assert_eq!(admission.refused_handshakes, 2, "{admission:?}");
    assert_eq!(node.metrics().admission.handshakes, 4);
    assert_eq!(admission.retries, 4, "a token proves the address once");
}

#[test]
fn one_network_gets_only_its_share_of_connections() {
    let mut config = config();
    config.admission.max_per_ip = 2;
    let (mut node, mut now) = node_with(config);
    let mut crowd: Vec<RawPeer> = (0..3)
        .map(|n| RawPeer::dial(&node, now, 20 + n, addr(7, 5000 + u16::from(n))))
        .collect();
    crowd.push(RawPeer::dial(&node, now, 30, addr(8, 5000)));
    pump_all(&mut node, &mut crowd, &mut now, 20);
    assert_eq!(
        node.connection_count(),
        3,
        "two from 203.0.113.7, one from .8"
    );
    assert_eq!(node.admission_counters().refused_source_network, 1);
    assert!(
        crowd[2].lost.is_some(),
        "the third from one host is refused"
    );
}

#[test]
fn connections_that_never_say_connect_are_capped_and_closed_overloaded() {
    let mut config = config();
    config.admission.max_awaiting_connect = 2;
    let (mut node, mut now) = node_with(config);
    let mut silent = dial_all(&node, now, 40..43);
    pump_all(&mut node, &mut silent, &mut now, 20);
    assert_eq!(node.admission_counters().refused_awaiting_connect, 1);
    let closed: Vec<Option<u64>> = silent.iter().map(RawPeer::close_code).collect();
    assert_eq!(
        closed.iter().filter(|c| **c == Some(OVERLOADED)).count(),
        1,
        "{closed:?}"
    );
    // An honest peer still gets in once a silent one is gone.
    silent.remove(0);
    now += Duration::from_secs(10); // past the CONNECT deadline
    node.handle_input(now, Input::Timeout);
    while node.poll_output().is_some() {}
    let mut honest = RawPeer::dial(&node, now, 50, addr(50, 5000));
    pump(&mut node, &mut [&mut honest], &mut now, 20);
    honest.hello();
    pump(&mut node, &mut [&mut honest], &mut now, 20);
    assert_eq!(honest.lost, None);
    assert_eq!(node.metrics().admission.awaiting_connect, 0);
}

#[test]
fn pings_past_the_rate_go_unanswered_and_requests_are_still_served() {
    let mut config = config();
    // Room for the whole burst left unanswered: this test is about the rate.
    config.admission.pings_before_close = 10_000;
    let (mut node, mut now) = node_with(config);
    let mut peer = RawPeer::dial(&node, now, 60, addr(60, 5000));
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let control = peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    // 2,000 PINGs at once on the control stream.
    let pings: Vec<u8> = (0..2000u64)
        .flat_map(|id| encode(&Message::from(wire::Ping { request_id: id })))
        .collect();
    assert_eq!(write_some(&mut peer.conn, control, &pings), pings.len());
    // And one honest request on a stream of its own.
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    let find = encode(&Message::from(wire::FindNode {
        request_id: 7,
        target: node.node_id(),
    }));
    assert_eq!(write_some(&mut peer.conn, stream, &find), find.len());
    let _ = peer.conn.send_stream(stream).finish();
    pump(&mut node, &mut [&mut peer], &mut now, 50);
    let mut pongs = Vec::new();
    if let Ok(mut chunks) = peer.conn.recv_stream(control).read(true) {
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            pongs.extend_from_slice(&chunk.bytes);
        }
        let _ = chunks.finalize();
    }
    // The rate is 20 a second in bursts of 20, and 100 ms passed.
    let unanswered = node.admission_counters().pings_unanswered;
    assert!(
        (1978..=1980).contains(&unanswered),
        "{unanswered} unanswered"
    );
    let pong_len = encode(&Message::from(wire::Pong { request_id: 0 })).len();
    let answered = (2000 - unanswered) as usize;
    assert!(pongs.len() >= answered * pong_len, "the PONGs arrived");
    assert!(pongs.len() < (answered + 8) * pong_len, "and no more");
    let mut answer = Vec::new();
    if let Ok(mut chunks) = peer.conn.recv_stream(stream).read(true) {
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            answer.extend_from_slice(&chunk.bytes);
        }
        let _ = chunks.finalize();
    }
    assert!(!answer.is_empty(), "the FIND_NODE was answered");
    assert_eq!(node.connection_count(), 1);
}

#[test]
fn a_ping_flood_closes_the_flooder_and_no_one_else() {
    let (mut node, mut now) = node_with(config());
    let mut flooder = RawPeer::dial(&node, now, 60, addr(60, 5000));
    let mut honest = RawPeer::dial(&node, now, 61, addr(61, 5000));
    pump(&mut node, &mut [&mut flooder, &mut honest], &mut now, 20);
    let control = flooder.hello();
    honest.hello();
    pump(&mut node, &mut [&mut flooder, &mut honest], &mut now, 20);
    assert_eq!(node.connection_count(), 2);
    // 20 answered and 100 left unanswered in the first second; more is a flood.
    let pings: Vec<u8> = (0..500u64)
        .flat_map(|id| encode(&Message::from(wire::Ping { request_id: id })))
        .collect();
    assert_eq!(write_some(&mut flooder.conn, control, &pings), pings.len());
    pump(&mut node, &mut [&mut flooder, &mut honest], &mut now, 50);
    let counters = node.admission_counters();
    assert_eq!(counters.closed_flooding, 1);
    assert_eq!(
        counters.pings_unanswered, 101,
        "100 ignored, the 101st closed"
    );
    assert_eq!(flooder.close_code(), Some(2), "closed ProtocolError");
    assert_eq!(node.connection_count(), 1, "the honest peer stays");
    // And is still served.
    let stream = honest.conn.streams().open(Dir::Bi).unwrap();
    let find = encode(&Message::from(wire::FindNode {
        request_id: 7,
        target: node.node_id(),
    }));
    assert_eq!(write_some(&mut honest.conn, stream, &find), find.len());
    pump(&mut node, &mut [&mut flooder, &mut honest], &mut now, 50);
    let mut answer = Vec::new();
    if let Ok(mut chunks) = honest.conn.recv_stream(stream).read(true) {
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            answer.extend_from_slice(&chunk.bytes);
        }
        let _ = chunks.finalize();
    }
    assert!(!answer.is_empty(), "the FIND_NODE was answered");
}

#[test]
fn a_handshake_flood_from_one_network_is_paced_and_others_still_connect() {
    let mut config = config();
    config.admission.handshakes_per_network = 2;
    let (mut node, mut now) = node_with(config);
    // Twelve strangers of 203.0.113.0/24 (validated by a Retry or not, the
    // rate is 2 a second in bursts of 8), and one of another network.
    let mut peers = dial_all(&node, now, 10..22);
    pump_all(&mut node, &mut peers, &mut now, 40);
    let refused = peers.iter().filter(|p| p.lost.is_some()).count();
    let connected = peers
        .iter()
        .filter(|p| p.lost.is_none() && !p.conn.is_handshaking())
        .count();
    assert_eq!((connected, refused), (8, 4), "the burst, then refusals");
    assert_eq!(node.admission_counters().refused_handshake_rate, 4);
    // Another network is not held back by this one.
    let mut other = RawPeer::dial(&node, now, 1, SocketAddr::from(([192, 0, 2, 1], 5000)));
    pump(&mut node, &mut [&mut other], &mut now, 40);
    assert!(
        other.lost.is_none() && !other.conn.is_handshaking(),
        "it connects"
    );
    // A second later the network has earned two more.
    now += Duration::from_secs(1);
    let mut later = dial_all(&node, now, 30..33);
    pump_all(&mut node, &mut later, &mut now, 40);
    let connected = later.iter().filter(|p| p.lost.is_none()).count();
    assert_eq!(connected, 2);
}

#[test]
fn a_fast_peer_is_read_at_its_frame_rate_and_slowed_not_dropped() {
    let mut config = config();
    config.admission.frames_per_second = 100;
    let (mut node, mut now) = node_with(config);
    let mut fast = RawPeer::dial(&node, now, 60, addr(60, 5000));
    let mut other = RawPeer::dial(&node, now, 61, addr(61, 5000));
    pump(&mut node, &mut [&mut fast, &mut other], &mut now, 20);
    fast.hello();
    other.hello();
    pump(&mut node, &mut [&mut fast, &mut other], &mut now, 20);
    // 1,000 PUBLISH frames on one stream (nobody subscribes: each is
    // dropped once read, so the count says how many were read).
    let stream = fast.conn.streams().open(Dir::Bi).unwrap();
    let frames: Vec<u8> = (1..=1000u64)
        .flat_map(|sequence| {
            encode(&Message::from(wire::Publish {
                message_id: sequence,
                epoch: 1,
                sequence,
                topic: "news.flood".into(),
                payload: Bytes::from(vec![0x42; 1000]),
            }))
        })
        .collect();
    // What one read takes at most (a quantum of bytes), in frames.
    let per_read = (64 << 10) / (frames.len() / 1000) as u64 + 1;
    let mut written = write_some(&mut fast.conn, stream, &frames);
    let read = |node: &Node| node.pubsub().stats().unsolicited;
    pump(&mut node, &mut [&mut fast, &mut other], &mut now, 50);
    // 100 ms: the burst of 100 (its last read may take up to a quantum
    // more, paid for by a pause), then nothing more.
    let first = read(&node);
    assert!((100..=100 + per_read).contains(&first), "{first} read");
    // Another node's peer is served meanwhile.
    let stream_b = other.conn.streams().open(Dir::Bi).unwrap();
    let find = encode(&Message::from(wire::FindNode {
        request_id: 7,
        target: node.node_id(),
    }));
    assert_eq!(write_some(&mut other.conn, stream_b, &find), find.len());
    pump(&mut node, &mut [&mut fast, &mut other], &mut now, 10);
    let answered = other.conn.recv_stream(stream_b).read(true).map(|mut c| {
        let got = matches!(c.next(usize::MAX), Ok(Some(_)));
        let _ = c.finalize();
        got
    });
    assert_eq!(
        answered.ok(),
        Some(true),
        "the other peer's request was answered"
    );
    // Twelve seconds later every frame was read, at the rate: none dropped.
    for _ in 0..12 {
        for _ in 0..500 {
            if written < frames.len() {
                written += write_some(&mut fast.conn, stream, &frames[written..]);
            }
            pump(&mut node, &mut [&mut fast, &mut other], &mut now, 1);
        }
        let elapsed = (now - common::epoch()).as_millis() as u64;
        let most = first + elapsed / 10 + per_read;
        assert!(read(&node) <= most, "{} read in {elapsed} ms", read(&node));
    }
    assert_eq!(read(&node), 1000);
    assert_eq!(node.connection_count(), 2);
}

#[test]
fn datagrams_that_start_nothing_leave_nothing_behind() {
    let (mut node, now) = node_with(config());
    let before = node.path_count();
    for port in 0..60_000u16 {
        let datagram = Datagram {
            local: NODE.parse().unwrap(),
            remote: SocketAddr::from(([203, 0, 113, 99], port.wrapping_add(1024))),
            payload: Bytes::from_static(&[0x40]),
        };
        node.handle_input(now, Input::Datagram(datagram));
        while node.poll_output().is_some() {}
    }
    assert_eq!(node.path_count(), before);
    assert_eq!(node.connection_count(), 0);
}

/// Declares a streamed CALL of `total_len` bytes on a new stream of a
/// served peer and returns the node's first answer frame on it, if any.
fn declare_payload(node_config: NodeConfig, total_len: u64) -> Option<Message> {
    let (mut node, mut now) = node_with(node_config);
    node.register(now, "svc.big", Default::default()).unwrap();
    let mut peer = RawPeer::dial(&node, now, 80, addr(80, 5000));
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    let mut frames = encode(&Message::from(wire::PayloadSize {
        request_id: 1,
        total_len,
    }));
    frames.extend(encode(&Message::from(wire::Call {
        request_id: 1,
        procedure: "svc.big".into(),
        timeout_ms: 10_000,
        idempotent: false,
        payload: Bytes::from(vec![7; 1 << 10]),
    })));
    assert_eq!(write_some(&mut peer.conn, stream, &frames), frames.len());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let mut answer = Vec::new();
    if let Ok(mut chunks) = peer.conn.recv_stream(stream).read(true) {
        while let Ok(Some(part)) = chunks.next(usize::MAX) {
            answer.extend_from_slice(&part.bytes);
        }
        let _ = chunks.finalize();
    }
    match wire::decode(&answer, &wire::Limits::default()) {
        Ok(wire::Decoded::Complete(message, _)) => Some(message),
        _ => None,
    }
}

#[test]
fn payloads_being_reassembled_share_the_node_wide_budget() {
    // Within the default budget, a 4 MiB CALL is admitted: no answer yet.
    assert_eq!(declare_payload(config(), 4 << 20), None);
    // With a node-wide budget of 2 MiB, the one connection's share cannot
    // hold it: refused at once, `overloaded`, so the caller may go elsewhere.
    let mut small = config();
    small.admission.memory_budget = 2 << 20;
    let Some(Message::ErrorReply(error)) = declare_payload(small, 4 << 20) else {
        panic!("an ERROR answers the CALL");
    };
    assert_eq!(error.code, wire::ErrorCode::Overloaded);
}
