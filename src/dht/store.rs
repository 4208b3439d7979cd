//! The record store: signed records this node holds for others.
//!
//! A key holds at most one record per provider (the newest by issue time)
//! and at most `max_records_per_key` providers; the whole store holds at
//! most `max_total_bytes`. Time here is wall-clock Unix milliseconds, an
//! explicit input.
//!
//! ## What a stranger can make it keep
//!
//! Every record is checked before it is kept, cheapest first: its size, its
//! TTL (at most `max_ttl`), its issue time (no later than now plus
//! `max_clock_skew`), then its signature and expiry. Each publisher (the
//! record's signer) may hold at most `max_bytes_per_publisher` here, and each
//! source network (the /24 of the STORE's IPv4 source, the /48 of an IPv6
//! one: [`StoreLimits::source_prefix_v4`], [`StoreLimits::source_prefix_v6`])
//! at most `max_bytes_per_source`: fresh identities are free, networks are
//! not.
//!
//! ## Eviction
//!
//! A full key first drops its expired records, then the record whose source
//! network holds the most records under the key, largest publisher first
//! among those, but only when that network and publisher hold more than the
//! newcomer's would: a crowd from one network cannot lock a key, and cannot
//! push out a lone honest provider either. A full store first sweeps every
//! expired record, then evicts records of the publisher holding the most
//! bytes, as long as it holds more than the newcomer's publisher would. A
//! record that still does not fit is refused (`Full`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::collections::HashMap;
use crate::id::{NodeId, RecordKey};
use crate::record::{RecordError, SignedRecord};
use crate::scope::{IpPrefix, prefix};

use super::message::RejectReason;

/// Bounds of a [`RecordStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Providers per key. Default 64.
    pub max_records_per_key: usize,
    /// Bytes of all records together (values plus fixed overhead). Default 32 MiB.
    pub max_total_bytes: usize,
    /// Bytes of one value. Default 16 KiB.
    pub max_value_len: usize,
    /// Longest TTL a record may carry. Default 1 hour (our own records
    /// live 300 s and are republished every 240 s).
    pub max_ttl: Duration,
    /// How far a record's issue time may be ahead of our clock. Default 60 s.
    pub max_clock_skew: Duration,
    /// Bytes one publisher's records may take, all keys together. Default 512 KiB.
    pub max_bytes_per_publisher: usize,
    /// Bytes the records stored from one source network may take. Default 4 MiB.
    pub max_bytes_per_source: usize,
    /// Prefix length of an IPv4 source network. Default 24.
    pub source_prefix_v4: u8,
    /// Prefix length of an IPv6 source network. Default 48 (a site).
    pub source_prefix_v6: u8,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_records_per_key: 64,
            max_total_bytes: 32 << 20,
            max_value_len: 16 << 10,
            max_ttl: Duration::from_secs(3600),
            max_clock_skew: Duration::from_secs(60),
            max_bytes_per_publisher: 512 << 10,
            max_bytes_per_source: 4 << 20,
            source_prefix_v4: 24,
            source_prefix_v6: 48,
        }
    }
}

/// Whose share of the store a record would overrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    /// The record's publisher.
    Publisher,
    /// The network the STORE came from.
    Source,
}

