//! A token bucket over injected time: the relay's byte-rate limit.

use std::time::Instant;

/// Allows `rate` bytes per second on average and bursts up to one second's
/// worth. Time only comes in as arguments.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second at `now`.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `bytes` if the bucket holds them at `now`; false (and nothing
    /// taken) otherwise.
    pub fn take(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        if self.tokens < bytes {
            return false;
        }
        self.tokens -= bytes;
        true
    }

    /// Whether the bucket holds `bytes` at `now` (nothing is taken).
    pub fn holds(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        self.tokens >= bytes
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = u128::from(self.rate).saturating_mul(elapsed.as_nanos()) / 1_000_000_000;
        if earned == 0 {
            return;
        }
        self.last = now;
        let earned = u64::try_from(earned).unwrap_or(u64::MAX);
        self.tokens = self.tokens.saturating_add(earned).min(self.rate);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_and_refills_with_time() {
        let start = crate::test_epoch();
        let mut bucket = TokenBucket::new(1000, start);
        assert!(bucket.take(start, 600));
        assert!(!bucket.take(start, 600), "only 400 left");
        assert!(bucket.holds(start, 400) && !bucket.holds(start, 401));
        assert!(bucket.take(start, 400));
        let later = start + Duration::from_millis(500);
        assert!(bucket.take(later, 500), "half a second earns 500");
        assert!(!bucket.take(later, 1));
        let much_later = start + Duration::from_secs(60);
        assert!(!bucket.take(much_later, 1001), "the burst is one second");
        assert!(bucket.take(much_later, 1000));
    }
}
