//! What RPC and pub/sub found under a key, kept for a while: the values a
//! lookup found are used until they are due again (the cache's TTL, shorter
//! after a lookup few nodes answered or none did, see [`Answered`]), and then
//! **served stale while a new lookup runs**: a use of a key whose values are
//! due starts one lookup in the background and goes on with the values known,
//! rather than wait for the lookup (or, if it fails, for nothing).
//!
//! A new lookup adds what it found and keeps what it did not find: an
//! answer misses values, it does not disprove them. A value no answer has
//! confirmed for [`STALE_TTLS`] TTLs is dropped once the lookup its key is
//! due then also misses it (it is used while that lookup runs, and dropped
//! regardless one TTL later should no lookup end); a value that failed its
//! user is dropped at once ([`LookupCache::forget`]): a gone provider fails
//! its call (or its dial), one that withdrew answers `UnknownProcedure`,
//! and a subscriber that withdrew passes what it no longer takes. How well
//! a lookup was answered ([`Answered`]) sets only when the key is due again.
//!
//! Why a full answer does not replace (issue 17, the 100-node cluster): a
//! publisher's lookup answered by 10 nodes lacked a live subscriber's
//! record (stored at the nodes its subscriber reached during a partition)
//! and, replacing the values, sent that subscriber nothing for the 30 s
//! until the next lookup found it again: 30 publications lost.
//!
//! Why a value is kept while the lookup due at its age runs (issue 17, the
//! 100-node cluster, seed 2): two lookups in a row missed a live
//! subscriber's record; it aged out at the use that started the third, and
//! the two publications made while that lookup ran, which found the record
//! again, went to everyone but that subscriber.
//!
//! Why (issue 14's link ladder, seed 1): every lookup in a small network is
//! thin, so values were due every 5 s; a new lookup that ran while a lossy
//! link dropped its one request found nothing, and 1.6 s of calls and
//! publications went to no one although the provider and the subscriber had
//! been found a few seconds before and were still there.

use std::collections::BTreeMap;
use std::mem;
use std::time::{Duration, Instant};

use super::Found;
use crate::collections::HashMap;
use crate::id::{NodeId, RecordKey};
use crate::metrics::CacheCounts;

/// How long a lookup that reached no node counts as having found nothing:
/// uses of the key in that time do not look it up again (no lookup storm
/// while the network is away), and the first use after it does, so values
/// stored all along are found within seconds of the network coming back
/// rather than after the cache's TTL (issue 17: a publisher cut off by a
/// partition sent to none of its subscribers for 30 s after the heal).
pub const UNANSWERED_TTL: Duration = Duration::from_secs(1);

/// How many times in a row a key nothing is known under is looked up again
/// at once when no node answered (`Filled::LookAgain`): the uses waiting
/// for it (calls, publications) keep waiting rather than find no one. Why
/// (issue 14's link ladder, congested cellular, seed 6): the one request of
/// a caller's first lookup was lost in a burst on its link and timed out
/// after 2.5 s; the lookup had nobody else to ask, and the 174 calls and
/// 174 publications made meanwhile all failed (`NoProvider`) or went to no
/// one, although the provider and subscriber records were stored.
pub const UNANSWERED_RETRIES: u32 = 2;

/// A lookup answered by fewer nodes than this is **thin** (see
/// [`is_thin`]).
pub const THIN_ANSWERS: usize = 3;

/// How long a thin lookup's values are used before they are due again (see
/// [`is_thin`]; issue 17: a publisher's first lookups after a partition
/// healed were answered by 2 and by 3 nodes, missed two of its subscribers,
/// and were kept for 30 s).
pub const THIN_TTL: Duration = Duration::from_secs(5);

/// How many TTLs a value is used after the last answer that found it: one
/// fresh, then one served stale while new lookups fail or miss it.
pub const STALE_TTLS: u32 = 2;

