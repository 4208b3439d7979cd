//! The DHT state machine: operations on top of the table, lookups,
//! request correlation and the record store.
//!
//! [`Dht`] follows the sans-IO contract: inputs arrive through `handle_*`
//! methods stamped with the monotonic `now` and, where records are involved,
//! wall-clock Unix milliseconds; outputs ([`DhtOutput`]: requests to send,
//! replies to inbound requests, events for the caller) are drained with
//! [`Dht::poll_output`]; [`Dht::poll_timeout`] says when to call
//! [`Dht::handle_timeout`]. STOREs produced for one peer within one call go
//! out as one batch request.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smallvec::SmallVec;

use crate::collections::HashMap;
use crate::contract::{Child, OutputQueue};
use crate::id::{ID_LEN, Identity, NodeId, RecordKey};
use crate::record::SignedRecord;
use crate::scope::AddressPolicy;

use super::breaker::CircuitBreakers;
use super::config::{DhtConfig, Mode};
use super::disjoint::DisjointPaths;
use super::fit;
use super::lookup::{LookupConfig, LookupStep};
use super::message::{
    Contact, ErrorCode, QueryId, RejectReason, Request, RequestId, Response, StoreStatus,
};
use super::metrics::DhtMetrics;
use super::near::NearRadius;
use super::requests::{ReplyError, RequestTable, rtt_deadline};
use super::routing::{InsertOutcome, RoutingTable};
use super::store::RecordStore;
use crate::limiter::InboundLimiter;

/// What went wrong starting an operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// The value is larger than any node's store accepts.
    #[error("value of {len} bytes is over the {limit}-byte record limit")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit ([`crate::dht::StoreLimits::max_value_len`]).
        limit: usize,
    },
}

/// Who sent an inbound request, as the Node saw it.
///
/// The listen addresses a peer claims in its CONNECT are its own say-so: a
/// stranger can claim a victim's address, and whoever dials the contacts we
/// hand out would send to the victim. So a claimed address is handed out
/// only once verified: it is the address the peer's packets come from, or
/// it answered a dial-back (a claim check, [`crate::nat::reach`], whose
/// answer only the peer at the other end of our connection can give); a
/// server that claims nothing is handed out at its source address. A peer
/// with no verified address (every claim differs from its source and none
/// answered a check yet, or it comes over a relay and has none checked)
/// does not enter the routing table this way; it may still enter when we
/// reach it at an address learned in a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The peer's node id (authenticated by the TLS handshake).
    pub id: NodeId,
    /// It announced itself a DHT server (only servers enter the table).
    pub server: bool,
    /// The listen addresses its CONNECT claimed (unverified).
    pub claimed: Vec<SocketAddr>,
    /// The address its packets come from; `None` over a relay.
    pub source: Option<SocketAddr>,
    /// Claimed addresses that answered a claim check (only those it still
    /// claims count).
    pub proven: Vec<SocketAddr>,
}

impl Inbound {
    /// The claimed addresses that are verified (type docs): the one equal
    /// to the source first, then those proven by a check; the source when
    /// nothing is claimed.
    fn verified(&self) -> SmallVec<[SocketAddr; 2]> {
        let canonical = |a: &SocketAddr| (a.ip().to_canonical(), a.port());
        let mut addrs: SmallVec<[SocketAddr; 2]> = SmallVec::new();
        match self.source {
            Some(source) if self.claimed.is_empty() => addrs.push(source),
            Some(source) => addrs.extend(
                (self.claimed.iter())
                    .filter(|a| canonical(a) == canonical(&source))
                    .take(1)
                    .copied(),
            ),
            None => {}
        }
        for proven in &self.proven {
            let claimed = self
                .claimed
                .iter()
                .any(|a| canonical(a) == canonical(proven));
            if claimed && !addrs.iter().any(|a| canonical(a) == canonical(proven)) {
                addrs.push(*proven);
            }
        }
        addrs
    }
}

/// Why an outbound request failed, as the Node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened or was lost: the request may not
    /// have arrived, so a store is retried (on a new connection).
    Connection,
    /// The peer reset the stream or broke the protocol: no retry.
    Refused,
    /// The path to the peer was lost (its connection ran over a relay
    /// circuit that closed): the peer is not to blame, so it is neither
    /// marked stale nor counted by its breaker; a store is retried.
    Path,
}

/// How one lookup went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Requests sent.
    pub requests: u32,
    /// Requests answered.
    pub answered: u32,
    /// Requests failed or timed out.
    pub failed: u32,
    /// Discovery depth of the closest node that answered (0: it was known
    /// before the lookup started).
    pub closest_depth: Option<u8>,
    /// From start to result.
    pub duration: Duration,
    /// The query ran out of time.
    pub timed_out: bool,
}

/// What the DHT tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// A `find_node` finished.
    NodesFound {
        /// The operation.
        query: QueryId,
        /// The id looked up.
        target: NodeId,
        /// The closest nodes that answered, closest first (at most k).
        closest: Vec<Contact>,
        /// How it went.
        stats: QueryStats,
    },
    /// A `query_with_response` finished.
    ValuesFound {
        /// The operation.
        query: QueryId,
        /// The key.
        key: RecordKey,
        /// Verified, live records, one per provider (the newest).
        records: Vec<SignedRecord>,
        /// The nodes that answered the query.
        answered: Vec<NodeId>,
        /// Served from the local cache without a network query.
        from_cache: bool,
        /// How it went.
        stats: QueryStats,
    },
    /// A `store_with_confirmation` (or a republish) finished.
    StoreConfirmed {
        /// The operation.
        query: QueryId,
        /// The key.
        key: RecordKey,
        /// The nodes that acknowledged the record.
        acked: Vec<NodeId>,
        /// Acknowledgements that were needed.
        quorum: usize,
        /// `acked.len() >= quorum`.
        success: bool,
        /// This was an automatic republish.
        republish: bool,
    },
    /// A `bootstrap` finished its self-lookup (bucket refreshes continue).
    Bootstrapped {
        /// The operation.
        query: QueryId,
        /// Routing-table entries now.
        table_size: usize,
    },
}

