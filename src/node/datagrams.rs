//! Datagrams in and out: the first-byte split of the one socket, QUIC
//! packets to quinn under the peer's virtual address, and quinn's transmits
//! mapped back to their real path (a UDP address, or a relay circuit).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, Incoming};

use super::{Node, silence};
use crate::connection::admission::Verdict;
use crate::connection::{Conn, Segments, frames_received};
use crate::contract::{Datagram, Output, Transmit};
use crate::demux::{DatagramClass, classify};
use crate::path::{PathTable, RealPath};
use crate::pool::Direction;

/// A QUIC packet on its way to quinn, which takes its bytes by value.
pub(super) enum Inbound {
    /// Handed over as it is: without a copy when nothing else holds its
    /// bytes ([`owned`]).
    Owned(Bytes),
    /// Copied for quinn and kept, to be handed again should it turn out to
    /// be a connection's that came over a new path.
    Kept(Bytes),
}

impl Inbound {
    /// The bytes for quinn, and the packet when kept.
    fn split(self) -> (BytesMut, Option<Bytes>) {
        match self {
            Inbound::Owned(packet) => (owned(packet), None),
            Inbound::Kept(packet) => (BytesMut::from(&packet[..]), Some(packet)),
        }
    }
}

/// `packet`'s bytes as quinn takes them: the same memory when `packet` is
/// its only handle (a driver's datagram, read into a buffer of its own),
/// else a copy.
fn owned(packet: Bytes) -> BytesMut {
    packet
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

impl Node {
    pub(super) fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        if self.portmap_datagram(now, &datagram) {
            return;
        }
        match classify(&datagram.payload) {
            DatagramClass::Quic => {
                self.counters.quic_datagrams += 1;
                let path = RealPath::Direct(datagram.remote);
                let known = self.paths.lookup(&path).is_some();
                let virtual_addr = self.paths.virtual_for(path);
                // An extra socket's port is not the node's address.
                if self.direct_sockets.get(&virtual_addr) != Some(&datagram.local) {
                    self.local_addrs.arrived(datagram.local);
                }
                let arrival = Some((datagram.local, datagram.remote));
                // A packet over a path not known before may be a connection's whose
                // peer's NAT rebound: kept, to be handed to quinn again under the
                // connection's own address ([`Node::follow_rebinding`]).
                let packet = if known {
                    Inbound::Owned(datagram.payload)
                } else {
                    Inbound::Kept(datagram.payload)
                };
                let taken = self.handle_quic(now, virtual_addr, arrival, packet);
                if !known && !taken && !self.retry_holds.holds(&virtual_addr) {
                    // A source that started no connection leaves no trace
                    // (a flood from many ports must not grow the table).
                    self.paths.remove(&virtual_addr);
                }
            }
            // The puncher first: a Binding request carrying a punch's tag is its probe,
            // which the plain responder must not answer; nor a connection's probe.
            DatagramClass::Stun => {
                if !self.upgrade_stun(now, &datagram) && !self.handle_probe(now, &datagram) {
                    self.handle_stun(now, datagram);
                }
            }
            DatagramClass::Unknown => self.counters.unknown_dropped += 1,
        }
    }

    /// Hands one QUIC packet that came over the path of `virtual_addr` to
    /// quinn. `arrival` is the (local, remote) pair of a UDP datagram; `None`
    /// for a packet out of a relay circuit, whose peer the application hears
    /// at the virtual address. True when a connection took it (an existing
    /// one, or one it started). Only a [kept](Inbound::Kept) packet of
    /// another connection than the path's can make that connection follow
    /// its peer onto the path.
    ///
    /// quinn keeps the local IP an accepted connection was reached at and
    /// sends its packets from it ([`Node::push_endpoint_transmit`]): a node
    /// on a socket bound to a wildcard address, on a host with several
    /// addresses, answers from the one its peer dialed, which is the one the
    /// peer's NAT or firewall expects.
    pub(super) fn handle_quic(
        &mut self,
        now: Instant,
        virtual_addr: SocketAddr,
        arrival: Option<(SocketAddr, SocketAddr)>,
        packet: Inbound,
    ) -> bool {
        let mut buf = Vec::new();
        let (data, kept) = packet.split();
        let local_ip = (arrival.map(|(local, _)| local.ip())).filter(|ip| !ip.is_unspecified());
        match self
            .endpoint
            .handle(now, virtual_addr, local_ip, None, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                match self.conns.get_mut(&handle) {
                    Some(conn) if conn.virtual_addr == virtual_addr => {
                        // A direct path's watch that waits hears of the
                        // peer only through packets that prove authentic.
                        let remote = arrival.map(|(_, remote)| remote);
                        let waiting = remote.is_some_and(|r| self.upgrades.waiting_for(r));
                        // A packet out of the relay circuit of a connection on its
                        // direct path: the peer may have fallen back.
                        let relayed_while_direct = arrival.is_none()
                            && matches!(self.paths.real(&virtual_addr), Some(RealPath::Direct(_)));
                        let before =
                            (waiting || relayed_while_direct).then(|| frames_received(&conn.quinn));
                        conn.quinn.handle_event(event);
                        let authentic = before.is_some_and(|b| frames_received(&conn.quinn) > b);
                        if let Some(remote) = remote
                            && authentic
                        {
                            self.upgrades.handle_heard(now, remote);
                        }
                        if relayed_while_direct && authentic {
                            self.peer_spoke_relayed(now, handle);
                        }
                        true
                    }
                    // The connection's packets came over another path:
                    // the event (under the wrong address) is dropped.
                    Some(_) => kept.is_some_and(|packet| match arrival {
                        Some(_) => self.follow_rebinding(now, handle, virtual_addr, packet),
                        None => self.adopt_spare_on_packet(now, handle, virtual_addr, packet),
                    }),
                    None => true,
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.admit(now, incoming, virtual_addr, arrival, &mut buf)
            }
            Some(DatagramEvent::Response(transmit)) => {
                self.push_endpoint_transmit(&transmit, &buf);
                false
            }
            None => false,
        }
    }

    /// A packet of connection `handle` came over the path of `arrived_at`,
    /// not over the connection's own: the peer's NAT gave it a new address
    /// (a reboot, an expired mapping) or the peer roamed. QUIC migration is
    /// off (quinn sees one virtual address per connection), so the node
    /// follows the peer itself: the packet is handed to the connection as
    /// if it came over its own path, and only if it proves authentic (quinn
    /// decrypted new frames from it: a forged or replayed packet adds none)
    /// does the connection's virtual address move onto the new path.
    /// Packets of ours to a wrong address (an on-path attacker's copy that
    /// raced the original) last until the peer's next packet moves the path
    /// back. Only direct paths follow: a relayed connection's path is the
    /// upgrade's to change. True when the connection followed.
    fn follow_rebinding(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        arrived_at: SocketAddr,
        packet: Bytes,
    ) -> bool {
        let Some(RealPath::Direct(new)) = self.paths.real(&arrived_at) else {
            return false;
        };
        let Some(own) = self.conns.get(&handle).map(|c| c.virtual_addr) else {
            return false;
        };
        if !matches!(self.paths.real(&own), Some(RealPath::Direct(_)))
            || !self.handle_as_own(now, handle, packet)
        {
            return false;
        }
        self.paths.remove(&arrived_at);
        self.move_direct_path(now, handle, new)
    }

    /// Hands `packet`, which came over another path than its connection's,
    /// to `handle`'s connection as if it came over its own; true when it
    /// proved authentic (quinn decrypted new frames from it: a forged or
    /// replayed packet adds none).
    pub(super) fn handle_as_own(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        packet: Bytes,
    ) -> bool {
        let Some(own) = self.conns.get(&handle).map(|c| c.virtual_addr) else {
            return false;
        };
        let mut buf = Vec::new();
        let again = self
            .endpoint
            .handle(now, own, None, None, owned(packet), &mut buf);
        let Some(DatagramEvent::ConnectionEvent(same, event)) = again else {
            return false;
        };
        let Some(conn) = self.conns.get_mut(&same).filter(|_| same == handle) else {
            return false;
        };
        let before = frames_received(&conn.quinn);
        conn.quinn.handle_event(event);
        frames_received(&conn.quinn) > before
    }

    /// Moves the direct path of connection `handle` to the peer's new
    /// address `new` (it proved to be there: an authentic QUIC packet, or
    /// an authenticated liveness probe), its liveness probes with it; true
    /// when it moved. A relayed connection's path is the upgrade's to change.
    pub(super) fn move_direct_path(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        new: SocketAddr,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return false;
        };
        if !matches!(
            self.paths.real(&conn.virtual_addr),
            Some(RealPath::Direct(_))
        ) {
            return false;
        }
        if self
            .paths
            .switch(conn.virtual_addr, RealPath::Direct(new))
            .is_err()
        {
            return false;
        }
        tracing::debug!(old = %conn.remote, %new, "the peer's address changed: following it");
        conn.remote = new;
        conn.path_changed(now);
        if let Some(pool_id) = conn.pool_id {
            self.upgrades.handle_rebound(now, pool_id, new);
        }
        self.counters.rebindings += 1;
        true
    }

    /// Decides on an incoming handshake (docs of
    /// [`crate::connection::admission`]): accepted, asked to prove its
    /// address with a Retry, or refused. True when a connection started.
    fn admit(
        &mut self,
        now: Instant,
        incoming: Incoming,
        virtual_addr: SocketAddr,
        arrival: Option<(SocketAddr, SocketAddr)>,
        buf: &mut Vec<u8>,
    ) -> bool {
        let remote = arrival.map_or(virtual_addr, |(_, remote)| remote);
        // A circuit's handshake has no source of its own: the relay limits it.
        let source = (!PathTable::is_virtual(&remote)).then(|| remote.ip());
        let validated = incoming.remote_address_validated();
        // Over a circuit the dialer keeps the connection alive, later than it would a direct one.
        let server = arrival.is_none().then(|| self.quic.circuit_server.clone());
        match self.admission.incoming(now, source, validated) {
            Verdict::Accept => match self.endpoint.accept(incoming, now, buf, server) {
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
                    conn.connect_deadline = Some(now + self.config.handshake_timeout);
                    conn.flight = self.quic.congestion.take_built();
                    // Checked before we answer: our answer makes its source
                    // one we sent to.
                    conn.unsolicited = arrival.is_some_and(|(local, remote)| {
                        self.reach.is_unsolicited(now, local, remote)
                    });
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
        let segments = Segments {
            payload: Bytes::copy_from_slice(&buf[..transmit.size]),
            segment_size: transmit.segment_size,
        };
        self.send_packets(transmit.destination, segments, transmit.src_ip, false);
    }

    /// Sends QUIC datagrams (one, or several of a segment size back to
    /// back) to the real path of `virtual_addr`: as one transmit to a direct
    /// path, from `src_ip` (the IP the connection was reached at) when
    /// [`super::local_addrs`] allows, or one by one onto a relay circuit;
    /// packets to a path that is gone are dropped (QUIC recovers or gives
    /// up). `awaiting_ack`: the packets' connection awaits an
    /// acknowledgement of ack-eliciting frames, so a watched direct path
    /// waits for a word back (a bare ACK elicits none).
    fn send_packets(
        &mut self,
        virtual_addr: SocketAddr,
        packets: Segments,
        src_ip: Option<IpAddr>,
        awaiting_ack: bool,
    ) {
        match self.paths.real(&virtual_addr) {
            Some(RealPath::Direct(destination)) => {
                if awaiting_ack {
                    self.upgrades.handle_sent(self.last_now, destination);
                }
                let source = match self.direct_sockets.get(&virtual_addr) {
                    Some(local) => Some(*local),
                    None => self.local_addrs.source(src_ip, destination),
                };
                let mut transmit = Transmit::single(source, destination, packets.payload);
                transmit.segment_size = packets.segment_size;
                self.out.push_back(Output::Transmit(transmit));
            }
            Some(RealPath::Relay { relay, circuit }) => {
                let size = packets.segment_size.unwrap_or(packets.payload.len()).max(1);
                for packet in packets.payload.chunks(size) {
                    self.send_on_circuit(relay, circuit, packet);
                }
            }
            None => {}
        }
    }

    /// Gathers the transmits of the connections driven since the last
    /// gathering. Packets written onto circuit streams touch the relay
    /// connections, which `settle` then drives and gathers in turn.
    pub(super) fn gather_transmits(&mut self, now: Instant) {
        let mut packets = Vec::new();
        let parts = silence::Parts {
            paths: &self.paths,
            client: &self.relay_client,
            server: &self.relay_server,
            upgrades: &self.upgrades,
            limit: self.config.relay.silence,
        };
        let watch = |conn: &Conn| parts.wait(conn);
        let send = |virtual_addr, packet, src_ip, awaiting| {
            packets.push((virtual_addr, packet, src_ip, awaiting))
        };
        let max_segments = self.config.transport.max_segments;
        let quiet_ping = self.quiet_ping();
        let polled = (self.conns).poll_transmits(now, max_segments, send, watch, quiet_ping);
        self.counters.connection_polls += polled as u64;
        for (virtual_addr, segments, src_ip, awaiting) in packets {
            self.send_packets(virtual_addr, segments, src_ip, awaiting);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_that_owns_its_bytes_is_handed_over_and_a_shared_one_copied() {
        let packet = Bytes::from(vec![0x40; 1200]);
        let at = packet.as_ptr();
        assert_eq!(owned(packet).as_ptr(), at, "the same memory");

        let buffer = Bytes::from(vec![0x40; 2400]);
        let shared = buffer.slice(..1200);
        let copy = owned(shared);
        assert_ne!(copy.as_ptr(), buffer.as_ptr(), "a copy");
        assert_eq!(&copy[..], &buffer[..1200]);

        let (data, kept) = Inbound::Kept(Bytes::from(vec![7; 40])).split();
        let kept = kept.expect("kept");
        assert_ne!(
            data.as_ptr(),
            kept.as_ptr(),
            "quinn gets a copy of a kept packet"
        );
        assert_eq!(&data[..], &kept[..]);
    }
}
