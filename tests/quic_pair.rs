//! Two quinn-proto endpoints built from `macula::quic` configs, connected in
//! memory with virtual time: mutual TLS binds both node ids, a stream carries
//! bytes, and a dial to the wrong node id fails the handshake.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use macula::id::{Identity, NodeId};
use macula::quic::{QuicConfigs, TransportSettings};
use macula::secret::Secret;
use macula::tls::{self, NodeTls, PeerVerification, WallClock};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, Event,
};
use rustls::pki_types::CertificateDer;

const NOW_UNIX: u64 = 1_795_478_400;

/// The QUIC configs of node `seed`.
fn configs(seed: u8) -> QuicConfigs {
    let identity = Identity::from_seed([seed; 32]);
    let tls = NodeTls::self_signed(
        &identity,
        PeerVerification::Identity,
        WallClock::at(NOW_UNIX),
    )
    .unwrap();
    QuicConfigs::new(
        tls,
        &TransportSettings::default(),
        &Secret::deterministic(u64::from(seed)),
        &Secret::from_bytes(identity.secret_seed()),
    )
    .unwrap()
}

/// One endpoint and its connections.
struct Side {
    addr: SocketAddr,
    endpoint: Endpoint,
    connections: Vec<(ConnectionHandle, Connection)>,
}

impl Side {
    fn new(seed: u8, port: u16) -> Self {
        let configs = configs(seed);
        let endpoint = Endpoint::new(
            configs.endpoint.clone(),
            Some(configs.server.clone()),
            true,
            Some(configs.rng_seed),
        );
        Side {
            addr: SocketAddr::from(([10, 0, 0, seed], port)),
            endpoint,
            connections: Vec::new(),
        }
    }

    fn connection(&mut self, handle: ConnectionHandle) -> &mut Connection {
        &mut self
            .connections
            .iter_mut()
            .find(|(h, _)| *h == handle)
            .unwrap()
            .1
    }

    /// Takes every datagram this side wants to send.
    fn transmits(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for (handle, conn) in &mut self.connections {
            loop {
                let mut buf = Vec::new();
                match conn.poll_transmit(now, 1, &mut buf) {
                    Some(t) => out.push((t.destination, buf[..t.size].to_vec())),
                    None => break,
                }
            }
            while let Some(event) = conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(*handle, event) {
                    conn.handle_event(back);
                }
            }
        }
        out
    }

    fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut replies = Vec::new();
        match self
            .endpoint
            .handle(now, from, None, None, BytesMut::from(data), &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                self.connection(handle).handle_event(event)
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let (handle, conn) = self.endpoint.accept(incoming, now, &mut buf, None).unwrap();
                self.connections.push((handle, conn));
            }
            Some(DatagramEvent::Response(t)) => {
                replies.push((t.destination, buf[..t.size].to_vec()))
            }
            None => {}
        }
        replies
    }

    fn timeouts(&mut self, now: Instant) {
        for (_, conn) in &mut self.connections {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        self.connections
            .iter_mut()
            .filter_map(|(_, c)| c.poll_timeout())
            .min()
    }
}

/// Moves datagrams between the sides (5 ms one way) until nothing is in
/// flight and no timer is due before `until`.
fn run(a: &mut Side, b: &mut Side, now: &mut Instant, until: Instant) {
    let latency = Duration::from_millis(5);
    loop {
        let mut moved = false;
        for from in [0, 1] {
            let sides: [&mut Side; 2] = if from == 0 {
                [&mut *a, &mut *b]
            } else {
                [&mut *b, &mut *a]
            };
            let [src, dst] = sides;
            let sent = src.transmits(*now);
            if !sent.is_empty() {
                moved = true;
                *now += latency;
            }
            for (dest, data) in sent {
                assert_eq!(dest, dst.addr);
                for (back, reply) in dst.receive(*now, src.addr, &data) {
                    assert_eq!(back, src.addr);
                    src.receive(*now, dst.addr, &reply);
                }
            }
        }
        if !moved {
            let next = [a.next_timeout(), b.next_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t < until => {
                    *now = (*now).max(t);
                    a.timeouts(*now);
                    b.timeouts(*now);
                }
                _ => return,
            }
        }
    }
}

fn peer_id(conn: &Connection) -> NodeId {
    let identity = conn.crypto_session().peer_identity().unwrap();
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().unwrap();
    tls::peer_node_id(&chain).unwrap()
}

fn dial(a: &mut Side, b: &Side, expected: NodeId, now: Instant) -> ConnectionHandle {
    let configs = configs(1);
    let (handle, conn) = a
        .endpoint
        .connect(
            now,
            configs.client_config(expected, false).unwrap(),
            b.addr,
            tls::SERVER_NAME,
        )
        .unwrap();
    a.connections.push((handle, conn));
    handle
}

#[test]
fn mutual_tls_over_quic_binds_node_ids_and_carries_a_stream() {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let (mut a, mut b) = (Side::new(1, 4000), Side::new(2, 4000));
    let id = |seed: u8| Identity::from_seed([seed; 32]).node_id();
    let handle = dial(&mut a, &b, id(2), now);
    let until = now + Duration::from_secs(2);
    run(&mut a, &mut b, &mut now, until);

    let client = a.connection(handle);
    assert!(matches!(client.poll(), Some(Event::HandshakeDataReady)));
    assert!(matches!(client.poll(), Some(Event::Connected)));
    assert_eq!(peer_id(client), id(2));
    let stream = client.streams().open(Dir::Bi).unwrap();
    client
        .send_stream(stream)
        .write(b"hello over quic")
        .unwrap();
    client.send_stream(stream).finish().unwrap();
    let until = now + Duration::from_secs(2);
    run(&mut a, &mut b, &mut now, until);

    let server = &mut b.connections[0].1;
    assert_eq!(
        peer_id(server),
        id(1),
        "the acceptor derives the dialer's id from its certificate"
    );
    let incoming = server
        .streams()
        .accept(Dir::Bi)
        .expect("the stream arrived");
    let mut recv = server.recv_stream(incoming);
    let mut chunks = recv.read(true).unwrap();
    let chunk = chunks.next(1024).unwrap().unwrap();
    assert_eq!(&chunk.bytes[..], b"hello over quic");
    let _ = chunks.finalize();
}

#[test]
fn a_dial_to_the_wrong_node_id_fails_with_a_typed_rejection() {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let (mut a, mut b) = (Side::new(1, 4000), Side::new(2, 4000));
    let wrong = Identity::from_seed([7; 32]).node_id();
    let handle = dial(&mut a, &b, wrong, now);
    let until = now + Duration::from_secs(2);
    run(&mut a, &mut b, &mut now, until);
    let client = a.connection(handle);
    let lost = std::iter::from_fn(|| client.poll()).find_map(|e| match e {
        Event::ConnectionLost { reason } => Some(reason),
        _ => None,
    });
    match lost {
        Some(ConnectionError::TransportError(e)) => {
            assert!(e.to_string().contains("WrongNodeId"), "{e}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}