/// What the DHT asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtOutput {
    /// Send `request` to `peer`; report its reply with
    /// [`Dht::handle_response`] or its failure with [`Dht::handle_failure`].
    Request {
        /// Echoed by the reply.
        request_id: RequestId,
        /// Whom to ask.
        peer: Contact,
        /// What to ask.
        request: Request,
    },
    /// Answer an inbound request.
    Reply {
        /// The id the request carried.
        request_id: RequestId,
        /// Who asked.
        peer: NodeId,
        /// The answer.
        response: Response,
    },
    /// Tell the caller.
    Event(DhtEvent),
}

/// A record waiting to go to one peer.
#[derive(Clone, Debug)]
struct StoreItem {
    op: QueryId,
    record: SignedRecord,
    attempt: u32,
}

#[derive(Clone, Debug)]
enum Purpose {
    Lookup(QueryId),
    Ping,
    Store(Vec<StoreItem>),
}

#[derive(Clone, Debug)]
struct Sent {
    contact: Contact,
    purpose: Purpose,
}

#[derive(Clone, Debug)]
enum Goal {
    FindNode,
    /// A self-lookup; `attempt` 0 is the caller's, later ones are retries.
    Bootstrap {
        seeds: Vec<Contact>,
        attempt: u32,
    },
    Refresh,
    GetValue {
        key: RecordKey,
        records: BTreeMap<NodeId, SignedRecord>,
        answered: Vec<NodeId>,
    },
    PutValue {
        record: Box<SignedRecord>,
        republish: bool,
    },
}

#[derive(Clone, Debug)]
struct StoreOp {
    record: SignedRecord,
    republish: bool,
    quorum: usize,
    acked: Vec<NodeId>,
    unsettled: usize,
}

#[derive(Clone, Debug)]
enum OpState {
    Lookup {
        iter: DisjointPaths,
        goal: Goal,
        stats: QueryStats,
    },
    Storing(StoreOp),
}

#[derive(Clone, Debug)]
struct Operation {
    started: Instant,
    deadline: Instant,
    state: OpState,
}

#[derive(Clone, Debug)]
struct CacheEntry {
    expires: Instant,
    records: Vec<SignedRecord>,
    answered: Vec<NodeId>,
}

#[derive(Clone, Debug)]
struct Published {
    value: Bytes,
    next: Instant,
    /// The record as last signed and sent, so that our own lookups find it.
    record: Option<SignedRecord>,
    /// When the last store of it finished, and the size of our routing
    /// table then if fewer than k nodes acknowledged it (a thin store, see
    /// [`THIN_REPUBLISH_AFTER`]).
    thin: Option<(Instant, usize)>,
}

impl Published {
    /// Whether the last store was thin and our routing table has since
    /// doubled (by 4 entries at least), `THIN_REPUBLISH_AFTER` ago or more.
    fn outgrown(&self, now: Instant, table: usize) -> bool {
        self.thin.is_some_and(|(at, then)| {
            table >= then.saturating_mul(2).max(then + 4) && now >= at + THIN_REPUBLISH_AFTER
        })
    }
}

/// A store of our record that fewer than k nodes acknowledged was made while
/// our routing table was small: the network just forming, or we just joined
/// it (or it is small). Once the table has doubled, the k closest nodes of
/// the network we now see may not hold the record, so it is stored again
/// then, at most once per this time, rather than at the republish interval.
/// Why (issue 17, the 100-node cluster, seed 2, in three runs): two of the
/// first nodes to start subscribed with 3 and 4 nodes in their tables; their
/// records went to the seeds, one of which was killed 33 s into the run, and
/// from 40 s on no lookup found them: publications to them were lost for up
/// to 156 s. A small network whose tables do not grow stores no more often.
pub const THIN_REPUBLISH_AFTER: Duration = Duration::from_secs(30);

/// A Kademlia node: routing table, lookups, record store, operations.
#[derive(Debug)]
pub struct Dht {
    config: DhtConfig,
    identity: Identity,
    local: NodeId,
    table: RoutingTable,
    requests: RequestTable<Sent>,
    breakers: CircuitBreakers,
    limiter: InboundLimiter<NodeId>,
    records: RecordStore,
    cache: HashMap<RecordKey, CacheEntry>,
    published: BTreeMap<RecordKey, Published>,
    rtts: HashMap<NodeId, Duration>,
    typical_rtt: Option<Duration>,
    ops: BTreeMap<QueryId, Operation>,
    op_deadlines: BTreeSet<(Instant, QueryId)>,
    next_query: u64,
    retries: BTreeMap<(Instant, u64), (Contact, StoreItem)>,
    next_retry: u64,
    batch: BTreeMap<NodeId, (Contact, Vec<StoreItem>)>,
    outputs: OutputQueue<DhtOutput>,
    /// When to retry a bootstrap that left the table short: (when, seeds,
    /// attempt).
    rejoin: Option<(Instant, Vec<Contact>, u32)>,
    /// When to refresh the buckets again (armed by the first bootstrap).
    next_refresh: Option<Instant>,
    next_sweep: Option<Instant>,
    metrics: DhtMetrics,
    rng: ChaCha8Rng,
    /// Which addresses contacts may carry into the table and lookups.
    policy: AddressPolicy,
}

impl Dht {
    /// A DHT node with `identity`, randomness from `seed`.
    pub fn new(config: DhtConfig, identity: Identity, seed: u64) -> Self {
        let local = identity.node_id();
        Self {
            table: RoutingTable::new(local, config.k).with_diversity(config.diversity),
            breakers: CircuitBreakers::new(
                config.breaker_threshold,
                config.breaker_cool_down,
                config.max_tracked_peers,
            ),
            limiter: InboundLimiter::new(
                config.inbound_burst,
                config.inbound_per_sec,
                config.max_tracked_peers,
            ),
            records: RecordStore::new(config.store_limits),
            config,
            identity,
            local,
            requests: RequestTable::default(),
            cache: HashMap::default(),
            published: BTreeMap::new(),
            rtts: HashMap::default(),
            typical_rtt: None,
            ops: BTreeMap::new(),
            op_deadlines: BTreeSet::new(),
            next_query: 0,
            retries: BTreeMap::new(),
            next_retry: 0,
            batch: BTreeMap::new(),
            outputs: OutputQueue::new(),
            rejoin: None,
            next_refresh: None,
            next_sweep: None,
            metrics: DhtMetrics::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            policy: AddressPolicy {
                allow_loopback: false,
            },
        }
    }

