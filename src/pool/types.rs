//! The values the pool hands out and the actions it asks its driver to take.

use core::fmt;
use std::net::SocketAddr;

use crate::id::NodeId;

use super::PoolError;

/// A connection's id: the pool numbers connections from a counter and never
/// reuses a number, unlike quinn's `ConnectionHandle` (a reused slab index),
/// which the node maps to this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The raw number (for logs and maps).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// The id of an acquire that waits for its connection; its outcome arrives
/// as [`Action::Ready`] or [`Action::Failed`] with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaitId(pub(crate) u64);

/// Who dialed a connection. Each direction has its own cap and its own LRU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// We dialed the peer.
    Outbound,
    /// The peer dialed us.
    Inbound,
}

impl Direction {
    /// The index of this direction's list and count.
    pub(crate) const fn index(self) -> usize {
        match self {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
        }
    }
}

/// The right to use one connection until it is given back with
/// [`Pool::release`](super::Pool::release). While any lease on a connection
/// is out, the pool never evicts it. A lease is neither `Clone` nor `Copy`,
/// so it is released at most once. It is small (16 bytes) and knows its
/// slot, so releasing it needs no hash lookup.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a lease pins its connection until it is released"]
pub struct Lease {
    pub(crate) conn: ConnId,
    pub(crate) slot: u32,
}

impl Lease {
    /// The connection to open streams on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// The outcome of an acquire that did not fail at once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a lease pins its connection until it is released"]
pub enum Acquired {
    /// A connection was ready: use it now.
    Ready(Lease),
    /// A connect is under way (new or shared) or the peer waits for a slot:
    /// the outcome comes later as an [`Action`] naming this id.
    Waiting(WaitId),
}

/// Why the pool closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// Evicted as the least recently used idle entry to make room.
    Capacity,
    /// Unused for the idle TTL.
    IdleTimeout,
    /// A second connection to the same peer lost the tie-break (or an older
    /// inbound connection was replaced by the peer's new one).
    Duplicate,
    /// An inbound connection arrived while every inbound slot was pinned.
    InboundFull,
    /// A connect finished that the pool no longer wanted.
    Stale,
    /// An inbound connection claims our own node id.
    OwnId,
}

/// What the pool asks its driver to do, from [`Pool::poll_output`](crate::Child::poll_output).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Dial `peer` at `addr`, then report the outcome with
    /// [`handle_connected`](super::Pool::handle_connected) or
    /// [`handle_connect_failed`](super::Pool::handle_connect_failed) naming `conn`.
    Connect {
        /// The peer to dial.
        peer: NodeId,
        /// Where.
        addr: SocketAddr,
        /// The id of the new connection.
        conn: ConnId,
    },
    /// Close (or abandon the dial of) this connection.
    Close {
        /// The peer at the other end.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A waiting acquire got its connection.
    Ready {
        /// The acquire.
        wait: WaitId,
        /// The peer it asked for.
        peer: NodeId,
        /// Its lease.
        lease: Lease,
    },
    /// A waiting acquire failed.
    Failed {
        /// The acquire.
        wait: WaitId,
        /// Why.
        error: PoolError,
    },
}
