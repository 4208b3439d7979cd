//! What a driver counted: datagrams in and out, the errors it survived, and
//! how often it woke up (an idle node should hardly wake at all).

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters, shared between the driver task and its handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    datagrams_received: AtomicU64,
    datagrams_sent: AtomicU64,
    send_calls: AtomicU64,
    send_errors: AtomicU64,
    receive_errors: AtomicU64,
    wakeups: AtomicU64,
}

/// A snapshot of a driver's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Datagrams handed to the machine (each GRO segment counts once).
    pub datagrams_received: u64,
    /// Datagrams the OS accepted.
    pub datagrams_sent: u64,
    /// Send system calls; fewer than datagrams when GSO joined some.
    pub send_calls: u64,
    /// Datagrams the OS refused (unreachable destination, wrong address
    /// family, too large, ...); each was logged and dropped.
    pub send_errors: u64,
    /// Receive calls that failed with something other than "nothing waiting".
    pub receive_errors: u64,
    /// Times the driver woke up for a datagram, a deadline or a command.
    pub wakeups: u64,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Received,
    Sent,
    SendCall,
    SendError,
    ReceiveError,
    Wakeup,
}

impl Counters {
    /// Adds `n` to one counter.
    pub(crate) fn add(&self, count: Count, n: u64) {
        let counter = match count {
            Count::Received => &self.datagrams_received,
            Count::Sent => &self.datagrams_sent,
            Count::SendCall => &self.send_calls,
            Count::SendError => &self.send_errors,
            Count::ReceiveError => &self.receive_errors,
            Count::Wakeup => &self.wakeups,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> DriverCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DriverCounters {
            datagrams_received: get(&self.datagrams_received),
            datagrams_sent: get(&self.datagrams_sent),
            send_calls: get(&self.send_calls),
            send_errors: get(&self.send_errors),
            receive_errors: get(&self.receive_errors),
            wakeups: get(&self.wakeups),
        }
    }
}
