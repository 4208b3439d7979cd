//! Know thyself: STUN on the node's socket, NAT discovery, reachability by
//! third-party dial-back, the DHT role that follows from it, and the node's
//! signed peer record.
//!
//! **STUN.** Binding requests go to the [`Responder`] (rate-limited, never
//! amplifying), which answers from the same socket; responses go to the
//! node's [`BindingClient`]. A Binding request whose transaction id is the
//! nonce of one of our dial-backs is a probe, counted and not answered.
//!
//! **Discovery** ([`Discovery`]) starts when the DHT bootstrap ends, again on
//! [`Input::LocalAddressChanged`] and then periodically. The node picks the
//! reflectors: configured STUN servers first, then DHT servers from the
//! routing table, one per IP, plus one on an already chosen IP but another
//! port when the table has one (that tells address- from address-and-port-
//! dependent mapping).
//!
//! **Dial-back** (docs/PROTOCOL.md §12): we send DIAL_BACK on the control
//! stream of a connected DHT server X; X keeps only our addresses on the IP
//! it sees us at, and asks up to [`MAX_HELPERS`] of its other peers (Y) with
//! DIAL_BACK_PROBE to send a STUN Binding request carrying our nonce to
//! them. We remember every address we sent to in the last
//! [`ReachConfig::contact_memory`]; a probe counts only from a source we did
//! not send to, so a mapping we opened ourselves is never taken for
//! reachability.
//!
//! **Role.** A report of `Public` makes the node a DHT server, `Private` a
//! DHT client; on a change it sends CAPABILITIES to every connected peer, and
//! a peer that hears DHT_SERVER dropped removes it from its routing table.
//!
//! **Peer record.** After each report the node signs a [`PeerRecord`] (its
//! observed and LAN addresses, relays) and stores it under its peer key when
//! it changed; the DHT republishes it. The report also gives the puncher its
//! own candidates (LAN, reflexive, predicted) and NAT class
//! ([`Node::set_punch_candidates`]), so relayed connections upgrade on what
//! the node found out about itself.

use std::net::{IpAddr, SocketAddr};

use crate::collections::HashSet;
use crate::nat::discovery::{
    Discovery, DiscoveryAction, DiscoveryConfig, DiscoveryStats, NatReport, ProbeOrigin,
};
use crate::nat::punch::{self, Candidate, CandidateKind, NatClass};
use crate::nat::stun::{
    self, BindingClient, BindingId, Class, ClientConfig, ClientStats, RateLimit, RateLimiter,
    Responder, ResponderConfig, ResponderStats, TransactionId,
};
use crate::peer_record::{PeerRecord, Reachability};
use crate::wire::{
    CapabilitiesUpdate, DialBack, DialBackProbe, DialBackResult, DialBackStatus, ProbeSource,
};

use super::*;

/// Most nodes a dial-back is forwarded to.
pub const MAX_HELPERS: usize = 3;
/// Most addresses a probe goes to.
pub const MAX_PROBE_ADDRS: usize = 4;
/// Copies of each probe a helper sends back to back (against loss).
pub const PROBE_COPIES: usize = 2;
/// Most addresses remembered as contacted; past it the oldest half is
/// forgotten (probes from them may then be taken as strangers').
pub const MAX_CONTACTED: usize = 1 << 16;

