//! The DHT as RPC and pub/sub see it: values looked up under keys (cached
//! with a TTL) and values this node announces (the DHT republishes them).
//!
//! Neither machine talks to the DHT. They ask for [`DirectoryRequest`]s —
//! look a key up, announce a value, withdraw it — which the Node carries out
//! on its DHT (signing announced values as records) and answers with the
//! values found. Both RPC (provider records under `rpc/<procedure>`) and
//! pub/sub (subscriber records under `topic/<prefix>`) use the two helpers
//! here; this module knows neither.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backoff;
use crate::id::{NodeId, RecordKey};
use crate::record::SignedRecord;

mod lookup_cache;

pub use lookup_cache::{
    Answered, STALE_TTLS, THIN_ANSWERS, THIN_TTL, UNANSWERED_RETRIES, UNANSWERED_TTL, is_thin,
};
pub(crate) use lookup_cache::{Cached, Filled, LookupCache};

/// One value found under a key: who published it and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The record's provider (the node that signed it).
    pub provider: NodeId,
    /// The record's value.
    pub value: Bytes,
}

impl From<&SignedRecord> for Found {
    fn from(record: &SignedRecord) -> Self {
        Self {
            provider: record.provider(),
            value: record.value.clone(),
        }
    }
}

/// What a machine asks of the DHT. The Node carries each one out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryRequest {
    /// Look `key` up and answer with the machine's `handle_lookup_answered`
    /// (an empty list when the nodes asked had nothing), saying how well the
    /// lookup was [`Answered`] (which sets how long its result is used).
    Lookup {
        /// The key to look up.
        key: RecordKey,
    },
    /// Sign `value` as this node's record under `key`, store it and keep
    /// republishing it (the DHT's republish interval) until withdrawn; a new
    /// value under the same key replaces the old one.
    Announce {
        /// Where to store it.
        key: RecordKey,
        /// This node's value under the key.
        value: Bytes,
    },
    /// Stop announcing under `key` (let the record expire, or remove it).
    Withdraw {
        /// The key.
        key: RecordKey,
    },
}

/// Why an announcement did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnounceFailure {
    /// Fewer nodes than the DHT's store quorum acknowledged the record
    /// (none at all when no node closest to the key answered).
    Quorum {
        /// Nodes that stored it.
        acked: usize,
        /// Acknowledgements needed.
        quorum: usize,
    },
    /// The DHT would not store the value (the detail says why).
    Rejected(String),
}

/// The first delay before an announcement that failed is tried again.
pub const ANNOUNCE_RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest delay between tries (well inside a record's 300 s life).
pub const ANNOUNCE_RETRY_MAX: Duration = Duration::from_secs(60);

/// A store of an announcement that failed, and what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceFailed {
    /// Why the store failed.
    pub reason: AnnounceFailure,
    /// Failures in a row, this one included.
    pub failures: u32,
    /// How long until it is announced again.
    pub retry_in: Duration,
}

#[derive(Clone, Debug)]
struct Announced {
    value: Bytes,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The values this node announces. The DHT signs, stores and republishes
/// each one until it is withdrawn (it alone owns the periodic republish).
/// This keeps what is announced so that a store that fails — the first one
/// or a republish — is announced again after the crate's shared backoff
/// ([`crate::backoff`], from [`ANNOUNCE_RETRY_BASE`] doubling to
/// [`ANNOUNCE_RETRY_MAX`]), until one succeeds or the value is withdrawn.
#[derive(Clone, Debug)]
pub(crate) struct Announcements {
    values: BTreeMap<RecordKey, Announced>,
    rng: ChaCha8Rng,
}

impl Announcements {
    /// Nothing announced; retry jitter drawn from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            values: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Starts (or changes) announcing `value` under `key`; returns the
    /// request to send now.
    pub(crate) fn set(&mut self, key: RecordKey, value: Bytes) -> DirectoryRequest {
        let announced = Announced {
            value: value.clone(),
            failures: 0,
            retry_at: None,
        };
        self.values.insert(key, announced);
        DirectoryRequest::Announce { key, value }
    }

