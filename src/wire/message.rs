//! The message catalogue: one [`Message`] enum over every message struct,
//! their type numbers, and the frame-level encoder and decoder.

use bytes::{BufMut, Bytes};

use super::control::{Connect, Disconnect, Ping, Pong};
use super::dht::{
    FindNode, FindNodeReply, FindValue, FindValueReply, Store, StoreAck, StoreBatch, StoreBatchAck,
};
use super::field::{Bound, Ctx, Field, Reader};
use super::header::{HEADER_LEN, Header};
use super::nat::{PunchAnswer, PunchOffer, PunchResult, PunchSync};
use super::pubsub::{Publish, PublishBatch, Subscribe, Unsubscribe};
use super::reach::{CapabilitiesUpdate, DialBack, DialBackProbe, DialBackResult};
use super::relay::{
    CircuitIncoming, CircuitOpen, CircuitPeer, CircuitStatus, RelayRelease, RelayReserve,
    RelayReserveStatus,
};
use super::rpc::{Call, Cancel, ErrorReply, PayloadChunk, PayloadSize, Reply};
use super::{DecodeError, EncodeError, Limits, OverLimit};

/// Declares [`Message`] and [`MessageType`] from one table of
/// `Variant = code "NAME"` rows, so the two can never disagree.
macro_rules! messages {
    ($($(#[$meta:meta])* $variant:ident = $code:literal $name:literal,)*) => {
        /// Every message of protocol version 1.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message {
            $($(#[$meta])* $variant($variant),)*
        }

        /// The type byte of each message.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum MessageType {
            $($(#[$meta])* $variant = $code,)*
        }

        impl MessageType {
            /// Every message type, in type-number order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant),*];

            /// The type a type byte names, if it is known.
            pub const fn from_code(code: u8) -> Option<MessageType> {
                match code {
                    $($code => Some(MessageType::$variant),)*
                    _ => None,
                }
            }

            /// The type byte.
            pub const fn code(self) -> u8 {
                self as u8
            }

            /// The name the spec uses (`FIND_NODE_REPLY`, ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $(MessageType::$variant => $name,)*
                }
            }
        }

        impl Message {
            /// This message's type.
            pub const fn message_type(&self) -> MessageType {
                match self {
                    $(Message::$variant(_) => MessageType::$variant,)*
                }
            }

            fn body_len(&self, limits: &Limits) -> Result<usize, EncodeError> {
                let ctx = Ctx { what: self.message_type().name(), bound: Bound::List };
                match self {
                    $(Message::$variant(m) => m.wire_len(ctx, limits),)*
                }
            }

            fn put_body<B: BufMut + ?Sized>(&self, out: &mut B) {
                match self {
                    $(Message::$variant(m) => m.put(out),)*
                }
            }

            fn get_body(ty: MessageType, r: &mut Reader<'_>) -> Result<Message, DecodeError> {
                let ctx = Ctx { what: ty.name(), bound: Bound::List };
                Ok(match ty {
                    $(MessageType::$variant => Message::$variant(Field::get(r, ctx)?),)*
                })
            }
        }

        $(
            impl From<$variant> for Message {
                fn from(m: $variant) -> Message {
                    Message::$variant(m)
                }
            }
        )*
    };
}

messages! {
    /// CONNECT: the handshake frame.
    Connect = 0x01 "CONNECT",
    /// DISCONNECT: closing, with a reason.
    Disconnect = 0x02 "DISCONNECT",
    /// PING: liveness probe.
    Ping = 0x03 "PING",
    /// PONG: answer to PING.
    Pong = 0x04 "PONG",
    /// PUBLISH: a message on a topic.
    Publish = 0x10 "PUBLISH",
    /// SUBSCRIBE: add a subscription.
    Subscribe = 0x11 "SUBSCRIBE",
    /// UNSUBSCRIBE: drop a subscription.
    Unsubscribe = 0x12 "UNSUBSCRIBE",
    /// PUBLISH_BATCH: PUBLISH frames of one session and topic in a row.
    PublishBatch = 0x13 "PUBLISH_BATCH",
    /// CALL: invoke a procedure.
    Call = 0x20 "CALL",
    /// REPLY: a request succeeded.
    Reply = 0x21 "REPLY",
    /// ERROR: a request failed.
    ErrorReply = 0x22 "ERROR",
    /// CANCEL: give up on a call.
    Cancel = 0x23 "CANCEL",
    /// PAYLOAD_SIZE: a streamed payload's length, before its CALL or REPLY.
    PayloadSize = 0x24 "PAYLOAD_SIZE",
    /// PAYLOAD_CHUNK: the next part of a streamed payload.
    PayloadChunk = 0x25 "PAYLOAD_CHUNK",
    /// FIND_NODE: closest contacts to an id.
    FindNode = 0x40 "FIND_NODE",
    /// FIND_NODE_REPLY: the contacts.
    FindNodeReply = 0x41 "FIND_NODE_REPLY",
    /// FIND_VALUE: records under a key.
    FindValue = 0x42 "FIND_VALUE",
    /// FIND_VALUE_REPLY: the records and closer contacts.
    FindValueReply = 0x43 "FIND_VALUE_REPLY",
    /// STORE: keep a record.
    Store = 0x44 "STORE",
    /// STORE_ACK: the outcome of a STORE.
    StoreAck = 0x45 "STORE_ACK",
    /// STORE_BATCH: keep several records.
    StoreBatch = 0x46 "STORE_BATCH",
    /// STORE_BATCH_ACK: one outcome per record.
    StoreBatchAck = 0x47 "STORE_BATCH_ACK",
    /// RELAY_RESERVE: ask a relay for a reservation, or renew it.
    RelayReserve = 0x50 "RELAY_RESERVE",
    /// RELAY_RESERVE_STATUS: the reservation granted or refused.
    RelayReserveStatus = 0x51 "RELAY_RESERVE_STATUS",
    /// RELAY_RELEASE: give a reservation up.
    RelayRelease = 0x52 "RELAY_RELEASE",
    /// CIRCUIT_OPEN: ask a relay for a circuit to a reserved node.
    CircuitOpen = 0x53 "CIRCUIT_OPEN",
    /// CIRCUIT_STATUS: the circuit granted or refused.
    CircuitStatus = 0x54 "CIRCUIT_STATUS",
    /// CIRCUIT_INCOMING: a relay announces a circuit to its reserved node.
    CircuitIncoming = 0x55 "CIRCUIT_INCOMING",
    /// CIRCUIT_PEER: the address a relay observes the other end of a circuit at.
    CircuitPeer = 0x56 "CIRCUIT_PEER",
    /// DIAL_BACK: have strangers probe my address.
    DialBack = 0x58 "DIAL_BACK",
    /// DIAL_BACK_RESULT: what became of a DIAL_BACK.
    DialBackResult = 0x59 "DIAL_BACK_RESULT",
    /// DIAL_BACK_PROBE: send a STUN probe to an address.
    DialBackProbe = 0x5a "DIAL_BACK_PROBE",
    /// CAPABILITIES: the sender's capabilities changed.
    CapabilitiesUpdate = 0x5b "CAPABILITIES",
    /// PUNCH_OFFER: the opener's candidates and session tag.
    PunchOffer = 0x60 "PUNCH_OFFER",
    /// PUNCH_ANSWER: the follower's candidates.
    PunchAnswer = 0x61 "PUNCH_ANSWER",
    /// PUNCH_SYNC: the agreed start.
    PunchSync = 0x62 "PUNCH_SYNC",
    /// PUNCH_RESULT: how the punch ended for the sender.
    PunchResult = 0x63 "PUNCH_RESULT",
}

impl Message {
    /// The request id a request carries or an answer echoes; `None` for
    /// CONNECT, DISCONNECT, PUBLISH, PUBLISH_BATCH, CIRCUIT_INCOMING, DIAL_BACK_PROBE and
    /// CAPABILITIES.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Message::Connect(_)
            | Message::Disconnect(_)
            | Message::Publish(_)
            | Message::PublishBatch(_)
            | Message::CircuitIncoming(_)
            | Message::CircuitPeer(_)
            | Message::DialBackProbe(_)
            | Message::CapabilitiesUpdate(_) => None,
            Message::Ping(Ping { request_id })
            | Message::Pong(Pong { request_id })
            | Message::Subscribe(Subscribe { request_id, .. })
            | Message::Unsubscribe(Unsubscribe { request_id, .. })
            | Message::Call(Call { request_id, .. })
            | Message::Reply(Reply { request_id, .. })
            | Message::ErrorReply(ErrorReply { request_id, .. })
            | Message::Cancel(Cancel { request_id })
            | Message::PayloadSize(PayloadSize { request_id, .. })
            | Message::PayloadChunk(PayloadChunk { request_id, .. })
            | Message::FindNode(FindNode { request_id, .. })
            | Message::FindNodeReply(FindNodeReply { request_id, .. })
            | Message::FindValue(FindValue { request_id, .. })
            | Message::FindValueReply(FindValueReply { request_id, .. })
            | Message::Store(Store { request_id, .. })
            | Message::StoreAck(StoreAck { request_id, .. })
            | Message::StoreBatch(StoreBatch { request_id, .. })
            | Message::StoreBatchAck(StoreBatchAck { request_id, .. })
            | Message::DialBack(DialBack { request_id, .. })
            | Message::DialBackResult(DialBackResult { request_id, .. })
            | Message::RelayReserve(RelayReserve { request_id })
            | Message::RelayReserveStatus(RelayReserveStatus { request_id, .. })
            | Message::RelayRelease(RelayRelease { request_id })
            | Message::CircuitOpen(CircuitOpen { request_id, .. })
            | Message::CircuitStatus(CircuitStatus { request_id, .. })
            | Message::PunchOffer(PunchOffer { request_id, .. })
            | Message::PunchAnswer(PunchAnswer { request_id, .. })
            | Message::PunchSync(PunchSync { request_id, .. })
            | Message::PunchResult(PunchResult { request_id, .. }) => Some(*request_id),
        }
    }

    /// True for the frames after which a stream carries circuit frames
    /// instead of messages: CIRCUIT_OPEN, a granted CIRCUIT_STATUS and
    /// CIRCUIT_INCOMING (docs/PROTOCOL.md §11).
    pub fn starts_circuit(&self) -> bool {
        match self {
            Message::CircuitOpen(_) | Message::CircuitIncoming(_) => true,
            Message::CircuitStatus(status) => status.status == super::RelayStatus::Ok,
            _ => false,
        }
    }

    /// The whole frame's length (header included), or the limit the message
    /// breaks.
    pub fn encoded_len(&self, limits: &Limits) -> Result<usize, EncodeError> {
        let body = self.body_len(limits)?;
        OverLimit::check("frame body", body, limits.max_frame_len as usize)?;
        Ok(HEADER_LEN + body)
    }

    /// Writes the frame into `out` and returns its length. On error nothing
    /// is written.
    pub fn encode<B: BufMut + ?Sized>(
        &self,
        limits: &Limits,
        out: &mut B,
    ) -> Result<usize, EncodeError> {
        let len = self.encoded_len(limits)?;
        if out.remaining_mut() < len {
            return Err(EncodeError::BufferTooSmall {
                needed: len,
                available: out.remaining_mut(),
            });
        }
        let body_len = u32::try_from(len - HEADER_LEN).unwrap_or(u32::MAX);
        Header {
            ty: self.message_type().code(),
            body_len,
        }
        .put(out);
        self.put_body(out);
        Ok(len)
    }

    /// The frame in a new vector.
    pub fn to_vec(&self, limits: &Limits) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len(limits)?);
        self.encode(limits, &mut out)?;
        Ok(out)
    }
}

