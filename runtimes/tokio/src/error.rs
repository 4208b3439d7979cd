//! The driver's errors: starting a node, and a command that did not finish.

use std::io;
use std::net::SocketAddr;

use macula::dht::DhtError;
use macula::node::NodeError;

/// Why [`MaculaNode::bind`](crate::MaculaNode::bind) failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The UDP socket could not be opened or bound.
    #[error("cannot bind UDP socket at {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The metrics HTTP listener could not be bound.
    #[error("cannot bind the metrics listener at {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The OS random source failed while generating an identity or seed.
    #[error("OS random source failed: {0}")]
    Random(getrandom::Error),
    /// The node refused its configuration.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Why a command of a [`MaculaNode`](crate::MaculaNode) did not finish.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The node was shut down (or its task ended) before the command finished.
    #[error("the node has shut down")]
    Stopped,
    /// The DHT refused to start the operation.
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// The operation finished with an event of another kind than it starts
    /// (a bug in the driver or the node, never expected).
    #[error("operation answered with an unexpected event: {0}")]
    UnexpectedEvent(String),
}