    /// Stops announcing under `key`; the request to send, if it was announced.
    pub(crate) fn remove(&mut self, key: &RecordKey) -> Option<DirectoryRequest> {
        self.values
            .remove(key)
            .map(|_| DirectoryRequest::Withdraw { key: *key })
    }

    /// How a store of `key` ended at `now` (`Ok` when it reached its
    /// quorum). A failure schedules the next try and is returned; a success
    /// clears the failures. `None` for a success, or for a key not
    /// announced (any more).
    pub(crate) fn stored(
        &mut self,
        now: Instant,
        key: &RecordKey,
        result: Result<(), AnnounceFailure>,
    ) -> Option<AnnounceFailed> {
        let announced = self.values.get_mut(key)?;
        let Err(reason) = result else {
            announced.failures = 0;
            announced.retry_at = None;
            return None;
        };
        announced.failures = announced.failures.saturating_add(1);
        let failures = announced.failures;
        let retry_in = backoff::delay(
            ANNOUNCE_RETRY_BASE,
            ANNOUNCE_RETRY_MAX,
            failures,
            &mut self.rng,
        );
        announced.retry_at = Some(now + retry_in);
        Some(AnnounceFailed {
            reason,
            failures,
            retry_in,
        })
    }

    /// When the next retry is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.values.values().filter_map(|a| a.retry_at).min()
    }

    /// The retries due by `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<DirectoryRequest> {
        let mut out = Vec::new();
        for (key, announced) in &mut self.values {
            if announced.retry_at.is_some_and(|at| at <= now) {
                announced.retry_at = None;
                out.push(DirectoryRequest::Announce {
                    key: *key,
                    value: announced.value.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Realm, RecordKind};

    fn key(name: &str) -> RecordKey {
        RecordKey::new(&Realm::new("io.test").unwrap(), RecordKind::Rpc, name)
    }

    #[test]
    fn failed_announcements_are_retried_with_backoff_until_one_succeeds() {
        let t0 = crate::test_epoch();
        let mut ann = Announcements::new(3);
        let (k, v) = (key("k"), Bytes::from_static(b"v"));
        let first = ann.set(k, v.clone());
        assert_eq!(first, DirectoryRequest::Announce { key: k, value: v });
        assert_eq!(ann.next_deadline(), None, "the DHT republishes");
        let quorum = || {
            Err(AnnounceFailure::Quorum {
                acked: 0,
                quorum: 1,
            })
        };
        assert_eq!(ann.stored(t0, &key("other"), quorum()), None);

        let mut at = t0;
        for failures in 1..=8u32 {
            let retry = ann.stored(at, &k, quorum()).expect("a failure");
            assert_eq!(retry.failures, failures);
            let ceiling = (ANNOUNCE_RETRY_BASE * 2u32.pow(failures - 1)).min(ANNOUNCE_RETRY_MAX);
            assert!(retry.retry_in >= ceiling / 2 && retry.retry_in <= ceiling);
            let due = at + retry.retry_in;
            assert_eq!(ann.next_deadline(), Some(due));
            assert!(ann.due(due - Duration::from_millis(1)).is_empty());
            assert_eq!(ann.due(due), vec![first.clone()]);
            assert_eq!(ann.next_deadline(), None);
            at = due;
        }
        assert_eq!(ann.stored(at, &k, Ok(())), None);
        let retry = ann.stored(at, &k, quorum()).unwrap();
        assert_eq!(retry.failures, 1, "a success starts the count again");

        assert_eq!(ann.remove(&k), Some(DirectoryRequest::Withdraw { key: k }));
        assert_eq!(ann.remove(&k), None);
        assert_eq!(ann.next_deadline(), None);
    }
}
