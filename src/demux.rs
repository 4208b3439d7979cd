//! Splits the one UDP socket's datagrams by their first byte.
//!
//! A node uses one socket for everything, so the NAT mapping peers see is the
//! one QUIC uses. STUN messages start with two zero bits (first byte 0–3);
//! every QUIC packet has the fixed bit 0x40 set (first byte 64–127 for short
//! headers, 192–255 for long headers) because the node turns QUIC bit
//! greasing off. Anything else is neither and is counted and dropped.

/// Which protocol a datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramClass {
    /// STUN: binding requests and responses, punch probes (first byte 0–3).
    Stun,
    /// QUIC: fixed bit set (first byte 64–127 or 192–255).
    Quic,
    /// Empty, or a first byte of 4–63 or 128–191.
    Unknown,
}

/// Classifies a datagram by its first byte.
pub fn classify(payload: &[u8]) -> DatagramClass {
    match payload.first() {
        Some(0..=3) => DatagramClass::Stun,
        Some(byte) if byte & 0x40 != 0 => DatagramClass::Quic,
        _ => DatagramClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_has_exactly_the_documented_class() {
        for byte in 0..=255u8 {
            let expected = match byte {
                0..=3 => DatagramClass::Stun,
                64..=127 | 192..=255 => DatagramClass::Quic,
                _ => DatagramClass::Unknown,
            };
            assert_eq!(classify(&[byte, 0, 0]), expected, "first byte {byte}");
        }
        assert_eq!(classify(&[]), DatagramClass::Unknown);
    }
}
