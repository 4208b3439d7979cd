//! Labels of the DHT's limit family, and the copy of the DHT's own
//! counters ([`DhtMetrics`]) into [`Metrics`].

use super::{Metrics, label_enum};
use crate::dht::DhtMetrics;

label_enum!(
    /// Which DHT limit was hit (docs/SECURITY.md, DHT).
    DhtLimit, "limit", {
        /// A record refused for its times: TTL over the cap, or issued too
        /// far ahead of our clock.
        RecordTime => "record_time",
        /// A record refused: its publisher or source network holds its share.
        Quota => "quota",
        /// A record refused: its key or the store full, nothing evictable.
        Full => "full",
        /// A record evicted to make room for another.
        Evicted => "evicted",
        /// A reply of ours cut to fit one frame.
        ReplyCut => "reply_cut",
        /// A contact address refused by the address policy.
        Address => "address",
        /// A server's claimed listen addresses not verified (not handed out).
        Unverified => "unverified",
        /// A routing-table insertion refused for IP diversity.
        TableDiversity => "table_diversity",
        /// A lookup candidate dropped for IP diversity.
        LookupDiversity => "lookup_diversity",
    }
);

impl Metrics {
    /// Copies the DHT's monotonic limit counters.
    pub fn copy_dht_counters(&mut self, dht: &DhtMetrics) {
        self.dht_limit_hits.set_each([
            (DhtLimit::RecordTime, dht.records_bad_time),
            (DhtLimit::Quota, dht.records_over_quota),
            (DhtLimit::Full, dht.records_refused_full),
            (DhtLimit::Evicted, dht.records_evicted),
            (DhtLimit::ReplyCut, dht.replies_cut),
            (DhtLimit::Address, dht.addresses_refused),
            (DhtLimit::Unverified, dht.unverified_claims),
            (DhtLimit::TableDiversity, dht.table_crowded),
            (DhtLimit::LookupDiversity, dht.lookup_crowded),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dht_counter_lands_under_its_label() {
        let dht = DhtMetrics {
            records_bad_time: 1,
            records_over_quota: 2,
            records_refused_full: 3,
            records_evicted: 4,
            replies_cut: 5,
            addresses_refused: 6,
            unverified_claims: 7,
            table_crowded: 8,
            lookup_crowded: 9,
            ..DhtMetrics::default()
        };
        let mut metrics = Metrics::new();
        metrics.copy_dht_counters(&dht);
        let hits: Vec<u64> = metrics.dht_limit_hits.iter().map(|(_, n)| *n).collect();
        assert_eq!(hits, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(*metrics.dht_limit_hits.get(DhtLimit::Unverified), 7);
    }
}
