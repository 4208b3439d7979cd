//! The STUN wire codec (RFC 8489 §5, §14; RFC 5780 §7): bytes to [`Message`] and back.
//!
//! [`decode`] is total: any input gives a message or a [`DecodeError`], never a panic, and it
//! allocates at most [`MAX_ATTRIBUTES`] attributes of bounded size whatever the input claims.
//! One UDP datagram carries exactly one message, so the header's length must account for the
//! whole datagram. Unknown comprehension-optional attributes are skipped; unknown
//! comprehension-required ones are listed in [`Decoded::unknown_required`] for the receiver to
//! act on (a server answers 420, a client drops the response). A FINGERPRINT must be the last
//! attribute and must check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::integrity::{INTEGRITY_LEN, IntegrityKey};
use super::message::{
    Attribute, ChangeRequest, Class, ErrorCode, Message, Method, StunText, TransactionId, kind,
};

/// The fixed value in bytes 4–7 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The header's size in bytes.
pub const HEADER_LEN: usize = 20;
/// The most attributes (known or not) a decoded message may carry. Real Binding messages carry
/// fewer than ten; the bound keeps a hostile message from costing more than a small, fixed
/// amount of memory.
pub const MAX_ATTRIBUTES: usize = 32;
/// FINGERPRINT is the CRC-32 of the message before it, XOR-ed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// The FINGERPRINT attribute's size on the wire (header and value).
pub(crate) const FINGERPRINT_LEN: usize = 8;
/// CHANGE-REQUEST flag bits (RFC 5780 §7.2).
const CHANGE_IP: u32 = 0x4;
const CHANGE_PORT: u32 = 0x2;
/// Address family numbers.
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Why bytes are not a STUN message macula accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("{got} bytes is shorter than the {HEADER_LEN}-byte STUN header")]
    Truncated {
        /// The datagram's length.
        got: usize,
    },
    /// The first two bits are not zero, so it is not STUN.
    #[error("first byte {0:#04x} has a top bit set: not STUN")]
    NotStun(u8),
    /// The magic cookie is wrong (an RFC 3489 message, or not STUN).
    #[error("magic cookie {0:#010x}, expected 0x2112a442")]
    BadCookie(u32),
    /// The header's length is not a multiple of 4 or does not match the datagram.
    #[error("header says {header} bytes of attributes, the datagram has {body}")]
    BadLength {
        /// The length field.
        header: u16,
        /// The bytes after the header.
        body: usize,
    },
    /// An attribute's value runs past the end of the message.
    #[error("attribute {kind:#06x} of {len} bytes at offset {offset} runs past the message")]
    AttributeOverrun {
        /// Its type.
        kind: u16,
        /// Its length field.
        len: u16,
        /// Where its header starts.
        offset: usize,
    },
    /// Fewer than 4 bytes left where an attribute header should start.
    #[error("{left} stray bytes at the end of the attributes")]
    StrayBytes {
        /// How many.
        left: usize,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// A known attribute has a length its type does not allow.
    #[error("attribute {kind:#06x} has a {len}-byte value")]
    BadAttributeLength {
        /// Its type.
        kind: u16,
        /// Its value length.
        len: u16,
    },
    /// An address attribute names a family other than IPv4 (1) or IPv6 (2).
    #[error("attribute {kind:#06x} has address family {family}")]
    BadAddressFamily {
        /// Its type.
        kind: u16,
        /// The family byte.
        family: u8,
    },
    /// A text attribute is not UTF-8.
    #[error("attribute {kind:#06x} is not UTF-8")]
    BadUtf8 {
        /// Its type.
        kind: u16,
    },
    /// ERROR-CODE's class is not 3–6 or its number not 0–99.
    #[error("error code class {class} number {number}")]
    BadErrorCode {
        /// The class digit.
        class: u8,
        /// The number within the class.
        number: u8,
    },
    /// An attribute follows FINGERPRINT.
    #[error("an attribute follows FINGERPRINT")]
    FingerprintNotLast,
    /// FINGERPRINT does not match the message.
    #[error("FINGERPRINT is {found:#010x}, the message gives {expected:#010x}")]
    BadFingerprint {
        /// What the message's bytes give.
        expected: u32,
        /// What the attribute says.
        found: u32,
    },
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The attributes need more than the 65,532 bytes the length field can express.
    #[error("attributes take {0} bytes; the most is 65532")]
    TooLong(usize),
}

