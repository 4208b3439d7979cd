//! The drivers' clocks: the only place they read time (macula-tokio reads
//! monotonic time from tokio instead, so a paused test runtime pauses it).
//!
//! Monotonic time is read at every input a driver feeds; wall-clock time
//! is read once, to start a node (`Node::new` takes both readings of the
//! same moment). Applications that build a `Node` for a driver use these too,
//! so the core never reads a clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now, as the machines take it.
#[allow(clippy::disallowed_methods)] // the driver owns the clocks; the core may not read them
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock now in Unix milliseconds (0 if the clock is before 1970).
#[allow(clippy::disallowed_methods)] // the driver owns the clocks; the core may not read them
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
