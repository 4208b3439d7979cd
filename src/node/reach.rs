//! The Node's side of reachability ([`crate::nat::reach`]): the entry points
//! the datagram split and the frame dispatch call, the public methods, and
//! the executor of the machine's outputs.

use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::ConnectionHandle;

use super::{Event, Node, ReachStats, RelayEvent};
use crate::contract::{Child, Datagram, Output};
use crate::dht::{self, DhtEvent, Mode};
use crate::id::{NodeId, RecordKey};
use crate::nat::discovery::NatReport;
use crate::nat::reach::{CLAIM_EXPORTER_LABEL, CLAIM_MATERIAL_LEN, ReachOutput, ReachView};
use crate::peer_record::{PeerRecord, Reachability};
use crate::wire::Message;

impl Node {
    /// Runs NAT discovery now (abandoning a run under way); the result comes
    /// as [`Event::Nat`].
    pub fn discover(&mut self, now: Instant) {
        self.enter(now);
        self.reach.handle_discover(now);
        self.settle(now);
    }

    /// The last NAT discovery report.
    pub fn nat_report(&self) -> Option<&NatReport> {
        self.reach.report()
    }

    /// What the node knows of its own reachability.
    pub fn reachability(&self) -> Reachability {
        self.reach.reachability()
    }

    /// How long after a peer's data stops we PING its connection: only
    /// behind a NAT (`connection/quiet.rs`).
    pub(super) fn quiet_ping(&self) -> Option<std::time::Duration> {
        let private = self.reach.reachability() == Reachability::Private;
        private.then_some(self.config.transport.quiet_ping)
    }

    /// Counters of STUN, discovery, dial-backs and peer records.
    pub fn reach_stats(&self) -> ReachStats {
        self.reach.stats()
    }

    /// The peer record we published last.
    pub fn peer_record(&self) -> Option<&PeerRecord> {
        self.reach.record()
    }

    /// Looks up `node`'s peer record in the DHT; the answer comes as
    /// [`Event::PeerRecord`].
    pub fn find_peer_record(&mut self, now: Instant, node: NodeId) -> dht::QueryId {
        self.enter(now);
        let key = RecordKey::peer(&self.config.realm, &node);
        let unix_ms = self.unix_ms(now);
        let timeout = self.config.request_timeout;
        let query = self.dht.query_with_response(now, unix_ms, key, timeout);
        self.reach.handle_lookup(now, query, node);
        self.settle(now);
        query
    }

    /// A STUN datagram for the reachability machine.
    pub(super) fn handle_stun(&mut self, now: Instant, datagram: Datagram) {
        if !self.reach.handle_stun(now, datagram) {
            self.counters.stun_dropped += 1;
        }
    }

    /// The reachability machine's timers and the work that waits on the
    /// node's state.
    pub(super) fn reach_timeout(&mut self, now: Instant) {
        let wanted: Vec<NodeId> = self.relay_client.wanted().copied().collect();
        let reserved = self.reserved_relays();
        let avoided = self.relay_client.avoided_relays(now);
        let silent = self.relay_client.silent_relays(now);
        let view = ReachView {
            table: self.dht.table(),
            wanted_relays: &wanted,
            reserved_relays: &reserved,
            avoided_relays: &avoided,
            silent_relays: &silent,
            unix_ms: self.unix_ms(now),
        };
        self.reach.handle_timeout(now, &view);
    }

    /// The socket moved.
    pub(super) fn address_changed(&mut self, now: Instant, new: SocketAddr) {
        self.reach.handle_address_changed(now, new);
    }

    /// A DHT event the application also sees: the first bootstrap starts
    /// discovery.
    pub(super) fn reach_saw(&mut self, now: Instant, event: &DhtEvent) {
        if matches!(event, DhtEvent::Bootstrapped { .. }) {
            self.reach.handle_bootstrapped(now);
        }
    }

    /// A DHT event that belongs to the reachability side (or to dialing by
    /// peer record); false when it is the application's.
    pub(super) fn reach_dht_event(&mut self, event: &DhtEvent) -> bool {
        let now = self.last_now;
        match event {
            DhtEvent::StoreConfirmed { query, .. } => {
                self.reach.handle_store_confirmed(now, *query)
            }
            DhtEvent::ValuesFound { query, records, .. } => {
                let unix_ms = self.unix_ms(now);
                self.dial_records(now, query, records)
                    || (self.reach).handle_values_found(now, unix_ms, *query, records)
            }
            _ => false,
        }
    }

    /// A relay event: reservations changed; a relay that refused or failed
    /// is avoided for a while.
    pub(super) fn reach_relay_event(&mut self, event: &RelayEvent) {
        let failed = match event {
            RelayEvent::ReservationRefused { relay, .. }
            | RelayEvent::ReservationLost { relay }
            | RelayEvent::RelayDropsCircuits { relay }
            | RelayEvent::RelayUnreachable { relay, .. } => Some(*relay),
            RelayEvent::ReservationGranted { .. } => None,
            _ => return,
        };
        self.reach.handle_relays_changed(self.last_now, failed);
    }

