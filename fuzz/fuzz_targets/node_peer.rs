//! A whole Node against an adversarial peer: a raw quinn-proto client with a
//! valid identity completes the QUIC and TLS handshake, then the input
//! decides what it sends — valid frames of any message type (CONNECT with
//! any fields among them), frames whose body does not decode, raw bytes —
//! before or after CONNECT, on the control stream, on new streams or on
//! streams it already used, cut at any point, finished or reset, whether it
//! reads the node's answers or not, with time advancing. The node must never
//! panic and must keep the contract: after an input and a drain, a deadline
//! that is due is served by one `Timeout`, after which the next deadline
//! lies in the future (a node asking for `Timeout` at `now` again would spin
//! its driver).
//!
//! The node serves one procedure (`fuzz.echo`, answered at once) and
//! subscribes to `fuzz.#`, so CALL and PUBLISH reach their handlers. The
//! handshake is the costly part of an input (two signatures and their
//! checks); the peer's TLS configuration is made once per process.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use macula::id::{Identity, NodeId, Realm};
use macula::node::{Event, Node, NodeConfig};
use macula::pubsub::Pattern;
use macula::quic::{QuicConfigs, TransportSettings};
use macula::rpc::{InboundId, RegisterOptions, RpcEvent};
use macula::secret::Secret;
use macula::tls::{self, NodeTls, PeerVerification, WallClock};
use macula::wire::{self, Capabilities, HEADER_LEN, Limits, Message, MessageType};
use macula::{Datagram, Input, Machine, Output};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    StreamId, VarInt,
};

/// The wall clock at the start of every run, Unix milliseconds.
const UNIX_MS: u64 = 1_795_478_400_000;
/// The realm of node and peer.
const REALM: &str = "io.macula.fuzz";
/// The peer's identity seed.
const PEER_SEED: [u8; 32] = [2; 32];
/// Operations read from one input at most (keeps each run short).
const MAX_OPS: usize = 48;
/// Rounds of packet exchange for the handshake.
const HANDSHAKE_ROUNDS: usize = 8;

fn node_addr() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 1], 4433))
}

fn peer_addr() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 7], 5000))
}

fn realm() -> Realm {
    Realm::new(REALM).unwrap()
}

/// One base instant for every run (the core never reads a clock).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)]
    *EPOCH.get_or_init(Instant::now)
}

/// The node's identity, made once.
fn node_identity() -> &'static Identity {
    static NODE: OnceLock<Identity> = OnceLock::new();
    NODE.get_or_init(|| Identity::from_seed([1; 32]))
}

/// The peer's identity and QUIC configuration, made once per process.
fn peer_configs() -> &'static (
    Identity,
    std::sync::Arc<EndpointConfig>,
    ClientConfig,
    [u8; 32],
) {
    static PEER: OnceLock<(
        Identity,
        std::sync::Arc<EndpointConfig>,
        ClientConfig,
        [u8; 32],
    )> = OnceLock::new();
    PEER.get_or_init(|| {
        let identity = Identity::from_seed(PEER_SEED);
        let clock = WallClock::at(UNIX_MS / 1000);
        let tls = NodeTls::self_signed(&identity, PeerVerification::Identity, clock).unwrap();
        let configs = QuicConfigs::new(
            tls,
            &TransportSettings::default(),
            &Secret::deterministic(2),
            &Secret::deterministic(3),
        )
        .unwrap();
        let client = configs.client_config(node_identity().node_id(), false).unwrap();
        (identity, configs.endpoint.clone(), client, configs.rng_seed)
    })
}

/// Which stream an operation uses.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pick {
    /// The first stream the peer opened (opened now if there is none).
    Control,
    /// A new stream, bidirectional or not.
    New { bidi: bool },
    /// One the peer already opened (by index, wrapping).
    Used(u8),
}

/// What the peer does next.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A well-formed CONNECT with the fields chosen.
    Hello {
        stream: Pick,
        /// Its own node id, or another one.
        own_id: bool,
        /// The node's realm, or another one.
        own_realm: bool,
        capabilities: u8,
        listen: Vec<([u8; 4], u16)>,
    },
    /// A frame of message type `ty` (an index into the known types) with
    /// `body`: re-encoded when the body decodes (a valid message), sent as
    /// it is otherwise. Only the first `cut` bytes go now when `cut` is
    /// shorter than the frame; the rest follows after a round of packets.
    Frame {
        stream: Pick,
        ty: u8,
        body: Vec<u8>,
        cut: u16,
    },
    /// Bytes as they are.
    Raw { stream: Pick, bytes: Vec<u8> },
    /// Ends the stream (FIN).
    Finish(Pick),
    /// Abandons the stream (RESET_STREAM).
    Reset(Pick, u8),
    /// Asks the node to stop sending on the stream (STOP_SENDING).
    StopSending(Pick, u8),
    /// Reads whatever the node sent, on every stream.
    Read,
    /// Closes the connection.
    Close(u8),
    /// Exchanges packets for a few rounds.
    Pump(u8),
    /// Lets time pass (milliseconds), then exchanges packets once.
    Wait(u16),
}

