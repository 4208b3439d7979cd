//! NAT traversal: learning how the network in front of a node behaves and getting through it.
//!
//! [`stun`] holds the STUN codec, the responder every node runs on its one socket, the client
//! transactions that ask reflectors for the node's reflexive address, and the pure
//! classification of NAT behaviour from their answers. [`discovery`] runs them, with
//! third-party dial-backs, into a [`discovery::NatReport`] (mapping, filtering, port
//! allocation, reachability). [`punch`] is the hole-punch machine that finds a direct path
//! between two nodes from their candidates, with the RFC 4787 oracle of when one is possible
//! (the Node runs it over relayed connections: `path::upgrade`). [`reach`] is the Node's
//! reachability child: STUN on the node's socket, discovery, dial-backs, the DHT role and the
//! peer record.

pub mod discovery;
pub mod portmap;
pub mod punch;
pub mod reach;
pub mod stun;
