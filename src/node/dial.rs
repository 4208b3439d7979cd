//! The dial strategy past the routing table: a peer that has no connection
//! and no contact (a private node is never in routing tables) is found
//! through its signed peer record.
//!
//! The order to reach a node id is: a ready connection; its routing-table
//! contact (public nodes); a `find_node` of its id (both in
//! `node::errands`) and, looked up at the same time, here, its peer record,
//! whichever shows a way first: a record that is not
//! `Private` with observed addresses is dialled directly at the first one;
//! a private node's relays are tried one after the other with a circuit
//! ([`Node::dial_via_relay`]), and the errands waiting for the peer leave on
//! the end-to-end connection as soon as the circuit is open. A peer without
//! an acceptable record, or whose relays all refuse, is unreachable (RPC:
//! `NotDelivered`, pub/sub: subscriber unreachable).

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Instant;

use super::Node;
use crate::collections::HashMap;
use crate::dht;
use crate::id::{NodeId, RecordKey};
use crate::messaging::Errand;
use crate::path::RealPath;
use crate::peer_record::{PeerRecord, Reachability};
use crate::relay::RelayEvent;
use crate::wire;

/// Peers being reached through their peer record.
#[derive(Default)]
pub(super) struct Dialing {
    /// Peer-record lookups, by query.
    lookups: HashMap<dht::QueryId, NodeId>,
    /// What waits for each peer.
    waiting: HashMap<NodeId, Vec<Errand>>,
    /// Relays of each peer not tried yet.
    untried: HashMap<NodeId, Vec<wire::Contact>>,
    /// The relay each peer's circuit is being asked from.
    asking: HashMap<NodeId, NodeId>,
    /// Relay events to act on once the relay client is done.
    events: Vec<RelayEvent>,
}

impl Node {
    /// `find_node` did not find `peer`: its peer record (looked up already,
    /// or now) is the way for `errands`.
    pub(super) fn dial_by_record(&mut self, now: Instant, peer: NodeId, errands: Vec<Errand>) {
        self.dialing
            .waiting
            .entry(peer)
            .or_default()
            .extend(errands);
        self.look_up_record(now, peer);
    }

    /// Whether errands wait for `peer`'s record or circuit.
    pub(super) fn dialing_by_record(&self, peer: &NodeId) -> bool {
        self.dialing.waiting.contains_key(peer)
    }

    /// Looks `peer`'s record up in the network, unless that is under way.
    pub(super) fn look_up_record(&mut self, now: Instant, peer: NodeId) {
        if self.dialing.lookups.values().any(|p| *p == peer) {
            return;
        }
        let key = RecordKey::peer(&self.config.realm, &peer);
        let unix_ms = self.unix_ms(now);
        let timeout = self.config.request_timeout;
        // Not the DHT's cached answer: one from before the peer stored its record
        // (or changed its relays) would make it unreachable for the cache's TTL
        // (issue 17: a private subscriber missed by a publisher for 60 s).
        self.dht.uncache(&key);
        let query = self.dht.query_with_response(now, unix_ms, key, timeout);
        tracing::debug!(%peer, ?query, "looking up a peer record");
        self.dialing.lookups.insert(query, peer);
    }

