//! Lookups over disjoint paths (S/Kademlia).
//!
//! `d` closest-peers iterators run side by side towards one target, each
//! starting from its own share of the seeds, and no peer is ever asked by
//! two of them: a peer one path has claimed counts as failed for the
//! others. An adversary on one path then cannot steer the others. The
//! result is the k closest peers that answered on any path. With `d = 1`
//! this is exactly one [`ClosestPeersIter`].

use crate::collections::HashMap;
use crate::id::NodeId;

use super::lookup::{ClosestPeersIter, LookupConfig, LookupStep};
use super::message::Contact;

/// A lookup split over disjoint paths.
#[derive(Clone, Debug)]
pub struct DisjointPaths {
    paths: Vec<ClosestPeersIter>,
    /// Which path asked each peer.
    owner: HashMap<NodeId, usize>,
    /// The path to offer the next request to (round robin).
    turn: usize,
    num_results: usize,
}

impl DisjointPaths {
    /// A lookup of `target` over `paths` disjoint paths (at least one),
    /// `seeds` dealt out round robin, closest first.
    pub fn new(
        target: NodeId,
        config: LookupConfig,
        paths: usize,
        seeds: impl IntoIterator<Item = Contact>,
    ) -> Self {
        let paths = paths.max(1);
        let mut shares: Vec<Vec<Contact>> = vec![Vec::new(); paths];
        let mut seeds: Vec<Contact> = seeds.into_iter().collect();
        seeds.sort_by_key(|c| target.distance(&c.id));
        seeds.dedup_by_key(|c| c.id);
        for (i, seed) in seeds.into_iter().enumerate() {
            shares[i % paths].push(seed);
        }
        Self {
            paths: shares
                .into_iter()
                .map(|share| ClosestPeersIter::new(target, config, share))
                .collect(),
            owner: HashMap::default(),
            turn: 0,
            num_results: config.num_results.max(1),
        }
    }

    /// The id looked up.
    pub fn target(&self) -> &NodeId {
        self.paths[0].target()
    }

    /// Whether every path is over.
    pub fn is_finished(&self) -> bool {
        self.paths.iter().all(ClosestPeersIter::is_finished)
    }

    /// The next thing to do, taking the paths in turn. Call it until it
    /// returns something other than [`LookupStep::Contact`].
    pub fn step(&mut self) -> LookupStep {
        let n = self.paths.len();
        let mut waiting = false;
        for offset in 0..n {
            let p = (self.turn + offset) % n;
            loop {
                match self.paths[p].step() {
                    LookupStep::Contact(c) => match self.owner.get(&c.id) {
                        // Another path asked it: not usable on this one.
                        Some(&other) if other != p => {
                            self.paths[p].on_failure(&c.id);
                        }
                        _ => {
                            self.owner.insert(c.id, p);
                            self.turn = (p + 1) % n;
                            return LookupStep::Contact(c);
                        }
                    },
                    LookupStep::Finished => break,
                    LookupStep::Waiting | LookupStep::AtCapacity => {
                        waiting = true;
                        break;
                    }
                }
            }
        }
        if waiting {
            LookupStep::Waiting
        } else {
            LookupStep::Finished
        }
    }

    fn path_of(&mut self, id: &NodeId) -> Option<&mut ClosestPeersIter> {
        let p = *self.owner.get(id)?;
        self.paths.get_mut(p)
    }

    /// `id` answered with `closer`; `false` if no path awaited it.
    pub fn on_success(&mut self, id: &NodeId, closer: impl IntoIterator<Item = Contact>) -> bool {
        self.path_of(id).is_some_and(|p| p.on_success(id, closer))
    }

    /// The request to `id` failed; `false` if no path awaited it.
    pub fn on_failure(&mut self, id: &NodeId) -> bool {
        self.path_of(id).is_some_and(|p| p.on_failure(id))
    }

    /// `id` is past its per-peer deadline; `false` if it was not waiting.
    pub fn on_unresponsive(&mut self, id: &NodeId) -> bool {
        self.path_of(id).is_some_and(|p| p.on_unresponsive(id))
    }

