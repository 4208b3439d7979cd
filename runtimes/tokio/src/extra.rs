//! Extra UDP sockets a machine asks for beside its main one (`macula::SocketRequest`: the
//! birthday search for a peer behind a hard NAT opens a few hundred for a few seconds and
//! keeps one). Kept apart from the main socket's batched I/O: each is a plain IPv4 tokio
//! socket (the search is IPv4 only), read into one shared buffer, written one datagram at
//! a time.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::task::{Context, Poll};

use bytes::Bytes;
use macula::{Datagram, Transmit};
use macula_udp::canonical;
use socket2::{SockAddr, SockRef};
use tokio::net::UdpSocket;

/// The most extra sockets open at once; a request beyond it opens fewer.
pub(crate) const MAX_EXTRA_SOCKETS: usize = 1024;

/// The largest datagram read from an extra socket (larger ones are truncated: QUIC and
/// STUN datagrams are far smaller).
const MAX_DATAGRAM: usize = 2048;

/// The open extra sockets, by local address.
#[derive(Default)]
pub(crate) struct ExtraSockets {
    sockets: Vec<(SocketAddr, UdpSocket)>,
    buf: Vec<u8>,
}

impl ExtraSockets {
    /// Opens up to `count` sockets on ephemeral ports of `near`'s IP (the unspecified IPv4
    /// address when `near` is IPv6 or unspecified) and returns their addresses; stops at
    /// the cap or the first failure (logged). Must run inside a tokio runtime.
    pub(crate) fn open(&mut self, near: SocketAddr, count: u16) -> Vec<SocketAddr> {
        let ip = match near.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let room = MAX_EXTRA_SOCKETS.saturating_sub(self.sockets.len());
        let mut opened = Vec::new();
        for _ in 0..usize::from(count).min(room) {
            match bind(SocketAddr::from((ip, 0))) {
                Ok((local, socket)) => {
                    self.sockets.push((local, socket));
                    opened.push(local);
                }
                Err(error) => {
                    tracing::warn!(%error, opened = opened.len(), "could not open an extra socket");
                    break;
                }
            }
        }
        opened
    }

    /// Closes the sockets at `addrs` (unknown ones are ignored).
    pub(crate) fn close(&mut self, addrs: &[SocketAddr]) {
        self.sockets.retain(|(local, _)| !addrs.contains(local));
    }

    /// Whether `addr` is an extra socket's.
    pub(crate) fn owns(&self, addr: Option<SocketAddr>) -> bool {
        addr.is_some_and(|a| self.sockets.iter().any(|(local, _)| *local == a))
    }

    /// Whether none is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The index of a socket that may have a datagram waiting; pending while none has.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<usize> {
        for (i, (_, socket)) in self.sockets.iter().enumerate() {
            if socket.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    }

    /// Reads at most `max` waiting datagrams of socket `index` and hands each to
    /// `deliver`, stamped with that socket's local address; returns how many.
    pub(crate) fn receive(
        &mut self,
        index: usize,
        max: usize,
        mut deliver: impl FnMut(Datagram),
    ) -> usize {
        let Some((local, socket)) = self.sockets.get(index) else {
            return 0;
        };
        self.buf.resize(MAX_DATAGRAM, 0);
        let mut delivered = 0;
        while delivered < max {
            match socket.try_recv_from(&mut self.buf) {
                Ok((len, remote)) => {
                    deliver(Datagram {
                        local: *local,
                        remote,
                        payload: Bytes::copy_from_slice(&self.buf[..len]),
                    });
                    delivered += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(%error, %local, "receive on an extra socket failed");
                    break;
                }
            }
        }
        delivered
    }

    /// Sends `transmit` from the extra socket its source names, with its TTL for this one
    /// datagram (its datagrams one by one, when it holds several); a full send buffer
    /// drops it (probes are retried, QUIC recovers).
    pub(crate) fn send(&self, transmit: &Transmit) -> io::Result<()> {
        let socket = (self.sockets.iter())
            .find(|(local, _)| Some(*local) == transmit.source)
            .map(|(_, socket)| socket)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        // Straight to the OS, non-blocking: tokio's own `try_send_to` refuses until its
        // reactor has seen the socket writable once.
        let sock = SockRef::from(socket);
        let destination = SockAddr::from(canonical(transmit.destination));
        let send = || {
            (transmit.clone().split(1))
                .try_for_each(|datagram| sock.send_to(&datagram.payload, &destination).map(drop))
        };
        let Some(ttl) = transmit.ttl else {
            return send();
        };
        let default = sock.ttl_v4()?;
        sock.set_ttl_v4(u32::from(ttl))?;
        let sent = send();
        sock.set_ttl_v4(default)?;
        sent
    }
}

/// A non-blocking IPv4 socket bound at `addr` (through the base's [`macula_udp::open`]), and its
/// address.
fn bind(addr: SocketAddr) -> io::Result<(SocketAddr, UdpSocket)> {
    let socket = UdpSocket::from_std(macula_udp::open(addr)?)?;
    Ok((socket.local_addr()?, socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_open_capped_carry_datagrams_both_ways_and_close() {
        let mut extra = ExtraSockets::default();
        let near = SocketAddr::from(([127, 0, 0, 1], 9));
        let opened = extra.open(near, 2);
        assert_eq!(opened.len(), 2);
        assert!(opened.iter().all(|a| a.ip() == near.ip() && a.port() != 0));
        assert!(extra.owns(Some(opened[1])) && !extra.owns(None));
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let transmit = Transmit {
            source: Some(opened[1]),
            destination: peer.local_addr().unwrap(),
            payload: Bytes::from_static(b"probe"),
            segment_size: None,
            ttl: Some(3),
        };
        extra.send(&transmit).unwrap();
        let mut buf = [0u8; 16];
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"probe"[..], opened[1]));
        peer.send_to(b"answer", opened[1]).unwrap();
        let ready = std::future::poll_fn(|cx| extra.poll_readable(cx)).await;
        let mut got = Vec::new();
        assert_eq!(extra.receive(ready, 8, |d| got.push(d)), 1);
        assert_eq!(got[0].local, opened[1]);
        assert_eq!(got[0].payload, Bytes::from_static(b"answer"));
        // An unknown source is refused, closing forgets.
        let stray = Transmit {
            source: Some(near),
            ..transmit
        };
        assert!(extra.send(&stray).is_err());
        extra.close(&opened);
        assert!(extra.is_empty());
    }
}
