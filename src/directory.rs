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
use crate::collections::HashMap;
use crate::id::{NodeId, RecordKey};
use crate::metrics::CacheCounts;
use crate::record::SignedRecord;

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

/// How long a lookup that reached no node counts as having found nothing:
/// uses of the key in that time do not look it up again (no lookup storm
/// while the network is away), and the first use after it does, so values
/// stored all along are found within seconds of the network coming back
/// rather than after the cache's TTL (issue 17: a publisher cut off by a
/// partition sent to none of its subscribers for 30 s after the heal).
pub const UNANSWERED_TTL: Duration = Duration::from_secs(1);

/// A lookup answered by fewer nodes than this is **thin** (see
/// [`is_thin`]).
pub const THIN_ANSWERS: usize = 3;

/// How long a thin lookup's values are used (see [`is_thin`]; issue 17: a
/// publisher's first lookups after a partition healed were answered by 2
/// and by 3 nodes, missed two of its subscribers, and were kept for 30 s).
pub const THIN_TTL: Duration = Duration::from_secs(5);

/// Whether a lookup that `answers` nodes answered and `failed` requests of
/// which failed is **thin**: fewer than [`THIN_ANSWERS`] answered, or at
/// least as many requests failed as nodes answered. Its routing table was
/// then mostly stale (right after a partition healed, or the node's network
/// came back), so it may have missed values that the nodes it did not reach
/// hold; what it found is kept for [`THIN_TTL`] only. A lookup in a large,
/// healthy network reaches its k closest with few failures and is not thin.
pub fn is_thin(answers: usize, failed: u32) -> bool {
    answers < THIN_ANSWERS || u64::from(failed) >= answers as u64
}

/// How well a lookup was answered, which sets how long what it found is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// Enough nodes answered: used for the cache's TTL.
    Fully,
    /// A thin lookup ([`is_thin`]): used for [`THIN_TTL`] at most.
    Thinly,
    /// No node answered and nothing was found (a partition, an outage,
    /// breakers open): "nothing" stands for [`UNANSWERED_TTL`] at most, since
    /// the values are likely there once the network answers again.
    Nobody,
}

impl Answered {
    /// The verdict on a lookup that found `records` records, that `answers`
    /// nodes answered and `failed` requests of which failed.
    pub fn of(records: usize, answers: usize, failed: u32) -> Self {
        if records == 0 && answers == 0 {
            Self::Nobody
        } else if is_thin(answers, failed) {
            Self::Thinly
        } else {
            Self::Fully
        }
    }

    /// How long a result so answered is used, under a cache TTL of `ttl`.
    fn ttl(self, ttl: Duration) -> Duration {
        match self {
            Self::Fully => ttl,
            Self::Thinly => ttl.min(THIN_TTL),
            Self::Nobody => ttl.min(UNANSWERED_TTL),
        }
    }
}

/// What the cache knows about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cached<'a> {
    /// Values found, still fresh.
    Fresh(&'a [Found]),
    /// A lookup is under way.
    Pending,
    /// Nothing fresh and no lookup under way: the caller should look it up
    /// (and call [`LookupCache::started`]).
    Missing,
}

#[derive(Clone, Debug)]
enum Entry {
    Fresh {
        found: Vec<Found>,
        expires: Instant,
        /// Every value found was forgotten since.
        emptied: bool,
    },
    Pending {
        deadline: Instant,
    },
}

/// Lookup results by key, fresh for a TTL; pending lookups time out.
#[derive(Clone, Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    lookup_timeout: Duration,
    entries: HashMap<RecordKey, Entry>,
    /// Pending lookup deadlines, earliest first.
    deadlines: BTreeMap<(Instant, RecordKey), ()>,
    /// Hits and misses of [`LookupCache::consult`].
    counts: CacheCounts,
}

