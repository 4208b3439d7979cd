//! AdmissionControl: what the node lets strangers start, and how much of it.
//!
//! A QUIC handshake costs the node a TLS handshake and a connection's state
//! before it knows who is asking, and node ids are free, so limits hold on
//! the way in, per source network as well as per id:
//!
//! - past [`AdmissionConfig::retry_above`] incoming handshakes in progress, a
//!   new one must first prove it owns its source address (a QUIC Retry: one
//!   stateless round trip, no state kept until the client echoes the token);
//! - at most [`AdmissionConfig::max_handshakes`] incoming handshakes at once;
//! - at most [`AdmissionConfig::max_per_ip`] inbound connections from one
//!   source network (an IPv4 address; an IPv6 /64);
//! - at most [`AdmissionConfig::max_awaiting_connect`] inbound connections
//!   between the end of their handshake and their CONNECT;
//! - at most [`AdmissionConfig::max_per_node`] inbound connections of one
//!   node id;
//! - new handshakes at most at [`AdmissionConfig::handshakes_per_second`]
//!   node-wide and [`AdmissionConfig::handshakes_per_network`] per source
//!   network (an IPv4 /24, an IPv6 /48; bursts of as many): each costs the
//!   node a TLS handshake, so a flood of them, even of connections that end
//!   at once, would take the node's time from its peers. Over the rate, a
//!   handshake that has not proven its address gets a Retry (so a spoofer
//!   cannot make the node refuse a network it does not own without at
//!   least draining its budget), one that has is refused.
//!
//! Every refusal is counted ([`AdmissionCounters`]). Each inbound connection
//! holds a [`Ticket`] naming what it counts against; its phase changes move
//! the ticket on and its end gives the ticket back, so the counts are never
//! recomputed by scanning connections.
//!
//! The node-wide memory budget ([`AdmissionConfig::memory_budget`]) is
//! shared out: each connection may hold at most its share of it
//! ([`AdmissionControl::buffer_share`]) on top of its own limits, so all connections
//! together stay within the budget whatever their number.

use std::net::IpAddr;
use std::time::Instant;

use crate::collections::HashMap;
use crate::id::NodeId;
use crate::limiter::InboundLimiter;
use crate::scope::{IpPrefix, prefix};

/// The admission limits (see the module docs).
///
/// | limit | default |
/// | --- | --- |
/// | retry_above | 64 incoming handshakes in progress |
/// | max_handshakes | 512 incoming handshakes in progress |
/// | max_per_ip | 32 inbound connections per IPv4 address or IPv6 /64 |
/// | max_awaiting_connect | 512 inbound connections awaiting CONNECT |
/// | max_per_node | 8 inbound connections per node id |
/// | handshakes_per_second | 256 new incoming handshakes per second node-wide (bursts of as many) |
/// | handshakes_per_network | 16 new incoming handshakes per second per IPv4 /24 or IPv6 /48 (bursts of 64) |
/// | pings_per_second | 20 PINGs answered per connection per second (bursts of as many) |
/// | pings_before_close | 100 unanswered PINGs per second per connection (bursts of as many) before the connection is closed |
/// | frames_per_second | 20,000 frames of one connection read per second (bursts of as many); more wait in QUIC's flow-control window |
/// | memory_budget | 256 MiB of buffered bytes over all connections |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Incoming handshakes in progress past which a new one must prove its
    /// address first (QUIC Retry).
    pub retry_above: usize,
    /// Incoming handshakes in progress at once; more are refused.
    pub max_handshakes: usize,
    /// Inbound connections from one IPv4 address or IPv6 /64.
    pub max_per_ip: usize,
    /// Inbound connections whose CONNECT has not come yet.
    pub max_awaiting_connect: usize,
    /// Inbound connections of one node id.
    pub max_per_node: usize,
    /// New incoming handshakes per second, node-wide (bursts of as many).
    pub handshakes_per_second: u32,
    /// New incoming handshakes per second from one IPv4 /24 or IPv6 /48
    /// (bursts of four times as many).
    pub handshakes_per_network: u32,
    /// PINGs answered per connection per second; more are left unanswered.
    pub pings_per_second: u32,
    /// Unanswered PINGs a connection may send per second (bursts of as
    /// many); past them the peer is flooding and the connection is closed.
    pub pings_before_close: u32,
    /// Frames of one connection the node reads per second (bursts of as
    /// many); 0 reads as fast as they come. A faster peer is not refused:
    /// its bytes wait unread in QUIC's flow-control window, which slows it
    /// down, so one busy peer cannot take all of the node's time.
    pub frames_per_second: u32,
    /// Bytes all connections together may hold in the node's buffers.
    pub memory_budget: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            retry_above: 64,
            max_handshakes: 512,
            max_per_ip: 32,
            max_awaiting_connect: 512,
            max_per_node: 8,
            handshakes_per_second: 256,
            handshakes_per_network: 16,
            pings_per_second: 20,
            pings_before_close: 100,
            frames_per_second: 20_000,
            memory_budget: 256 << 20,
        }
    }
}

