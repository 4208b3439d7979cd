//! Per-key budgets for inbound work: DHT requests per peer, handshakes per
//! source network.
//!
//! Each key (a peer's id, a network prefix) gets a token bucket: `burst`
//! at once, refilled at `per_sec`. Work over budget is refused (and the
//! refusal says so), so one key cannot make us spend unbounded work or
//! queue unbounded replies. At most `max_peers` buckets are kept; when the
//! map is full, buckets that have refilled completely (idle keys) are
//! dropped first, and a new key is refused while none has.

use std::hash::Hash;
use std::time::Instant;

use crate::collections::HashMap;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a request.
    milli_tokens: u64,
    last: Instant,
}

/// Token buckets for inbound work, one per key (module docs).
#[derive(Clone, Debug)]
pub struct InboundLimiter<K> {
    burst: u64,
    per_sec: u64,
    max_peers: usize,
    peers: HashMap<K, Bucket>,
}

impl<K: Copy + Eq + Hash> InboundLimiter<K> {
    /// `burst` requests at once per peer, `per_sec` sustained, `max_peers` tracked.
    pub fn new(burst: u32, per_sec: u32, max_peers: usize) -> Self {
        Self {
            burst: u64::from(burst.max(1)) * 1000,
            per_sec: u64::from(per_sec),
            max_peers: max_peers.max(1),
            peers: HashMap::default(),
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> u64 {
        let elapsed_ms = now.saturating_duration_since(bucket.last).as_millis();
        let added = u64::try_from(elapsed_ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(self.per_sec);
        bucket.milli_tokens.saturating_add(added).min(self.burst)
    }

    /// Takes one unit from `peer`'s budget; `false` when it is spent.
    pub fn allow(&mut self, peer: &K, now: Instant) -> bool {
        if !self.peers.contains_key(peer) && self.peers.len() >= self.max_peers {
            let burst = self.burst;
            let full: Vec<K> = self
                .peers
                .iter()
                .filter(|(_, b)| self.refilled(b, now) >= burst)
                .map(|(id, _)| *id)
                .collect();
            full.iter().for_each(|id| {
                self.peers.remove(id);
            });
            if self.peers.len() >= self.max_peers {
                return false;
            }
        }
        let fresh = Bucket {
            milli_tokens: self.burst,
            last: now,
        };
        let bucket = *self.peers.get(peer).unwrap_or(&fresh);
        let tokens = self.refilled(&bucket, now);
        let (allowed, left) = match tokens.checked_sub(1000) {
            Some(left) => (true, left),
            None => (false, tokens),
        };
        self.peers.insert(
            *peer,
            Bucket {
                milli_tokens: left,
                last: now,
            },
        );
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = crate::test_epoch();
        let mut l = InboundLimiter::new(3, 10, 10);
        let p = NodeId::from_bytes([1; 32]);
        assert!((0..3).all(|_| l.allow(&p, t0)));
        assert!(!l.allow(&p, t0));
        assert!(!l.allow(&p, t0 + Duration::from_millis(50)));
        assert!(
            l.allow(&p, t0 + Duration::from_millis(150)),
            "one token per 100 ms"
        );
        let q = NodeId::from_bytes([2; 32]);
        assert!(l.allow(&q, t0), "budgets are per peer");
    }

    #[test]
    fn the_map_is_bounded_and_idle_peers_make_room() {
        let t0 = crate::test_epoch();
        let mut l = InboundLimiter::new(2, 1, 2);
        let (a, b, c) = (
            NodeId::from_bytes([1; 32]),
            NodeId::from_bytes([2; 32]),
            NodeId::from_bytes([3; 32]),
        );
        assert!(l.allow(&a, t0) && l.allow(&b, t0));
        assert!(!l.allow(&c, t0), "full of busy peers");
        assert!(
            l.allow(&c, t0 + Duration::from_secs(2)),
            "idle peers dropped"
        );
    }
}
