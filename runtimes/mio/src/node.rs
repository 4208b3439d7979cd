//! Starting a [`Node`] on a driver (the socket is bound first, so the node
//! can announce the address it really got), and reading its state and
//! health: the core's [`NodeStats`] and [`Health`] rules, with the driver's
//! clock.

use std::net::SocketAddr;

use macula::id::Identity;
use macula::node::{Health, Node, NodeConfig, NodeStats};

use crate::clock;
use crate::driver::Driver;
use crate::error::DriverError;
use crate::random;
use crate::socket::Socket;

impl Driver<Node> {
    /// Binds a UDP socket at `addr` and starts a node on it with `identity`
    /// and a fresh 256-bit secret from the OS random source (see
    /// [`crate::random`]), reading both clocks once.
    ///
    /// When `config.listen_addrs` is empty the node announces the address it
    /// bound, unless that address is unspecified (`0.0.0.0`, `[::]`): then
    /// set `listen_addrs` yourself so peers can dial back.
    pub fn bind_node(
        addr: SocketAddr,
        mut config: NodeConfig,
        identity: Identity,
    ) -> Result<Self, DriverError> {
        let secret = random::secret().map_err(DriverError::Random)?;
        let socket = Socket::bind(addr).map_err(|source| DriverError::Bind { addr, source })?;
        let local = socket.local_addr();
        if config.listen_addrs.is_empty() && !local.ip().is_unspecified() {
            config.listen_addrs.push(local);
        }
        let node = Node::new(config, identity, secret, clock::now(), clock::unix_ms())?;
        Ok(Self::with_socket(socket, node))
    }

    /// The node's counters, connections, routing-table size and metrics now.
    pub fn stats(&self) -> NodeStats {
        self.machine().stats()
    }

    /// The node's health now, by the core's rules ([`Health::assess`]).
    pub fn health(&self) -> Health {
        Health::assess(&self.stats(), clock::now())
    }
}
