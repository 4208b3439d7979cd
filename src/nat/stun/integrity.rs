//! MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): an HMAC-SHA256 over a STUN message under a
//! key both peers hold, so a third party can neither forge nor alter their probes.
//!
//! macula uses it only between two peers that swapped the key over their encrypted QUIC
//! connection (PUNCH_OFFER, docs/PROTOCOL.md §13): punch and liveness probes and their
//! answers. The HMAC covers the message up to the attribute itself, with the header's
//! length field set as if the attribute were the last one (a FINGERPRINT may follow it and
//! covers it). The attribute carries the full 32 bytes. The decoder ignores attributes
//! after it other than FINGERPRINT ([`super::decode`]), so nothing unauthenticated can ride
//! on an authenticated message.

use ring::hmac;

use super::codec::HEADER_LEN;
use super::message::kind;

/// The attribute's value length: a full HMAC-SHA256.
pub const INTEGRITY_LEN: usize = 32;

/// The key of MESSAGE-INTEGRITY-SHA256 for one punch session: 32 random bytes. Its
/// `Debug` form hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IntegrityKey(pub [u8; 32]);

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(..)")
    }
}

impl IntegrityKey {
    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    /// The HMAC of `prefix`, the encoded message up to where the attribute starts, whose
    /// header length field already counts the attribute and nothing after it.
    pub(crate) fn sign(&self, prefix: &[u8]) -> [u8; INTEGRITY_LEN] {
        let tag = hmac::sign(&self.hmac_key(), prefix);
        let mut out = [0u8; INTEGRITY_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// True when `datagram` (one STUN message that decodes) carries a
    /// MESSAGE-INTEGRITY-SHA256 that checks under this key. The comparison is constant-time.
    pub fn verifies(&self, datagram: &[u8]) -> bool {
        let declared = datagram
            .get(2..4)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])));
        if declared != datagram.len().checked_sub(HEADER_LEN) {
            return false;
        }
        let Some(offset) = integrity_offset(datagram) else {
            return false;
        };
        let value_start = offset + 4;
        let Some(value) = datagram.get(value_start..value_start + INTEGRITY_LEN) else {
            return false;
        };
        let mut prefix = datagram[..offset].to_vec();
        let length = value_start + INTEGRITY_LEN - HEADER_LEN;
        let Ok(length) = u16::try_from(length) else {
            return false;
        };
        prefix[2..4].copy_from_slice(&length.to_be_bytes());
        hmac::verify(&self.hmac_key(), &prefix, value).is_ok()
    }
}

/// Where the first MESSAGE-INTEGRITY-SHA256 attribute of a full length starts.
fn integrity_offset(datagram: &[u8]) -> Option<usize> {
    let mut offset = HEADER_LEN;
    while let Some(head) = datagram.get(offset..offset + 4) {
        let attribute = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if attribute == kind::MESSAGE_INTEGRITY_SHA256 {
            return (len == INTEGRITY_LEN).then_some(offset);
        }
        offset = offset.checked_add(4 + ((len + 3) & !3))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::stun::{Attribute, Class, Message, TransactionId, decode};

    fn key(byte: u8) -> IntegrityKey {
        IntegrityKey([byte; 32])
    }

    fn signed() -> Vec<u8> {
        let mut m = Message::binding(Class::Success, TransactionId(*b"macpunch\0\0\0\x01"));
        m.attributes.push(Attribute::XorMappedAddress(
            "192.0.2.1:4433".parse().unwrap(),
        ));
        m.encode_with_integrity(&key(7)).unwrap().to_vec()
    }

    #[test]
    fn a_signed_message_verifies_under_its_key_only() {
        let bytes = signed();
        // Header, XOR-MAPPED-ADDRESS (12), integrity (36), FINGERPRINT (8).
        assert_eq!(bytes.len(), 20 + 12 + 36 + 8);
        assert!(decode(&bytes).is_ok(), "FINGERPRINT covers the integrity");
        assert!(key(7).verifies(&bytes));
        assert!(!key(8).verifies(&bytes));
        let plain = Message::binding(Class::Success, TransactionId([1; 12]));
        assert!(!key(7).verifies(&plain.encode().unwrap()), "no attribute");
    }

    #[test]
    fn the_hmac_covers_the_header_with_the_length_up_to_itself() {
        let bytes = signed();
        let offset = 20 + 12;
        let mut prefix = bytes[..offset].to_vec();
        prefix[2..4].copy_from_slice(&((offset + 36 - 20) as u16).to_be_bytes());
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]), &prefix);
        assert_eq!(&bytes[offset + 4..offset + 36], expected.as_ref());
    }

    #[test]
    fn any_altered_byte_fails() {
        let bytes = signed();
        for at in 0..bytes.len() - 8 {
            let mut altered = bytes.clone();
            altered[at] ^= 0x01;
            assert!(!key(7).verifies(&altered), "byte {at}");
        }
    }
}
