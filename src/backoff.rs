//! Retry delays: exponential backoff with "equal jitter", for every retry in
//! the crate (the pool's reconnects, the DHT's store retries).
//!
//! After the `n`-th failure the caller waits `d = min(max, base * 2^(n-1))`,
//! drawn uniformly from `[d/2, d]`, before trying again. Half the delay is
//! certain (so a dead peer is not hammered), half is random (so peers that
//! failed together do not retry together). The randomness comes from the
//! caller's seeded generator, so the delays are the same for the same seed.

use std::time::Duration;

use rand::Rng;

/// The delay before the retry that follows failure number `failures` (1 for
/// the first failure).
pub(crate) fn delay(base: Duration, max: Duration, failures: u32, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(ceiling(base, max, failures).as_nanos()).unwrap_or(u64::MAX);
    let half = nanos / 2;
    Duration::from_nanos(half + rng.random_range(0..=nanos - half))
}

/// The delay's ceiling after failure number `failures` (1 for the first):
/// `min(max, base * 2^(failures-1))`, the whole delay for a retry that needs
/// no jitter.
pub(crate) fn ceiling(base: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn delays_double_within_their_jitter_window_and_stop_at_the_maximum() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for failures in 1..40u32 {
            let ceiling = (BASE * 2u32.pow(failures.min(20) - 1)).min(MAX);
            for _ in 0..50 {
                let d = delay(BASE, MAX, failures, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_the_jitter_varies() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..10)
                .map(|n| delay(BASE, MAX, n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
