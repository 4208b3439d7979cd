//! What [`MaculaNode::bind`](crate::MaculaNode::bind) needs: the node's
//! settings plus the driver's own (address, identity, secret, budgets).

use std::net::SocketAddr;

use macula::id::{Identity, Realm};
use macula::node::NodeConfig;
use macula::secret::Secret;

use crate::driver::DEFAULT_DATAGRAMS_PER_TURN;

/// Everything a [`MaculaNode`](crate::MaculaNode) starts from.
///
/// | setting | default |
/// | --- | --- |
/// | node | [`NodeConfig::new`] for the realm |
/// | bind | as given |
/// | identity | a fresh Ed25519 key from the OS RNG |
/// | secret | 256 fresh bits from the OS RNG |
/// | datagrams_per_turn | [`DEFAULT_DATAGRAMS_PER_TURN`] (64) |
/// | command_capacity | 64 commands queued for the driver task |
/// | event_capacity | 1024 events kept for slow subscribers (older ones are skipped) |
/// | metrics_addr | `None`: no HTTP server for `/metrics` and `/health` |
///
/// When `node.listen_addrs` is empty, the node announces the address it
/// bound, unless that address is unspecified (`0.0.0.0`, `[::]`): then set
/// `listen_addrs` yourself (with a fixed port) so peers can dial back.
#[derive(Clone, Debug)]
pub struct MaculaConfig {
    /// The node's own settings.
    pub node: NodeConfig,
    /// The UDP address to bind; `[::]:port` binds dual-stack where the OS allows.
    pub bind: SocketAddr,
    /// The node's identity; `None` generates one from the OS RNG.
    pub identity: Option<Identity>,
    /// The node's 256-bit secret, from which its QUIC stateless-reset and
    /// token keys, connection ids, STUN transaction ids and punch tags
    /// derive; `None` draws one from the OS RNG. Give one only if you keep
    /// it as secret as the identity key (say, to keep stateless resets
    /// valid across restarts): whoever knows it can reset the node's
    /// connections from off the path.
    pub secret: Option<Secret>,
    /// Datagrams one wake-up handles at most.
    pub datagrams_per_turn: usize,
    /// Commands that may wait for the driver task.
    pub command_capacity: usize,
    /// Events kept per subscriber before the oldest are skipped.
    pub event_capacity: usize,
    /// Where to serve `GET /metrics` (OpenMetrics text) and `GET /health`
    /// over HTTP (port 0 picks a free one; see
    /// [`MaculaNode::metrics_addr`](crate::MaculaNode::metrics_addr)).
    pub metrics_addr: Option<SocketAddr>,
}

impl MaculaConfig {
    /// Defaults for a node of `realm` bound at `bind`.
    pub fn new(realm: Realm, bind: SocketAddr) -> Self {
        Self {
            node: NodeConfig::new(realm),
            bind,
            identity: None,
            secret: None,
            datagrams_per_turn: DEFAULT_DATAGRAMS_PER_TURN,
            command_capacity: 64,
            event_capacity: 1024,
            metrics_addr: None,
        }
    }
}
