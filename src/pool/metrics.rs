//! Counters of what the pool did, as plain data for the node's metrics.

use std::time::Duration;

/// Counters since the pool was made, plus its current size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolMetrics {
    /// Outbound entries now (connections, connects in flight, backoffs).
    pub outbound: usize,
    /// Inbound connections now.
    pub inbound: usize,
    /// Acquires answered with a ready connection.
    pub hits: u64,
    /// Acquires that had to wait (a new connect, a shared one, or a slot).
    pub misses: u64,
    /// Connects started.
    pub connects: u64,
    /// Connects that failed.
    pub connect_failures: u64,
    /// Idle entries evicted to make room.
    pub evicted_capacity: u64,
    /// Entries closed after the idle TTL.
    pub evicted_idle: u64,
    /// Connections closed as duplicates (tie-break or replacement).
    pub closed_duplicate: u64,
    /// Inbound connections refused because every inbound slot was pinned.
    pub refused_inbound: u64,
    /// Connections lost (closed by the peer or the network).
    pub lost: u64,
    /// How long connections lived, from ready to closed.
    pub lifetime: Lifetimes,
}

/// A summary of connection lifetimes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetimes {
    /// Connections that ended.
    pub count: u64,
    /// Their lifetimes added up (saturating).
    pub total: Duration,
    /// The longest.
    pub max: Duration,
}

impl Lifetimes {
    /// Records one connection that lived `lifetime`.
    pub(crate) fn record(&mut self, lifetime: Duration) {
        self.count += 1;
        self.total = self.total.saturating_add(lifetime);
        self.max = self.max.max(lifetime);
    }
}