/// Reachability settings of a node.
///
/// | setting | default |
/// | --- | --- |
/// | responder | on, 5 requests/s per source (bursts of 10), 1000/s in all |
/// | client | 250 ms RTO, 5 requests, Rm = 8 |
/// | discovery | every 10 min (30 s after an undetermined run), 4 s dial-back wait, 4 reflectors |
/// | auto_discover | on: after bootstrap, on address change, periodically |
/// | stun_servers | none |
/// | dial_back_limit | 1 dial-back per 2 s per asking IP, bursts of 4 |
/// | probe_limit | 1 probe per 500 ms per target IP, bursts of 8 |
/// | contact_memory | 10 min |
/// | relays | 2 reservations kept while private; a failed relay is avoided for 60 s |
#[derive(Clone, Debug)]
pub struct ReachConfig {
    /// The STUN responder; `None` leaves Binding requests unanswered.
    pub responder: Option<ResponderConfig>,
    /// Binding transactions toward reflectors.
    pub client: ClientConfig,
    /// Discovery timing.
    pub discovery: DiscoveryConfig,
    /// Run discovery on its own (after bootstrap, on address change, every
    /// `discovery.interval`); off: only [`Node::discover`] runs it.
    pub auto_discover: bool,
    /// Standard STUN servers (coturn, ...) asked before macula nodes.
    pub stun_servers: Vec<SocketAddr>,
    /// Dial-backs served per asking IP.
    pub dial_back_limit: RateLimit,
    /// Probes sent per target IP when helping.
    pub probe_limit: RateLimit,
    /// How long an address we sent to counts as contacted (longer than any
    /// NAT binding lifetime).
    pub contact_memory: Duration,
    /// Reservations a private node keeps, on public nodes from its routing
    /// table (0: none).
    pub relays: usize,
    /// How long a relay that refused or failed is not chosen again.
    pub relay_retry: Duration,
}

impl Default for ReachConfig {
    fn default() -> Self {
        let limit = |interval_ms, burst| RateLimit {
            per_source: stun::Bucket {
                interval: Duration::from_millis(interval_ms),
                burst,
            },
            ..RateLimit::default()
        };
        Self {
            responder: Some(ResponderConfig::default()),
            client: ClientConfig::default(),
            discovery: DiscoveryConfig::default(),
            auto_discover: true,
            stun_servers: Vec::new(),
            dial_back_limit: limit(2000, 4),
            probe_limit: limit(500, 8),
            contact_memory: Duration::from_secs(600),
            relays: 2,
            relay_retry: Duration::from_secs(60),
        }
    }
}

/// What the reachability side of a node counted, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReachStats {
    /// Discovery runs, reports, dial-backs and probes.
    pub discovery: DiscoveryStats,
    /// The STUN responder.
    pub responder: ResponderStats,
    /// The STUN client.
    pub client: ClientStats,
    /// Dial-backs we forwarded for others.
    pub dial_backs_forwarded: u64,
    /// Dial-backs we refused or had no helper for.
    pub dial_backs_declined: u64,
    /// Probes we sent as a helper (copies included).
    pub probes_sent: u64,
    /// Probes we did not send because of the per-target limit.
    pub probes_rate_limited: u64,
    /// Times the node became or stopped being a DHT server.
    pub role_changes: u64,
    /// Peer records we stored (first publication and changes).
    pub peer_records_published: u64,
    /// Peer records found in the DHT that were not acceptable.
    pub peer_records_rejected: u64,
    /// Reservations asked for on relays chosen from the DHT (first ones and
    /// replacements).
    pub relay_reservations_asked: u64,
}

/// The node's reachability state.
pub(super) struct Reach {
    responder: Option<Responder>,
    client: BindingClient,
    discovery: Discovery,
    bindings: HashSet<BindingId>,
    contacted: HashMap<SocketAddr, Instant>,
    asked: HashMap<u64, [u8; 12]>,
    next_request: u64,
    dial_back_limit: RateLimiter,
    probe_limit: RateLimiter,
    local: Option<SocketAddr>,
    record: Option<PeerRecord>,
    announces: HashSet<dht::QueryId>,
    lookups: HashMap<dht::QueryId, NodeId>,
    /// Relays that refused or failed us, and when.
    failed_relays: HashMap<NodeId, Instant>,
    /// Reservations changed: check the count and the peer record.
    relays_changed: bool,
    /// The peer record may have changed: publish it once no store of it is
    /// under way (two stores of one key at once would race).
    record_due: bool,
    stats: ReachStats,
}

