//! A stranger: an independent QUIC client (plain quinn, its own Ed25519
//! identity, mutual TLS as the protocol asks) that speaks to a running node
//! byte by byte, to behave as no honest node would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use macula::id::{Identity, NodeId, Realm};
use macula::tls::{NodeTls, PeerVerification, WallClock};
use macula::wire::{self, Limits, Message};
use tokio::time::timeout;

use super::LIMIT;

/// A client endpoint on loopback with its own identity.
pub struct Stranger {
    identity: Identity,
    endpoint: quinn::Endpoint,
}

impl Stranger {
    /// A stranger whose identity key comes from `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        let identity = Identity::from_seed(seed);
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        Self { identity, endpoint }
    }

    /// The stranger's node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Completes the QUIC and TLS handshake with the node `victim` at
    /// `addr` (nothing is written on any stream).
    pub async fn connect(&self, addr: SocketAddr, victim: NodeId) -> quinn::Connection {
        self.connecting(addr, victim)
            .await
            .expect("the TLS handshake itself succeeds")
    }

    /// Starts the handshake with the node `victim` at `addr`: its first
    /// Initial is on the way when this returns.
    pub fn connecting(&self, addr: SocketAddr, victim: NodeId) -> quinn::Connecting {
        #[allow(clippy::disallowed_methods)] // a test reads the wall clock for certificates
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let tls = NodeTls::self_signed(
            &self.identity,
            PeerVerification::Identity,
            WallClock::at(unix.as_secs()),
        )
        .unwrap();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config(victim));
        let config = quinn::ClientConfig::new(Arc::new(crypto.unwrap()));
        self.endpoint.connect_with(config, addr, "macula").unwrap()
    }

    /// The CONNECT an honest member of `realm` would send (no capabilities,
    /// no listen addresses).
    pub fn hello(&self, realm: Realm) -> Message {
        Message::from(wire::Connect {
            node_id: self.node_id(),
            realm,
            capabilities: wire::Capabilities::NONE,
            listen_addrs: Vec::new(),
        })
    }

    /// Connects, opens the control stream and writes `hello` on it: a
    /// member of the realm, ready to misbehave.
    pub async fn join(
        &self,
        addr: SocketAddr,
        victim: NodeId,
        hello: Message,
    ) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        let conn = self.connect(addr, victim).await;
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&encode(&hello)).await.unwrap();
        (conn, send, recv)
    }
}

/// The bytes of one frame.
pub fn encode(message: &Message) -> Vec<u8> {
    message.to_vec(&Limits::default()).unwrap()
}

/// Writes `request` on a new stream of `conn`, finishes it, and returns the
/// one frame the node answers with.
pub async fn ask(conn: &quinn::Connection, request: &Message) -> Message {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(request)).await.unwrap();
    send.finish().unwrap();
    let answer = timeout(LIMIT, recv.read_to_end(1 << 20))
        .await
        .expect("answered in time")
        .expect("the stream ends with the answer");
    match wire::decode(&answer, &Limits::default()).unwrap() {
        wire::Decoded::Complete(message, _) => message,
        other => panic!("not one frame: {other:?}"),
    }
}