/// A decoded message and what the decoder could not interpret in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The message, with every attribute macula understands.
    pub message: Message,
    /// Types of comprehension-required attributes macula does not know, in wire order.
    pub unknown_required: SmallVec<[u16; 4]>,
}

/// Decodes one datagram as one STUN message.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(DecodeError::Truncated { got: bytes.len() })?;
    if header[0] & 0xC0 != 0 {
        return Err(DecodeError::NotStun(header[0]));
    }
    let message_type = u16::from_be_bytes([header[0], header[1]]);
    let length = u16::from_be_bytes([header[2], header[3]]);
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(DecodeError::BadCookie(cookie));
    }
    let body = bytes.len() - HEADER_LEN;
    if length % 4 != 0 || usize::from(length) != body {
        return Err(DecodeError::BadLength {
            header: length,
            body,
        });
    }
    let mut transaction_id = TransactionId([0; 12]);
    transaction_id.0.copy_from_slice(&header[8..HEADER_LEN]);
    let (class, method) = split_type(message_type);
    let mut decoded = Decoded {
        message: Message {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
            fingerprint: false,
        },
        unknown_required: SmallVec::new(),
    };
    let mut offset = HEADER_LEN;
    let mut count = 0;
    let mut after_integrity = false;
    while offset < bytes.len() {
        let Some(attr_header) = bytes.get(offset..offset + 4) else {
            return Err(DecodeError::StrayBytes {
                left: bytes.len() - offset,
            });
        };
        count += 1;
        if count > MAX_ATTRIBUTES {
            return Err(DecodeError::TooManyAttributes);
        }
        let kind = u16::from_be_bytes([attr_header[0], attr_header[1]]);
        let len = u16::from_be_bytes([attr_header[2], attr_header[3]]);
        let start = offset + 4;
        let value = bytes
            .get(start..start + usize::from(len))
            .ok_or(DecodeError::AttributeOverrun { kind, len, offset })?;
        let next = start + padded(usize::from(len));
        if next > bytes.len() {
            return Err(DecodeError::AttributeOverrun { kind, len, offset });
        }
        if kind == kind::FINGERPRINT {
            check_fingerprint(bytes, offset, value, next)?;
            decoded.message.fingerprint = true;
        } else if kind == kind::MESSAGE_INTEGRITY_SHA256 || after_integrity {
            // Checked by the receiver that holds the key; what follows it (but
            // FINGERPRINT) is not covered, so it is ignored (RFC 8489 §14.6).
            after_integrity = true;
        } else if let Some(attribute) = decode_attribute(kind, value, &transaction_id)? {
            decoded.message.attributes.push(attribute);
        } else if kind::comprehension_required(kind) {
            decoded.unknown_required.push(kind);
        }
        offset = next;
    }
    Ok(decoded)
}

/// The message class of a datagram that looks like STUN (top two bits zero, right cookie),
/// without decoding it: lets a node hand requests to its responder and responses to its
/// client.
pub fn peek_class(bytes: &[u8]) -> Option<Class> {
    let header = bytes.get(..HEADER_LEN)?;
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    (header[0] & 0xC0 == 0 && cookie == MAGIC_COOKIE)
        .then(|| split_type(u16::from_be_bytes([header[0], header[1]])).0)
}

