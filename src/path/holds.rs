//! Virtual addresses held for sources asked to retry.
//!
//! A source that starts no connection leaves nothing in the path table,
//! except one asked to prove its address with a QUIC Retry: its token is
//! bound to the virtual address it was sent to, so that address must still
//! be its own when it comes back. At most [`RetryHolds::new`]'s `capacity`
//! such addresses are held; past it the oldest hold is dropped (that client
//! is asked to retry again).

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::collections::HashSet;

/// Virtual addresses held for retried sources, oldest first.
#[derive(Debug)]
pub struct RetryHolds {
    capacity: usize,
    order: VecDeque<SocketAddr>,
    held: HashSet<SocketAddr>,
}

impl RetryHolds {
    /// Holds for at most `capacity` sources.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            held: HashSet::default(),
        }
    }

    /// Holds `addr`; returns the address whose hold is dropped to make room
    /// (still held, not yet claimed by a connection), for the caller to
    /// forget.
    pub fn hold(&mut self, addr: SocketAddr) -> Option<SocketAddr> {
        if !self.held.insert(addr) {
            return None;
        }
        self.order.push_back(addr);
        while self.order.len() > self.capacity {
            let oldest = self.order.pop_front()?;
            if self.held.remove(&oldest) {
                return Some(oldest);
            }
        }
        None
    }

    /// A connection now uses `addr`: it is no longer only held.
    pub fn claim(&mut self, addr: &SocketAddr) {
        self.held.remove(addr);
    }

    /// True when `addr` is held.
    pub fn holds(&self, addr: &SocketAddr) -> bool {
        self.held.contains(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn the_oldest_unclaimed_hold_makes_room() {
        let mut holds = RetryHolds::new(2);
        assert_eq!(holds.hold(addr(1)), None);
        assert_eq!(holds.hold(addr(2)), None);
        assert_eq!(holds.hold(addr(2)), None, "held once");
        holds.claim(&addr(1));
        assert_eq!(holds.hold(addr(3)), None, "a claimed hold leaves quietly");
        assert_eq!(holds.hold(addr(4)), Some(addr(2)));
        assert!(holds.holds(&addr(3)) && holds.holds(&addr(4)));
        assert!(!holds.holds(&addr(1)) && !holds.holds(&addr(2)));
    }
}
