//! The iterative closest-peers lookup, as a pure state machine.
//!
//! Modelled on libp2p's `ClosestPeersIter`. The iterator keeps every
//! candidate it has heard of, ordered by distance to the target, and says
//! whom to ask next: at most α requests in flight, widened to k when the
//! query stalls (α answers in a row that brought nothing closer). A
//! candidate inside the lookup's [`NearRadius`] (where its k closest are
//! expected to lie) is asked at once, up to k in flight, without waiting
//! for the stall: the lookup must hear from it anyway. It takes
//! answers, failures and "unresponsive" marks from the caller, who owns the
//! clocks: a peer past its per-peer deadline is marked unresponsive, which
//! frees its slot, and can still answer late until its request fails for
//! good. The lookup is done when the k closest candidates that neither
//! failed nor went unresponsive have all answered (an unresponsive peer is
//! not waited for while others can take its place), or when nobody is left
//! to ask and nobody is awaited: with fewer than k answers, an unresponsive
//! peer is the only one that can still add to the result, so the lookup
//! waits for its late answer or its failure before it ends. A peer past its
//! deadline whose connection is up is overdue rather than unresponsive: it is
//! alive and only late (a lost packet), so the lookup does not end while it
//! ranks ahead of the k-th answer. Otherwise a lookup that asks the near
//! candidates at once ends on the others before the closest node's
//! retransmitted answer arrives.
//!
//! Each candidate remembers its discovery depth: 0 for the seeds the lookup
//! started from, `h + 1` for one first learned from a peer of depth `h`.
//!
//! A network supplies at most [`Diversity::per_lookup`] candidates; more
//! from it are dropped and counted ([`ClosestPeersIter::crowded`]).

use std::collections::BTreeMap;

use crate::collections::HashMap;
use crate::id::{Distance, NodeId};
use crate::scope::IpPrefix;

use super::diversity::Diversity;
use super::message::Contact;
use super::near::NearRadius;

/// Knobs of one lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupConfig {
    /// Requests in flight while the lookup makes progress (α).
    pub parallelism: usize,
    /// How many closest peers the lookup returns (k); also the parallelism
    /// once it stalls.
    pub num_results: usize,
    /// Candidates one network may supply ([`Diversity::per_lookup`]).
    pub diversity: Diversity,
    /// Candidates this close to the target are asked without waiting for
    /// a slot among the α (at most k in flight); `None`: α for everyone
    /// until the lookup stalls.
    pub near: Option<NearRadius>,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            parallelism: 3,
            num_results: 20,
            diversity: Diversity::default(),
            near: None,
        }
    }
}

/// Where one candidate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Known, not asked yet.
    NotContacted,
    /// Asked, within its deadline.
    Waiting,
    /// Asked, past its per-peer deadline: no longer counted in flight, may
    /// answer late, and is awaited before a lookup with fewer than k
    /// answers ends.
    Unresponsive,
    /// Asked, past its per-peer deadline although its connection is up: no
    /// longer counted in flight, but the lookup does not end while it ranks
    /// ahead of the k-th answer. A live peer's answer is only late (a lost
    /// packet's retransmission), and it is likely the closest node there is.
    Overdue,
    /// The request failed for good.
    Failed,
    /// It answered.
    Succeeded,
}

/// What the lookup wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupStep {
    /// Ask this peer (it is now counted in flight).
    Contact(Contact),
    /// Nothing to ask now; answers (possibly late ones) are awaited.
    Waiting,
    /// Nothing more can be asked until a request in flight ends.
    AtCapacity,
    /// The lookup is over.
    Finished,
}

#[derive(Clone, Debug)]
struct Candidate {
    contact: Contact,
    state: PeerState,
    depth: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Iterating { no_progress: usize },
    Stalled,
    Finished,
}

