//! The DHT's requests and replies, as the wire will carry them.
//!
//! These types are transport-agnostic: the DHT emits them for the Node to
//! encode and send, and takes them back decoded. Each maps 1:1 onto a wire
//! frame: every request travels with a `request_id: u64` that its reply
//! echoes; a [`Contact`] is a node id with its socket addresses; a
//! FIND_VALUE reply carries records and closer contacts; a STORE is a batch
//! whose reply has one status per record, in order.

use std::net::SocketAddr;

use smallvec::SmallVec;

use crate::id::{NodeId, RecordKey};
use crate::record::SignedRecord;

/// Identifies one outbound request; its reply echoes it. Drawn from a
/// counter, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies one operation (lookup, query, store, bootstrap). Drawn from a
/// counter, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// How to reach a DHT node: its id and the addresses it can be dialed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The node's id.
    pub id: NodeId,
    /// Where to dial it (usually one or two addresses).
    pub addrs: SmallVec<[SocketAddr; 2]>,
}

impl Contact {
    /// A contact with a single address.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Self {
            id,
            addrs: SmallVec::from_elem(addr, 1),
        }
    }
}

/// A request one DHT node sends another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Are you alive? (used before evicting a routing-table entry).
    Ping,
    /// The contacts you know closest to `target`.
    FindNode {
        /// The id looked up.
        target: NodeId,
    },
    /// Your records under `key`, and the contacts you know closest to it.
    FindValue {
        /// The key looked up.
        key: RecordKey,
    },
    /// Keep these records (STORE_BATCH: every record for one peer in one tick).
    Store {
        /// The records, each signed by its provider.
        records: Vec<SignedRecord>,
    },
}

/// Why a record in a STORE was not kept (the wire's STORE_BATCH_ACK
/// statuses other than `Stored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The signature did not verify.
    BadSignature,
    /// The record's TTL was over on arrival.
    Expired,
    /// The key holds its maximum of providers, or the store its byte budget.
    Full,
    /// A newer record of the same provider is already held.
    Stale,
    /// The record is refused (its value is over the size limit).
    Refused,
    /// The record's TTL is over the receiver's cap.
    TtlTooLong,
    /// The record's issue time is ahead of the receiver's clock by more
    /// than the allowed skew.
    IssuedInFuture,
    /// Its publisher, or the network the STORE came from, holds its share
    /// of the receiver's store.
    OverQuota,
}

/// The outcome of one record of a STORE batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    /// The record is held.
    Stored,
    /// The record was refused.
    Rejected(RejectReason),
}

/// Why a request was refused as a whole (a subset of the wire's ERROR codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The node does not serve the DHT: it is a client, which queries and
    /// publishes but never serves.
    Refused,
    /// The sender exceeded its inbound request budget.
    Overloaded,
    /// The request broke a limit (too many records in one batch).
    TooLarge,
}

/// A reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The reply to [`Request::Ping`].
    Pong,
    /// The reply to [`Request::FindNode`]: at most k contacts, closest first.
    Nodes {
        /// Contacts closer to the target, never known-dead ones.
        closer: Vec<Contact>,
    },
    /// The reply to [`Request::FindValue`] (FIND_VALUE_REPLY).
    Value {
        /// The live records held under the key, as many as fit one frame
        /// (smallest first when some had to be left out).
        records: Vec<SignedRecord>,
        /// Live records held under the key but left out so that the reply
        /// fits one frame.
        omitted: usize,
        /// Contacts closer to the key.
        closer: Vec<Contact>,
    },
    /// The reply to [`Request::Store`]: one status per record, in order.
    Stored {
        /// Per-record outcomes.
        statuses: Vec<StoreStatus>,
    },
    /// The request was refused.
    Error(ErrorCode),
}
