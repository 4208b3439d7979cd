//! The driver's one UDP socket: a `mio` socket read and written through
//! `quinn-udp`.
//!
//! `quinn-udp` batches receives (`recvmmsg`), splits GRO super-datagrams by
//! their stride, reports the local (destination) address of each packet and
//! sets the source address and ECN on sends. This module adds what the macula
//! contract needs on top: a dual-stack bind where the OS allows it, IPv4
//! peers seen as plain IPv4 on an IPv6 socket, and a per-datagram IP TTL
//! (hop limit) set for one send and restored after it. Every call is
//! non-blocking: "nothing to read" and "send buffer full" come back as
//! `WouldBlock` for the driver to wait on with its poll.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use macula::{Datagram, Transmit};
use mio::net::UdpSocket;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, SockRef, Type};

/// Bytes of one receive slot: more than any UDP payload and any GRO
/// super-datagram (the kernel caps one at 64 KiB), so nothing is truncated.
const SLOT: usize = 64 * 1024;

/// A non-blocking UDP socket read and written through `quinn-udp`.
pub(crate) struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    /// An IPv6 socket: IPv4 peers are addressed as IPv4-mapped IPv6.
    v6: bool,
    /// The socket's own IPv4 TTL, restored after a send with a TTL.
    default_ttl_v4: Option<u32>,
    /// The socket's own IPv6 hop limit, restored likewise.
    default_hops_v6: Option<u32>,
    slots: Box<[u8]>,
    metas: Box<[RecvMeta]>,
}

impl Socket {
    /// Binds `addr`, non-blocking. An unspecified IPv6 address is bound
    /// dual-stack where the OS allows it (IPv6 only otherwise, logged).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket =
            socket2::Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let SocketAddr::V6(v6) = addr
            && v6.ip().is_unspecified()
            && let Err(error) = socket.set_only_v6(false)
        {
            tracing::debug!(%error, "dual-stack socket refused; serving IPv6 only");
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let io = UdpSocket::from_std(socket.into());
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        let local = io.local_addr()?;
        let v6 = local.is_ipv6();
        let sock = SockRef::from(&io);
        Ok(Self {
            // An IPv6-only socket has no IPv4 TTL to read.
            default_ttl_v4: sock.ttl_v4().ok(),
            default_hops_v6: if v6 {
                sock.unicast_hops_v6().ok()
            } else {
                None
            },
            io,
            state,
            local,
            v6,
            slots: vec![0; SLOT * quinn_udp::BATCH_SIZE].into_boxed_slice(),
            metas: vec![RecvMeta::default(); quinn_udp::BATCH_SIZE].into_boxed_slice(),
        })
    }

    /// The address the socket is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The `mio` source, to register with a poll.
    pub(crate) fn source(&mut self) -> &mut UdpSocket {
        &mut self.io
    }

    /// One batched read of at most `max` packets (and `quinn_udp::BATCH_SIZE`;
    /// a GRO packet holds several datagrams), each datagram handed to
    /// `deliver`. Returns how many it delivered; `WouldBlock` when nothing
    /// was waiting.
    pub(crate) fn receive(
        &mut self,
        max: usize,
        mut deliver: impl FnMut(Datagram),
    ) -> io::Result<usize> {
        let max = max.clamp(1, quinn_udp::BATCH_SIZE);
        let mut bufs: Vec<IoSliceMut<'_>> = self
            .slots
            .chunks_mut(SLOT)
            .take(max)
            .map(IoSliceMut::new)
            .collect();
        let reads = self.state.recv(
            UdpSockRef::from(&self.io),
            &mut bufs,
            &mut self.metas[..max],
        )?;
        let mut delivered = 0;
        for (meta, buf) in self.metas.iter().zip(&bufs).take(reads) {
            let remote = canonical(meta.addr);
            let local = SocketAddr::new(
                meta.dst_ip.map_or(self.local.ip(), |ip| ip.to_canonical()),
                self.local.port(),
            );
            for segment in buf[..meta.len].chunks(meta.stride.max(1)) {
                deliver(Datagram {
                    local,
                    remote,
                    payload: Bytes::copy_from_slice(segment),
                });
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Sends one datagram from `transmit.source` (when given) with its TTL
    /// (when given). `WouldBlock` when the send buffer is full.
    pub(crate) fn send(&self, transmit: &Transmit) -> io::Result<()> {
        let destination = match transmit.destination {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        };
        let datagram = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents: &transmit.payload,
            segment_size: None,
            src_ip: transmit
                .source
                .map(|s| s.ip())
                .filter(|ip| !ip.is_unspecified()),
        };
        let send = || self.state.try_send(UdpSockRef::from(&self.io), &datagram);
        let Some(ttl) = transmit.ttl else {
            return send();
        };
        let sock = SockRef::from(&self.io);
        let (set, default): (fn(&SockRef<'_>, u32) -> io::Result<()>, _) =
            if transmit.destination.ip().to_canonical().is_ipv4() {
                (|s, t| s.set_ttl_v4(t), self.default_ttl_v4)
            } else {
                (|s, t| s.set_unicast_hops_v6(t), self.default_hops_v6)
            };
        set(&sock, u32::from(ttl))?;
        let sent = send();
        if let Some(default) = default
            && let Err(error) = set(&sock, default)
        {
            tracing::warn!(%error, default, "could not restore the socket's default TTL");
        }
        sent
    }
}

/// An IPv4-mapped IPv6 address as plain IPv4; others unchanged.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