/// Why a record was not kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Bad signature or expired.
    #[error(transparent)]
    Invalid(#[from] RecordError),
    /// The value is over the size limit.
    #[error("value of {len} bytes under {key:?} is over the {limit}-byte limit")]
    TooLarge {
        /// The key.
        key: RecordKey,
        /// The value's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The record's TTL is over [`StoreLimits::max_ttl`].
    #[error("TTL of {ttl_secs} s under {key:?} is over the {limit_secs} s limit")]
    TtlTooLong {
        /// The key.
        key: RecordKey,
        /// The record's TTL.
        ttl_secs: u32,
        /// The limit.
        limit_secs: u64,
    },
    /// The record was issued later than our clock plus
    /// [`StoreLimits::max_clock_skew`].
    #[error(
        "record under {key:?} issued at {issued_at_ms} ms, after {now_ms} ms plus the allowed skew"
    )]
    IssuedInFuture {
        /// The key.
        key: RecordKey,
        /// The record's issue time.
        issued_at_ms: u64,
        /// Our clock.
        now_ms: u64,
    },
    /// The publisher or the source network already holds its share.
    #[error("{quota:?} quota of {limit} bytes would be exceeded")]
    OverQuota {
        /// Whose share.
        quota: Quota,
        /// The limit.
        limit: usize,
    },
    /// The key already has the maximum number of providers, none of which
    /// may be evicted for this one.
    #[error("{key:?} already holds {limit} providers")]
    KeyFull {
        /// The key.
        key: RecordKey,
        /// The limit.
        limit: usize,
    },
    /// The store's byte budget would be exceeded, and no larger publisher
    /// is left to evict.
    #[error("store holds {bytes} bytes; adding {adding} would pass the {limit}-byte limit")]
    StoreFull {
        /// Bytes held now.
        bytes: usize,
        /// Bytes of the new record.
        adding: usize,
        /// The limit.
        limit: usize,
    },
    /// A record of the same provider at least as new is held already.
    #[error("{key:?} already holds a newer record from {provider:?}")]
    Stale {
        /// The key.
        key: RecordKey,
        /// The provider.
        provider: NodeId,
    },
}

impl StoreError {
    /// The reason carried back in a STORE reply.
    pub fn reason(&self) -> RejectReason {
        match self {
            StoreError::Invalid(RecordError::BadSignature { .. }) => RejectReason::BadSignature,
            StoreError::Invalid(RecordError::Expired { .. }) => RejectReason::Expired,
            StoreError::TooLarge { .. } => RejectReason::Refused,
            StoreError::TtlTooLong { .. } => RejectReason::TtlTooLong,
            StoreError::IssuedInFuture { .. } => RejectReason::IssuedInFuture,
            StoreError::OverQuota { .. } => RejectReason::OverQuota,
            StoreError::KeyFull { .. } | StoreError::StoreFull { .. } => RejectReason::Full,
            StoreError::Stale { .. } => RejectReason::Stale,
        }
    }
}

/// Bytes a record costs in the store: its value plus the fixed fields
/// (key, publisher key, signature, times).
pub fn record_cost(value: &Bytes) -> usize {
    value.len() + 32 + 32 + 64 + 8 + 4
}

/// A record with the network it was stored from.
#[derive(Clone, Debug)]
struct Held {
    record: SignedRecord,
    source: Option<IpPrefix>,
}

/// One publisher's share: its bytes and the keys it holds records under.
#[derive(Clone, Debug, Default)]
struct Share {
    bytes: usize,
    keys: BTreeSet<RecordKey>,
}

/// Records held under their keys, with the indexes the limits need.
#[derive(Clone, Debug, Default)]
pub struct RecordStore {
    limits: StoreLimits,
    records: HashMap<RecordKey, Vec<Held>>,
    bytes: usize,
    publishers: HashMap<NodeId, Share>,
    /// Publishers by bytes held, largest last.
    by_size: BTreeSet<(usize, NodeId)>,
    sources: HashMap<IpPrefix, usize>,
    /// Every record by expiry.
    expiries: BTreeSet<(u64, RecordKey, NodeId)>,
}

impl RecordStore {
    /// An empty store with `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.expiries.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes held for `publisher`.
    pub fn publisher_bytes(&self, publisher: &NodeId) -> usize {
        self.publishers.get(publisher).map_or(0, |s| s.bytes)
    }

    /// The source network of `ip` under these limits.
    pub fn source_of(&self, ip: IpAddr) -> IpPrefix {
        let l = &self.limits;
        prefix(ip, l.source_prefix_v4, l.source_prefix_v6)
    }

