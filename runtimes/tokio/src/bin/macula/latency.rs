//! Latency samples and their percentiles, for what the CLI prints.

use std::fmt;
use std::time::Duration;

/// Latencies collected, sorted on demand.
#[derive(Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Adds one sample.
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// Samples so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0.0..=1.0, nearest rank), or `None` without samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        self.0.sort_unstable();
        let last = self.0.len().checked_sub(1)?;
        // Nearest rank: a fraction of the last index, rounded.
        let rank = (q.clamp(0.0, 1.0) * last as f64).round() as usize;
        self.0.get(rank.min(last)).copied()
    }

    /// "p50 x, p99 y, max z" of the samples.
    pub fn summary(&mut self) -> String {
        match (self.quantile(0.5), self.quantile(0.99), self.quantile(1.0)) {
            (Some(p50), Some(p99), Some(max)) => {
                format!("p50 {}, p99 {}, max {}", Ms(p50), Ms(p99), Ms(max))
            }
            _ => "no samples".into(),
        }
    }
}

/// A duration in milliseconds with three decimals.
pub struct Ms(pub Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", self.0.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut samples = Latencies::default();
        assert_eq!(samples.quantile(0.5), None);
        for ms in [5, 1, 4, 2, 3] {
            samples.push(Duration::from_millis(ms));
        }
        assert_eq!(samples.quantile(0.0), Some(Duration::from_millis(1)));
        assert_eq!(samples.quantile(0.5), Some(Duration::from_millis(3)));
        assert_eq!(samples.quantile(1.0), Some(Duration::from_millis(5)));
        assert_eq!(
            samples.summary(),
            "p50 3.000 ms, p99 5.000 ms, max 5.000 ms"
        );
    }
}