/// What becomes of an incoming handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with it.
    Accept,
    /// Ask the client to prove its address first (QUIC Retry).
    Retry,
    /// Refuse it.
    Refuse(Refusal),
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many incoming handshakes in progress.
    Handshakes,
    /// New handshakes come faster than the node-wide or the source
    /// network's rate.
    HandshakeRate,
    /// Too many connections from the source network.
    SourceNetwork,
    /// Too many connections awaiting CONNECT.
    AwaitingConnect,
    /// Too many connections of the node id.
    NodeId,
}

impl Refusal {
    /// A short description, for logs and the close reason.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Handshakes => "too many handshakes in progress",
            Refusal::HandshakeRate => "too many new handshakes",
            Refusal::SourceNetwork => "too many connections from this network",
            Refusal::AwaitingConnect => "too many connections awaiting CONNECT",
            Refusal::NodeId => "too many connections of this node id",
        }
    }
}

/// What admission counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionCounters {
    /// Handshakes asked to prove their address (Retry sent).
    pub retries: u64,
    /// Handshakes refused: too many in progress.
    pub refused_handshakes: u64,
    /// Handshakes refused: too many from the source network.
    pub refused_source_network: u64,
    /// Handshakes refused: over the node-wide or the network's rate.
    pub refused_handshake_rate: u64,
    /// Connections closed: too many awaiting CONNECT.
    pub refused_awaiting_connect: u64,
    /// Connections closed: too many of the node id.
    pub refused_node_id: u64,
    /// PINGs left unanswered (over the per-connection rate).
    pub pings_unanswered: u64,
    /// Connections closed for flooding (PINGs far over the rate).
    pub closed_flooding: u64,
}

/// What one inbound connection counts against (see the module docs).
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use = "a ticket is given back with AdmissionControl::release"]
pub struct Ticket {
    network: Option<IpPrefix>,
    handshaking: bool,
    awaiting: bool,
    node: Option<NodeId>,
}

/// The admission state of a node (see the module docs).
#[derive(Debug)]
pub struct AdmissionControl {
    config: AdmissionConfig,
    handshakes: usize,
    awaiting: usize,
    per_network: HashMap<IpPrefix, usize>,
    per_node: HashMap<NodeId, usize>,
    /// New handshakes node-wide (one key).
    handshake_rate: InboundLimiter<()>,
    /// New handshakes per wider source network.
    handshake_rate_per_network: InboundLimiter<IpPrefix>,
    counters: AdmissionCounters,
}

/// The network a source's connections count in: an IPv4 address, an IPv6 /64.
fn network(ip: IpAddr) -> IpPrefix {
    prefix(ip, 32, 64)
}

/// The network a source's new handshakes count in: an IPv4 /24, an IPv6 /48.
fn wide_network(ip: IpAddr) -> IpPrefix {
    prefix(ip, 24, 48)
}

