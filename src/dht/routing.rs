//! The Kademlia routing table: k-buckets of DHT servers by XOR distance.
//!
//! Bucket `i` holds nodes at distance `[2^i, 2^(i+1))` from us, at most
//! `bucket_size` (k) of them, least recently seen first. Buckets unfold
//! lazily from the far end (a table only ever fills the ~log2 N farthest
//! buckets), so an empty table costs a few bytes. A full bucket never
//! drops a known node for a new one on sight: it keeps the newcomer aside
//! and asks the caller to ping its least recently seen entry, replacing that
//! entry only when the ping fails. Entries whose last request failed are
//! stale: never handed out, and the first to go when a bucket is full.
//! A newcomer whose network already has its share of the bucket or of the
//! table ([`Diversity`]) is refused; it takes no one's place.

use crate::id::{Distance, ID_BITS, NodeId};
use crate::scope::IpPrefix;

use super::diversity::Diversity;
use super::message::Contact;

/// One routing-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    contact: Contact,
    stale: bool,
}

/// A newcomer waiting for the ping of the bucket's least recently seen entry.
#[derive(Clone, Debug)]
struct Pending {
    candidate: Contact,
    pinged: NodeId,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    pending: Option<Pending>,
}

/// What [`RoutingTable::insert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The node is new and was added.
    Inserted,
    /// The node was known: its addresses were refreshed and it is now the
    /// most recently seen of its bucket.
    Updated,
    /// The bucket is full: the node waits while the caller pings `ping` (the
    /// least recently seen entry) and reports with [`RoutingTable::ping_result`].
    Pending {
        /// The entry to ping.
        ping: Contact,
    },
    /// The bucket is full and already waiting on a ping: the node was dropped.
    Full,
    /// The node claims our own id and was refused.
    SelfId,
    /// The node's network already holds its share of the bucket or the
    /// table ([`Diversity`]): refused.
    Crowded,
}

/// The k-bucket routing table of one node.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    local: NodeId,
    bucket_size: usize,
    /// Indexed by the number of leading zero bits of the distance (0 = the
    /// farthest half of the id space); grown on demand.
    buckets: Vec<Bucket>,
    len: usize,
    diversity: Diversity,
}

impl RoutingTable {
    /// An empty table for the node `local`, `bucket_size` (k) entries per
    /// bucket, with the default [`Diversity`].
    pub fn new(local: NodeId, bucket_size: usize) -> Self {
        Self {
            local,
            bucket_size: bucket_size.max(1),
            buckets: Vec::new(),
            len: 0,
            diversity: Diversity::default(),
        }
    }

    /// The same table with `diversity` limits.
    pub fn with_diversity(mut self, diversity: Diversity) -> Self {
        self.diversity = diversity;
        self
    }

    /// Whether `contact` may not join (or move to) its bucket because its
    /// network holds its share already; `contact` itself is not counted.
    fn crowded(&self, slot: usize, contact: &Contact) -> bool {
        let Some(group) = self.diversity.group(contact) else {
            return false;
        };
        let same = |e: &&Entry| {
            e.contact.id != contact.id && self.diversity.group(&e.contact) == Some(group)
        };
        let in_bucket =
            (self.buckets.get(slot)).map_or(0, |b| b.entries.iter().filter(same).count());
        in_bucket >= self.diversity.per_bucket
            || self.count_in_table(group, &contact.id) >= self.diversity.per_table
    }

    /// Entries of network `group` in the table, `except` left out.
    fn count_in_table(&self, group: IpPrefix, except: &NodeId) -> usize {
        (self.buckets.iter().flat_map(|b| &b.entries))
            .filter(|e| &e.contact.id != except && self.diversity.group(&e.contact) == Some(group))
            .count()
    }

    /// Our own id.
    pub fn local_id(&self) -> &NodeId {
        &self.local
    }

    /// Number of entries (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entries at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position of `id`'s bucket in `self.buckets`, `None` for our own id.
    fn slot(&self, id: &NodeId) -> Option<usize> {
        let zeros = self.local.distance(id).leading_zeros() as usize;
        (zeros < ID_BITS).then_some(zeros)
    }

    fn bucket(&self, id: &NodeId) -> Option<&Bucket> {
        self.buckets.get(self.slot(id)?)
    }