/// Checks the FINGERPRINT at `offset`: 4 bytes, last, and equal to the CRC of what precedes it.
fn check_fingerprint(
    bytes: &[u8],
    offset: usize,
    value: &[u8],
    next: usize,
) -> Result<(), DecodeError> {
    let found: [u8; 4] = value
        .try_into()
        .map_err(|_| DecodeError::BadAttributeLength {
            kind: kind::FINGERPRINT,
            len: value.len() as u16,
        })?;
    if next != bytes.len() {
        return Err(DecodeError::FingerprintNotLast);
    }
    let expected = crc32(&bytes[..offset]) ^ FINGERPRINT_XOR;
    let found = u32::from_be_bytes(found);
    if found != expected {
        return Err(DecodeError::BadFingerprint { expected, found });
    }
    Ok(())
}

/// Decodes one attribute value; `None` for types macula does not know.
fn decode_attribute(
    kind: u16,
    value: &[u8],
    transaction_id: &TransactionId,
) -> Result<Option<Attribute>, DecodeError> {
    let attribute = match kind {
        kind::MAPPED_ADDRESS => Attribute::MappedAddress(decode_address(kind, value, None)?),
        kind::XOR_MAPPED_ADDRESS => {
            Attribute::XorMappedAddress(decode_address(kind, value, Some(transaction_id))?)
        }
        kind::RESPONSE_ORIGIN => Attribute::ResponseOrigin(decode_address(kind, value, None)?),
        kind::OTHER_ADDRESS => Attribute::OtherAddress(decode_address(kind, value, None)?),
        kind::CHANGE_REQUEST => {
            let flags = u32::from_be_bytes(fixed(kind, value)?);
            Attribute::ChangeRequest(ChangeRequest {
                change_ip: flags & CHANGE_IP != 0,
                change_port: flags & CHANGE_PORT != 0,
            })
        }
        kind::SOFTWARE => Attribute::Software(decode_text(kind, value)?),
        kind::ERROR_CODE => Attribute::ErrorCode(decode_error_code(value)?),
        kind::UNKNOWN_ATTRIBUTES => {
            if value.len() % 2 != 0 {
                return Err(bad_length(kind, value));
            }
            let kinds = value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            Attribute::UnknownAttributes(kinds)
        }
        _ => return Ok(None),
    };
    Ok(Some(attribute))
}

fn bad_length(kind: u16, value: &[u8]) -> DecodeError {
    DecodeError::BadAttributeLength {
        kind,
        len: value.len() as u16,
    }
}

/// A value that must be exactly `N` bytes.
fn fixed<const N: usize>(kind: u16, value: &[u8]) -> Result<[u8; N], DecodeError> {
    value.try_into().map_err(|_| bad_length(kind, value))
}

