//! Everything that can go wrong in the pool, as one error type.

use std::time::Duration;

use crate::id::NodeId;

/// Why an acquire (at once, or later through [`Action::Failed`](super::Action::Failed))
/// or the construction of a pool failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A setting of [`PoolConfig`](super::PoolConfig) is out of range.
    #[error("invalid pool setting {setting}: {problem}")]
    InvalidConfig {
        /// The setting's field name.
        setting: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The peer is this node.
    #[error("cannot connect to ourselves ({peer})")]
    SelfDial {
        /// Our own id.
        peer: NodeId,
    },
    /// Too many acquires already wait for this peer.
    #[error("{limit} acquires already wait for {peer}")]
    WaitQueueFull {
        /// The peer.
        peer: NodeId,
        /// `max_waiters_per_peer`.
        limit: usize,
    },
    /// Every outbound slot is pinned and too many peers already wait for one.
    #[error(
        "outbound pool full of pinned entries and {limit} peers already wait for a slot ({peer})"
    )]
    SlotQueueFull {
        /// The peer that could not be queued.
        peer: NodeId,
        /// `max_queued_peers`.
        limit: usize,
    },
    /// Every connect attempt failed.
    #[error("could not connect to {peer} in {attempts} attempts")]
    ConnectFailed {
        /// The peer.
        peer: NodeId,
        /// How many connects were tried.
        attempts: u32,
    },
    /// The connect to the peer did not finish (or kept backing off) within
    /// the wait timeout.
    #[error("no connection to {peer} within {waited:?}")]
    ConnectTimedOut {
        /// The peer.
        peer: NodeId,
        /// How long the acquire waited.
        waited: Duration,
    },
    /// Every outbound slot stayed pinned for the whole wait timeout.
    #[error("no outbound slot freed for {peer} within {waited:?}")]
    PoolFull {
        /// The peer.
        peer: NodeId,
        /// How long the acquire waited.
        waited: Duration,
    },
}