/// Whether a lookup that `answers` nodes answered and `failed` requests of
/// which failed is **thin**: fewer than [`THIN_ANSWERS`] answered, or at
/// least as many requests failed as nodes answered. Its routing table was
/// then mostly stale (right after a partition healed, or the node's network
/// came back), so it may have missed values that the nodes it did not reach
/// hold; what it found is due again after [`THIN_TTL`]. A lookup in a large,
/// healthy network reaches its k closest with few failures and is not thin.
pub fn is_thin(answers: usize, failed: u32) -> bool {
    answers < THIN_ANSWERS || u64::from(failed) >= answers as u64
}

/// How well a lookup was answered, which sets how long what it found is used
/// before the key is looked up again. Either way its values join what was
/// known (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// Enough nodes answered: the values are due again after the cache's
    /// TTL.
    Fully,
    /// A thin lookup ([`is_thin`]): the values are due again after
    /// [`THIN_TTL`] at most.
    Thinly,
    /// No node answered and nothing was found (a partition, an outage,
    /// breakers open): what was known stays, due again after
    /// [`UNANSWERED_TTL`] at most, since the values are likely there once
    /// the network answers again.
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

    /// How long the values are used before they are due again, given the
    /// cache's `ttl`.
    pub fn ttl(self, ttl: Duration) -> Duration {
        match self {
            Self::Fully => ttl,
            Self::Thinly => ttl.min(THIN_TTL),
            Self::Nobody => ttl.min(UNANSWERED_TTL),
        }
    }
}

/// What became of a lookup's results ([`LookupCache::fill`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Stored: the uses that waited for the lookup go on.
    Stored,
    /// No lookup of the key was under way (an answer nobody asked for, or
    /// one that came after its timeout): nothing stored.
    Unasked,
    /// No node answered and nothing is known under the key: the entry stays
    /// pending, the uses keep waiting, and the owner looks the key up again
    /// now ([`UNANSWERED_RETRIES`] times in a row at most).
    LookAgain,
}

/// What the cache knows about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cached<'a> {
    /// Values to use: fresh, or due again with a new lookup already under
    /// way.
    Fresh(&'a [Found]),
    /// Values to use that are due again, with no lookup under way: use them,
    /// and look the key up (calling [`LookupCache::started`]).
    Stale(&'a [Found]),
    /// A lookup is under way and nothing is known yet.
    Pending,
    /// Nothing known and no lookup under way: the caller should look it up
    /// (and call [`LookupCache::started`]) and wait for it.
    Missing,
}

impl<'a> Cached<'a> {
    /// The values to use now, fresh or stale (`None`: none known yet).
    pub(crate) fn values(&self) -> Option<&'a [Found]> {
        match *self {
            Self::Fresh(found) | Self::Stale(found) => Some(found),
            Self::Pending | Self::Missing => None,
        }
    }
}

/// The values known under a key.
#[derive(Clone, Debug)]
struct Known {
    found: Vec<Found>,
    /// Until when each value of `found` is used (same order).
    until: Vec<Instant>,
    /// When the values are due a new lookup.
    due: Instant,
    /// The deadline of the new lookup under way.
    refreshing: Option<Instant>,
    /// Every value found was forgotten since.
    emptied: bool,
}

impl Known {
    fn new(found: Vec<Found>, due: Instant, until: Instant) -> Self {
        let until = vec![until; found.len()];
        Self {
            found,
            until,
            due,
            refreshing: None,
            emptied: false,
        }
    }

    /// Adds `found` (used until `until`), replacing a value of the same
    /// provider.
    fn merge(&mut self, found: Vec<Found>, until: Instant) {
        for value in found {
            match self.found.iter().position(|f| f.provider == value.provider) {
                Some(at) => {
                    self.found[at] = value;
                    self.until[at] = until;
                }
                None => {
                    self.found.push(value);
                    self.until.push(until);
                }
            }
        }
        self.emptied = false;
    }

