//! Ready connections and their control streams, as the children's glue
//! needs them: which are ready, who is a DHT server, writing a frame on a
//! control stream, and a peer's capabilities changing.

use std::net::SocketAddr;

use quinn_proto::ConnectionHandle;

use super::Node;
use crate::connection::{Conn, Phase};
use crate::nat::reach::PeerConn;
use crate::wire::{Capabilities, CapabilitiesUpdate, Message};

impl Node {
    /// Ready connections with their handles.
    fn ready_conns(&self) -> impl Iterator<Item = (ConnectionHandle, &Conn)> + '_ {
        (self.conns.iter())
            .filter(|(_, c)| c.phase == Phase::Ready && c.control.is_some())
            .map(|(h, c)| (*h, c))
    }

    /// Ready connections as dial-back helper candidates, by handle.
    pub(super) fn peer_conns(&self) -> Vec<PeerConn> {
        let mut ready: Vec<(ConnectionHandle, &Conn)> = self.ready_conns().collect();
        ready.sort_unstable_by_key(|(handle, _)| *handle);
        let untranslated = |c: &Conn| {
            c.hello.as_ref().is_some_and(|hello| {
                let canonical = |a: &SocketAddr| (a.ip().to_canonical(), a.port());
                (hello.listen_addrs.iter()).any(|a| canonical(a) == canonical(&c.remote))
            })
        };
        (ready.into_iter())
            .filter_map(|(_, c)| {
                Some(PeerConn {
                    conn: c.pool_id?,
                    peer: c.peer,
                    remote: c.remote,
                    server: is_server(c),
                    untranslated: untranslated(c),
                })
            })
            .collect()
    }

    /// Writes a frame on a connection's control stream; false when it could
    /// not.
    pub(super) fn send_control(&mut self, handle: ConnectionHandle, frame: &Message) -> bool {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return false;
        };
        let Some(control) = conn.control else {
            return false;
        };
        conn.send(control, frame, false).is_ok()
    }

    /// Simulator only: writes `frame` on the control stream of the ready
    /// connection to `peer`, as a misbehaving peer would (attack tests);
    /// false when there is none.
    #[cfg(feature = "sim")]
    pub fn send_raw_frame(
        &mut self,
        now: std::time::Instant,
        peer: crate::id::NodeId,
        frame: &Message,
    ) -> bool {
        self.enter(now);
        let handle = (self.ready_conns())
            .find(|(_, c)| c.peer == Some(peer))
            .map(|(h, _)| h);
        let sent = handle.is_some_and(|h| self.send_control(h, frame));
        self.settle(now);
        sent
    }

    /// Writes `frame` on the control stream of the ready DHT server with
    /// the lowest handle; false when there is none.
    pub(super) fn send_to_server(&mut self, frame: &Message) -> bool {
        let server = (self.ready_conns())
            .filter(|(_, conn)| is_server(conn))
            .map(|(handle, _)| handle)
            .min();
        server.is_some_and(|handle| self.send_control(handle, frame))
    }

    /// Tells every ready peer our capabilities (the DHT role, relaying,
    /// procedures served or subscriptions held changed).
    pub(super) fn announce_capabilities(&mut self) {
        let handles: Vec<ConnectionHandle> = self.ready_conns().map(|(h, _)| h).collect();
        for handle in handles {
            self.tell_capabilities(handle);
        }
    }

    /// Writes CAPABILITIES on a ready connection whose peer was told
    /// other capabilities than ours now.
    pub(super) fn tell_capabilities(&mut self, handle: ConnectionHandle) {
        let capabilities = self.hello().capabilities;
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        if conn.told == Some(capabilities) {
            return;
        }
        conn.told = Some(capabilities);
        self.send_control(handle, &Message::from(CapabilitiesUpdate { capabilities }));
    }

    /// A peer's CAPABILITIES: one that stopped being a DHT server leaves
    /// the routing table.
    pub(super) fn capabilities_changed(
        &mut self,
        handle: ConnectionHandle,
        update: CapabilitiesUpdate,
    ) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let Some(hello) = conn.hello.as_mut() else {
            return;
        };
        let was_server = hello.capabilities.contains(Capabilities::DHT_SERVER);
        hello.capabilities = update.capabilities;
        let dropped = !update.capabilities.contains(Capabilities::DHT_SERVER);
        if let Some(peer) = conn.peer.filter(|_| was_server && dropped) {
            self.dht.forget_peer(&peer);
        }
    }
}

/// Whether the peer said it is a DHT server.
fn is_server(conn: &Conn) -> bool {
    (conn.hello.as_ref()).is_some_and(|h| h.capabilities.contains(Capabilities::DHT_SERVER))
}
