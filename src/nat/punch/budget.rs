//! The node-wide bound on birthday-search probes per target network: whoever offers,
//! and however many punches run, the random-port probes toward one IPv4 /24 (IPv6 /48)
//! never exceed a bucket that refills at a fixed rate.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::collections::HashMap;
use crate::scope;

/// Search probes allowed per target network: a bucket of `capacity` probes per /24
/// (IPv6 /48) that refills completely in `refill`; at most `max_networks` buckets are
/// kept (a full bucket is forgotten first; with none, a new network gets nothing).
#[derive(Debug)]
pub struct SearchBudget {
    capacity: u64,
    refill: Duration,
    max_networks: usize,
    buckets: HashMap<IpAddr, (u64, Instant)>,
}

impl SearchBudget {
    /// A budget of `capacity` probes per network, refilled in `refill`, over at most
    /// `max_networks` networks.
    pub fn new(capacity: u64, refill: Duration, max_networks: usize) -> Self {
        Self {
            capacity,
            refill,
            max_networks,
            buckets: HashMap::default(),
        }
    }

    /// Takes up to `wanted` probes toward `ip` at `now`; returns how many were granted.
    pub fn take(&mut self, now: Instant, ip: IpAddr, wanted: u64) -> u64 {
        let network = network_of(ip);
        let Some(tokens) = self.tokens(now, network) else {
            return 0;
        };
        let granted = wanted.min(tokens);
        self.buckets.insert(network, (tokens - granted, now));
        granted
    }

    /// The probes left toward `ip`'s network at `now`.
    pub fn left(&self, now: Instant, ip: IpAddr) -> u64 {
        let network = network_of(ip);
        (self.buckets.get(&network)).map_or(self.capacity, |b| self.refilled(*b, now))
    }

    /// The tokens of `network` at `now`, making room for its bucket; `None` when the table
    /// is full of networks still spending.
    fn tokens(&mut self, now: Instant, network: IpAddr) -> Option<u64> {
        if let Some(bucket) = self.buckets.get(&network) {
            return Some(self.refilled(*bucket, now));
        }
        if self.buckets.len() >= self.max_networks {
            let (capacity, refill) = (self.capacity, self.refill);
            self.buckets
                .retain(|_, b| refilled(capacity, refill, *b, now) < capacity);
            if self.buckets.len() >= self.max_networks {
                return None;
            }
        }
        Some(self.capacity)
    }

    fn refilled(&self, bucket: (u64, Instant), now: Instant) -> u64 {
        refilled(self.capacity, self.refill, bucket, now)
    }
}

/// A bucket's tokens at `now`: what it held, plus `capacity` per `refill` since.
fn refilled(capacity: u64, refill: Duration, (tokens, at): (u64, Instant), now: Instant) -> u64 {
    let elapsed = now.saturating_duration_since(at);
    let added = match refill.as_millis() {
        0 => u128::from(capacity),
        ms => u128::from(capacity) * elapsed.as_millis() / ms,
    };
    let total = u128::from(tokens).saturating_add(added);
    u64::try_from(total.min(u128::from(capacity))).unwrap_or(capacity)
}

/// The /24 of an IPv4 address, the /48 of an IPv6 one.
fn network_of(ip: IpAddr) -> IpAddr {
    scope::prefix(ip, 24, 48).network
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|_| unreachable!("a valid address"))
    }

    #[test]
    fn one_network_gets_its_bucket_whoever_asks_and_it_refills_at_its_rate() {
        let t0 = crate::test_epoch();
        let mut budget = SearchBudget::new(6144, Duration::from_secs(600), 4);
        assert_eq!(budget.take(t0, ip("198.51.100.7"), 6144), 6144);
        // Another host of the same /24, for another offer: nothing left.
        assert_eq!(budget.take(t0, ip("198.51.100.200"), 2048), 0);
        // Another /24 has its own bucket.
        assert_eq!(budget.take(t0, ip("198.51.101.7"), 2048), 2048);
        // A tenth of the refill time gives back a tenth of the bucket, no more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(budget.left(later, ip("198.51.100.1")), 614);
        assert_eq!(budget.take(later, ip("198.51.100.9"), 6144), 614);
        assert_eq!(budget.take(later, ip("198.51.100.9"), 1), 0);
        // Full again after the whole refill time, and never beyond.
        let full = later + Duration::from_secs(6000);
        assert_eq!(budget.left(full, ip("198.51.100.9")), 6144);
    }

    #[test]
    fn ipv6_networks_are_slash_48s() {
        let t0 = crate::test_epoch();
        let mut budget = SearchBudget::new(100, Duration::from_secs(600), 4);
        assert_eq!(budget.take(t0, ip("2001:db8:1::1"), 100), 100);
        assert_eq!(budget.take(t0, ip("2001:db8:1:ffff::2"), 100), 0);
        assert_eq!(budget.take(t0, ip("2001:db8:2::1"), 100), 100);
    }

    #[test]
    fn a_full_table_forgets_refilled_networks_first_and_refuses_otherwise() {
        let t0 = crate::test_epoch();
        let mut budget = SearchBudget::new(100, Duration::from_secs(10), 2);
        assert_eq!(budget.take(t0, ip("192.0.2.1"), 100), 100);
        assert_eq!(budget.take(t0, ip("198.51.100.1"), 100), 100);
        // Both still spending: a third network gets nothing.
        assert_eq!(budget.take(t0, ip("203.0.113.1"), 100), 0);
        // Once they refilled they are forgotten and the new one fits.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(budget.take(later, ip("203.0.113.1"), 100), 100);
        // A forgotten network starts full, as it would have been.
        assert_eq!(budget.take(later, ip("192.0.2.1"), 100), 100);
    }
}
