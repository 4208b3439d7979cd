//! The driver's clocks: the only place this crate reads time.
//!
//! Monotonic time comes from tokio (so a paused test runtime pauses it too);
//! wall-clock time is read once per node, at start, and handed to the node
//! as `unix_ms` ([`macula_udp::clock::unix_ms`], shared with macula-mio).

use std::time::Instant;

pub(crate) use macula_udp::clock::unix_ms;

/// Monotonic now, as the machines take it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