    /// The reachability side keeps the claim-check secret of a connection
    /// (exported from its TLS session) from when it has a pool id: a
    /// dialer's at its handshake, before it sends anything a peer could
    /// check; an acceptor's at the peer's CONNECT.
    pub(super) fn reach_key_conn(&mut self, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let (Some(pool_id), Some(peer)) = (conn.pool_id, conn.peer) else {
            return;
        };
        let mut material = [0u8; CLAIM_MATERIAL_LEN];
        let exported = (conn.quinn.crypto_session())
            .export_keying_material(&mut material, CLAIM_EXPORTER_LABEL, &[])
            .is_ok();
        if exported {
            self.reach.handle_peer_ready(pool_id, peer, &material);
        }
    }

    /// An inbound connection's CONNECT was accepted: when it came
    /// unsolicited it shows that strangers reach us, and the relay follows
    /// at once (the requests held for this CONNECT may be reservations).
    pub(super) fn reach_unsolicited(&mut self, now: Instant, handle: ConnectionHandle) {
        if self.conns.get(&handle).is_some_and(|c| c.unsolicited) {
            self.reach.handle_unsolicited_inbound(now);
            self.follow_reachability(now);
        }
    }

    /// [`RelayMode::Auto`](crate::relay::RelayMode::Auto): whether we relay
    /// follows reachability (public only); peers hear of a change.
    fn follow_reachability(&mut self, now: Instant) {
        let public = self.reach.reachability() == Reachability::Public;
        if self.relay_server.handle_public(now, public) {
            self.announce_capabilities();
        }
    }

    /// A DHT server we serve claims listen addresses other than its source:
    /// the reachability side checks them (within its limits) so that the
    /// DHT may hand them out.
    pub(super) fn check_claims(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        from: &dht::Inbound,
    ) {
        let pool_id = self.conns.get(&handle).and_then(|c| c.pool_id);
        if let (true, Mode::Server, Some(pool_id), Some(source)) =
            (from.server, self.dht.mode(), pool_id, from.source)
        {
            self.reach.check_claims(now, pool_id, &from.claimed, source);
        }
    }

    /// A reachability frame on a ready control stream.
    pub(super) fn on_reach_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        message: Message,
    ) {
        match message {
            Message::DialBack(ask) => {
                let Some(conn) = self.conns.get(&handle) else {
                    return;
                };
                let (Some(from), asker, remote) = (conn.pool_id, conn.peer, conn.remote) else {
                    return;
                };
                let peers = self.peer_conns();
                (self.reach).handle_dial_back(now, from, asker, remote, ask, &peers);
            }
            Message::DialBackResult(result) => self.reach.handle_dial_back_result(now, result),
            Message::DialBackProbe(probe) => {
                let from = self.conns.get(&handle).and_then(|c| c.pool_id);
                let sender = self.peer_conns().into_iter().find(|p| Some(p.conn) == from);
                if let Some(sender) = sender {
                    // A refusal is counted in the machine's stats; the frame has no answer.
                    let _ = self.reach.handle_probe_request(now, &sender, probe);
                }
            }
            Message::CapabilitiesUpdate(update) => self.capabilities_changed(handle, update),
            _ => {}
        }
    }

    /// Runs the machine's pending work and carries out its outputs; true
    /// when there were any.
    pub(super) fn drive_reach(&mut self, now: Instant) -> bool {
        self.reach.handle_contacts(now, self.dht.table().len());
        if self.reach.poll_timeout().is_some_and(|t| t <= now) {
            self.reach_timeout(now);
        }
        self.follow_reachability(now);
        let mut busy = false;
        while let Some(output) = self.reach.poll_output() {
            busy = true;
            self.execute_reach(now, output);
        }
        busy
    }

    fn execute_reach(&mut self, now: Instant, output: ReachOutput) {
        match output {
            ReachOutput::Transmit(t) => self.out.push_back(Output::Transmit(t)),
            ReachOutput::AskDialBack(ask) => {
                let request_id = ask.request_id;
                if !self.send_to_server(&Message::from(ask)) {
                    self.reach.handle_no_helper(now, request_id);
                }
            }
            ReachOutput::Send { conn, frame } => {
                if let Some(&handle) = self.by_pool_id.get(&conn) {
                    self.send_control(handle, &frame);
                }
            }
            ReachOutput::Role(mode) => {
                self.dht.set_mode(mode);
                self.announce_capabilities();
            }
            ReachOutput::PunchCandidates {
                candidates,
                nat,
                hops,
            } => {
                self.set_punch_candidates(candidates, nat);
                self.upgrades.handle_local_hops(hops);
            }
            ReachOutput::Reserve(relay) => self.reserve(now, relay),
            ReachOutput::StoreRecord { key, value, record } => {
                let unix_ms = self.unix_ms(now);
                let timeout = self.config.request_timeout;
                let stored = self
                    .dht
                    .store_with_confirmation(now, unix_ms, key, value, timeout);
                if let Ok(query) = stored {
                    self.reach.handle_record_stored(now, query, record);
                }
            }
            ReachOutput::ClaimVerified { conn, peer } => {
                let from = (self.by_pool_id.get(&conn)).and_then(|h| self.dht_inbound(*h));
                if let Some(from) = from.filter(|f| f.id == peer) {
                    self.dht.handle_claims_verified(now, &from);
                }
            }
            ReachOutput::Report(report) => self.out.push_back(Output::Event(Event::Nat(report))),
            ReachOutput::PeerRecord {
                query,
                node,
                record,
            } => {
                let found = Event::PeerRecord {
                    query,
                    node,
                    record,
                };
                self.out.push_back(Output::Event(found));
            }
        }
    }
}