/// The outcome of [`decode`] on bytes that are not (yet) wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame: the message and how many bytes it took.
    Complete(Message, usize),
    /// The frame is not all there: at least this many more bytes are needed.
    NeedMore(usize),
}

/// Decodes the frame at the start of `buf`. Never panics; allocates only
/// after checking lengths against `limits` and the bytes present. Byte
/// payloads are copied out of `buf` (see [`decode_shared`] to avoid that).
///
/// An unknown type is reported as soon as the header is read, with the frame
/// length so the caller can skip it (see [`DecodeError::reaction`]).
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Decoded, DecodeError> {
    decode_from(buf, None, limits)
}

/// [`decode`] for a frame in a shared buffer: byte payloads in the message
/// are slices of `buf` (no copy), which keep `buf`'s memory alive.
pub fn decode_shared(buf: &Bytes, limits: &Limits) -> Result<Decoded, DecodeError> {
    decode_from(buf, Some(buf), limits)
}

fn decode_from(
    buf: &[u8],
    shared: Option<&Bytes>,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    match locate(buf, limits)? {
        Located::Partial(more) => Ok(Decoded::NeedMore(more)),
        Located::Whole(ty, frame_len) => {
            let frame = buf.get(..frame_len).unwrap_or_default();
            decode_frame(ty, frame, shared, limits).map(|m| Decoded::Complete(m, frame_len))
        }
    }
}