impl Reach {
    pub(super) fn new(config: &ReachConfig, seed: u64) -> Self {
        let mut client_seed = [0u8; 32];
        client_seed[..8].copy_from_slice(&seed.to_le_bytes());
        client_seed[8..12].copy_from_slice(b"stun");
        Self {
            responder: config.responder.clone().map(Responder::new),
            client: BindingClient::new(config.client.clone(), client_seed),
            discovery: Discovery::new(config.discovery.clone(), seed ^ 0x006e_6174),
            bindings: HashSet::default(),
            contacted: HashMap::default(),
            asked: HashMap::default(),
            next_request: 0,
            dial_back_limit: RateLimiter::new(config.dial_back_limit),
            probe_limit: RateLimiter::new(config.probe_limit),
            local: None,
            record: None,
            announces: HashSet::default(),
            lookups: HashMap::default(),
            failed_relays: HashMap::default(),
            relays_changed: false,
            record_due: false,
            stats: ReachStats::default(),
        }
    }

    /// The earliest deadline of the STUN client and discovery.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.discovery.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Remembers that we sent to `destination`.
    pub(super) fn sent_to(&mut self, now: Instant, destination: SocketAddr) {
        if self.contacted.len() >= MAX_CONTACTED && !self.contacted.contains_key(&destination) {
            let mut times: Vec<Instant> = self.contacted.values().copied().collect();
            times.sort_unstable();
            let median = times[times.len() / 2];
            self.contacted.retain(|_, at| *at > median);
        }
        self.contacted.insert(canonical(destination), now);
    }

