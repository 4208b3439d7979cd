//! One pool entry per peer: its connection state, leases, waiters and links.

use std::net::SocketAddr;
use std::time::Instant;

use crate::id::NodeId;

use super::lru::{Link, Linked};
use super::{ConnId, Direction, WaitId};

/// Where an entry's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A free slab slot (or, inside one pool method, an entry between two
    /// connections).
    Vacant,
    /// Waiting for an outbound slot (every slot pinned); holds no slot.
    Queued,
    /// Connect number `attempt` (from 1) is under way.
    Connecting { conn: ConnId, attempt: u32 },
    /// `failures` connects failed; the next one starts at the entry's
    /// `retry_at`.
    BackingOff { failures: u32 },
    /// Connected (since the entry's `connected_at`).
    Ready { conn: ConnId },
}

/// A peer's entry in the pool's slab.
///
/// Laid out for the hit path: the fields an acquire or release touches (the
/// id it compares, state, leases, links) come first and fill one 64-byte
/// cache line, and every entry starts on a line of its own, so a hit costs
/// one line per entry it touches (itself and its two list neighbours).
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub(crate) struct Entry {
    pub(crate) peer: NodeId,
    pub(crate) state: State,
    /// Leases out on the ready connection; non-zero pins the entry.
    pub(crate) pins: u32,
    /// Links in the idle list of `direction` (only while ready and unpinned).
    pub(crate) link: Link,
    /// Who dialed the connection (outbound for every state but `Ready`).
    pub(crate) direction: Direction,
    /// Whether the entry counts against its direction's cap.
    pub(crate) claimed: bool,
    /// When the last lease came back (the idle deadline is this plus the TTL).
    pub(crate) idle_since: Instant,
    /// When the ready connection came up.
    pub(crate) connected_at: Instant,
    /// When a backoff ends.
    pub(crate) retry_at: Instant,
    /// Where the next connect dials.
    pub(crate) addr: SocketAddr,
    /// Acquires waiting for the connection, oldest first.
    pub(crate) waiters: Vec<WaitId>,
}

impl Entry {
    /// A new unleased, unlinked entry for `peer`, counting against no cap.
    pub(crate) fn new(now: Instant, peer: NodeId, addr: SocketAddr, state: State) -> Self {
        Self {
            state,
            pins: 0,
            link: Link::UNLINKED,
            direction: Direction::Outbound,
            claimed: false,
            idle_since: now,
            connected_at: now,
            retry_at: now,
            peer,
            addr,
            waiters: Vec::new(),
        }
    }

    /// The ready connection, if any.
    pub(crate) fn ready_conn(&self) -> Option<ConnId> {
        match self.state {
            State::Ready { conn, .. } => Some(conn),
            _ => None,
        }
    }
}

impl Linked for Entry {
    fn link(&self) -> &Link {
        &self.link
    }

    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}
