//! The wire protocol: frames, every message, and their codec.
//!
//! A frame is an 8-byte [`Header`] (version, type, flags, reserved, body
//! length) and a binary body laid out field by field (big-endian integers,
//! u16-prefixed UTF-8 strings, u32-prefixed byte payloads, u16-counted
//! lists). `docs/PROTOCOL.md` is the normative spec, with a hex example of
//! every message that a test checks against this code.
//!
//! - [`Message::encode`] writes a frame into any [`bytes::BufMut`], refusing
//!   (with an [`EncodeError`]) a message a peer would reject under the same
//!   [`Limits`].
//! - [`decode`] reads the frame at the start of a buffer:
//!   [`Decoded::Complete`] with the bytes used, or [`Decoded::NeedMore`]. It
//!   is total (never panics, bounded allocation) and its [`DecodeError`]s
//!   carry the documented [`Reaction`].
//! - [`FrameReader`] reassembles the frames of one QUIC stream from chunks.

mod control;
mod dht;
mod error;
pub(crate) mod field;
mod header;
mod limits;
mod message;
mod nat;
mod pubsub;
mod reach;
mod relay;
mod rpc;
mod stream;
mod streamed;
mod types;

pub use control::{Connect, Disconnect, Ping, Pong};
pub use dht::{
    FindNode, FindNodeReply, FindValue, FindValueReply, Store, StoreAck, StoreBatch, StoreBatchAck,
};
pub use error::{DecodeError, EncodeError, OverLimit, Reaction};
pub use header::{HEADER_LEN, Header};
pub use limits::Limits;
pub use message::{Decoded, Message, MessageType, decode, decode_shared};
pub use nat::{
    AllocationCode, CandidateType, FilteringCode, MappingCode, NatInfo, PunchAnswer, PunchOffer,
    PunchOutcome, PunchResult, PunchSync, WireCandidate,
};
pub use pubsub::{Publish, PublishBatch, Published, Subscribe, Unsubscribe, pack_publishes};
pub use reach::{
    CapabilitiesUpdate, DialBack, DialBackProbe, DialBackResult, DialBackStatus, ProbeSource,
};
pub use relay::{
    CircuitIncoming, CircuitOpen, CircuitPeer, CircuitStatus, RelayRelease, RelayReserve,
    RelayReserveStatus, RelayStatus,
};
pub use rpc::{Call, Cancel, ErrorReply, PayloadChunk, PayloadSize, Reply};
pub use stream::FrameReader;
pub use streamed::{AssemblyError, PayloadAssembler, Step, Streamed, part_len};
pub use types::{Capabilities, Contact, DisconnectReason, ErrorCode, StoreStatus};

/// The protocol version this implementation speaks (the header's first byte).
pub const VERSION: u8 = 1;

/// The QUIC ALPN protocol id.
pub const ALPN: &[u8] = b"macula";

/// The TLS server name every dial uses (the expected node id travels in the
/// per-dial configuration, not in the name).
pub const SERVER_NAME: &str = "macula";
