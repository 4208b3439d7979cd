//! A peer that opens streams and never lets frames complete cannot make a
//! node's buffers grow past their bound: the node stops reading, and QUIC
//! flow control stops the peer.
//!
//! The peer here is a raw quinn-proto endpoint with valid TLS and a valid
//! CONNECT, so the node serves it; then it opens every stream it may and
//! writes frame headers announcing 1 MiB bodies that never arrive in full.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use macula::id::{Identity, Realm};
use macula::node::{Node, NodeConfig};
use macula::quic::{QuicConfigs, TransportSettings};
use macula::tls::{self, NodeTls, PeerVerification, WallClock};
use macula::wire::{self, Capabilities, Limits, Message};
use macula::{Datagram, Input, Machine, Output};
use quinn_proto::{Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, StreamId};

const UNIX_MS: u64 = 1_795_478_400_000;
const NODE: &str = "198.51.100.1:4433";
const PEER: &str = "198.51.100.2:5000";

fn realm() -> Realm {
    Realm::new("io.macula.test").unwrap()
}

/// The misbehaving peer: a quinn-proto endpoint and its one connection.
struct Peer {
    endpoint: Endpoint,
    handle: ConnectionHandle,
    conn: Connection,
}

impl Peer {
    fn dial(node: &Node, now: Instant) -> Self {
        let identity = Identity::from_seed([50; 32]);
        let tls = NodeTls::self_signed(
            &identity,
            PeerVerification::Identity,
            WallClock::at(UNIX_MS / 1000),
        )
        .unwrap();
        let configs = QuicConfigs::new(tls, &TransportSettings::default(), 50).unwrap();
        let mut endpoint =
            Endpoint::new(configs.endpoint.clone(), None, true, Some(configs.rng_seed));
        let client = configs.client_config(node.node_id()).unwrap();
        let (handle, conn) = endpoint
            .connect(now, client, NODE.parse().unwrap(), tls::SERVER_NAME)
            .unwrap();
        Peer {
            endpoint,
            handle,
            conn,
        }
    }

    fn receive(&mut self, now: Instant, payload: &[u8]) {
        let mut buf = Vec::new();
        let from: SocketAddr = NODE.parse().unwrap();
        if let Some(DatagramEvent::ConnectionEvent(_, event)) =
            self.endpoint
                .handle(now, from, None, None, BytesMut::from(payload), &mut buf)
        {
            self.conn.handle_event(event);
        }
    }

    fn transmits(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            match self.conn.poll_transmit(now, 1, &mut buf) {
                Some(t) => out.push(Bytes::copy_from_slice(&buf[..t.size])),
                None => break,
            }
        }
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(back);
            }
        }
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        while self.conn.poll().is_some() {}
        out
    }
}

/// Moves packets both ways (2 ms per hop) for `rounds` rounds.
fn pump(node: &mut Node, peer: &mut Peer, now: &mut Instant, rounds: usize) {
    let (node_addr, peer_addr): (SocketAddr, SocketAddr) =
        (NODE.parse().unwrap(), PEER.parse().unwrap());
    for _ in 0..rounds {
        *now += Duration::from_millis(2);
        for payload in peer.transmits(*now) {
            let datagram = Datagram {
                local: node_addr,
                remote: peer_addr,
                payload,
            };
            node.handle_input(*now, Input::Datagram(datagram));
        }
        if node.poll_timeout().is_some_and(|t| t <= *now) {
            node.handle_input(*now, Input::Timeout);
        }
        while let Some(output) = node.poll_output() {
            if let Output::Transmit(t) = output {
                assert_eq!(t.destination, peer_addr);
                peer.receive(*now, &t.payload);
            }
        }
    }
}

/// Writes as much of `data` as flow control takes; returns the bytes taken.
fn write_some(conn: &mut Connection, stream: StreamId, data: &[u8]) -> usize {
    conn.send_stream(stream).write(data).unwrap_or(0)
}

#[test]
fn trickled_partial_frames_on_every_stream_stay_within_the_buffer_budget() {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut config = NodeConfig::new(realm());
    config.listen_addrs = vec![NODE.parse().unwrap()];
    let budget = config.connection_buffer_budget();
    let mut node = Node::new(config, Identity::from_seed([1; 32]), 1, now, UNIX_MS).unwrap();
    let mut peer = Peer::dial(&node, now);
    pump(&mut node, &mut peer, &mut now, 20);

    // A valid CONNECT on the control stream, so the node serves the peer.
    let control = peer.conn.streams().open(Dir::Bi).unwrap();
    let hello = Message::from(wire::Connect {
        node_id: Identity::from_seed([50; 32]).node_id(),
        realm: realm(),
        capabilities: Capabilities::NONE,
        listen_addrs: vec![],
    });
    let hello = hello.to_vec(&Limits::default()).unwrap();
    assert_eq!(write_some(&mut peer.conn, control, &hello), hello.len());
    pump(&mut node, &mut peer, &mut now, 20);
    assert_eq!(node.connection_count(), 1);

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
        pump(&mut node, &mut peer, &mut now, 1);
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