    fn bucket_mut(&mut self, id: &NodeId) -> Option<&mut Bucket> {
        let slot = self.slot(id)?;
        self.buckets.get_mut(slot)
    }

    /// The contact for `id`, if it is in the table.
    pub fn get(&self, id: &NodeId) -> Option<&Contact> {
        self.bucket(id)?
            .entries
            .iter()
            .find(|e| &e.contact.id == id)
            .map(|e| &e.contact)
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// Whether `id` is in the table and marked stale.
    pub fn is_stale(&self, id: &NodeId) -> bool {
        self.bucket(id)
            .and_then(|b| b.entries.iter().find(|e| &e.contact.id == id))
            .is_some_and(|e| e.stale)
    }

    /// Records that `contact` (a DHT server) was just seen alive: adds it,
    /// refreshes it, or, when its bucket is full, asks for a ping.
    pub fn insert(&mut self, contact: Contact) -> InsertOutcome {
        let Some(slot) = self.slot(&contact.id) else {
            return InsertOutcome::SelfId;
        };
        if self.buckets.len() <= slot {
            self.buckets.resize_with(slot + 1, Bucket::default);
        }
        if self.crowded(slot, &contact) {
            return InsertOutcome::Crowded;
        }
        let bucket_size = self.bucket_size;
        let bucket = &mut self.buckets[slot];
        if let Some(pos) = bucket
            .entries
            .iter()
            .position(|e| e.contact.id == contact.id)
        {
            bucket.entries.remove(pos);
            bucket.entries.push(Entry {
                contact,
                stale: false,
            });
            return InsertOutcome::Updated;
        }
        if bucket.entries.len() >= bucket_size {
            if let Some(pos) = bucket.entries.iter().position(|e| e.stale) {
                bucket.entries.remove(pos);
                self.len -= 1;
            } else if bucket.pending.is_some() {
                return InsertOutcome::Full;
            } else {
                let oldest = bucket.entries[0].contact.clone();
                bucket.pending = Some(Pending {
                    candidate: contact,
                    pinged: oldest.id,
                });
                return InsertOutcome::Pending { ping: oldest };
            }
        }
        bucket.entries.push(Entry {
            contact,
            stale: false,
        });
        self.len += 1;
        InsertOutcome::Inserted
    }

    /// Settles a ping asked for by [`InsertOutcome::Pending`]: an answer keeps
    /// `pinged` (now most recently seen) and drops the candidate; no answer
    /// replaces `pinged` with the candidate. Returns the id that entered the
    /// table, if any. A ping nobody waits on changes nothing.
    pub fn ping_result(&mut self, pinged: &NodeId, alive: bool) -> Option<NodeId> {
        let bucket_size = self.bucket_size;
        let slot = self.slot(pinged)?;
        let waiting = self.buckets.get(slot)?.pending.as_ref()?;
        if waiting.pinged != *pinged {
            return None;
        }
        // The candidate's network may have filled up while it waited.
        let crowded = self.crowded(slot, &waiting.candidate);
        let bucket = self.buckets.get_mut(slot)?;
        let pending = bucket.pending.take()?;
        let pos = bucket.entries.iter().position(|e| e.contact.id == *pinged);
        match (alive, pos) {
            (true, Some(pos)) => {
                let mut entry = bucket.entries.remove(pos);
                entry.stale = false;
                bucket.entries.push(entry);
                None
            }
            (false, Some(pos)) if crowded => {
                bucket.entries.remove(pos);
                self.len -= 1;
                None
            }
            (false, Some(pos)) => {
                bucket.entries.remove(pos);
                let id = pending.candidate.id;
                bucket.entries.push(Entry {
                    contact: pending.candidate,
                    stale: false,
                });
                Some(id)
            }
            // The pinged entry left in the meantime: the candidate takes
            // its free place, if nobody else took it first.
            (_, None) if bucket.entries.len() < bucket_size && !crowded => {
                let id = pending.candidate.id;
                bucket.entries.push(Entry {
                    contact: pending.candidate,
                    stale: false,
                });
                self.len += 1;
                Some(id)
            }
            (_, None) => None,
        }
    }

    /// Marks `id` stale after a failed request: it is no longer handed out
    /// and is the first to be replaced. Its next answer revives it.
    pub fn mark_stale(&mut self, id: &NodeId) {
        if let Some(entry) = self
            .bucket_mut(id)
            .and_then(|b| b.entries.iter_mut().find(|e| &e.contact.id == id))
        {
            entry.stale = true;
        }
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: &NodeId) -> bool {
        let Some(bucket) = self.bucket_mut(id) else {
            return false;
        };
        let Some(pos) = bucket.entries.iter().position(|e| &e.contact.id == id) else {
            return false;
        };
        bucket.entries.remove(pos);
        self.len -= 1;
        true
    }

    /// Indices (Kademlia numbering: bucket `i` holds distances in
    /// `[2^i, 2^(i+1))`) of the buckets that hold at least one entry,
    /// farthest first.
    pub fn occupied_buckets(&self) -> impl Iterator<Item = usize> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty())
            .map(|(zeros, _)| ID_BITS - 1 - zeros)
    }

    /// Entries in Kademlia bucket `index` (distances in `[2^index, 2^(index+1))`).
    pub fn bucket_len(&self, index: usize) -> usize {
        ID_BITS
            .checked_sub(index + 1)
            .and_then(|slot| self.buckets.get(slot))
            .map_or(0, |b| b.entries.len())
    }

    /// Every contact, stale ones included, in no particular order.
    pub fn contacts(&self) -> impl Iterator<Item = &Contact> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// The `count` live (non-stale) contacts closest to `target`, closest
    /// first, leaving out `exclude` (the node that asked).
    ///
    /// Buckets cover disjoint, contiguous ranges of distance to `target`, so
    /// they are visited closest range first and only the last bucket needed
    /// is sorted: O(k log k) whatever the table size.
    pub fn closest(&self, target: &NodeId, count: usize, exclude: Option<&NodeId>) -> Vec<Contact> {
        self.closest_where(target, count, |e| {
            !e.stale && Some(&e.contact.id) != exclude
        })
    }

    /// The `count` contacts closest to `target`, stale ones included, closest
    /// first: whom a lookup asks when no live contact is left (after a
    /// partition every entry may be stale, and only an answer revives one).
    pub fn closest_including_stale(&self, target: &NodeId, count: usize) -> Vec<Contact> {
        self.closest_where(target, count, |_| true)
    }

    /// The `count` entries closest to `target` that pass `wanted`, closest first.
    fn closest_where<'a>(
        &'a self,
        target: &NodeId,
        count: usize,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Vec<Contact> {
        let mut out: Vec<(Distance, &Contact)> = Vec::with_capacity(count);
        let wanted = |e: &&Entry| wanted(e);
        let keyed = |e: &'a Entry| (target.distance(&e.contact.id), &e.contact);
        for slot in slot_order(&self.local, target, self.buckets.len()) {
            if out.len() >= count {
                break;
            }
            let live = self.buckets[slot].entries.iter().filter(wanted);
            let room = count - out.len();
            if live.clone().count() <= room {
                out.extend(live.map(keyed));
            } else {
                let mut here: Vec<(Distance, &Contact)> = live.map(keyed).collect();
                here.sort_unstable_by_key(|(d, _)| *d);
                out.extend(here.into_iter().take(room));
            }
        }
        out.sort_unstable_by_key(|(d, _)| *d);
        out.into_iter().map(|(_, c)| c.clone()).collect()
    }
}

