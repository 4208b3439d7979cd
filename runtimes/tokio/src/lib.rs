//! # macula-tokio: drive a macula machine on a tokio UDP socket
//!
//! The core crate's machines do no I/O. This driver owns one UDP socket and a
//! timer and runs the drive loop of the [`macula::Machine`] contract: feed a
//! datagram or a timeout, drain every output (sending transmits with their
//! TTL, queueing events), sleep until the next datagram or deadline.
//!
//! The driver reads the real clock; nothing in the machine does.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use macula::{Datagram, Input, Machine, Output, Transmit};
use tokio::net::{ToSocketAddrs, UdpSocket};

/// Largest UDP payload the driver receives; anything larger is truncated by
/// the OS and then refused by the machine's decoders.
const RECEIVE_BUFFER: usize = 65_535;

/// A machine bound to a tokio UDP socket.
pub struct Driver<M: Machine> {
    socket: UdpSocket,
    local: SocketAddr,
    default_ttl: u32,
    machine: M,
    events: VecDeque<M::Event>,
    buffer: Box<[u8]>,
}

/// The real clock, read only by the driver.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

impl<M: Machine> Driver<M> {
    /// Binds a UDP socket at `addr` for `machine`.
    pub async fn bind(addr: impl ToSocketAddrs, machine: M) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let default_ttl = socket.ttl()?;
        Ok(Self {
            socket,
            local,
            default_ttl,
            machine,
            events: VecDeque::new(),
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

    /// The machine, to give it commands. Call [`Driver::flush`] afterwards so
    /// what the command queued goes out at once.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Sends everything the machine has queued and keeps its events for
    /// [`Driver::next_event`].
    pub async fn flush(&mut self) -> io::Result<()> {
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Transmit(transmit) => self.send(transmit).await?,
                Output::Event(event) => self.events.push_back(event),
            }
        }
        Ok(())
    }

    /// Drives the machine until it reports an event, and returns it.
    pub async fn next_event(&mut self) -> io::Result<M::Event> {
        loop {
            self.flush().await?;
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let input = self.wait().await?;
            self.machine.handle_input(now(), input);
        }
    }

    /// Waits for the next datagram or the machine's deadline.
    async fn wait(&mut self) -> io::Result<Input> {
        let deadline = self.machine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = self.socket.recv_from(&mut self.buffer) => {
                let (len, remote) = received?;
                Ok(Input::Datagram(Datagram {
                    local: self.local,
                    remote,
                    payload: Bytes::copy_from_slice(&self.buffer[..len]),
                }))
            }
            () = sleep => Ok(Input::Timeout),
        }
    }

    async fn send(&self, transmit: Transmit) -> io::Result<()> {
        match transmit.ttl {
            Some(ttl) => {
                self.socket.set_ttl(u32::from(ttl))?;
                let sent = self
                    .socket
                    .send_to(&transmit.payload, transmit.destination)
                    .await;
                self.socket.set_ttl(self.default_ttl)?;
                sent.map(drop)
            }
            None => self
                .socket
                .send_to(&transmit.payload, transmit.destination)
                .await
                .map(drop),
        }
    }
}
