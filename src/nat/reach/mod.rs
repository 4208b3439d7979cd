//! Know thyself, as a child machine of the Node: STUN on the node's socket,
//! NAT discovery, reachability by third-party dial-back, the DHT role that
//! follows from it, and the node's signed peer record.
//!
//! **STUN.** Binding requests go to the [`Responder`] (rate-limited, never
//! amplifying), which answers from the same socket; responses go to the
//! [`BindingClient`]. A Binding request whose transaction id is the nonce of
//! one of our dial-backs is a probe, counted and not answered.
//!
//! **Discovery** ([`Discovery`]) starts when the DHT bootstrap ends, again
//! when the local address changes and then periodically. The reflectors are
//! the configured STUN servers first, then DHT servers from the routing
//! table, one per IP, plus one on an already chosen IP but another port when
//! the table has one (that tells address- from address-and-port-dependent
//! mapping).
//!
//! **Dial-back** (docs/PROTOCOL.md §12): we send DIAL_BACK on the control
//! stream of a connected DHT server X; X keeps only our addresses on the IP
//! it sees us at, and asks up to [`MAX_HELPERS`] of its other peers (Y) with
//! DIAL_BACK_PROBE to send a STUN Binding request carrying our nonce to
//! them. As Y we honour a DIAL_BACK_PROBE only toward the sender's own
//! observed IP, or, from a dial-back server (a peer that announced
//! DHT_SERVER and whose packets come from an address it listens on: the X
//! of the protocol, which kept only the asker's observed IP), toward other
//! IPs; every target must pass the node's [`AddressPolicy`], and requests
//! are rate-limited per sending IP ([`ReachConfig::probe_request_limit`]).
//! Anything else is refused ([`ProbeRefusal`]) and counted, so a plain peer
//! cannot aim our probes at a third party. We remember every address we sent to in the last
//! [`ReachConfig::contact_memory`]; a probe counts only from a source we did
//! not send to, so a mapping we opened ourselves is never taken for
//! reachability (`dial_back`).
//!
//! **Unsolicited inbound.** An inbound connection whose first packet came
//! to a global address of ours from a global address whose IP we had not
//! sent to ([`Reach::is_unsolicited`]), and which completed its handshake
//! and CONNECT, shows that strangers reach us: until a report says
//! otherwise the node counts as public ([`Reach::reachability`]). A seed
//! that nobody helps with a dial-back learns it this way.
//!
//! **Claim checks** (`claims`): the listen addresses a DHT server claims
//! in CONNECT, other than its source, are checked by one STUN request each
//! under a key from the connection's TLS session before the DHT hands them
//! out; the same module answers others' checks of ours.
//!
//! **Role, record, relays** (`report`). A report of `Public` makes the
//! node a DHT server, `Private` a DHT client; the report also gives the
//! puncher its own candidates and NAT class. After each report the machine
//! signs a [`PeerRecord`] and asks for it to be stored when it changed; a
//! private node keeps [`ReachConfig::relays`] reservations, on the closest
//! public nodes by id but never two in one network (an IPv4 /24, an IPv6
//! /48: [`RELAY_GROUP_V4_BITS`]) while nodes of other networks are left, so
//! ids ground near ours from one network cannot become all our relays.
//!
//! The machine follows the child contract ([`Child`]): inputs are
//! `handle_*(now, ...)`, effects leave as [`ReachOutput`]. Work that needs
//! the node's current state (its routing table, its relays, the wall clock)
//! waits for [`Reach::handle_timeout`], which takes them as a [`ReachView`];
//! the deadline is the latest input's time while such work waits.