    /// Keeps the values for which `keep` holds; true when one went. Keeping
    /// them all (a use of a fresh key, every publication) moves nothing.
    fn retain(&mut self, mut keep: impl FnMut(&Found, Instant) -> bool) -> bool {
        let mut kept = self.found.iter().zip(&self.until);
        if kept.all(|(found, until)| keep(found, *until)) {
            return false;
        }
        let pairs = mem::take(&mut self.found)
            .into_iter()
            .zip(mem::take(&mut self.until));
        (self.found, self.until) = pairs.filter(|(found, until)| keep(found, *until)).unzip();
        true
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Known(Known),
    Pending {
        /// When the lookup under way is given up on.
        deadline: Instant,
        /// Lookups in a row that no node answered ([`Filled::LookAgain`]).
        unanswered: u32,
    },
}

/// What [`Entry::age`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aged {
    /// Nothing was dropped.
    Unchanged,
    /// Values were dropped (or the entry became its lookup under way).
    Changed,
    /// The entry is of no more use.
    Gone,
}

impl Entry {
    /// What `entry` (`None`: no entry) tells about its key at `now`.
    fn cached(entry: Option<&Entry>, now: Instant) -> Cached<'_> {
        match entry {
            Some(Entry::Known(known)) if now < known.due => Cached::Fresh(&known.found),
            Some(Entry::Known(known)) if !known.found.is_empty() => {
                if known.refreshing.is_some() {
                    Cached::Fresh(&known.found)
                } else {
                    Cached::Stale(&known.found)
                }
            }
            Some(Entry::Known(known)) if known.refreshing.is_some() => Cached::Pending,
            Some(Entry::Pending { .. }) => Cached::Pending,
            _ => Cached::Missing,
        }
    }

    /// Drops the values whose time is over by `now`. A value whose time is
    /// over is kept while a lookup of the key runs, or when `in_use` and the
    /// key is due (the use starts that lookup): the lookup's answer decides
    /// ([`LookupCache::fill`]), up to `grace` after its time. An entry whose
    /// values all aged out knows nothing any more (not "nobody serves it"):
    /// it becomes its lookup under way, if one is, or goes. One whose lookup
    /// found nothing goes once due.
    fn age(&mut self, now: Instant, in_use: bool, grace: Duration) -> Aged {
        let Entry::Known(known) = self else {
            return Aged::Unchanged;
        };
        if known.found.is_empty() {
            return if known.refreshing.is_some() || now < known.due {
                Aged::Unchanged
            } else {
                Aged::Gone
            };
        }
        let asking = known.refreshing.is_some() || (in_use && now >= known.due);
        if !known.retain(|_, until| now < until || (asking && now < until + grace)) {
            return Aged::Unchanged;
        }
        if !known.found.is_empty() {
            return Aged::Changed;
        }
        match known.refreshing {
            Some(deadline) => {
                *self = Entry::Pending {
                    deadline,
                    unanswered: 0,
                };
                Aged::Changed
            }
            None => Aged::Gone,
        }
    }
}

/// Lookup results by key, fresh for a TTL then served stale while a new
/// lookup runs (see the module docs); pending lookups time out.
#[derive(Clone, Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    lookup_timeout: Duration,
    entries: HashMap<RecordKey, Entry>,
    /// Deadlines of the lookups under way, earliest first.
    deadlines: BTreeMap<(Instant, RecordKey), ()>,
    /// Hits and misses of [`LookupCache::consult`].
    counts: CacheCounts,
    /// Moves on whenever the values known under a key may have changed
    /// ([`LookupCache::generation`]).
    generation: u64,
}

impl LookupCache {
    /// A cache keeping results for `ttl` (and stale for as long again) and
    /// giving up on a lookup after `lookup_timeout`.
    pub(crate) fn new(ttl: Duration, lookup_timeout: Duration) -> Self {
        Self {
            ttl,
            lookup_timeout,
            entries: HashMap::default(),
            deadlines: BTreeMap::new(),
            counts: CacheCounts::default(),
            generation: 0,
        }
    }