    /// Sets which addresses contacts may carry (the Node's, from its listen
    /// addresses: loopback only for a node on loopback). Until then,
    /// loopback addresses are refused.
    pub fn set_address_policy(&mut self, policy: AddressPolicy) {
        self.policy = policy;
    }

    /// Drops the addresses of `contact` the address policy refuses; false
    /// (and counted) when none is left.
    fn permitted(&mut self, contact: &mut Contact) -> bool {
        let before = contact.addrs.len();
        let policy = self.policy;
        contact.addrs.retain(|a| policy.permits(a));
        let refused = before - contact.addrs.len();
        self.metrics.addresses_refused += refused as u64;
        !contact.addrs.is_empty()
    }

    /// Our id.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// Whether this node serves the DHT now.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Starts or stops serving (reachability decides, DESIGN.md "DHT"): a
    /// client answers every request with `Refused` and is not added to
    /// others' tables.
    pub fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
    }

    /// Drops `peer` from the routing table (it stopped serving); true when
    /// it was there.
    pub fn forget_peer(&mut self, peer: &NodeId) -> bool {
        self.table.remove(peer)
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The records held for others.
    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    /// Counters so far.
    pub fn metrics(&self) -> &DhtMetrics {
        &self.metrics
    }

    /// Operations still running.
    pub fn running_operations(&self) -> usize {
        self.ops.len()
    }

    /// Outbound requests awaiting a reply.
    pub fn outstanding_requests(&self) -> usize {
        self.requests.len()
    }

    fn new_query(&mut self) -> QueryId {
        let q = QueryId(self.next_query);
        self.next_query += 1;
        q
    }

    fn start_lookup(
        &mut self,
        now: Instant,
        target: NodeId,
        goal: Goal,
        extra_seeds: Vec<Contact>,
        timeout: Duration,
    ) -> QueryId {
        let q = self.new_query();
        let mut seeds = self.table.closest(&target, self.config.k, None);
        if seeds.is_empty() {
            // Every entry went stale (a partition, an outage): ask them anyway, as
            // nothing else would ever revive one that is back (issue 17).
            seeds = self.table.closest_including_stale(&target, self.config.k);
            // Their breakers, opened by the same outage, would refuse every
            // one: each may send its half-open probe now.
            for seed in &seeds {
                self.breakers.probe_early(&seed.id, now);
            }
        }
        seeds.extend(extra_seeds.into_iter().filter(|c| c.id != self.local));
        let num_results = match goal {
            Goal::Refresh => self.config.refresh_lookup_results,
            _ => self.config.k,
        };
        let config = LookupConfig {
            parallelism: self.config.alpha,
            num_results,
            diversity: self.config.diversity,
            near: self.near_radius(num_results),
        };
        let iter = DisjointPaths::new(target, config, self.config.disjoint_paths, seeds);
        let deadline = now + timeout;
        self.op_deadlines.insert((deadline, q));
        self.ops.insert(
            q,
            Operation {
                started: now,
                deadline,
                state: OpState::Lookup {
                    iter,
                    goal,
                    stats: QueryStats::default(),
                },
            },
        );
        self.drive(now, q);
        q
    }

    /// Where the `n` closest nodes to a target are expected, judged from
    /// our own k closest neighbours; `None` until the table holds k of them
    /// (or with [`DhtConfig::near_margin_percent`] 0).
    fn near_radius(&self, n: usize) -> Option<NearRadius> {
        let k = self.config.k;
        let neighbours = self.table.closest(&self.local, k, None);
        let kth = neighbours.get(k.checked_sub(1)?)?;
        let margin = self.config.near_margin_percent;
        NearRadius::estimate(&self.local.distance(&kth.id), k, n, margin)
    }

    /// Looks up the k closest nodes to `target`; ends with
    /// [`DhtEvent::NodesFound`].
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> QueryId {
        self.begin(now);
        self.metrics.queries += 1;
        let timeout = self.config.query_timeout;
        let q = self.start_lookup(now, target, Goal::FindNode, Vec::new(), timeout);
        self.end(now);
        q
    }

    /// Joins the network through `seeds` (DHT servers): looks up our own id,
    /// then refreshes the buckets farther than our nearest neighbour. Ends
    /// with [`DhtEvent::Bootstrapped`] after the self-lookup. While the table
    /// holds fewer than k entries afterwards (the seeds knew too few nodes),
    /// the self-lookup is retried with backoff, `bootstrap_retries` times.
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<Contact>) -> QueryId {
        self.begin(now);
        let q = self.self_lookup(now, seeds, 0);
        self.end(now);
        q
    }

    fn self_lookup(&mut self, now: Instant, seeds: Vec<Contact>, attempt: u32) -> QueryId {
        let (target, timeout) = (self.local, self.config.query_timeout);
        let goal = Goal::Bootstrap {
            seeds: seeds.clone(),
            attempt,
        };
        self.start_lookup(now, target, goal, seeds, timeout)
    }

    /// Forgets the cached result of value queries under `key`, so that the
    /// next [`Dht::query_with_response`] asks the network: for a caller that
    /// keeps its own cache of the result, whose expiry must mean a fresh
    /// lookup.
    pub fn uncache(&mut self, key: &RecordKey) {
        self.cache.remove(key);
    }

    /// Finds the records under `key` and who holds them. Ends with
    /// [`DhtEvent::ValuesFound`] (at once when cached).
    pub fn query_with_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        key: RecordKey,
        timeout: Duration,
    ) -> QueryId {
        self.begin(now);
        self.metrics.queries += 1;
        let cached = self.cache.get(&key).filter(|c| c.expires > now).cloned();
        let local = self.local_records(&key, unix_ms);
        let q = if let Some(hit) = cached {
            self.metrics.cache_hits += 1;
            let q = self.new_query();
            let mut records = local;
            for record in hit.records {
                if record.expires_at_ms() > unix_ms {
                    keep_newest(&mut records, record);
                }
            }
            let records = records.into_values().collect();
            self.outputs.push(DhtOutput::Event(DhtEvent::ValuesFound {
                query: q,
                key,
                records,
                answered: hit.answered,
                from_cache: true,
                stats: QueryStats::default(),
            }));
            q
        } else {
            self.metrics.cache_misses += 1;
            let goal = Goal::GetValue {
                key,
                records: local,
                answered: Vec::new(),
            };
            self.start_lookup(now, key.as_node_id(), goal, Vec::new(), timeout)
        };
        self.end(now);
        q
    }

    /// The live records under `key` this node holds itself: those stored
    /// here by others (a lookup never asks its own node) and our own
    /// published one, newest per provider.
    fn local_records(&self, key: &RecordKey, unix_ms: u64) -> BTreeMap<NodeId, SignedRecord> {
        let mut records = BTreeMap::new();
        let own = self.published.get(key).and_then(|p| p.record.clone());
        let own = own.filter(|r| r.expires_at_ms() > unix_ms);
        for record in self.records.get(key, unix_ms).into_iter().chain(own) {
            keep_newest(&mut records, record);
        }
        records
    }

    /// Signs `value` under `key` with our identity, stores it on the k nodes
    /// closest to `key` and republishes it every `republish_interval` until
    /// [`Dht::unpublish`]. Ends with [`DhtEvent::StoreConfirmed`].
    pub fn store_with_confirmation(
        &mut self,
        now: Instant,
        unix_ms: u64,
        key: RecordKey,
        value: Bytes,
        timeout: Duration,
    ) -> Result<QueryId, DhtError> {
        let limit = self.config.store_limits.max_value_len;
        if value.len() > limit {
            return Err(DhtError::ValueTooLarge {
                len: value.len(),
                limit,
            });
        }
        self.begin(now);
        let next = now + self.config.republish_interval;
        self.published.insert(
            key,
            Published {
                value: value.clone(),
                next,
                record: None,
                thin: None,
            },
        );
        let q = self.publish(now, unix_ms, key, value, timeout, false);
        self.end(now);
        Ok(q)
    }

    /// Stops republishing `key` (the records already stored expire with their TTL).
    pub fn unpublish(&mut self, key: &RecordKey) {
        self.published.remove(key);
    }

    fn publish(
        &mut self,
        now: Instant,
        unix_ms: u64,
        key: RecordKey,
        value: Bytes,
        timeout: Duration,
        republish: bool,
    ) -> QueryId {
        self.metrics.stores += 1;
        let ttl = u32::try_from(self.config.record_ttl.as_secs()).unwrap_or(u32::MAX);
        let record = SignedRecord::sign(&self.identity, key, value, unix_ms, ttl);
        if let Some(published) = self.published.get_mut(&key) {
            published.record = Some(record.clone());
        }
        let goal = Goal::PutValue {
            record: Box::new(record),
            republish,
        };
        self.start_lookup(now, key.as_node_id(), goal, Vec::new(), timeout)
    }

    /// The connection to `peer` measured `rtt` (first reported when the
    /// connection comes up): lookups wait one exchange at this RTT plus the
    /// slack for the requests made to it from now, and the typical RTT
    /// (the wait for a peer without a connection) follows it.
    pub fn handle_rtt(&mut self, peer: NodeId, rtt: Duration) {
        if !self.rtts.contains_key(&peer) && self.rtts.len() >= self.config.max_tracked_peers {
            let table = &self.table;
            self.rtts.retain(|id, _| table.contains(id));
        }
        if self.rtts.len() < self.config.max_tracked_peers {
            self.rtts.insert(peer, rtt);
        }
        self.typical_rtt = Some(match self.typical_rtt {
            None => rtt,
            Some(t) => (t * 7 + rtt) / 8,
        });
    }

    /// Our request `request_id` went out on a connection that is up (its
    /// handshake and CONNECT done), whose RTT is `rtt`: it fails unanswered
    /// a few RTTs from now ([`DhtConfig::request_rtt_factor`]) rather than
    /// at the cap it got while it might still wait for a connection, and its
    /// lookup waits one exchange plus the slack from now. A lookup that
    /// already stopped waiting for it (no connection then) awaits its late
    /// answer as an overdue one.
    pub fn handle_sent(&mut self, now: Instant, request_id: RequestId, rtt: Duration) {
        let (hard, soft) = (now + self.hard_wait(Some(rtt)), now + self.soft_wait(rtt));
        let Some(o) = self.requests.on_wire(request_id, hard, soft) else {
            return;
        };
        if let (&Purpose::Lookup(q), None) = (&o.purpose.purpose, o.soft_deadline)
            && let Some(Operation {
                state: OpState::Lookup { iter, .. },
                ..
            }) = self.ops.get_mut(&q)
        {
            iter.on_alive(&o.peer);
        }
    }

    /// The connection to `peer` is gone: its RTT is unknown again.
    pub fn handle_connection_closed(&mut self, peer: &NodeId) {
        self.rtts.remove(peer);
    }

    /// `peer` said it is shutting down: it is marked stale, so it is no
    /// longer handed out or asked (lookups would otherwise wait for it to
    /// time out), and is the first to be replaced. Its next answer, should
    /// it come back, revives it.
    pub fn handle_peer_left(&mut self, peer: &NodeId) {
        self.rtts.remove(peer);
        self.table.mark_stale(peer);
    }

    /// An inbound `request` from `from` (a DHT server enters the routing
    /// table at its verified address, [`Inbound`]). The reply is an output.
    pub fn handle_request(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: &Inbound,
        request_id: RequestId,
        request: Request,
    ) {
        self.begin(now);
        let response = self.serve(now, unix_ms, from, request);
        if let Some(response) = response {
            self.outputs.push(DhtOutput::Reply {
                request_id,
                peer: from.id,
                response,
            });
        }
        self.end(now);
    }

    /// A claimed address of `from` answered its check since its last
    /// request: a server enters the table at its verified addresses now.
    pub fn handle_claims_verified(&mut self, now: Instant, from: &Inbound) {
        self.begin(now);
        if from.id != self.local && self.config.mode == Mode::Server {
            self.admit_server(now, from);
        }
        self.end(now);
    }

    /// A DHT server that talked to us enters the table at its verified
    /// addresses ([`Inbound`]); one with none is counted.
    fn admit_server(&mut self, now: Instant, from: &Inbound) {
        if !from.server {
            return;
        }
        let addrs = from.verified();
        if addrs.is_empty() && !from.claimed.is_empty() {
            self.metrics.unverified_claims += 1;
        }
        self.seen_alive(now, Contact { id: from.id, addrs });
    }

    fn serve(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: &Inbound,
        request: Request,
    ) -> Option<Response> {
        if from.id == self.local {
            self.metrics.self_id_claims += 1;
            return None;
        }
        if self.config.mode == Mode::Client {
            return Some(Response::Error(ErrorCode::Refused));
        }
        if !self.limiter.allow(&from.id, now) {
            self.metrics.inbound_overloaded += 1;
            return Some(Response::Error(ErrorCode::Overloaded));
        }
        self.admit_server(now, from);
        self.metrics.requests_served += 1;
        let (k, max) = (self.config.k, self.config.max_reply_bytes);
        Some(match request {
            Request::Ping => Response::Pong,
            Request::FindNode { target } => {
                let mut closer = self.table.closest(&target, k, Some(&from.id));
                if fit::fit_nodes(&mut closer, max) {
                    self.metrics.replies_cut += 1;
                }
                Response::Nodes { closer }
            }
            Request::FindValue { key } => {
                let mut closer = self.table.closest(&key.as_node_id(), k, Some(&from.id));
                let held = self.records.get(&key, unix_ms);
                let (records, omitted) = fit::fit_value(held, &mut closer, max);
                if omitted > 0 {
                    self.metrics.replies_cut += 1;
                    self.metrics.records_left_out += omitted as u64;
                }
                Response::Value {
                    records,
                    omitted,
                    closer,
                }
            }
            Request::Store { records } if records.len() > self.config.max_store_batch => {
                Response::Error(ErrorCode::TooLarge)
            }
            Request::Store { records } => {
                let source = from.source.map(|a| a.ip());
                Response::Stored {
                    statuses: (records.into_iter())
                        .map(|r| self.keep(r, source, unix_ms))
                        .collect(),
                }
            }
        })
    }

    /// Puts a record a peer asked us to keep into the store, counting what
    /// became of it.
    fn keep(&mut self, record: SignedRecord, source: Option<IpAddr>, unix_ms: u64) -> StoreStatus {
        match self.records.put(record, source, unix_ms) {
            Ok(evicted) => {
                self.metrics.records_evicted += evicted as u64;
                StoreStatus::Stored
            }
            Err(e) => {
                let m = &mut self.metrics;
                let counter = match e.reason() {
                    RejectReason::BadSignature | RejectReason::Expired => &mut m.rejected_records,
                    RejectReason::TtlTooLong | RejectReason::IssuedInFuture => {
                        &mut m.records_bad_time
                    }
                    RejectReason::OverQuota => &mut m.records_over_quota,
                    RejectReason::Full => &mut m.records_refused_full,
                    RejectReason::Stale | RejectReason::Refused => &mut m.records_refused_other,
                };
                *counter += 1;
                StoreStatus::Rejected(e.reason())
            }
        }
    }

    /// A DHT server proved alive: into the table, pinging a full bucket's
    /// oldest entry when needed.
    fn seen_alive(&mut self, now: Instant, mut contact: Contact) {
        if contact.addrs.is_empty() || !self.permitted(&mut contact) {
            return; // Nobody could (or should) dial it: never hand it out.
        }
        match self.table.insert(contact) {
            InsertOutcome::Pending { ping } => {
                self.send(now, ping, Request::Ping, Purpose::Ping, false);
            }
            InsertOutcome::Crowded => self.metrics.table_crowded += 1,
            _ => {}
        }
    }

    /// The reply to our request `request_id`, from `from`.
    pub fn handle_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: &NodeId,
        request_id: RequestId,
        response: Response,
    ) {
        self.begin(now);
        match self.requests.take_reply(request_id, from) {
            Err(ReplyError::Unknown(_)) => self.metrics.unknown_replies += 1,
            Err(ReplyError::Settled(_)) => self.metrics.late_replies += 1,
            Err(ReplyError::WrongPeer { .. }) => self.metrics.wrong_peer_replies += 1,
            Ok(outstanding) => {
                // Its connection delivers: what else is on the wire to it is
                // only queued behind this answer.
                if let Some(&rtt) = self.rtts.get(from) {
                    let until = now + self.hard_wait(Some(rtt));
                    self.requests.on_progress(from, until);
                }
                self.on_reply(now, unix_ms, outstanding.purpose, response)
            }
        }
        self.end(now);
    }

    fn on_reply(&mut self, now: Instant, unix_ms: u64, sent: Sent, response: Response) {
        let peer = sent.contact.id;
        if let Response::Error(code) = response {
            if code == ErrorCode::Overloaded {
                // Alive but asked too often: its breaker counts it, yet it
                // stays a live routing-table entry (stale is for the silent).
                self.breakers.on_failure(&peer, now);
                return self.abandon(now, sent, false);
            }
            return self.on_failed(now, sent, false);
        }
        let k = self.config.k;
        // Every record costs a signature check: no more than a key can hold.
        let max_records = self.config.store_limits.max_records_per_key;
        let well_formed = match (&sent.purpose, &response) {
            (Purpose::Ping, Response::Pong) => true,
            (Purpose::Lookup(_), Response::Nodes { closer }) => closer.len() <= k,
            (
                Purpose::Lookup(_),
                Response::Value {
                    records, closer, ..
                },
            ) => closer.len() <= k && records.len() <= max_records,
            (Purpose::Store(items), Response::Stored { statuses }) => statuses.len() == items.len(),
            _ => false,
        };
        if !well_formed {
            self.metrics.malformed_replies += 1;
            return self.on_failed(now, sent, false);
        }
        self.breakers.on_success(&peer);
        match sent.purpose {
            Purpose::Ping => {
                self.table.ping_result(&peer, true);
            }
            Purpose::Lookup(q) => {
                self.seen_alive(now, sent.contact);
                self.on_lookup_reply(now, unix_ms, q, &peer, response);
            }
            Purpose::Store(items) => {
                self.seen_alive(now, sent.contact);
                let Response::Stored { statuses } = response else {
                    return;
                };
                for (item, status) in items.into_iter().zip(statuses) {
                    self.settle_store(now, item.op, peer, status == StoreStatus::Stored);
                }
            }
        }
    }

    fn on_lookup_reply(
        &mut self,
        now: Instant,
        unix_ms: u64,
        q: QueryId,
        peer: &NodeId,
        response: Response,
    ) {
        let (records, closer) = match response {
            Response::Nodes { closer } => (Vec::new(), closer),
            Response::Value {
                records,
                omitted,
                closer,
            } => {
                self.metrics.peer_records_left_out += omitted as u64;
                (records, closer)
            }
            _ => return,
        };
        let local = self.local;
        let closer: Vec<Contact> = (closer.into_iter())
            .filter(|c| c.id != local)
            .filter_map(|mut c| self.permitted(&mut c).then_some(c))
            .collect();
        let mut rejected = 0;
        let Some(op) = self.ops.get_mut(&q) else {
            return;
        };
        let OpState::Lookup { iter, goal, stats } = &mut op.state else {
            return;
        };
        if !iter.on_success(peer, closer) {
            return;
        }
        stats.answered += 1;
        if let Goal::GetValue {
            key,
            records: found,
            answered,
        } = goal
        {
            answered.push(*peer);
            for record in records {
                if record.key != *key || record.verify_at(unix_ms).is_err() {
                    rejected += 1;
                    continue;
                }
                keep_newest(found, record);
            }
        }
        self.metrics.rejected_records += rejected;
        self.drive(now, q);
    }

    /// Our request `request_id` failed.
    pub fn handle_failure(&mut self, now: Instant, request_id: RequestId, failure: Failure) {
        self.begin(now);
        if let Some(outstanding) = self.requests.remove(request_id) {
            self.metrics.request_failures += 1;
            match failure {
                Failure::Path => self.abandon(now, outstanding.purpose, true),
                Failure::Connection => self.on_failed(now, outstanding.purpose, true),
                Failure::Refused => self.on_failed(now, outstanding.purpose, false),
            }
        }
        self.end(now);
    }

    /// A request to a peer failed: it counts against the peer, then the
    /// request is abandoned.
    fn on_failed(&mut self, now: Instant, sent: Sent, retryable: bool) {
        self.breakers.on_failure(&sent.contact.id, now);
        self.table.mark_stale(&sent.contact.id);
        self.abandon(now, sent, retryable);
    }

    /// Gives up on a request: its operation moves on, a store item is
    /// retried when `retryable` and attempts are left.
    fn abandon(&mut self, now: Instant, sent: Sent, retryable: bool) {
        let peer = sent.contact.id;
        match sent.purpose {
            Purpose::Ping => {
                self.table.ping_result(&peer, false);
            }
            Purpose::Lookup(q) => self.lookup_failed(now, q, &peer),
            Purpose::Store(items) => {
                for mut item in items {
                    if retryable && item.attempt < self.config.store_retries {
                        let delay = crate::backoff::delay(
                            self.config.retry_base,
                            self.config.retry_max,
                            item.attempt + 1,
                            &mut self.rng,
                        );
                        item.attempt += 1;
                        self.metrics.store_retries += 1;
                        self.retries
                            .insert((now + delay, self.next_retry), (sent.contact.clone(), item));
                        self.next_retry += 1;
                    } else {
                        self.settle_store(now, item.op, peer, false);
                    }
                }
            }
        }
    }

    fn lookup_failed(&mut self, now: Instant, q: QueryId, peer: &NodeId) {
        if let Some(Operation {
            state: OpState::Lookup { iter, stats, .. },
            ..
        }) = self.ops.get_mut(&q)
            && iter.on_failure(peer)
        {
            stats.failed += 1;
            self.drive(now, q);
        }
    }

    /// Time passed: expire requests and queries, retry stores, republish,
    /// sweep expired records.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.begin(now);
        while let Some((_, o)) = self.requests.pop_soft_expired(now) {
            let (peer, purpose) = (o.peer, &o.purpose.purpose);
            if let Purpose::Lookup(q) = *purpose
                && let Some(Operation {
                    state: OpState::Lookup { iter, .. },
                    ..
                }) = self.ops.get_mut(&q)
                && if o.on_wire {
                    iter.on_overdue(&peer)
                } else {
                    iter.on_unresponsive(&peer)
                }
            {
                self.drive(now, q);
            }
        }
        while let Some((_, o)) = self.requests.pop_expired(now) {
            self.metrics.request_timeouts += 1;
            self.on_failed(now, o.purpose, false);
        }
        while let Some(&(at, q)) = self.op_deadlines.first().filter(|(at, _)| *at <= now) {
            self.op_deadlines.remove(&(at, q));
            self.finish(now, q, true);
        }
        while let Some(entry) = self.retries.first_entry().filter(|e| e.key().0 <= now) {
            let (contact, item) = entry.remove();
            self.queue_store(contact, item);
        }
        let table = self.table.len();
        let due: Vec<RecordKey> = self
            .published
            .iter()
            .filter(|(_, p)| p.next <= now || p.outgrown(now, table))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(p) = self.published.get_mut(&key) else {
                continue;
            };
            p.next = now + self.config.republish_interval;
            p.thin = None;
            let value = p.value.clone();
            let timeout = self.config.query_timeout;
            self.publish(now, unix_ms, key, value, timeout, true);
        }
        if let Some((_, seeds, attempt)) = self.rejoin.take_if(|(at, _, _)| *at <= now) {
            self.self_lookup(now, seeds, attempt);
        }
        if self.next_refresh.is_some_and(|at| at <= now) {
            self.refresh_buckets(now);
            self.next_refresh = Some(now + self.config.refresh_interval);
        }
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.records.sweep(unix_ms);
            self.cache.retain(|_, c| c.expires > now);
            self.next_sweep = None;
        }
        self.end(now);
    }

    fn begin(&mut self, now: Instant) {
        self.outputs.mark(now);
    }

    /// Ends every input: flushes the STORE batches of this tick and arms the
    /// sweep timer when something can expire.
    fn end(&mut self, now: Instant) {
        for (_, (contact, items)) in std::mem::take(&mut self.batch) {
            let records = items.iter().map(|i| i.record.clone()).collect();
            self.send(
                now,
                contact,
                Request::Store { records },
                Purpose::Store(items),
                false,
            );
        }
        if self.next_sweep.is_none() && (!self.records.is_empty() || !self.cache.is_empty()) {
            self.next_sweep = Some(now + self.config.sweep_interval);
        }
    }

    fn queue_store(&mut self, contact: Contact, item: StoreItem) {
        let (_, items) = self
            .batch
            .entry(contact.id)
            .or_insert_with(|| (contact, Vec::new()));
        items.push(item);
    }

    /// Sends `request` to `contact` unless its breaker is open, in which
    /// case the request is abandoned at once.
    fn send(
        &mut self,
        now: Instant,
        contact: Contact,
        request: Request,
        purpose: Purpose,
        lookup: bool,
    ) {
        let peer = contact.id;
        if !self.breakers.allow(&peer, now) {
            self.metrics.breaker_rejections += 1;
            return self.abandon(now, Sent { contact, purpose }, false);
        }
        // Until the driver says the request is out on a connection that is up
        // (`handle_sent`), it may wait for one (a handshake that lost a
        // packet takes a second or more), so it gets the cap. A lookup stops
        // waiting after the expected exchange plus a slack of a few RTTs for
        // a retransmission. Without a connection, the wait covers the
        // handshake (one typical RTT) and is re-armed for the exchange when
        // the request goes out, so a dead peer is given up on one exchange
        // sooner than a live one; a live one given up on before its
        // connection came up is awaited again from then (`on_alive`).
        let rtt = self.rtts.get(&peer).copied();
        let soft = lookup
            .then(|| rtt.or(self.typical_rtt))
            .flatten()
            .map(|unit| now + self.soft_wait(unit));
        let request_id = self.requests.insert(
            peer,
            Sent {
                contact: contact.clone(),
                purpose,
            },
            now + self.hard_wait(None),
            soft,
        );
        self.metrics.requests_sent += 1;
        self.outputs.push(DhtOutput::Request {
            request_id,
            peer: contact,
            request,
        });
    }

    /// How long a request is given before it fails unanswered: a few RTTs
    /// of its connection, or the cap without one.
    fn hard_wait(&self, rtt: Option<Duration>) -> Duration {
        let cfg = &self.config;
        rtt_deadline(
            rtt,
            cfg.request_rtt_factor,
            cfg.request_timeout_floor,
            cfg.request_timeout_cap,
        )
    }

    /// How long a lookup waits for a peer before it frees its slot: one
    /// exchange at RTT `unit` plus the slack, at least the floor and at most
    /// the request's own deadline at that RTT.
    fn soft_wait(&self, unit: Duration) -> Duration {
        let cfg = &self.config;
        let most = self.hard_wait(Some(unit)).max(cfg.request_timeout_floor);
        (unit * (1 + cfg.lookup_slack_rtts)).clamp(cfg.request_timeout_floor, most)
    }

    /// Lets lookup `q` ask whom it wants; finishes it when it is done.
    fn drive(&mut self, now: Instant, q: QueryId) {
        loop {
            let Some(Operation {
                state: OpState::Lookup { iter, goal, stats },
                ..
            }) = self.ops.get_mut(&q)
            else {
                return;
            };
            match iter.step() {
                LookupStep::Contact(contact) => {
                    stats.requests += 1;
                    let request = match goal {
                        Goal::GetValue { key, .. } => Request::FindValue { key: *key },
                        _ => Request::FindNode {
                            target: *iter.target(),
                        },
                    };
                    self.send(now, contact, request, Purpose::Lookup(q), true);
                }
                LookupStep::Finished => return self.finish(now, q, false),
                LookupStep::Waiting | LookupStep::AtCapacity => return,
            }
        }
    }

    /// Ends operation `q` (its lookup finished, or its time ran out).
    fn finish(&mut self, now: Instant, q: QueryId, timed_out: bool) {
        let Some(op) = self.ops.remove(&q) else {
            return;
        };
        self.op_deadlines.remove(&(op.deadline, q));
        let (mut iter, goal, mut stats) = match op.state {
            OpState::Lookup { iter, goal, stats } => (iter, goal, stats),
            OpState::Storing(store) => return self.store_done(now, q, store),
        };
        iter.finish();
        self.metrics.lookup_crowded += iter.crowded();
        stats.timed_out = timed_out;
        stats.duration = now.saturating_duration_since(op.started);
        let found = iter.closest();
        stats.closest_depth = found.first().map(|(_, d)| *d);
        let closest: Vec<Contact> = found.into_iter().map(|(c, _)| c.clone()).collect();
        if timed_out {
            self.metrics.query_timeouts += 1;
        }
        let event = match goal {
            Goal::FindNode => {
                self.metrics.query_latency.record(stats.duration);
                DhtEvent::NodesFound {
                    query: q,
                    target: *iter.target(),
                    closest,
                    stats,
                }
            }
            Goal::Refresh => return,
            Goal::Bootstrap { seeds, attempt } => {
                self.refresh_buckets(now);
                self.next_refresh = Some(now + self.config.refresh_interval);
                if self.table.len() < self.config.k && attempt < self.config.bootstrap_retries {
                    let delay = self.config.bootstrap_retry_base * (1 << attempt.min(16));
                    self.rejoin = Some((now + delay, seeds, attempt + 1));
                }
                if attempt > 0 {
                    return;
                }
                DhtEvent::Bootstrapped {
                    query: q,
                    table_size: self.table.len(),
                }
            }
            Goal::GetValue {
                key,
                records,
                answered,
            } => {
                self.metrics.query_latency.record(stats.duration);
                let records: Vec<SignedRecord> = records.into_values().collect();
                // A lookup no node answered (a partition, an outage) says
                // nothing about the key: it is not cached, so the next query
                // asks the network again.
                let room =
                    self.cache.len() < self.config.cache_entries || self.cache.contains_key(&key);
                if room && !answered.is_empty() {
                    self.cache.insert(
                        key,
                        CacheEntry {
                            expires: now + self.config.cache_ttl,
                            records: records.clone(),
                            answered: answered.clone(),
                        },
                    );
                }
                DhtEvent::ValuesFound {
                    query: q,
                    key,
                    records,
                    answered,
                    from_cache: false,
                    stats,
                }
            }
            Goal::PutValue { record, republish } if !timed_out => {
                let record = *record;
                let store = StoreOp {
                    quorum: self.config.store_quorum.needed(closest.len()),
                    record: record.clone(),
                    republish,
                    acked: Vec::new(),
                    unsettled: closest.len(),
                };
                if closest.is_empty() {
                    return self.store_done(now, q, store);
                }
                for contact in closest {
                    let item = StoreItem {
                        op: q,
                        record: record.clone(),
                        attempt: 0,
                    };
                    self.queue_store(contact, item);
                }
                self.op_deadlines.insert((op.deadline, q));
                self.ops.insert(
                    q,
                    Operation {
                        state: OpState::Storing(store),
                        ..op
                    },
                );
                return;
            }
            Goal::PutValue { record, republish } => {
                let quorum = self.config.store_quorum.needed(self.config.k);
                let store = StoreOp {
                    record: *record,
                    republish,
                    quorum,
                    acked: Vec::new(),
                    unsettled: 0,
                };
                return self.store_done(now, q, store);
            }
        };
        self.outputs.push(DhtOutput::Event(event));
    }

    fn settle_store(&mut self, now: Instant, q: QueryId, peer: NodeId, acked: bool) {
        let Some(Operation {
            state: OpState::Storing(store),
            ..
        }) = self.ops.get_mut(&q)
        else {
            return;
        };
        if acked {
            self.metrics.store_acks += 1;
            store.acked.push(peer);
        }
        store.unsettled = store.unsettled.saturating_sub(1);
        if store.unsettled == 0 {
            self.finish(now, q, false);
        }
    }

    fn store_done(&mut self, now: Instant, q: QueryId, store: StoreOp) {
        let success = store.acked.len() >= store.quorum;
        if success {
            self.metrics.stores_succeeded += 1;
        }
        self.note_thin_store(now, &store);
        self.outputs
            .push(DhtOutput::Event(DhtEvent::StoreConfirmed {
                query: q,
                key: store.record.key,
                acked: store.acked,
                quorum: store.quorum,
                success,
                republish: store.republish,
            }));
    }

    /// After a store of our record: whether fewer than k nodes acknowledged
    /// it, remembered with our table's size, so it is made again once the
    /// table has outgrown it ([`THIN_REPUBLISH_AFTER`]).
    fn note_thin_store(&mut self, now: Instant, store: &StoreOp) {
        let table = self.table.len();
        if let Some(published) = self.published.get_mut(&store.record.key) {
            published.thin = (store.acked.len() < self.config.k).then_some((now, table));
        }
    }

    /// One lookup of a random id in each bucket farther than our nearest
    /// neighbour's that holds fewer than `bootstrap_refresh_below` entries.
    fn refresh_buckets(&mut self, now: Instant) {
        let Some(nearest) = self.table.occupied_buckets().last() else {
            return;
        };
        let below = self.config.bootstrap_refresh_below;
        for bucket in nearest + 1..crate::id::ID_BITS {
            if self.table.bucket_len(bucket) >= below {
                continue;
            }
            let target = random_id_in_bucket(&self.local, bucket, &mut self.rng);
            let timeout = self.config.query_timeout;
            self.start_lookup(now, target, Goal::Refresh, Vec::new(), timeout);
        }
    }
}