/// The raw peer: a quinn-proto endpoint and its one connection to the node.
struct Peer {
    endpoint: Endpoint,
    handle: ConnectionHandle,
    conn: Connection,
    /// The streams it opened, in order.
    streams: Vec<StreamId>,
}

impl Peer {
    fn dial(now: Instant) -> Self {
        let (_, endpoint_config, client, rng_seed) = peer_configs();
        let mut endpoint = Endpoint::new(endpoint_config.clone(), None, true, Some(*rng_seed));
        let (handle, conn) = endpoint
            .connect(now, client.clone(), node_addr(), tls::SERVER_NAME)
            .unwrap();
        Peer {
            endpoint,
            handle,
            conn,
            streams: Vec::new(),
        }
    }

    /// The stream `pick` names, opening one when it has to; `None` when
    /// flow control allows no new stream.
    fn stream(&mut self, pick: Pick) -> Option<StreamId> {
        match pick {
            Pick::Used(i) if !self.streams.is_empty() => {
                Some(self.streams[usize::from(i) % self.streams.len()])
            }
            Pick::Control | Pick::Used(_) if !self.streams.is_empty() => Some(self.streams[0]),
            Pick::New { bidi: false } => self.open(Dir::Uni),
            _ => self.open(Dir::Bi),
        }
    }

    fn open(&mut self, dir: Dir) -> Option<StreamId> {
        let id = self.conn.streams().open(dir)?;
        self.streams.push(id);
        Some(id)
    }

    /// Writes what flow control takes of `data` on `pick`.
    fn write(&mut self, pick: Pick, data: &[u8]) {
        if let Some(id) = self.stream(pick) {
            let _ = self.conn.send_stream(id).write(data);
        }
    }

    /// Reads every stream the node wrote to (its own included).
    fn read_all(&mut self) {
        for dir in [Dir::Bi, Dir::Uni] {
            while let Some(id) = self.conn.streams().accept(dir) {
                self.streams.push(id);
            }
        }
        for &id in &self.streams {
            let mut recv = self.conn.recv_stream(id);
            if let Ok(mut chunks) = recv.read(true) {
                while let Ok(Some(_)) = chunks.next(usize::MAX) {}
                let _ = chunks.finalize();
            }
        }
    }

    /// A packet from the node.
    fn receive(&mut self, now: Instant, payload: Bytes) {
        let mut buf = Vec::new();
        if let Some(DatagramEvent::ConnectionEvent(_, event)) = self.endpoint.handle(
            now,
            node_addr(),
            None,
            None,
            BytesMut::from(&payload[..]),
            &mut buf,
        ) {
            self.conn.handle_event(event);
        }
    }

    /// Hands the peer's pending packets to the node.
    fn send(&mut self, now: Instant, node: &mut Node) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        let mut buf = Vec::new();
        while let Some(t) = self.conn.poll_transmit(now, 1, &mut buf) {
            let payload = Bytes::copy_from_slice(&buf[..t.size]);
            buf.clear();
            let datagram = Datagram {
                local: node_addr(),
                remote: peer_addr(),
                payload,
            };
            node.handle_input(now, Input::Datagram(datagram));
            drain(node, now, self);
        }
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(back);
            }
        }
        while self.conn.poll().is_some() {}
    }
}

/// Drains the node's output (packets go to the peer; calls are answered),
/// serves a due deadline with one `Timeout`, and checks that the next
/// deadline is then in the future.
fn drain(node: &mut Node, now: Instant, peer: &mut Peer) {
    let mut calls = Vec::new();
    take(node, now, peer, &mut calls);
    if node.poll_timeout().is_some_and(|t| t <= now) {
        node.handle_input(now, Input::Timeout);
        take(node, now, peer, &mut calls);
    }
    while let Some((id, payload)) = calls.pop() {
        let _ = node.reply(now, id, Ok(payload));
        take(node, now, peer, &mut calls);
    }
    if let Some(deadline) = node.poll_timeout() {
        assert!(
            deadline > now,
            "after a Timeout the node asks for another at once"
        );
    }
}

