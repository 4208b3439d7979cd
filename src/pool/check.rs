//! A full O(n) audit of the pool's bookkeeping, for tests and fuzzing.

use super::entry::State;
use super::{Direction, Inconsistency, Pool, Timer};

/// Fails with a message naming the broken rule.
fn ensure(ok: bool, rule: impl FnOnce() -> String) -> Result<(), Inconsistency> {
    if ok {
        Ok(())
    } else {
        Err(Inconsistency(rule()))
    }
}

impl Pool {
    /// Checks every invariant of the pool: caps hold; pinned entries are in
    /// no idle list and idle ones are, in idle-deadline order; at most one
    /// entry, connect and connection per peer; every waiter and backoff has
    /// exactly one deadline; a peer queues for a slot only while none can be
    /// had. O(n): meant for tests and fuzz targets, not the hot path.
    pub fn check_consistency(&self) -> Result<(), Inconsistency> {
        let mut claimed = [0usize; 2];
        let mut occupied = 0;
        let mut timers = 0;
        let mut conns = crate::collections::HashSet::default();
        for (slot, entry) in self.entries.iter().enumerate() {
            let slot = slot as u32;
            if entry.state == State::Vacant {
                ensure(self.free.contains(&slot), || {
                    format!("vacant slot {slot} not free")
                })?;
                continue;
            }
            occupied += 1;
            let peer = entry.peer;
            ensure(self.index.get(&self.entries, &peer) == Some(slot), || {
                format!("{peer} at slot {slot} not indexed there")
            })?;
            ensure(peer != self.config.local, || {
                "an entry for ourselves".into()
            })?;
            let holds = !matches!(entry.state, State::Queued);
            ensure(entry.claimed == holds, || {
                format!("{peer}: claimed {}", entry.claimed)
            })?;
            if holds {
                claimed[entry.direction.index()] += 1;
            }
            let ready = entry.ready_conn().is_some();
            ensure(ready || entry.direction == Direction::Outbound, || {
                format!("{peer}: inbound without a connection")
            })?;
            ensure(ready || entry.pins == 0, || {
                format!("{peer}: leases without a connection")
            })?;
            ensure(!ready || entry.waiters.is_empty(), || {
                format!("{peer}: ready with waiters")
            })?;
            ensure(entry.link.is_linked() == (ready && entry.pins == 0), || {
                format!(
                    "{peer}: linked {} with {} leases",
                    entry.link.is_linked(),
                    entry.pins
                )
            })?;
            ensure(
                entry.state != State::Queued || !entry.waiters.is_empty(),
                || format!("{peer}: queued for nobody"),
            )?;
            match entry.state {
                State::Connecting { conn, .. } | State::Ready { conn, .. } => {
                    ensure(conn.0 <= self.next_conn && conns.insert(conn), || {
                        format!("{peer}: {conn} reused or unallocated")
                    })?;
                }
                State::BackingOff { .. } => {
                    timers += 1;
                    let until = entry.retry_at;
                    ensure(self.timers.contains(&(until, Timer::Backoff(slot))), || {
                        format!("{peer}: backoff without a timer")
                    })?;
                }
                State::Queued | State::Vacant => {}
            }
            for wait in &entry.waiters {
                let waiter = self.waiters.get(wait);
                ensure(waiter.is_some_and(|w| w.slot == slot), || {
                    format!("{peer}: {wait:?} not registered to it")
                })?;
                let deadline = waiter.map(|w| w.deadline);
                ensure(
                    deadline.is_some_and(|d| self.timers.contains(&(d, Timer::Wait(*wait)))),
                    || format!("{wait:?} without a deadline"),
                )?;
            }
            ensure(
                entry.waiters.len() <= self.config.max_waiters_per_peer,
                || format!("{peer}: wait list over its bound"),
            )?;
        }
        ensure(occupied == self.index.len(), || {
            "index holds vacant slots".into()
        })?;
        ensure(occupied + self.free.len() == self.entries.len(), || {
            "free list wrong".into()
        })?;
        let waiting: usize = self.entries.iter().map(|e| e.waiters.len()).sum();
        ensure(waiting == self.waiters.len(), || "stray waiters".into())?;
        ensure(timers + waiting == self.timers.len(), || {
            "stray timers".into()
        })?;
        for direction in [Direction::Outbound, Direction::Inbound] {
            let i = direction.index();
            ensure(claimed[i] == self.claimed[i], || {
                format!("{direction:?} count wrong")
            })?;
            ensure(claimed[i] <= self.cap(direction), || {
                format!("{direction:?} over its cap")
            })?;
            let list: Vec<u32> = self.idle[i].iter(&self.entries).collect();
            ensure(list.len() == self.idle[i].len(), || {
                format!("{direction:?} list length")
            })?;
            ensure(
                list.iter()
                    .all(|&s| self.entries[s as usize].direction == direction),
                || format!("{direction:?} list holds the other direction"),
            )?;
            ensure(
                list.windows(2).all(|w| {
                    self.entries[w[0] as usize].idle_since <= self.entries[w[1] as usize].idle_since
                }),
                || format!("{direction:?} list out of idle order"),
            )?;
        }
        let queued = self
            .entries
            .iter()
            .filter(|e| e.state == State::Queued)
            .count();
        ensure(queued == self.queued.len(), || {
            "slot queue out of step".into()
        })?;
        ensure(queued <= self.config.max_queued_peers, || {
            "slot queue over its bound".into()
        })?;
        ensure(queued == 0 || !self.has_room(Direction::Outbound), || {
            "a peer queues while a slot is free".into()
        })?;
        for (peer, conn) in &self.standby {
            ensure(
                !conns.contains(conn) && !self.draining.contains_key(conn),
                || format!("{peer}: standby {conn} also in use"),
            )?;
        }
        for (conn, draining) in &self.draining {
            ensure(draining.leases > 0 && !conns.contains(conn), || {
                format!("{conn} drains wrongly")
            })?;
        }
        Ok(())
    }
}
