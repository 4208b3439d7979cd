//! Slab bookkeeping: entries come and go, claim and give back slots under
//! their direction's cap (evicting the least recently used idle entry when
//! full), and gain or lose their connection.

use std::net::SocketAddr;
use std::time::Instant;

use crate::id::NodeId;

use super::entry::{Entry, State};
use super::{Action, CloseReason, ConnId, Direction, Lease, Pool, PoolError, Timer};

impl Pool {
    pub(super) fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub(super) fn close(&mut self, peer: NodeId, conn: ConnId, reason: CloseReason) {
        self.actions.push(Action::Close { peer, conn, reason });
    }

    /// A new entry for `peer`, connecting or queued for a slot.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
    ) -> Result<u32, PoolError> {
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
    pub(super) fn alloc(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        state: State,
    ) -> u32 {
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
    pub(super) fn remove_entry(&mut self, slot: u32) {
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
    pub(super) fn leave_state(&mut self, slot: u32) {
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
    pub(super) fn has_room(&self, direction: Direction) -> bool {
        self.claimed[direction.index()] < self.cap(direction)
            || self.idle[direction.index()].len() > 0
    }

    pub(super) fn cap(&self, direction: Direction) -> usize {
        match direction {
            Direction::Outbound => self.config.max_outbound,
            Direction::Inbound => self.config.max_inbound,
        }
    }

    /// Makes the entry count against `direction`'s cap, evicting the least
    /// recently used idle entry of that direction if the cap is reached.
    /// Returns false (and changes nothing) when every slot is pinned.
    pub(super) fn claim(&mut self, now: Instant, slot: u32, direction: Direction) -> bool {
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
    pub(super) fn unclaim(&mut self, slot: u32) {
        let entry = &mut self.entries[slot as usize];
        if std::mem::replace(&mut entry.claimed, false) {
            self.claimed[entry.direction.index()] -= 1;
        }
        entry.direction = Direction::Outbound;
    }

    /// Closes an idle entry's connection and frees its slot.
    pub(super) fn evict(&mut self, now: Instant, slot: u32, reason: CloseReason) {
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
    pub(super) fn end_connection(&mut self, now: Instant, slot: u32) -> Option<ConnId> {
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

    pub(super) fn start_connect(&mut self, slot: u32, attempt: u32) {
        let conn = self.new_conn();
        let entry = &mut self.entries[slot as usize];
        entry.state = State::Connecting { conn, attempt };
        self.metrics.connects += 1;
        self.actions.push(Action::Connect {
            peer: entry.peer,
            addr: entry.addr,
            conn,
        });
    }

    /// The entry (holding its slot) now has connection `conn`: every waiter
    /// gets a lease, or the entry goes idle if none waits.
    pub(super) fn become_ready(&mut self, now: Instant, slot: u32, conn: ConnId) {
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
            self.actions.push(Action::Ready { wait, peer, lease });
        }
    }

    /// Admits queued peers while outbound slots can be had.
    pub(super) fn admit_queued(&mut self, now: Instant) {
        while let Some(&slot) = self.queued.front() {
            if !self.claim(now, slot, Direction::Outbound) {
                break;
            }
            self.queued.pop_front();
            self.start_connect(slot, 1);
        }
    }
}