mod claims;
mod dial_back;
mod report;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::collections::{HashMap, HashSet};
use crate::contract::{Child, Datagram, Input, Machine, Output, OutputQueue, Transmit};
use crate::dht::{self, Mode, QueryId, RoutingTable};
use crate::id::{NodeId, Realm, RecordKey};
use crate::nat::discovery::{
    Discovery, DiscoveryAction, DiscoveryConfig, DiscoveryStats, NatReport, ProbeOrigin,
};
use crate::nat::punch::{Candidate, NatClass};
use crate::nat::stun::{
    self, BindingClient, BindingId, Class, ClientConfig, ClientStats, RateLimit, RateLimiter,
    Responder, ResponderConfig, ResponderStats,
};
use crate::peer_record::{PeerRecord, Reachability};
use crate::pool::ConnId;
use crate::scope::{AddressPolicy, Scope};
use crate::secret::Secret;
use crate::wire::{DialBack, Limits, Message};

pub use claims::{CLAIM_EXPORTER_LABEL, CLAIM_MATERIAL_LEN, ClaimCheckConfig, ClaimCheckStats};

/// The bits of an IPv4 address that make one network for relay diversity.
pub const RELAY_GROUP_V4_BITS: u8 = 24;
/// The bits of an IPv6 address that make one network for relay diversity.
pub const RELAY_GROUP_V6_BITS: u8 = 48;

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
/// | probe_request_limit | 10 DIAL_BACK_PROBEs per second per sending IP, bursts of 64 |
/// | contact_memory | 10 min |
/// | relays | 2 reservations kept while private, on relays of distinct networks (/24, IPv6 /48) while the table has such; a failed relay is avoided for 60 s |
/// | claim_checks | [`ClaimCheckConfig`] |
#[derive(Clone, Debug)]
pub struct ReachConfig {
    /// The STUN responder; `None` leaves Binding requests unanswered.
    pub responder: Option<ResponderConfig>,
    /// Binding transactions toward reflectors.
    pub client: ClientConfig,
    /// Discovery timing.
    pub discovery: DiscoveryConfig,
    /// Run discovery on its own (after bootstrap, or for a node that never
    /// bootstraps, such as a seed, once a peer joined its routing table; on
    /// address change; every `discovery.interval`); off: only an explicit request
    /// ([`Reach::handle_discover`], `Node::discover`) runs it.
    pub auto_discover: bool,
    /// Standard STUN servers (coturn, ...) asked before macula nodes.
    pub stun_servers: Vec<SocketAddr>,
    /// Dial-backs served per asking IP.
    pub dial_back_limit: RateLimit,
    /// Probes sent per target IP when helping.
    pub probe_limit: RateLimit,
    /// DIAL_BACK_PROBE requests served per sending IP. A dial-back server
    /// forwards for many askers and picks the same few helpers for all of
    /// them (a seed node gets every new node's dial-back at once), so this is
    /// far looser than `dial_back_limit`; the per-target `probe_limit` is
    /// what bounds the packets any one address gets.
    pub probe_request_limit: RateLimit,
    /// How long an address we sent to counts as contacted (longer than any
    /// NAT binding lifetime).
    pub contact_memory: Duration,
    /// Reservations a private node keeps, on public nodes from its routing
    /// table (0: none).
    pub relays: usize,
    /// How long a relay that refused or failed is not chosen again while
    /// others are left to ask.
    pub relay_retry: Duration,
    /// While a private node holds fewer reservations than `relays` and no
    /// relay is left to ask (each failed it, or fell silent: a partition of
    /// our own network makes every relay look dead at once), it asks those
    /// again after this delay, doubling while they keep failing, up to
    /// `relay_retry`. Default 2 s.
    pub reserve_retry: Duration,
    /// Checks of the listen addresses peers claim (`claims`).
    pub claim_checks: ClaimCheckConfig,
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
            probe_request_limit: limit(100, 64),
            contact_memory: Duration::from_secs(600),
            relays: 2,
            relay_retry: Duration::from_secs(60),
            reserve_retry: Duration::from_secs(2),
            claim_checks: ClaimCheckConfig::default(),
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
    /// DIAL_BACK_PROBE requests refused whole ([`ProbeRefusal`]).
    pub probe_requests_refused: u64,
    /// DIAL_BACK_PROBE targets refused: not permitted by the address policy,
    /// or on another IP than the sender's while the sender is no dial-back
    /// server.
    pub probe_targets_refused: u64,
    /// Times the node became or stopped being a DHT server.
    pub role_changes: u64,
    /// Peer records we stored (first publication and changes).
    pub peer_records_published: u64,
    /// Peer records found in the DHT that were not acceptable.
    pub peer_records_rejected: u64,
    /// Reservations asked for on relays chosen from the DHT (first ones and
    /// replacements).
    pub relay_reservations_asked: u64,
    /// Checks of peers' claimed listen addresses (`claims`).
    pub claim_checks: ClaimCheckStats,
    /// Inbound connections that came unsolicited to a global address of
    /// ours from a global address we had not sent to
    /// ([`Reach::handle_unsolicited_inbound`]).
    pub unsolicited_inbound: u64,
}

