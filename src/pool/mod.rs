//! The connection pool: one QUIC connection per peer, reused across requests.
//!
//! A pure state machine (DESIGN.md "Connection pool"): the node tells it what
//! the application wants ([`Pool::acquire`], [`Pool::release`]) and what
//! happened to connections ([`Pool::handle_connected`],
//! [`Pool::handle_connect_failed`], [`Pool::handle_closed`],
//! [`Pool::handle_inbound`]), and drains [`Pool::poll_output`] for
//! [`Action`]s: connects to start, connections to close, waiting acquires to
//! answer. Then it sleeps until [`Pool::poll_timeout`] and calls
//! [`Pool::handle_timeout`].
//!
//! - **Caps and LRU.** Outbound and inbound entries have separate caps and
//!   separate intrusive LRU lists. Only idle entries (ready, no lease out)
//!   are in a list, so the front of a list is always the entry to evict and
//!   eviction is O(1); entries with leases out are pinned by construction.
//! - **Idle TTL.** An entry joins the back of its list when its last lease
//!   comes back, so list order is idle-deadline order: the front's deadline
//!   is the next one and expiry costs O(expired).
//! - **One connect per peer.** Acquires for a peer that is connecting,
//!   backing off or waiting for a slot join its (bounded) wait list; when
//!   every outbound slot is pinned, peers queue (bounded, FIFO) for the next
//!   slot that frees.
//! - **Tie-break.** When both ends dial at once, a direct connection beats
//!   one over a relay circuit (dialed at or accepted from a virtual address,
//!   [`crate::path`]); between two alike, the connection dialed by the lower
//!   node id survives on both sides. An older inbound connection gives
//!   way to the peer's newer one. Only the dialer of a losing connection
//!   closes it, because only it knows what it still carries: with leases out
//!   it drains (closes when its last lease comes back). The acceptor of a
//!   losing connection keeps it on *standby*: it serves what comes on it and
//!   leases it to no one, the peer closes it once it sees our connection,
//!   and if our own dial fails the standby becomes the peer's connection.
//!   At most one standby per peer (a newer one replaces it). Draining and
//!   standby connections count against no cap; there are never more
//!   draining ones than leases out.
//! - **Backoff.** A failed connect is retried after an exponential delay with
//!   seeded jitter (half the delay fixed, half random); after
//!   `max_connect_attempts` its waiters fail.
//!   A pinned connection that is lost is redialed at once.
//!
//! The hit path (an acquire of a ready peer, its release) is one hash probe
//! (none for the release) and one O(1) list splice, and allocates nothing.
//!
//! ## What the driver (the node) owes the pool
//!
//! - Every [`Action::Connect`] gets exactly one outcome:
//!   [`Pool::handle_connected`] or [`Pool::handle_connect_failed`] (a QUIC
//!   handshake timeout counts as a failure). The pool has no connect timer
//!   of its own; waiting acquires do have their deadline.
//! - Every connection the pool knows of that closes, for whatever reason,
//!   is reported with [`Pool::handle_closed`]; so is the end of one the pool
//!   asked to close.
//! - Every [`Lease`] is given back with [`Pool::release`] when its streams
//!   and requests are done, even if the connection died meanwhile.
//! - quinn's reused `ConnectionHandle`s are mapped to [`ConnId`]s, which the
//!   pool hands out (in [`Action::Connect`] and from [`Pool::handle_inbound`])
//!   and never reuses.

mod check;
mod config;
mod entry;
mod error;
mod events;
mod index;
mod lru;
mod metrics;
mod slots;
mod types;
mod waiters;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::collections::HashMap;
use crate::contract::{Child, OutputQueue};
use crate::id::NodeId;

pub use config::{MAX_SETTING_DURATION, PoolConfig};
pub use error::PoolError;
pub use metrics::{Lifetimes, PoolMetrics};
pub use types::{Acquired, Action, CloseReason, ConnId, Direction, Lease, WaitId};

use entry::{Entry, State};
use index::PeerIndex;
use lru::List;

