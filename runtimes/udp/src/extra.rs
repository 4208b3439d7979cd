//! Extra UDP sockets a machine asks for beside its main one (`macula::SocketRequest`: the
//! birthday search for a peer behind a hard NAT opens a few hundred for a few seconds and
//! keeps one; a re-punch after a direct path died opens one fresh port). Kept apart from
//! the main socket's batched I/O: each is a plain IPv4 socket of the driver's own type
//! (the search and the fresh port are IPv4 only), written one datagram at a time. The
//! driver reads them through its own readiness mechanism.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use bytes::Bytes;
use macula::{Datagram, Input, Machine, SocketRequest, Transmit};
use socket2::{SockAddr, SockRef};

use crate::address::canonical;
use crate::base::OsSocket;

/// The most extra sockets open at once; a request beyond it opens fewer.
pub const MAX_EXTRA_SOCKETS: usize = 1024;

/// The largest datagram a driver reads from an extra socket (larger ones are truncated:
/// QUIC and STUN datagrams are far smaller).
pub const MAX_EXTRA_DATAGRAM: usize = 2048;

/// The open extra sockets of type `S`, by local address, oldest first.
#[derive(Debug)]
pub struct ExtraSockets<S> {
    sockets: Vec<(SocketAddr, S)>,
}

impl<S> Default for ExtraSockets<S> {
    fn default() -> Self {
        Self {
            sockets: Vec::new(),
        }
    }
}