    /// The connection to `id` came up after it went unresponsive; `false`
    /// if no path had it unresponsive.
    pub fn on_alive(&mut self, id: &NodeId) -> bool {
        self.path_of(id).is_some_and(|p| p.on_alive(id))
    }

    /// `id` is past its per-peer deadline on a live connection; `false` if
    /// it was not waiting.
    pub fn on_overdue(&mut self, id: &NodeId) -> bool {
        self.path_of(id).is_some_and(|p| p.on_overdue(id))
    }

    /// Candidates dropped on every path for IP diversity.
    pub fn crowded(&self) -> u64 {
        self.paths.iter().map(ClosestPeersIter::crowded).sum()
    }

    /// Ends every path now.
    pub fn finish(&mut self) {
        self.paths.iter_mut().for_each(ClosestPeersIter::finish);
    }

    /// The k closest peers that answered on any path, closest first, with
    /// their discovery depth.
    pub fn closest(&self) -> Vec<(&Contact, u8)> {
        let mut all: Vec<(&Contact, u8)> = self.paths.iter().flat_map(|p| p.closest()).collect();
        let target = *self.target();
        all.sort_by_key(|(c, _)| target.distance(&c.id));
        all.truncate(self.num_results);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn contact(n: NodeId) -> Contact {
        Contact::new(n, "10.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn paths_never_share_a_peer_and_still_find_the_closest() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ids: Vec<NodeId> = (0..300).map(|_| NodeId::from_bytes(rng.random())).collect();
        let tables = crate::dht::full_tables(&ids);
        let index = |n: &NodeId| ids.iter().position(|i| i == n).unwrap();
        for (q, paths) in [(0, 1), (1, 2), (2, 3), (3, 4)] {
            let target = NodeId::from_bytes(rng.random());
            let config = LookupConfig::default();
            let seeds = tables[q].closest(&target, 20, None);
            let mut lookup = DisjointPaths::new(target, config, paths, seeds);
            let mut asked: Vec<NodeId> = Vec::new();
            loop {
                match lookup.step() {
                    LookupStep::Contact(c) => {
                        assert!(!asked.contains(&c.id), "{:?} asked twice", c.id);
                        asked.push(c.id);
                        let reply = tables[index(&c.id)].closest(&target, 20, None);
                        assert!(lookup.on_success(&c.id, reply));
                    }
                    LookupStep::Finished => break,
                    other => panic!("{other:?} with every answer immediate"),
                }
            }
            assert!(lookup.is_finished());
            let mut truth = ids.clone();
            truth.sort_by_key(|n| target.distance(n));
            let got: Vec<NodeId> = lookup.closest().into_iter().map(|(c, _)| c.id).collect();
            assert_eq!(got, truth[..20], "{paths} paths");
            // Every answer is routed to the path that asked.
            assert!(!lookup.on_success(&asked[0], []), "no duplicates");
        }
    }

    #[test]
    fn a_peer_claimed_by_one_path_is_a_failure_for_the_others() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let target = NodeId::from_bytes(rng.random());
        let (a, b, shared) = (
            NodeId::from_bytes(rng.random()),
            NodeId::from_bytes(rng.random()),
            NodeId::from_bytes(rng.random()),
        );
        let config = LookupConfig {
            parallelism: 1,
            num_results: 3,
            ..LookupConfig::default()
        };
        let mut lookup = DisjointPaths::new(target, config, 2, [contact(a), contact(b)]);
        let first = lookup.step();
        let second = lookup.step();
        let (LookupStep::Contact(x), LookupStep::Contact(y)) = (first, second) else {
            panic!("one request per path");
        };
        assert_ne!(x.id, y.id);
        // Both paths learn of the same peer; only the first to reach it asks.
        lookup.on_success(&x.id, [contact(shared)]);
        lookup.on_success(&y.id, [contact(shared)]);
        let mut asked_shared = 0;
        while let LookupStep::Contact(c) = lookup.step() {
            asked_shared += usize::from(c.id == shared);
            lookup.on_success(&c.id, []);
        }
        assert_eq!(asked_shared, 1);
        assert_eq!(lookup.closest().len(), 3);
    }
}
