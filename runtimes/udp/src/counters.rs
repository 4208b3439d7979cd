//! What a socket counted: datagrams in and out, send calls, and the errors
//! it survived. Shared (atomics) so a driver's handles can read them while
//! the driver runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of one [`UdpBase`](crate::UdpBase).
#[derive(Debug, Default)]
pub struct SocketCounters {
    datagrams_received: AtomicU64,
    datagrams_sent: AtomicU64,
    send_calls: AtomicU64,
    send_errors: AtomicU64,
    receive_errors: AtomicU64,
}

/// A snapshot of [`SocketCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounts {
    /// Datagrams handed to the driver (each GRO segment counts once).
    pub datagrams_received: u64,
    /// Datagrams the OS accepted.
    pub datagrams_sent: u64,
    /// Send system calls that completed (accepted or refused, not "buffer
    /// full"); fewer than datagrams when GSO joined some.
    pub send_calls: u64,
    /// Datagrams the OS refused (unreachable destination, wrong address
    /// family, too large, ...).
    pub send_errors: u64,
    /// Receives (or waits for one) that failed with something other than
    /// "nothing waiting".
    pub receive_errors: u64,
}

impl SocketCounters {
    /// The counters now.
    pub fn snapshot(&self) -> SocketCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SocketCounts {
            datagrams_received: get(&self.datagrams_received),
            datagrams_sent: get(&self.datagrams_sent),
            send_calls: get(&self.send_calls),
            send_errors: get(&self.send_errors),
            receive_errors: get(&self.receive_errors),
        }
    }

    /// Counts a failed receive, or a failed wait for one (the driver's own
    /// readiness mechanism failing).
    pub fn receive_error(&self) {
        self.receive_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `datagrams` handed to the driver (the base counts its own; a
    /// driver counts what it reads from sockets of its own beside it).
    pub fn received(&self, datagrams: u64) {
        self.datagrams_received
            .fetch_add(datagrams, Ordering::Relaxed);
    }

    /// Counts one completed send call of `datagrams`, accepted or refused
    /// (the base counts its own; a driver counts its own sockets' sends).
    pub fn sent(&self, datagrams: u64, accepted: bool) {
        self.send_calls.fetch_add(1, Ordering::Relaxed);
        let counter = if accepted {
            &self.datagrams_sent
        } else {
            &self.send_errors
        };
        counter.fetch_add(datagrams, Ordering::Relaxed);
    }
}
