//! The Node's side of port mapping ([`crate::nat::portmap`]): the gateway's
//! datagrams in, the machine's transmits out, its mapped address to the
//! reachability side, and the deletion at shutdown.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Event, Node};
use crate::contract::{Datagram, Input, Machine, Output};
use crate::nat::portmap::{MapEvent, PortMapStats};

impl Node {
    /// Stops the node: deletes the port mapping on the gateway (a request
    /// of lifetime 0, [`crate::nat::portmap`]), then closes every connection
    /// ([`Node::close_all`]). Drain [`Machine::poll_output`] and send what
    /// it gives before the socket closes.
    pub fn shutdown(&mut self, now: Instant) {
        self.enter(now);
        if let Some(portmap) = self.portmap.as_mut() {
            portmap.shutdown(now);
        }
        self.close_all(now);
    }

    /// A mapping the driver holds on the gateway itself (UPnP-IGD, which
    /// is HTTP and multicast, not for the core): `external` reaches our
    /// socket, or (`None`) no longer does. It becomes a punch candidate and
    /// a peer-record address as a PCP or NAT-PMP mapping would; the driver
    /// renews and deletes it.
    pub fn set_mapped_address(&mut self, now: Instant, external: Option<SocketAddr>) {
        self.enter(now);
        self.reach.handle_mapped(now, external);
        self.settle(now);
    }

    /// What the port-mapping client counted (`None`: port mapping is off).
    pub fn port_mapping_stats(&self) -> Option<PortMapStats> {
        self.portmap.as_ref().map(|p| p.stats())
    }

    /// Whether `datagram` came from the gateway's port-mapping server; it is
    /// then the port mapper's, whatever its first byte.
    pub(super) fn portmap_datagram(&mut self, now: Instant, datagram: &Datagram) -> bool {
        let Some(portmap) = self.portmap.as_mut() else {
            return false;
        };
        if datagram.remote != portmap.server() {
            return false;
        }
        portmap.handle_input(now, Input::Datagram(datagram.clone()));
        true
    }

    /// The socket moved: the mapping follows it.
    pub(super) fn portmap_address_changed(
        &mut self,
        now: Instant,
        old: std::net::SocketAddr,
        new: std::net::SocketAddr,
    ) {
        if let Some(portmap) = self.portmap.as_mut() {
            portmap.handle_input(now, Input::LocalAddressChanged { old, new });
        }
    }

    /// Runs the port mapper's due timers and carries out its outputs; true
    /// when there were any.
    pub(super) fn drive_portmap(&mut self, now: Instant) -> bool {
        let Some(portmap) = self.portmap.as_mut() else {
            return false;
        };
        if portmap.poll_timeout().is_some_and(|t| t <= now) {
            portmap.handle_input(now, Input::Timeout);
        }
        let mut busy = false;
        while let Some(output) = portmap.poll_output() {
            busy = true;
            match output {
                Output::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                Output::Event(event) => {
                    match event {
                        MapEvent::Mapped { external, .. } => {
                            tracing::info!(%external, "the gateway maps our socket");
                            self.reach.handle_mapped(now, Some(external));
                        }
                        MapEvent::Lost => self.reach.handle_mapped(now, None),
                        MapEvent::Failed(error) => {
                            tracing::debug!(%error, "port mapping failed");
                        }
                    }
                    self.out.push_back(Output::Event(Event::PortMapping(event)));
                }
                // Port mapping maps the main socket only.
                Output::Sockets(_) => {}
            }
        }
        busy
    }
}
