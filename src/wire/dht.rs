//! DHT messages (0x4_): Kademlia lookups and stores, each with its reply.

use crate::id::{NodeId, RecordKey};
use crate::record::SignedRecord;

use super::field::wire_struct;
use super::types::{Contact, StoreStatus};

wire_struct! {
    /// FIND_NODE (0x40): asks for the contacts closest to `target`.
    pub struct FindNode {
        /// Echoed by FIND_NODE_REPLY.
        pub request_id: u64,
        /// The id looked up.
        pub target: NodeId,
    }
}

wire_struct! {
    /// FIND_NODE_REPLY (0x41): the closest contacts the responder knows.
    pub struct FindNodeReply {
        /// The request's id.
        pub request_id: u64,
        /// At most [`Limits::max_contacts`](super::Limits::max_contacts).
        pub contacts: Vec<Contact>; Contacts,
    }
}

wire_struct! {
    /// FIND_VALUE (0x42): asks for the records under `key`.
    pub struct FindValue {
        /// Echoed by FIND_VALUE_REPLY.
        pub request_id: u64,
        /// The key looked up.
        pub key: RecordKey,
    }
}

wire_struct! {
    /// FIND_VALUE_REPLY (0x43): the records the responder holds under the key
    /// (one per provider) and contacts closer to it.
    pub struct FindValueReply {
        /// The request's id.
        pub request_id: u64,
        /// At most [`Limits::max_list_len`](super::Limits::max_list_len),
        /// as many as fit one frame.
        pub records: Vec<SignedRecord>,
        /// Records held under the key but left out so that the reply fits
        /// one frame.
        pub omitted: u16,
        /// At most [`Limits::max_contacts`](super::Limits::max_contacts).
        pub closer: Vec<Contact>; Contacts,
    }
}

wire_struct! {
    /// STORE (0x44): asks the responder to keep a record.
    pub struct Store {
        /// Echoed by STORE_ACK.
        pub request_id: u64,
        /// The record (boxed: it is by far the largest field of any message).
        pub record: Box<SignedRecord>,
    }
}

wire_struct! {
    /// STORE_ACK (0x45): what became of a STORE.
    pub struct StoreAck {
        /// The request's id.
        pub request_id: u64,
        /// The outcome.
        pub status: StoreStatus,
    }
}

wire_struct! {
    /// STORE_BATCH (0x46): several STOREs in one frame (peers announcing
    /// [`Capabilities::STORE_BATCH`](super::Capabilities::STORE_BATCH)).
    pub struct StoreBatch {
        /// Echoed by STORE_BATCH_ACK.
        pub request_id: u64,
        /// At most [`Limits::max_list_len`](super::Limits::max_list_len).
        pub records: Vec<SignedRecord>,
    }
}

wire_struct! {
    /// STORE_BATCH_ACK (0x47): one status per record of the batch, in order.
    pub struct StoreBatchAck {
        /// The request's id.
        pub request_id: u64,
        /// At most [`Limits::max_list_len`](super::Limits::max_list_len).
        pub statuses: Vec<StoreStatus>,
    }
}