/// The first `slots` bucket slots (slot `z` holds distances with `z`
/// leading zero bits, Kademlia bucket `255 - z`) in increasing order of
/// their distance range to `target`.
///
/// For `x` in bucket `i`, `target ^ x` agrees with `local ^ target` above bit
/// `i` and has bit `i` flipped. So bucket `i` is closer to `target` than
/// every lower bucket exactly when bit `i` of `local ^ target` is set: first
/// the buckets of the set bits from the top, then those of the clear bits
/// from the bottom.
fn slot_order(local: &NodeId, target: &NodeId, slots: usize) -> impl Iterator<Item = usize> {
    let d = *local.distance(target).as_bytes();
    // Bit `255 - z` of `d` is bit `7 - z % 8` of byte `z / 8`.
    let set = move |z: &usize| d[z / 8] >> (7 - z % 8) & 1 == 1;
    let first = (0..slots).filter(set);
    let then = (0..slots).rev().filter(move |z| !set(z));
    first.chain(then)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn id(b: [u8; 32]) -> NodeId {
        NodeId::from_bytes(b)
    }

    fn contact(n: NodeId) -> Contact {
        Contact::new(n, "10.0.0.1:4433".parse().unwrap())
    }

    fn with_first(first: u8, last: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = first;
        b[31] = last;
        id(b)
    }

    fn at(n: NodeId, addr: &str) -> Contact {
        Contact::new(n, addr.parse().expect("test address"))
    }

    #[test]
    fn one_network_gets_two_places_per_bucket() {
        let mut t = RoutingTable::new(with_first(0, 0), 20);
        let crowd = |i: u8| at(with_first(0x80, i), &format!("203.0.113.{i}:4433"));
        assert_eq!(t.insert(crowd(1)), InsertOutcome::Inserted);
        assert_eq!(t.insert(crowd(2)), InsertOutcome::Inserted);
        assert_eq!(t.insert(crowd(3)), InsertOutcome::Crowded);
        // Known entries still refresh; other networks and local addresses
        // are not affected.
        assert_eq!(t.insert(crowd(2)), InsertOutcome::Updated);
        assert_eq!(
            t.insert(at(with_first(0x80, 4), "198.51.100.4:1")),
            InsertOutcome::Inserted
        );
        assert_eq!(
            t.insert(at(with_first(0x80, 5), "10.0.0.5:1")),
            InsertOutcome::Inserted
        );
        assert_eq!(
            t.insert(at(with_first(0x80, 6), "10.0.0.6:1")),
            InsertOutcome::Inserted
        );
        assert_eq!(
            t.insert(at(with_first(0x80, 7), "127.0.0.1:7")),
            InsertOutcome::Inserted
        );
        // A place freed is a place to take.
        assert!(t.remove(&crowd(1).id));
        assert_eq!(t.insert(crowd(3)), InsertOutcome::Inserted);
        // IPv6 networks are /48s.
        let v6 = |i: u8, addr: &str| at(with_first(0x40, i), addr);
        assert_eq!(
            t.insert(v6(1, "[2001:db8:1:1::1]:1")),
            InsertOutcome::Inserted
        );
        assert_eq!(
            t.insert(v6(2, "[2001:db8:1:2::1]:1")),
            InsertOutcome::Inserted
        );
        assert_eq!(
            t.insert(v6(3, "[2001:db8:1:3::1]:1")),
            InsertOutcome::Crowded
        );
        assert_eq!(
            t.insert(v6(4, "[2001:db8:2::1]:1")),
            InsertOutcome::Inserted
        );
    }

    #[test]
    fn one_network_gets_ten_places_in_the_table() {
        let mut t = RoutingTable::new(with_first(0, 0), 20);
        let mut inserted = 0;
        for bucket in 0..8u8 {
            for i in 0..2u8 {
                let n = with_first(0x80 >> bucket, i + 1);
                let c = at(n, &format!("203.0.113.{}:1", bucket * 2 + i));
                match t.insert(c) {
                    InsertOutcome::Inserted => inserted += 1,
                    other => assert_eq!(other, InsertOutcome::Crowded),
                }
            }
        }
        assert_eq!(inserted, 10);
        assert_eq!(t.len(), 10);
        let unlimited =
            RoutingTable::new(with_first(0, 0), 20).with_diversity(Diversity::UNLIMITED);
        let mut u = unlimited;
        for i in 1..=5 {
            let c = at(with_first(0x80, i), &format!("203.0.113.{i}:1"));
            assert_eq!(u.insert(c), InsertOutcome::Inserted);
        }
    }

    #[test]
    fn a_waiting_newcomer_of_a_crowded_network_does_not_get_in() {
        let mut t = RoutingTable::new(with_first(0, 0), 2);
        let (a, b) = (
            at(with_first(0x80, 1), "10.0.0.1:1"),
            at(with_first(0x80, 2), "10.0.0.2:1"),
        );
        t.insert(a.clone());
        t.insert(b);
        let c = at(with_first(0x80, 3), "203.0.113.3:1");
        assert_eq!(
            t.insert(c.clone()),
            InsertOutcome::Pending { ping: a.clone() }
        );
        // While c waits, its network fills its share elsewhere in the table.
        let diversity = Diversity {
            per_table: 1,
            ..Diversity::default()
        };
        let mut t = t.with_diversity(diversity);
        assert_eq!(
            t.insert(at(with_first(0x40, 1), "203.0.113.9:1")),
            InsertOutcome::Inserted
        );
        // a does not answer: it goes, and c does not take its place.
        assert_eq!(t.ping_result(&a.id, false), None);
        assert!(!t.contains(&a.id) && !t.contains(&c.id));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn own_id_is_refused() {
        let local = with_first(0, 0);
        let mut t = RoutingTable::new(local, 2);
        assert_eq!(t.insert(contact(local)), InsertOutcome::SelfId);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_bucket_pings_its_oldest_and_replaces_it_only_if_the_ping_fails() {
        let mut t = RoutingTable::new(with_first(0, 0), 2);
        let (a, b, c, d) = (
            with_first(0x80, 1),
            with_first(0x80, 2),
            with_first(0x80, 3),
            with_first(0x80, 4),
        );
        assert_eq!(t.insert(contact(a)), InsertOutcome::Inserted);
        assert_eq!(t.insert(contact(b)), InsertOutcome::Inserted);
        assert_eq!(
            t.insert(contact(c)),
            InsertOutcome::Pending { ping: contact(a) }
        );
        assert_eq!(t.insert(contact(d)), InsertOutcome::Full);
        // a answers: it stays, c is dropped, and b is now the oldest.
        assert_eq!(t.ping_result(&a, true), None);
        assert!(t.contains(&a) && !t.contains(&c));
        assert_eq!(
            t.insert(contact(c)),
            InsertOutcome::Pending { ping: contact(b) }
        );
        // b does not answer: c replaces it.
        assert_eq!(t.ping_result(&b, false), Some(c));
        assert!(!t.contains(&b) && t.contains(&c));
        assert_eq!(t.len(), 2);
        // A ping nobody waits on changes nothing.
        assert_eq!(t.ping_result(&a, false), None);
        assert!(t.contains(&a));
    }

    #[test]
    fn stale_entries_are_not_handed_out_and_are_replaced_first() {
        let mut t = RoutingTable::new(with_first(0, 0), 2);
        let (a, b, c) = (
            with_first(0x80, 1),
            with_first(0x80, 2),
            with_first(0x80, 3),
        );
        t.insert(contact(a));
        t.insert(contact(b));
        t.mark_stale(&b);
        assert!(t.is_stale(&b));
        assert_eq!(t.closest(&a, 5, None), vec![contact(a)]);
        assert_eq!(t.insert(contact(c)), InsertOutcome::Inserted);
        assert!(!t.contains(&b));
        t.mark_stale(&a);
        assert_eq!(t.insert(contact(a)), InsertOutcome::Updated);
        assert!(!t.is_stale(&a));
    }

    #[test]
    fn closest_leaves_out_the_excluded_node() {
        let mut t = RoutingTable::new(with_first(0, 0), 20);
        let (a, b) = (with_first(0x80, 1), with_first(0x40, 1));
        t.insert(contact(a));
        t.insert(contact(b));
        assert_eq!(t.closest(&a, 5, Some(&a)), vec![contact(b)]);
        assert_eq!(t.occupied_buckets().collect::<Vec<_>>(), vec![255, 254]);
    }

    /// A deliberately naive table: one list per bucket index, the same
    /// rules written as directly as possible.
    #[derive(Default)]
    struct Model {
        buckets: BTreeMap<usize, Vec<(NodeId, bool)>>,
        pending: BTreeMap<usize, (NodeId, NodeId)>,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8),
        Stale(u8),
        Remove(u8),
        Ping(u8, bool),
    }

    /// Ids that crowd into few buckets so they fill up.
    fn small_id(n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = 0x80 | (n & 0x60);
        b[31] = n;
        id(b)
    }

    proptest! {
        #[test]
        fn table_matches_the_naive_model(ops in proptest::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(Op::Insert),
                any::<u8>().prop_map(Op::Stale),
                any::<u8>().prop_map(Op::Remove),
                (any::<u8>(), any::<bool>()).prop_map(|(n, a)| Op::Ping(n, a)),
            ], 0..200), target in any::<[u8; 32]>()) {
            let local = NodeId::from_bytes([0; 32]);
            let k = 4;
            let mut table = RoutingTable::new(local, k);
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Insert(n) => {
                        let n = small_id(n);
                        let i = local.bucket_index(&n).unwrap();
                        let bucket = model.buckets.entry(i).or_default();
                        let got = table.insert(contact(n));
                        if let Some(pos) = bucket.iter().position(|e| e.0 == n) {
                            bucket.remove(pos);
                            bucket.push((n, false));
                            prop_assert_eq!(got, InsertOutcome::Updated);
                        } else if bucket.len() < k {
                            bucket.push((n, false));
                            prop_assert_eq!(got, InsertOutcome::Inserted);
                        } else if let Some(pos) = bucket.iter().position(|e| e.1) {
                            bucket.remove(pos);
                            bucket.push((n, false));
                            prop_assert_eq!(got, InsertOutcome::Inserted);
                        } else if let std::collections::btree_map::Entry::Vacant(slot) = model.pending.entry(i) {
                            slot.insert((n, bucket[0].0));
                            prop_assert_eq!(got, InsertOutcome::Pending { ping: contact(bucket[0].0) });
                        } else {
                            prop_assert_eq!(got, InsertOutcome::Full);
                        }
                    }
                    Op::Stale(n) => {
                        let n = small_id(n);
                        table.mark_stale(&n);
                        for b in model.buckets.values_mut() {
                            b.iter_mut().filter(|e| e.0 == n).for_each(|e| e.1 = true);
                        }
                    }
                    Op::Remove(n) => {
                        let n = small_id(n);
                        let was = model.buckets.values_mut().any(|b| {
                            let before = b.len();
                            b.retain(|e| e.0 != n);
                            b.len() != before
                        });
                        prop_assert_eq!(table.remove(&n), was);
                    }
                    Op::Ping(n, alive) => {
                        let n = small_id(n);
                        let i = local.bucket_index(&n).unwrap();
                        let expected = match model.pending.get(&i) {
                            Some(&(cand, pinged)) if pinged == n => {
                                model.pending.remove(&i);
                                let bucket = model.buckets.entry(i).or_default();
                                let pos = bucket.iter().position(|e| e.0 == n);
                                if let Some(pos) = pos {
                                    bucket.remove(pos);
                                }
                                if alive && pos.is_some() {
                                    bucket.push((n, false));
                                    None
                                } else if bucket.len() >= k {
                                    None
                                } else {
                                    bucket.push((cand, false));
                                    Some(cand)
                                }
                            }
                            _ => None,
                        };
                        prop_assert_eq!(table.ping_result(&n, alive), expected);
                    }
                }
                let total: usize = model.buckets.values().map(Vec::len).sum();
                prop_assert_eq!(table.len(), total);
            }
            // Same contents, same least-recently-seen order.
            for (&i, bucket) in &model.buckets {
                let slot = ID_BITS - 1 - i;
                let got: Vec<(NodeId, bool)> = table.buckets.get(slot).map(|b| {
                    b.entries.iter().map(|e| (e.contact.id, e.stale)).collect()
                }).unwrap_or_default();
                prop_assert_eq!(&got, bucket);
            }
            // closest() equals sorting every live entry.
            let target = NodeId::from_bytes(target);
            for count in [1, 3, 20] {
                let mut all: Vec<NodeId> = model.buckets.values().flatten()
                    .filter(|e| !e.1).map(|e| e.0).collect();
                all.sort_by_key(|n| target.distance(n));
                all.truncate(count);
                let got: Vec<NodeId> = table.closest(&target, count, None).into_iter().map(|c| c.id).collect();
                prop_assert_eq!(got, all);
            }
        }

        #[test]
        fn closest_equals_sorting_everything(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..300),
                                             local in any::<[u8; 32]>(),
                                             target in any::<[u8; 32]>(),
                                             count in 0usize..40) {
            let local = NodeId::from_bytes(local);
            let mut table = RoutingTable::new(local, 1000);
            let mut all = Vec::new();
            for b in ids {
                let n = NodeId::from_bytes(b);
                if n != local && !all.contains(&n) {
                    all.push(n);
                }
                table.insert(contact(n));
            }
            // Targets at our own id and at a table member are edge cases too.
            for target in [NodeId::from_bytes(target), local, all.first().copied().unwrap_or(local)] {
                let mut expected = all.clone();
                expected.sort_by_key(|n| target.distance(n));
                expected.truncate(count);
                let got: Vec<NodeId> = table.closest(&target, count, None).into_iter().map(|c| c.id).collect();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
