//! The node's own subscriptions, by the DHT key of their literal prefix,
//! and which topics they want.
//!
//! Every PUBLISH that arrives asks whether a topic is wanted, twice (when
//! it arrives and when it is handed on in order), and the answer costs a
//! topic validation and a key per prefix. The answers are remembered by the
//! topic's text until the subscriptions change; the texts come off the wire,
//! so at most [`WANTED_CAPACITY`] are held and the memo starts over when
//! full: a flood of new topics costs what answering them costs, and no
//! memory.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::record::encode_subscriber_value;
use crate::collections::HashMap;
use crate::id::{Realm, RecordKey, RecordKind};
use crate::record_keys::RecordKeys;
use crate::topic::{Pattern, Topic};

/// Topic texts whose answer [`Subscriptions::wanted`] holds at most.
pub(super) const WANTED_CAPACITY: usize = 1024;

/// The local subscriptions (module docs).
#[derive(Debug)]
pub(super) struct Subscriptions {
    keys: RecordKeys,
    by_key: BTreeMap<RecordKey, BTreeSet<Pattern>>,
    /// Moves on at every change of the patterns.
    generation: u64,
    /// Topic texts that arrived, and the topic when one of our patterns
    /// matches it (`None`: invalid, or no pattern matches).
    wanted: HashMap<Box<str>, Option<Topic>>,
}

impl Subscriptions {
    /// No subscriptions, in `realm`.
    pub(super) fn new(realm: Realm) -> Self {
        Self {
            keys: RecordKeys::new(realm, RecordKind::Topic),
            by_key: BTreeMap::new(),
            generation: 0,
            wanted: HashMap::default(),
        }
    }

    /// The DHT key of a topic prefix.
    pub(super) fn key(&self, prefix: &str) -> RecordKey {
        self.keys.key(prefix)
    }

    /// True when there is at least one subscription.
    pub(super) fn any(&self) -> bool {
        !self.by_key.is_empty()
    }

    /// How many patterns there are.
    pub(super) fn count(&self) -> usize {
        self.by_key.values().map(BTreeSet::len).sum()
    }

    /// The patterns under `key`.
    pub(super) fn under(&self, key: &RecordKey) -> Option<&BTreeSet<Pattern>> {
        self.by_key.get(key)
    }

    /// A number that moves on whenever the patterns change.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds `pattern` under `key`; false when it was there already.
    pub(super) fn insert(&mut self, key: RecordKey, pattern: Pattern) -> bool {
        let added = self.by_key.entry(key).or_default().insert(pattern);
        self.changed(added);
        added
    }

    /// Removes `pattern` from under `key`; false when it was not there.
    pub(super) fn remove(&mut self, key: &RecordKey, pattern: &Pattern) -> bool {
        let Some(patterns) = self.by_key.get_mut(key) else {
            return false;
        };
        let removed = patterns.remove(pattern);
        if patterns.is_empty() {
            self.by_key.remove(key);
        }
        self.changed(removed);
        removed
    }

    fn changed(&mut self, changed: bool) {
        if changed {
            self.generation += 1;
            self.wanted.clear();
        }
    }

    /// Our record value under `key`: every pattern we subscribe to there
    /// ([`encode_subscriber_value`]).
    pub(super) fn record_value(&self, key: &RecordKey) -> Option<Bytes> {
        self.by_key.get(key).map(encode_subscriber_value)
    }

    /// True when one of our patterns matches `topic`.
    pub(super) fn want(&self, topic: &Topic) -> bool {
        topic.prefixes().any(|prefix| {
            self.by_key
                .get(&self.key(prefix))
                .is_some_and(|patterns| patterns.iter().any(|p| p.matches(topic)))
        })
    }

    /// `text` as a topic if it is one and one of our patterns matches it
    /// (remembered: module docs).
    pub(super) fn wanted(&mut self, text: &str) -> Option<Topic> {
        if let Some(answer) = self.wanted.get(text) {
            return answer.clone();
        }
        let answer = Topic::new(text).ok().filter(|topic| self.want(topic));
        if self.wanted.len() >= WANTED_CAPACITY {
            self.wanted.clear();
        }
        self.wanted.insert(text.into(), answer.clone());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriptions(patterns: &[&str]) -> Subscriptions {
        let mut subscriptions = Subscriptions::new(Realm::new("io.macula.test").unwrap());
        for text in patterns {
            let pattern = Pattern::new(text).unwrap();
            let key = subscriptions.key(pattern.literal_prefix());
            assert!(subscriptions.insert(key, pattern));
        }
        subscriptions
    }

    #[test]
    fn a_remembered_answer_follows_the_subscriptions() {
        let mut subscriptions = subscriptions(&["sensors.*.temp"]);
        let topic = Topic::new("sensors.kitchen.temp").unwrap();
        assert_eq!(subscriptions.wanted("sensors.kitchen.temp"), Some(topic));
        assert_eq!(subscriptions.wanted("sensors.kitchen.hum"), None);
        assert_eq!(subscriptions.wanted("sensors..temp"), None, "not a topic");
        assert_eq!(subscriptions.wanted("sensors.*.temp"), None, "a pattern");
        let generation = subscriptions.generation();
        let hum = Pattern::new("sensors.*.hum").unwrap();
        let key = subscriptions.key(hum.literal_prefix());
        assert!(subscriptions.insert(key, hum.clone()));
        assert!(!subscriptions.insert(key, hum.clone()), "there already");
        assert_eq!(subscriptions.generation(), generation + 1);
        assert!(
            subscriptions.wanted("sensors.kitchen.hum").is_some(),
            "a new pattern is heard at once"
        );
        assert!(subscriptions.remove(&key, &hum));
        assert!(!subscriptions.remove(&key, &hum), "gone already");
        assert_eq!(subscriptions.generation(), generation + 2);
        assert_eq!(subscriptions.wanted("sensors.kitchen.hum"), None);
        assert_eq!(subscriptions.count(), 1);
    }

    #[test]
    fn a_flood_of_topics_never_holds_more_than_the_capacity() {
        let mut subscriptions = subscriptions(&["flood.#"]);
        for n in 0..WANTED_CAPACITY * 2 + 5 {
            let text = format!("flood.{n}");
            assert!(subscriptions.wanted(&text).is_some());
            assert!(subscriptions.wanted.len() <= WANTED_CAPACITY);
        }
        assert_eq!(subscriptions.wanted.len(), 5, "started over twice");
    }
}