/// An iterative closest-peers lookup towards one target.
#[derive(Clone, Debug)]
pub struct ClosestPeersIter {
    target: NodeId,
    config: LookupConfig,
    candidates: BTreeMap<Distance, Candidate>,
    phase: Phase,
    in_flight: usize,
    /// Candidates per network (global addresses only).
    groups: HashMap<IpPrefix, usize>,
    crowded: u64,
}

impl ClosestPeersIter {
    /// A lookup of `target` starting from `seeds` (depth 0).
    pub fn new(
        target: NodeId,
        config: LookupConfig,
        seeds: impl IntoIterator<Item = Contact>,
    ) -> Self {
        let mut iter = Self {
            target,
            config: LookupConfig {
                parallelism: config.parallelism.max(1),
                num_results: config.num_results.max(1),
                ..config
            },
            candidates: BTreeMap::new(),
            phase: Phase::Iterating { no_progress: 0 },
            in_flight: 0,
            groups: HashMap::default(),
            crowded: 0,
        };
        iter.add(seeds, 0);
        iter
    }

    /// The id looked up.
    pub fn target(&self) -> &NodeId {
        &self.target
    }

    /// How `id` stands, if it is a candidate.
    pub fn state(&self, id: &NodeId) -> Option<PeerState> {
        self.candidates
            .get(&self.target.distance(id))
            .map(|c| c.state)
    }

    /// Requests in flight (waiting, not yet unresponsive).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the lookup is over.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Candidates dropped because their network had supplied its share.
    pub fn crowded(&self) -> u64 {
        self.crowded
    }

    fn add(&mut self, contacts: impl IntoIterator<Item = Contact>, depth: u8) {
        let diversity = self.config.diversity;
        for contact in contacts {
            let distance = self.target.distance(&contact.id);
            if self.candidates.contains_key(&distance) {
                continue;
            }
            if let Some(group) = diversity.group(&contact) {
                let count = self.groups.entry(group).or_default();
                if *count >= diversity.per_lookup {
                    self.crowded += 1;
                    continue;
                }
                *count += 1;
            }
            let candidate = Candidate {
                contact,
                state: PeerState::NotContacted,
                depth,
            };
            self.candidates.insert(distance, candidate);
        }
    }

    /// Requests in flight allowed for near candidates, and for the others.
    fn caps(&self) -> (usize, usize) {
        let wide = self.config.parallelism.max(self.config.num_results);
        match self.phase {
            Phase::Stalled => (wide, wide),
            _ => (wide, self.config.parallelism),
        }
    }

    /// The next thing to do. Call it until it returns something other than
    /// [`LookupStep::Contact`].
    pub fn step(&mut self) -> LookupStep {
        if self.phase == Phase::Finished {
            return LookupStep::Finished;
        }
        let (near_cap, far_cap) = self.caps();
        let full = self.in_flight >= near_cap;
        // Answers count towards the end only while no closer peer is still
        // awaited within its deadline.
        let mut answered = Some(0);
        // Peers that answered or may still answer within their deadline:
        // once k of them are closer than a candidate, asking it is wasted.
        let mut ahead = 0;
        // Someone past its deadline may still answer late.
        let mut late = false;

        for (distance, candidate) in self.candidates.iter_mut() {
            match candidate.state {
                PeerState::Waiting if full => return LookupStep::AtCapacity,
                PeerState::Waiting => {
                    answered = None;
                    ahead += 1;
                }
                PeerState::NotContacted
                    if ahead >= self.config.num_results + self.config.parallelism =>
                {
                    break;
                }
                PeerState::Succeeded => {
                    ahead += 1;
                    let Some(n) = answered.as_mut() else {
                        continue;
                    };
                    *n += 1;
                    if *n >= self.config.num_results {
                        self.phase = Phase::Finished;
                        return LookupStep::Finished;
                    }
                }
                PeerState::NotContacted => {
                    let near = self.config.near.is_some_and(|r| r.contains(distance));
                    // Farther candidates only come later: none can be asked.
                    if self.in_flight >= if near { near_cap } else { far_cap } {
                        return LookupStep::AtCapacity;
                    }
                    candidate.state = PeerState::Waiting;
                    self.in_flight += 1;
                    return LookupStep::Contact(candidate.contact.clone());
                }
                PeerState::Unresponsive => late = true,
                PeerState::Overdue => {
                    answered = None;
                    ahead += 1;
                    late = true;
                }
                PeerState::Failed => {}
            }
        }
        // Fewer than k answered: a late answer is the only way left to add
        // to the result, so it is awaited until it comes or fails for good.
        if self.in_flight > 0 || late {
            LookupStep::Waiting
        } else {
            self.phase = Phase::Finished;
            LookupStep::Finished
        }
    }

