//! A raw quinn-proto peer with its own identity, driven against a Node by
//! hand (quinn-proto's Pair harness, one side a Node): it speaks QUIC and
//! TLS correctly and then whatever bytes the test wants, in any phase.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use macula::id::{Identity, Realm};
use macula::node::{Node, NodeConfig};
use macula::quic::{QuicConfigs, TransportSettings};
use macula::secret::Secret;
use macula::tls::{self, NodeTls, PeerVerification, WallClock};
use macula::wire::{self, Capabilities, Limits, Message};
use macula::{Datagram, Input, Machine, Output};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, StreamId,
};

/// The wall clock at the tests' start, Unix milliseconds.
pub const UNIX_MS: u64 = 1_795_478_400_000;
/// The node's address.
pub const NODE: &str = "198.51.100.1:4433";

/// The realm of these tests.
pub fn realm() -> Realm {
    Realm::new("io.macula.test").unwrap()
}

/// The node's settings in these tests.
pub fn config() -> NodeConfig {
    let mut config = NodeConfig::new(realm());
    config.listen_addrs = vec![NODE.parse().unwrap()];
    config
}

/// The node of these tests (identity seed 1) with `config`, started at `now`.
pub fn node(config: NodeConfig, now: Instant) -> Node {
    let identity = Identity::from_seed([1; 32]);
    Node::new(config, identity, Secret::deterministic(1), now, UNIX_MS).unwrap()
}

/// A raw peer: a quinn-proto endpoint at `addr` and its one connection to
/// the node.
pub struct RawPeer {
    /// Where its packets come from.
    pub addr: SocketAddr,
    /// Its identity.
    pub identity: Identity,
    endpoint: Endpoint,
    handle: ConnectionHandle,
    /// Its connection.
    pub conn: Connection,
    /// Why the connection was lost, once it was.
    pub lost: Option<ConnectionError>,
}

impl RawPeer {
    /// Starts a handshake with `node` from `addr`, as identity `seed`.
    pub fn dial(node: &Node, now: Instant, seed: u8, addr: SocketAddr) -> Self {
        let identity = Identity::from_seed([seed; 32]);
        let tls = NodeTls::self_signed(
            &identity,
            PeerVerification::Identity,
            WallClock::at(UNIX_MS / 1000),
        )
        .unwrap();
        let settings = TransportSettings::default();
        let secret = Secret::deterministic(u64::from(seed));
        let stable = Secret::from_bytes(identity.secret_seed());
        let configs = QuicConfigs::new(tls, &settings, &secret, &stable).unwrap();
        let mut endpoint =
            Endpoint::new(configs.endpoint.clone(), None, true, Some(configs.rng_seed));
        let client = configs.client_config(node.node_id(), false).unwrap();
        let (handle, conn) = endpoint
            .connect(now, client, NODE.parse().unwrap(), tls::SERVER_NAME)
            .unwrap();
        RawPeer {
            addr,
            identity,
            endpoint,
            handle,
            conn,
            lost: None,
        }
    }

    /// A packet from the node.
    pub fn receive(&mut self, now: Instant, payload: &[u8]) {
        let mut buf = Vec::new();
        let from: SocketAddr = NODE.parse().unwrap();
        if let Some(DatagramEvent::ConnectionEvent(_, event)) =
            self.endpoint
                .handle(now, from, None, None, BytesMut::from(payload), &mut buf)
        {
            self.conn.handle_event(event);
        }
    }

    /// The packets the peer sends now.
    pub fn transmits(&mut self, now: Instant) -> Vec<Bytes> {
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
        while let Some(event) = self.conn.poll() {
            if let quinn_proto::Event::ConnectionLost { reason } = event {
                self.lost = Some(reason);
            }
        }
        out
    }

    /// Opens the control stream and writes a valid CONNECT on it.
    pub fn hello(&mut self) -> StreamId {
        let control = self.conn.streams().open(Dir::Bi).unwrap();
        let hello = self.connect_frame(realm());
        assert_eq!(write_some(&mut self.conn, control, &hello), hello.len());
        control
    }

