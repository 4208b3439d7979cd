//! A burst of datagrams to one peer, for the drivers' GSO tests: five of
//! 100 bytes and a shorter last one (one GSO send), then one with its own
//! TTL (alone), queued by a machine that does nothing else.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use macula::{Input, Machine, Output, Transmit};

/// The (first byte, length) of each datagram of the burst, in order.
pub const BURST: [(u8, usize); 7] = [
    (0, 100),
    (1, 100),
    (2, 100),
    (3, 100),
    (4, 100),
    (5, 40),
    (6, 100),
];

/// Queues datagrams and nothing else.
pub struct Queue(VecDeque<Output<()>>);

impl Queue {
    /// The burst, to `to`.
    pub fn burst(to: SocketAddr) -> Self {
        let datagram = |(n, len): (u8, usize)| {
            Output::Transmit(Transmit {
                source: None,
                destination: to,
                payload: vec![n; len].into(),
                segment_size: None,
                ttl: (n == 6).then_some(9),
            })
        };
        Self(BURST.into_iter().map(datagram).collect())
    }
}

impl Machine for Queue {
    type Event = ();

    fn handle_input(&mut self, _: Instant, _: Input) {}

    fn poll_output(&mut self) -> Option<Output<()>> {
        self.0.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Reads the burst at `observer` (a read timeout set) and checks each
/// datagram arrived whole and in order.
pub fn expect_burst(observer: &UdpSocket) {
    let mut buf = [0u8; 200];
    for (n, len) in BURST {
        let (got, _) = observer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..got], &vec![n; len][..], "datagram {n}");
    }
}

/// Checks a driver's counters after the burst: seven datagrams sent in two
/// calls (one GSO send, then the TTL one alone).
pub fn expect_two_sends(datagrams_sent: u64, send_calls: u64) {
    assert_eq!(datagrams_sent, 7);
    assert_eq!(send_calls, 2, "one GSO send, then the TTL one alone");
}
