//! Per-peer circuit breakers: stop asking a peer that keeps failing.
//!
//! A breaker opens after `threshold` consecutive failures; while open,
//! requests to the peer fail at once without being sent. After `cool_down`
//! it lets one probe through (half-open): a success closes it, a failure
//! opens it again. Only peers with failures are tracked, at most
//! `max_tracked` of them (beyond that, new peers are simply not tracked).

use std::time::{Duration, Instant};

use crate::collections::HashMap;
use crate::id::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The circuit breakers of every peer we talk to.
#[derive(Clone, Debug)]
pub struct CircuitBreakers {
    threshold: u32,
    cool_down: Duration,
    max_tracked: usize,
    peers: HashMap<NodeId, State>,
}

impl CircuitBreakers {
    /// Breakers that open after `threshold` consecutive failures and probe
    /// again after `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration, max_tracked: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            max_tracked,
            peers: HashMap::default(),
        }
    }

    /// Whether a request to `peer` may go out now. An open breaker past its
    /// cool-down turns half-open and lets this one request through.
    pub fn allow(&mut self, peer: &NodeId, now: Instant) -> bool {
        match self.peers.get_mut(peer) {
            Some(State::Open { until }) if now >= *until => {
                self.peers.insert(*peer, State::HalfOpen);
                true
            }
            Some(State::Open { .. } | State::HalfOpen) => false,
            Some(State::Closed { .. }) | None => true,
        }
    }

    /// Whether `peer`'s breaker is open (or half-open with its probe out).
    pub fn is_open(&self, peer: &NodeId) -> bool {
        matches!(
            self.peers.get(peer),
            Some(State::Open { .. } | State::HalfOpen)
        )
    }

    /// Lets the next request to `peer` through as the half-open probe now,
    /// before its cool-down is over (when `peer` is among the last contacts
    /// left to ask). No effect on a breaker that is not open.
    pub fn probe_early(&mut self, peer: &NodeId, now: Instant) {
        if let Some(State::Open { until }) = self.peers.get_mut(peer) {
            *until = (*until).min(now);
        }
    }

    /// `peer` answered: its breaker closes.
    pub fn on_success(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// A request to `peer` failed. Returns `true` when this opened the breaker.
    pub fn on_failure(&mut self, peer: &NodeId, now: Instant) -> bool {
        let open = State::Open {
            until: now + self.cool_down,
        };
        let next = match self.peers.get(peer) {
            None if self.peers.len() >= self.max_tracked => return false,
            None => State::Closed { failures: 1 },
            Some(State::Closed { failures }) => State::Closed {
                failures: failures + 1,
            },
            Some(State::HalfOpen) => open,
            Some(State::Open { .. }) => return false,
        };
        let next = match next {
            State::Closed { failures } if failures >= self.threshold => open,
            other => other,
        };
        self.peers.insert(*peer, next);
        matches!(next, State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cool_down() {
        let t0 = crate::test_epoch();
        let cool = Duration::from_secs(30);
        let mut b = CircuitBreakers::new(5, cool, 100);
        let p = NodeId::from_bytes([1; 32]);
        for _ in 0..4 {
            assert!(!b.on_failure(&p, t0));
            assert!(b.allow(&p, t0));
        }
        assert!(b.on_failure(&p, t0), "fifth failure opens");
        assert!(!b.allow(&p, t0 + cool / 2));
        assert!(b.allow(&p, t0 + cool), "one probe after the cool-down");
        assert!(!b.allow(&p, t0 + cool), "only one");
        assert!(b.on_failure(&p, t0 + cool), "a failed probe reopens");
        assert!(!b.allow(&p, t0 + cool + cool / 2));
        assert!(b.allow(&p, t0 + 2 * cool));
        b.on_success(&p);
        assert!(!b.is_open(&p));
        assert!(b.allow(&p, t0 + 2 * cool));
    }

    #[test]
    fn an_early_probe_goes_before_the_cool_down_once() {
        let t0 = crate::test_epoch();
        let mut b = CircuitBreakers::new(1, Duration::from_secs(30), 100);
        let (p, q) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        b.probe_early(&q, t0);
        assert!(b.allow(&q, t0), "a closed breaker stays closed");
        assert!(b.on_failure(&p, t0));
        b.probe_early(&p, t0 + Duration::from_secs(1));
        assert!(b.allow(&p, t0 + Duration::from_secs(1)), "the probe");
        b.probe_early(&p, t0 + Duration::from_secs(1));
        assert!(!b.allow(&p, t0 + Duration::from_secs(1)), "one probe only");
        assert!(b.on_failure(&p, t0 + Duration::from_secs(1)), "it failed");
        assert!(!b.allow(&p, t0 + Duration::from_secs(2)), "open again");
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = crate::test_epoch();
        let mut b = CircuitBreakers::new(2, Duration::from_secs(1), 100);
        let p = NodeId::from_bytes([1; 32]);
        b.on_failure(&p, t0);
        b.on_success(&p);
        assert!(!b.on_failure(&p, t0));
        assert!(b.on_failure(&p, t0));
    }
}
