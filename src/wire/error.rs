//! The codec's errors: what went wrong decoding or encoding a frame, with the
//! values involved, and how a connection reacts to each decoding error.

use crate::id::RealmError;

use super::types::DisconnectReason;

/// A length or count larger than its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {len} is over the limit of {max}")]
pub struct OverLimit {
    /// The field (or `"frame body"`).
    pub what: &'static str,
    /// The length or count found.
    pub len: usize,
    /// The largest allowed.
    pub max: usize,
}

impl OverLimit {
    /// `Ok` when `len <= max`, else the error naming `what`.
    pub(crate) fn check(what: &'static str, len: usize, max: usize) -> Result<(), OverLimit> {
        if len > max {
            Err(OverLimit { what, len, max })
        } else {
            Ok(())
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header's version byte is not one this implementation speaks.
    #[error("unsupported protocol version {version} (this implementation speaks {supported})", supported = super::VERSION)]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The header's flags or reserved byte is not zero (both must be in v1).
    #[error("header flags {flags:#04x} / reserved {reserved:#04x} must be zero in version 1")]
    ReservedBitsSet {
        /// The flags byte.
        flags: u8,
        /// The reserved byte.
        reserved: u8,
    },
    /// The header names a message type this implementation does not know.
    /// The frame is well delimited: skip `frame_len` bytes (header included)
    /// and go on with the next frame.
    #[error("unknown message type {ty:#04x} in a frame of {frame_len} bytes")]
    UnknownType {
        /// The type byte.
        ty: u8,
        /// Length of the whole frame, header included.
        frame_len: usize,
    },
    /// A length or count over the configured limit (the frame body length is
    /// checked as soon as the header is read, before any body is buffered).
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    /// The frame body ended inside a field.
    #[error("{what}: needs {needed} bytes but only {available} remain in the frame body")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// The body holds bytes after the message's last field.
    #[error("{count} bytes left over after a {message} body")]
    TrailingBytes {
        /// The message type's name.
        message: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A string is not valid UTF-8.
    #[error("{what}: not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    BadUtf8 {
        /// The field.
        what: &'static str,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// An address family byte other than 4 or 6.
    #[error("{what}: address family {family} (must be 4 or 6)")]
    BadAddressFamily {
        /// The field.
        what: &'static str,
        /// The family byte found.
        family: u8,
    },
    /// A publisher key that is not a valid Ed25519 point.
    #[error("{what}: the 32 bytes are not a valid Ed25519 public key")]
    InvalidPublicKey {
        /// The field.
        what: &'static str,
    },
    /// A value outside the field's enumeration (booleans: 0 or 1).
    #[error("{what}: value {value} is not allowed")]
    BadEnumValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A realm name that breaks the realm syntax.
    #[error("{what}: {source}")]
    BadRealm {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        source: RealmError,
    },
}

/// What a connection does about a decoding error (docs/PROTOCOL.md "Error
/// handling").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Skip this many bytes (the whole frame), count it, and read on: the
    /// stream stays usable.
    SkipFrame {
        /// Bytes to skip, header included.
        frame_len: usize,
    },
    /// Send DISCONNECT with this reason and close the connection.
    Disconnect(DisconnectReason),
}

impl DecodeError {
    /// The documented reaction to this error: unknown types are skipped, an
    /// unsupported version disconnects with
    /// [`DisconnectReason::UnsupportedVersion`], everything else is a
    /// protocol error.
    pub fn reaction(&self) -> Reaction {
        match self {
            DecodeError::UnknownType { frame_len, .. } => Reaction::SkipFrame {
                frame_len: *frame_len,
            },
            DecodeError::UnsupportedVersion { .. } => {
                Reaction::Disconnect(DisconnectReason::UnsupportedVersion)
            }
            _ => Reaction::Disconnect(DisconnectReason::ProtocolError),
        }
    }
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field or the whole body is over the limits (a peer would reject it).
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    /// The output buffer cannot take the whole frame; nothing was written.
    #[error("the output buffer has room for {available} bytes but the frame needs {needed}")]
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer can take.
        available: usize,
    },
}
