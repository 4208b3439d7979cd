//! Claim checks: verifying by dial-back the listen addresses a peer claims
//! (docs/PROTOCOL.md §12.4), both sides.
//!
//! A DHT server's CONNECT names the addresses it listens on, and whoever we
//! hand them to will dial them, so a stranger could name a victim's address.
//! An address equal to the peer's source needs no check; any other is
//! handed out only after it answered a check: we send one STUN Binding
//! request to it whose transaction id starts with the connection's tag and
//! which carries MESSAGE-INTEGRITY-SHA256 under the connection's key, and
//! the answer must come back from that address, under the same key. Tag and
//! key come from the TLS session both ends share (an exporter,
//! [`CLAIM_EXPORTER_LABEL`]), so only the peer at the other end of that
//! connection can answer, and a victim that answers STUN (or as another
//! node) proves nothing.
//!
//! Nothing goes to a claimed address before it passed the node's
//! [`AddressPolicy`](crate::scope::AddressPolicy); each address gets at most
//! one probe per [`ClaimCheckConfig::interval`] (a remembered set, bounded,
//! that refuses rather than forgets while full); each target IP spends the
//! same per-target budget as dial-back probes; at most
//! [`ClaimCheckConfig::max_pending`] checks wait for answers, at most
//! [`ClaimCheckConfig::max_pending_per_network`] per target network (IPv4
//! /24, IPv6 /48). The answer is no larger than the request, and a node
//! answers only requests that verify, at a rate per source IP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smallvec::SmallVec;

use super::{MAX_PROBE_ADDRS, Reach, ReachOutput, canonical};
use crate::collections::HashMap;
use crate::contract::{Datagram, Transmit};
use crate::id::NodeId;
use crate::nat::stun::{self, Bucket, Class, IntegrityKey, RateLimit, RateLimiter, TransactionId};
use crate::pool::ConnId;
use crate::scope::{self, IpPrefix};

/// The TLS exporter label both ends derive a connection's claim-check
/// material from (RFC 8446 §7.5; empty context).
pub const CLAIM_EXPORTER_LABEL: &[u8] = b"EXPORTER-macula-claim-check";
/// Bytes of exported material: the 32-byte key, then the 8-byte tag.
pub const CLAIM_MATERIAL_LEN: usize = 40;
/// The bits of an IPv4 target that make one network for the pending limit.
const NETWORK_V4_BITS: u8 = 24;
/// The bits of an IPv6 target that make one network for the pending limit.
const NETWORK_V6_BITS: u8 = 48;

/// Limits of claim checks.
///
/// | setting | default |
/// | --- | --- |
/// | max_pending | 64 checks awaiting an answer |
/// | max_pending_per_network | 2 per target /24 (IPv6 /48) |
/// | timeout | 5 s for an answer |
/// | interval | 1 probe per address per 10 min |
/// | max_probed | 4,096 addresses remembered as probed |
/// | proven_for | 30 min a verified address is handed out before it is checked again |
/// | max_proven | 1,024 peers with verified addresses |
/// | answer_limit | 1 answer per second per source IP, bursts of 4, 100/s in all |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimCheckConfig {
    /// Checks awaiting an answer at once; more are refused.
    pub max_pending: usize,
    /// Checks awaiting an answer toward one target network.
    pub max_pending_per_network: usize,
    /// How long an answer is waited for.
    pub timeout: Duration,
    /// One probe per claimed address per this period.
    pub interval: Duration,
    /// Addresses remembered as probed; while full of live entries, new
    /// checks are refused.
    pub max_probed: usize,
    /// How long a verified address counts as verified.
    pub proven_for: Duration,
    /// Peers whose verified addresses are kept; the oldest goes first.
    pub max_proven: usize,
    /// Answers we send to others' checks, per source IP and in all.
    pub answer_limit: RateLimit,
}

impl Default for ClaimCheckConfig {
    fn default() -> Self {
        Self {
            max_pending: 64,
            max_pending_per_network: 2,
            timeout: Duration::from_secs(5),
            interval: Duration::from_secs(600),
            max_probed: 4096,
            proven_for: Duration::from_secs(1800),
            max_proven: 1024,
            answer_limit: RateLimit {
                per_source: Bucket {
                    interval: Duration::from_secs(1),
                    burst: 4,
                },
                global: Bucket {
                    interval: Duration::from_millis(10),
                    burst: 100,
                },
                max_sources: 4096,
            },
        }
    }
}

/// What claim checks counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimCheckStats {
    /// Probes sent to claimed addresses (one per check).
    pub probed: u64,
    /// Checks answered correctly: the address is handed out.
    pub verified: u64,
    /// Checks that got no valid answer in time.
    pub failed: u64,
    /// Claimed addresses not probed: refused by the address policy, or
    /// over a bound (pending table, per network, per target IP, remembered
    /// set). An address probed within the interval is skipped, uncounted.
    pub refused: u64,
    /// Checks of others we answered.
    pub answered: u64,
    /// Requests or answers carrying our tag or transaction id that did not
    /// verify, or came from another address; and valid requests over the
    /// answer rate.
    pub ignored: u64,
}

