//! The driver's one UDP socket: a [`macula_udp::UdpBase`] on a `mio` socket.
//! The base does the reads and writes (dual stack, GRO and GSO, per-datagram
//! TTL, destination addresses, counters); this module adds the `mio` source
//! to register with a poll. Every call is non-blocking: "nothing to read"
//! and "send buffer full" come back as `WouldBlock` for the driver to wait
//! on with its poll.

use std::io;
use std::net::SocketAddr;

use macula::Datagram;
use macula_udp::{Batch, RecvBuffers, SocketCounters, SocketCounts, UdpBase};
use mio::net::UdpSocket;

/// A non-blocking UDP socket registered with a `mio` poll.
pub(crate) struct Socket {
    base: UdpBase<UdpSocket>,
    buffers: RecvBuffers,
}

impl Socket {
    /// Binds `addr` as [`macula_udp::open`] does (dual-stack for `[::]`,
    /// IPv4 where the host has no IPv6).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let io = UdpSocket::from_std(macula_udp::open(addr)?);
        Ok(Self {
            base: UdpBase::new(io)?,
            buffers: RecvBuffers::default(),
        })
    }

    /// The address the socket is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// The `mio` source, to register with a poll.
    pub(crate) fn source(&mut self) -> &mut UdpSocket {
        self.base.io_mut()
    }

    /// What the socket counted so far.
    pub(crate) fn counts(&self) -> SocketCounts {
        self.base.counters().snapshot()
    }

    /// The live counters (the driver's extra sockets count into them too).
    pub(crate) fn counters(&self) -> &SocketCounters {
        self.base.counters()
    }

    /// Most datagrams one send may carry (1 without GSO).
    pub(crate) fn max_segments(&self) -> usize {
        self.base.max_segments()
    }

    /// One batched read of at most `max` packets (a GRO packet holds several
    /// datagrams), each datagram handed to `deliver`. Returns how many it
    /// delivered; `WouldBlock` when nothing was waiting.
    pub(crate) fn receive(
        &mut self,
        max: usize,
        mut deliver: impl FnMut(Datagram),
    ) -> io::Result<usize> {
        // The machine contract carries no ECN marks.
        self.base
            .try_receive(&mut self.buffers, max, |datagram, _ecn| deliver(datagram))
    }

    /// Sends a batch (one datagram, or several to one peer for one GSO send)
    /// with its TTL (when given). `WouldBlock` when the send buffer is full.
    pub(crate) fn send(&self, batch: &Batch) -> io::Result<()> {
        self.base.try_send(batch)
    }
}