/// What the header at the start of a buffer says.
pub(crate) enum Located {
    /// A frame of this type and length (header included) is all there.
    Whole(MessageType, usize),
    /// At least this many more bytes are needed.
    Partial(usize),
}

/// Reads and checks the header at the start of `buf` (unknown types are an
/// error carrying the frame length) and tells whether the frame is complete.
pub(crate) fn locate(buf: &[u8], limits: &Limits) -> Result<Located, DecodeError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Located::Partial(HEADER_LEN - buf.len()));
    };
    let header = Header::parse(header, limits)?;
    let frame_len = header.frame_len();
    let ty = MessageType::from_code(header.ty).ok_or(DecodeError::UnknownType {
        ty: header.ty,
        frame_len,
    })?;
    Ok(match frame_len.checked_sub(buf.len()) {
        Some(more) if more > 0 => Located::Partial(more),
        _ => Located::Whole(ty, frame_len),
    })
}

/// Decodes the body of a whole, located `frame` of type `ty`.
pub(crate) fn decode_frame(
    ty: MessageType,
    frame: &[u8],
    shared: Option<&Bytes>,
    limits: &Limits,
) -> Result<Message, DecodeError> {
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    let mut reader = Reader::new(body, limits, shared);
    let message = Message::get_body(ty, &mut reader)?;
    match reader.remaining() {
        0 => Ok(message),
        count => Err(DecodeError::TrailingBytes {
            message: ty.name(),
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DisconnectReason, ErrorCode};

    #[test]
    fn requests_and_answers_expose_their_request_id() {
        assert_eq!(Message::from(Ping { request_id: 3 }).request_id(), Some(3));
        let error = ErrorReply {
            request_id: 4,
            code: ErrorCode::Timeout,
            message: String::new(),
        };
        assert_eq!(Message::from(error).request_id(), Some(4));
        let disconnect = Disconnect {
            reason: DisconnectReason::Normal,
            message: String::new(),
        };
        assert_eq!(Message::from(disconnect).request_id(), None);
    }

    #[test]
    fn type_codes_round_trip_and_gaps_are_unknown() {
        for &ty in MessageType::ALL {
            assert_eq!(MessageType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(MessageType::from_code(0x00), None);
        assert_eq!(MessageType::from_code(0x57), None);
    }
}