/// What the machine knows of its node from the start.
#[derive(Clone, Debug)]
pub struct ReachSetup {
    /// The node's id.
    pub node: NodeId,
    /// The node's realm (peer records are stored and opened in it).
    pub realm: Realm,
    /// The node's configured listen addresses.
    pub listen_addrs: Vec<SocketAddr>,
    /// Frame and field size limits.
    pub limits: Limits,
    /// The DHT role the node starts in.
    pub mode: Mode,
}

/// The node's state some work needs, read when the work is done
/// ([`Reach::handle_timeout`]).
#[derive(Clone, Copy, Debug)]
pub struct ReachView<'a> {
    /// The DHT routing table (reflectors, relay candidates, relay contacts).
    pub table: &'a RoutingTable,
    /// The relays we hold or are asking for a reservation on.
    pub wanted_relays: &'a [NodeId],
    /// The relays that hold a reservation of ours now.
    pub reserved_relays: &'a [NodeId],
    /// Relays found dropping circuit traffic, not to be reserved on
    /// ([`crate::relay::RelayClient::avoids`]).
    pub avoided_relays: &'a [NodeId],
    /// The avoided relays that only fell silent (none convicted of dropping
    /// circuits): asked again when no other relay is left
    /// ([`ReachConfig::reserve_retry`]).
    pub silent_relays: &'a [NodeId],
    /// Wall-clock time, Unix milliseconds.
    pub unix_ms: u64,
}

/// A ready connection as a dial-back helper candidate, in the Node's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConn {
    /// The connection.
    pub conn: ConnId,
    /// The peer's node id.
    pub peer: Option<NodeId>,
    /// The address its packets come from.
    pub remote: SocketAddr,
    /// Whether the peer said it is a DHT server.
    pub server: bool,
    /// Whether its packets come from an address it listens on (no address
    /// translation in front of it).
    pub untranslated: bool,
}

/// Why a DIAL_BACK_PROBE was refused whole (nothing was sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeRefusal {
    /// The sender's IP asked too often ([`ReachConfig::probe_request_limit`]).
    #[error("the sender asks for dial-back probes too often")]
    RateLimited,
    /// No target may be probed: each is refused by the address policy, or
    /// lies on another IP than the sender's while the sender is no dial-back
    /// server, or its own per-target limit is spent.
    #[error("no target of the dial-back probe may be probed")]
    NoTarget,
}

