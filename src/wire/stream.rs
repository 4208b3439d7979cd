//! Per-stream reassembly: bytes arrive from a QUIC stream in chunks of any
//! size; [`FrameReader`] buffers them and hands out whole messages.
//!
//! It applies the documented reactions itself where it can: frames of an
//! unknown type are skipped (even before their body has arrived) and counted;
//! any other error is returned and sticks, because the stream cannot be
//! resynchronised and the connection is to be closed (see
//! [`DecodeError::reaction`]).

use bytes::{Buf, Bytes, BytesMut};

use super::message::{Located, decode_frame, locate};
use super::{DecodeError, Limits, Message};

/// Reassembles the frames of one stream.
#[derive(Debug)]
pub struct FrameReader {
    limits: Limits,
    buf: BytesMut,
    /// Bytes of a skipped frame that have not arrived yet.
    skip: usize,
    skipped_frames: u64,
    failed: Option<DecodeError>,
    /// Bytes were pushed.
    pushed: bool,
    /// Messages returned.
    returned: u64,
}

impl FrameReader {
    /// An empty reader applying `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            skip: 0,
            skipped_frames: 0,
            failed: None,
            pushed: false,
            returned: 0,
        }
    }

    /// Appends bytes read from the stream. Pop messages with
    /// [`FrameReader::next_message`] after each push: the buffer then never
    /// holds more than one frame plus one chunk. After an error the bytes
    /// are dropped.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.pushed |= !data.is_empty();
        let (skipped, rest) = data.split_at(self.skip.min(data.len()));
        self.skip -= skipped.len();
        self.buf.extend_from_slice(rest);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed, or the
    /// error that ends this stream (returned again on every later call).
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        loop {
            match locate(&self.buf, &self.limits) {
                Ok(Located::Partial(_)) => return Ok(None),
                Ok(Located::Whole(ty, frame_len)) => {
                    // The frame moves out of the buffer without a copy, and
                    // its payloads are slices of it.
                    let frame = self.buf.split_to(frame_len).freeze();
                    self.returned += 1;
                    return decode_frame(ty, &frame, Some(&frame), &self.limits)
                        .map(Some)
                        .map_err(|error| self.fail(error));
                }
                Err(DecodeError::UnknownType { ty, frame_len }) => {
                    tracing::debug!(ty, frame_len, "skipping a frame of unknown type");
                    let now = frame_len.min(self.buf.len());
                    self.buf.advance(now);
                    self.skip = frame_len - now;
                    self.skipped_frames += 1;
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
    }

    /// Records the error that ends the stream and returns it.
    fn fail(&mut self, error: DecodeError) -> DecodeError {
        self.failed = Some(error.clone());
        error
    }

    /// How many frames of unknown type were skipped.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// The bytes buffered past the last message returned, for a stream
    /// that stops carrying frames (a circuit, docs/PROTOCOL.md §11). Bytes
    /// of a frame being skipped are not part of it.
    pub fn into_unread(self) -> Bytes {
        self.buf.freeze()
    }

    /// Whether a stream ending here carried something other than whole
    /// frames: a frame cut short, or bytes without one frame of a known
    /// type (docs/PROTOCOL.md §7).
    pub fn ends_unserved(&self) -> bool {
        !self.buf.is_empty() || self.skip > 0 || (self.pushed && self.returned == 0)
    }

    /// Bytes buffered and not yet returned as messages.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ping, Pong};

    fn frames() -> Vec<u8> {
        let limits = Limits::default();
        let mut bytes = Message::from(Ping { request_id: 7 })
            .to_vec(&limits)
            .unwrap();
        // An unknown type 0x7f with a 3-byte body.
        bytes.extend_from_slice(&[1, 0x7f, 0, 0, 0, 0, 0, 3, 9, 9, 9]);
        bytes.extend(
            Message::from(Pong { request_id: 7 })
                .to_vec(&limits)
                .unwrap(),
        );
        bytes
    }

    #[test]
    fn byte_by_byte_feeding_skips_unknown_frames() {
        let mut reader = FrameReader::new(Limits::default());
        let mut got = Vec::new();
        for byte in frames() {
            reader.push(&[byte]);
            while let Some(message) = reader.next_message().unwrap() {
                got.push(message);
            }
        }
        assert_eq!(
            got,
            vec![
                Message::from(Ping { request_id: 7 }),
                Message::from(Pong { request_id: 7 })
            ]
        );
        assert_eq!(reader.skipped_frames(), 1);
        assert_eq!(reader.buffered_len(), 0);
    }

    #[test]
    fn an_error_sticks() {
        let mut reader = FrameReader::new(Limits::default());
        reader.push(&[9, 3, 0, 0, 0, 0, 0, 8]);
        let error = DecodeError::UnsupportedVersion { version: 9 };
        assert_eq!(reader.next_message(), Err(error.clone()));
        reader.push(&frames());
        assert_eq!(reader.next_message(), Err(error));
        assert_eq!(reader.buffered_len(), 8);
    }
}