    /// [`LookupCache::get`] for a new use of the cache (a call, a
    /// publication), counted: a hit when values are known or a lookup is
    /// under way, a miss when nothing is. Values whose time is over are
    /// dropped first.
    pub(crate) fn consult(&mut self, now: Instant, key: &RecordKey) -> Cached<'_> {
        let aged = (self.entries.get_mut(key)).map(|entry| entry.age(now, true, self.ttl));
        if aged == Some(Aged::Gone) {
            self.entries.remove(key);
        }
        self.note(aged.is_some_and(|aged| aged != Aged::Unchanged));
        let cached = Entry::cached(self.entries.get(key), now);
        self.counts.record(cached != Cached::Missing);
        cached
    }

    /// Hits and misses of [`LookupCache::consult`] so far.
    pub(crate) fn counts(&self) -> CacheCounts {
        self.counts
    }

    /// A number that moves on whenever what [`LookupCache::get`] returns as
    /// values may have changed under some key (a lookup started, answered or
    /// given up on, a value forgotten or aged out): while it stays the same,
    /// whatever was worked out from the values still holds. Whether they
    /// are fresh or stale, which moves with time alone, is not part of it.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Moves [`LookupCache::generation`] on when `changed`.
    fn note(&mut self, changed: bool) {
        self.generation += u64::from(changed);
    }

    /// What is known about `key` at `now`.
    pub(crate) fn get(&self, now: Instant, key: &RecordKey) -> Cached<'_> {
        Entry::cached(self.entries.get(key), now)
    }

    /// Notes that a lookup of `key` went out at `now`; the values known, if
    /// any, stay in use until it ends.
    pub(crate) fn started(&mut self, now: Instant, key: RecordKey) {
        self.note(true);
        let deadline = now + self.lookup_timeout;
        match self.entries.get_mut(&key) {
            Some(Entry::Known(known)) if !known.found.is_empty() => {
                if let Some(old) = known.refreshing.replace(deadline) {
                    self.deadlines.remove(&(old, key));
                }
            }
            _ => {
                let pending = Entry::Pending {
                    deadline,
                    unanswered: 0,
                };
                self.entries.insert(key, pending);
            }
        }
        self.deadlines.insert((deadline, key), ());
    }

    /// Stores a lookup's results: they join what was known (a value found
    /// again is used for [`STALE_TTLS`] TTLs from `now`; one whose time is
    /// over and that an answered lookup did not find goes), due again after
    /// the TTL of how it was `answered` ([`Answered::ttl`]). A lookup no
    /// node answered, of a key nothing is known under, is to be made again
    /// instead ([`Filled::LookAgain`], [`UNANSWERED_RETRIES`] times in a row).
    pub(crate) fn fill(
        &mut self,
        now: Instant,
        key: RecordKey,
        found: Vec<Found>,
        answered: Answered,
    ) -> Filled {
        self.note(true);
        let due = now + answered.ttl(self.ttl);
        let until = now + self.ttl * STALE_TTLS;
        match self.entries.get_mut(&key) {
            Some(Entry::Pending {
                deadline,
                unanswered,
            }) => {
                self.deadlines.remove(&(*deadline, key));
                if answered == Answered::Nobody && *unanswered < UNANSWERED_RETRIES {
                    *unanswered += 1;
                    *deadline = now + self.lookup_timeout;
                    self.deadlines.insert((*deadline, key), ());
                    return Filled::LookAgain;
                }
                let known = Known::new(found, due, until);
                self.entries.insert(key, Entry::Known(known));
            }
            Some(Entry::Known(known)) => {
                let Some(deadline) = known.refreshing.take() else {
                    return Filled::Unasked;
                };
                self.deadlines.remove(&(deadline, key));
                known.merge(found, until);
                if answered != Answered::Nobody {
                    known.retain(|_, until| now < until);
                }
                known.due = due;
            }
            None => return Filled::Unasked,
        }
        Filled::Stored
    }

    /// Forgets `provider` under `key` (it failed), so the next caller does not
    /// pick it before the entry is looked up again.
    pub(crate) fn forget(&mut self, key: &RecordKey, provider: &NodeId) {
        if let Some(Entry::Known(known)) = self.entries.get_mut(key) {
            let forgotten = known.retain(|f, _| f.provider != *provider);
            known.emptied = known.found.is_empty();
            self.note(forgotten);
        }
    }

    /// Drops the entry of `key` if [`LookupCache::forget`] left it with no
    /// value, so a new use looks the key up at once (the providers may be
    /// reachable another way by then, e.g. through another relay) rather
    /// than hear of none until the entry is due. An entry whose lookup found
    /// nothing stays: no lookup per use of a name nobody serves.
    pub(crate) fn drop_emptied(&mut self, key: &RecordKey) {
        if let Some(Entry::Known(known)) = self.entries.get(key)
            && known.emptied
        {
            if let Some(deadline) = known.refreshing {
                self.deadlines.remove(&(deadline, *key));
            }
            self.entries.remove(key);
            self.note(true);
        }
    }

    /// The earliest deadline of a lookup under way.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    /// Gives up on the lookups whose deadline passed by `now` and returns
    /// their keys. A key nothing was known under counts as having found
    /// nothing (its entry is dropped); one whose values were being looked up
    /// again keeps them, due again after [`UNANSWERED_TTL`].
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<RecordKey> {
        let mut expired = Vec::new();
        while let Some(&(at, key)) = self.deadlines.keys().next() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, key));
            match self.entries.get_mut(&key) {
                Some(Entry::Known(known)) => {
                    known.refreshing = None;
                    known.due = now + UNANSWERED_TTL.min(self.ttl);
                }
                _ => {
                    self.entries.remove(&key);
                }
            }
            expired.push(key);
        }
        self.note(!expired.is_empty());
        expired
    }

    /// Drops the values whose time is over, and the entries left with none
    /// that are due again, so the map does not keep every key ever looked
    /// up.
    pub(crate) fn prune(&mut self, now: Instant) {
        let grace = self.ttl;
        let mut changed = false;
        self.entries.retain(|_, entry| {
            let aged = entry.age(now, false, grace);
            changed |= aged != Aged::Unchanged;
            aged != Aged::Gone
        });
        self.note(changed);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::id::{Realm, RecordKind};

    const S: Duration = Duration::from_secs(1);

    fn key(name: &str) -> RecordKey {
        RecordKey::new(&Realm::new("io.test").unwrap(), RecordKind::Rpc, name)
    }

    fn found(byte: u8) -> Found {
        Found {
            provider: NodeId::from_bytes([byte; 32]),
            value: Bytes::new(),
        }
    }

    /// A cache (TTL 10 s, lookups time out after 2 s) holding `values`
    /// from a full answer at `t0`.
    fn filled(t0: Instant, k: RecordKey, values: Vec<Found>) -> LookupCache {
        let mut cache = LookupCache::new(10 * S, 2 * S);
        cache.started(t0, k);
        assert_eq!(cache.fill(t0, k, values, Answered::Fully), Filled::Stored);
        cache
    }

    #[test]
    fn lookups_are_cached_for_the_ttl_and_time_out() {
        let t0 = crate::test_epoch();
        let mut cache = LookupCache::new(10 * S, 2 * S);
        let k = key("k");
        assert_eq!(cache.get(t0, &k), Cached::Missing);
        assert_eq!(
            cache.fill(t0, k, vec![found(1)], Answered::Fully),
            Filled::Unasked,
            "nobody asked"
        );
        cache.started(t0, k);
        assert_eq!(cache.get(t0, &k), Cached::Pending);
        assert_eq!(cache.next_deadline(), Some(t0 + 2 * S));
        assert_eq!(
            cache.fill(t0 + S, k, vec![found(1), found(2)], Answered::Fully),
            Filled::Stored
        );
        assert_eq!(cache.next_deadline(), None);
        assert_eq!(cache.get(t0 + S, &k), Cached::Fresh(&[found(1), found(2)]));
        cache.forget(&k, &found(1).provider);
        assert_eq!(cache.get(t0 + S, &k), Cached::Fresh(&[found(2)]));
        assert_eq!(
            cache.get(t0 + 11 * S, &k),
            Cached::Stale(&[found(2)]),
            "due again: used while a new lookup runs"
        );
        cache.prune(t0 + 11 * S);
        assert_eq!(cache.entries.len(), 1, "stale values are kept");
        cache.prune(t0 + 21 * S);
        assert!(cache.entries.is_empty(), "two TTLs after the answer");

        let other = key("other");
        cache.started(t0, other);
        assert!(cache.expire(t0 + S).is_empty());
        assert_eq!(cache.expire(t0 + 2 * S), vec![other]);
        assert_eq!(cache.get(t0 + 2 * S, &other), Cached::Missing);
        assert_eq!(
            cache.fill(t0 + 3 * S, other, vec![], Answered::Fully),
            Filled::Unasked,
            "too late"
        );
    }

    #[test]
    fn values_due_again_are_used_while_the_new_lookup_runs() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![found(1)]);
        let due = t0 + 10 * S;
        assert_eq!(cache.consult(due, &k), Cached::Stale(&[found(1)]));
        cache.started(due, k);
        assert_eq!(cache.next_deadline(), Some(due + 2 * S));
        assert_eq!(
            cache.get(due, &k),
            Cached::Fresh(&[found(1)]),
            "no second lookup while one runs"
        );
        assert_eq!(
            cache.fill(due + S, k, vec![found(2)], Answered::Fully),
            Filled::Stored
        );
        assert_eq!(cache.next_deadline(), None);
        assert_eq!(
            cache.get(due + S, &k),
            Cached::Fresh(&[found(1), found(2)]),
            "a full answer adds what it found"
        );
        assert_eq!(cache.counts().hits, 1);
    }

    /// Issue 17's 100-node run: a full answer lacked a live subscriber's
    /// record and dropped it until the next lookup 30 s later.
    #[test]
    fn a_full_answer_that_misses_a_value_keeps_it_until_no_answer_found_it_for_two_ttls() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![found(1), found(2)]);
        let first_due = t0 + 10 * S;
        cache.started(first_due, k);
        assert_eq!(
            cache.fill(first_due, k, vec![found(1)], Answered::Fully),
            Filled::Stored
        );
        assert_eq!(
            cache.consult(first_due, &k),
            Cached::Fresh(&[found(1), found(2)]),
            "found(2) was missed once, not disproved"
        );
        let second_due = first_due + 10 * S;
        assert_eq!(
            cache.consult(second_due - S, &k),
            Cached::Fresh(&[found(1), found(2)])
        );
        assert_eq!(
            cache.consult(second_due, &k),
            Cached::Stale(&[found(1), found(2)]),
            "two TTLs after the last answer that found found(2), it is kept for \
             the lookup this use starts"
        );
        cache.started(second_due, k);
        let answer = second_due + S;
        assert_eq!(
            cache.consult(answer - Duration::from_millis(1), &k),
            Cached::Fresh(&[found(1), found(2)]),
            "and used while that lookup runs (seed 2's two lost publications)"
        );
        let mut missed = cache.clone();
        assert_eq!(
            cache.fill(answer, k, vec![found(2)], Answered::Fully),
            Filled::Stored
        );
        assert_eq!(
            missed.fill(answer, k, vec![found(1)], Answered::Fully),
            Filled::Stored
        );
        assert_eq!(
            missed.get(answer, &k),
            Cached::Fresh(&[found(1)]),
            "missed a third time: gone"
        );
        assert_eq!(
            cache.get(answer, &k),
            Cached::Fresh(&[found(1), found(2)]),
            "found again: kept"
        );
        cache.forget(&k, &found(2).provider);
        assert_eq!(
            cache.get(answer, &k),
            Cached::Fresh(&[found(1)]),
            "a value that failed its user goes at once"
        );
    }

    #[test]
    fn a_thin_or_unanswered_new_lookup_keeps_what_it_did_not_find() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![found(1), found(2)]);
        let due = t0 + 10 * S;
        cache.started(due, k);
        assert_eq!(cache.fill(due, k, vec![], Answered::Nobody), Filled::Stored);
        assert_eq!(
            cache.get(due, &k),
            Cached::Fresh(&[found(1), found(2)]),
            "nobody answered: the values stay"
        );
        assert_eq!(
            cache.get(due + UNANSWERED_TTL, &k),
            Cached::Stale(&[found(1), found(2)]),
            "due again a second later"
        );
        let later = due + UNANSWERED_TTL;
        cache.started(later, k);
        assert_eq!(
            cache.fill(later, k, vec![found(3), found(1)], Answered::Thinly),
            Filled::Stored
        );
        assert_eq!(
            cache.get(later, &k),
            Cached::Fresh(&[found(1), found(2), found(3)]),
            "a thin answer adds what it found"
        );
        assert_eq!(
            cache.get(later + THIN_TTL, &k).values(),
            Some(&[found(1), found(2), found(3)][..])
        );
        // found(2) was last answered at t0: two TTLs later it is dropped
        // unless a use starts a lookup, which then decides; found(1) and
        // found(3) were answered again at `later`.
        let mut unused = cache.clone();
        unused.prune(t0 + 20 * S);
        assert_eq!(
            unused.get(t0 + 20 * S, &k),
            Cached::Stale(&[found(1), found(3)])
        );
        assert_eq!(
            cache.consult(t0 + 20 * S, &k),
            Cached::Stale(&[found(1), found(2), found(3)])
        );
        assert_eq!(
            cache.consult(t0 + 30 * S, &k),
            Cached::Stale(&[found(1), found(3)]),
            "no lookup ended: dropped a TTL later"
        );
        assert_eq!(cache.consult(later + 30 * S, &k), Cached::Missing);
    }

    #[test]
    fn a_new_lookup_that_times_out_keeps_the_values_for_a_second() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![found(1)]);
        let due = t0 + 10 * S;
        cache.started(due, k);
        assert_eq!(cache.expire(due + 2 * S), vec![k]);
        assert_eq!(cache.next_deadline(), None);
        assert_eq!(cache.get(due + 2 * S, &k), Cached::Fresh(&[found(1)]));
        assert_eq!(
            cache.get(due + 2 * S + UNANSWERED_TTL, &k),
            Cached::Stale(&[found(1)])
        );
        assert_eq!(
            cache.fill(due + 3 * S, k, vec![], Answered::Fully),
            Filled::Unasked,
            "too late"
        );
    }

    #[test]
    fn values_that_aged_out_are_not_taken_for_an_answer_that_found_nothing() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![found(1)]);
        // A new lookup times out a second before the value ages out: due again
        // a second later, when the value is gone.
        let late = t0 + 19 * S;
        cache.started(late - 2 * S, k);
        assert_eq!(cache.expire(late), vec![k]);
        let aged = t0 + 20 * S;
        assert_eq!(
            cache.consult(aged, &k),
            Cached::Stale(&[found(1)]),
            "kept for the lookup this use starts"
        );
        let over = aged + 10 * S;
        assert_eq!(cache.consult(over, &k), Cached::Missing, "not Fresh(&[])");
        assert!(cache.entries.is_empty());

        // Aging out while a new lookup runs keeps the value until it ends.
        let mut cache = filled(t0, k, vec![found(1)]);
        cache.started(t0 + 19 * S, k);
        assert_eq!(cache.consult(aged, &k), Cached::Fresh(&[found(1)]));
        assert_eq!(
            cache.fill(aged, k, vec![found(2)], Answered::Thinly),
            Filled::Stored
        );
        assert_eq!(cache.get(aged, &k), Cached::Fresh(&[found(2)]));
        cache.prune(aged + 20 * S);
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn forgetting_every_value_mid_lookup_drops_the_entry_and_its_deadline() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![found(1)]);
        let due = t0 + 10 * S;
        cache.started(due, k);
        cache.forget(&k, &found(1).provider);
        assert_eq!(cache.get(due, &k), Cached::Pending);
        cache.drop_emptied(&k);
        assert_eq!(cache.get(due, &k), Cached::Missing);
        assert_eq!(cache.next_deadline(), None);
        assert_eq!(
            cache.fill(due, k, vec![found(1)], Answered::Fully),
            Filled::Unasked
        );
    }

    #[test]
    fn a_lookup_that_found_nothing_is_not_looked_up_again_per_use() {
        let t0 = crate::test_epoch();
        let k = key("k");
        let mut cache = filled(t0, k, vec![]);
        assert_eq!(cache.get(t0 + 9 * S, &k), Cached::Fresh(&[]));
        cache.drop_emptied(&k);
        assert_eq!(cache.get(t0 + 9 * S, &k), Cached::Fresh(&[]), "stays");
        assert_eq!(cache.get(t0 + 10 * S, &k), Cached::Missing);
        cache.prune(t0 + 10 * S);
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn a_lookup_no_node_answered_is_made_again_then_kept_for_a_second_only() {
        let t0 = crate::test_epoch();
        let mut cache = LookupCache::new(30 * S, 5 * S);
        let k = key("k");
        let nobody = |cache: &mut LookupCache, at| cache.fill(at, k, vec![], Answered::Nobody);
        assert_eq!(nobody(&mut cache, t0), Filled::Unasked, "nobody asked");
        cache.started(t0, k);
        // Nothing known: looked up again at once, the uses waiting on.
        for n in 1..=UNANSWERED_RETRIES {
            let at = t0 + n * S;
            assert_eq!(nobody(&mut cache, at), Filled::LookAgain);
            assert_eq!(cache.get(at, &k), Cached::Pending);
            assert_eq!(cache.next_deadline(), Some(at + 5 * S), "a new lookup's");
        }
        let last = t0 + 3 * S;
        assert_eq!(nobody(&mut cache, last), Filled::Stored, "then given up");
        assert_eq!(cache.next_deadline(), None, "no longer pending");
        assert_eq!(cache.get(last, &k), Cached::Fresh(&[]));
        let over = last + UNANSWERED_TTL;
        assert_eq!(cache.get(over, &k), Cached::Missing, "looked up again");
        // An answer ends the count: the next use's lookup may be made again.
        cache.prune(over);
        cache.started(over, k);
        assert_eq!(nobody(&mut cache, over), Filled::LookAgain);
        let answered = cache.fill(over, k, vec![found(1)], Answered::Thinly);
        assert_eq!(answered, Filled::Stored);
        assert_eq!(cache.get(over, &k), Cached::Fresh(&[found(1)]));

        // Values known stay in use: nothing is looked up again at once.
        let due = over + THIN_TTL;
        cache.started(due, k);
        assert_eq!(nobody(&mut cache, due), Filled::Stored);
        assert_eq!(cache.get(due, &k), Cached::Fresh(&[found(1)]));
        // A TTL shorter than a second wins.
        let mut short = LookupCache::new(S / 2, 5 * S);
        short.started(t0, k);
        for _ in 0..UNANSWERED_RETRIES {
            assert_eq!(nobody(&mut short, t0), Filled::LookAgain);
        }
        assert_eq!(nobody(&mut short, t0), Filled::Stored);
        assert_eq!(short.get(t0 + S / 2, &k), Cached::Missing);
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
        assert_eq!(Answered::of(0, 0, 3), Answered::Nobody);
        assert_eq!(Answered::of(1, 0, 0), Answered::Thinly);
        assert_eq!(Answered::of(0, 5, 0), Answered::Fully);
    }

    #[test]
    fn a_thin_lookups_values_are_due_again_after_five_seconds() {
        let t0 = crate::test_epoch();
        let mut cache = LookupCache::new(30 * S, 5 * S);
        let k = key("k");
        assert_eq!(
            cache.fill(t0, k, vec![found(1)], Answered::Thinly),
            Filled::Unasked,
            "nobody asked"
        );
        cache.started(t0, k);
        assert_eq!(
            cache.fill(t0, k, vec![found(1)], Answered::Thinly),
            Filled::Stored
        );
        assert_eq!(cache.get(t0 + 4 * S, &k), Cached::Fresh(&[found(1)]));
        assert_eq!(
            cache.get(t0 + THIN_TTL, &k),
            Cached::Stale(&[found(1)]),
            "looked up again"
        );
        // A TTL shorter than that wins.
        let mut short = LookupCache::new(2 * S, 5 * S);
        short.started(t0, k);
        assert_eq!(
            short.fill(t0, k, vec![found(1)], Answered::Thinly),
            Filled::Stored
        );
        assert_eq!(short.get(t0 + 2 * S, &k), Cached::Stale(&[found(1)]));
    }
}
