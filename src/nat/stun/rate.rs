//! Token-bucket rate limiting per source address, in bounded memory.
//!
//! Each bucket is kept in its GCRA form: one instant, the "theoretical arrival time" (`tat`).
//! A bucket that allows one reply per `interval` with bursts of `burst` admits a reply at
//! `now` when `tat - now <= interval × (burst − 1)`, and then moves `tat` to
//! `max(tat, now) + interval`. A bucket whose `tat` has passed is full, which is the same as
//! not being tracked at all, so the table only ever holds sources that are spending faster
//! than they refill; such entries are dropped as soon as they refill.
//!
//! The table holds at most [`RateLimit::max_sources`] sources. When it is full, a new source
//! takes the place of the tracked source closest to full (the smallest `tat`), so spoofed
//! sources cannot grow memory and the entries they push out are the ones with the least debt.
//! A spoofer cycling through more addresses than the table holds does get a fresh burst per
//! address, which is why a global bucket caps the total reply rate as well.
//!
//! IPv6 sources are keyed by their /64, the block one subscriber usually holds; IPv4-mapped
//! IPv6 addresses count as the IPv4 address they are.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::collections::HashMap;

/// One token per `interval`, up to `burst` tokens saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Time to earn one token.
    pub interval: Duration,
    /// The most tokens a full bucket holds (at least 1 is used).
    pub burst: u32,
}

impl Bucket {
    /// How far `tat` may run ahead of `now` with a reply still admitted.
    fn tolerance(self) -> Duration {
        self.interval.saturating_mul(self.burst.max(1) - 1)
    }

    /// The new `tat` (theoretical arrival time) if one more is admitted at `now`, given
    /// the old one (`None`: full); `None` when the bucket is empty. Lets a caller keep one
    /// bucket per key of its own (e.g. per connection) as a single [`Instant`].
    pub fn admit(self, now: Instant, tat: Option<Instant>) -> Option<Instant> {
        let tat = tat.map_or(now, |tat| tat.max(now));
        if tat.saturating_duration_since(now) > self.tolerance() {
            return None;
        }
        tat.checked_add(self.interval)
    }
}

/// Rate limits of a responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Each source address (IPv6: each /64). Default: 5 per second, bursts of 10.
    pub per_source: Bucket,
    /// All sources together. Default: 1000 per second, bursts of 100.
    pub global: Bucket,
    /// The most sources tracked at once. Default: 4096.
    pub max_sources: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_source: Bucket {
                interval: Duration::from_millis(200),
                burst: 10,
            },
            global: Bucket {
                interval: Duration::from_millis(1),
                burst: 100,
            },
            max_sources: 4096,
        }
    }
}

/// Which limit refused a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// The source's own bucket is empty.
    Source,
    /// The global bucket is empty.
    Global,
}

/// Per-source and global token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimit,
    tat: HashMap<IpAddr, Instant>,
    by_tat: BTreeSet<(Instant, IpAddr)>,
    global_tat: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with every bucket full.
    pub fn new(config: RateLimit) -> Self {
        RateLimiter {
            config,
            tat: HashMap::default(),
            by_tat: BTreeSet::new(),
            global_tat: None,
        }
    }

    /// Spends a token of `source` and one of the global bucket, or says which is empty (and
    /// spends none).
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> Result<(), Limited> {
        self.forget_full(now);
        let key = source_key(source);
        let old = self.tat.get(&key).copied();
        let source_tat = self
            .config
            .per_source
            .admit(now, old)
            .ok_or(Limited::Source)?;
        self.global_tat = Some(
            self.config
                .global
                .admit(now, self.global_tat)
                .ok_or(Limited::Global)?,
        );
        match old {
            Some(old) => {
                self.by_tat.remove(&(old, key));
            }
            None if self.tat.len() >= self.config.max_sources => self.evict_closest_to_full(),
            None => {}
        }
        if self.config.max_sources > 0 {
            self.tat.insert(key, source_tat);
            self.by_tat.insert((source_tat, key));
        }
        Ok(())
    }

    /// How many sources are tracked (each spending faster than it refills).
    pub fn tracked(&self) -> usize {
        self.tat.len()
    }

    /// Drops the sources whose buckets are full again.
    fn forget_full(&mut self, now: Instant) {
        while let Some(&(tat, key)) = self.by_tat.first() {
            if tat > now {
                break;
            }
            self.by_tat.pop_first();
            self.tat.remove(&key);
        }
    }

    fn evict_closest_to_full(&mut self) {
        if let Some((_, key)) = self.by_tat.pop_first() {
            self.tat.remove(&key);
        }
    }
}