/// A connection's claim-check secret: the key and the tag its requests'
/// transaction ids start with. `Debug` hides the key.
#[derive(Clone, Debug)]
struct ClaimKey {
    key: IntegrityKey,
    tag: [u8; 8],
}

impl ClaimKey {
    /// Splits exported material ([`CLAIM_EXPORTER_LABEL`]) into key and tag.
    fn from_material(material: &[u8; CLAIM_MATERIAL_LEN]) -> Self {
        let mut key = [0u8; 32];
        let mut tag = [0u8; 8];
        key.copy_from_slice(&material[..32]);
        tag.copy_from_slice(&material[32..]);
        Self {
            key: IntegrityKey(key),
            tag,
        }
    }
}

/// A check awaiting its answer.
#[derive(Debug)]
struct Pending {
    conn: ConnId,
    peer: NodeId,
    addr: SocketAddr,
    network: IpPrefix,
    key: IntegrityKey,
    deadline: Instant,
}

/// A peer's verified addresses.
#[derive(Debug)]
struct Proven {
    addrs: SmallVec<[SocketAddr; 2]>,
    since: Instant,
}

/// The state of claim checks (module docs).
#[derive(Debug)]
pub(super) struct ClaimChecks {
    config: ClaimCheckConfig,
    keys: HashMap<ConnId, (NodeId, ClaimKey)>,
    tags: HashMap<[u8; 8], ConnId>,
    pending: HashMap<TransactionId, Pending>,
    probed: HashMap<SocketAddr, Instant>,
    proven: HashMap<NodeId, Proven>,
    answer_limit: RateLimiter,
    rng: ChaCha8Rng,
    pub(super) stats: ClaimCheckStats,
}

impl ClaimChecks {
    /// No keys, no checks; transaction ids drawn from `seed`.
    pub(super) fn new(config: ClaimCheckConfig, seed: [u8; 32]) -> Self {
        Self {
            answer_limit: RateLimiter::new(config.answer_limit),
            config,
            keys: HashMap::default(),
            tags: HashMap::default(),
            pending: HashMap::default(),
            probed: HashMap::default(),
            proven: HashMap::default(),
            rng: ChaCha8Rng::from_seed(seed),
            stats: ClaimCheckStats::default(),
        }
    }

    /// The earliest answer deadline.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Drops what is over: unanswered checks (failed), remembered probes
    /// past the interval, verified addresses past their time.
    fn expire(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|_, p| p.deadline > now);
        self.stats.failed += (before - self.pending.len()) as u64;
        let interval = self.config.interval;
        (self.probed).retain(|_, at| now.saturating_duration_since(*at) < interval);
        let proven_for = self.config.proven_for;
        (self.proven).retain(|_, p| now.saturating_duration_since(p.since) < proven_for);
    }

    /// Whether `addr` was probed within the interval (by anyone's claim).
    fn probed_lately(&self, addr: &SocketAddr) -> bool {
        self.probed.contains_key(addr)
    }

    /// Whether a probe to `addr` (in `network`) fits the bounds now: room
    /// in the pending table, its network's share and the remembered set.
    fn room_for(&mut self, now: Instant, network: &IpPrefix) -> bool {
        if self.pending.len() >= self.config.max_pending {
            return false;
        }
        let same_network = (self.pending.values())
            .filter(|p| p.network == *network)
            .count();
        if same_network >= self.config.max_pending_per_network {
            return false;
        }
        if self.probed.len() >= self.config.max_probed {
            self.expire(now);
        }
        self.probed.len() < self.config.max_probed
    }
}

impl Reach {
    /// A connection became ready: keep its claim-check secret (from
    /// [`CLAIM_EXPORTER_LABEL`]) for checking the peer's claims and for
    /// answering its checks of ours.
    pub fn handle_peer_ready(
        &mut self,
        conn: ConnId,
        peer: NodeId,
        material: &[u8; CLAIM_MATERIAL_LEN],
    ) {
        let key = ClaimKey::from_material(material);
        self.claims.tags.insert(key.tag, conn);
        if let Some((_, old)) = self.claims.keys.insert(conn, (peer, key)) {
            self.claims.tags.remove(&old.tag);
        }
    }

    /// A connection is gone: its secret with it (checks under way stay
    /// until answered or timed out).
    pub fn handle_peer_gone(&mut self, conn: ConnId) {
        if let Some((_, key)) = self.claims.keys.remove(&conn) {
            self.claims.tags.remove(&key.tag);
        }
    }

    /// The verified addresses of `peer` (module docs); the DHT hands out
    /// those it still claims.
    pub fn proven_addrs(&self, peer: &NodeId) -> &[SocketAddr] {
        self.claims.proven.get(peer).map_or(&[], |p| &p.addrs)
    }

