//! What every simulator test program shares and the core may not hold: the
//! virtual clock's first instant, the program's one clock reading.

#[allow(dead_code)] // each test program uses a part
pub mod private_pair;
#[allow(dead_code)] // each test program uses a part
pub mod publishing;
#[allow(dead_code)] // each test program uses a part
pub mod raw_peer;

/// The virtual clock's first instant: this program's one clock reading.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
