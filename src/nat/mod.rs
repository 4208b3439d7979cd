//! NAT traversal: learning how the network in front of a node behaves and getting through it.
//!
//! Today this holds [`stun`], the STUN codec, the responder every node runs on its one socket,
//! the client transactions that ask reflectors for the node's reflexive address, and the pure
//! classification of mapping behaviour from their answers. Discovery of filtering and port
//! allocation, and hole-punch coordination, build on it.

pub mod punch;
pub mod stun;