    /// The peer of ready connection `conn`, whose packets come from
    /// `source`, claims `claimed`: probe (within the limits of the module
    /// docs) each claimed address that is not its source and not verified
    /// yet.
    pub fn check_claims(
        &mut self,
        now: Instant,
        conn: ConnId,
        claimed: &[SocketAddr],
        source: SocketAddr,
    ) {
        let Some((peer, key)) = self.claims.keys.get(&conn).cloned() else {
            return;
        };
        self.touch(now);
        let local = self.local_addrs();
        for &addr in claimed.iter().take(MAX_PROBE_ADDRS) {
            let addr = canonical(addr);
            // Its source, our own, verified, or probed lately (pending, or
            // failed: tried again after the interval).
            let settled = addr == canonical(source)
                || local.contains(&addr)
                || self.proven_addrs(&peer).contains(&addr)
                || self.claims.probed_lately(&addr);
            if settled {
                continue;
            }
            let network = scope::prefix(addr.ip(), NETWORK_V4_BITS, NETWORK_V6_BITS);
            let allowed = self.policy.permits(&addr)
                && self.claims.room_for(now, &network)
                && self.probe_limit.allow(now, addr.ip()).is_ok();
            if !allowed {
                self.claims.stats.refused += 1;
                continue;
            }
            let mut id = [0u8; 12];
            id[..8].copy_from_slice(&key.tag);
            self.claims.rng.fill(&mut id[8..]);
            let request = stun::Message::binding(Class::Request, TransactionId(id));
            let Ok(payload) = request.encode_with_integrity(&key.key) else {
                continue;
            };
            self.claims.probed.insert(addr, now);
            self.claims.pending.insert(
                TransactionId(id),
                Pending {
                    conn,
                    peer,
                    addr,
                    network,
                    key: key.key.clone(),
                    deadline: now + self.claims.config.timeout,
                },
            );
            self.claims.stats.probed += 1;
            self.out.push(ReachOutput::Transmit(Transmit {
                source: None,
                destination: addr,
                payload,
                segment_size: None,
                ttl: None,
            }));
        }
    }

    /// A STUN datagram that may be a claim check (a request carrying one of
    /// our connections' tags) or an answer to one of ours; false when it is
    /// neither.
    pub(super) fn claim_stun(&mut self, now: Instant, datagram: &Datagram, class: Class) -> bool {
        let Some(id) = (datagram.payload.get(8..20)).and_then(|id| <[u8; 12]>::try_from(id).ok())
        else {
            return false;
        };
        match class {
            Class::Request => {
                let tag: Option<[u8; 8]> = id[..8].try_into().ok();
                let Some(conn) = tag.and_then(|t| self.claims.tags.get(&t)) else {
                    return false;
                };
                let Some((_, key)) = self.claims.keys.get(conn).cloned() else {
                    return false;
                };
                self.answer_claim_check(now, datagram, TransactionId(id), &key.key);
                true
            }
            Class::Success => self.claim_answered(now, datagram, TransactionId(id)),
            _ => false,
        }
    }

    /// Answers a check of our claims: no larger than the request, only
    /// when it verifies and the source's rate allows.
    fn answer_claim_check(
        &mut self,
        now: Instant,
        datagram: &Datagram,
        id: TransactionId,
        key: &IntegrityKey,
    ) {
        let valid = key.verifies(&datagram.payload);
        if !valid
            || (self.claims.answer_limit)
                .allow(now, datagram.remote.ip())
                .is_err()
        {
            self.claims.stats.ignored += 1;
            return;
        }
        let answer = stun::Message::binding(Class::Success, id);
        let Ok(payload) = answer.encode_with_integrity(key) else {
            return;
        };
        self.claims.stats.answered += 1;
        self.out.push(ReachOutput::Transmit(Transmit {
            source: None,
            destination: datagram.remote,
            payload,
            segment_size: None,
            ttl: None,
        }));
    }

    /// An answer to check `id`, if it is one of ours: verified when it
    /// comes from the probed address under the connection's key.
    fn claim_answered(&mut self, now: Instant, datagram: &Datagram, id: TransactionId) -> bool {
        let Some(pending) = self.claims.pending.get(&id) else {
            return false;
        };
        let genuine =
            canonical(datagram.remote) == pending.addr && pending.key.verifies(&datagram.payload);
        if !genuine {
            self.claims.stats.ignored += 1;
            return true;
        }
        let Some(pending) = self.claims.pending.remove(&id) else {
            return true;
        };
        self.touch(now);
        self.claims.stats.verified += 1;
        let max = self.claims.config.max_proven;
        let proven = &mut self.claims.proven;
        if !proven.contains_key(&pending.peer) && proven.len() >= max {
            let oldest = (proven.iter())
                .min_by_key(|(_, p)| p.since)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                proven.remove(&oldest);
            }
        }
        let entry = proven.entry(pending.peer).or_insert_with(|| Proven {
            addrs: SmallVec::new(),
            since: now,
        });
        if !entry.addrs.contains(&pending.addr) && entry.addrs.len() < MAX_PROBE_ADDRS {
            entry.addrs.push(pending.addr);
        }
        self.out.push(ReachOutput::ClaimVerified {
            conn: pending.conn,
            peer: pending.peer,
        });
        true
    }

    /// Claim checks' timers (module docs).
    pub(super) fn claims_timeout(&mut self, now: Instant) {
        self.claims.expire(now);
    }
}
