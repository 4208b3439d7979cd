//! Acquires waiting for a connection: registration, deadlines, answers.

use std::time::Instant;

use super::entry::State;
use super::{Action, Pool, PoolError, Timer, WaitId, Waiter};

impl Pool {
    pub(super) fn add_waiter(&mut self, now: Instant, slot: u32) -> WaitId {
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
    pub(super) fn forget_waiter(&mut self, wait: WaitId) {
        if let Some(waiter) = self.waiters.remove(&wait) {
            self.timers.remove(&(waiter.deadline, Timer::Wait(wait)));
        }
    }

    /// Takes a waiter out of everything, entry included.
    pub(super) fn remove_waiter(&mut self, wait: WaitId) -> Option<Waiter> {
        let waiter = *self.waiters.get(&wait)?;
        self.forget_waiter(wait);
        let list = &mut self.entries[waiter.slot as usize].waiters;
        if let Some(at) = list.iter().position(|&w| w == wait) {
            list.remove(at);
        }
        Some(waiter)
    }

    /// Removes a queued entry nobody waits for any more.
    pub(super) fn drop_if_unwanted(&mut self, slot: u32) {
        let entry = &self.entries[slot as usize];
        if entry.state == State::Queued && entry.waiters.is_empty() {
            self.remove_entry(slot);
        }
    }

    pub(super) fn expire_waiter(&mut self, now: Instant, wait: WaitId) {
        let Some(waiter) = self.remove_waiter(wait) else {
            return;
        };
        let entry = &self.entries[waiter.slot as usize];
        let (peer, waited) = (entry.peer, now.saturating_duration_since(waiter.since));
        let error = match entry.state {
            State::Queued => PoolError::PoolFull { peer, waited },
            _ => PoolError::ConnectTimedOut { peer, waited },
        };
        self.actions.push(Action::Failed { wait, error });
        self.drop_if_unwanted(waiter.slot);
    }
}