/// A deadline other than an idle one (those live in the LRU lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The entry in this slot ends its backoff and connects again.
    Backoff(u32),
    /// This acquire has waited long enough.
    Wait(WaitId),
}

/// An acquire waiting for a connection.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    slot: u32,
    since: Instant,
    deadline: Instant,
}

/// A connection that lost a tie-break while leases were out on it.
#[derive(Clone, Copy, Debug)]
struct Draining {
    peer: NodeId,
    leases: u32,
}

/// What the pool knows about one peer, for inspection and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Waiting for an outbound slot.
    Queued,
    /// A connect is under way.
    Connecting {
        /// The connection being dialed.
        conn: ConnId,
        /// Which attempt (from 1).
        attempt: u32,
    },
    /// Waiting to connect again after failed attempts.
    BackingOff {
        /// When the next connect starts.
        until: Instant,
        /// How many connects failed.
        failures: u32,
    },
    /// Connected.
    Ready {
        /// The connection.
        conn: ConnId,
        /// Who dialed it.
        direction: Direction,
        /// Leases out on it (0: idle, evictable).
        leases: u32,
    },
}

/// The pool's internal bookkeeping disagrees with itself (a bug).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pool inconsistent: {0}")]
pub struct Inconsistency(String);

/// The connection pool. See the [module docs](self).
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    entries: Vec<Entry>,
    free: Vec<u32>,
    index: PeerIndex,
    /// Idle entries per direction, least recently used first.
    idle: [List; 2],
    /// Entries holding a slot, per direction.
    claimed: [usize; 2],
    /// Slots of the `Queued` entries, first come first served.
    queued: VecDeque<u32>,
    waiters: HashMap<WaitId, Waiter>,
    timers: BTreeSet<(Instant, Timer)>,
    draining: HashMap<ConnId, Draining>,
    /// Losing connections the peer dialed, kept until the peer closes them.
    standby: HashMap<NodeId, ConnId>,
    actions: OutputQueue<Action>,
    rng: ChaCha8Rng,
    next_conn: u64,
    next_wait: u64,
    metrics: PoolMetrics,
}