/// An address value (`0 | family | port | address`), XOR-ed when a transaction id is given.
fn decode_address(
    kind: u16,
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, DecodeError> {
    let [_, family, port_hi, port_lo, address @ ..] = value else {
        return Err(bad_length(kind, value));
    };
    let mask = xor.map(xor_mask).unwrap_or([0; 16]);
    let port = u16::from_be_bytes(masked::<2>(&[*port_hi, *port_lo], &mask));
    let ip = match (*family, address.len()) {
        (FAMILY_V4, 4) => IpAddr::V4(Ipv4Addr::from(masked::<4>(address, &mask))),
        (FAMILY_V6, 16) => IpAddr::V6(Ipv6Addr::from(masked::<16>(address, &mask))),
        (FAMILY_V4 | FAMILY_V6, _) => return Err(bad_length(kind, value)),
        (family, _) => return Err(DecodeError::BadAddressFamily { kind, family }),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The first `N` bytes of `bytes` (which has at least `N`) XOR-ed with the mask's first `N`
/// (XOR both hides and reveals).
fn masked<const N: usize>(bytes: &[u8], mask: &[u8; 16]) -> [u8; N] {
    std::array::from_fn(|i| bytes[i] ^ mask[i])
}

/// The XOR mask of X-address fields: the cookie, then the transaction id. The port uses its
/// first two bytes, IPv4 its first four, IPv6 all sixteen.
fn xor_mask(transaction_id: &TransactionId) -> [u8; 16] {
    let mut mask = [0; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&transaction_id.0);
    mask
}

fn decode_text(kind: u16, value: &[u8]) -> Result<StunText, DecodeError> {
    if value.len() > StunText::MAX_BYTES {
        return Err(bad_length(kind, value));
    }
    let text = std::str::from_utf8(value).map_err(|_| DecodeError::BadUtf8 { kind })?;
    Ok(StunText::decoded(text.to_owned()))
}

fn decode_error_code(value: &[u8]) -> Result<ErrorCode, DecodeError> {
    let (head, reason) = match value {
        [_, _, class, number, reason @ ..] => ((class & 0x7, *number), reason),
        _ => return Err(bad_length(kind::ERROR_CODE, value)),
    };
    let (class, number) = head;
    let bad = DecodeError::BadErrorCode { class, number };
    if number > 99 {
        return Err(bad);
    }
    let reason = decode_text(kind::ERROR_CODE, reason)?;
    ErrorCode::new(u16::from(class) * 100 + u16::from(number), reason).map_err(|_| bad)
}

/// Splits a message type into class and method (RFC 8489 §5: the class bits sit at 4 and 8).
fn split_type(message_type: u16) -> (Class, Method) {
    let class = Class::from_bits(((message_type >> 4) & 1) | ((message_type >> 7) & 2));
    let number =
        (message_type & 0x000F) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0F80);
    (class, Method::from_low_bits(number))
}

/// Joins class and method into a message type.
fn join_type(class: Class, method: Method) -> u16 {
    let m = method.number();
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The length of an attribute's value.
fn value_len(attribute: &Attribute) -> usize {
    let address = |addr: &SocketAddr| if addr.is_ipv4() { 8 } else { 20 };
    match attribute {
        Attribute::MappedAddress(addr)
        | Attribute::XorMappedAddress(addr)
        | Attribute::ResponseOrigin(addr)
        | Attribute::OtherAddress(addr) => address(addr),
        Attribute::ChangeRequest(_) => 4,
        Attribute::Software(text) => text.as_str().len(),
        Attribute::ErrorCode(error) => 4 + error.reason().as_str().len(),
        Attribute::UnknownAttributes(kinds) => 2 * kinds.len(),
    }
}

impl Message {
    /// The encoded size in bytes, header and FINGERPRINT included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.attributes_len()
    }

    fn attributes_len(&self) -> usize {
        let fingerprint = if self.fingerprint { FINGERPRINT_LEN } else { 0 };
        self.attributes
            .iter()
            .map(|a| 4 + padded(value_len(a)))
            .sum::<usize>()
            + fingerprint
    }

    /// Encodes the message, computing FINGERPRINT if it has one. Padding bytes are zero.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        self.encode_signed(None)
    }

    /// Encodes the message with a MESSAGE-INTEGRITY-SHA256 under `key` after its
    /// attributes (and FINGERPRINT after that, if it has one).
    pub fn encode_with_integrity(&self, key: &IntegrityKey) -> Result<Bytes, EncodeError> {
        self.encode_signed(Some(key))
    }

    fn encode_signed(&self, key: Option<&IntegrityKey>) -> Result<Bytes, EncodeError> {
        let integrity = if key.is_some() { 4 + INTEGRITY_LEN } else { 0 };
        let body = self.attributes_len() + integrity;
        let length = u16::try_from(body).map_err(|_| EncodeError::TooLong(body))?;
        let mut out = BytesMut::with_capacity(HEADER_LEN + body);
        out.put_u16(join_type(self.class, self.method));
        // While the HMAC is computed the length ends at the integrity attribute.
        let fingerprint = if self.fingerprint { FINGERPRINT_LEN } else { 0 };
        let signed_length = if key.is_some() {
            length - fingerprint as u16
        } else {
            length
        };
        out.put_u16(signed_length);
        out.put_u32(MAGIC_COOKIE);
        out.put_slice(&self.transaction_id.0);
        for attribute in &self.attributes {
            let len = value_len(attribute);
            out.put_u16(attribute.kind());
            out.put_u16(len as u16);
            self.put_value(attribute, &mut out);
            out.put_bytes(0, padded(len) - len);
        }
        if let Some(key) = key {
            let tag = key.sign(&out);
            out.put_u16(kind::MESSAGE_INTEGRITY_SHA256);
            out.put_u16(INTEGRITY_LEN as u16);
            out.put_slice(&tag);
            out[2..4].copy_from_slice(&length.to_be_bytes());
        }
        if self.fingerprint {
            let crc = crc32(&out) ^ FINGERPRINT_XOR;
            out.put_u16(kind::FINGERPRINT);
            out.put_u16(4);
            out.put_u32(crc);
        }
        Ok(out.freeze())
    }

    fn put_value(&self, attribute: &Attribute, out: &mut BytesMut) {
        match attribute {
            Attribute::MappedAddress(addr)
            | Attribute::ResponseOrigin(addr)
            | Attribute::OtherAddress(addr) => put_address(*addr, [0; 16], out),
            Attribute::XorMappedAddress(addr) => {
                put_address(*addr, xor_mask(&self.transaction_id), out)
            }
            Attribute::ChangeRequest(change) => {
                let ip = if change.change_ip { CHANGE_IP } else { 0 };
                let port = if change.change_port { CHANGE_PORT } else { 0 };
                out.put_u32(ip | port);
            }
            Attribute::Software(text) => out.put_slice(text.as_str().as_bytes()),
            Attribute::ErrorCode(error) => {
                out.put_u16(0);
                out.put_u8((error.code() / 100) as u8);
                out.put_u8((error.code() % 100) as u8);
                out.put_slice(error.reason().as_str().as_bytes());
            }
            Attribute::UnknownAttributes(kinds) => kinds.iter().for_each(|k| out.put_u16(*k)),
        }
    }
}

/// Writes `0 | family | port | address`, XOR-ed with `mask` (all zero: in the clear).
fn put_address(addr: SocketAddr, mask: [u8; 16], out: &mut BytesMut) {
    out.put_u8(0);
    out.put_u8(if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 });
    out.put_slice(&masked::<2>(&addr.port().to_be_bytes(), &mask));
    match addr.ip() {
        IpAddr::V4(ip) => out.put_slice(&masked::<4>(&ip.octets(), &mask)),
        IpAddr::V6(ip) => out.put_slice(&masked::<16>(&ip.octets(), &mask)),
    }
}

/// CRC-32 (ISO-HDLC, the one of Ethernet and zlib), table-driven.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, byte| {
        CRC_TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8)
    })
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_published_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn message_types_interleave_class_bits() {
        for (class, method, wire) in [
            (Class::Request, 0x001, 0x0001),
            (Class::Indication, 0x001, 0x0011),
            (Class::Success, 0x001, 0x0101),
            (Class::Error, 0x001, 0x0111),
            (Class::Request, 0x003, 0x0003),
            (Class::Error, 0xFFF, 0x3FFF),
        ] {
            let method = Method::new(method).unwrap();
            assert_eq!(join_type(class, method), wire);
            assert_eq!(split_type(wire), (class, method));
        }
    }

    #[test]
    fn peek_class_reads_the_class_without_decoding() {
        let mut request = Message::binding(Class::Request, TransactionId([1; 12]))
            .encode()
            .unwrap()
            .to_vec();
        assert_eq!(peek_class(&request), Some(Class::Request));
        request[4] ^= 1;
        assert_eq!(peek_class(&request), None);
        assert_eq!(peek_class(&request[..19]), None);
    }
}
