//! Kademlia DHT: routing table, lookups, request correlation, signed records.
//!
//! This module is pure state: it emits "send this request to that peer" and
//! takes replies, failures and RTT samples; the Node carries the messages
//! over pooled QUIC connections.

pub mod lookup;
pub mod message;
pub mod routing;

pub use lookup::{ClosestPeersIter, LookupConfig, LookupStep, PeerState};
pub use message::{
    Contact, ErrorCode, QueryId, RejectReason, Request, RequestId, Response, StoreStatus,
};
pub use routing::{InsertOutcome, RoutingTable};