/// Takes the node's output: packets go to the peer, calls into `calls`.
fn take(node: &mut Node, now: Instant, peer: &mut Peer, calls: &mut Vec<(InboundId, Bytes)>) {
    while let Some(output) = node.poll_output() {
        match output {
            Output::Transmit(t) if t.destination == peer_addr() => {
                for datagram in t.split(1) {
                    peer.receive(now, datagram.payload);
                }
            }
            Output::Event(Event::Rpc(RpcEvent::Request { id, payload, .. })) => {
                calls.push((id, payload));
            }
            _ => {}
        }
    }
}

/// Moves packets both ways for `rounds` rounds, 1 ms apart.
fn pump(node: &mut Node, peer: &mut Peer, now: &mut Instant, rounds: usize) {
    for _ in 0..rounds {
        *now += Duration::from_millis(1);
        peer.send(*now, node);
        drain(node, *now, peer);
    }
}

/// The frame of type `ty` with `body`: the message re-encoded when the body
/// decodes, the raw frame otherwise.
fn frame(ty: u8, body: &[u8], limits: &Limits) -> Vec<u8> {
    let ty = MessageType::ALL[usize::from(ty) % MessageType::ALL.len()];
    let mut raw = Vec::with_capacity(HEADER_LEN + body.len());
    raw.extend_from_slice(&[wire::VERSION, ty.code(), 0, 0]);
    raw.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    raw.extend_from_slice(body);
    match wire::decode(&raw, limits) {
        Ok(wire::Decoded::Complete(message, _)) => message.to_vec(limits).unwrap_or(raw),
        _ => raw,
    }
}

fn hello(own_id: bool, own_realm: bool, capabilities: u8, listen: &[([u8; 4], u16)]) -> Vec<u8> {
    let node_id = match own_id {
        true => peer_configs().0.node_id(),
        false => NodeId::from_bytes([3; 32]),
    };
    let realm = match own_realm {
        true => realm(),
        false => Realm::new("io.macula.other").unwrap(),
    };
    let listen_addrs = listen
        .iter()
        .take(Limits::default().max_addrs as usize + 1)
        .map(|&(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        .collect();
    let connect = wire::Connect {
        node_id,
        realm,
        capabilities: Capabilities(u64::from(capabilities)),
        listen_addrs,
    };
    Message::from(connect)
        .to_vec(&Limits::default())
        .unwrap_or_default()
}

fn new_node(now: Instant) -> Node {
    let mut config = NodeConfig::new(realm());
    config.listen_addrs = vec![node_addr()];
    config.relay.mode = macula::relay::RelayMode::Always;
    let mut node = Node::new(
        config,
        node_identity().clone(),
        Secret::deterministic(1),
        now,
        UNIX_MS,
    )
    .unwrap();
    node.register(now, "fuzz.echo", RegisterOptions::default())
        .unwrap();
    node.subscribe(now, Pattern::new("fuzz.#").unwrap())
        .unwrap();
    node
}

fuzz_target!(|data: &[u8]| {
    let mut now = epoch();
    let mut node = new_node(now);
    let mut peer = Peer::dial(now);
    pump(&mut node, &mut peer, &mut now, HANDSHAKE_ROUNDS);

    let limits = Limits::default();
    let mut input = Unstructured::new(data);
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        match op {
            Op::Hello {
                stream,
                own_id,
                own_realm,
                capabilities,
                listen,
            } => peer.write(stream, &hello(own_id, own_realm, capabilities, &listen)),
            Op::Frame {
                stream,
                ty,
                body,
                cut,
            } => {
                let bytes = frame(ty, &body, &limits);
                let (first, rest) = bytes.split_at(usize::from(cut).min(bytes.len()));
                peer.write(stream, first);
                if !rest.is_empty() {
                    pump(&mut node, &mut peer, &mut now, 1);
                    peer.write(stream, rest);
                }
            }
            Op::Raw { stream, bytes } => peer.write(stream, &bytes),
            Op::Finish(pick) => {
                if let Some(id) = peer.stream(pick) {
                    let _ = peer.conn.send_stream(id).finish();
                }
            }
            Op::Reset(pick, code) => {
                if let Some(id) = peer.stream(pick) {
                    let _ = peer.conn.send_stream(id).reset(VarInt::from(code));
                }
            }
            Op::StopSending(pick, code) => {
                if let Some(id) = peer.stream(pick) {
                    let _ = peer.conn.recv_stream(id).stop(VarInt::from(code));
                }
            }
            Op::Read => peer.read_all(),
            Op::Close(code) => peer.conn.close(now, VarInt::from(code), Bytes::new()),
            Op::Pump(rounds) => pump(&mut node, &mut peer, &mut now, usize::from(rounds % 8)),
            Op::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                pump(&mut node, &mut peer, &mut now, 1);
            }
        }
    }
    pump(&mut node, &mut peer, &mut now, 4);
    now += Duration::from_secs(120);
    pump(&mut node, &mut peer, &mut now, 2);
});
