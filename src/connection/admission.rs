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
//!   node id.
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

use crate::collections::HashMap;
use crate::id::NodeId;
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
/// | pings_per_second | 20 PINGs answered per connection per second (bursts of as many) |
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
    /// PINGs answered per connection per second; more are left unanswered.
    pub pings_per_second: u32,
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
            pings_per_second: 20,
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
    /// Connections closed: too many awaiting CONNECT.
    pub refused_awaiting_connect: u64,
    /// Connections closed: too many of the node id.
    pub refused_node_id: u64,
    /// PINGs left unanswered (over the per-connection rate).
    pub pings_unanswered: u64,
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
    counters: AdmissionCounters,
}

/// The network a source counts in: an IPv4 address, an IPv6 /64.
fn network(ip: IpAddr) -> IpPrefix {
    prefix(ip, 32, 64)
}

impl AdmissionControl {
    /// No connections yet.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            handshakes: 0,
            awaiting: 0,
            per_network: HashMap::default(),
            per_node: HashMap::default(),
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

    /// Decides on an incoming handshake from `source` (`None`: over a relay
    /// circuit, limited by the relay), whose address is `validated` when
    /// it echoed a Retry token.
    pub fn incoming(&mut self, source: Option<IpAddr>, validated: bool) -> Verdict {
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
        Verdict::Accept
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
            assert_eq!(a.incoming(source, false), Verdict::Accept);
            tickets.push(a.admitted(source));
        }
        assert_eq!(a.incoming(ip("10.0.1.1"), false), Verdict::Retry);
        assert_eq!(a.incoming(ip("10.0.1.1"), true), Verdict::Accept);
        for n in 0..2 {
            tickets.push(a.admitted(ip(&format!("10.0.2.{n}"))));
        }
        let refused = Verdict::Refuse(Refusal::Handshakes);
        assert_eq!(a.incoming(ip("10.0.3.1"), true), refused);
        assert_eq!(a.counters().retries, 1);
        assert_eq!(a.counters().refused_handshakes, 1);
        for ticket in tickets {
            a.release(ticket);
        }
        assert_eq!(a.handshakes(), 0);
        assert_eq!(a.incoming(ip("10.0.3.1"), false), Verdict::Accept);
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
        assert_eq!(a.incoming(ip("2001:db8::3"), true), refused, "same /64");
        assert_eq!(a.incoming(ip("2001:db8:0:1::3"), false), Verdict::Accept);
        assert_eq!(a.incoming(None, false), Verdict::Accept, "relayed");
        a.release(t1);
        assert_eq!(a.incoming(ip("2001:db8::3"), false), Verdict::Accept);
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
    fn the_memory_budget_is_shared_out() {
        let a = AdmissionControl::new(AdmissionConfig {
            memory_budget: 1000,
            ..AdmissionConfig::default()
        });
        assert_eq!(a.buffer_share(0), 1000);
        assert_eq!(a.buffer_share(4), 250);
    }
}
