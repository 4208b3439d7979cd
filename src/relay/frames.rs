//! Circuit frames: how end-to-end QUIC packets travel on a relay stream.
//!
//! Each frame is a big-endian u16 length and that many bytes of one inner
//! QUIC packet. The relay splits a stream into frames only to forward or
//! drop whole packets (it never looks inside them); the ends split them to
//! hand each packet to quinn.

use bytes::{Buf, Bytes, BytesMut};

/// The largest inner packet a circuit carries. quinn never writes a packet
/// larger than the endpoint's `max_udp_payload_size` (1472 by default, and
/// MTU discovery stops at 1452), so every packet of a default endpoint fits.
pub const MAX_CIRCUIT_PACKET: usize = 1500;

/// The length prefix of a frame.
pub const FRAME_PREFIX: usize = 2;

/// Why a circuit stream's bytes are not frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame of length 0.
    #[error("empty circuit frame")]
    Empty,
    /// A frame longer than [`MAX_CIRCUIT_PACKET`].
    #[error("circuit frame of {0} bytes is over the {MAX_CIRCUIT_PACKET}-byte limit")]
    TooLarge(usize),
}

/// One frame: the prefix and `packet` as bytes to write on a stream, or
/// `None` when the packet does not fit a frame.
pub fn encode_frame(packet: &[u8]) -> Option<Bytes> {
    if packet.is_empty() || packet.len() > MAX_CIRCUIT_PACKET {
        return None;
    }
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = BytesMut::with_capacity(FRAME_PREFIX + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out.freeze())
}

/// Splits the bytes of one circuit stream into packets. It holds at most
/// one partial frame plus the last chunk pushed; after an error it stays
/// failed.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    buf: BytesMut,
    failed: Option<FrameError>,
}

impl FrameSplitter {
    /// An empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream; take the packets with
    /// [`FrameSplitter::next_packet`] after each push.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next whole packet (without its prefix), `Ok(None)` when more
    /// bytes are needed, or the error that ends the stream (returned again
    /// on every later call).
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let Some(prefix) = self.buf.first_chunk::<FRAME_PREFIX>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes(*prefix));
        let error = match len {
            0 => Some(FrameError::Empty),
            n if n > MAX_CIRCUIT_PACKET => Some(FrameError::TooLarge(n)),
            _ => None,
        };
        if let Some(error) = error {
            self.failed = Some(error);
            self.buf = BytesMut::new();
            return Err(error);
        }
        if self.buf.len() < FRAME_PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes held that are not a whole frame yet.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_into_packets_across_any_chunking() {
        let packets: Vec<Vec<u8>> = (1..=40u8).map(|n| vec![n; usize::from(n) * 30]).collect();
        let stream: Vec<u8> = packets
            .iter()
            .flat_map(|p| encode_frame(p).expect("fits").to_vec())
            .collect();
        for chunk in [1, 2, 3, 700, 5000] {
            let mut splitter = FrameSplitter::new();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                splitter.push(piece);
                while let Some(packet) = splitter.next_packet().expect("valid") {
                    out.push(packet.to_vec());
                }
            }
            assert_eq!(out, packets, "chunk size {chunk}");
            assert_eq!(splitter.buffered_len(), 0);
        }
    }

    #[test]
    fn empty_and_oversized_frames_fail_for_good() {
        let mut splitter = FrameSplitter::new();
        splitter.push(&[0, 0, 9]);
        assert_eq!(splitter.next_packet(), Err(FrameError::Empty));
        splitter.push(&[0, 1, 1]);
        assert_eq!(splitter.next_packet(), Err(FrameError::Empty));
        let mut splitter = FrameSplitter::new();
        splitter.push(&1501u16.to_be_bytes());
        assert_eq!(splitter.next_packet(), Err(FrameError::TooLarge(1501)));
        assert_eq!(encode_frame(&[]), None);
        assert_eq!(encode_frame(&[0; MAX_CIRCUIT_PACKET + 1]), None);
        assert_eq!(
            encode_frame(&[7; 3]).expect("fits").as_ref(),
            &[0, 3, 7, 7, 7]
        );
    }
}