    /// `id` answered with `closer` contacts. Returns `false` (and changes
    /// nothing) when `id` was not awaited: never asked, already answered or
    /// failed, or the lookup is over.
    pub fn on_success(&mut self, id: &NodeId, closer: impl IntoIterator<Item = Contact>) -> bool {
        let Some(depth) = self.settle(id, PeerState::Succeeded) else {
            return false;
        };
        let depth = depth.saturating_add(1);
        let closest_before = self.candidates.keys().next().copied();
        self.add(closer, depth);
        let progress = self.candidates.keys().next().copied() != closest_before;
        self.phase = match (self.phase, progress) {
            (_, true) => Phase::Iterating { no_progress: 0 },
            (Phase::Iterating { no_progress }, false)
                if no_progress + 1 < self.config.parallelism =>
            {
                Phase::Iterating {
                    no_progress: no_progress + 1,
                }
            }
            (_, false) => Phase::Stalled,
        };
        true
    }

    /// The request to `id` failed for good. Returns whether `id` was awaited.
    pub fn on_failure(&mut self, id: &NodeId) -> bool {
        self.settle(id, PeerState::Failed).is_some()
    }

    /// `id` is past its per-peer deadline: free its slot, but accept a late
    /// answer. Returns whether `id` was waiting.
    pub fn on_unresponsive(&mut self, id: &NodeId) -> bool {
        self.phase != Phase::Finished
            && self.state(id) == Some(PeerState::Waiting)
            && self.settle(id, PeerState::Unresponsive).is_some()
    }

    /// The request to `id` went out on a connection that is up after `id`
    /// was marked unresponsive: it is alive, so its late answer is now
    /// awaited as an overdue one.
    /// Returns whether `id` was unresponsive.
    pub fn on_alive(&mut self, id: &NodeId) -> bool {
        let distance = self.target.distance(id);
        match self.candidates.get_mut(&distance) {
            Some(c) if self.phase != Phase::Finished && c.state == PeerState::Unresponsive => {
                c.state = PeerState::Overdue;
                true
            }
            _ => false,
        }
    }

    /// `id` is past its per-peer deadline but its connection is up: free its
    /// slot, and wait for its answer or failure before ending while it ranks
    /// ahead of the k-th answer. Returns whether `id` was waiting.
    pub fn on_overdue(&mut self, id: &NodeId) -> bool {
        self.phase != Phase::Finished
            && self.state(id) == Some(PeerState::Waiting)
            && self.settle(id, PeerState::Overdue).is_some()
    }

    /// Moves an awaited (waiting or unresponsive) `id` to `to` and returns
    /// its depth; `None` if `id` was not awaited or the lookup is over.
    fn settle(&mut self, id: &NodeId, to: PeerState) -> Option<u8> {
        if self.phase == Phase::Finished {
            return None;
        }
        let candidate = self.candidates.get_mut(&self.target.distance(id))?;
        match candidate.state {
            PeerState::Waiting => self.in_flight -= 1,
            PeerState::Unresponsive | PeerState::Overdue => {}
            _ => return None,
        }
        candidate.state = to;
        Some(candidate.depth)
    }

    /// Ends the lookup now (its query timed out or was cancelled).
    pub fn finish(&mut self) {
        self.phase = Phase::Finished;
    }

