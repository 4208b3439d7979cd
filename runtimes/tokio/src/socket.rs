//! The one UDP socket of a driver, through `quinn-udp`.
//!
//! `quinn-udp` batches receives (`recvmmsg`), splits GRO super-datagrams by
//! their stride, reports the destination address of each packet and sets ECN
//! and the source address on sends. This module adds what the macula contract
//! needs on top: a dual-stack bind where the OS allows it (an unspecified
//! IPv6 address with `IPV6_V6ONLY` off), IPv4 addresses mapped into and out of
//! the IPv6 space on such a socket so the machine only ever sees plain IPv4
//! for IPv4 peers, and a per-datagram IP TTL (hop limit) set for one send and
//! restored after it. Sends go out in [`Batch`]es: several datagrams to
//! one peer in one call where the OS offers GSO.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use macula::Datagram;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, SockRef, Type};
use tokio::io::Interest;

use crate::batch::Batch;

/// Bytes of one receive slot. Larger than any UDP payload (65,527 bytes) and
/// than any GRO super-datagram (the kernel caps one at 64 KiB), so the kernel
/// never truncates a datagram into it.
const SLOT: usize = 64 * 1024;

/// A UDP socket registered with tokio, read and written through `quinn-udp`.
pub(crate) struct Socket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    /// An IPv6 socket: IPv4 peers are addressed as IPv4-mapped IPv6.
    v6: bool,
    /// The socket's own IPv4 TTL and IPv6 hop limit, restored after a send
    /// with `macula::Transmit::ttl`.
    default_ttl: DefaultTtl,
    slots: Box<[u8]>,
    metas: Box<[RecvMeta]>,
}

#[derive(Clone, Copy, Debug)]
struct DefaultTtl {
    v4: Option<u32>,
    v6: Option<u32>,
}

