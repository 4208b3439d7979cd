//! The driver's clocks: the only place this crate reads time.
//!
//! Monotonic time comes from tokio (so a paused test runtime pauses it too);
//! wall-clock time is read once per node, at start, and handed to the node
//! as `unix_ms`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now, as the machines take it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Wall-clock now in Unix milliseconds (0 if the clock is before 1970).
#[allow(clippy::disallowed_methods)] // the driver owns the clocks; the core may not read them
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
