//! A small datagram machine both drivers' loopback tests run: it pings a
//! peer on a timer (with TTL 1 on odd pings), answers pings, and reports each
//! answer it gets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::{Input, Machine, Output, Transmit};

/// Sends `count` numbered pings, one every `interval`, with TTL 1 on odd
/// ones; answers every ping it receives; reports each answer it gets.
pub struct Pinger {
    peer: Option<SocketAddr>,
    count: u8,
    sent: u8,
    interval: Duration,
    next: Option<Instant>,
    out: VecDeque<Output<u8>>,
}

impl Pinger {
    pub fn new(count: u8) -> Self {
        Self {
            peer: None,
            count,
            sent: 0,
            interval: Duration::from_millis(5),
            next: None,
            out: VecDeque::new(),
        }
    }

    pub fn start(&mut self, now: Instant, peer: SocketAddr) {
        self.peer = Some(peer);
        self.next = Some(now);
        self.handle_input(now, Input::Timeout);
    }
}

impl Machine for Pinger {
    type Event = u8;

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram(d) => match d.payload.as_ref() {
                [b'?', n] => self.out.push_back(Output::Transmit(Transmit {
                    source: None,
                    destination: d.remote,
                    payload: Bytes::from(vec![b'!', *n]),
                    segment_size: None,
                    ttl: None,
                })),
                [b'!', n] => self.out.push_back(Output::Event(*n)),
                _ => {}
            },
            Input::Timeout | Input::LocalAddressChanged { .. } | Input::SocketsOpened(_) => {}
        }
        while let (Some(peer), Some(due)) = (self.peer, self.next) {
            if due > now || self.sent == self.count {
                break;
            }
            self.out.push_back(Output::Transmit(Transmit {
                source: None,
                destination: peer,
                payload: Bytes::from(vec![b'?', self.sent]),
                segment_size: None,
                ttl: (self.sent % 2 == 1).then_some(1),
            }));
            self.sent += 1;
            self.next = (self.sent < self.count).then(|| due + self.interval);
        }
    }

    fn poll_output(&mut self) -> Option<Output<u8>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}