/// What the reachability machine asks the Node to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ReachOutput {
    /// Send a datagram (STUN responses, requests, dial-back probes).
    Transmit(Transmit),
    /// Send this DIAL_BACK on the control stream of a connected DHT server;
    /// when there is none, tell [`Reach::handle_no_helper`].
    AskDialBack(DialBack),
    /// Send a frame on a connection's control stream.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Message,
    },
    /// Take this DHT role and tell every ready peer (CAPABILITIES).
    Role(Mode),
    /// Our own punch candidates and NAT class, for the upgrades.
    PunchCandidates {
        /// LAN, reflexive and predicted candidates.
        candidates: Vec<Candidate>,
        /// Our NAT's class.
        nat: NatClass,
        /// IP hops to the first reflector ([`NatReport::hops`]).
        hops: Option<u8>,
    },
    /// Ask this relay for a reservation.
    Reserve(dht::Contact),
    /// Store our peer record (with confirmation); report the query with
    /// [`Reach::handle_record_stored`].
    StoreRecord {
        /// Our peer key.
        key: RecordKey,
        /// The encoded record.
        value: Bytes,
        /// The record.
        record: PeerRecord,
    },
    /// Tell the application a discovery run finished.
    Report(NatReport),
    /// A claimed listen address of the peer of `conn` answered its check
    /// (`claims`): the DHT may list the peer there now.
    ClaimVerified {
        /// The connection whose peer claimed it.
        conn: ConnId,
        /// The peer.
        peer: NodeId,
    },
    /// Tell the application a peer-record lookup ended.
    PeerRecord {
        /// The lookup.
        query: QueryId,
        /// Whose record was looked up.
        node: NodeId,
        /// Its newest acceptable record, if any was found.
        record: Option<PeerRecord>,
    },
}

/// The node's reachability machine; see the module docs.
pub struct Reach {
    config: ReachConfig,
    setup: ReachSetup,
    responder: Option<Responder>,
    client: BindingClient,
    discovery: Discovery,
    /// The most contacts the routing table has held (see `handle_contacts`).
    contacts_seen: usize,
    /// Discovery's Binding transactions: `None` for a binding, the TTL for a
    /// hop count's.
    bindings: HashMap<BindingId, Option<u8>>,
    contacted: HashMap<SocketAddr, Instant>,
    asked: HashMap<u64, [u8; 12]>,
    next_request: u64,
    dial_back_limit: RateLimiter,
    probe_limit: RateLimiter,
    probe_request_limit: RateLimiter,
    /// Which addresses a peer may make us probe.
    policy: AddressPolicy,
    /// The addresses datagrams arrive on: the latest IPv4 one and the latest
    /// IPv6 one (a dual-stack socket bound to `[::]` knows its addresses only
    /// from them).
    local: [Option<SocketAddr>; 2],
    /// The address the gateway maps to our socket ([`crate::nat::portmap`]).
    mapped: Option<SocketAddr>,
    /// The mapped address changed: the puncher's candidates and the record
    /// follow.
    mapping_changed: bool,
    record: Option<PeerRecord>,
    announces: HashSet<QueryId>,
    lookups: HashMap<QueryId, NodeId>,
    /// Relays that refused or failed us, and when.
    failed_relays: HashMap<NodeId, Instant>,
    /// Rounds in a row that left us short of reservations with no relay to
    /// ask (reset by a granted reservation).
    reserve_rounds: u32,
    /// When the relays that failed us (or fell silent) are asked again.
    reserve_retry_at: Option<Instant>,
    /// Reservations changed: check the count and the peer record.
    relays_changed: bool,
    /// Checks of peers' claimed listen addresses.
    claims: claims::ClaimChecks,
    /// An unsolicited inbound connection showed that strangers reach us
    /// ([`Reach::handle_unsolicited_inbound`]); void when the socket moves.
    reached_unsolicited: bool,
    /// The peer record may have changed: publish it once no store of it is
    /// under way (two stores of one key at once would race).
    record_due: bool,
    /// A discovery run waits to start.
    start_due: bool,
    /// A DHT bootstrap is under way: the first run waits for its end.
    bootstrapping: bool,
    /// An input came since the last [`Reach::handle_timeout`].
    dirty: bool,
    stats: ReachStats,
    out: OutputQueue<ReachOutput>,
}

