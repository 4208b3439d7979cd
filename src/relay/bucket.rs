//! A token bucket over injected time: the relay's byte-rate limit, a
//! connection's PING and frame rates.

use std::time::{Duration, Instant};

/// Allows `rate` units (bytes, frames) per second on average and bursts up
/// to one second's worth. Units can be taken only while the bucket holds
/// them ([`TokenBucket::take`]), or spent ahead, into debt, when the work
/// is done before it can be counted ([`TokenBucket::charge`]). Time only
/// comes in as arguments.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    /// Negative while in debt.
    tokens: i128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second at `now`.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            tokens: i128::from(rate),
            last: now,
        }
    }

    /// Takes `bytes` if the bucket holds them at `now`; false (and nothing
    /// taken) otherwise.
    pub fn take(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        if self.tokens < i128::from(bytes) {
            return false;
        }
        self.tokens -= i128::from(bytes);
        true
    }

    /// Whether the bucket holds `bytes` at `now` (nothing is taken).
    pub fn holds(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        self.tokens >= i128::from(bytes)
    }

    /// Spends `units` at `now` whether or not the bucket holds them: what
    /// it lacks becomes debt, paid back by time before anything more can
    /// be taken.
    pub fn charge(&mut self, now: Instant, units: u64) {
        self.refill(now);
        self.tokens -= i128::from(units);
    }

    /// When the bucket next holds a unit, after `now`; `None` while it
    /// holds one (or the rate is zero: it never will).
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        if self.tokens >= 1 || self.rate == 0 {
            return None;
        }
        let missing = u128::try_from(1 - self.tokens).unwrap_or(u128::MAX);
        let nanos = missing
            .saturating_mul(1_000_000_000)
            .div_ceil(u128::from(self.rate));
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Some(self.last + wait)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = u128::from(self.rate).saturating_mul(elapsed.as_nanos()) / 1_000_000_000;
        if earned == 0 {
            return;
        }
        let earned = i128::try_from(earned).unwrap_or(i128::MAX);
        // Only the time the earned units took is used up: the remainder
        // counts toward the next unit.
        let used = u128::try_from(earned)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            / u128::from(self.rate);
        self.last += Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
        self.tokens = self
            .tokens
            .saturating_add(earned)
            .min(i128::from(self.rate));
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

    #[test]
    fn a_charge_beyond_the_tokens_is_debt_paid_back_by_time() {
        let start = crate::test_epoch();
        let mut bucket = TokenBucket::new(100, start);
        assert_eq!(bucket.ready_at(start), None, "full");
        bucket.charge(start, 350);
        // 250 in debt: a unit is held again after 2.51 s.
        assert_eq!(
            bucket.ready_at(start),
            Some(start + Duration::from_millis(2510))
        );
        assert!(!bucket.take(start + Duration::from_millis(2500), 1));
        assert!(bucket.take(start + Duration::from_millis(2510), 1));
        let mut never = TokenBucket::new(0, start);
        never.charge(start, 1);
        assert_eq!(never.ready_at(start), None, "a zero rate never refills");
    }

    #[test]
    fn time_between_refills_is_not_lost() {
        let start = crate::test_epoch();
        let mut bucket = TokenBucket::new(1000, start);
        bucket.charge(start, 1000);
        // 1.5 ms earns one unit and half of the next, 1.5 ms more the rest.
        let mut now = start;
        let mut taken = 0;
        for _ in 0..2 {
            now += Duration::from_micros(1500);
            while bucket.take(now, 1) {
                taken += 1;
            }
        }
        assert_eq!(taken, 3);
    }
}
