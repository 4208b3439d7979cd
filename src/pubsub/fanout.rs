//! Local subscribers of a node and the subscription each pattern keeps on
//! the wire: several subscribers of one pattern share one subscription
//! (one subscriber record), made by the first and withdrawn when the last
//! goes. A publication is handed to every local subscriber whose pattern
//! matches its topic.

use std::collections::BTreeMap;

use crate::topic::{Pattern, Topic};

/// One local subscriber of a node; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(pub u64);

/// What [`Fanout::remove`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The subscriber's pattern.
    pub pattern: Pattern,
    /// It was the pattern's last subscriber: withdraw the subscription.
    pub last: bool,
}

/// Local subscribers by id, and how many hold each pattern.
#[derive(Clone, Debug, Default)]
pub struct Fanout {
    next_id: u64,
    subscribers: BTreeMap<SubscriberId, Pattern>,
    /// Subscribers per pattern (no entry at zero).
    holders: BTreeMap<Pattern, usize>,
}

impl Fanout {
    /// No subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribers holding `pattern` now; 0 means the pattern has no
    /// subscription on the wire.
    pub fn holders(&self, pattern: &Pattern) -> usize {
        self.holders.get(pattern).copied().unwrap_or(0)
    }

    /// Local subscribers in all.
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// True when there is no local subscriber.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Adds a subscriber of `pattern` (subscribe on the wire first when
    /// [`Fanout::holders`] is 0).
    pub fn add(&mut self, pattern: Pattern) -> SubscriberId {
        let id = SubscriberId(self.next_id);
        self.next_id += 1;
        *self.holders.entry(pattern.clone()).or_default() += 1;
        self.subscribers.insert(id, pattern);
        id
    }

    /// Removes subscriber `id`; `None` when there is no such subscriber.
    pub fn remove(&mut self, id: SubscriberId) -> Option<Removed> {
        let pattern = self.subscribers.remove(&id)?;
        let count = self.holders.entry(pattern.clone()).or_default();
        *count = count.saturating_sub(1);
        let last = *count == 0;
        if last {
            self.holders.remove(&pattern);
        }
        Some(Removed { pattern, last })
    }

    /// The pattern of subscriber `id`.
    pub fn pattern(&self, id: SubscriberId) -> Option<&Pattern> {
        self.subscribers.get(&id)
    }

    /// Every local subscriber whose pattern matches `topic`, oldest first.
    pub fn matching<'a>(&'a self, topic: &'a Topic) -> impl Iterator<Item = SubscriberId> + 'a {
        self.subscribers
            .iter()
            .filter(|(_, pattern)| pattern.matches(topic))
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    #[test]
    fn subscribers_of_one_pattern_share_it_until_the_last_goes() {
        let mut fanout = Fanout::new();
        let news = pattern("news.*");
        let first = fanout.add(news.clone());
        let second = fanout.add(news.clone());
        assert_ne!(first, second);
        assert_eq!(fanout.holders(&news), 2);
        let removed = fanout.remove(first).unwrap();
        assert_eq!(removed.pattern, news);
        assert!(!removed.last, "one subscriber still holds it");
        assert_eq!(fanout.holders(&news), 1);
        assert!(fanout.remove(second).unwrap().last);
        assert_eq!(fanout.holders(&news), 0);
        assert!(fanout.is_empty());
        assert_eq!(fanout.remove(second), None, "removed once only");
    }

    #[test]
    fn a_topic_reaches_every_matching_subscriber_and_no_other() {
        let mut fanout = Fanout::new();
        let one = fanout.add(pattern("news.*"));
        let two = fanout.add(pattern("news.*"));
        let all = fanout.add(pattern("#"));
        let _alerts = fanout.add(pattern("alerts.#"));
        let topic = Topic::new("news.today").unwrap();
        let got: Vec<_> = fanout.matching(&topic).collect();
        assert_eq!(got, [one, two, all]);
        assert_eq!(fanout.len(), 4);
        assert_eq!(fanout.pattern(all), Some(&pattern("#")));
    }
}
