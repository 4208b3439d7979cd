//! Datagrams in and out: the first-byte split of the one socket, QUIC
//! packets to quinn under the peer's virtual address, and quinn's transmits
//! mapped back to their real path (a UDP address, or a relay circuit).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::DatagramEvent;

use super::Node;
use crate::connection::Conn;
use crate::contract::{Datagram, Output, Transmit};
use crate::demux::{DatagramClass, classify};
use crate::path::RealPath;
use crate::pool::Direction;

impl Node {
    pub(super) fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        match classify(&datagram.payload) {
            DatagramClass::Quic => {
                self.counters.quic_datagrams += 1;
                let path = RealPath::Direct(datagram.remote);
                let virtual_addr = self.paths.virtual_for(path);
                self.handle_quic(now, virtual_addr, datagram.remote, &datagram.payload);
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
    /// (the UDP address, or the virtual address of a circuit).
    pub(super) fn handle_quic(
        &mut self,
        now: Instant,
        virtual_addr: SocketAddr,
        remote: SocketAddr,
        packet: &[u8],
    ) {
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
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((handle, quinn)) => {
                        let conn = Conn::new(
                            quinn,
                            Direction::Inbound,
                            None,
                            remote,
                            virtual_addr,
                            self.config.buffer_bounds(),
                        );
                        self.conns.insert(handle, conn);
                    }
                    Err(error) => {
                        if let Some(transmit) = error.response {
                            self.push_endpoint_transmit(&transmit, &buf);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(transmit)) => self.push_endpoint_transmit(&transmit, &buf),
            None => {}
        }
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
        let polled = self.conns.poll_transmits(now, |virtual_addr, packet| {
            packets.push((virtual_addr, packet))
        });
        self.counters.connection_polls += polled as u64;
        for (virtual_addr, packet) in packets {
            self.send_packet(virtual_addr, packet);
        }
    }
}
