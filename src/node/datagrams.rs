//! Datagrams in and out: the first-byte split of the one socket, QUIC
//! packets to quinn under the peer's virtual address, and quinn's transmits
//! mapped back to real addresses.

use super::*;

impl Node {
    pub(super) fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        match classify(&datagram.payload) {
            DatagramClass::Quic => self.handle_quic(now, datagram),
            DatagramClass::Stun => self.handle_stun(now, datagram),
            DatagramClass::Unknown => self.counters.unknown_dropped += 1,
        }
    }

    pub(super) fn handle_quic(&mut self, now: Instant, datagram: Datagram) {
        self.counters.quic_datagrams += 1;
        let virtual_addr = self.paths.virtual_for(RealPath::Direct(datagram.remote));
        let mut buf = Vec::new();
        let data = BytesMut::from(&datagram.payload[..]);
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
                            datagram.remote,
                            virtual_addr,
                            self.config.limits,
                            self.config.connection_buffer_budget(),
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
        if let Some(RealPath::Direct(destination)) = self.paths.real(&transmit.destination) {
            self.out.push_back(Output::Transmit(Transmit {
                source: None,
                destination,
                payload: Bytes::copy_from_slice(&buf[..transmit.size]),
                ttl: None,
            }));
        }
    }

    pub(super) fn gather_transmits(&mut self, now: Instant) {
        let mut buf = Vec::new();
        for conn in self.conns.values_mut() {
            loop {
                buf.clear();
                let Some(transmit) = conn.quinn.poll_transmit(now, 1, &mut buf) else {
                    break;
                };
                let Some(RealPath::Direct(destination)) = self.paths.real(&transmit.destination)
                else {
                    continue;
                };
                self.out.push_back(Output::Transmit(Transmit {
                    source: None,
                    destination,
                    payload: Bytes::copy_from_slice(&buf[..transmit.size]),
                    ttl: None,
                }));
            }
        }
    }
}
