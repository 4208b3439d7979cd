//! Retry delays: exponential backoff with seeded jitter.
//!
//! Attempt `n` (0-based) waits `base × 2^n`, capped at `max`, scaled by a
//! random factor in `[0.5, 1.5)` so that peers who failed together do not
//! retry together. The randomness comes from the caller's seeded generator.

use std::time::Duration;

use rand::Rng;

/// The delay before retry number `attempt` (0 = the first retry).
pub fn backoff(attempt: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX));
    exp.min(max).mul_f64(rng.random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn grows_exponentially_within_the_jitter_band_and_the_cap() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..40 {
            let nominal = base
                .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
                .min(max);
            let d = backoff(attempt, base, max, &mut rng);
            assert!(d >= nominal / 2 && d < nominal * 3 / 2, "{attempt}: {d:?}");
        }
        let mut again = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            backoff(0, base, max, &mut ChaCha8Rng::seed_from_u64(1)),
            backoff(0, base, max, &mut again),
            "same seed, same delay"
        );
    }
}
