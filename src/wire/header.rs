//! The 8-byte frame header: `version u8 | type u8 | flags u8 | reserved u8 |
//! length u32 BE`, and its checks.
//!
//! The version byte comes first in every version, so any implementation can
//! tell a frame it cannot read. The header alone says how long the frame is,
//! so a frame of an unknown type can be skipped and an oversized one refused
//! before its body is buffered.

use bytes::BufMut;

use super::{DecodeError, Limits, OverLimit, VERSION};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// A parsed, checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message type byte (not checked against the known types here).
    pub ty: u8,
    /// Length of the body in bytes.
    pub body_len: u32,
}

impl Header {
    /// Reads and checks a header: the version must be [`VERSION`], flags and
    /// reserved must be zero, and the body length within
    /// [`Limits::max_frame_len`].
    pub fn parse(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, DecodeError> {
        let [version, ty, flags, reserved, l0, l1, l2, l3] = *bytes;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        if flags != 0 || reserved != 0 {
            return Err(DecodeError::ReservedBitsSet { flags, reserved });
        }
        let body_len = u32::from_be_bytes([l0, l1, l2, l3]);
        OverLimit::check(
            "frame body",
            body_len as usize,
            limits.max_frame_len as usize,
        )?;
        Ok(Header { ty, body_len })
    }

    /// Length of the whole frame, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Writes the header (version [`VERSION`], flags and reserved zero).
    pub fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        out.put_slice(&[VERSION, self.ty, 0, 0]);
        out.put_u32(self.body_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: [u8; 8]) -> Result<Header, DecodeError> {
        Header::parse(&bytes, &Limits::default())
    }

    #[test]
    fn a_good_header_parses_and_writes_back() {
        let bytes = [1, 0x21, 0, 0, 0, 0, 1, 2];
        let header = parse(bytes).unwrap();
        assert_eq!(
            header,
            Header {
                ty: 0x21,
                body_len: 258
            }
        );
        assert_eq!(header.frame_len(), 266);
        let mut out = Vec::new();
        header.put(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn bad_version_reserved_bits_and_length_are_refused() {
        assert_eq!(
            parse([2, 3, 0, 0, 0, 0, 0, 8]),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            parse([1, 3, 0x80, 0, 0, 0, 0, 8]),
            Err(DecodeError::ReservedBitsSet {
                flags: 0x80,
                reserved: 0
            })
        );
        assert_eq!(
            parse([1, 3, 0, 1, 0, 0, 0, 8]),
            Err(DecodeError::ReservedBitsSet {
                flags: 0,
                reserved: 1
            })
        );
        assert_eq!(
            parse([1, 3, 0, 0, 0, 0x10, 0, 1]),
            Err(DecodeError::OverLimit(OverLimit {
                what: "frame body",
                len: (1 << 20) + 1,
                max: 1 << 20
            }))
        );
        assert!(parse([1, 3, 0, 0, 0, 0x10, 0, 0]).is_ok());
    }
}
