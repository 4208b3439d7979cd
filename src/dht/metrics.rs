//! DHT counters and histograms: plain numbers, no exporter.
//!
//! The DHT bumps these as it works; the application or the Node reads them
//! whenever it likes ([`crate::dht::Dht::metrics`]).

use std::time::Duration;

/// A histogram of durations in power-of-two millisecond buckets:
/// bucket `i` counts samples in `[2^(i-1), 2^i)` ms (bucket 0: under 1 ms).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Sample counts per bucket.
    pub buckets: [u64; 24],
    /// Number of samples.
    pub count: u64,
    /// Sum of all samples, in milliseconds.
    pub sum_ms: u64,
}

impl LatencyHistogram {
    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let i = (u64::BITS - ms.leading_zeros()) as usize;
        self.buckets[i.min(self.buckets.len() - 1)] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Upper bound (ms) of the bucket holding quantile `q` in `[0, 1]`.
    pub fn quantile_upper_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.buckets.iter().enumerate().find_map(|(i, n)| {
            seen += n;
            (seen >= rank).then_some(1u64 << i)
        })
    }
}

/// What the DHT counted so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtMetrics {
    /// Outbound requests sent.
    pub requests_sent: u64,
    /// Inbound requests answered.
    pub requests_served: u64,
    /// Outbound requests that hit their hard deadline.
    pub request_timeouts: u64,
    /// Outbound requests that failed otherwise (connection failure, refusal).
    pub request_failures: u64,
    /// Requests never sent because the peer's circuit breaker was open.
    pub breaker_rejections: u64,
    /// Inbound requests refused for being over the peer's budget.
    pub inbound_overloaded: u64,
    /// Replies to ids never issued.
    pub unknown_replies: u64,
    /// Replies to ids already answered or expired (duplicates, late replies).
    pub late_replies: u64,
    /// Replies from a peer other than the one asked.
    pub wrong_peer_replies: u64,
    /// Replies of the wrong kind or over the limits.
    pub malformed_replies: u64,
    /// Peers that claimed our own node id.
    pub self_id_claims: u64,
    /// Store operations started (user and republish).
    pub stores: u64,
    /// Store operations that reached their quorum.
    pub stores_succeeded: u64,
    /// Per-peer acknowledgements of stored records.
    pub store_acks: u64,
    /// Records sent again after a connection failure.
    pub store_retries: u64,
    /// Query operations (find node, query values) started.
    pub queries: u64,
    /// Query operations that ran into their timeout.
    pub query_timeouts: u64,
    /// Time from start to result of finished queries.
    pub query_latency: LatencyHistogram,
    /// Value queries answered from the local cache.
    pub cache_hits: u64,
    /// Value queries that had to go to the network.
    pub cache_misses: u64,
    /// Records refused: forged, altered, expired, or for another key.
    pub rejected_records: u64,
    /// Records refused for their times: a TTL over the cap, or issued
    /// ahead of our clock by more than the allowed skew.
    pub records_bad_time: u64,
    /// Records refused because their publisher or the network they came
    /// from holds its share of the store.
    pub records_over_quota: u64,
    /// Records refused because their key or the store was full and nothing
    /// could be evicted for them.
    pub records_refused_full: u64,
    /// Records refused as stale or oversized.
    pub records_refused_other: u64,
    /// Records evicted to make room for others.
    pub records_evicted: u64,
    /// Replies of ours cut to fit one frame.
    pub replies_cut: u64,
    /// Records left out of our FIND_VALUE replies to fit one frame.
    pub records_left_out: u64,
    /// Records peers said they left out of their FIND_VALUE replies.
    pub peer_records_left_out: u64,
    /// Contact addresses dropped by the address policy (unspecified,
    /// multicast, virtual, loopback for a node not on loopback).
    pub addresses_refused: u64,
    /// Requests from DHT servers none of whose claimed listen addresses
    /// was verified (those are never handed out).
    pub unverified_claims: u64,
    /// Routing-table insertions refused for IP diversity.
    pub table_crowded: u64,
    /// Lookup candidates dropped for IP diversity.
    pub lookup_crowded: u64,
}

impl DhtMetrics {
    /// Share of finished store operations that reached their quorum.
    pub fn store_success_rate(&self) -> Option<f64> {
        (self.stores > 0).then(|| self.stores_succeeded as f64 / self.stores as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = LatencyHistogram::default();
        for ms in [0, 1, 3, 100, 100, 100, 5000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count, 7);
        assert_eq!(h.sum_ms, 5304);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[2], 1);
        assert_eq!(h.buckets[7], 3);
        assert_eq!(h.quantile_upper_ms(0.5), Some(128));
        assert_eq!(h.quantile_upper_ms(1.0), Some(8192));
        assert_eq!(LatencyHistogram::default().quantile_upper_ms(0.5), None);
    }
}