/// Source networks whose handshake rate is tracked at once.
const RATE_NETWORKS: usize = 4096;

impl AdmissionControl {
    /// No connections yet.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            handshakes: 0,
            awaiting: 0,
            per_network: HashMap::default(),
            per_node: HashMap::default(),
            handshake_rate: InboundLimiter::new(
                config.handshakes_per_second,
                config.handshakes_per_second,
                1,
            ),
            handshake_rate_per_network: InboundLimiter::new(
                config.handshakes_per_network.saturating_mul(4),
                config.handshakes_per_network,
                RATE_NETWORKS,
            ),
            counters: AdmissionCounters::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// What was counted.
    pub fn counters(&self) -> &AdmissionCounters {
        &self.counters
    }

    /// Incoming handshakes in progress.
    pub fn handshakes(&self) -> usize {
        self.handshakes
    }

    /// Inbound connections awaiting CONNECT.
    pub fn awaiting_connect(&self) -> usize {
        self.awaiting
    }

    /// Decides at `now` on an incoming handshake from `source` (`None`:
    /// over a relay circuit, limited by the relay), whose address is
    /// `validated` when it echoed a Retry token.
    pub fn incoming(&mut self, now: Instant, source: Option<IpAddr>, validated: bool) -> Verdict {
        let crowded = source
            .map(network)
            .and_then(|net| self.per_network.get(&net))
            .is_some_and(|&n| n >= self.config.max_per_ip);
        if crowded {
            self.counters.refused_source_network += 1;
            return Verdict::Refuse(Refusal::SourceNetwork);
        }
        if self.handshakes >= self.config.max_handshakes {
            self.counters.refused_handshakes += 1;
            return Verdict::Refuse(Refusal::Handshakes);
        }
        if self.handshakes >= self.config.retry_above && !validated {
            self.counters.retries += 1;
            return Verdict::Retry;
        }
        if !self.within_handshake_rate(now, source) {
            if !validated {
                self.counters.retries += 1;
                return Verdict::Retry;
            }
            self.counters.refused_handshake_rate += 1;
            return Verdict::Refuse(Refusal::HandshakeRate);
        }
        Verdict::Accept
    }

    /// Takes a new handshake from the node-wide budget and from `source`'s
    /// network's; false when either is spent. A circuit's handshakes
    /// (`None`) are paced by the relay.
    fn within_handshake_rate(&mut self, now: Instant, source: Option<IpAddr>) -> bool {
        let Some(ip) = source else {
            return true;
        };
        self.handshake_rate_per_network
            .allow(&wide_network(ip), now)
            && self.handshake_rate.allow(&(), now)
    }

    /// Closes a connection for flooding: counted.
    pub fn closed_flooding(&mut self) {
        self.counters.closed_flooding += 1;
    }

    /// An incoming handshake from `source` was accepted: its ticket.
    pub fn admitted(&mut self, source: Option<IpAddr>) -> Ticket {
        let network = source.map(network);
        if let Some(net) = network {
            *self.per_network.entry(net).or_default() += 1;
        }
        self.handshakes += 1;
        Ticket {
            network,
            handshaking: true,
            awaiting: false,
            node: None,
        }
    }

    /// An inbound connection finished its handshake as `peer`: it now
    /// awaits CONNECT, unless a limit refuses it.
    pub fn handshake_done(&mut self, ticket: &mut Ticket, peer: NodeId) -> Result<(), Refusal> {
        if std::mem::take(&mut ticket.handshaking) {
            self.handshakes -= 1;
        }
        let of_node = self.per_node.get(&peer).copied().unwrap_or(0);
        if of_node >= self.config.max_per_node {
            self.counters.refused_node_id += 1;
            return Err(Refusal::NodeId);
        }
        if self.awaiting >= self.config.max_awaiting_connect {
            self.counters.refused_awaiting_connect += 1;
            return Err(Refusal::AwaitingConnect);
        }
        *self.per_node.entry(peer).or_default() += 1;
        ticket.node = Some(peer);
        self.awaiting += 1;
        ticket.awaiting = true;
        Ok(())
    }

