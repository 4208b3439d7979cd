//! A histogram of durations over fixed bucket bounds: per-bucket counts, a
//! sum and a count. Recording never allocates.

use std::time::Duration;

/// Most finite buckets a [`Histogram`] can have (the `+Inf` bucket comes on
/// top).
pub const MAX_BUCKETS: usize = 16;

/// Bounds of the latency histograms, in milliseconds: 1, 2, 5, 10, 20, 50,
/// 100, 200, 500 ms, 1, 2, 5, 10, 30 s (then `+Inf`).
pub const LATENCY_BOUNDS: &[Duration] = &[
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// Bounds of the connection-duration histogram: 1 s, 10 s, 1 min, 5 min,
/// 15 min, 1 h, 4 h, 24 h (then `+Inf`).
pub const CONNECTION_DURATION_BOUNDS: &[Duration] = &[
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(900),
    Duration::from_secs(3_600),
    Duration::from_secs(14_400),
    Duration::from_secs(86_400),
];

/// Samples counted in buckets with inclusive upper bounds (Prometheus `le`
/// semantics): a sample lands in the first bucket whose bound is at least
/// the sample, or in the `+Inf` bucket past the last bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [Duration],
    /// Per-bucket (not cumulative) counts; index `bounds.len()` is `+Inf`.
    counts: [u64; MAX_BUCKETS + 1],
    count: u64,
    sum: Duration,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must ascend strictly and
    /// number at most [`MAX_BUCKETS`] (checked: a constant misuse fails at
    /// compile time where the histogram is built in a `const`).
    pub const fn new(bounds: &'static [Duration]) -> Self {
        assert!(bounds.len() <= MAX_BUCKETS, "too many histogram buckets");
        let mut i = 1;
        while i < bounds.len() {
            assert!(
                bounds[i - 1].as_nanos() < bounds[i].as_nanos(),
                "histogram bounds must ascend"
            );
            i += 1;
        }
        Self {
            bounds,
            counts: [0; MAX_BUCKETS + 1],
            count: 0,
            sum: Duration::ZERO,
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, sample: Duration) {
        let bucket = self.bounds.partition_point(|bound| *bound < sample);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(sample);
    }

    /// The finite bucket bounds.
    pub fn bounds(&self) -> &'static [Duration] {
        self.bounds
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all samples (saturating).
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Each bucket's upper bound (`None` for `+Inf`) and its own,
    /// non-cumulative count, lowest bound first.
    pub fn buckets(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = self.bounds.iter().copied().map(Some).chain([None]);
        bounds.zip(self.counts.iter().copied())
    }

    /// The upper bound of the bucket holding quantile `q` (in `[0, 1]`):
    /// `Some(None)` when it is the `+Inf` bucket, `None` with no samples.
    pub fn quantile_bound(&self, q: f64) -> Option<Option<Duration>> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.buckets().find_map(|(bound, n)| {
            seen += n;
            (seen >= rank).then_some(bound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn samples_land_in_the_first_bound_at_least_as_large() {
        let mut h = Histogram::new(LATENCY_BOUNDS);
        for ms in [0, 1, 2, 3, 100, 101, 30_000, 30_001] {
            h.record(MS(ms));
        }
        let counts: Vec<(Option<Duration>, u64)> = h.buckets().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            counts,
            vec![
                (Some(MS(1)), 2),   // 0 and 1 (inclusive bound)
                (Some(MS(2)), 1),   // 2
                (Some(MS(5)), 1),   // 3
                (Some(MS(100)), 1), // 100
                (Some(MS(200)), 1), // 101
                (Some(MS(30_000)), 1),
                (None, 1), // past the last bound
            ]
        );
        assert_eq!(h.count(), 8);
        assert_eq!(h.sum(), MS(60_208));
        assert_eq!(h.buckets().count(), LATENCY_BOUNDS.len() + 1);
    }

    #[test]
    fn quantiles_name_bucket_bounds() {
        let mut h = Histogram::new(CONNECTION_DURATION_BOUNDS);
        assert_eq!(h.quantile_bound(0.5), None);
        for s in [5, 5, 5, 100_000] {
            h.record(Duration::from_secs(s));
        }
        assert_eq!(h.quantile_bound(0.5), Some(Some(Duration::from_secs(10))));
        assert_eq!(h.quantile_bound(1.0), Some(None));
    }

    #[test]
    fn the_sum_saturates() {
        let mut h = Histogram::new(LATENCY_BOUNDS);
        h.record(Duration::MAX);
        h.record(Duration::MAX);
        assert_eq!(h.sum(), Duration::MAX);
        assert_eq!(h.count(), 2);
    }
}
