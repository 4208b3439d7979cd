//! Helpers shared by the RPC tests: ids, provider records, draining.

#![allow(dead_code)] // each test crate uses its own subset

use std::time::Instant;

use bytes::Bytes;
use macula::Child;
use macula::id::{NodeId, Realm, RecordKey, RecordKind};
use macula::rpc::{Found, ProviderFlags, Rpc, RpcConfig, RpcOutput};

/// The realm of every test.
pub fn realm() -> Realm {
    Realm::new("io.test").unwrap()
}

/// A node id made of one repeated byte.
pub fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

/// The base instant of a test.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

/// A default machine seeded with 7.
pub fn rpc() -> Rpc {
    Rpc::new(RpcConfig::new(realm(), 7))
}

/// The provider record key of `procedure`.
pub fn key(procedure: &str) -> RecordKey {
    RecordKey::new(&realm(), RecordKind::Rpc, procedure)
}

/// Node `byte`'s provider record.
pub fn provider(byte: u8, idempotent: bool) -> Found {
    Found {
        provider: node(byte),
        value: ProviderFlags { idempotent }.encode(),
    }
}

/// Every queued output.
pub fn drain(rpc: &mut Rpc) -> Vec<RpcOutput> {
    std::iter::from_fn(|| rpc.poll_output()).collect()
}

/// A payload of `text`.
pub fn bytes(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}