impl Socket {
    /// Binds `addr`. An unspecified IPv6 address is bound dual-stack where
    /// the OS allows it, IPv6-only where it refuses dual-stack, and falls
    /// back to the unspecified IPv4 address on the same port where the host
    /// has no IPv6 at all. Must be called inside a tokio runtime.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = match open(addr) {
            Err(error) if any_ipv6(addr) && no_ipv6(&error) => {
                let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
                tracing::warn!(%error, %v4, "no IPv6 here; binding IPv4 only");
                open(v4)?
            }
            opened => opened?,
        };
        let io = tokio::net::UdpSocket::from_std(socket.into())?;
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        let local = io.local_addr()?;
        let v6 = local.is_ipv6();
        let sock = SockRef::from(&io);
        // An IPv6-only socket has no IPv4 TTL to read, an IPv4 one no hop limit.
        let default_ttl = DefaultTtl {
            v4: sock.ttl_v4().ok(),
            v6: if v6 {
                sock.unicast_hops_v6().ok()
            } else {
                None
            },
        };
        let batch = quinn_udp::BATCH_SIZE;
        Ok(Self {
            io,
            state,
            local,
            v6,
            default_ttl,
            slots: vec![0; SLOT * batch].into_boxed_slice(),
            metas: vec![RecvMeta::default(); batch].into_boxed_slice(),
        })
    }

    /// The address the socket is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits until a datagram may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// Receives one batch of waiting datagrams (at most `max_reads` reads,
    /// and at most `quinn_udp::BATCH_SIZE`; a read may hold several GRO
    /// segments) and hands each datagram to `deliver`. Returns how many
    /// datagrams it delivered; `WouldBlock` when nothing was waiting.
    pub(crate) fn try_receive(
        &mut self,
        max_reads: usize,
        mut deliver: impl FnMut(Datagram),
    ) -> io::Result<usize> {
        let reads = max_reads.clamp(1, self.metas.len());
        let mut bufs: Vec<IoSliceMut<'_>> = self
            .slots
            .chunks_mut(SLOT)
            .take(reads)
            .map(IoSliceMut::new)
            .collect();
        let state = &self.state;
        let metas = &mut self.metas[..reads];
        let done = self.io.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(&self.io), &mut bufs, metas)
        })?;
        let mut delivered = 0;
        for (meta, buf) in self.metas.iter().zip(bufs.iter()).take(done) {
            let remote = canonical(meta.addr);
            let local = SocketAddr::new(
                meta.dst_ip.map_or(self.local.ip(), |ip| ip.to_canonical()),
                self.local.port(),
            );
            let stride = meta.stride.max(1);
            for segment in buf[..meta.len].chunks(stride) {
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

    /// Most datagrams one send may carry (1 without GSO).
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends a batch of datagrams in one call, waiting while the socket's
    /// send buffer is full. Errors other than a full buffer are returned for
    /// the caller to count; they concern this batch only.
    pub(crate) async fn send(&self, batch: &Batch) -> io::Result<()> {
        let destination = self.outgoing(batch.destination);
        let datagrams = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents: batch.contents(),
            segment_size: batch.segment_size(),
            src_ip: batch
                .source
                .map(|s| s.ip())
                .filter(|ip| !ip.is_unspecified()),
        };
        let send = || self.state.try_send(UdpSockRef::from(&self.io), &datagrams);
        self.io
            .async_io(Interest::WRITABLE, || match batch.ttl {
                None => send(),
                Some(ttl) => self.with_ttl(ttl, destination, send),
            })
            .await
    }

    /// Runs `send` with the IP TTL (or IPv6 hop limit) of this one datagram
    /// set, then restores the socket's default.
    fn with_ttl(
        &self,
        ttl: u8,
        destination: SocketAddr,
        send: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let sock = SockRef::from(&self.io);
        let ttl = u32::from(ttl);
        let to_v4 = canonical(destination).is_ipv4();
        let (set, default): (fn(&SockRef<'_>, u32) -> io::Result<()>, _) = if to_v4 {
            (|s, t| s.set_ttl_v4(t), self.default_ttl.v4)
        } else {
            (|s, t| s.set_unicast_hops_v6(t), self.default_ttl.v6)
        };
        set(&sock, ttl)?;
        let sent = send();
        if let Some(default) = default
            && let Err(error) = set(&sock, default)
        {
            tracing::warn!(%error, default, "could not restore the socket's default TTL");
        }
        sent
    }

    /// The address to hand the OS: IPv4 destinations become IPv4-mapped IPv6
    /// on an IPv6 socket.
    fn outgoing(&self, destination: SocketAddr) -> SocketAddr {
        match destination {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        }
    }
}

/// A non-blocking UDP socket bound at `addr`, dual-stack if `addr` is the
/// unspecified IPv6 address and the OS allows it.
fn open(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if any_ipv6(addr)
        && let Err(error) = socket.set_only_v6(false)
    {
        tracing::debug!(%error, "dual-stack socket refused; serving IPv6 only");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// `[::]:port`.
fn any_ipv6(addr: SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified())
}

/// The error says the host has no IPv6 (not that the port is taken or
/// forbidden, which IPv4 would not cure).
fn no_ipv6(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

/// An IPv4-mapped IPv6 address as plain IPv4; others unchanged.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_ipv6_falls_back_to_ipv4() {
        let taken = io::Error::from(io::ErrorKind::AddrInUse);
        let forbidden = io::Error::from(io::ErrorKind::PermissionDenied);
        let no_family = io::Error::from(io::ErrorKind::Unsupported);
        assert!(!no_ipv6(&taken) && !no_ipv6(&forbidden));
        assert!(no_ipv6(&no_family));
        assert!(any_ipv6("[::]:4433".parse().unwrap()));
        assert!(!any_ipv6("[::1]:4433".parse().unwrap()));
        assert!(!any_ipv6("0.0.0.0:4433".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_addresses_read_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:9".parse().unwrap());
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
