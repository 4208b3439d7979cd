//! Datagrams in and out: the first-byte split of the one socket, QUIC
//! packets to quinn under the peer's virtual address, and quinn's transmits
//! mapped back to their real path (a UDP address, or a relay circuit).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{DatagramEvent, Incoming};

use super::{Node, silence};
use crate::connection::Conn;
use crate::connection::admission::Verdict;
use crate::contract::{Datagram, Output, Transmit};
use crate::demux::{DatagramClass, classify};
use crate::path::{PathTable, RealPath};
use crate::pool::Direction;

impl Node {
    pub(super) fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        match classify(&datagram.payload) {
            DatagramClass::Quic => {
                self.counters.quic_datagrams += 1;
                let path = RealPath::Direct(datagram.remote);
                let known = self.paths.lookup(&path).is_some();
                let virtual_addr = self.paths.virtual_for(path);
                let taken = self.handle_quic(now, virtual_addr, datagram.remote, &datagram.payload);
                if !known && !taken && !self.retry_holds.holds(&virtual_addr) {
                    // A source that started no connection leaves no trace
                    // (a flood from many ports must not grow the table).
                    self.paths.remove(&virtual_addr);
                }
            }
            // The puncher first: a Binding request carrying a punch's tag is its probe,
            // which the plain responder must not answer.
            DatagramClass::Stun => {
                if !self.upgrade_stun(now, &datagram) {
                    self.handle_stun(now, datagram);
                }
            }
            DatagramClass::Unknown => self.counters.unknown_dropped += 1,
        }
    }

    /// Hands one QUIC packet that came over the path of `virtual_addr` to
    /// quinn. `remote` is what the application hears as the peer's address
    /// (the UDP address, or the virtual address of a circuit). True when a
    /// connection took it (an existing one, or one it started).
    pub(super) fn handle_quic(
        &mut self,
        now: Instant,
        virtual_addr: SocketAddr,
        remote: SocketAddr,
        packet: &[u8],
    ) -> bool {
        let mut buf = Vec::new();
        let data = BytesMut::from(packet);
        match self
            .endpoint
            .handle(now, virtual_addr, None, None, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.quinn.handle_event(event);
                }
                true
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.admit(now, incoming, virtual_addr, remote, &mut buf)
            }
            Some(DatagramEvent::Response(transmit)) => {
                self.push_endpoint_transmit(&transmit, &buf);
                false
            }
            None => false,
        }
    }

    /// Decides on an incoming handshake (docs of
    /// [`crate::connection::admission`]): accepted, asked to prove its
    /// address with a Retry, or refused. True when a connection started.
    fn admit(
        &mut self,
        now: Instant,
        incoming: Incoming,
        virtual_addr: SocketAddr,
        remote: SocketAddr,
        buf: &mut Vec<u8>,
    ) -> bool {
        // A circuit's handshake has no source of its own: the relay limits it.
        let source = (!PathTable::is_virtual(&remote)).then(|| remote.ip());
        let validated = incoming.remote_address_validated();
        match self.admission.incoming(source, validated) {
            Verdict::Accept => match self.endpoint.accept(incoming, now, buf, None) {
                Ok((handle, quinn)) => {
                    let mut conn = Conn::new(
                        quinn,
                        Direction::Inbound,
                        None,
                        remote,
                        virtual_addr,
                        self.config.buffer_bounds(),
                    );
                    conn.ticket = self.admission.admitted(source);
                    self.conns.insert(handle, conn);
                    self.retry_holds.claim(&virtual_addr);
                    return true;
                }
                Err(error) => {
                    if let Some(transmit) = error.response {
                        self.push_endpoint_transmit(&transmit, buf);
                    }
                }
            },
            Verdict::Retry => match self.endpoint.retry(incoming, buf) {
                Ok(transmit) => {
                    self.push_endpoint_transmit(&transmit, buf);
                    // The token names this virtual address: keep it for the
                    // client's return.
                    if let Some(dropped) = self.retry_holds.hold(virtual_addr) {
                        self.paths.remove(&dropped);
                    }
                }
                Err(error) => self.endpoint.ignore(error.into_incoming()),
            },
            Verdict::Refuse(refusal) => {
                tracing::debug!(%remote, reason = refusal.describe(), "handshake refused");
                let transmit = self.endpoint.refuse(incoming, buf);
                self.push_endpoint_transmit(&transmit, buf);
            }
        }
        false
    }

    pub(super) fn push_endpoint_transmit(&mut self, transmit: &quinn_proto::Transmit, buf: &[u8]) {
        let packet = Bytes::copy_from_slice(&buf[..transmit.size]);
        self.send_packet(transmit.destination, packet);
    }

    /// Sends one QUIC packet to the real path of `virtual_addr`; packets to
    /// a path that is gone are dropped (QUIC recovers or gives up).
    fn send_packet(&mut self, virtual_addr: SocketAddr, packet: Bytes) {
        match self.paths.real(&virtual_addr) {
            Some(RealPath::Direct(destination)) => {
                self.out.push_back(Output::Transmit(Transmit {
                    source: None,
                    destination,
                    payload: packet,
                    ttl: None,
                }));
            }
            Some(RealPath::Relay { relay, circuit }) => {
                self.send_on_circuit(relay, circuit, &packet)
            }
            None => {}
        }
    }

    /// Gathers the transmits of the connections driven since the last
    /// gathering. Packets written onto circuit streams touch the relay
    /// connections, which `settle` then drives and gathers in turn.
    pub(super) fn gather_transmits(&mut self, now: Instant) {
        let mut packets = Vec::new();
        let (paths, client) = (&self.paths, &self.relay_client);
        let limit = self.config.relay.silence;
        let watch = |conn: &Conn| {
            silence::watched(paths, client, conn).map(|_| limit.after(conn.quinn.rtt()))
        };
        let send = |virtual_addr, packet| packets.push((virtual_addr, packet));
        let polled = self.conns.poll_transmits(now, send, watch);
        self.counters.connection_polls += polled as u64;
        for (virtual_addr, packet) in packets {
            self.send_packet(virtual_addr, packet);
        }
    }
}
