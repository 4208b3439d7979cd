//! Kademlia DHT: routing table, lookups, request correlation, signed records.
//!
//! This module is pure state: [`Dht`] emits "send this request to that peer"
//! and takes replies, failures and RTT samples; the Node carries the
//! messages over pooled QUIC connections. Each job lives in its own module:
//! [`routing`] (k-buckets), [`lookup`] (the closest-peers iterator),
//! [`disjoint`] (S/Kademlia disjoint paths over it), [`near`] (where a
//! target's closest nodes are expected to lie),
//! [`requests`] (correlation and deadlines), [`breaker`] (per-peer circuit
//! breakers), [`crate::limiter`] (inbound budgets), [`store`] (records held for
//! others, with quotas and eviction), [`diversity`] (how many contacts one
//! network may supply), [`fit`] (replies cut to one frame), [`metrics`], [`config`] and
//! [`machine`] (the operations that tie them together); the simulator's
//! `sim::dht_net` (feature `sim`) runs many of them over a model network.
//!
//! ## Driving a [`Dht`]
//!
//! Like every machine of the crate: feed an input stamped with the
//! monotonic `now` (and wall-clock Unix ms where records are involved),
//! drain [`Dht::poll_output`](crate::Child::poll_output), then sleep until
//! [`Dht::poll_timeout`](crate::Child::poll_timeout).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use macula::Child;
//! use macula::dht::{Contact, Dht, DhtConfig, DhtEvent, DhtOutput, Request, Response};
//! use macula::id::Identity;
//!
//! let now = Instant::now(); // a driver reads its clock; the DHT never does
//! let unix_ms = 1_800_000_000_000;
//! let mut dht = Dht::new(DhtConfig::default(), Identity::from_seed([1; 32]), 7);
//! let seed = Contact::new(Identity::from_seed([2; 32]).node_id(), "192.0.2.1:4433".parse().unwrap());
//! dht.bootstrap(now, vec![seed.clone()]);
//! // The DHT asks the seed for the nodes closest to us...
//! let Some(DhtOutput::Request { request_id, peer, request: Request::FindNode { .. } }) = dht.poll_output() else {
//!     panic!("expected a FIND_NODE")
//! };
//! assert_eq!(peer, seed);
//! assert!(dht.poll_output().is_none());
//! // ...the Node carries it over QUIC and hands back the reply (the seed
//! // knows nobody else yet).
//! let later = now + Duration::from_millis(80);
//! dht.handle_response(later, unix_ms, &peer.id, request_id, Response::Nodes { closer: vec![] });
//! let Some(DhtOutput::Event(DhtEvent::Bootstrapped { table_size, .. })) = dht.poll_output() else {
//!     panic!("expected the bootstrap to end")
//! };
//! assert_eq!(table_size, 1);
//! // With so few peers the self-lookup is retried later: the next deadline.
//! assert_eq!(dht.poll_timeout(), Some(later + Duration::from_secs(1)));
//! ```

pub mod breaker;
pub mod config;
pub mod disjoint;
pub mod diversity;
pub mod fit;
pub mod lookup;
pub mod machine;
pub mod message;
pub mod metrics;
pub mod near;
pub mod requests;
pub mod routing;
pub mod store;
pub mod wire;

pub use config::{DhtConfig, Mode, Quorum};
pub use disjoint::DisjointPaths;
pub use diversity::Diversity;
pub use lookup::{ClosestPeersIter, LookupConfig, LookupStep, PeerState};
pub use machine::{Dht, DhtError, DhtEvent, DhtOutput, Failure, Inbound, QueryStats};
pub use message::{
    Contact, ErrorCode, QueryId, RejectReason, Request, RequestId, Response, StoreStatus,
};
pub use metrics::{DhtMetrics, LatencyHistogram};
pub use near::NearRadius;
pub use routing::{InsertOutcome, RoutingTable};
pub use store::{Quota, RecordStore, StoreError, StoreLimits};

/// For unit tests: the routing table of each of `ids` after every other id
/// offered itself (k = 20), as in a network where everyone met everyone.
#[cfg(test)]
pub(crate) fn full_tables(ids: &[crate::id::NodeId]) -> Vec<RoutingTable> {
    let addr: std::net::SocketAddr = ([10, 0, 0, 1], 1).into();
    ids.iter()
        .map(|&me| {
            let mut table = RoutingTable::new(me, 20);
            for &other in ids {
                table.insert(Contact::new(other, addr));
            }
            table
        })
        .collect()
}