impl Reach {
    /// An idle machine drawing its STUN transaction ids and discovery
    /// nonces from keys derived from `secret`.
    pub fn new(config: &ReachConfig, setup: ReachSetup, secret: &Secret) -> Self {
        let policy = AddressPolicy::for_listen(&setup.listen_addrs);
        Self {
            config: config.clone(),
            setup,
            responder: config.responder.clone().map(Responder::new),
            client: BindingClient::new(config.client.clone(), secret.derive("stun-transactions")),
            discovery: Discovery::new(config.discovery.clone(), secret.derive("nat-discovery")),
            contacts_seen: 0,
            bindings: HashMap::default(),
            contacted: HashMap::default(),
            asked: HashMap::default(),
            next_request: 0,
            dial_back_limit: RateLimiter::new(config.dial_back_limit),
            probe_limit: RateLimiter::new(config.probe_limit),
            probe_request_limit: RateLimiter::new(config.probe_request_limit),
            policy,
            local: [None; 2],
            mapped: None,
            mapping_changed: false,
            record: None,
            announces: HashSet::default(),
            lookups: HashMap::default(),
            failed_relays: HashMap::default(),
            reserve_rounds: 0,
            reserve_retry_at: None,
            relays_changed: false,
            claims: claims::ClaimChecks::new(
                config.claim_checks.clone(),
                secret.derive("claim-checks"),
            ),
            reached_unsolicited: false,
            record_due: false,
            start_due: false,
            bootstrapping: false,
            dirty: false,
            stats: ReachStats::default(),
            out: OutputQueue::new(),
        }
    }

    /// The last NAT discovery report.
    pub fn report(&self) -> Option<&NatReport> {
        self.discovery.report()
    }

    /// What the node knows of its own reachability: the last discovery
    /// report's verdict; when it has none (or an undetermined one), public
    /// once an unsolicited inbound connection showed that strangers reach
    /// us ([`Reach::handle_unsolicited_inbound`]).
    pub fn reachability(&self) -> Reachability {
        match self.report().map(|r| r.reachability) {
            Some(known @ (Reachability::Public | Reachability::Private)) => known,
            _ if self.reached_unsolicited => Reachability::Public,
            _ => Reachability::Undetermined,
        }
    }

    /// Whether an inbound connection whose first packet came from `remote`
    /// to our address `local` would be unsolicited: both addresses global
    /// (no NAT rewrote where it went, and it came from the internet) and
    /// nothing sent to `remote`'s IP within [`ReachConfig::contact_memory`]
    /// (no mapping or firewall state of ours let it in).
    pub fn is_unsolicited(&self, now: Instant, local: SocketAddr, remote: SocketAddr) -> bool {
        let global = |a: &SocketAddr| Scope::of(a) == Scope::Global;
        global(&local) && global(&remote) && !self.origin(now, remote).ip_contacted
    }

    /// An inbound connection that was unsolicited
    /// ([`Reach::is_unsolicited`]) completed its handshake and CONNECT (so
    /// its source was not spoofed): strangers reach us at our address, and
    /// until a discovery report says otherwise we count as public.
    pub fn handle_unsolicited_inbound(&mut self, now: Instant) {
        self.touch(now);
        self.stats.unsolicited_inbound += 1;
        self.reached_unsolicited = true;
    }

    /// The peer record we stored last.
    pub fn record(&self) -> Option<&PeerRecord> {
        self.record.as_ref()
    }

    /// Counters of STUN, discovery, dial-backs and peer records.
    pub fn stats(&self) -> ReachStats {
        let mut stats = self.stats;
        stats.discovery = self.discovery.stats();
        stats.client = self.client.stats();
        stats.responder = (self.responder.as_ref())
            .map(Responder::stats)
            .unwrap_or_default();
        stats.claim_checks = self.claims.stats;
        stats
    }

    /// Runs discovery at the next [`Reach::handle_timeout`] (abandoning a run
    /// under way).
    pub fn handle_discover(&mut self, now: Instant) {
        self.touch(now);
        self.start_due = true;
    }

    /// We sent a datagram to `destination`: NAT state for us may exist there
    /// from now on, so a dial-back probe from it proves nothing.
    pub fn handle_sent(&mut self, now: Instant, destination: SocketAddr) {
        if self.contacted.len() >= MAX_CONTACTED && !self.contacted.contains_key(&destination) {
            let mut times: Vec<Instant> = self.contacted.values().copied().collect();
            times.sort_unstable();
            let median = times[times.len() / 2];
            self.contacted.retain(|_, at| *at > median);
        }
        self.contacted.insert(canonical(destination), now);
    }

