//! The GCRA rate limiter against a reference token bucket that counts tokens in nanoseconds:
//! while the table holds every source, both must admit exactly the same requests.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use macula::nat::stun::{Bucket, Limited, RateLimit, RateLimiter};
use proptest::prelude::*;

/// A token bucket as textbooks write it: a level that refills by elapsed time, capped at
/// `burst` tokens, one token spent per admitted request. A token is `interval` nanoseconds of
/// level, so all arithmetic is exact.
#[derive(Clone, Copy)]
struct Reference {
    level: u128,
    at: Duration,
}

impl Reference {
    fn full(bucket: Bucket) -> Self {
        Reference {
            level: bucket.interval.as_nanos() * u128::from(bucket.burst),
            at: Duration::ZERO,
        }
    }

    /// The bucket after refilling up to `now`, and whether it holds a token.
    fn refilled(self, bucket: Bucket, now: Duration) -> (Reference, bool) {
        let cap = bucket.interval.as_nanos() * u128::from(bucket.burst);
        let level = (self.level + (now - self.at).as_nanos()).min(cap);
        (
            Reference { level, at: now },
            level >= bucket.interval.as_nanos(),
        )
    }

    fn spend(&mut self, bucket: Bucket) {
        self.level -= bucket.interval.as_nanos();
    }
}

#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

proptest! {
    #[test]
    fn gcra_admits_exactly_what_a_token_bucket_admits(
        per_source_ms in 1u64..50,
        per_source_burst in 1u32..5,
        global_ms in 1u64..20,
        global_burst in 1u32..8,
        steps in proptest::collection::vec((0u64..40, 0usize..4), 1..200),
    ) {
        let config = RateLimit {
            per_source: Bucket { interval: Duration::from_millis(per_source_ms), burst: per_source_burst },
            global: Bucket { interval: Duration::from_millis(global_ms), burst: global_burst },
            max_sources: 16,
        };
        let mut limiter = RateLimiter::new(config);
        let mut sources = [Reference::full(config.per_source); 4];
        let mut global = Reference::full(config.global);
        let t0 = start();
        let mut now = Duration::ZERO;
        for (advance_ms, source) in steps {
            now += Duration::from_millis(advance_ms);
            let (refilled_source, source_ok) = sources[source].refilled(config.per_source, now);
            let (refilled_global, global_ok) = global.refilled(config.global, now);
            sources[source] = refilled_source;
            global = refilled_global;
            let expected = if !source_ok {
                Err(Limited::Source)
            } else if !global_ok {
                Err(Limited::Global)
            } else {
                sources[source].spend(config.per_source);
                global.spend(config.global);
                Ok(())
            };
            let ip = IpAddr::from([192, 0, 2, source as u8]);
            prop_assert_eq!(limiter.allow(t0 + now, ip), expected, "at {:?} from source {}", now, source);
        }
    }
}
