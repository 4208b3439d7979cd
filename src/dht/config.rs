//! The DHT's knobs and their defaults, in one place.

use std::time::Duration;

use super::diversity::Diversity;
use super::store::StoreLimits;

/// Whether this node serves the DHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Publicly reachable: answers requests and enters others' tables.
    Server,
    /// Behind a NAT: queries and publishes, never serves (requests get
    /// [`crate::dht::ErrorCode::Refused`]).
    Client,
}

/// How many acknowledgements make a store succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of the closest nodes the store went to.
    Majority,
    /// Every one of them.
    All,
    /// At least this many (capped at the number of nodes the store went to).
    AtLeast(usize),
}

impl Quorum {
    /// The acknowledgements needed when the store went to `targets` nodes.
    pub fn needed(self, targets: usize) -> usize {
        match self {
            Quorum::Majority => targets / 2 + 1,
            Quorum::All => targets,
            Quorum::AtLeast(n) => n.min(targets),
        }
        .max(1)
    }
}

/// Default of [`DhtConfig::near_margin_percent`].
const NEAR_MARGIN_PERCENT: u32 = 125;

/// Every DHT setting. [`Default`] gives the values of DESIGN.md.
#[derive(Clone, Debug, PartialEq)]
pub struct DhtConfig {
    /// Serve or only use the DHT.
    pub mode: Mode,
    /// Bucket size and lookup result count (k).
    pub k: usize,
    /// Lookup parallelism (α).
    pub alpha: usize,
    /// Disjoint paths per lookup (S/Kademlia); 1 is a plain lookup.
    pub disjoint_paths: usize,
    /// A lookup asks a candidate at once (up to k in flight) rather than α
    /// at a time when it lies within this many percent of the distance
    /// where the lookup's results are expected ([`super::NearRadius`],
    /// judged from our own k closest neighbours: around another target the
    /// k-th closest lies some 30% nearer or farther at k = 20, so 100 leaves
    /// out many of the k closest); 0: α at a time until the lookup stalls.
    pub near_margin_percent: u32,
    /// Hard deadline of a request: this many times the RTT of the
    /// connection it went out on, counted from when it did (the driver's
    /// [`crate::dht::Dht::handle_sent`]; before that it may wait for a
    /// connection and has the cap), and again from each answer of the same
    /// peer...
    pub request_rtt_factor: u32,
    /// ...but at least this long...
    pub request_timeout_floor: Duration,
    /// ...and at most this long from when the request was made; one not
    /// yet out on a connection that is up gets this.
    pub request_timeout_cap: Duration,
    /// A lookup stops waiting for a peer (frees its slot; a late answer
    /// still counts) after one exchange at the peer's connection RTT plus
    /// this many RTTs; the wait is re-armed from the moment the request
    /// goes out on a connection that is up. Two RTTs of slack cover one
    /// retransmission (1.5 RTT). A peer past this wait whose request is out
    /// on a connection that is up is overdue: the lookup does not end while
    /// it ranks among the k closest. One whose request still waits for a
    /// connection is unresponsive: it is awaited only when fewer than k
    /// answered, or again as overdue once its request goes out.
    pub lookup_slack_rtts: u32,
    /// Timeout of lookups started by `find_node`, `bootstrap` and refreshes.
    pub query_timeout: Duration,
    /// Lifetime of records we publish.
    pub record_ttl: Duration,
    /// How often we publish our records again.
    pub republish_interval: Duration,
    /// How long a value query's result is served from the local cache.
    pub cache_ttl: Duration,
    /// At most this many cached query results.
    pub cache_entries: usize,
    /// Acknowledgements a confirmed store needs.
    pub store_quorum: Quorum,
    /// A store to a peer whose connection failed is retried this many times.
    pub store_retries: u32,
    /// First retry delay (doubling, with jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Consecutive failures that open a peer's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before letting a probe through.
    pub breaker_cool_down: Duration,
    /// Inbound requests a peer may send at once.
    pub inbound_burst: u32,
    /// Inbound requests per second a peer may sustain.
    pub inbound_per_sec: u32,
    /// Most records one STORE request may carry.
    pub max_store_batch: usize,
    /// Peers tracked by the breakers, limiter and RTT table.
    pub max_tracked_peers: usize,
    /// Limits of the record store (TTL cap, clock skew, quotas per
    /// publisher and per source network, eviction).
    pub store_limits: StoreLimits,
    /// IP diversity of the routing table and of lookups.
    pub diversity: Diversity,
    /// Largest reply frame body; answers are cut to fit ([`super::fit`]).
    /// Default 64 KiB: hundreds of ordinary records (an RPC provider record
    /// is 145 bytes), yet a 40-byte FIND_VALUE cannot make us send a
    /// megabyte, and the reply arrives within the asker's request deadline
    /// (a few RTTs). Never more than the frame limit (the Node lowers it to
    /// its own `max_frame_len`, 1 MiB by default).
    pub max_reply_bytes: usize,
    /// How often expired records and cache entries are swept.
    pub sweep_interval: Duration,
    /// After bootstrap's self-lookup, every bucket farther than the nearest
    /// neighbour that holds fewer entries than this is refreshed with a
    /// lookup of a random id in it (0: no refresh; k: every bucket not full).
    pub bootstrap_refresh_below: usize,
    /// Self-lookup retries after a bootstrap that left fewer than k entries.
    pub bootstrap_retries: u32,
    /// Delay before the first retry (doubling after each).
    pub bootstrap_retry_base: Duration,
    /// After bootstrap, the buckets are refreshed again this often (the same
    /// rule: those farther than the nearest neighbour holding fewer than
    /// `bootstrap_refresh_below` entries).
    pub refresh_interval: Duration,
    /// A refresh lookup stops once this many of the closest peers it found
    /// answered: it only has to fill a bucket, not pin down the k closest,
    /// so it costs a fraction of a full lookup.
    pub refresh_lookup_results: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Server,
            k: 20,
            alpha: 3,
            disjoint_paths: 1,
            near_margin_percent: NEAR_MARGIN_PERCENT,
            request_rtt_factor: 6,
            request_timeout_floor: Duration::from_millis(100),
            request_timeout_cap: Duration::from_secs(5),
            lookup_slack_rtts: 2,
            query_timeout: Duration::from_secs(60),
            record_ttl: Duration::from_secs(300),
            republish_interval: Duration::from_secs(240),
            cache_ttl: Duration::from_secs(60),
            cache_entries: 1024,
            store_quorum: Quorum::Majority,
            store_retries: 3,
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(4),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
            inbound_burst: 64,
            inbound_per_sec: 32,
            max_store_batch: 64,
            max_tracked_peers: 4096,
            store_limits: StoreLimits::default(),
            diversity: Diversity::default(),
            max_reply_bytes: 64 << 10,
            sweep_interval: Duration::from_secs(10),
            bootstrap_refresh_below: 20,
            bootstrap_retries: 3,
            refresh_interval: Duration::from_secs(600),
            bootstrap_retry_base: Duration::from_secs(1),
            refresh_lookup_results: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums() {
        assert_eq!(Quorum::Majority.needed(20), 11);
        assert_eq!(Quorum::Majority.needed(1), 1);
        assert_eq!(Quorum::Majority.needed(0), 1);
        assert_eq!(Quorum::All.needed(7), 7);
        assert_eq!(Quorum::AtLeast(5).needed(3), 3);
    }
}