    fn origin(&self, now: Instant, memory: Duration, source: SocketAddr) -> ProbeOrigin {
        let source = canonical(source);
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < memory;
        ProbeOrigin {
            ip_contacted: self
                .contacted
                .iter()
                .any(|(addr, at)| addr.ip() == source.ip() && fresh(at)),
            addr_contacted: self.contacted.get(&source).is_some_and(fresh),
        }
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Node {
    /// Runs NAT discovery now (abandoning a run under way); the result comes
    /// as [`Event::Nat`].
    pub fn discover(&mut self, now: Instant) {
        self.enter(now);
        self.start_discovery(now);
        self.settle(now);
    }

    /// The last NAT discovery report.
    pub fn nat_report(&self) -> Option<&NatReport> {
        self.reach.discovery.report()
    }

    /// What the node knows of its own reachability.
    pub fn reachability(&self) -> Reachability {
        self.nat_report()
            .map_or(Reachability::Undetermined, |r| r.reachability)
    }

    /// Counters of STUN, discovery, dial-backs and peer records.
    pub fn reach_stats(&self) -> ReachStats {
        let mut stats = self.reach.stats;
        stats.discovery = self.reach.discovery.stats();
        stats.client = self.reach.client.stats();
        stats.responder = self
            .reach
            .responder
            .as_ref()
            .map(Responder::stats)
            .unwrap_or_default();
        stats
    }

    /// The peer record we published last.
    pub fn peer_record(&self) -> Option<&PeerRecord> {
        self.reach.record.as_ref()
    }

    /// Looks up `node`'s peer record in the DHT; the answer comes as
    /// [`Event::PeerRecord`].
    pub fn find_peer_record(&mut self, now: Instant, node: NodeId) -> dht::QueryId {
        self.enter(now);
        let key = RecordKey::peer(&self.config.realm, &node);
        let unix_ms = self.unix_ms(now);
        let timeout = self.config.request_timeout;
        let query = self.dht.query_with_response(now, unix_ms, key, timeout);
        self.reach.lookups.insert(query, node);
        self.settle(now);
        query
    }

    /// A STUN datagram: a probe of ours, a request for the responder, or a
    /// response for the client.
    pub(super) fn handle_stun(&mut self, now: Instant, datagram: Datagram) {
        self.reach.local = Some(datagram.local);
        match stun::peek_class(&datagram.payload) {
            Some(Class::Request) => {
                let nonce: Option<[u8; 12]> = datagram
                    .payload
                    .get(8..20)
                    .and_then(|id| id.try_into().ok());
                if let Some(nonce) = nonce.filter(|n| self.reach.discovery.expects_probe(n)) {
                    let memory = self.config.reach.contact_memory;
                    let origin = self.reach.origin(now, memory, datagram.remote);
                    self.reach.discovery.handle_probe(now, nonce, origin);
                    return;
                }
                let Some(responder) = self.reach.responder.as_mut() else {
                    self.counters.stun_dropped += 1;
                    return;
                };
                responder.handle_input(now, Input::Datagram(datagram));
                while let Some(output) = responder.poll_output() {
                    self.out.push_back(match output {
                        Output::Transmit(t) => Output::Transmit(t),
                        Output::Event(never) => match never {},
                    });
                }
            }
            Some(Class::Success | Class::Error) => {
                self.reach
                    .client
                    .handle_input(now, Input::Datagram(datagram));
            }
            _ => self.counters.stun_dropped += 1,
        }
    }

    /// Timers of the STUN client and discovery, and the periodic run.
    pub(super) fn reach_timeout(&mut self, now: Instant) {
        self.reach.client.handle_input(now, Input::Timeout);
        self.reach.discovery.handle_timeout(now);
        if self.config.reach.auto_discover && self.reach.discovery.due(now) {
            self.start_discovery(now);
        }
        let memory = self.config.reach.contact_memory;
        self.reach
            .contacted
            .retain(|_, at| now.saturating_duration_since(*at) < memory);
    }

    /// The socket moved: what we knew of the NAT is void.
    pub(super) fn address_changed(&mut self, now: Instant, new: SocketAddr) {
        self.reach.local = Some(new);
        self.reach.contacted.clear();
        if self.config.reach.auto_discover {
            self.start_discovery(now);
        }
    }

    /// A DHT event the application also sees: the first bootstrap starts
    /// discovery.
    pub(super) fn reach_saw(&mut self, now: Instant, event: &DhtEvent) {
        let first = self.reach.discovery.stats().runs == 0;
        if matches!(event, DhtEvent::Bootstrapped { .. })
            && first
            && self.config.reach.auto_discover
        {
            self.start_discovery(now);
        }
    }

    /// A DHT event that belongs to the reachability side; false when it is
    /// the application's.
    pub(super) fn reach_dht_event(&mut self, event: &DhtEvent) -> bool {
        match event {
            DhtEvent::StoreConfirmed { query, .. } => self.reach.announces.remove(query),
            DhtEvent::ValuesFound { query, records, .. } => {
                if self.dial_records(self.last_now, query, records) {
                    return true;
                }
                let Some(node) = self.reach.lookups.remove(query) else {
                    return false;
                };
                let unix_ms = self.unix_ms(self.last_now);
                let limits = self.config.limits;
                let realm = &self.config.realm;
                let accepted: Vec<PeerRecord> = records
                    .iter()
                    .filter_map(|r| PeerRecord::open(r, realm, unix_ms, &limits).ok())
                    .filter(|r| r.node_id == node)
                    .collect();
                self.reach.stats.peer_records_rejected += (records.len() - accepted.len()) as u64;
                let record = accepted.into_iter().max_by_key(|r| r.seq);
                self.out.push_back(Output::Event(Event::PeerRecord {
                    query: *query,
                    node,
                    record,
                }));
                true
            }
            _ => false,
        }
    }

    /// Starts a discovery run toward reflectors chosen as the module docs say.
    fn start_discovery(&mut self, now: Instant) {
        for id in self.reach.bindings.drain() {
            self.reach.client.cancel(id);
        }
        self.reach.asked.clear();
        let local = self.local_addrs();
        let reflectors = self.reflectors(&local);
        self.reach.discovery.start(now, &reflectors, local);
    }

    /// The socket's own addresses: the configured listen addresses and the
    /// one datagrams arrive on.
    fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut local: Vec<SocketAddr> = self.config.listen_addrs.clone();
        if let Some(addr) = self.reach.local.filter(|a| !local.contains(a)) {
            local.push(addr);
        }
        local
    }

    fn reflectors(&self, local: &[SocketAddr]) -> Vec<SocketAddr> {
        let max = self.config.reach.discovery.max_reflectors;
        let candidates: Vec<SocketAddr> = self
            .config
            .reach
            .stun_servers
            .iter()
            .copied()
            .chain(
                self.dht
                    .table()
                    .contacts()
                    .filter_map(|c| c.addrs.first().copied()),
            )
            .filter(|a| !local.contains(a))
            .collect();
        let mut by_ip: Vec<SocketAddr> = Vec::new();
        for &addr in &candidates {
            if !by_ip.iter().any(|c| c.ip() == addr.ip()) {
                by_ip.push(addr);
            }
        }
        let sibling = candidates.iter().copied().find(|a| {
            !by_ip.contains(a)
                && by_ip
                    .iter()
                    .take(max.saturating_sub(1))
                    .any(|c| c.ip() == a.ip())
        });
        let distinct = if sibling.is_some() {
            max.saturating_sub(1)
        } else {
            max
        };
        by_ip.truncate(distinct);
        by_ip.extend(sibling);
        by_ip
    }

    /// Carries out discovery's actions and its finished report; true when
    /// there were any.
    pub(super) fn drive_reach(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(action) = self.reach.discovery.poll_output() {
            busy = true;
            match action {
                DiscoveryAction::Bind { reflector } => {
                    let id =
                        self.reach
                            .client
                            .start(now, reflector, stun::ChangeRequest::default());
                    self.reach.bindings.insert(id);
                }
                DiscoveryAction::DialBack {
                    source,
                    nonce,
                    addrs,
                } => self.ask_dial_back(now, source, nonce, addrs),
            }
        }
        while let Some(output) = self.reach.client.poll_output() {
            busy = true;
            match output {
                Output::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                Output::Event(outcome) => {
                    if self.reach.bindings.remove(&outcome.id) {
                        self.reach.discovery.handle_binding(now, &outcome);
                    }
                }
            }
        }
        if let Some(report) = self.reach.discovery.take_finished() {
            busy = true;
            self.apply_report(now, &report);
            self.out.push_back(Output::Event(Event::Nat(report)));
        }
        if std::mem::take(&mut self.reach.relays_changed) {
            busy = true;
            self.keep_relays(now);
            self.reach.record_due = true;
        }
        if self.reach.record_due && self.reach.announces.is_empty() {
            self.reach.record_due = false;
            busy |= self.publish_peer_record(now);
        }
        busy
    }

    /// A relay event: reservations changed; a relay that refused or failed
    /// is avoided for a while.
    pub(super) fn reach_relay_event(&mut self, event: &RelayEvent) {
        let failed = match event {
            RelayEvent::ReservationRefused { relay, .. }
            | RelayEvent::ReservationLost { relay }
            | RelayEvent::RelayUnreachable { relay, .. } => Some(*relay),
            RelayEvent::ReservationGranted { .. } => None,
            _ => return,
        };
        if let Some(relay) = failed {
            self.reach.failed_relays.insert(relay, self.last_now);
        }
        self.reach.relays_changed = true;
    }

    /// A private node keeps `relays` reservations on public nodes of its
    /// routing table, replacing those that fail.
    fn keep_relays(&mut self, now: Instant) {
        if self.reachability() != Reachability::Private {
            return;
        }
        let retry = self.config.reach.relay_retry;
        self.reach
            .failed_relays
            .retain(|_, at| now.saturating_duration_since(*at) < retry);
        let wanted: HashSet<NodeId> = self.relay_client.wanted().copied().collect();
        let missing = self.config.reach.relays.saturating_sub(wanted.len());
        let candidates: Vec<dht::Contact> = self
            .dht
            .table()
            .closest(&self.local, self.dht.table().len(), None)
            .into_iter()
            .filter(|c| !wanted.contains(&c.id) && !self.reach.failed_relays.contains_key(&c.id))
            .take(missing)
            .collect();
        for relay in candidates {
            self.reach.stats.relay_reservations_asked += 1;
            self.reserve(now, relay);
        }
    }

    /// Sends DIAL_BACK to a connected DHT server, or tells discovery there
    /// is none.
    fn ask_dial_back(
        &mut self,
        now: Instant,
        source: ProbeSource,
        nonce: [u8; 12],
        mut addrs: Vec<SocketAddr>,
    ) {
        addrs.truncate(self.config.limits.max_addrs.min(MAX_PROBE_ADDRS));
        let server = self
            .ready_conns()
            .filter(|(_, conn)| {
                conn.hello
                    .as_ref()
                    .is_some_and(|h| h.capabilities.contains(Capabilities::DHT_SERVER))
            })
            .map(|(handle, _)| handle)
            .min();
        let request_id = self.reach.next_request;
        self.reach.next_request += 1;
        let frame = Message::from(DialBack {
            request_id,
            nonce,
            source,
            addrs,
        });
        if server.is_some_and(|handle| self.send_control(handle, &frame)) {
            self.reach.asked.insert(request_id, nonce);
        } else {
            let status = DialBackStatus::NoHelper;
            self.reach
                .discovery
                .handle_dial_back_result(now, nonce, status, &[]);
        }
    }

    /// Ready connections with their handles.
    fn ready_conns(&self) -> impl Iterator<Item = (ConnectionHandle, &Conn)> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Ready && c.control.is_some())
            .map(|(h, c)| (*h, c))
    }

    /// Writes a frame on a connection's control stream; false when it could
    /// not.
    fn send_control(&mut self, handle: ConnectionHandle, frame: &Message) -> bool {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return false;
        };
        let Some(control) = conn.control else {
            return false;
        };
        conn.send(control, frame, false).is_ok()
    }

    /// A reachability frame on a ready control stream.
    pub(super) fn on_reach_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        message: Message,
    ) {
        match message {
            Message::DialBack(ask) => self.serve_dial_back(now, handle, ask),
            Message::DialBackResult(result) => {
                if let Some(nonce) = self.reach.asked.remove(&result.request_id) {
                    let memory = self.config.reach.contact_memory;
                    let helpers: Vec<ProbeOrigin> = result
                        .helpers
                        .iter()
                        .map(|h| self.reach.origin(now, memory, *h))
                        .collect();
                    self.reach.discovery.handle_dial_back_result(
                        now,
                        nonce,
                        result.status,
                        &helpers,
                    );
                }
            }
            Message::DialBackProbe(probe) => self.send_probes(now, probe),
            Message::CapabilitiesUpdate(update) => {
                let Some(conn) = self.conns.get_mut(&handle) else {
                    return;
                };
                let Some(hello) = conn.hello.as_mut() else {
                    return;
                };
                let was_server = hello.capabilities.contains(Capabilities::DHT_SERVER);
                hello.capabilities = update.capabilities;
                let peer = conn.peer;
                if was_server && !update.capabilities.contains(Capabilities::DHT_SERVER) {
                    if let Some(peer) = peer {
                        self.dht.forget_peer(&peer);
                    }
                }
            }
            _ => {}
        }
    }

    /// X's side: forward a DIAL_BACK to helpers that fit its source.
    fn serve_dial_back(&mut self, now: Instant, handle: ConnectionHandle, ask: DialBack) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let (asker, asker_ip) = (conn.peer, conn.remote.ip().to_canonical());
        let addrs: Vec<SocketAddr> = ask
            .addrs
            .iter()
            .copied()
            .filter(|a| a.ip().to_canonical() == asker_ip)
            .take(MAX_PROBE_ADDRS)
            .collect();
        let allowed = self.reach.dial_back_limit.allow(now, asker_ip).is_ok();
        let own_ips: Vec<IpAddr> = self
            .config
            .listen_addrs
            .iter()
            .map(|a| a.ip().to_canonical())
            .collect();
        // Helpers are untranslated nodes only (DHT servers, or peers whose
        // packets come from an address they listen on): a helper behind NAT
        // probes the asker's NAT from its own NAT mapping and plants an
        // unreplied conntrack entry there (Linux), which breaks a later punch
        // between the two on those ports. Likely strangers to the asker
        // first: its lookups have talked to DHT servers, so untranslated
        // nodes that are not servers, on IPs where no server is, come first.
        let untranslated = |c: &Conn| {
            c.hello.as_ref().is_some_and(|hello| {
                let canonical = |a: &SocketAddr| (a.ip().to_canonical(), a.port());
                (hello.listen_addrs.iter()).any(|a| canonical(a) == canonical(&c.remote))
            })
        };
        let is_server = |c: &Conn| {
            c.hello
                .as_ref()
                .is_some_and(|hello| hello.capabilities.contains(Capabilities::DHT_SERVER))
        };
        let server_ips: HashSet<IpAddr> = self
            .ready_conns()
            .filter(|(_, c)| is_server(c))
            .map(|(_, c)| c.remote.ip().to_canonical())
            .collect();
        let mut helpers: Vec<(bool, bool, ConnectionHandle, SocketAddr)> = self
            .ready_conns()
            .filter(|(h, c)| {
                let ip = c.remote.ip().to_canonical();
                let fits = match ask.source {
                    ProbeSource::OtherIp => !own_ips.contains(&ip),
                    ProbeSource::OtherPort => {
                        own_ips.contains(&ip) && !self.config.listen_addrs.contains(&c.remote)
                    }
                    ProbeSource::Unknown(_) => false,
                };
                let eligible = is_server(c) || untranslated(c);
                *h != handle && c.peer != asker && ip != asker_ip && fits && eligible
            })
            .map(|(h, c)| {
                let shared_ip = server_ips.contains(&c.remote.ip().to_canonical());
                (is_server(c), shared_ip, h, c.remote)
            })
            .collect();
        helpers.sort_unstable();
        helpers.truncate(MAX_HELPERS);
        let status = if !allowed || addrs.is_empty() {
            DialBackStatus::Refused
        } else if helpers.is_empty() {
            DialBackStatus::NoHelper
        } else {
            DialBackStatus::Forwarded
        };
        let mut forwarded = Vec::new();
        if status == DialBackStatus::Forwarded {
            let probe = Message::from(DialBackProbe {
                nonce: ask.nonce,
                addrs,
            });
            for (_, _, helper, remote) in helpers {
                if self.send_control(helper, &probe) {
                    forwarded.push(remote);
                }
            }
            self.reach.stats.dial_backs_forwarded += 1;
        } else {
            self.reach.stats.dial_backs_declined += 1;
        }
        let result = Message::from(DialBackResult {
            request_id: ask.request_id,
            status,
            helpers: forwarded,
        });
        self.send_control(handle, &result);
    }

    /// Y's side: send the probe, within the per-target limit.
    fn send_probes(&mut self, now: Instant, probe: DialBackProbe) {
        let request = stun::Message::binding(Class::Request, TransactionId(probe.nonce));
        let Ok(payload) = request.encode() else {
            return;
        };
        for addr in probe.addrs.into_iter().take(MAX_PROBE_ADDRS) {
            if self.reach.probe_limit.allow(now, addr.ip()).is_err() {
                self.reach.stats.probes_rate_limited += 1;
                continue;
            }
            for _ in 0..PROBE_COPIES {
                self.reach.stats.probes_sent += 1;
                self.out.push_back(Output::Transmit(Transmit {
                    source: None,
                    destination: addr,
                    payload: payload.clone(),
                    ttl: None,
                }));
            }
        }
    }

    /// A finished report: the DHT role and the peer record follow it.
    fn apply_report(&mut self, now: Instant, report: &NatReport) {
        let role = match report.reachability {
            Reachability::Public => Some(Mode::Server),
            Reachability::Private => Some(Mode::Client),
            _ => None,
        };
        if let Some(mode) = role.filter(|m| *m != self.dht.mode()) {
            self.dht.set_mode(mode);
            self.reach.stats.role_changes += 1;
            let update = Message::from(CapabilitiesUpdate {
                capabilities: self.hello().capabilities,
            });
            let handles: Vec<ConnectionHandle> = self.ready_conns().map(|(h, _)| h).collect();
            for handle in handles {
                self.send_control(handle, &update);
            }
        }
        self.feed_puncher(report);
        self.reach.record_due = true;
        self.keep_relays(now);
    }

    /// Our own punch candidates and NAT class from a finished report (what
    /// `node::upgrade` offers and punches with from now on): the LAN
    /// addresses, the reflexive ones, and for a sequential port allocator
    /// the next ports after the last mapping.
    fn feed_puncher(&mut self, report: &NatReport) {
        let lan = self
            .local_addrs()
            .into_iter()
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| Candidate::new(CandidateKind::Lan, a));
        let reflexive = report
            .reflexive
            .iter()
            .map(|a| Candidate::new(CandidateKind::Reflexive, *a));
        let mut candidates: Vec<Candidate> = lan.chain(reflexive).collect();
        if let Some(last) = report.reflexive.last() {
            candidates.extend(punch::predict(*last, report.ports));
        }
        let nat = NatClass {
            mapping: report.mapping,
            filtering: report.filtering,
            ports: report.ports,
        };
        self.set_punch_candidates(candidates, nat);
    }

    /// Stores our peer record when what it says changed; true when it did.
    fn publish_peer_record(&mut self, now: Instant) -> bool {
        let Some(report) = self.nat_report() else {
            return false;
        };
        let local = self.local_addrs();
        let reachability = report.reachability;
        let (observed, lan) = if report.behind_nat == Some(false) {
            (local, Vec::new())
        } else {
            (report.reflexive.clone(), local)
        };
        let max = self.config.limits.max_addrs;
        let unix_ms = self.unix_ms(now);
        let relays: Vec<wire::Contact> = self
            .reserved_relays()
            .into_iter()
            .filter_map(|id| self.dht.table().get(&id))
            .take(self.config.limits.max_contacts)
            .map(|c| wire::Contact {
                node_id: c.id,
                addrs: c.addrs.iter().copied().take(max).collect(),
            })
            .collect();
        let mut record = PeerRecord {
            node_id: self.local,
            seq: 0,
            reachability,
            observed: observed.into_iter().take(max).collect(),
            lan: lan.into_iter().take(max).collect(),
            relays,
        };
        if let Some(old) = &self.reach.record {
            if (PeerRecord {
                seq: 0,
                ..old.clone()
            }) == record
            {
                return false;
            }
            record.seq = unix_ms.max(old.seq + 1);
        } else {
            record.seq = unix_ms;
        }
        let Ok(value) = record.encode(&self.config.limits) else {
            return false;
        };
        let key = RecordKey::peer(&self.config.realm, &self.local);
        let timeout = self.config.request_timeout;
        if let Ok(query) = self
            .dht
            .store_with_confirmation(now, unix_ms, key, value, timeout)
        {
            self.reach.announces.insert(query);
            self.reach.stats.peer_records_published += 1;
            self.reach.record = Some(record);
            return true;
        }
        false
    }
}