impl LookupCache {
    /// A cache keeping results for `ttl` and giving up on a lookup after
    /// `lookup_timeout`.
    pub(crate) fn new(ttl: Duration, lookup_timeout: Duration) -> Self {
        Self {
            ttl,
            lookup_timeout,
            entries: HashMap::default(),
            deadlines: BTreeMap::new(),
            counts: CacheCounts::default(),
        }
    }

    /// [`LookupCache::get`] for a new use of the cache (a call, a
    /// publication), counted: a hit when the key is fresh or already being
    /// looked up, a miss when it is missing.
    pub(crate) fn consult(&mut self, now: Instant, key: &RecordKey) -> Cached<'_> {
        let hit = self.get(now, key) != Cached::Missing;
        self.counts.record(hit);
        self.get(now, key)
    }

    /// Hits and misses of [`LookupCache::consult`] so far.
    pub(crate) fn counts(&self) -> CacheCounts {
        self.counts
    }

    /// What is known about `key` at `now`.
    pub(crate) fn get(&self, now: Instant, key: &RecordKey) -> Cached<'_> {
        match self.entries.get(key) {
            Some(Entry::Fresh { found, expires, .. }) if now < *expires => Cached::Fresh(found),
            Some(Entry::Pending { .. }) => Cached::Pending,
            _ => Cached::Missing,
        }
    }

    /// Notes that a lookup of `key` went out at `now`.
    pub(crate) fn started(&mut self, now: Instant, key: RecordKey) {
        let deadline = now + self.lookup_timeout;
        self.entries.insert(key, Entry::Pending { deadline });
        self.deadlines.insert((deadline, key), ());
    }

    /// Stores a lookup's results for as long as how it was `answered` allows
    /// ([`Answered`]). Returns false (and stores nothing) when no lookup of
    /// `key` was pending: an answer nobody asked for, or one that came after
    /// its timeout.
    pub(crate) fn fill(
        &mut self,
        now: Instant,
        key: RecordKey,
        found: Vec<Found>,
        answered: Answered,
    ) -> bool {
        let ttl = answered.ttl(self.ttl);
        let Some(Entry::Pending { deadline }) = self.entries.get(&key) else {
            return false;
        };
        self.deadlines.remove(&(*deadline, key));
        let expires = now + ttl;
        let emptied = false;
        let entry = Entry::Fresh {
            found,
            expires,
            emptied,
        };
        self.entries.insert(key, entry);
        true
    }

    /// Forgets `provider` under `key` (it failed), so the next caller does not
    /// pick it before the entry is looked up again.
    pub(crate) fn forget(&mut self, key: &RecordKey, provider: &NodeId) {
        if let Some(Entry::Fresh { found, emptied, .. }) = self.entries.get_mut(key) {
            found.retain(|f| f.provider != *provider);
            *emptied = found.is_empty();
        }
    }

    /// Drops the entry of `key` if [`LookupCache::forget`] left it with no
    /// value, so a new use looks the key up at once (the providers may be
    /// reachable another way by then, e.g. through another relay) rather
    /// than hear of none until the entry expires. An entry whose lookup
    /// found nothing stays: no lookup per use of a name nobody serves.
    pub(crate) fn drop_emptied(&mut self, key: &RecordKey) {
        if matches!(
            self.entries.get(key),
            Some(Entry::Fresh { emptied: true, .. })
        ) {
            self.entries.remove(key);
        }
    }

    /// The earliest pending lookup deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    /// Gives up on the lookups whose deadline passed by `now` and returns
    /// their keys; the caller treats them as having found nothing.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<RecordKey> {
        let mut expired = Vec::new();
        while let Some(&(at, key)) = self.deadlines.keys().next() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, key));
            self.entries.remove(&key);
            expired.push(key);
        }
        expired
    }

    /// Drops fresh entries whose TTL is over, so the map does not keep every
    /// key ever looked up.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| !matches!(e, Entry::Fresh { expires, .. } if *expires <= now));
    }
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

    fn found(byte: u8) -> Found {
        Found {
            provider: NodeId::from_bytes([byte; 32]),
            value: Bytes::new(),
        }
    }

    #[test]
    fn lookups_are_cached_for_the_ttl_and_time_out() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut cache = LookupCache::new(10 * s, 2 * s);
        let k = key("k");
        assert_eq!(cache.get(t0, &k), Cached::Missing);
        assert!(
            !cache.fill(t0, k, vec![found(1)], Answered::Fully),
            "nobody asked"
        );
        cache.started(t0, k);
        assert_eq!(cache.get(t0, &k), Cached::Pending);
        assert_eq!(cache.next_deadline(), Some(t0 + 2 * s));
        assert!(cache.fill(t0 + s, k, vec![found(1), found(2)], Answered::Fully));
        assert_eq!(cache.next_deadline(), None);
        assert_eq!(cache.get(t0 + s, &k), Cached::Fresh(&[found(1), found(2)]));
        cache.forget(&k, &found(1).provider);
        assert_eq!(cache.get(t0 + s, &k), Cached::Fresh(&[found(2)]));
        assert_eq!(cache.get(t0 + 11 * s, &k), Cached::Missing, "TTL over");
        cache.prune(t0 + 11 * s);
        assert!(cache.entries.is_empty());

        cache.started(t0, k);
        assert!(cache.expire(t0 + s).is_empty());
        assert_eq!(cache.expire(t0 + 2 * s), vec![k]);
        assert_eq!(cache.get(t0 + 2 * s, &k), Cached::Missing);
        assert!(
            !cache.fill(t0 + 3 * s, k, vec![], Answered::Fully),
            "too late"
        );
    }

    #[test]
    fn a_lookup_no_node_answered_is_kept_for_a_second_only() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut cache = LookupCache::new(30 * s, 5 * s);
        let k = key("k");
        assert!(!cache.fill(t0, k, vec![], Answered::Nobody), "nobody asked");
        cache.started(t0, k);
        assert!(cache.fill(t0, k, vec![], Answered::Nobody));
        assert_eq!(cache.next_deadline(), None, "no longer pending");
        assert_eq!(cache.get(t0, &k), Cached::Fresh(&[]));
        let over = t0 + UNANSWERED_TTL;
        assert_eq!(cache.get(over, &k), Cached::Missing, "looked up again");

        // A TTL shorter than that wins.
        let mut short = LookupCache::new(s / 2, 5 * s);
        short.started(t0, k);
        assert!(short.fill(t0, k, vec![], Answered::Nobody));
        assert_eq!(short.get(t0 + s / 2, &k), Cached::Missing);
    }

    #[test]
    fn a_lookup_few_nodes_answered_or_as_many_failed_as_answered_is_thin() {
        assert!(is_thin(0, 0));
        assert!(is_thin(2, 0), "two answers");
        assert!(!is_thin(3, 0));
        assert!(is_thin(3, 3), "as many failures as answers");
        assert!(!is_thin(3, 2));
        assert!(
            !is_thin(20, 4),
            "a large network's lookup with a few dead contacts"
        );
    }

    #[test]
    fn a_thin_lookups_values_are_kept_for_five_seconds_only() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut cache = LookupCache::new(30 * s, 5 * s);
        let k = key("k");
        assert!(
            !cache.fill(t0, k, vec![found(1)], Answered::Thinly),
            "nobody asked"
        );
        cache.started(t0, k);
        assert!(cache.fill(t0, k, vec![found(1)], Answered::Thinly));
        assert_eq!(cache.get(t0 + 4 * s, &k), Cached::Fresh(&[found(1)]));
        assert_eq!(
            cache.get(t0 + THIN_TTL, &k),
            Cached::Missing,
            "looked up again"
        );
        // A TTL shorter than that wins.
        let mut short = LookupCache::new(2 * s, 5 * s);
        short.started(t0, k);
        assert!(short.fill(t0, k, vec![found(1)], Answered::Thinly));
        assert_eq!(short.get(t0 + 2 * s, &k), Cached::Missing);
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