    /// A STUN datagram: a probe of ours, a request for the responder, or a
    /// response for the client. False when it was dropped (an indication, or
    /// a request while the responder is off).
    pub fn handle_stun(&mut self, now: Instant, datagram: Datagram) -> bool {
        self.touch(now);
        self.local[family(&datagram.local)] = Some(datagram.local);
        match stun::peek_class(&datagram.payload) {
            Some(class) if self.claim_stun(now, &datagram, class) => true,
            Some(Class::Request) => {
                let nonce: Option<[u8; 12]> =
                    (datagram.payload.get(8..20)).and_then(|id| id.try_into().ok());
                if let Some(nonce) = nonce.filter(|n| self.discovery.expects_probe(n)) {
                    let origin = self.origin(now, datagram.remote);
                    self.discovery.handle_probe(now, nonce, origin);
                    return true;
                }
                let Some(responder) = self.responder.as_mut() else {
                    return false;
                };
                responder.handle_input(now, Input::Datagram(datagram));
                while let Some(output) = responder.poll_output() {
                    match output {
                        Output::Transmit(t) => self.out.push(ReachOutput::Transmit(t)),
                        Output::Event(never) => match never {},
                        // A STUN responder answers from its socket only.
                        Output::Sockets(_) => {}
                    }
                }
                true
            }
            Some(Class::Success | Class::Error) => {
                self.client.handle_input(now, Input::Datagram(datagram));
                true
            }
            _ => false,
        }
    }

    /// The socket moved: what we knew of the NAT is void.
    pub fn handle_address_changed(&mut self, now: Instant, new: SocketAddr) {
        self.touch(now);
        self.local = [None; 2];
        self.local[family(&new)] = Some(new);
        self.contacted.clear();
        self.reached_unsolicited = false;
        self.start_due |= self.config.auto_discover;
    }

    /// The gateway maps `external` to our socket, or (`None`) no longer
    /// does: a mapped address is a reflexive candidate anyone can reach, so
    /// it goes first into the puncher's candidates and the peer record, and
    /// the NAT class the puncher announces is open (see `report`).
    pub fn handle_mapped(&mut self, now: Instant, external: Option<SocketAddr>) {
        self.touch(now);
        if self.mapped != external {
            self.mapped = external;
            self.mapping_changed = true;
        }
    }

    /// The address the gateway maps to our socket, while it does.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// A DHT bootstrap started: the first discovery run waits for its end.
    pub fn handle_bootstrap_started(&mut self, now: Instant) {
        self.touch(now);
        self.bootstrapping = true;
    }

    /// The DHT bootstrap ended: the first one starts discovery.
    pub fn handle_bootstrapped(&mut self, now: Instant) {
        self.touch(now);
        self.bootstrapping = false;
        self.start_due |= self.first_run_waits();
    }

    /// The routing table holds `contacts` peers. A node that is not
    /// bootstrapping (a seed started without seeds of its own, which others
    /// join) starts its first discovery once someone is there to ask, so it
    /// too learns its reachability and publishes its peer record.
    pub fn handle_contacts(&mut self, now: Instant, contacts: usize) {
        if contacts > 0 && !self.bootstrapping && self.first_run_waits() && !self.start_due {
            self.touch(now);
            self.start_due = true;
        }
        // More contacts than at the last run's end may mean a helper for an
        // undetermined verdict: the retries start over.
        if contacts > self.contacts_seen {
            self.discovery.handle_contacts_grew(now);
            self.contacts_seen = contacts;
        }
    }

    /// Discovery is automatic and has never run.
    fn first_run_waits(&self) -> bool {
        self.config.auto_discover && self.discovery.stats().runs == 0
    }

    /// The Node started lookup `query` of `node`'s peer record; its answer
    /// goes to [`Reach::handle_values_found`].
    pub fn handle_lookup(&mut self, now: Instant, query: QueryId, node: NodeId) {
        self.touch(now);
        self.lookups.insert(query, node);
    }

