//! The one UDP socket of a driver: a [`macula_udp::UdpBase`] on a tokio
//! socket. The base does the reads and writes (dual stack, GRO and GSO,
//! per-datagram TTL, destination addresses, counters); this module adds
//! tokio's readiness: a read clears it when nothing is left, and a send
//! waits while the send buffer is full.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use macula::Datagram;
use macula_udp::{Batch, RecvBuffers, SocketCounters, UdpBase};
use tokio::io::Interest;

/// A UDP socket registered with tokio.
pub(crate) struct Socket {
    base: UdpBase<tokio::net::UdpSocket>,
    buffers: RecvBuffers,
}

impl Socket {
    /// Binds `addr` as [`macula_udp::open`] does (dual-stack for `[::]`,
    /// IPv4 where the host has no IPv6). Must be called inside a tokio
    /// runtime.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let io = tokio::net::UdpSocket::from_std(macula_udp::open(addr)?)?;
        Ok(Self {
            base: UdpBase::new(io)?,
            buffers: RecvBuffers::default(),
        })
    }

    /// The address the socket is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// The socket's live counters.
    pub(crate) fn counters(&self) -> Arc<SocketCounters> {
        Arc::clone(self.base.counters())
    }

    /// Waits until a datagram may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.base.io().readable().await
    }

    /// Receives one batch of waiting datagrams (at most `max_reads` reads; a
    /// read may hold several GRO segments) and hands each datagram to
    /// `deliver`. Returns how many it delivered; `WouldBlock` when nothing
    /// was waiting.
    pub(crate) fn try_receive(
        &mut self,
        max_reads: usize,
        mut deliver: impl FnMut(Datagram),
    ) -> io::Result<usize> {
        let Self { base, buffers } = self;
        base.io().try_io(Interest::READABLE, || {
            // The machine contract carries no ECN marks.
            base.try_receive(buffers, max_reads, |datagram, _ecn| deliver(datagram))
        })
    }

    /// Most datagrams one send may carry (1 without GSO).
    pub(crate) fn max_segments(&self) -> usize {
        self.base.max_segments()
    }

    /// Sends a batch of datagrams in one call, waiting while the socket's
    /// send buffer is full. Errors other than a full buffer are counted and
    /// returned for the caller to log; they concern this batch only.
    pub(crate) async fn send(&self, batch: &Batch) -> io::Result<()> {
        let io = self.base.io();
        io.async_io(Interest::WRITABLE, || self.base.try_send(batch))
            .await
    }
}