    /// The connection no longer awaits CONNECT: it was accepted, or the
    /// connection is closing.
    pub fn left_awaiting(&mut self, ticket: &mut Ticket) {
        if std::mem::take(&mut ticket.awaiting) {
            self.awaiting -= 1;
        }
    }

    /// A PING went unanswered (over the rate).
    pub fn ping_unanswered(&mut self) {
        self.counters.pings_unanswered += 1;
    }

    /// The connection is gone: everything its ticket counted is given back.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.handshaking {
            self.handshakes -= 1;
        }
        if ticket.awaiting {
            self.awaiting -= 1;
        }
        if let Some(net) = ticket.network {
            decrement(&mut self.per_network, net);
        }
        if let Some(node) = ticket.node {
            decrement(&mut self.per_node, node);
        }
    }

    /// The most one of `connections` connections may buffer: its share of
    /// the node-wide budget.
    pub fn buffer_share(&self, connections: usize) -> usize {
        self.config.memory_budget / connections.max(1)
    }
}

/// Counts one fewer under `key`, forgetting keys that reach zero.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("test address"))
    }

    fn t0() -> Instant {
        crate::test_epoch()
    }

    fn node(byte: u8) -> NodeId {
        NodeId::from_bytes([byte; 32])
    }

    fn small() -> AdmissionControl {
        AdmissionControl::new(AdmissionConfig {
            retry_above: 2,
            max_handshakes: 4,
            max_per_ip: 3,
            max_awaiting_connect: 2,
            max_per_node: 1,
            ..AdmissionConfig::default()
        })
    }

    #[test]
    fn handshakes_past_the_threshold_must_prove_their_address_then_are_refused() {
        let mut a = small();
        let mut tickets = Vec::new();
        for n in 0..2 {
            let source = ip(&format!("10.0.0.{n}"));
            assert_eq!(a.incoming(t0(), source, false), Verdict::Accept);
            tickets.push(a.admitted(source));
        }
        assert_eq!(a.incoming(t0(), ip("10.0.1.1"), false), Verdict::Retry);
        assert_eq!(a.incoming(t0(), ip("10.0.1.1"), true), Verdict::Accept);
        for n in 0..2 {
            tickets.push(a.admitted(ip(&format!("10.0.2.{n}"))));
        }
        let refused = Verdict::Refuse(Refusal::Handshakes);
        assert_eq!(a.incoming(t0(), ip("10.0.3.1"), true), refused);
        assert_eq!(a.counters().retries, 1);
        assert_eq!(a.counters().refused_handshakes, 1);
        for ticket in tickets {
            a.release(ticket);
        }
        assert_eq!(a.handshakes(), 0);
        assert_eq!(a.incoming(t0(), ip("10.0.3.1"), false), Verdict::Accept);
    }

    #[test]
    fn one_network_gets_its_share_whatever_the_addresses_in_it() {
        let mut a = AdmissionControl::new(AdmissionConfig {
            max_per_ip: 2,
            ..AdmissionConfig::default()
        });
        let t1 = a.admitted(ip("2001:db8::1"));
        let _t2 = a.admitted(ip("2001:db8::2"));
        let refused = Verdict::Refuse(Refusal::SourceNetwork);
        assert_eq!(
            a.incoming(t0(), ip("2001:db8::3"), true),
            refused,
            "same /64"
        );
        assert_eq!(
            a.incoming(t0(), ip("2001:db8:0:1::3"), false),
            Verdict::Accept
        );
        assert_eq!(a.incoming(t0(), None, false), Verdict::Accept, "relayed");
        a.release(t1);
        assert_eq!(a.incoming(t0(), ip("2001:db8::3"), false), Verdict::Accept);
        assert_eq!(a.counters().refused_source_network, 1);
    }

    #[test]
    fn awaiting_connect_and_node_id_caps_hold_until_tickets_move_on() {
        let mut a = small();
        let mut first = a.admitted(ip("10.0.0.1"));
        assert_eq!(a.handshake_done(&mut first, node(1)), Ok(()));
        let mut twin = a.admitted(ip("10.0.0.2"));
        assert_eq!(a.handshake_done(&mut twin, node(1)), Err(Refusal::NodeId));
        a.release(twin);
        let mut second = a.admitted(ip("10.0.0.3"));
        assert_eq!(a.handshake_done(&mut second, node(2)), Ok(()));
        let mut third = a.admitted(ip("10.0.0.4"));
        assert_eq!(
            a.handshake_done(&mut third, node(3)),
            Err(Refusal::AwaitingConnect)
        );
        a.release(third);
        a.left_awaiting(&mut first);
        assert_eq!(a.awaiting_connect(), 1);
        let mut fourth = a.admitted(ip("10.0.0.5"));
        assert_eq!(a.handshake_done(&mut fourth, node(4)), Ok(()));
        for ticket in [first, second, fourth] {
            a.release(ticket);
        }
        assert_eq!((a.handshakes(), a.awaiting_connect()), (0, 0));
        assert!(a.per_node.is_empty() && a.per_network.is_empty());
        assert_eq!(a.counters().refused_node_id, 1);
        assert_eq!(a.counters().refused_awaiting_connect, 1);
        a.release(Ticket::default());
    }

    #[test]
    fn new_handshakes_are_paced_per_network_and_node_wide() {
        let mut a = AdmissionControl::new(AdmissionConfig {
            handshakes_per_second: 10,
            handshakes_per_network: 2,
            ..AdmissionConfig::default()
        });
        let now = t0();
        // A /24 gets a burst of four times its rate, then must wait.
        for n in 0..8 {
            let source = ip(&format!("192.0.2.{n}"));
            assert_eq!(a.incoming(now, source, n % 2 == 0), Verdict::Accept);
        }
        let late = ip("192.0.2.200");
        assert_eq!(
            a.incoming(now, late, false),
            Verdict::Retry,
            "prove it first"
        );
        let refused = Verdict::Refuse(Refusal::HandshakeRate);
        assert_eq!(a.incoming(now, late, true), refused);
        let later = now + std::time::Duration::from_millis(500);
        assert_eq!(a.incoming(later, late, true), Verdict::Accept, "one earned");
        // Other networks share the node-wide budget: 2 were left of 10,
        // half a second earned 5, one went to the late handshake.
        for n in 0..6 {
            let source = ip(&format!("198.51.{n}.1"));
            assert_eq!(a.incoming(later, source, true), Verdict::Accept);
        }
        let spent = a.incoming(later, ip("203.0.113.1"), true);
        assert_eq!(spent, refused, "the node-wide budget is spent");
        assert_eq!(a.incoming(later, None, true), Verdict::Accept, "relayed");
        assert_eq!(a.counters().refused_handshake_rate, 2);
        assert_eq!(a.counters().retries, 1);
        // An IPv6 /48 counts as one network.
        let mut b = AdmissionControl::new(AdmissionConfig {
            handshakes_per_network: 1,
            ..AdmissionConfig::default()
        });
        for n in 0..4 {
            let source = ip(&format!("2001:db8:1:{n}::1"));
            assert_eq!(b.incoming(now, source, true), Verdict::Accept);
        }
        assert_eq!(b.incoming(now, ip("2001:db8:1:ff::1"), true), refused);
        assert_eq!(b.incoming(now, ip("2001:db8:2::1"), true), Verdict::Accept);
    }

    #[test]
    fn the_memory_budget_is_shared_out() {
        let a = AdmissionControl::new(AdmissionConfig {
            memory_budget: 1000,
            ..AdmissionConfig::default()
        });
        assert_eq!(a.buffer_share(0), 1000);
        assert_eq!(a.buffer_share(4), 250);
    }
}
