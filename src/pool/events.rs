//! How the pool reacts to news about connections: a connect finished or
//! failed, a connection was lost, a peer dialed us (and the tie-break when
//! both ends dialed at once).

use std::net::SocketAddr;
use std::time::Instant;

use crate::id::NodeId;
use crate::path::PathTable;

use super::entry::State;
use super::{Action, CloseReason, ConnId, Direction, Draining, Pool, PoolError, Timer};

impl Pool {
    /// The connect `conn` to `peer` succeeded: its waiters get leases. A
    /// connect the pool no longer wants is closed ([`CloseReason::Stale`]);
    /// a repeated report about a connection it already has is ignored.
    pub fn handle_connected(&mut self, now: Instant, peer: NodeId, conn: ConnId) {
        self.actions.mark(now);
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
        self.connect_failed(now, peer, conn, false);
    }

    /// The connect `conn` to `peer` failed at an address that cannot work
    /// again (a relay circuit that is gone): its waiters fail now, whatever
    /// attempts are left, so their owners find another way to the peer.
    /// Unknown connects are ignored.
    pub fn handle_connect_failed_for_good(&mut self, now: Instant, peer: NodeId, conn: ConnId) {
        self.connect_failed(now, peer, conn, true);
    }

    fn connect_failed(&mut self, now: Instant, peer: NodeId, conn: ConnId, for_good: bool) {
        self.actions.mark(now);
        let Some((slot, attempt)) = self.connecting_slot(&peer, conn) else {
            return;
        };
        self.metrics.connect_failures += 1;
        if self.adopt_standby(now, slot) {
            return;
        }
        if for_good || attempt >= self.config.max_connect_attempts {
            for wait in std::mem::take(&mut self.entries[slot as usize].waiters) {
                self.forget_waiter(wait);
                let error = PoolError::ConnectFailed {
                    peer,
                    attempts: attempt,
                };
                self.actions.push(Action::Failed { wait, error });
            }
            self.remove_entry(slot);
            self.admit_queued(now);
            return;
        }
        let delay = crate::backoff::delay(
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
        self.actions.mark(now);
        if self.draining.remove(&conn).is_some() {
            return;
        }
        if self.standby.get(&peer) == Some(&conn) {
            self.standby.remove(&peer);
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
    /// It becomes the peer's connection unless it claims our own id or finds
    /// every inbound slot pinned (then it is closed at once with
    /// [`Action::Close`]), or loses the tie-break to our own dial (ours is
    /// direct and theirs relayed, or both alike and our id is the lower):
    /// then it is kept on standby for the peer to close (a standby it
    /// replaces is closed). A connection of ours ready for longer than a dial
    /// race lasts never wins the tie-break: the peer lost it.
    pub fn handle_inbound(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) -> ConnId {
        self.actions.mark(now);
        let conn = self.new_conn();
        if peer == self.config.local {
            self.close(peer, conn, CloseReason::OwnId);
            return conn;
        }
        let existing = self.index.get(&self.entries, &peer);
        let lost = existing.is_some_and(|slot| self.outlived_dial_race(now, slot));
        let ours_wins = existing.is_some_and(|slot| {
            !lost && self.tie_break_ours(&peer, self.entries[slot as usize].addr, addr)
        });
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
            if let Some(older) = self.standby.insert(peer, conn) {
                self.metrics.closed_duplicate += 1;
                self.close(peer, older, CloseReason::Duplicate);
            }
            return conn;
        }
        if needs_slot && !self.has_room(Direction::Inbound) {
            self.metrics.refused_inbound += 1;
            self.close(peer, conn, CloseReason::InboundFull);
            return conn;
        }
        let slot = match existing {
            Some(slot) if lost => {
                self.close_lost(now, slot);
                slot
            }
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

    /// Clears whatever the entry had before a winning inbound connection
    /// takes it over: a queue place, a backoff, a connect in flight or an
    /// older connection (closed now, or drained if leased).
    pub(super) fn retire(&mut self, now: Instant, slot: u32) {
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

    /// Closes our ready connection in `slot`, which its peer lost
    /// ([`Self::outlived_dial_race`]), leases and all: nothing gets through it
    /// any more, and closing it tells its users at once (a drain would keep
    /// them writing into it until its idle timeout).
    fn close_lost(&mut self, now: Instant, slot: u32) {
        let peer = self.entries[slot as usize].peer;
        if let Some(conn) = self.end_connection(now, slot) {
            self.metrics.closed_duplicate += 1;
            self.close(peer, conn, CloseReason::Duplicate);
        }
    }

    /// Whether our connection in `slot` has been ready for longer than a dial race
    /// lasts (a connect's [`PoolConfig::wait_timeout`](super::PoolConfig::wait_timeout)):
    /// a dial from the peer then means it lost that connection (it restarted with
    /// its identity, or its side timed out), not that both sides dialled at once,
    /// so the tie-break does not apply and the peer's connection takes over.
    fn outlived_dial_race(&self, now: Instant, slot: u32) -> bool {
        let entry = &self.entries[slot as usize];
        matches!(entry.state, State::Ready { .. })
            && now.saturating_duration_since(entry.connected_at) > self.config.wait_timeout
    }

    /// Whether our dial to `peer` (at `ours`) beats the peer's dial to us
    /// (from `theirs`): a direct connection beats one over a relay circuit
    /// (a virtual address, `path`), else the lower node id's dial wins.
    /// Both ends see the same two connections, so they agree.
    fn tie_break_ours(&self, peer: &NodeId, ours: SocketAddr, theirs: SocketAddr) -> bool {
        let (ours_relayed, theirs_relayed) =
            (PathTable::is_virtual(&ours), PathTable::is_virtual(&theirs));
        if ours_relayed == theirs_relayed {
            self.config.local < *peer
        } else {
            theirs_relayed
        }
    }

    /// When `peer`'s dial (in `slot`) failed and the peer's own connection
    /// waits on standby, makes that the peer's connection (if an inbound slot
    /// can be had); true when it did.
    fn adopt_standby(&mut self, now: Instant, slot: u32) -> bool {
        let peer = self.entries[slot as usize].peer;
        if !self.standby.contains_key(&peer) || !self.has_room(Direction::Inbound) {
            return false;
        }
        let conn = self.standby.remove(&peer).expect("checked above");
        self.leave_state(slot);
        self.unclaim(slot);
        let claimed = self.claim(now, slot, Direction::Inbound);
        debug_assert!(claimed, "room was checked");
        self.become_ready(now, slot, conn);
        self.admit_queued(now);
        true
    }

    /// Whether `conn` is `peer`'s ready connection or a draining one.
    pub(super) fn has_connection(&self, peer: &NodeId, conn: ConnId) -> bool {
        let ready = self.index.get(&self.entries, peer);
        ready.is_some_and(|slot| self.entries[slot as usize].ready_conn() == Some(conn))
            || self.draining.contains_key(&conn)
    }

    /// The slot and attempt of `peer`'s entry if it is dialing `conn`.
    pub(super) fn connecting_slot(&self, peer: &NodeId, conn: ConnId) -> Option<(u32, u32)> {
        let slot = self.index.get(&self.entries, peer)?;
        match self.entries[slot as usize].state {
            State::Connecting { conn: c, attempt } if c == conn => Some((slot, attempt)),
            _ => None,
        }
    }
}