    /// Records found by DHT query `query`; false when the query is not one
    /// of our peer-record lookups.
    pub fn handle_values_found(
        &mut self,
        now: Instant,
        unix_ms: u64,
        query: QueryId,
        records: &[crate::record::SignedRecord],
    ) -> bool {
        let Some(node) = self.lookups.remove(&query) else {
            return false;
        };
        self.touch(now);
        let (realm, limits) = (&self.setup.realm, &self.setup.limits);
        let accepted: Vec<PeerRecord> = records
            .iter()
            .filter_map(|r| PeerRecord::open(r, realm, unix_ms, limits).ok())
            .filter(|r| r.node_id == node)
            .collect();
        self.stats.peer_records_rejected += (records.len() - accepted.len()) as u64;
        let record = accepted.into_iter().max_by_key(|r| r.seq);
        self.out.push(ReachOutput::PeerRecord {
            query,
            node,
            record,
        });
        true
    }

    /// A store of ours was confirmed; false when `query` is not one of ours.
    pub fn handle_store_confirmed(&mut self, now: Instant, query: QueryId) -> bool {
        let ours = self.announces.remove(&query);
        if ours {
            self.touch(now);
        }
        ours
    }

    /// The Node started storing `record` ([`ReachOutput::StoreRecord`]) as
    /// DHT query `query`.
    pub fn handle_record_stored(&mut self, now: Instant, query: QueryId, record: PeerRecord) {
        self.touch(now);
        self.announces.insert(query);
        self.stats.peer_records_published += 1;
        self.record = Some(record);
    }

    /// Our reservations changed; `failed` names a relay that refused or
    /// failed us, avoided for [`ReachConfig::relay_retry`].
    pub fn handle_relays_changed(&mut self, now: Instant, failed: Option<NodeId>) {
        self.touch(now);
        match failed {
            Some(relay) => {
                self.failed_relays.insert(relay, now);
            }
            None => self.reserve_rounds = 0,
        }
        self.relays_changed = true;
    }

    /// A relay we avoided for falling silent answers again
    /// ([`crate::relay::RelayClient::handle_relay_answered`]): its failure is
    /// forgotten, so it may be reserved on at once.
    pub fn handle_relay_answered(&mut self, now: Instant, relay: &NodeId) {
        self.touch(now);
        self.failed_relays.remove(relay);
        self.relays_changed = true;
    }

