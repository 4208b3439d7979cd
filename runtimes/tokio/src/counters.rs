//! What a driver counted: its socket's counts (datagrams in and out, send
//! calls, the errors it survived; see [`macula_udp::SocketCounters`]) and
//! how often it woke up (an idle node should hardly wake at all).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use macula_udp::SocketCounters;

/// The live counters, shared between the driver task and its handles.
#[derive(Debug)]
pub(crate) struct Counters {
    socket: Arc<SocketCounters>,
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
    /// Receive calls (or waits for one) that failed with something other
    /// than "nothing waiting".
    pub receive_errors: u64,
    /// Times the driver woke up for a datagram, a deadline or a command.
    pub wakeups: u64,
}

impl Counters {
    /// The driver's counters around its socket's.
    pub(crate) fn new(socket: Arc<SocketCounters>) -> Self {
        Self {
            socket,
            wakeups: AtomicU64::new(0),
        }
    }

    /// Counts one wake-up.
    pub(crate) fn wakeup(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `datagrams` read from an extra socket.
    pub(crate) fn extra_received(&self, datagrams: u64) {
        self.socket.received(datagrams);
    }

    /// Counts one datagram sent (or refused) on an extra socket.
    pub(crate) fn extra_sent(&self, accepted: bool) {
        self.socket.sent(1, accepted);
    }

    /// Counts a failed wait for the socket.
    pub(crate) fn receive_error(&self) {
        self.socket.receive_error();
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> DriverCounters {
        let socket = self.socket.snapshot();
        DriverCounters {
            datagrams_received: socket.datagrams_received,
            datagrams_sent: socket.datagrams_sent,
            send_calls: socket.send_calls,
            send_errors: socket.send_errors,
            receive_errors: socket.receive_errors,
            wakeups: self.wakeups.load(Ordering::Relaxed),
        }
    }
}
