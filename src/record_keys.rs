//! The DHT keys of one realm's names of one kind, remembered.
//!
//! A key is a SHA-256 ([`RecordKey::new`]); a publication needs the key of
//! every prefix of its topic, at the publisher and again at each subscriber,
//! which cost more than the rest of a small publication's handling. The memo
//! answers a name it has seen from memory. Names may come off the wire (a
//! publication's topic), so it holds at most [`RecordKeys::CAPACITY`] of
//! them and starts over when full: a flood of new names costs what hashing
//! them costs, and no memory.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::collections::HashMap;
use crate::id::{Realm, RecordKey, RecordKind};

/// The keys of `kind` names in one realm, memoised (module docs).
#[derive(Debug)]
pub(crate) struct RecordKeys {
    realm: Realm,
    kind: RecordKind,
    /// Behind a lock only because machines are `Sync` (a driver may share
    /// one across threads); it is never contended.
    memo: Mutex<HashMap<String, RecordKey>>,
}

impl RecordKeys {
    /// Names held at most; the memo is emptied when one more comes.
    pub(crate) const CAPACITY: usize = 1024;

    /// An empty memo of `kind` keys in `realm`.
    pub(crate) fn new(realm: Realm, kind: RecordKind) -> Self {
        Self {
            realm,
            kind,
            memo: Mutex::default(),
        }
    }

    /// The key of `name`: [`RecordKey::new`] of the realm, the kind and it.
    pub(crate) fn key(&self, name: &str) -> RecordKey {
        let mut memo = self.memo();
        if let Some(key) = memo.get(name) {
            return *key;
        }
        if memo.len() >= Self::CAPACITY {
            memo.clear();
        }
        let key = RecordKey::new(&self.realm, self.kind, name);
        memo.insert(name.to_owned(), key);
        key
    }

    fn memo(&self) -> MutexGuard<'_, HashMap<String, RecordKey>> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Names held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.memo().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> Realm {
        Realm::new("io.macula.test").unwrap()
    }

    fn keys() -> RecordKeys {
        RecordKeys::new(realm(), RecordKind::Topic)
    }

    #[test]
    fn a_remembered_key_is_the_hashed_one() {
        let memo = keys();
        let realm = realm();
        for _ in 0..2 {
            let key = memo.key("sensors.temp");
            assert_eq!(
                key,
                RecordKey::new(&realm, RecordKind::Topic, "sensors.temp")
            );
        }
        assert_ne!(memo.key(""), memo.key("sensors"));
        assert_eq!(memo.held(), 3);
    }

    #[test]
    fn a_flood_of_names_never_holds_more_than_the_capacity() {
        let memo = keys();
        let realm = realm();
        for n in 0..RecordKeys::CAPACITY * 3 + 7 {
            let name = format!("flood.{n}");
            assert_eq!(
                memo.key(&name),
                RecordKey::new(&realm, RecordKind::Topic, &name)
            );
            assert!(memo.held() <= RecordKeys::CAPACITY);
        }
        assert_eq!(memo.held(), 7, "started over three times, then 7 more");
    }
}