    /// The up-to-k closest peers that answered, closest first, each with its
    /// discovery depth.
    pub fn closest(&self) -> impl Iterator<Item = (&Contact, u8)> + '_ {
        self.candidates
            .values()
            .filter(|c| c.state == PeerState::Succeeded)
            .take(self.config.num_results)
            .map(|c| (&c.contact, c.depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn contact(n: NodeId) -> Contact {
        Contact::new(n, "10.0.0.1:1".parse().unwrap())
    }

    fn node(i: u64) -> NodeId {
        let mut rng = ChaCha8Rng::seed_from_u64(i);
        NodeId::from_bytes(rng.random())
    }

    fn cfg(parallelism: usize, num_results: usize) -> LookupConfig {
        LookupConfig {
            parallelism,
            num_results,
            ..LookupConfig::default()
        }
    }

    #[test]
    fn one_network_supplies_few_candidates() {
        let target = node(0);
        let on = |i: u64, addr: String| Contact::new(node(i), addr.parse().expect("test address"));
        let seeds = [on(1, "198.51.100.1:1".into())];
        let mut it = ClosestPeersIter::new(target, cfg(3, 20), seeds);
        assert!(matches!(it.step(), LookupStep::Contact(_)));
        let crowd = (10..30).map(|i| on(i, format!("203.0.113.{i}:1")));
        let local = (30..40).map(|i| on(i, format!("10.0.0.{i}:1")));
        assert!(it.on_success(&node(1), crowd.chain(local)));
        assert_eq!(it.crowded(), 15);
        let mut asked = 0;
        while let LookupStep::Contact(_) = it.step() {
            asked += 1;
        }
        assert_eq!(asked, 3);
        let known = (10..40).filter(|&i| it.state(&node(i)).is_some()).count();
        assert_eq!(known, 5 + 10);
    }

    #[test]
    fn at_most_alpha_in_flight_then_k_when_stalled() {
        let target = node(0);
        let seeds: Vec<Contact> = (1..=10).map(|i| contact(node(i))).collect();
        let mut it = ClosestPeersIter::new(target, cfg(2, 4), seeds.clone());
        let mut asked = Vec::new();
        while let LookupStep::Contact(c) = it.step() {
            asked.push(c.id);
        }
        assert_eq!(asked.len(), 2);
        assert_eq!(it.step(), LookupStep::AtCapacity);
        // Two answers bring nothing new: the lookup stalls and widens to k = 4.
        for id in &asked {
            assert!(it.on_success(id, []));
        }
        let mut more = 0;
        while let LookupStep::Contact(_) = it.step() {
            more += 1;
        }
        assert_eq!(more, 4);
        assert_eq!(it.in_flight(), 4);
    }

    /// A lookup (α = 2, k = 4) from seeds `1..=count` whose radius takes in
    /// the `near` closest; the seeds closest first.
    fn near_lookup(count: u64, near: usize) -> (Vec<Contact>, ClosestPeersIter) {
        let target = node(0);
        let mut seeds: Vec<Contact> = (1..=count).map(|i| contact(node(i))).collect();
        seeds.sort_by_key(|c| target.distance(&c.id));
        let edge = target.distance(&seeds[near - 1].id);
        let radius = NearRadius::estimate(&edge, 1, 1, 100).expect("a radius");
        assert!(!radius.contains(&target.distance(&seeds[near].id)));
        let config = LookupConfig {
            near: Some(radius),
            ..cfg(2, 4)
        };
        let it = ClosestPeersIter::new(target, config, seeds.clone());
        (seeds, it)
    }

    /// Everyone the lookup asks now, in order.
    fn ask_all(it: &mut ClosestPeersIter) -> Vec<NodeId> {
        let mut asked = Vec::new();
        while let LookupStep::Contact(c) = it.step() {
            asked.push(c.id);
        }
        asked
    }

    fn ids(contacts: &[Contact]) -> Vec<NodeId> {
        contacts.iter().map(|c| c.id).collect()
    }

    #[test]
    fn near_candidates_are_asked_at_once_up_to_k() {
        let (seeds, mut it) = near_lookup(30, 6);
        // Four of the six near ones (k = 4), closest first; no far one.
        let asked = ask_all(&mut it);
        assert_eq!(asked, ids(&seeds[..4]));
        assert_eq!(it.step(), LookupStep::AtCapacity);
        // A slot frees up: the next near one takes it.
        assert!(it.on_success(&asked[0], []));
        assert_eq!(it.step(), LookupStep::Contact(seeds[4].clone()));
    }

    #[test]
    fn far_candidates_still_wait_for_one_of_alpha() {
        let (seeds, mut it) = near_lookup(30, 1);
        // The near one and one far one: α = 2 in flight, as without a radius.
        assert_eq!(ask_all(&mut it), ids(&seeds[..2]));
        assert_eq!(it.step(), LookupStep::AtCapacity);
        let mut plain = ClosestPeersIter::new(node(0), cfg(2, 4), seeds.clone());
        assert_eq!(ask_all(&mut plain), ids(&seeds[..2]));
    }

    #[test]
    fn an_unresponsive_peer_frees_its_slot_and_may_answer_late() {
        let target = node(0);
        let a = node(1);
        let mut it = ClosestPeersIter::new(target, cfg(1, 1), [contact(a), contact(node(2))]);
        let first = match it.step() {
            LookupStep::Contact(c) => c.id,
            other => panic!("{other:?}"),
        };
        assert_eq!(it.step(), LookupStep::AtCapacity);
        assert!(it.on_unresponsive(&first));
        assert!(
            !it.on_unresponsive(&first),
            "only a waiting peer can time out"
        );
        let second = match it.step() {
            LookupStep::Contact(c) => c.id,
            other => panic!("{other:?}"),
        };
        assert_ne!(first, second);
        assert!(it.on_success(&first, []), "late answers count");
        assert!(!it.on_success(&first, []), "duplicates do not");
        assert!(!it.on_success(&node(99), []), "strangers do not");
        assert_eq!(it.step(), LookupStep::Finished);
        assert!(!it.on_success(&second, []), "nothing after the end");
    }

    #[test]
    fn with_fewer_than_k_answers_a_late_answer_is_awaited() {
        let target = node(0);
        let (a, b, c) = (node(1), node(2), node(3));
        let mut it = ClosestPeersIter::new(target, cfg(3, 20), [a, b, c].map(contact));
        while let LookupStep::Contact(_) = it.step() {}
        assert!(it.on_unresponsive(&a));
        assert!(it.on_success(&b, []));
        assert!(it.on_success(&c, []));
        assert_eq!(it.in_flight(), 0);
        assert_eq!(it.step(), LookupStep::Waiting, "a may still answer");
        assert!(it.on_success(&a, []), "and its late answer counts");
        assert_eq!(it.step(), LookupStep::Finished);
        assert_eq!(it.closest().count(), 3);

        // Until its request fails for good.
        let mut it = ClosestPeersIter::new(target, cfg(3, 20), [a, b].map(contact));
        while let LookupStep::Contact(_) = it.step() {}
        assert!(it.on_unresponsive(&a));
        assert!(it.on_success(&b, []));
        assert_eq!(it.step(), LookupStep::Waiting);
        assert!(it.on_failure(&a));
        assert_eq!(it.step(), LookupStep::Finished);
    }

    #[test]
    fn depth_counts_the_discovery_chain() {
        let target = node(0);
        let (a, b, c) = (node(1), node(2), node(3));
        let mut it = ClosestPeersIter::new(target, cfg(3, 3), [contact(a)]);
        assert_eq!(it.step(), LookupStep::Contact(contact(a)));
        it.on_success(&a, [contact(b)]);
        assert_eq!(it.step(), LookupStep::Contact(contact(b)));
        it.on_success(&b, [contact(c), contact(a)]);
        assert_eq!(it.step(), LookupStep::Contact(contact(c)));
        it.on_success(&c, []);
        assert_eq!(it.step(), LookupStep::Finished);
        let depths: Vec<(NodeId, u8)> = it.closest().map(|(c, d)| (c.id, d)).collect();
        let mut expected = vec![(a, 0), (b, 1), (c, 2)];
        expected.sort_by_key(|(n, _)| target.distance(n));
        assert_eq!(depths, expected);
    }

    /// A network of `n` nodes whose tables hold every other node the k-bucket
    /// rules let in: lookups over it must find exactly the true k closest.
    #[test]
    fn finds_the_true_k_closest_in_a_full_network() {
        let ids: Vec<NodeId> = (0..400).map(node).collect();
        let tables = crate::dht::full_tables(&ids);
        let index = |n: &NodeId| ids.iter().position(|i| i == n).unwrap();
        for q in 0..20u64 {
            let target = node(10_000 + q);
            let start = &tables[q as usize];
            let mut it =
                ClosestPeersIter::new(target, cfg(3, 20), start.closest(&target, 20, None));
            loop {
                match it.step() {
                    LookupStep::Contact(c) => {
                        let reply = tables[index(&c.id)].closest(&target, 20, None);
                        it.on_success(&c.id, reply);
                    }
                    LookupStep::Finished => break,
                    other => panic!("{other:?} with every answer immediate"),
                }
            }
            let mut truth = ids.clone();
            truth.sort_by_key(|n| target.distance(n));
            let got: Vec<NodeId> = it.closest().map(|(c, _)| c.id).collect();
            assert_eq!(got, truth[..20]);
        }
    }

    #[derive(Clone, Debug)]
    enum Reply {
        Success,
        Failure,
        Unresponsive,
    }

    proptest! {
        /// Drive a lookup over a random network with random answers, in a
        /// random order, and check it against a brute-force reference built
        /// from what it was told.
        #[test]
        fn matches_the_brute_force_reference(
            seed in any::<u64>(),
            alpha in 1usize..5,
            k in 1usize..8,
            script in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..10), 1..300),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let ids: Vec<NodeId> = (0..60).map(|_| NodeId::from_bytes(rng.random())).collect();
            let knows = |n: &NodeId| -> Vec<Contact> {
                let i = ids.iter().position(|x| x == n).unwrap();
                (1..6).map(|j| contact(ids[(i * 7 + j * 13) % ids.len()])).collect()
            };
            let target = NodeId::from_bytes(rng.random());
            let mut it = ClosestPeersIter::new(target, cfg(alpha, k), ids[..4].iter().map(|&n| contact(n)));
            let mut learned: Vec<NodeId> = ids[..4].to_vec();
            let mut asked: Vec<NodeId> = Vec::new();
            let mut outcome: BTreeMap<NodeId, Reply> = BTreeMap::new();
            let mut pending: Vec<NodeId> = Vec::new();
            let mut unresponsive: Vec<NodeId> = Vec::new();
            for (pick, what) in script {
                loop {
                    match it.step() {
                        LookupStep::Contact(c) => {
                            prop_assert!(!asked.contains(&c.id), "asked twice");
                            asked.push(c.id);
                            pending.push(c.id);
                        }
                        LookupStep::Finished => break,
                        LookupStep::Waiting | LookupStep::AtCapacity => break,
                    }
                }
                prop_assert!(it.in_flight() <= alpha.max(k));
                if it.is_finished() || pending.is_empty() {
                    break;
                }
                let peer = pending[pick.index(pending.len())];
                let reply = match what { 0 => Reply::Failure, 1 => Reply::Unresponsive, _ => Reply::Success };
                match reply {
                    Reply::Success => {
                        let closer = knows(&peer);
                        learned.extend(closer.iter().map(|c| c.id));
                        prop_assert!(it.on_success(&peer, closer));
                        pending.retain(|p| p != &peer);
                    }
                    Reply::Failure => {
                        prop_assert!(it.on_failure(&peer));
                        pending.retain(|p| p != &peer);
                    }
                    Reply::Unresponsive => {
                        // Stays pending: it may still answer late.
                        it.on_unresponsive(&peer);
                        unresponsive.push(peer);
                    }
                }
                if !matches!(reply, Reply::Unresponsive) || !outcome.contains_key(&peer) {
                    outcome.insert(peer, reply);
                }
            }
            if it.is_finished() {
                learned.sort_by_key(|n| target.distance(n));
                learned.dedup();
                let succeeded: Vec<NodeId> = learned.iter().copied()
                    .filter(|n| matches!(outcome.get(n), Some(Reply::Success))).collect();
                let got: Vec<NodeId> = it.closest().map(|(c, _)| c.id).collect();
                prop_assert_eq!(&got, &succeeded.iter().copied().take(k).collect::<Vec<_>>());
                // Short of k answers, nobody who could still answer (even
                // late) was given up on.
                if got.len() < k {
                    prop_assert!(pending.is_empty(), "{:?} still awaited", pending);
                }
                // Nobody closer than the k-th answer was left unasked, or
                // still awaited within its deadline.
                let bound = if got.len() == k { Some(target.distance(&got[k - 1])) } else { None };
                for n in &learned {
                    if bound.is_none_or(|b| target.distance(n) < b) {
                        prop_assert!(asked.contains(n), "{n:?} never asked");
                        let waiting = pending.contains(n) && !unresponsive.contains(n);
                        prop_assert!(!waiting, "{n:?} still awaited");
                    }
                }
            }
        }
    }

