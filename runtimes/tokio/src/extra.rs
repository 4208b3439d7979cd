//! Extra UDP sockets a machine asks for beside its main one (`macula::SocketRequest`), on
//! [`macula_udp::ExtraSockets`]: here each is a tokio socket, waited on through tokio's
//! reactor and read into one shared buffer.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use macula::{Datagram, Transmit};
use macula_udp::{ExtraSet, read_extra};
use tokio::net::UdpSocket;

/// The open extra sockets, by local address.
#[derive(Default)]
pub(crate) struct ExtraSockets {
    set: macula_udp::ExtraSockets<UdpSocket>,
    buf: Vec<u8>,
}

impl ExtraSet for ExtraSockets {
    /// Opens up to `count` sockets near `near` ([`macula_udp::ExtraSockets::open`]).
    /// Must run inside a tokio runtime.
    fn open(&mut self, near: SocketAddr, count: u16) -> Vec<SocketAddr> {
        self.set.open(near, count, UdpSocket::from_std)
    }

    fn close(&mut self, addrs: &[SocketAddr]) {
        self.set.close(addrs);
    }
}

impl ExtraSockets {
    /// Whether `addr` is an extra socket's.
    pub(crate) fn owns(&self, addr: Option<SocketAddr>) -> bool {
        self.set.owns(addr)
    }

    /// Whether none is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The index of a socket that may have a datagram waiting; pending while none has.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<usize> {
        for (i, (_, socket)) in self.set.sockets().iter().enumerate() {
            if socket.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    }

    /// Reads at most `max` waiting datagrams of socket `index` (through tokio, which then
    /// knows the socket was drained) and hands each to `deliver`, stamped with that
    /// socket's local address; returns how many.
    pub(crate) fn receive(
        &mut self,
        index: usize,
        max: usize,
        deliver: impl FnMut(Datagram),
    ) -> usize {
        let Some((local, socket)) = self.set.sockets().get(index) else {
            return 0;
        };
        read_extra(
            *local,
            &mut self.buf,
            max,
            |b| socket.try_recv_from(b),
            deliver,
        )
    }

    /// Sends `transmit` from the extra socket its source names
    /// ([`macula_udp::ExtraSockets::send`]).
    pub(crate) fn send(&self, transmit: &Transmit) -> io::Result<()> {
        self.set.send(transmit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
