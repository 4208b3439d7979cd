//! The way to a peer for messaging: [`Messaging`] asks for a lease on a
//! connection to a node id ([`MessagingOutput::Connect`]) and the node finds
//! one. Provider and subscriber records name a node, not an address, so the
//! node takes, in order: a ready connection to it (the pool reuses it
//! whatever the address), its routing-table contact, or else the contact a
//! `find_node` of its id returns or its peer record ([`super::dial`]: a
//! direct address, or a circuit through one of its relays), both looked up
//! at once, whichever shows a way first. The errand
//! goes back to [`Messaging`] with its lease, or as unreachable when none of
//! that works.
//!
//! [`Messaging`]: crate::messaging::Messaging
//! [`MessagingOutput::Connect`]: crate::messaging::MessagingOutput::Connect

use std::net::SocketAddr;
use std::time::Instant;

use super::Node;
use crate::collections::HashMap;
use crate::connection::Phase;
use crate::dht::{DhtEvent, QueryId};
use crate::id::NodeId;
use crate::messaging::Errand;
use crate::pool::{Acquired, Lease, WaitId};

/// Errands on their way to a connection.
#[derive(Default)]
pub(super) struct Errands {
    /// `find_node` queries run to learn a peer's address.
    resolving: HashMap<QueryId, NodeId>,
    /// What waits for each peer's address.
    unresolved: HashMap<NodeId, Vec<Errand>>,
    /// What waits for a pooled connection.
    waiting: HashMap<WaitId, Errand>,
}

impl Node {
    /// Gets a connection to `peer` for `errand`, finding its address first
    /// when needed (see the module docs).
    pub(super) fn reach(&mut self, now: Instant, peer: NodeId, errand: Errand) {
        if let Some(addr) = self.address_of(&peer) {
            self.connect_for(now, peer, addr, errand);
            return;
        }
        if self.dialing_by_record(&peer) {
            // Its record is being looked up or its circuit asked for: the
            // errand leaves with the others.
            self.dial_by_record(now, peer, vec![errand]);
            return;
        }
        let waiting = self.errands.unresolved.entry(peer).or_default();
        waiting.push(errand);
        if waiting.len() == 1 {
            let query = self.dht.find_node(now, peer);
            tracing::debug!(%peer, ?query, "finding a peer's address");
            self.errands.resolving.insert(query, peer);
            // A private node is in no routing table: only its record says how
            // to reach it, so that lookup runs alongside, not after.
            self.look_up_record(now, peer);
        }
    }

    /// A connection to `peer` became ready (it may have dialed us while we
    /// looked for it, e.g. after a relay died under both ends): the errands
    /// still looking for its address or its peer record take it.
    pub(super) fn peer_ready(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        let mut errands = self.errands.unresolved.remove(&peer).unwrap_or_default();
        errands.extend(self.dialing_errands(&peer));
        for errand in errands {
            self.connect_for(now, peer, addr, errand);
        }
    }

    /// The address of `peer` known without asking the network.
    fn address_of(&self, peer: &NodeId) -> Option<SocketAddr> {
        let connected = self
            .conns
            .values()
            .find(|c| c.peer == Some(*peer) && c.phase == Phase::Ready)
            .map(|c| c.remote);
        connected.or_else(|| {
            let contact = self.dht.table().get(peer)?;
            contact.addrs.first().copied()
        })
    }

    /// A `find_node` event, if it resolves a peer for errands; true when it
    /// did.
    pub(super) fn peer_found(&mut self, now: Instant, event: &DhtEvent) -> bool {
        let DhtEvent::NodesFound { query, closest, .. } = event else {
            return false;
        };
        let Some(peer) = self.errands.resolving.remove(query) else {
            return false;
        };
        let addr = closest
            .iter()
            .find(|contact| contact.id == peer)
            .and_then(|contact| contact.addrs.first().copied());
        let errands = self.errands.unresolved.remove(&peer).unwrap_or_default();
        tracing::debug!(%peer, ?query, found = addr.is_some(), errands = errands.len(), "find_node ended");
        if errands.is_empty() {
            // They left on a connection the peer opened meanwhile.
            return true;
        }
        match addr {
            Some(addr) => {
                for errand in errands {
                    self.connect_for(now, peer, addr, errand);
                }
            }
            // Not a DHT server: its peer record says where it is (the lookup
            // started with this one may still run).
            None => self.dial_by_record(now, peer, errands),
        }
        true
    }

    /// Takes the errands waiting for `peer`'s `find_node` (its record
    /// showed the way first).
    pub(super) fn unresolved_errands(&mut self, peer: &NodeId) -> Vec<Errand> {
        self.errands.unresolved.remove(peer).unwrap_or_default()
    }

    /// Asks the pool for a connection to `peer` at `addr` for `errand`.
    pub(super) fn connect_for(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        errand: Errand,
    ) {
        match self.pool.acquire(now, peer, addr) {
            Ok(Acquired::Ready(lease)) => self.messaging.handle_connected(now, errand, lease),
            Ok(Acquired::Waiting(wait)) => {
                self.errands.waiting.insert(wait, errand);
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "no connection for messaging");
                self.unreachable_for(now, errand);
            }
        }
    }

    /// `errand` has no way to its peer.
    pub(super) fn unreachable_for(&mut self, now: Instant, errand: Errand) {
        self.messaging.handle_unreachable(now, errand);
    }

    /// The pool has a connection for a wait that is not the DHT's (given
    /// back at once when nothing waits for it any more).
    pub(super) fn messaging_ready(&mut self, now: Instant, wait: WaitId, lease: Lease) {
        match self.errands.waiting.remove(&wait) {
            Some(errand) => self.messaging.handle_connected(now, errand, lease),
            None => self.pool.release(now, lease),
        }
        self.drive_messaging(now);
    }

    /// The pool could not connect for a wait that is not the DHT's.
    pub(super) fn messaging_failed(&mut self, now: Instant, wait: WaitId) {
        if let Some(errand) = self.errands.waiting.remove(&wait) {
            self.unreachable_for(now, errand);
        }
        self.drive_messaging(now);
    }
}