    /// Timers of the STUN client and discovery, the periodic run, and then
    /// the work that waits on the node's state. Early calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant, view: &ReachView<'_>) {
        self.out.mark(now);
        self.client.handle_input(now, Input::Timeout);
        self.discovery.handle_timeout(now);
        if self.config.auto_discover && self.discovery.due(now) {
            self.start_due = true;
        }
        if self.reserve_retry_at.is_some_and(|at| at <= now) {
            self.relays_changed = true;
        }
        let memory = self.config.contact_memory;
        self.contacted
            .retain(|_, at| now.saturating_duration_since(*at) < memory);
        self.claims_timeout(now);
        self.settle(now, view);
    }

    /// Runs everything that waits until none of it has anything left.
    fn settle(&mut self, now: Instant, view: &ReachView<'_>) {
        self.dirty = false;
        if std::mem::take(&mut self.start_due) {
            self.start_discovery(now, view);
        }
        loop {
            let mut busy = false;
            while let Some(action) = self.discovery.poll_output() {
                busy = true;
                match action {
                    DiscoveryAction::Bind { reflector } => {
                        let change = stun::ChangeRequest::default();
                        let id = self.client.start(now, reflector, change);
                        self.bindings.insert(id, None);
                    }
                    DiscoveryAction::CountHops { reflector, ttl } => {
                        let change = stun::ChangeRequest::default();
                        let id = self
                            .client
                            .start_with_ttl(now, reflector, change, Some(ttl));
                        self.bindings.insert(id, Some(ttl));
                    }
                    DiscoveryAction::DialBack {
                        source,
                        nonce,
                        addrs,
                    } => self.ask_dial_back(source, nonce, addrs),
                }
            }
            while let Some(output) = self.client.poll_output() {
                busy = true;
                match output {
                    Output::Transmit(t) => self.out.push(ReachOutput::Transmit(t)),
                    Output::Event(outcome) => {
                        match self.bindings.remove(&outcome.id) {
                            Some(None) => self.discovery.handle_binding(now, &outcome),
                            Some(Some(ttl)) => {
                                // Any answer, an error too, came back from the reflector.
                                let answered = !matches!(
                                    outcome.result,
                                    Err(stun::BindingError::TimedOut { .. })
                                );
                                self.discovery.handle_hop(now, ttl, answered);
                            }
                            None => {}
                        }
                    }
                    // A STUN client sends from the node's socket only.
                    Output::Sockets(_) => {}
                }
            }
            if let Some(report) = self.discovery.take_finished() {
                busy = true;
                self.apply_report(&report);
                self.out.push(ReachOutput::Report(report));
            }
            if std::mem::take(&mut self.mapping_changed) {
                busy = true;
                let report = self.report().cloned();
                self.feed_puncher(report.as_ref());
                self.record_due = true;
            }
            if std::mem::take(&mut self.relays_changed) {
                busy = true;
                self.keep_relays(now, view);
                self.record_due = true;
            }
            if self.record_due && self.announces.is_empty() {
                self.record_due = false;
                busy |= self.publish_record(view);
            }
            if !busy {
                break;
            }
        }
    }

    /// Starts a discovery run toward reflectors chosen as the module docs
    /// say.
    fn start_discovery(&mut self, now: Instant, view: &ReachView<'_>) {
        for (id, _) in self.bindings.drain() {
            self.client.cancel(id);
        }
        self.asked.clear();
        let local = self.local_addrs();
        let reflectors = self.reflectors(view.table, &local);
        self.discovery.start(now, &reflectors, local);
    }

    /// The socket's own addresses: the configured listen addresses and the
    /// ones datagrams arrive on (one per family).
    fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut local: Vec<SocketAddr> = self.setup.listen_addrs.clone();
        for addr in self.local.into_iter().flatten() {
            if !local.contains(&addr) {
                local.push(addr);
            }
        }
        local
    }

    /// Whether `source` is an address (or on an IP) we sent to lately.
    fn origin(&self, now: Instant, source: SocketAddr) -> ProbeOrigin {
        let source = canonical(source);
        let memory = self.config.contact_memory;
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < memory;
        ProbeOrigin {
            ip_contacted: (self.contacted.iter())
                .any(|(addr, at)| addr.ip() == source.ip() && fresh(at)),
            addr_contacted: self.contacted.get(&source).is_some_and(fresh),
        }
    }

    /// Marks an input at `now`: work may wait for the next timeout.
    fn touch(&mut self, now: Instant) {
        self.out.mark(now);
        self.dirty = true;
    }
}

impl Child for Reach {
    type Output = ReachOutput;

    fn poll_output(&mut self) -> Option<ReachOutput> {
        self.out.pop()
    }

    /// The STUN client's and discovery's deadlines; the latest input's time
    /// while output or work waits.
    fn poll_timeout(&self) -> Option<Instant> {
        let waiting = self.dirty.then(|| self.out.last_now()).flatten();
        let timers = [
            self.client.poll_timeout(),
            self.discovery.poll_timeout(),
            self.claims.deadline(),
            self.reserve_retry_at,
        ];
        self.out.deadline(timers.into_iter().chain([waiting]))
    }
}

/// The slot of `addr`'s family in [`Reach`]'s local addresses: 0 for IPv4
/// (IPv4-mapped IPv6 too), 1 for IPv6.
fn family(addr: &SocketAddr) -> usize {
    usize::from(addr.ip().to_canonical().is_ipv6())
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