    /// Checks `record` at `now_ms` and keeps it, replacing an older record
    /// of the same provider and evicting others as the module docs say.
    /// `source` is the IP the STORE came from (`None`: unknown, no network
    /// quota). Returns how many records were evicted to make room.
    pub fn put(
        &mut self,
        record: SignedRecord,
        source: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.admit(&record, now_ms)?;
        let key = record.key;
        let provider = record.provider();
        let source = source.map(|ip| self.source_of(ip));
        let cost = record_cost(&record.value);
        if self.bytes + cost > self.limits.max_total_bytes {
            self.sweep(now_ms);
        }
        let existing = self.find(&key, &provider);
        if let Some(held) = existing
            && held.record.issued_at_ms >= record.issued_at_ms
        {
            return Err(StoreError::Stale { key, provider });
        }
        let freed = existing.map_or(0, |h| record_cost(&h.record.value));
        let freed_here = existing.filter(|h| h.source == source).map_or(0, |_| freed);
        let share = self.publisher_bytes(&provider) - freed + cost;
        let limits = self.limits;
        if share > limits.max_bytes_per_publisher {
            return Err(StoreError::OverQuota {
                quota: Quota::Publisher,
                limit: limits.max_bytes_per_publisher,
            });
        }
        if let Some(net) = source {
            let used = self.sources.get(&net).copied().unwrap_or(0);
            if used - freed_here + cost > limits.max_bytes_per_source {
                return Err(StoreError::OverQuota {
                    quota: Quota::Source,
                    limit: limits.max_bytes_per_source,
                });
            }
        }
        let mut evicted = 0;
        if existing.is_none() {
            evicted += self.make_room_in_key(&key, source, share, now_ms)?;
        }
        evicted += self.make_room_in_store(&provider, cost.saturating_sub(freed), share)?;
        self.remove(&key, &provider);
        self.insert(Held { record, source });
        Ok(evicted)
    }

