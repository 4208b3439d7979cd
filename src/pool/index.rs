//! The map from peer to slab slot: a hash table of bare slot numbers.
//!
//! Like the `lru` crate's map of node pointers, the table stores only the
//! 4-byte slot and compares keys in the entries themselves, so it stays
//! small enough to live in cache at 10,000 peers (a map holding the 32-byte
//! ids would be nine times larger). The hasher is foldhash seeded from the
//! pool's seed: deterministic for a given seed, and not the crate-wide fixed
//! seed, so a peer cannot grind ids that collide in every node's table.

use core::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

use crate::id::NodeId;

use super::entry::Entry;

/// Mixed into the pool's seed so the index hash differs from other uses of it.
const INDEX_SALT: u64 = 0x706f_6f6c_2d69_6478; // "pool-idx"

/// Hashes the id's bytes (no length prefix: ids have one length).
fn hash(hasher: &foldhash::fast::FixedState, peer: &NodeId) -> u64 {
    let mut hasher = hasher.build_hasher();
    hasher.write(peer.as_bytes());
    hasher.finish()
}

/// Peer to slot, for the occupied slots of a slab of [`Entry`].
#[derive(Debug)]
pub(crate) struct PeerIndex {
    table: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

impl PeerIndex {
    /// An empty index hashing with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            table: HashTable::new(),
            hasher: foldhash::fast::FixedState::with_seed(seed ^ INDEX_SALT),
        }
    }

    fn hash(&self, peer: &NodeId) -> u64 {
        hash(&self.hasher, peer)
    }

    /// The slot of `peer`.
    pub(crate) fn get(&self, entries: &[Entry], peer: &NodeId) -> Option<u32> {
        let hash = self.hash(peer);
        let found = self
            .table
            .find(hash, |&slot| entries[slot as usize].peer == *peer);
        found.copied()
    }

    /// Records that `entries[slot]` holds `peer`, which must not be indexed.
    pub(crate) fn insert(&mut self, entries: &[Entry], peer: &NodeId, slot: u32) {
        let hash = self.hash(peer);
        let hasher = &self.hasher;
        let rehash = |&s: &u32| self::hash(hasher, &entries[s as usize].peer);
        self.table.insert_unique(hash, slot, rehash);
    }

    /// Forgets `peer` (whose entry must still name it).
    pub(crate) fn remove(&mut self, entries: &[Entry], peer: &NodeId) {
        let hash = self.hash(peer);
        if let Ok(entry) = self
            .table
            .find_entry(hash, |&slot| entries[slot as usize].peer == *peer)
        {
            entry.remove();
        }
    }

    /// How many peers are indexed.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}
