//! The record store: signed records this node holds for others.
//!
//! A key holds at most one record per provider (the newest by issue time)
//! and at most `max_records_per_key` providers; the whole store holds at
//! most `max_total_bytes`. Every record is verified (signature and TTL)
//! before it is kept, reads leave out expired records, and [`RecordStore::sweep`]
//! drops them. Time here is wall-clock Unix milliseconds, an explicit input.

use bytes::Bytes;

use crate::collections::HashMap;
use crate::id::{NodeId, RecordKey};
use crate::record::{RecordError, SignedRecord};

use super::message::RejectReason;

/// Bounds of a [`RecordStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Providers per key.
    pub max_records_per_key: usize,
    /// Bytes of all records together (values plus fixed overhead).
    pub max_total_bytes: usize,
    /// Bytes of one value.
    pub max_value_len: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_records_per_key: 64,
            max_total_bytes: 32 << 20,
            max_value_len: 16 << 10,
        }
    }
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
    /// The key already has the maximum number of providers.
    #[error("{key:?} already holds {limit} providers")]
    KeyFull {
        /// The key.
        key: RecordKey,
        /// The limit.
        limit: usize,
    },
    /// The store's byte budget would be exceeded.
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

/// Records held under their keys.
#[derive(Clone, Debug, Default)]
pub struct RecordStore {
    limits: StoreLimits,
    records: HashMap<RecordKey, Vec<SignedRecord>>,
    bytes: usize,
}

impl RecordStore {
    /// An empty store with `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            records: HashMap::default(),
            bytes: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Verifies `record` at `now_ms` and keeps it, replacing an older record
    /// of the same provider.
    pub fn put(&mut self, record: SignedRecord, now_ms: u64) -> Result<(), StoreError> {
        let key = record.key;
        if record.value.len() > self.limits.max_value_len {
            return Err(StoreError::TooLarge {
                key,
                len: record.value.len(),
                limit: self.limits.max_value_len,
            });
        }
        record.verify_at(now_ms)?;
        let provider = record.provider();
        let cost = record_cost(&record.value);
        let held = self.records.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let existing = held.iter().position(|r| r.provider() == provider);
        let freed = match existing {
            Some(pos) if held[pos].issued_at_ms >= record.issued_at_ms => {
                return Err(StoreError::Stale { key, provider });
            }
            Some(pos) => record_cost(&held[pos].value),
            None if held.len() >= self.limits.max_records_per_key => {
                return Err(StoreError::KeyFull {
                    key,
                    limit: self.limits.max_records_per_key,
                });
            }
            None => 0,
        };
        let after = self.bytes - freed + cost;
        if after > self.limits.max_total_bytes {
            return Err(StoreError::StoreFull {
                bytes: self.bytes,
                adding: cost,
                limit: self.limits.max_total_bytes,
            });
        }
        self.bytes = after;
        let held = self.records.entry(key).or_default();
        match existing {
            Some(pos) => held[pos] = record,
            None => held.push(record),
        }
        Ok(())
    }

    /// The live records under `key` at `now_ms`.
    pub fn get(&self, key: &RecordKey, now_ms: u64) -> Vec<SignedRecord> {
        self.records
            .get(key)
            .map(|held| {
                held.iter()
                    .filter(|r| r.expires_at_ms() > now_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops every record expired at `now_ms`; returns how many.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let mut dropped = 0;
        let mut freed = 0;
        self.records.retain(|_, held| {
            held.retain(|r| {
                let alive = r.expires_at_ms() > now_ms;
                if !alive {
                    dropped += 1;
                    freed += record_cost(&r.value);
                }
                alive
            });
            !held.is_empty()
        });
        self.bytes -= freed;
        dropped
    }

    /// The earliest expiry of any record held (Unix ms).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.records
            .values()
            .flatten()
            .map(SignedRecord::expires_at_ms)
            .min()
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
        s.put(rec(1, b"a", 1_000, 300), 1_000).unwrap();
        s.put(rec(2, b"b", 1_000, 300), 1_000).unwrap();
        s.put(rec(1, b"c", 2_000, 300), 2_000).unwrap();
        assert!(matches!(
            s.put(rec(1, b"old", 1_500, 300), 2_000),
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
        let e = s.put(forged, 1_000).unwrap_err();
        assert_eq!(e.reason(), RejectReason::BadSignature);
        let e = s.put(rec(1, b"a", 1_000, 1), 2_000).unwrap_err();
        assert_eq!(e.reason(), RejectReason::Expired);
        let e = s.put(rec(1, b"abcde", 1_000, 300), 1_000).unwrap_err();
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
        });
        s.put(rec(1, b"a", 0, 300), 0).unwrap();
        s.put(rec(2, b"a", 0, 300), 0).unwrap();
        let e = s.put(rec(3, b"a", 0, 300), 0).unwrap_err();
        assert!(matches!(e, StoreError::KeyFull { limit: 2, .. }));
        assert_eq!(e.reason(), RejectReason::Full);
        let other = SignedRecord::sign(
            &Identity::from_seed([3; 32]),
            RecordKey::from_bytes([1; 32]),
            Bytes::from_static(b"a"),
            0,
            300,
        );
        let e = s.put(other, 0).unwrap_err();
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
            let limits = StoreLimits { max_records_per_key: 2, max_total_bytes: 3 * record_cost(&Bytes::from_static(b"xx")), max_value_len: 2 };
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
                        let same = |m: &SignedRecord| m.key == r.key && m.provider() == r.provider();
                        let bytes: usize = model.iter().map(|m| record_cost(&m.value)).sum();
                        let freed: usize = model.iter().filter(|m| same(m)).map(|m| record_cost(&m.value)).sum();
                        let expected = if r.value.len() > limits.max_value_len {
                            Err(RejectReason::Refused)
                        } else if r.verify().is_err() {
                            Err(RejectReason::BadSignature)
                        } else if r.expires_at_ms() <= now {
                            Err(RejectReason::Expired)
                        } else if model.iter().any(|m| same(m) && m.issued_at_ms >= r.issued_at_ms) {
                            Err(RejectReason::Stale)
                        } else if (!model.iter().any(same) && model.iter().filter(|m| m.key == r.key).count() >= limits.max_records_per_key)
                            || bytes - freed + record_cost(&r.value) > limits.max_total_bytes {
                            Err(RejectReason::Full)
                        } else {
                            Ok(())
                        };
                        if expected.is_ok() {
                            model.retain(|m| !same(m));
                            model.push(r.clone());
                        }
                        prop_assert_eq!(store.put(r, now).map_err(|e| e.reason()), expected);
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

    #[test]
    fn expired_records_are_hidden_then_swept() {
        let mut s = RecordStore::new(StoreLimits::default());
        s.put(rec(1, b"a", 0, 1), 0).unwrap();
        s.put(rec(2, b"a", 0, 10), 0).unwrap();
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
