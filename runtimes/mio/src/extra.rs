//! Extra UDP sockets a machine asks for beside its main one (`macula::SocketRequest`), on
//! [`macula_udp::ExtraSockets`]: here each is a `mio` socket registered with the
//! application's poll under the driver's own token, so an event with that token may
//! concern any of them; the driver then reads each until it has nothing waiting (mio is
//! edge-triggered) or the turn's budget is spent.

use std::io;
use std::net::SocketAddr;

use macula::{Datagram, Transmit};
use macula_udp::{ExtraSet, read_extra};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

/// The open extra sockets and where they are registered.
#[derive(Default)]
pub(crate) struct ExtraSockets {
    set: macula_udp::ExtraSockets<UdpSocket>,
    /// The application's registry (a clone) and the driver's token, once registered.
    poll: Option<(Registry, Token)>,
    buf: Vec<u8>,
}

impl ExtraSet for ExtraSockets {
    /// Opens up to `count` sockets near `near` ([`macula_udp::ExtraSockets::open`]),
    /// registered when the driver is.
    fn open(&mut self, near: SocketAddr, count: u16) -> Vec<SocketAddr> {
        let poll = self.poll.as_ref();
        self.set.open(near, count, |std| {
            let mut socket = UdpSocket::from_std(std);
            if let Some((registry, token)) = poll {
                registry.register(&mut socket, *token, Interest::READABLE)?;
            }
            Ok(socket)
        })
    }

    /// Closes the sockets at `addrs` (unknown ones are ignored), deregistered first.
    fn close(&mut self, addrs: &[SocketAddr]) {
        for mut socket in self.set.close(addrs) {
            if let Some((registry, _)) = &self.poll
                && let Err(error) = registry.deregister(&mut socket)
            {
                tracing::debug!(%error, "could not deregister an extra socket");
            }
        }
    }
}

impl ExtraSockets {
    /// Registers the open sockets, and every one opened later, with `registry` under `token`.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let registry = registry.try_clone()?;
        for (_, socket) in self.set.sockets_mut() {
            registry.register(socket, token, Interest::READABLE)?;
        }
        self.poll = Some((registry, token));
        Ok(())
    }

    /// Removes the sockets from the registry they were registered with.
    pub(crate) fn deregister(&mut self) -> io::Result<()> {
        if let Some((registry, _)) = self.poll.take() {
            for (_, socket) in self.set.sockets_mut() {
                registry.deregister(socket)?;
            }
        }
        Ok(())
    }

    /// Whether `addr` is an extra socket's.
    pub(crate) fn owns(&self, addr: Option<SocketAddr>) -> bool {
        self.set.owns(addr)
    }

    /// Reads at most `max` waiting datagrams over all sockets, handing each to `deliver`
    /// stamped with its socket's local address; returns how many, and whether the budget
    /// ran out (more may wait).
    pub(crate) fn receive(
        &mut self,
        max: usize,
        mut deliver: impl FnMut(Datagram),
    ) -> (usize, bool) {
        let mut delivered = 0;
        for (local, socket) in self.set.sockets() {
            let recv = |b: &mut [u8]| socket.recv_from(b);
            let left = max - delivered;
            delivered += read_extra(*local, &mut self.buf, left, recv, &mut deliver);
            if delivered >= max {
                return (delivered, true);
            }
        }
        (delivered, false)
    }

    /// Sends `transmit` from the extra socket its source names
    /// ([`macula_udp::ExtraSockets::send`]).
    pub(crate) fn send(&self, transmit: &Transmit) -> io::Result<()> {
        self.set.send(transmit)
    }
}
