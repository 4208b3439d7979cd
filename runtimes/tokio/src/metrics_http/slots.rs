//! Who may hold a connection to the metrics server: at most
//! [`MAX_CONNECTIONS`] in all and [`MAX_CONNECTIONS_PER_IP`] from one IP
//! (the server passes an IPv6 peer's /64).
//!
//! A connection that would pass either cap takes the place of the oldest
//! connection (of that IP for the per-IP cap, of anyone for the total) that
//! is still waiting for its request head; when every connection in the way
//! is already being answered, the newcomer is refused. Idle clients thus
//! never lock out one that sends its request at once, and nobody waits
//! longer than the header timeout to be cut anyway. Each refusal and
//! eviction is counted ([`HttpCounters`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use macula::metrics::Label;
use tokio::task::AbortHandle;

/// Connections open at once, from everyone.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections open at once from one IP address (IPv6: one /64).
pub const MAX_CONNECTIONS_PER_IP: usize = 8;

/// Why the server dropped a connection without answering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Over a cap with no idle connection to replace.
    Refused,
    /// Idle, and its place went to a newer connection.
    Evicted,
    /// Its request head did not arrive within the header timeout, or the
    /// whole exchange overran its deadline.
    TimedOut,
}

impl Dropped {
    /// Every reason, in export order.
    pub(crate) const ALL: [Dropped; 3] = [Dropped::Refused, Dropped::Evicted, Dropped::TimedOut];

    /// Its exported label set.
    pub(crate) fn labels(self) -> &'static [Label] {
        match self {
            Dropped::Refused => &[("reason", "refused")],
            Dropped::Evicted => &[("reason", "evicted")],
            Dropped::TimedOut => &[("reason", "timeout")],
        }
    }
}

/// Connections dropped unanswered, by reason.
#[derive(Debug, Default)]
pub(crate) struct HttpCounters([AtomicU64; 3]);

impl HttpCounters {
    /// Counts one dropped connection.
    pub(crate) fn count(&self, reason: Dropped) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many were dropped for `reason`.
    pub(crate) fn get(&self, reason: Dropped) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }
}

/// One open connection.
#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    /// Its request head has not fully arrived yet.
    waiting: Arc<AtomicBool>,
    /// Stops its task; set right after the task is spawned.
    abort: Option<AbortHandle>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// By age: the smallest key is the oldest.
    open: BTreeMap<u64, Entry>,
    per_ip: BTreeMap<IpAddr, usize>,
}

impl Table {
    /// The oldest connection still waiting for its head, from `ip` if given.
    fn oldest_waiting(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, e)| ip.is_none_or(|ip| e.ip == ip) && e.waiting.load(Ordering::Relaxed))
            .map(|(&id, _)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&entry.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
        Some(entry)
    }
}

/// The slot table, shared by the accept loop and the connection tasks.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    table: Mutex<Table>,
    counters: HttpCounters,
}

/// A connection's place; leaving it (drop) frees it.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    waiting: Arc<AtomicBool>,
}

impl Slots {
    /// Lets an eviction stop the task serving connection `id` (if it is
    /// still open).
    pub(crate) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(entry) = self.lock().open.get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves a table that is
        // still consistent (every change is one map operation at a time).
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a connection from `ip`, evicting idle ones in the way;
    /// `None` (counted) when there is none.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut evicted = Vec::new();
        let mut table = self.lock();
        let mut make_room = |table: &mut Table, from: Option<IpAddr>| {
            let id = table.oldest_waiting(from)?;
            let entry = table.remove(id)?;
            evicted.push(entry.abort);
            Some(())
        };
        let full_ip = table.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_CONNECTIONS_PER_IP;
        let room = (!full_ip || make_room(&mut table, Some(ip)).is_some())
            && (table.open.len() < MAX_CONNECTIONS || make_room(&mut table, None).is_some());
        let slot = room.then(|| {
            let id = table.next;
            table.next += 1;
            let waiting = Arc::new(AtomicBool::new(true));
            let entry = Entry {
                ip,
                waiting: waiting.clone(),
                abort: None,
            };
            table.open.insert(id, entry);
            *table.per_ip.entry(ip).or_default() += 1;
            Slot {
                slots: self.clone(),
                id,
                waiting,
            }
        });
        drop(table);
        for abort in evicted {
            abort.as_ref().map(AbortHandle::abort);
            self.counters.count(Dropped::Evicted);
        }
        if slot.is_none() {
            self.counters.count(Dropped::Refused);
        }
        slot
    }
}

impl Slot {
    /// Its key, for [`Slots::set_abort`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The request head has arrived: from now on the connection is being
    /// answered and no newcomer may take its place.
    pub(crate) fn answering(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// The shared counters.
    pub(crate) fn counters(&self) -> &HttpCounters {
        &self.slots.counters
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_full_ip_gives_its_oldest_idle_place_to_the_newcomer() {
        let slots = Arc::new(Slots::default());
        let held: Vec<Slot> = (0..MAX_CONNECTIONS_PER_IP)
            .map(|_| slots.admit(ip(1)).unwrap())
            .collect();
        let newcomer = slots.admit(ip(1)).expect("an idle place is taken over");
        assert_eq!(slots.counters.get(Dropped::Evicted), 1);
        let table = slots.lock();
        assert!(!table.open.contains_key(&held[0].id), "the oldest went");
        assert!(table.open.contains_key(&newcomer.id));
        assert_eq!(table.per_ip[&ip(1)], MAX_CONNECTIONS_PER_IP);
    }

    #[test]
    fn places_being_answered_are_kept_and_the_newcomer_refused() {
        let slots = Arc::new(Slots::default());
        let held: Vec<Slot> = (0..MAX_CONNECTIONS_PER_IP)
            .map(|_| slots.admit(ip(1)).unwrap())
            .collect();
        held.iter().for_each(Slot::answering);
        assert!(slots.admit(ip(1)).is_none());
        assert_eq!(slots.counters.get(Dropped::Refused), 1);
        // Another IP still gets in.
        assert!(slots.admit(ip(2)).is_some());
    }

    #[test]
    fn the_total_cap_evicts_across_ips_and_places_come_back_on_drop() {
        let slots = Arc::new(Slots::default());
        let mut held: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|i| slots.admit(ip(i as u8)).unwrap())
            .collect();
        held[1..].iter().for_each(Slot::answering);
        // Only the first is idle: it makes room once, then nobody can.
        let late = slots.admit(ip(200)).expect("the idle one makes room");
        late.answering();
        assert_eq!(slots.counters.get(Dropped::Evicted), 1);
        assert!(slots.admit(ip(201)).is_none());
        held.pop();
        assert!(slots.admit(ip(201)).is_some());
        assert_eq!(slots.counters.get(Dropped::Refused), 1);
    }
}
