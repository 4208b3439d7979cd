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
//! An errand whose connection failed over a relay circuit that closed under
//! it (the relay found the peer's end silent) is sent on its way again, once
//! per peer within [`REROUTE_WINDOW`], rather than fail (the peer's record
//! is read anew): the relay the
//! circuit went through refuses, or is tried last, and another of the peer's
//! relays carries it. Issue 17, the 100-node cluster: at a partition's heal a
//! circuit was announced on a connection the relay could no longer reach.
//!
//! [`Messaging`]: crate::messaging::Messaging
//! [`MessagingOutput::Connect`]: crate::messaging::MessagingOutput::Connect

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Node;
use crate::collections::HashMap;
use crate::connection::Phase;
use crate::dht::{DhtEvent, QueryId};
use crate::id::NodeId;
use crate::messaging::Errand;
use crate::path::PathTable;
use crate::pool::{Acquired, Lease, WaitId};

/// A peer's errands are re-routed after a failed circuit at most once in
/// this long (a dial over a circuit takes a few round trips to fail so, and
/// a peer no relay reaches must not be dialed in a loop).
pub const REROUTE_WINDOW: Duration = Duration::from_secs(10);

/// Most peers whose re-route is remembered; past it an errand whose circuit
/// failed fails as well (never more remembered than this, whatever peers
/// the network names).
pub const REROUTED_PEERS: usize = 1024;

/// Errands on their way to a connection.
#[derive(Default)]
pub(super) struct Errands {
    /// `find_node` queries run to learn a peer's address.
    resolving: HashMap<QueryId, NodeId>,
    /// What waits for each peer's address.
    unresolved: HashMap<NodeId, Vec<Errand>>,
    /// What waits for a pooled connection.
    waiting: HashMap<WaitId, Pooled>,
    /// When each peer's errands were last re-routed after a failed circuit.
    rerouted: HashMap<NodeId, Instant>,
}

/// An errand waiting for a pooled connection.
struct Pooled {
    errand: Errand,
    /// The connection is dialed over a relay circuit.
    over_circuit: bool,
}

impl Errands {
    /// Whether `peer`'s errand, whose connection over a circuit failed, is
    /// re-routed now: not within [`REROUTE_WINDOW`] of the last time, and
    /// while fewer than [`REROUTED_PEERS`] are remembered (older ones are
    /// forgotten first).
    fn may_reroute(&mut self, now: Instant, peer: NodeId) -> bool {
        let recent = |at: &Instant| now.saturating_duration_since(*at) < REROUTE_WINDOW;
        if self.rerouted.get(&peer).is_some_and(recent) {
            return false;
        }
        if self.rerouted.len() >= REROUTED_PEERS {
            self.rerouted.retain(|_, at| recent(at));
            if self.rerouted.len() >= REROUTED_PEERS {
                return false;
            }
        }
        self.rerouted.insert(peer, now);
        true
    }
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
                let over_circuit = PathTable::is_virtual(&addr);
                (self.errands.waiting).insert(
                    wait,
                    Pooled {
                        errand,
                        over_circuit,
                    },
                );
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
            Some(pooled) => self.messaging.handle_connected(now, pooled.errand, lease),
            None => self.pool.release(now, lease),
        }
        self.drive_messaging(now);
    }

    /// The pool could not connect for a wait that is not the DHT's: the
    /// errand is unreachable, or re-routed (see the module docs).
    pub(super) fn messaging_failed(&mut self, now: Instant, wait: WaitId) {
        if let Some(Pooled {
            errand,
            over_circuit,
        }) = self.errands.waiting.remove(&wait)
        {
            let peer = errand.peer();
            if over_circuit && self.errands.may_reroute(now, peer) {
                tracing::debug!(%peer, "circuit failed under a dial: reaching the peer again");
                self.reach(now, peer, errand);
            } else {
                self.unreachable_for(now, errand);
            }
        }
        self.drive_messaging(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u32) -> NodeId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        NodeId::from_bytes(bytes)
    }

    #[test]
    fn a_peer_is_rerouted_once_per_window_and_the_memory_is_bounded() {
        let t0 = crate::test_epoch();
        let mut errands = Errands::default();
        assert!(errands.may_reroute(t0, peer(0)));
        assert!(!errands.may_reroute(t0 + REROUTE_WINDOW / 2, peer(0)));
        assert!(errands.may_reroute(t0 + REROUTE_WINDOW, peer(0)));
        for n in 1..REROUTED_PEERS as u32 {
            assert!(errands.may_reroute(t0 + REROUTE_WINDOW, peer(n)));
        }
        let full = t0 + REROUTE_WINDOW * 3 / 2;
        assert!(
            !errands.may_reroute(full, peer(REROUTED_PEERS as u32)),
            "full of peers rerouted within the window"
        );
        assert_eq!(errands.rerouted.len(), REROUTED_PEERS);
        let later = t0 + REROUTE_WINDOW * 2;
        assert!(errands.may_reroute(later, peer(REROUTED_PEERS as u32)));
        assert_eq!(errands.rerouted.len(), 1, "the old ones forgotten");
    }
}
