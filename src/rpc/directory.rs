//! The DHT as RPC and pub/sub see it: values looked up under keys (cached
//! with a TTL) and values this node announces (republished on a timer).
//!
//! Neither machine talks to the DHT. They ask for [`DirectoryRequest`]s —
//! look a key up, announce a value, withdraw it — which the Node carries out
//! on its DHT (signing announced values as records) and answers with the
//! values found. Both [`crate::rpc::Rpc`] (provider records under
//! `rpc/<procedure>`) and [`crate::pubsub::PubSub`] (subscriber records under
//! `topic/<prefix>`) use the two helpers here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

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
    /// Look `key` up and answer with the machine's `handle_lookup` (an empty
    /// list when nothing was found or the lookup failed).
    Lookup {
        /// The key to look up.
        key: RecordKey,
    },
    /// Sign `value` as this node's record under `key` and store it. Comes
    /// again every republish interval until withdrawn; a new value under the
    /// same key replaces the old one.
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
    Fresh { found: Vec<Found>, expires: Instant },
    Pending { deadline: Instant },
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
            Some(Entry::Fresh { found, expires }) if now < *expires => Cached::Fresh(found),
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

    /// Stores a lookup's results. Returns false (and stores nothing) when no
    /// lookup of `key` was pending: an answer nobody asked for, or one that
    /// came after its timeout.
    pub(crate) fn fill(&mut self, now: Instant, key: RecordKey, found: Vec<Found>) -> bool {
        let Some(Entry::Pending { deadline }) = self.entries.get(&key) else {
            return false;
        };
        self.deadlines.remove(&(*deadline, key));
        let expires = now + self.ttl;
        self.entries.insert(key, Entry::Fresh { found, expires });
        true
    }

    /// Forgets `provider` under `key` (it failed), so the next caller does not
    /// pick it before the entry is looked up again.
    pub(crate) fn forget(&mut self, key: &RecordKey, provider: &NodeId) {
        if let Some(Entry::Fresh { found, .. }) = self.entries.get_mut(key) {
            found.retain(|f| f.provider != *provider);
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

/// The values this node announces, each republished every interval.
#[derive(Clone, Debug)]
pub(crate) struct Announcements {
    interval: Duration,
    values: BTreeMap<RecordKey, (Bytes, Instant)>,
}

impl Announcements {
    /// Announcements republished every `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            values: BTreeMap::new(),
        }
    }

    /// Starts (or changes) announcing `value` under `key` at `now`; returns
    /// the request to send now.
    pub(crate) fn set(&mut self, now: Instant, key: RecordKey, value: Bytes) -> DirectoryRequest {
        self.values
            .insert(key, (value.clone(), now + self.interval));
        DirectoryRequest::Announce { key, value }
    }

    /// Stops announcing under `key`; the request to send, if it was announced.
    pub(crate) fn remove(&mut self, key: &RecordKey) -> Option<DirectoryRequest> {
        self.values
            .remove(key)
            .map(|_| DirectoryRequest::Withdraw { key: *key })
    }

    /// When the next republication is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.values.values().map(|(_, due)| *due).min()
    }

    /// The republications due by `now`, rescheduled one interval later.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<DirectoryRequest> {
        let mut out = Vec::new();
        for (key, (value, due)) in &mut self.values {
            if *due <= now {
                *due = now + self.interval;
                out.push(DirectoryRequest::Announce {
                    key: *key,
                    value: value.clone(),
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
        assert!(!cache.fill(t0, k, vec![found(1)]), "nobody asked");
        cache.started(t0, k);
        assert_eq!(cache.get(t0, &k), Cached::Pending);
        assert_eq!(cache.next_deadline(), Some(t0 + 2 * s));
        assert!(cache.fill(t0 + s, k, vec![found(1), found(2)]));
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
        assert!(!cache.fill(t0 + 3 * s, k, vec![]), "too late");
    }

    #[test]
    fn announcements_repeat_every_interval_until_removed() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut ann = Announcements::new(240 * s);
        let (k, v) = (key("k"), Bytes::from_static(b"v"));
        let first = ann.set(t0, k, v.clone());
        assert_eq!(first, DirectoryRequest::Announce { key: k, value: v });
        assert_eq!(ann.next_deadline(), Some(t0 + 240 * s));
        assert!(ann.due(t0 + 239 * s).is_empty());
        assert_eq!(ann.due(t0 + 240 * s), vec![first]);
        assert_eq!(ann.next_deadline(), Some(t0 + 480 * s));
        assert_eq!(ann.remove(&k), Some(DirectoryRequest::Withdraw { key: k }));
        assert_eq!(ann.remove(&k), None);
        assert_eq!(ann.next_deadline(), None);
    }
}