/// The table key of a source: IPv4 as is, IPv6 cut to its /64.
fn source_key(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_sources: usize) -> RateLimiter {
        RateLimiter::new(RateLimit {
            per_source: Bucket {
                interval: Duration::from_millis(100),
                burst: 3,
            },
            global: Bucket {
                interval: Duration::from_millis(10),
                burst: 1000,
            },
            max_sources,
        })
    }

    fn start() -> Instant {
        crate::test_epoch()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_one_per_interval() {
        let t0 = start();
        let mut limiter = limiter(16);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(limiter.allow(t0, a), Ok(()));
        }
        assert_eq!(limiter.allow(t0, a), Err(Limited::Source));
        let t1 = t0 + Duration::from_millis(99);
        assert_eq!(limiter.allow(t1, a), Err(Limited::Source));
        let t2 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.allow(t2, a), Ok(()));
        assert_eq!(limiter.allow(t2, a), Err(Limited::Source));
        // Another source has its own bucket.
        assert_eq!(limiter.allow(t2, ip("192.0.2.2")), Ok(()));
    }

    #[test]
    fn refilled_sources_are_forgotten() {
        let t0 = start();
        let mut limiter = limiter(16);
        limiter.allow(t0, ip("192.0.2.1")).unwrap();
        assert_eq!(limiter.tracked(), 1);
        limiter
            .allow(t0 + Duration::from_millis(100), ip("192.0.2.2"))
            .unwrap();
        assert_eq!(limiter.tracked(), 1, "192.0.2.1 refilled and was dropped");
    }

    #[test]
    fn the_table_never_exceeds_its_bound_and_evicts_the_least_indebted() {
        let t0 = start();
        let mut limiter = limiter(2);
        let heavy = ip("192.0.2.1");
        for _ in 0..3 {
            limiter.allow(t0, heavy).unwrap();
        }
        limiter.allow(t0, ip("192.0.2.2")).unwrap();
        for i in 3..200u8 {
            limiter.allow(t0, IpAddr::from([198, 51, 100, i])).unwrap();
            assert!(limiter.tracked() <= 2);
        }
        // The heavy spender stayed tracked: the spoofed sources evicted each other.
        assert_eq!(limiter.allow(t0, heavy), Err(Limited::Source));
    }

    #[test]
    fn the_global_bucket_caps_all_sources_together() {
        let t0 = start();
        let mut limiter = RateLimiter::new(RateLimit {
            global: Bucket {
                interval: Duration::from_millis(10),
                burst: 5,
            },
            ..RateLimit::default()
        });
        for i in 0..5u8 {
            assert_eq!(limiter.allow(t0, IpAddr::from([192, 0, 2, i])), Ok(()));
        }
        assert_eq!(limiter.allow(t0, ip("192.0.2.99")), Err(Limited::Global));
        assert_eq!(
            limiter.tracked(),
            5,
            "a refused reply spends no source token"
        );
        assert_eq!(
            limiter.allow(t0 + Duration::from_millis(10), ip("192.0.2.99")),
            Ok(())
        );
    }

    #[test]
    fn ipv6_sources_share_their_slash_64_and_mapped_ipv4_is_ipv4() {
        let t0 = start();
        let mut limiter = limiter(16);
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"] {
            limiter.allow(t0, ip(host)).unwrap();
        }
        assert_eq!(limiter.allow(t0, ip("2001:db8::3")), Err(Limited::Source));
        assert_eq!(limiter.allow(t0, ip("2001:db8:0:1::1")), Ok(()));
        for _ in 0..3 {
            limiter.allow(t0, ip("::ffff:192.0.2.7")).unwrap();
        }
        assert_eq!(limiter.allow(t0, ip("192.0.2.7")), Err(Limited::Source));
    }
}