impl<S: OsSocket> ExtraSockets<S> {
    /// Opens up to `count` sockets on ephemeral ports of `near`'s IP (the unspecified IPv4
    /// address when `near` is IPv6 or unspecified), each made the driver's type by `wrap`,
    /// and returns their addresses; stops at [`MAX_EXTRA_SOCKETS`] or the first failure
    /// (logged).
    pub fn open(
        &mut self,
        near: SocketAddr,
        count: u16,
        mut wrap: impl FnMut(UdpSocket) -> io::Result<S>,
    ) -> Vec<SocketAddr> {
        let ip = match near.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let room = MAX_EXTRA_SOCKETS.saturating_sub(self.sockets.len());
        let mut opened = Vec::new();
        for _ in 0..usize::from(count).min(room) {
            let bound = crate::open(SocketAddr::from((ip, 0)))
                .and_then(|std| Ok((std.local_addr()?, wrap(std)?)));
            match bound {
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

    /// Removes the sockets at `addrs` (unknown ones are ignored) and returns them, for the
    /// driver to deregister before they drop.
    pub fn close(&mut self, addrs: &[SocketAddr]) -> Vec<S> {
        let (closed, kept) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(local, _)| addrs.contains(local));
        self.sockets = kept;
        closed.into_iter().map(|(_, socket)| socket).collect()
    }

    /// Whether `addr` is an extra socket's.
    pub fn owns(&self, addr: Option<SocketAddr>) -> bool {
        addr.is_some_and(|a| self.sockets.iter().any(|(local, _)| *local == a))
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The open sockets with their local addresses, oldest first.
    pub fn sockets(&self) -> &[(SocketAddr, S)] {
        &self.sockets
    }

    /// The open sockets, mutably (to register one with a poll).
    pub fn sockets_mut(&mut self) -> &mut [(SocketAddr, S)] {
        &mut self.sockets
    }

    /// Sends `transmit` from the extra socket its source names, with its TTL for this one
    /// send (its datagrams one by one, when it holds several), straight to the OS and
    /// non-blocking: a full send buffer refuses it (`WouldBlock`; probes are retried, QUIC
    /// recovers). `NotFound` when no extra socket has that address.
    pub fn send(&self, transmit: &Transmit) -> io::Result<()> {
        let socket = (self.sockets.iter())
            .find(|(local, _)| Some(*local) == transmit.source)
            .map(|(_, socket)| socket)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
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

/// A driver's extra sockets as [`handle_request`] works them.
pub trait ExtraSet {
    /// Opens up to `count` sockets near the main socket's address `near`; their addresses.
    fn open(&mut self, near: SocketAddr, count: u16) -> Vec<SocketAddr>;
    /// Closes the sockets at `addrs` (unknown ones are ignored).
    fn close(&mut self, addrs: &[SocketAddr]);
}

/// Carries out `machine`'s `request` on `set`: opens sockets near `near` and tells the
/// machine which ([`Input::SocketsOpened`], stamped with the monotonic clock), or closes.
pub fn handle_request<M: Machine>(
    set: &mut impl ExtraSet,
    near: SocketAddr,
    request: SocketRequest,
    machine: &mut M,
) {
    match request {
        SocketRequest::Open { count } => {
            let opened = set.open(near, count);
            tracing::debug!(asked = count, opened = opened.len(), "extra sockets");
            machine.handle_input(crate::clock::now(), Input::SocketsOpened(opened));
        }
        SocketRequest::Close(addrs) => set.close(&addrs),
    }
}

/// Reads the extra socket at `local` through `recv` (the driver's own non-blocking
/// receive) into `buf` until nothing waits, a read fails (logged) or `max` were read;
/// hands each datagram to `deliver`, stamped with `local`; returns how many.
pub fn read_extra(
    local: SocketAddr,
    buf: &mut Vec<u8>,
    max: usize,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
    mut deliver: impl FnMut(Datagram),
) -> usize {
    buf.resize(MAX_EXTRA_DATAGRAM, 0);
    let mut delivered = 0;
    while delivered < max {
        match recv(buf) {
            Ok((len, remote)) => {
                let payload = Bytes::copy_from_slice(&buf[..len]);
                deliver(Datagram {
                    local,
                    remote,
                    payload,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(source: SocketAddr, destination: SocketAddr) -> Transmit {
        Transmit {
            source: Some(source),
            destination,
            payload: Bytes::from_static(b"probe"),
            segment_size: None,
            ttl: Some(3),
        }
    }

    #[test]
    fn sockets_open_on_the_main_ip_send_from_their_source_and_close() {
        let mut extra = ExtraSockets::<UdpSocket>::default();
        let near = SocketAddr::from(([127, 0, 0, 1], 9));
        let opened = extra.open(near, 2, Ok);
        assert_eq!(opened.len(), 2);
        assert!(opened.iter().all(|a| a.ip() == near.ip() && a.port() != 0));
        assert!(extra.owns(Some(opened[1])) && !extra.owns(None) && !extra.owns(Some(near)));
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        extra
            .send(&probe(opened[1], peer.local_addr().unwrap()))
            .unwrap();
        let mut buf = [0u8; 16];
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"probe"[..], opened[1]));
        // The socket's own TTL is back after the probe's.
        let ttl = SockRef::from(&extra.sockets()[1].1).ttl_v4().unwrap();
        assert_ne!(ttl, 3);
        // An unknown source is refused; closing hands the sockets back.
        let stray = probe(near, peer.local_addr().unwrap());
        assert_eq!(
            extra.send(&stray).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(extra.close(&[opened[0], near]).len(), 1);
        assert!(!extra.owns(Some(opened[0])) && extra.owns(Some(opened[1])));
        extra.close(&opened);
        assert!(extra.is_empty());
    }

    #[test]
    fn a_read_stops_at_its_budget_at_nothing_waiting_and_at_an_error() {
        let local = SocketAddr::from(([127, 0, 0, 1], 40000));
        let from = SocketAddr::from(([127, 0, 0, 1], 5000));
        let mut waiting = vec![Ok((2, from)), Ok((1, from)), Ok((1, from))];
        let mut recv = |b: &mut [u8]| {
            b[..2].copy_from_slice(b"ok");
            waiting
                .pop()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
        };
        let (mut buf, mut got) = (Vec::new(), Vec::new());
        assert_eq!(
            read_extra(local, &mut buf, 2, &mut recv, |d| got.push(d)),
            2
        );
        assert_eq!(
            read_extra(local, &mut buf, 9, &mut recv, |d| got.push(d)),
            1
        );
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|d| d.local == local && d.remote == from));
        assert_eq!(got[2].payload, Bytes::from_static(b"ok"));
        let failing = |_: &mut [u8]| Err(io::Error::other("refused"));
        assert_eq!(read_extra(local, &mut buf, 9, failing, |d| got.push(d)), 0);
    }

    #[test]
    fn a_wrap_that_fails_stops_the_opening() {
        let mut extra = ExtraSockets::<UdpSocket>::default();
        let near = SocketAddr::from(([127, 0, 0, 1], 9));
        let refused = extra.open(near, 3, |_| Err(io::Error::other("no room")));
        assert!(refused.is_empty() && extra.is_empty());
    }
}