    /// A lookup's records, if the lookup was one of ours; true when it was.
    pub(super) fn dial_records(
        &mut self,
        now: Instant,
        query: &dht::QueryId,
        records: &[crate::record::SignedRecord],
    ) -> bool {
        let Some(peer) = self.dialing.lookups.remove(query) else {
            return false;
        };
        let unix_ms = self.unix_ms(now);
        let limits = self.config.limits;
        let record = PeerRecord::newest(records, &peer, &self.config.realm, unix_ms, &limits);
        tracing::debug!(
            %peer,
            records = records.len(),
            reachability = ?record.as_ref().map(|r| r.reachability),
            relays = record.as_ref().map_or(0, |r| r.relays.len()),
            "peer record lookup ended"
        );
        let shows_a_way = record.as_ref().is_some_and(|r| match r.reachability {
            Reachability::Private => !r.relays.is_empty(),
            _ => !r.observed.is_empty(),
        });
        if shows_a_way {
            // The errands still waiting for the peer's `find_node` take it too.
            let unresolved = self.unresolved_errands(&peer);
            if !unresolved.is_empty() {
                self.dialing
                    .waiting
                    .entry(peer)
                    .or_default()
                    .extend(unresolved);
            }
        }
        if !self.dialing.waiting.contains_key(&peer) {
            // Its errands left on a connection the peer opened meanwhile, or
            // wait for its `find_node`, which may still find it.
            return true;
        }
        if self.dialing.asking.contains_key(&peer) {
            // A circuit to it is being asked for: they leave on it.
            return true;
        }
        match record {
            Some(record) if record.reachability != Reachability::Private => {
                match record.observed.first() {
                    Some(&addr) => self.dial_errands(now, peer, addr),
                    None => self.give_up(now, peer),
                }
            }
            Some(record) => {
                // Tried from the end: relays found dropping circuits (or
                // silent) last, before them those a circuit died through.
                let mut relays = record.relays;
                let client = &self.relay_client;
                relays.sort_by_key(|r| {
                    let relay = &r.node_id;
                    Reverse((client.avoids(now, relay), client.suspects(relay, &peer)))
                });
                self.dialing.untried.insert(peer, relays);
                self.try_next_relay(now, peer);
            }
            None => self.give_up(now, peer),
        }
        true
    }

    /// Takes the errands waiting for `peer`'s record or circuit.
    pub(super) fn dialing_errands(&mut self, peer: &NodeId) -> Vec<Errand> {
        self.dialing.waiting.remove(peer).unwrap_or_default()
    }

    /// Asks the next relay of `peer` for a circuit, or gives up.
    fn try_next_relay(&mut self, now: Instant, peer: NodeId) {
        let next = self.dialing.untried.get_mut(&peer).and_then(Vec::pop);
        let Some(relay) = next else {
            self.dialing.untried.remove(&peer);
            self.give_up(now, peer);
            return;
        };
        let relay = dht::Contact {
            id: relay.node_id,
            addrs: relay.addrs.into_iter().collect(),
        };
        self.dialing.asking.insert(peer, relay.id);
        self.dial_via_relay(now, relay, peer);
    }

    /// Remembers a relay event for [`Node::drive_dialing`] (the relay client
    /// is in the middle of something when it reports).
    pub(super) fn saw_relay_event(&mut self, event: &RelayEvent) {
        self.dialing.events.push(event.clone());
        self.reach_relay_event(event);
    }

    /// Acts on the relay events seen since the last call; true when there
    /// were any.
    pub(super) fn drive_dialing(&mut self, now: Instant) -> bool {
        let events = std::mem::take(&mut self.dialing.events);
        let busy = !events.is_empty();
        for event in events {
            match event {
                RelayEvent::CircuitOpened {
                    relay,
                    peer,
                    circuit,
                } => {
                    self.dialing.asking.remove(&peer);
                    self.dialing.untried.remove(&peer);
                    let path = RealPath::Relay { relay, circuit };
                    if let Some(addr) = self.paths.lookup(&path) {
                        self.dial_errands(now, peer, addr);
                    }
                }
                RelayEvent::CircuitRefused { relay, target, .. }
                    if self.dialing.asking.get(&target) == Some(&relay) =>
                {
                    self.dialing.asking.remove(&target);
                    self.try_next_relay(now, target);
                }
                RelayEvent::RelayUnreachable { relay, .. } => {
                    let stuck: Vec<NodeId> = self
                        .dialing
                        .asking
                        .iter()
                        .filter(|(_, r)| **r == relay)
                        .map(|(p, _)| *p)
                        .collect();
                    for peer in stuck {
                        self.dialing.asking.remove(&peer);
                        self.try_next_relay(now, peer);
                    }
                }
                _ => {}
            }
        }
        busy
    }

    /// Sends `peer`'s waiting errands over a connection at `addr`.
    fn dial_errands(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        for errand in self.dialing.waiting.remove(&peer).unwrap_or_default() {
            self.connect_for(now, peer, addr, errand);
        }
    }

    /// `peer` cannot be reached: its errands fail.
    fn give_up(&mut self, now: Instant, peer: NodeId) {
        tracing::debug!(%peer, "no way to the peer");
        for errand in self.dialing.waiting.remove(&peer).unwrap_or_default() {
            self.unreachable_for(now, errand);
        }
    }
}
