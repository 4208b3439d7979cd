//! The driver's errors. Trouble with one datagram (a send the OS refuses, a
//! failed read) is counted and logged, never returned: it concerns one
//! packet, not the driver.

use std::io;
use std::net::SocketAddr;

use macula::node::NodeError;

/// Why a driver could not start or poll.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The UDP socket could not be opened or bound.
    #[error("cannot bind UDP socket at {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The socket could not be (de)registered with the poll.
    #[error("cannot register the UDP socket with the poll: {0}")]
    Register(io::Error),
    /// The poll itself could not be created or failed.
    #[error("mio poll failed: {0}")]
    Poll(io::Error),
    /// The OS random source failed while drawing the node's secret.
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
    /// The node refused its configuration.
    #[error(transparent)]
    Node(#[from] NodeError),
}
