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
//! - **Tie-break.** When both ends dial at once, the connection dialed by the
//!   lower node id survives on both sides; an older inbound connection gives
//!   way to the peer's newer one. A losing connection with leases out drains:
//!   it closes when its last lease comes back.
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

mod backoff;
mod check;
mod config;
mod entry;
mod error;
mod index;
mod lru;
mod metrics;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::collections::HashMap;
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
    actions: VecDeque<Action>,
    rng: ChaCha8Rng,
    next_conn: u64,
    next_wait: u64,
    last_now: Option<Instant>,
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
            actions: VecDeque::new(),
            next_conn: 0,
            next_wait: 0,
            last_now: None,
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
        self.last_now = Some(now);
        self.metrics.misses += 1;
        Ok(Acquired::Waiting(self.add_waiter(now, slot)))
    }

    /// Gives a lease back. When it was the last on its connection, the entry
    /// becomes idle (evictable, and closed after the idle TTL). Leases on
    /// connections that are gone since are ignored.
    pub fn release(&mut self, now: Instant, lease: Lease) {
        self.last_now = Some(now);
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
        self.last_now = Some(now);
        let Some(waiter) = self.remove_waiter(wait) else {
            return false;
        };
        self.drop_if_unwanted(waiter.slot);
        true
    }

    /// The connect `conn` to `peer` succeeded: its waiters get leases. A
    /// connect the pool no longer wants is closed ([`CloseReason::Stale`]);
    /// a repeated report about a connection it already has is ignored.
    pub fn handle_connected(&mut self, now: Instant, peer: NodeId, conn: ConnId) {
        self.last_now = Some(now);
        match self.connecting_slot(&peer, conn) {
            Some((slot, _)) => self.become_ready(now, slot, conn),
            None if self.has_connection(&peer, conn) => {}
            None => self.close(peer, conn, CloseReason::Stale),
        }
        self.admit_queued(now);
    }

    /// The connect `conn` to `peer` failed: retry after a backoff, or, after
    /// the last attempt, fail its waiters. Unknown connects are ignored.
    pub fn handle_connect_failed(&mut self, now: Instant, peer: NodeId, conn: ConnId) {
        self.last_now = Some(now);
        let Some((slot, attempt)) = self.connecting_slot(&peer, conn) else {
            return;
        };
        self.metrics.connect_failures += 1;
        if attempt >= self.config.max_connect_attempts {
            for wait in std::mem::take(&mut self.entries[slot as usize].waiters) {
                self.forget_waiter(wait);
                let error = PoolError::ConnectFailed {
                    peer,
                    attempts: attempt,
                };
                self.actions.push_back(Action::Failed { wait, error });
            }
            self.remove_entry(slot);
            self.admit_queued(now);
            return;
        }
        let delay = backoff::delay(
            self.config.backoff_base,
            self.config.backoff_max,
            attempt,
            &mut self.rng,
        );
        let until = now + delay;
        let entry = &mut self.entries[slot as usize];
        entry.state = State::BackingOff { failures: attempt };
        entry.retry_at = until;
        self.timers.insert((until, Timer::Backoff(slot)));
    }

    /// Connection `conn` to `peer` closed (by the peer, the network, or after
    /// a [`Action::Close`]). A lost connection that had leases out is dialed
    /// again at once if an outbound slot can be had; its leases are void.
    pub fn handle_closed(&mut self, now: Instant, peer: NodeId, conn: ConnId) {
        self.last_now = Some(now);
        if self.draining.remove(&conn).is_some() {
            return;
        }
        if self.connecting_slot(&peer, conn).is_some() {
            return self.handle_connect_failed(now, peer, conn);
        }
        let Some(slot) = self.index.get(&self.entries, &peer) else {
            return;
        };
        if self.entries[slot as usize].ready_conn() != Some(conn) {
            return;
        }
        self.metrics.lost += 1;
        let pinned = self.entries[slot as usize].pins > 0;
        self.end_connection(now, slot);
        if pinned && self.claim(now, slot, Direction::Outbound) {
            self.start_connect(slot, 1);
        } else {
            self.remove_entry(slot);
        }
        self.admit_queued(now);
    }

    /// A connection from `peer` (at `addr`) was accepted; returns its id.
    ///
    /// It becomes the peer's connection unless it claims our own id, loses
    /// the tie-break to our own dial (when our id is the lower) or finds every
    /// inbound slot pinned; then it is closed at once with [`Action::Close`].
    pub fn handle_inbound(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) -> ConnId {
        self.last_now = Some(now);
        let conn = self.new_conn();
        if peer == self.config.local {
            self.close(peer, conn, CloseReason::OwnId);
            return conn;
        }
        let existing = self.index.get(&self.entries, &peer);
        let ours_wins = self.config.local < peer;
        let (our_dial, needs_slot) = match existing.map(|s| &self.entries[s as usize]) {
            None => (false, true),
            Some(entry) => match entry.state {
                State::Connecting { .. } => (true, true),
                State::Ready { .. } => (
                    entry.direction == Direction::Outbound,
                    entry.direction == Direction::Outbound,
                ),
                _ => (false, true),
            },
        };
        if our_dial && ours_wins {
            self.metrics.closed_duplicate += 1;
            self.close(peer, conn, CloseReason::Duplicate);
            return conn;
        }
        if needs_slot && !self.has_room(Direction::Inbound) {
            self.metrics.refused_inbound += 1;
            self.close(peer, conn, CloseReason::InboundFull);
            return conn;
        }
        let slot = match existing {
            Some(slot) => {
                self.retire(now, slot);
                slot
            }
            None => self.alloc(now, peer, addr, State::Vacant),
        };
        self.entries[slot as usize].addr = addr;
        let claimed = self.claim(now, slot, Direction::Inbound);
        debug_assert!(claimed, "room was checked (or freed by retiring)");
        self.become_ready(now, slot, conn);
        self.admit_queued(now);
        conn
    }

    /// Acts on every deadline that has passed by `now`: closes entries idle
    /// for the TTL, starts connects whose backoff ended and fails acquires
    /// that waited too long. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
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

    /// The next action for the driver, or `None` when drained.
    pub fn poll_output(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the time of
    /// the last input while actions are queued, else the earliest idle
    /// deadline, backoff end or wait deadline. `None`: nothing is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.actions.is_empty() {
            return self.last_now;
        }
        let idle = self.idle.iter().filter_map(|list| {
            let slot = list.front()?;
            Some(self.entries[slot as usize].idle_since + self.config.idle_ttl)
        });
        let timer = self.timers.first().map(|&(at, _)| at);
        idle.chain(timer).min()
    }

    // ---- helpers -------------------------------------------------------

    fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn close(&mut self, peer: NodeId, conn: ConnId, reason: CloseReason) {
        self.actions.push_back(Action::Close { peer, conn, reason });
    }

    /// A new entry for `peer`, connecting or queued for a slot.
    fn insert(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) -> Result<u32, PoolError> {
        if peer == self.config.local {
            return Err(PoolError::SelfDial { peer });
        }
        if self.has_room(Direction::Outbound) {
            let slot = self.alloc(now, peer, addr, State::Vacant);
            let claimed = self.claim(now, slot, Direction::Outbound);
            debug_assert!(claimed, "room was checked");
            self.start_connect(slot, 1);
            return Ok(slot);
        }
        if self.queued.len() >= self.config.max_queued_peers {
            return Err(PoolError::SlotQueueFull {
                peer,
                limit: self.config.max_queued_peers,
            });
        }
        let slot = self.alloc(now, peer, addr, State::Queued);
        self.queued.push_back(slot);
        Ok(slot)
    }

    /// Puts a new entry in a free slot (or a new one) and indexes it.
    fn alloc(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, state: State) -> u32 {
        let entry = Entry::new(now, peer, addr, state);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).expect("validated caps fit in u32")
            }
        };
        self.index.insert(&self.entries, &peer, slot);
        slot
    }

    /// Frees the slot of an entry that has no waiters left.
    fn remove_entry(&mut self, slot: u32) {
        debug_assert!(self.entries[slot as usize].waiters.is_empty());
        self.leave_state(slot);
        self.unclaim(slot);
        let entry = &mut self.entries[slot as usize];
        entry.state = State::Vacant;
        entry.pins = 0;
        let peer = entry.peer;
        self.index.remove(&self.entries, &peer);
        self.free.push(slot);
    }

    /// Undoes what the entry's current state keeps outside the entry: its
    /// place in the idle list, the slot queue or the backoff timers.
    fn leave_state(&mut self, slot: u32) {
        let entry = &self.entries[slot as usize];
        if entry.link.is_linked() {
            let list = entry.direction.index();
            self.idle[list].unlink(&mut self.entries, slot);
        }
        match self.entries[slot as usize].state {
            State::Queued => self.queued.retain(|&s| s != slot),
            State::BackingOff { .. } => {
                let until = self.entries[slot as usize].retry_at;
                self.timers.remove(&(until, Timer::Backoff(slot)));
            }
            _ => {}
        }
    }

    /// Whether a slot of `direction` is free or can be freed by eviction.
    fn has_room(&self, direction: Direction) -> bool {
        self.claimed[direction.index()] < self.cap(direction)
            || self.idle[direction.index()].len() > 0
    }

    fn cap(&self, direction: Direction) -> usize {
        match direction {
            Direction::Outbound => self.config.max_outbound,
            Direction::Inbound => self.config.max_inbound,
        }
    }

    /// Makes the entry count against `direction`'s cap, evicting the least
    /// recently used idle entry of that direction if the cap is reached.
    /// Returns false (and changes nothing) when every slot is pinned.
    fn claim(&mut self, now: Instant, slot: u32, direction: Direction) -> bool {
        debug_assert!(!self.entries[slot as usize].claimed);
        if self.claimed[direction.index()] >= self.cap(direction) {
            let Some(victim) = self.idle[direction.index()].front() else {
                return false;
            };
            self.metrics.evicted_capacity += 1;
            self.evict(now, victim, CloseReason::Capacity);
        }
        self.claimed[direction.index()] += 1;
        let entry = &mut self.entries[slot as usize];
        entry.claimed = true;
        entry.direction = direction;
        true
    }

    /// Stops the entry counting against its cap.
    fn unclaim(&mut self, slot: u32) {
        let entry = &mut self.entries[slot as usize];
        if std::mem::replace(&mut entry.claimed, false) {
            self.claimed[entry.direction.index()] -= 1;
        }
        entry.direction = Direction::Outbound;
    }

    /// Closes an idle entry's connection and frees its slot.
    fn evict(&mut self, now: Instant, slot: u32, reason: CloseReason) {
        let peer = self.entries[slot as usize].peer;
        if let Some(conn) = self.end_connection(now, slot) {
            self.close(peer, conn, reason);
        }
        self.remove_entry(slot);
    }

    /// Records the end of the entry's ready connection, takes the entry out
    /// of its idle list and its cap, voids its leases, and returns the
    /// connection. The entry is left `Vacant` but indexed, for the caller
    /// to reuse or remove before returning.
    fn end_connection(&mut self, now: Instant, slot: u32) -> Option<ConnId> {
        let State::Ready { conn } = self.entries[slot as usize].state else {
            return None;
        };
        self.metrics
            .lifetime
            .record(now.saturating_duration_since(self.entries[slot as usize].connected_at));
        self.leave_state(slot);
        self.unclaim(slot);
        let entry = &mut self.entries[slot as usize];
        entry.pins = 0;
        entry.state = State::Vacant;
        Some(conn)
    }

    /// Clears whatever the entry had before a winning inbound connection
    /// takes it over: a queue place, a backoff, a connect in flight or an
    /// older connection (closed now, or drained if leased).
    fn retire(&mut self, now: Instant, slot: u32) {
        let peer = self.entries[slot as usize].peer;
        match self.entries[slot as usize].state {
            State::Connecting { conn, .. } => {
                self.metrics.closed_duplicate += 1;
                self.close(peer, conn, CloseReason::Duplicate);
            }
            State::Ready { .. } => {
                self.metrics.closed_duplicate += 1;
                let leases = self.entries[slot as usize].pins;
                let conn = self.end_connection(now, slot).expect("ready");
                if leases > 0 {
                    self.draining.insert(conn, Draining { peer, leases });
                } else {
                    self.close(peer, conn, CloseReason::Duplicate);
                }
                return;
            }
            _ => {}
        }
        self.leave_state(slot);
        self.unclaim(slot);
    }

    fn start_connect(&mut self, slot: u32, attempt: u32) {
        let conn = self.new_conn();
        let entry = &mut self.entries[slot as usize];
        entry.state = State::Connecting { conn, attempt };
        self.metrics.connects += 1;
        self.actions.push_back(Action::Connect {
            peer: entry.peer,
            addr: entry.addr,
            conn,
        });
    }

    /// Whether `conn` is `peer`'s ready connection or a draining one.
    fn has_connection(&self, peer: &NodeId, conn: ConnId) -> bool {
        let ready = self.index.get(&self.entries, peer);
        ready.is_some_and(|slot| self.entries[slot as usize].ready_conn() == Some(conn))
            || self.draining.contains_key(&conn)
    }

    /// The slot and attempt of `peer`'s entry if it is dialing `conn`.
    fn connecting_slot(&self, peer: &NodeId, conn: ConnId) -> Option<(u32, u32)> {
        let slot = self.index.get(&self.entries, peer)?;
        match self.entries[slot as usize].state {
            State::Connecting { conn: c, attempt } if c == conn => Some((slot, attempt)),
            _ => None,
        }
    }

    /// The entry (holding its slot) now has connection `conn`: every waiter
    /// gets a lease, or the entry goes idle if none waits.
    fn become_ready(&mut self, now: Instant, slot: u32, conn: ConnId) {
        let waiters = std::mem::take(&mut self.entries[slot as usize].waiters);
        let entry = &mut self.entries[slot as usize];
        debug_assert!(entry.claimed);
        entry.state = State::Ready { conn };
        entry.connected_at = now;
        entry.pins = u32::try_from(waiters.len()).expect("bounded wait list");
        entry.idle_since = now;
        let peer = entry.peer;
        if waiters.is_empty() {
            let list = entry.direction.index();
            self.idle[list].push_back(&mut self.entries, slot);
        }
        for wait in waiters {
            self.forget_waiter(wait);
            let lease = Lease { conn, slot };
            self.actions.push_back(Action::Ready { wait, peer, lease });
        }
    }

    /// Admits queued peers while outbound slots can be had.
    fn admit_queued(&mut self, now: Instant) {
        while let Some(&slot) = self.queued.front() {
            if !self.claim(now, slot, Direction::Outbound) {
                break;
            }
            self.queued.pop_front();
            self.start_connect(slot, 1);
        }
    }

    fn add_waiter(&mut self, now: Instant, slot: u32) -> WaitId {
        self.next_wait += 1;
        let wait = WaitId(self.next_wait);
        let deadline = now + self.config.wait_timeout;
        self.entries[slot as usize].waiters.push(wait);
        self.waiters.insert(
            wait,
            Waiter {
                slot,
                since: now,
                deadline,
            },
        );
        self.timers.insert((deadline, Timer::Wait(wait)));
        wait
    }

    /// Forgets a waiter whose entry's wait list was already taken.
    fn forget_waiter(&mut self, wait: WaitId) {
        if let Some(waiter) = self.waiters.remove(&wait) {
            self.timers.remove(&(waiter.deadline, Timer::Wait(wait)));
        }
    }

    /// Takes a waiter out of everything, entry included.
    fn remove_waiter(&mut self, wait: WaitId) -> Option<Waiter> {
        let waiter = *self.waiters.get(&wait)?;
        self.forget_waiter(wait);
        let list = &mut self.entries[waiter.slot as usize].waiters;
        if let Some(at) = list.iter().position(|&w| w == wait) {
            list.remove(at);
        }
        Some(waiter)
    }

    /// Removes a queued entry nobody waits for any more.
    fn drop_if_unwanted(&mut self, slot: u32) {
        let entry = &self.entries[slot as usize];
        if entry.state == State::Queued && entry.waiters.is_empty() {
            self.remove_entry(slot);
        }
    }

    fn expire_waiter(&mut self, now: Instant, wait: WaitId) {
        let Some(waiter) = self.remove_waiter(wait) else {
            return;
        };
        let entry = &self.entries[waiter.slot as usize];
        let (peer, waited) = (entry.peer, now.saturating_duration_since(waiter.since));
        let error = match entry.state {
            State::Queued => PoolError::PoolFull { peer, waited },
            _ => PoolError::ConnectTimedOut { peer, waited },
        };
        self.actions.push_back(Action::Failed { wait, error });
        self.drop_if_unwanted(waiter.slot);
    }
}
