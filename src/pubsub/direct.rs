//! Subscriptions made directly on this node with SUBSCRIBE, beside the ones
//! found in the DHT: a peer that already knows a publisher asks it for
//! PUBLISH frames without waiting for the publisher's next lookup. They last
//! until UNSUBSCRIBE or until the peer disconnects, and there are at most a
//! bounded number of them, of each peer and in all (node ids are free: one
//! peer must not take every place).

use std::collections::{BTreeMap, BTreeSet};

use crate::id::NodeId;
use crate::topic::{Pattern, Topic};

/// Why a SUBSCRIBE was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The table holds its bound already.
    Full(usize),
    /// The peer holds its share already.
    PeerFull(usize),
}

/// Direct subscriptions by peer.
#[derive(Clone, Debug)]
pub(crate) struct Direct {
    max: usize,
    per_peer: usize,
    count: usize,
    by_peer: BTreeMap<NodeId, BTreeSet<Pattern>>,
    /// Moves on at every change of the table.
    generation: u64,
}

impl Direct {
    /// An empty table of at most `max` subscriptions, `per_peer` of each peer.
    pub(crate) fn new(max: usize, per_peer: usize) -> Self {
        Self {
            max,
            per_peer,
            count: 0,
            by_peer: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Adds `peer`'s subscription to `pattern` (already there: nothing to do).
    pub(crate) fn insert(&mut self, peer: NodeId, pattern: Pattern) -> Result<(), Refusal> {
        let patterns = self.by_peer.entry(peer).or_default();
        if patterns.contains(&pattern) {
            return Ok(());
        }
        let refusal = if self.count >= self.max {
            Some(Refusal::Full(self.max))
        } else if patterns.len() >= self.per_peer {
            Some(Refusal::PeerFull(self.per_peer))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if patterns.is_empty() {
                self.by_peer.remove(&peer);
            }
            return Err(refusal);
        }
        patterns.insert(pattern);
        self.count += 1;
        self.generation += 1;
        Ok(())
    }

    /// Removes one subscription of `peer`.
    pub(crate) fn remove(&mut self, peer: &NodeId, pattern: &Pattern) {
        let Some(patterns) = self.by_peer.get_mut(peer) else {
            return;
        };
        if patterns.remove(pattern) {
            self.count -= 1;
            self.generation += 1;
        }
        if patterns.is_empty() {
            self.by_peer.remove(peer);
        }
    }

    /// Removes every subscription of `peer`.
    pub(crate) fn remove_peer(&mut self, peer: &NodeId) {
        if let Some(patterns) = self.by_peer.remove(peer) {
            self.count -= patterns.len();
            self.generation += 1;
        }
    }

    /// A number that moves on whenever a subscription is added or removed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The peers with a subscription matching `topic`.
    pub(crate) fn matching<'a>(&'a self, topic: &'a Topic) -> impl Iterator<Item = NodeId> + 'a {
        self.by_peer
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|p| p.matches(topic)))
            .map(|(peer, _)| *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_node_and_removed_with_the_peer() {
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let p = |s| Pattern::new(s).unwrap();
        let mut direct = Direct::new(2, 8);
        direct.insert(a, p("x.*")).unwrap();
        direct.insert(a, p("x.*")).unwrap();
        direct.insert(b, p("#")).unwrap();
        assert_eq!(direct.insert(b, p("y")), Err(Refusal::Full(2)));
        let topic = Topic::new("x.y").unwrap();
        assert_eq!(direct.matching(&topic).collect::<Vec<_>>(), [a, b]);
        direct.remove(&a, &p("x.*"));
        direct.remove(&a, &p("x.*"));
        assert_eq!(direct.matching(&topic).collect::<Vec<_>>(), [b]);
        direct.insert(a, p("y")).unwrap();
        direct.remove_peer(&b);
        assert_eq!(direct.matching(&topic).count(), 0);
        direct.insert(b, p("z")).unwrap();
        assert_eq!(direct.count, 2);
        // Two insertions, a removal (the second found nothing), a peer gone,
        // two insertions: every change moved the generation, nothing else did.
        assert_eq!(direct.generation(), 6);
    }

    #[test]
    fn one_peer_gets_only_its_share() {
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let p = |i: usize| Pattern::new(&format!("t{i}.#")).unwrap();
        let mut direct = Direct::new(10, 3);
        for i in 0..3 {
            direct.insert(a, p(i)).unwrap();
        }
        assert_eq!(direct.insert(a, p(3)), Err(Refusal::PeerFull(3)));
        direct.insert(a, p(0)).unwrap(); // held already: no new place
        for i in 0..3 {
            direct.insert(b, p(i)).unwrap();
        }
        assert_eq!(direct.count, 6);
    }
}
