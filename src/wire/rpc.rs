//! RPC messages (0x2_): calls, their outcomes and cancellation. REPLY and
//! ERROR also answer SUBSCRIBE and UNSUBSCRIBE.

use bytes::Bytes;

use super::field::wire_struct;
use super::types::ErrorCode;

wire_struct! {
    /// CALL (0x20): invokes a procedure.
    pub struct Call {
        /// Echoed by REPLY or ERROR.
        pub request_id: u64,
        /// The procedure name.
        pub procedure: String,
        /// How long the caller waits, in milliseconds (0: no deadline given).
        pub timeout_ms: u32,
        /// The caller declares the call safe to run twice (so it may fail over).
        pub idempotent: bool,
        /// The arguments.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// REPLY (0x21): the successful outcome of a request.
    pub struct Reply {
        /// The request's id.
        pub request_id: u64,
        /// The result.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// ERROR (0x22): the failed outcome of a request.
    pub struct ErrorReply {
        /// The request's id.
        pub request_id: u64,
        /// What kind of failure.
        pub code: ErrorCode,
        /// Human-readable detail (may be empty).
        pub message: String,
    }
}

wire_struct! {
    /// CANCEL (0x23): the caller gives up on a call; no answer follows.
    pub struct Cancel {
        /// The call's id.
        pub request_id: u64,
    }
}

wire_struct! {
    /// PAYLOAD_SIZE (0x24): the CALL or REPLY that follows on this stream
    /// carries only the first part of its payload; PAYLOAD_CHUNK frames
    /// carry the rest, `total_len` payload bytes in all (docs/PROTOCOL.md
    /// §8.3, "Streamed payloads").
    pub struct PayloadSize {
        /// The request the payload belongs to.
        pub request_id: u64,
        /// The whole payload's length in bytes.
        pub total_len: u64,
    }
}

wire_struct! {
    /// PAYLOAD_CHUNK (0x25): the next bytes of a streamed payload.
    pub struct PayloadChunk {
        /// The request the payload belongs to.
        pub request_id: u64,
        /// The bytes, following the previous part.
        pub data: Bytes,
    }
}
