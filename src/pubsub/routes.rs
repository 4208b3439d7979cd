//! Where recent publications' topics went, remembered.
//!
//! Routing a publication takes the DHT key of every prefix of its topic,
//! and, for each, the subscriber records found under it, whose patterns are
//! parsed and matched against the topic; then the direct subscriptions and
//! our own. A publisher publishes on few topics, many times each, and the
//! answer changes only when what it was worked out from does: the lookup
//! cache's values, the direct subscriptions, our subscriptions. So the keys
//! of a topic are kept, and its route with a [`Stamp`] of those three; a
//! route whose stamp is not the current one is worked out again. At most
//! [`ROUTES_CAPACITY`] topics are held; the memo starts over when full.

use std::sync::Arc;

use crate::collections::HashMap;
use crate::id::{NodeId, RecordKey};
use crate::topic::Topic;

/// Topics held at most.
pub(super) const ROUTES_CAPACITY: usize = 1024;

/// The generations of what a route is worked out from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    /// [`LookupCache::generation`](crate::directory::LookupCache::generation).
    pub(super) cache: u64,
    /// [`Direct::generation`](super::direct::Direct::generation).
    pub(super) direct: u64,
    /// [`Subscriptions::generation`](super::subscriptions::Subscriptions::generation).
    pub(super) subscriptions: u64,
}

/// Where publications on one topic go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Route {
    /// Other nodes subscribed, in id order (shared: a route is handed out
    /// for every publication).
    pub(super) subscribers: Arc<[NodeId]>,
    /// Whether one of our own patterns matches.
    pub(super) local: bool,
}

/// One topic's keys and its last route.
#[derive(Debug)]
struct Entry {
    keys: Vec<RecordKey>,
    route: Option<(Stamp, Route)>,
}

/// The memo (module docs).
#[derive(Debug, Default)]
pub(super) struct Routes {
    by_topic: HashMap<Topic, Entry>,
}

impl Routes {
    /// The DHT keys of `topic`'s prefixes, shortest first (`key` makes one).
    pub(super) fn keys(&mut self, topic: &Topic, key: impl Fn(&str) -> RecordKey) -> &[RecordKey] {
        &self.entry(topic, key).keys
    }

    /// `topic`'s route as of `stamp`: the one remembered if it was worked
    /// out at that stamp, otherwise `work_out` of its keys' (remembered).
    pub(super) fn route(
        &mut self,
        topic: &Topic,
        stamp: Stamp,
        key: impl Fn(&str) -> RecordKey,
        work_out: impl FnOnce(&[RecordKey]) -> Route,
    ) -> &Route {
        let Entry { keys, route } = self.entry(topic, key);
        let (_, route) = match route.take() {
            Some((at, known)) if at == stamp => route.insert((at, known)),
            _ => route.insert((stamp, work_out(keys))),
        };
        route
    }

    fn entry(&mut self, topic: &Topic, key: impl Fn(&str) -> RecordKey) -> &mut Entry {
        if self.by_topic.len() >= ROUTES_CAPACITY && !self.by_topic.contains_key(topic) {
            self.by_topic.clear();
        }
        self.by_topic.entry(topic.clone()).or_insert_with(|| Entry {
            keys: topic.prefixes().map(key).collect(),
            route: None,
        })
    }

    /// Topics held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.by_topic.len()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::id::{Realm, RecordKind};

    fn key(prefix: &str) -> RecordKey {
        RecordKey::new(
            &Realm::new("io.macula.test").unwrap(),
            RecordKind::Topic,
            prefix,
        )
    }

    fn stamp(cache: u64) -> Stamp {
        Stamp {
            cache,
            direct: 0,
            subscriptions: 0,
        }
    }

    #[test]
    fn a_route_is_worked_out_again_only_when_its_stamp_moves() {
        let mut routes = Routes::default();
        let topic = Topic::new("a.b").unwrap();
        assert_eq!(routes.keys(&topic, key), [key(""), key("a"), key("a.b")]);
        let worked = Cell::new(0);
        let route_at = |routes: &mut Routes, at: Stamp| {
            routes
                .route(&topic, at, key, |keys| {
                    assert_eq!(keys.len(), 3);
                    worked.set(worked.get() + 1);
                    Route {
                        subscribers: [NodeId::from_bytes([worked.get(); 32])].into(),
                        local: false,
                    }
                })
                .clone()
        };
        let first = route_at(&mut routes, stamp(1));
        assert_eq!(route_at(&mut routes, stamp(1)), first);
        assert_eq!(worked.get(), 1, "the same stamp: remembered");
        let changed = Stamp {
            direct: 1,
            ..stamp(1)
        };
        assert_ne!(route_at(&mut routes, changed), first);
        assert_eq!(worked.get(), 2, "a new stamp: worked out again");
    }

    #[test]
    fn many_topics_never_hold_more_than_the_capacity() {
        let mut routes = Routes::default();
        for n in 0..ROUTES_CAPACITY * 2 + 3 {
            let topic = Topic::new(&format!("t.{n}")).unwrap();
            assert_eq!(routes.keys(&topic, key).len(), 3);
            assert!(routes.held() <= ROUTES_CAPACITY);
        }
        assert_eq!(routes.held(), 3, "started over twice");
    }
}
