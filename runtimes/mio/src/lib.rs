//! # macula-mio: drive a macula machine from a `mio::Poll` loop
//!
//! For applications that own their event loop. The driver owns one
//! non-blocking UDP socket registered with a `mio::Poll` and runs the drive
//! loop of the [`macula::Machine`] contract: feed datagrams and timeouts,
//! drain outputs (sending transmits with their TTL), and poll no longer than
//! the machine's next deadline. [`Driver::turn`] does one round, so it can be
//! called from a loop that also serves other sources.
//!
//! The driver reads the real clock; nothing in the machine does.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::{Datagram, Input, Machine, Output, Transmit};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

/// Largest UDP payload the driver receives.
const RECEIVE_BUFFER: usize = 65_535;

/// The token the driver's socket is registered under.
const SOCKET: Token = Token(0);

/// The real clock, read only by the driver.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// A machine bound to a non-blocking UDP socket and its own `mio::Poll`.
pub struct Driver<M: Machine> {
    poll: Poll,
    events: Events,
    socket: UdpSocket,
    local: SocketAddr,
    default_ttl: u32,
    machine: M,
    reported: VecDeque<M::Event>,
    buffer: Box<[u8]>,
}

impl<M: Machine> Driver<M> {
    /// Binds a UDP socket at `addr` for `machine`.
    pub fn bind(addr: SocketAddr, machine: M) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut socket = UdpSocket::bind(addr)?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let local = socket.local_addr()?;
        let default_ttl = socket.ttl()?;
        Ok(Self {
            poll,
            events: Events::with_capacity(64),
            socket,
            local,
            default_ttl,
            machine,
            reported: VecDeque::new(),
            buffer: vec![0; RECEIVE_BUFFER].into_boxed_slice(),
        })
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The machine, to read its state.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, to give it commands; the next [`Driver::turn`] sends what
    /// they queued.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Takes the oldest event the machine reported.
    pub fn pop_event(&mut self) -> Option<M::Event> {
        self.reported.pop_front()
    }

    /// One round of the loop: flush outputs, wait for a datagram, the
    /// machine's deadline or `max_wait` (whichever is first), feed what came,
    /// and flush again.
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<()> {
        self.flush()?;
        let start = now();
        let wait = match self.machine.poll_timeout() {
            Some(deadline) => deadline.saturating_duration_since(start).min(max_wait),
            None => max_wait,
        };
        self.poll.poll(&mut self.events, Some(wait))?;
        let readable = self.events.iter().any(|e| e.token() == SOCKET);
        if readable {
            self.receive_all()?;
        }
        let now = now();
        if self
            .machine
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.machine.handle_input(now, Input::Timeout);
        }
        self.flush()
    }

    /// Reads until the socket would block (mio is edge-triggered).
    fn receive_all(&mut self) -> io::Result<()> {
        loop {
            match self.socket.recv_from(&mut self.buffer) {
                Ok((len, remote)) => {
                    let datagram = Datagram {
                        local: self.local,
                        remote,
                        payload: Bytes::copy_from_slice(&self.buffer[..len]),
                    };
                    self.machine.handle_input(now(), Input::Datagram(datagram));
                    self.flush()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Transmit(transmit) => self.send(&transmit)?,
                Output::Event(event) => self.reported.push_back(event),
            }
        }
        Ok(())
    }

    fn send(&self, transmit: &Transmit) -> io::Result<()> {
        if let Some(ttl) = transmit.ttl {
            self.socket.set_ttl(u32::from(ttl))?;
        }
        let sent = self.socket.send_to(&transmit.payload, transmit.destination);
        if transmit.ttl.is_some() {
            self.socket.set_ttl(self.default_ttl)?;
        }
        match sent {
            // A full send buffer drops the datagram, as a congested link would;
            // the machines above recover from loss.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other.map(drop),
        }
    }
}
