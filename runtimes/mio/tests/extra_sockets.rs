//! macula-mio's extra sockets (`macula::SocketRequest`) over real loopback UDP: opened on
//! the main socket's IP when the machine asks, read under the driver's token (a datagram
//! arriving on one reaches the machine stamped with its address), written from when a
//! transmit names one (with its TTL), and closed when the machine says.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::{Input, Machine, Output, SocketRequest, Transmit};
use macula_mio::{PollLoop, clock};

/// What the machine saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Opened(Vec<SocketAddr>),
    Received { local: SocketAddr, payload: Bytes },
}

/// Asks for sockets, sends from them and closes them on command; reports what it got.
#[derive(Default)]
struct Sockets {
    out: VecDeque<Output<Seen>>,
}

impl Sockets {
    fn request(&mut self, request: SocketRequest) {
        self.out.push_back(Output::Sockets(request));
    }

    fn send(&mut self, source: SocketAddr, destination: SocketAddr, ttl: Option<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            source: Some(source),
            destination,
            payload: Bytes::from_static(b"probe"),
            segment_size: None,
            ttl,
        }));
    }
}

impl Machine for Sockets {
    type Event = Seen;

    fn handle_input(&mut self, _now: Instant, input: Input) {
        let seen = match input {
            Input::SocketsOpened(opened) => Seen::Opened(opened),
            Input::Datagram(d) => Seen::Received {
                local: d.local,
                payload: d.payload,
            },
            Input::Timeout | Input::LocalAddressChanged { .. } => return,
        };
        self.out.push_back(Output::Event(seen));
    }

    fn poll_output(&mut self) -> Option<Output<Seen>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// What the machine reports for `payload` arriving at `local`.
fn received(local: SocketAddr, payload: &'static [u8]) -> Seen {
    let payload = Bytes::from_static(payload);
    Seen::Received { local, payload }
}

/// Turns `node` until it reports an event (5 s at most).
fn next_event(node: &mut PollLoop<Sockets>) -> Seen {
    let start = clock::now();
    loop {
        if let Some(seen) = node.driver_mut().pop_event() {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "an event within 5 s"
        );
        node.turn(Duration::from_millis(10)).unwrap();
    }
}

#[test]
fn extra_sockets_open_carry_datagrams_both_ways_and_close() {
    let mut node = PollLoop::bind("127.0.0.1:0".parse().unwrap(), Sockets::default()).unwrap();
    let main = node.driver().local_addr();
    node.driver_mut()
        .command(|m, _| m.request(SocketRequest::Open { count: 2 }));
    let Seen::Opened(opened) = next_event(&mut node) else {
        panic!("the machine hears what opened first");
    };
    assert_eq!(opened.len(), 2);
    assert!(
        opened
            .iter()
            .all(|a| a.ip() == main.ip() && a.port() != main.port())
    );

    // A datagram to an extra socket wakes the poll under the driver's token.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    peer.send_to(b"answer", opened[1]).unwrap();
    assert_eq!(next_event(&mut node), received(opened[1], b"answer"));

    // A transmit naming an extra socket leaves from it.
    let to = peer.local_addr().unwrap();
    node.driver_mut()
        .command(|m, _| m.send(opened[0], to, Some(2)));
    let mut buf = [0u8; 16];
    let (len, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..len], from), (&b"probe"[..], opened[0]));
    let counters = node.driver().counters();
    assert_eq!(
        (counters.datagrams_sent, counters.datagrams_received),
        (1, 1)
    );

    // Closed: a datagram to it goes nowhere, the other still carries.
    node.driver_mut()
        .command(|m, _| m.request(SocketRequest::Close(vec![opened[1]])));
    peer.send_to(b"late", opened[1]).unwrap();
    peer.send_to(b"still", opened[0]).unwrap();
    assert_eq!(next_event(&mut node), received(opened[0], b"still"));
    for _ in 0..5 {
        node.turn(Duration::from_millis(10)).unwrap();
    }
    assert_eq!(
        node.driver_mut().pop_event(),
        None,
        "nothing from the closed one"
    );
}

#[test]
fn a_read_over_many_extra_sockets_stops_at_its_budget_and_resumes() {
    let mut node = PollLoop::bind("127.0.0.1:0".parse().unwrap(), Sockets::default()).unwrap();
    node.driver_mut().set_datagrams_per_turn(2);
    node.driver_mut()
        .command(|m, _| m.request(SocketRequest::Open { count: 3 }));
    let Seen::Opened(opened) = next_event(&mut node) else {
        panic!("opened first");
    };
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (n, to) in opened.iter().enumerate() {
        peer.send_to(&[b'0' + n as u8], to).unwrap();
    }
    let start = clock::now();
    while node.driver().counters().datagrams_received == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the datagrams arrive"
        );
        node.turn(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(node.driver().counters().datagrams_received, 2);
    assert_eq!(node.driver().timeout(), Some(Duration::ZERO), "more waits");
    node.turn(Duration::from_millis(100)).unwrap();
    assert_eq!(node.driver().counters().datagrams_received, 3);
    let locals: Vec<SocketAddr> = std::iter::from_fn(|| node.driver_mut().pop_event())
        .filter_map(|s| match s {
            Seen::Received { local, .. } => Some(local),
            Seen::Opened(_) => None,
        })
        .collect();
    assert_eq!(locals, opened);
}