    /// The checks that need no state: size, TTL, issue time, signature
    /// and expiry, cheapest first.
    fn admit(&self, record: &SignedRecord, now_ms: u64) -> Result<(), StoreError> {
        let key = record.key;
        let limits = &self.limits;
        if record.value.len() > limits.max_value_len {
            return Err(StoreError::TooLarge {
                key,
                len: record.value.len(),
                limit: limits.max_value_len,
            });
        }
        if u64::from(record.ttl_secs) > limits.max_ttl.as_secs() {
            return Err(StoreError::TtlTooLong {
                key,
                ttl_secs: record.ttl_secs,
                limit_secs: limits.max_ttl.as_secs(),
            });
        }
        let skew = u64::try_from(limits.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        if record.issued_at_ms > now_ms.saturating_add(skew) {
            return Err(StoreError::IssuedInFuture {
                key,
                issued_at_ms: record.issued_at_ms,
                now_ms,
            });
        }
        record.verify_at(now_ms)?;
        Ok(())
    }

    /// Frees a provider slot under a full `key` for a newcomer from
    /// `source` whose publisher would hold `share` bytes (module docs).
    fn make_room_in_key(
        &mut self,
        key: &RecordKey,
        source: Option<IpPrefix>,
        share: usize,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let limit = self.limits.max_records_per_key;
        let held = self.records.get(key).map(Vec::as_slice).unwrap_or(&[]);
        if held.len() < limit {
            return Ok(0);
        }
        let expired: Vec<NodeId> = (held.iter())
            .filter(|h| h.record.expires_at_ms() <= now_ms)
            .map(|h| h.record.provider())
            .collect();
        if !expired.is_empty() {
            for provider in &expired {
                self.remove(key, provider);
            }
            return Ok(0);
        }
        // Records from one network under this key; an unknown source is a
        // network of its own.
        let crowd = |net: Option<IpPrefix>| {
            net.map_or(0, |n| held.iter().filter(|h| h.source == Some(n)).count())
        };
        let rank = |h: &Held| {
            let provider = h.record.provider();
            let publisher = self.publisher_bytes(&provider);
            (crowd(h.source).max(1), publisher, provider)
        };
        let victim = held.iter().map(rank).max();
        match victim {
            Some((crowd_v, bytes_v, provider))
                if (crowd_v, bytes_v) > (crowd(source) + 1, share) =>
            {
                self.remove(key, &provider);
                Ok(1)
            }
            _ => Err(StoreError::KeyFull { key: *key, limit }),
        }
    }

    /// Frees `adding` bytes in the store (already swept) for a newcomer of
    /// `provider`, whose publisher would hold `share` bytes (module docs).
    fn make_room_in_store(
        &mut self,
        provider: &NodeId,
        adding: usize,
        share: usize,
    ) -> Result<usize, StoreError> {
        let limit = self.limits.max_total_bytes;
        let mut evicted = 0;
        while self.bytes + adding > limit {
            let largest = self.by_size.last().copied();
            let Some((bytes, victim)) = largest.filter(|(b, id)| id != provider && *b > share)
            else {
                return Err(StoreError::StoreFull {
                    bytes: self.bytes,
                    adding,
                    limit,
                });
            };
            let key = self
                .publishers
                .get(&victim)
                .and_then(|s| s.keys.first().copied());
            let Some(key) = key else {
                // An index out of step would loop forever: drop the entry.
                self.by_size.remove(&(bytes, victim));
                continue;
            };
            self.remove(&key, &victim);
            evicted += 1;
        }
        Ok(evicted)
    }

    fn find(&self, key: &RecordKey, provider: &NodeId) -> Option<&Held> {
        (self.records.get(key)?.iter()).find(|h| h.record.provider() == *provider)
    }

    /// Adds `held` (no record of its provider under its key is held) and
    /// updates every index.
    fn insert(&mut self, held: Held) {
        let (key, provider) = (held.record.key, held.record.provider());
        let cost = record_cost(&held.record.value);
        self.bytes += cost;
        let share = self.publishers.entry(provider).or_default();
        self.by_size.remove(&(share.bytes, provider));
        share.bytes += cost;
        share.keys.insert(key);
        self.by_size.insert((share.bytes, provider));
        if let Some(net) = held.source {
            *self.sources.entry(net).or_default() += cost;
        }
        (self.expiries).insert((held.record.expires_at_ms(), key, provider));
        self.records.entry(key).or_default().push(held);
    }

    /// Removes `provider`'s record under `key`, if held, from every index.
    fn remove(&mut self, key: &RecordKey, provider: &NodeId) -> Option<Held> {
        let list = self.records.get_mut(key)?;
        let pos = list.iter().position(|h| h.record.provider() == *provider)?;
        let held = list.swap_remove(pos);
        if list.is_empty() {
            self.records.remove(key);
        }
        let cost = record_cost(&held.record.value);
        self.bytes -= cost;
        if let Some(share) = self.publishers.get_mut(provider) {
            self.by_size.remove(&(share.bytes, *provider));
            share.bytes -= cost;
            share.keys.remove(key);
            if share.keys.is_empty() {
                self.publishers.remove(provider);
            } else {
                self.by_size.insert((share.bytes, *provider));
            }
        }
        if let Some(net) = held.source
            && let Some(used) = self.sources.get_mut(&net)
        {
            *used -= cost;
            if *used == 0 {
                self.sources.remove(&net);
            }
        }
        (self.expiries).remove(&(held.record.expires_at_ms(), *key, *provider));
        Some(held)
    }

    /// The live records under `key` at `now_ms`.
    pub fn get(&self, key: &RecordKey, now_ms: u64) -> Vec<SignedRecord> {
        self.records
            .get(key)
            .map(|held| {
                held.iter()
                    .filter(|h| h.record.expires_at_ms() > now_ms)
                    .map(|h| h.record.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops every record expired at `now_ms`; returns how many.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let mut dropped = 0;
        while let Some(&(at, key, provider)) = self.expiries.first()
            && at <= now_ms
        {
            if self.remove(&key, &provider).is_none() {
                self.expiries.pop_first();
            }
            dropped += 1;
        }
        dropped
    }

    /// The earliest expiry of any record held (Unix ms).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;

    fn key() -> RecordKey {
        RecordKey::from_bytes([9; 32])
    }

    fn rec(seed: u8, value: &'static [u8], at: u64, ttl: u32) -> SignedRecord {
        SignedRecord::sign(
            &Identity::from_seed([seed; 32]),
            key(),
            Bytes::from_static(value),
            at,
            ttl,
        )
    }

    #[test]
    fn one_value_per_provider_newest_wins() {
        let mut s = RecordStore::new(StoreLimits::default());
        s.put(rec(1, b"a", 1_000, 300), None, 1_000).unwrap();
        s.put(rec(2, b"b", 1_000, 300), None, 1_000).unwrap();
        s.put(rec(1, b"c", 2_000, 300), None, 2_000).unwrap();
        assert!(matches!(
            s.put(rec(1, b"old", 1_500, 300), None, 2_000),
            Err(StoreError::Stale { .. })
        ));
        let mut values: Vec<Bytes> = s.get(&key(), 2_000).into_iter().map(|r| r.value).collect();
        values.sort();
        assert_eq!(
            values,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        assert_eq!(s.bytes(), 2 * record_cost(&Bytes::from_static(b"b")));
    }

    #[test]
    fn forged_expired_and_oversized_records_are_refused() {
        let mut s = RecordStore::new(StoreLimits {
            max_value_len: 4,
            ..StoreLimits::default()
        });
        let mut forged = rec(1, b"a", 1_000, 300);
        forged.value = Bytes::from_static(b"b");
        let e = s.put(forged, None, 1_000).unwrap_err();
        assert_eq!(e.reason(), RejectReason::BadSignature);
        let e = s.put(rec(1, b"a", 1_000, 1), None, 2_000).unwrap_err();
        assert_eq!(e.reason(), RejectReason::Expired);
        let e = s
            .put(rec(1, b"abcde", 1_000, 300), None, 1_000)
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { len: 5, .. }));
        assert_eq!(e.reason(), RejectReason::Refused);
        assert!(s.is_empty());
    }

    #[test]
    fn limits_per_key_and_in_bytes() {
        let one = record_cost(&Bytes::from_static(b"a"));
        let mut s = RecordStore::new(StoreLimits {
            max_records_per_key: 2,
            max_total_bytes: 2 * one,
            max_value_len: 100,
            ..StoreLimits::default()
        });
        s.put(rec(1, b"a", 0, 300), None, 0).unwrap();
        s.put(rec(2, b"a", 0, 300), None, 0).unwrap();
        let e = s.put(rec(3, b"a", 0, 300), None, 0).unwrap_err();
        assert!(matches!(e, StoreError::KeyFull { limit: 2, .. }));
        assert_eq!(e.reason(), RejectReason::Full);
        let other = SignedRecord::sign(
            &Identity::from_seed([3; 32]),
            RecordKey::from_bytes([1; 32]),
            Bytes::from_static(b"a"),
            0,
            300,
        );
        let e = s.put(other, None, 0).unwrap_err();
        assert!(matches!(e, StoreError::StoreFull { .. }));
        assert_eq!(e.reason(), RejectReason::Full);
    }

    /// Records from 3 providers under 2 keys, at 3 issue times and 2 TTLs,
    /// some forged: signed once, shared by every case.
    fn pool() -> &'static [SignedRecord] {
        static POOL: std::sync::OnceLock<Vec<SignedRecord>> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let mut out = Vec::new();
            for provider in 1..=3u8 {
                let id = Identity::from_seed([provider; 32]);
                for key in [
                    RecordKey::from_bytes([1; 32]),
                    RecordKey::from_bytes([2; 32]),
                ] {
                    for at in [0, 1_000, 2_000] {
                        for ttl in [1, 5] {
                            let value = Bytes::from(vec![provider; usize::from(provider)]);
                            out.push(SignedRecord::sign(&id, key, value, at, ttl));
                        }
                    }
                }
            }
            let mut forged = out[0].clone();
            forged.issued_at_ms = 9_000;
            out.push(forged);
            out
        })
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize),
        Sweep,
        Tick(u64),
    }

    use proptest::prelude::*;

    /// The store's rules written out naively over a list (sources unknown).
    fn model_put(
        model: &mut Vec<SignedRecord>,
        limits: &StoreLimits,
        r: SignedRecord,
        now: u64,
    ) -> Result<usize, RejectReason> {
        let bytes_of = |m: &[SignedRecord], p: NodeId| -> usize {
            m.iter()
                .filter(|x| x.provider() == p)
                .map(|x| record_cost(&x.value))
                .sum()
        };
        let cost = record_cost(&r.value);
        if r.value.len() > limits.max_value_len {
            return Err(RejectReason::Refused);
        }
        if r.verify().is_err() {
            return Err(RejectReason::BadSignature);
        }
        if r.expires_at_ms() <= now {
            return Err(RejectReason::Expired);
        }
        let total: usize = model.iter().map(|m| record_cost(&m.value)).sum();
        if total + cost > limits.max_total_bytes {
            model.retain(|m| m.expires_at_ms() > now);
        }
        let same = |m: &SignedRecord| m.key == r.key && m.provider() == r.provider();
        if model
            .iter()
            .any(|m| same(m) && m.issued_at_ms >= r.issued_at_ms)
        {
            return Err(RejectReason::Stale);
        }
        let freed: usize = model
            .iter()
            .filter(|m| same(m))
            .map(|m| record_cost(&m.value))
            .sum();
        let share = bytes_of(model, r.provider()) - freed + cost;
        if share > limits.max_bytes_per_publisher {
            return Err(RejectReason::OverQuota);
        }
        let mut evicted = 0;
        let in_key = model.iter().filter(|m| m.key == r.key).count();
        if freed == 0 && in_key >= limits.max_records_per_key {
            let before = model.len();
            model.retain(|m| m.key != r.key || m.expires_at_ms() > now);
            if model.len() == before {
                let victim = (model.iter().filter(|m| m.key == r.key))
                    .map(|m| (bytes_of(model, m.provider()), m.provider()))
                    .max();
                match victim {
                    Some((b, p)) if b > share => {
                        model.retain(|m| !(m.key == r.key && m.provider() == p));
                        evicted += 1;
                    }
                    _ => return Err(RejectReason::Full),
                }
            }
        }
        loop {
            let total: usize = model.iter().map(|m| record_cost(&m.value)).sum();
            if total + cost.saturating_sub(freed) <= limits.max_total_bytes {
                break;
            }
            let mut publishers: Vec<NodeId> = model.iter().map(SignedRecord::provider).collect();
            publishers.sort();
            publishers.dedup();
            let largest = (publishers.iter())
                .map(|&p| (bytes_of(model, p), p))
                .max()
                .filter(|&(b, p)| p != r.provider() && b > share);
            let Some((_, p)) = largest else {
                return Err(RejectReason::Full);
            };
            let key = (model.iter().filter(|m| m.provider() == p))
                .map(|m| m.key)
                .min();
            model.retain(|m| !(m.provider() == p && Some(m.key) == key));
            evicted += 1;
        }
        model.retain(|m| !same(m));
        model.push(r);
        Ok(evicted)
    }

    proptest! {
        /// The store against a naive model: a list of (key, provider) ->
        /// record with the same rules written out directly.
        #[test]
        fn store_matches_the_naive_model(ops in proptest::collection::vec(
            prop_oneof![
                (0usize..64).prop_map(Op::Put),
                Just(Op::Sweep),
                (0u64..3_000).prop_map(Op::Tick),
            ], 0..60)) {
            let unit = record_cost(&Bytes::from_static(b"xx"));
            let limits = StoreLimits {
                max_records_per_key: 2,
                max_total_bytes: 4 * unit,
                max_value_len: 2,
                max_bytes_per_publisher: 3 * unit,
                ..StoreLimits::default()
            };
            let mut store = RecordStore::new(limits);
            let mut model: Vec<SignedRecord> = Vec::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Tick(ms) => now += ms,
                    Op::Sweep => {
                        let before = model.len();
                        model.retain(|r| r.expires_at_ms() > now);
                        prop_assert_eq!(store.sweep(now), before - model.len());
                    }
                    Op::Put(i) => {
                        let r = pool()[i % pool().len()].clone();
                        let expected = model_put(&mut model, &limits, r.clone(), now);
                        prop_assert_eq!(store.put(r, None, now).map_err(|e| e.reason()), expected);
                    }
                }
                let bytes: usize = model.iter().map(|m| record_cost(&m.value)).sum();
                prop_assert_eq!(store.bytes(), bytes);
                prop_assert_eq!(store.len(), model.len());
                for key in [RecordKey::from_bytes([1; 32]), RecordKey::from_bytes([2; 32])] {
                    let mut got = store.get(&key, now);
                    let mut want: Vec<SignedRecord> = model.iter()
                        .filter(|m| m.key == key && m.expires_at_ms() > now).cloned().collect();
                    got.sort_by_key(|r| r.provider());
                    want.sort_by_key(|r| r.provider());
                    prop_assert_eq!(got, want);
                }
            }
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("test ip"))
    }

    /// A record of provider `seed` under key `[k; 32]` with a `len`-byte value.
    fn sized(seed: u8, k: u8, len: usize, ttl: u32) -> SignedRecord {
        let value = Bytes::from(vec![seed; len]);
        let identity = Identity::from_seed([seed; 32]);
        SignedRecord::sign(&identity, RecordKey::from_bytes([k; 32]), value, 0, ttl)
    }

    #[test]
    fn ttl_is_capped_and_issue_times_may_not_run_ahead() {
        let mut s = RecordStore::new(StoreLimits::default());
        let e = s.put(rec(1, b"a", 0, u32::MAX), None, 0).unwrap_err();
        assert!(matches!(
            e,
            StoreError::TtlTooLong {
                ttl_secs: u32::MAX,
                limit_secs: 3600,
                ..
            }
        ));
        assert_eq!(e.reason(), RejectReason::TtlTooLong);
        s.put(rec(1, b"a", 0, 3600), None, 0).unwrap();
        let year = 365 * 24 * 3600 * 1000;
        let e = s.put(rec(2, b"a", year, 300), None, 0).unwrap_err();
        assert_eq!(e.reason(), RejectReason::IssuedInFuture);
        s.put(rec(2, b"a", 60_000, 300), None, 0).unwrap();
        let e = s.put(rec(3, b"a", 60_001, 300), None, 0).unwrap_err();
        assert!(matches!(
            e,
            StoreError::IssuedInFuture {
                issued_at_ms: 60_001,
                now_ms: 0,
                ..
            }
        ));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn quotas_per_publisher_and_per_source_network() {
        let one = record_cost(&Bytes::from(vec![0; 10]));
        let mut s = RecordStore::new(StoreLimits {
            max_bytes_per_publisher: 2 * one,
            max_bytes_per_source: 3 * one,
            ..StoreLimits::default()
        });
        s.put(sized(1, 1, 10, 300), None, 0).unwrap();
        s.put(sized(1, 2, 10, 300), None, 0).unwrap();
        let e = s.put(sized(1, 3, 10, 300), None, 0).unwrap_err();
        assert_eq!(
            e,
            StoreError::OverQuota {
                quota: Quota::Publisher,
                limit: 2 * one
            }
        );
        assert_eq!(e.reason(), RejectReason::OverQuota);
        // Replacing one's own record is within the quota.
        let newer = SignedRecord::sign(
            &Identity::from_seed([1; 32]),
            RecordKey::from_bytes([1; 32]),
            Bytes::from(vec![9; 10]),
            1,
            300,
        );
        s.put(newer, None, 0).unwrap();
        // Three fresh identities from one /24: the third is one too many.
        s.put(sized(2, 1, 10, 300), ip("203.0.113.1"), 0).unwrap();
        s.put(sized(3, 1, 10, 300), ip("203.0.113.2"), 0).unwrap();
        s.put(sized(4, 1, 10, 300), ip("203.0.113.3"), 0).unwrap();
        let e = s
            .put(sized(5, 1, 10, 300), ip("203.0.113.4"), 0)
            .unwrap_err();
        assert_eq!(
            e,
            StoreError::OverQuota {
                quota: Quota::Source,
                limit: 3 * one
            }
        );
        s.put(sized(5, 1, 10, 300), ip("198.51.100.4"), 0).unwrap();
        // IPv6 sources count by /48.
        s.put(sized(6, 1, 10, 300), ip("2001:db8:1:1::1"), 0)
            .unwrap();
        s.put(sized(7, 1, 10, 300), ip("2001:db8:1:2::1"), 0)
            .unwrap();
        s.put(sized(8, 1, 10, 300), ip("2001:db8:1:3::1"), 0)
            .unwrap();
        let e = s
            .put(sized(9, 1, 10, 300), ip("2001:db8:1:4::1"), 0)
            .unwrap_err();
        assert_eq!(e.reason(), RejectReason::OverQuota);
        s.put(sized(9, 1, 10, 300), ip("2001:db8:2::1"), 0).unwrap();
    }

    #[test]
    fn a_full_key_evicts_the_crowd_not_the_lone_provider() {
        let mut s = RecordStore::new(StoreLimits {
            max_records_per_key: 4,
            ..StoreLimits::default()
        });
        for seed in 1..=4 {
            s.put(sized(seed, 1, 1000, 300), ip("203.0.113.9"), 0)
                .unwrap();
        }
        // A lone provider from elsewhere takes the place of one of the crowd.
        assert_eq!(s.put(sized(10, 1, 10, 300), ip("198.51.100.1"), 0), Ok(1));
        assert_eq!(s.get(&RecordKey::from_bytes([1; 32]), 0).len(), 4);
        // The crowd cannot push it out again, nor can a second crowd member
        // from its own network push out another.
        let e = s
            .put(sized(5, 1, 1000, 300), ip("203.0.113.9"), 0)
            .unwrap_err();
        assert!(matches!(e, StoreError::KeyFull { limit: 4, .. }));
        assert_eq!(s.put(sized(11, 1, 10, 300), ip("192.0.2.1"), 0), Ok(1));
        let held = s.get(&RecordKey::from_bytes([1; 32]), 0);
        let from_crowd = held.iter().filter(|r| r.value.len() == 1000).count();
        assert_eq!(from_crowd, 2);
    }

    #[test]
    fn a_full_key_drops_its_expired_records_first() {
        let mut s = RecordStore::new(StoreLimits {
            max_records_per_key: 2,
            ..StoreLimits::default()
        });
        s.put(sized(1, 1, 10, 1), ip("203.0.113.1"), 0).unwrap();
        s.put(sized(2, 1, 10, 300), ip("203.0.113.1"), 0).unwrap();
        // Same network, same size: nothing to evict while both live...
        let e = s
            .put(sized(3, 1, 10, 300), ip("203.0.113.1"), 500)
            .unwrap_err();
        assert!(matches!(e, StoreError::KeyFull { .. }));
        // ...but once one expired, it makes room.
        assert_eq!(s.put(sized(3, 1, 10, 300), ip("203.0.113.1"), 1_000), Ok(0));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_full_store_evicts_the_largest_publisher() {
        let big = record_cost(&Bytes::from(vec![0; 100]));
        let small = record_cost(&Bytes::from(vec![0; 10]));
        let mut s = RecordStore::new(StoreLimits {
            max_total_bytes: 3 * big + small,
            ..StoreLimits::default()
        });
        for k in 1..=3 {
            s.put(sized(1, k, 100, 300), None, 0).unwrap();
        }
        s.put(sized(2, 9, 10, 300), None, 0).unwrap();
        // The honest newcomer evicts one of the hog's records.
        assert_eq!(s.put(sized(3, 9, 10, 300), None, 0), Ok(1));
        assert_eq!(
            s.publisher_bytes(&Identity::from_seed([1; 32]).node_id()),
            2 * big
        );
        // The hog cannot evict anyone smaller than itself.
        let e = s.put(sized(1, 4, 100, 300), None, 0).unwrap_err();
        assert!(matches!(e, StoreError::StoreFull { .. }));
        assert_eq!(e.reason(), RejectReason::Full);
        assert!(s.bytes() <= 3 * big + small);
        // Expired records go first, before anyone is evicted.
        let mut s = RecordStore::new(StoreLimits {
            max_total_bytes: 2 * small,
            ..StoreLimits::default()
        });
        s.put(sized(1, 1, 10, 1), None, 0).unwrap();
        s.put(sized(2, 2, 10, 300), None, 0).unwrap();
        assert_eq!(s.put(sized(3, 3, 10, 300), None, 1_000), Ok(0));
        assert_eq!(s.get(&RecordKey::from_bytes([2; 32]), 1_000).len(), 1);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn expired_records_are_hidden_then_swept() {
        let mut s = RecordStore::new(StoreLimits::default());
        s.put(rec(1, b"a", 0, 1), None, 0).unwrap();
        s.put(rec(2, b"a", 0, 10), None, 0).unwrap();
        assert_eq!(s.next_expiry_ms(), Some(1_000));
        assert_eq!(s.get(&key(), 1_000).len(), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.sweep(1_000), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), record_cost(&Bytes::from_static(b"a")));
        assert_eq!(s.sweep(10_000), 1);
        assert!(s.is_empty() && s.bytes() == 0);
    }
}
