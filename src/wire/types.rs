//! Values shared by several messages: the capability bitset, reason and
//! status codes, and DHT contacts.

use std::net::SocketAddr;

use bytes::BufMut;

use crate::id::NodeId;

use super::field::{Ctx, Field, Reader, wire_enum, wire_struct};
use super::{DecodeError, EncodeError, Limits};

/// What a node offers, announced in CONNECT: a u64 bitset. Bits this version
/// does not know are kept as received and otherwise ignored (the capability
/// policy: a peer may announce anything; we use only what we know).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Serves the DHT (publicly reachable): answers FIND_NODE, FIND_VALUE, STORE.
    pub const DHT_SERVER: Capabilities = Capabilities(1 << 0);
    /// Relays circuits for NATed peers.
    pub const RELAY: Capabilities = Capabilities(1 << 1);
    /// Serves RPC (CALL, CANCEL).
    pub const RPC: Capabilities = Capabilities(1 << 2);
    /// Takes part in pub/sub (PUBLISH, SUBSCRIBE, UNSUBSCRIBE).
    pub const PUBSUB: Capabilities = Capabilities(1 << 3);
    /// Accepts STORE_BATCH.
    pub const STORE_BATCH: Capabilities = Capabilities(1 << 4);
    /// Understands CIRCUIT_PEER (a relay may send it on the control stream).
    pub const CIRCUIT_PEER: Capabilities = Capabilities(1 << 5);
    /// Accepts PUBLISH_BATCH on publish streams.
    pub const PUBLISH_BATCH: Capabilities = Capabilities(1 << 6);

    /// No capability.
    pub const NONE: Capabilities = Capabilities(0);

    /// True when every bit of `other` is set here.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    pub const fn with(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }
}

impl Field for Capabilities {
    const MIN_LEN: usize = 8;

    fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
        Ok(Self::MIN_LEN)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        self.0.put(out);
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        u64::get(r, ctx).map(Capabilities)
    }
}

wire_enum! {
    /// Why a connection is being closed (DISCONNECT), one byte.
    pub enum DisconnectReason: u8 {
        /// Normal close, nothing wrong.
        Normal = 0,
        /// The peers are in different realms.
        RealmMismatch = 1,
        /// The peer broke the protocol (a frame that does not decode, a
        /// request before CONNECT, ...).
        ProtocolError = 2,
        /// The peer's frame version is not spoken here.
        UnsupportedVersion = 3,
        /// Too busy to take the connection.
        Overloaded = 4,
        /// The peer is not allowed here.
        Unauthorized = 5,
        /// The node is shutting down.
        Shutdown = 6,
        /// The connection was idle too long.
        Idle = 7,
    }
}

wire_enum! {
    /// Why a request failed (ERROR), two bytes.
    pub enum ErrorCode: u16 {
        /// No node provides the procedure.
        NoProvider = 1,
        /// The call did not complete in time.
        Timeout = 2,
        /// The handler ran and failed; the message says how.
        RemoteError = 3,
        /// Not served here, or refused by policy (a CALL to a node without
        /// RPC, ...).
        Refused = 4,
        /// The request or its reply is over a size limit.
        TooLarge = 5,
        /// Too busy; try later or elsewhere.
        Overloaded = 6,
        /// No handler for this procedure on this node.
        UnknownProcedure = 7,
        /// The caller cancelled the call.
        Cancelled = 8,
        /// The request is malformed for its kind (a bad pattern, ...).
        BadRequest = 9,
        /// The caller may not call this procedure (the provider's
        /// authorization: its allow-lists or callback).
        Unauthorized = 10,
    }
}

wire_enum! {
    /// What became of one stored record (STORE_ACK, STORE_BATCH_ACK), one byte.
    pub enum StoreStatus: u8 {
        /// Stored (or refreshed).
        Stored = 0,
        /// The signature does not verify.
        BadSignature = 1,
        /// The record's lifetime is over.
        Expired = 2,
        /// The store is full.
        Full = 3,
        /// A newer record of the same provider is already stored.
        Stale = 4,
        /// This node does not serve the DHT or refuses the record.
        Refused = 5,
        /// The record's TTL is over the receiver's cap.
        TtlTooLong = 6,
        /// The record's issue time is too far ahead of the receiver's clock.
        IssuedInFuture = 7,
        /// The publisher, or the network the STORE came from, holds its
        /// share of the receiver's store.
        OverQuota = 8,
    }
}

wire_struct! {
    /// A node and where to reach it (DHT replies).
    pub struct Contact {
        /// The node's id.
        pub node_id: NodeId,
        /// Its addresses, at most [`Limits::max_addrs`].
        pub addrs: Vec<SocketAddr>; Addrs,
    }
}