    /// Three answers at k = 3 from seeds 1..=4, the closest asked but `late`;
    /// the lookup and the late peer.
    fn one_late(late: fn(&mut ClosestPeersIter, &NodeId) -> bool) -> (ClosestPeersIter, NodeId) {
        let target = node(0);
        let seeds: Vec<Contact> = (1..=4).map(|i| contact(node(i))).collect();
        let mut it = ClosestPeersIter::new(target, cfg(4, 3), seeds);
        let asked = ask_all(&mut it);
        assert!(late(&mut it, &asked[0]));
        for id in &asked[1..] {
            assert!(it.on_success(id, []));
        }
        (it, asked[0])
    }

    #[test]
    fn an_overdue_peer_ahead_of_the_kth_answer_holds_the_end() {
        let (mut it, closest) = one_late(ClosestPeersIter::on_overdue);
        assert_eq!(it.in_flight(), 0, "its slot is free");
        assert_eq!(it.step(), LookupStep::Waiting);
        assert!(it.on_success(&closest, []));
        assert_eq!(it.step(), LookupStep::Finished);
        assert_eq!(it.closest().next().map(|(c, _)| c.id), Some(closest));
    }

    #[test]
    fn an_unresponsive_peer_is_not_waited_for_once_k_answered() {
        let (mut it, late) = one_late(ClosestPeersIter::on_unresponsive);
        assert_eq!(it.step(), LookupStep::Finished);
        assert!(it.closest().all(|(c, _)| c.id != late));
        assert_eq!(it.closest().count(), 3);
    }

    #[test]
    fn a_peer_that_comes_alive_is_awaited_again() {
        let (mut it, closest) = one_late(ClosestPeersIter::on_unresponsive);
        let (mut fresh, _) = one_late(ClosestPeersIter::on_unresponsive);
        assert!(fresh.on_alive(&closest));
        assert!(!fresh.on_alive(&closest), "once");
        assert_eq!(fresh.state(&closest), Some(PeerState::Overdue));
        assert_eq!(fresh.step(), LookupStep::Waiting);
        assert!(fresh.on_failure(&closest), "an overdue peer can still fail");
        assert_eq!(fresh.step(), LookupStep::Finished);
        // Over: nothing changes any more.
        assert_eq!(it.step(), LookupStep::Finished);
        assert!(!it.on_alive(&closest));
        assert!(!it.on_overdue(&closest));
    }
}