/// Adds `record` to `records` unless a newer one of its provider is there.
fn keep_newest(records: &mut BTreeMap<NodeId, SignedRecord>, record: SignedRecord) {
    let provider = record.provider();
    if records
        .get(&provider)
        .is_none_or(|held| held.issued_at_ms < record.issued_at_ms)
    {
        records.insert(provider, record);
    }
}

/// A random id whose distance to `local` falls in bucket `bucket`.
fn random_id_in_bucket(local: &NodeId, bucket: usize, rng: &mut impl Rng) -> NodeId {
    let mut d: [u8; ID_LEN] = rng.random();
    let byte = ID_LEN - 1 - bucket / 8;
    let bit = bucket % 8;
    d[..byte].fill(0);
    d[byte] &= ((1u16 << (bit + 1)) - 1) as u8;
    d[byte] |= 1 << bit;
    let mut id = *local.as_bytes();
    id.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
    NodeId::from_bytes(id)
}

impl Child for Dht {
    type Output = DhtOutput;

    /// The next output, or `None` when drained.
    fn poll_output(&mut self) -> Option<DhtOutput> {
        self.outputs.pop()
    }

    /// When to call [`Dht::handle_timeout`] next (the last input's time while
    /// output is queued).
    fn poll_timeout(&self) -> Option<Instant> {
        self.outputs.deadline([
            self.requests.next_deadline(),
            self.op_deadlines.first().map(|(at, _)| *at),
            self.retries.keys().next().map(|(at, _)| *at),
            self.published.values().map(|p| p.next).min(),
            self.rejoin.as_ref().map(|(at, _, _)| *at),
            self.next_refresh,
            self.next_sweep,
        ])
    }
}