    /// The bytes of this peer's CONNECT, claiming `realm`.
    pub fn connect_frame(&self, realm: Realm) -> Vec<u8> {
        encode(&Message::from(wire::Connect {
            node_id: self.identity.node_id(),
            realm,
            capabilities: Capabilities::NONE,
            listen_addrs: vec![],
        }))
    }

    /// The bytes that have arrived on `stream` since the last read.
    pub fn read_available(&mut self, stream: StreamId) -> Vec<u8> {
        let mut data = Vec::new();
        if let Ok(mut chunks) = self.conn.recv_stream(stream).read(true) {
            while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                data.extend_from_slice(&chunk.bytes);
            }
            let _ = chunks.finalize();
        }
        data
    }

    /// The application close reason phrase the node closed the connection
    /// with, if it did.
    pub fn close_reason(&self) -> Option<String> {
        match &self.lost {
            Some(ConnectionError::ApplicationClosed(close)) => {
                Some(String::from_utf8_lossy(&close.reason).into_owned())
            }
            _ => None,
        }
    }

    /// The application close code the node closed the connection with, or
    /// `None` while it is open (or lost otherwise).
    pub fn close_code(&self) -> Option<u64> {
        match &self.lost {
            Some(ConnectionError::ApplicationClosed(close)) => Some(close.error_code.into_inner()),
            _ => None,
        }
    }
}

/// The bytes of one frame.
pub fn encode(message: &Message) -> Vec<u8> {
    message.to_vec(&Limits::default()).unwrap()
}

/// The frames in `data`, decoded strictly (a test fails on bad bytes).
pub fn frames(mut data: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while !data.is_empty() {
        match wire::decode(data, &Limits::default()).unwrap() {
            wire::Decoded::Complete(message, used) => {
                out.push(message);
                data = &data[used..];
            }
            wire::Decoded::NeedMore(_) => panic!("a frame cut short: {data:?}"),
        }
    }
    out
}

/// Pumps until `peer`'s connection is lost (at most `rounds` rounds) and
/// returns everything that arrived on `stream` meanwhile, read after each
/// round (quinn forgets a stream's data once the connection is closed).
pub fn pump_until_lost(
    node: &mut Node,
    peer: &mut RawPeer,
    now: &mut Instant,
    rounds: usize,
    stream: StreamId,
) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..rounds {
        pump(node, &mut [&mut *peer], now, 1);
        data.extend(peer.read_available(stream));
        if peer.lost.is_some() {
            break;
        }
    }
    data
}

/// Writes as much of `data` as flow control takes; returns the bytes taken.
pub fn write_some(conn: &mut Connection, stream: StreamId, data: &[u8]) -> usize {
    conn.send_stream(stream).write(data).unwrap_or(0)
}

/// Moves packets both ways (2 ms per hop) for `rounds` rounds between the
/// node and every peer; packets to other addresses are dropped.
pub fn pump(node: &mut Node, peers: &mut [&mut RawPeer], now: &mut Instant, rounds: usize) {
    let node_addr: SocketAddr = NODE.parse().unwrap();
    for _ in 0..rounds {
        *now += Duration::from_millis(2);
        for peer in peers.iter_mut() {
            for payload in peer.transmits(*now) {
                let datagram = Datagram {
                    local: node_addr,
                    remote: peer.addr,
                    payload,
                };
                node.handle_input(*now, Input::Datagram(datagram));
            }
        }
        if node.poll_timeout().is_some_and(|t| t <= *now) {
            node.handle_input(*now, Input::Timeout);
        }
        while let Some(output) = node.poll_output() {
            if let Output::Transmit(t) = output
                && let Some(peer) = peers.iter_mut().find(|p| p.addr == t.destination)
            {
                peer.receive(*now, &t.payload);
            }
        }
    }
}