impl Pool {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Result<Self, PoolError> {
        config.validate()?;
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            entries: Vec::new(),
            free: Vec::new(),
            index: PeerIndex::new(config.seed),
            idle: [List::default(); 2],
            claimed: [0; 2],
            queued: VecDeque::new(),
            waiters: HashMap::default(),
            timers: BTreeSet::new(),
            draining: HashMap::default(),
            standby: HashMap::default(),
            actions: OutputQueue::new(),
            next_conn: 0,
            next_wait: 0,
            metrics: PoolMetrics::default(),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Entries of one direction holding a slot (outbound: connections,
    /// connects in flight and backoffs; inbound: connections).
    pub fn len(&self, direction: Direction) -> usize {
        self.claimed[direction.index()]
    }

    /// Whether the pool knows no peer at all.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// The counters, with the current sizes.
    pub fn metrics(&self) -> PoolMetrics {
        PoolMetrics {
            outbound: self.len(Direction::Outbound),
            inbound: self.len(Direction::Inbound),
            ..self.metrics
        }
    }

    /// Where `peer` stands, if the pool knows it.
    pub fn peer_state(&self, peer: &NodeId) -> Option<PeerState> {
        let entry = &self.entries[self.index.get(&self.entries, peer)? as usize];
        Some(match entry.state {
            State::Vacant => unreachable!("indexed entries are occupied"),
            State::Queued => PeerState::Queued,
            State::Connecting { conn, attempt } => PeerState::Connecting { conn, attempt },
            State::BackingOff { failures } => PeerState::BackingOff {
                until: entry.retry_at,
                failures,
            },
            State::Ready { conn, .. } => PeerState::Ready {
                conn,
                direction: entry.direction,
                leases: entry.pins,
            },
        })
    }

    /// Asks for a connection to `peer`, dialed at `addr` if one must be made.
    ///
    /// A ready connection is leased at once ([`Acquired::Ready`]). Otherwise
    /// the acquire waits ([`Acquired::Waiting`]) on the peer's connect, which
    /// it starts if none is under way (evicting the least recently used idle
    /// outbound entry when the cap is reached), or, when every outbound slot
    /// is pinned, on the next slot that frees. Fails at once when the peer is
    /// ourselves or a wait queue is full.
    pub fn acquire(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
    ) -> Result<Acquired, PoolError> {
        let slot = match self.index.get(&self.entries, &peer) {
            Some(slot) => {
                let entry = &mut self.entries[slot as usize];
                if let State::Ready { conn, .. } = entry.state {
                    entry.pins += 1;
                    if entry.pins == 1 {
                        let list = entry.direction.index();
                        self.idle[list].unlink(&mut self.entries, slot);
                    }
                    self.metrics.hits += 1;
                    return Ok(Acquired::Ready(Lease { conn, slot }));
                }
                if entry.waiters.len() >= self.config.max_waiters_per_peer {
                    return Err(PoolError::WaitQueueFull {
                        peer,
                        limit: self.config.max_waiters_per_peer,
                    });
                }
                entry.addr = addr;
                slot
            }
            None => self.insert(now, peer, addr)?,
        };
        self.actions.mark(now);
        self.metrics.misses += 1;
        Ok(Acquired::Waiting(self.add_waiter(now, slot)))
    }

    /// Gives a lease back. When it was the last on its connection, the entry
    /// becomes idle (evictable, and closed after the idle TTL). Leases on
    /// connections that are gone since are ignored.
    pub fn release(&mut self, now: Instant, lease: Lease) {
        self.actions.mark(now);
        let Some(entry) = self.entries.get_mut(lease.slot as usize) else {
            return;
        };
        if entry.ready_conn() == Some(lease.conn) {
            entry.pins -= 1;
            if entry.pins == 0 {
                entry.idle_since = now;
                let list = entry.direction.index();
                self.idle[list].push_back(&mut self.entries, lease.slot);
                if !self.queued.is_empty() {
                    self.admit_queued(now);
                }
            }
        } else if let Some(draining) = self.draining.get_mut(&lease.conn) {
            draining.leases -= 1;
            if draining.leases == 0 {
                let peer = draining.peer;
                self.draining.remove(&lease.conn);
                self.close(peer, lease.conn, CloseReason::Duplicate);
            }
        }
    }

    /// Withdraws a waiting acquire; no action will name it. Returns whether
    /// it was still waiting.
    pub fn cancel(&mut self, now: Instant, wait: WaitId) -> bool {
        self.actions.mark(now);
        let Some(waiter) = self.remove_waiter(wait) else {
            return false;
        };
        self.drop_if_unwanted(waiter.slot);
        true
    }

    /// Acts on every deadline that has passed by `now`: closes entries idle
    /// for the TTL, starts connects whose backoff ended and fails acquires
    /// that waited too long. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.actions.mark(now);
        for direction in [Direction::Outbound, Direction::Inbound] {
            while let Some(slot) = self.idle[direction.index()].front() {
                if self.entries[slot as usize].idle_since + self.config.idle_ttl > now {
                    break;
                }
                self.metrics.evicted_idle += 1;
                self.evict(now, slot, CloseReason::IdleTimeout);
            }
        }
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Backoff(slot) => {
                    let State::BackingOff { failures, .. } = self.entries[slot as usize].state
                    else {
                        unreachable!("backoff timers are removed with their state")
                    };
                    self.start_connect(slot, failures + 1);
                }
                Timer::Wait(wait) => self.expire_waiter(now, wait),
            }
        }
        self.admit_queued(now);
    }
}

impl Child for Pool {
    type Output = Action;

    /// The next action for the driver, or `None` when drained.
    fn poll_output(&mut self) -> Option<Action> {
        self.actions.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the time of
    /// the last input while actions are queued, else the earliest idle
    /// deadline, backoff end or wait deadline. `None`: nothing is due.
    fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle.iter().filter_map(|list| {
            let slot = list.front()?;
            Some(self.entries[slot as usize].idle_since + self.config.idle_ttl)
        });
        let timer = self.timers.first().map(|&(at, _)| at);
        self.actions.deadline([idle.min(), timer])
    }
}
