//! Decoder and encoder limits: how large a frame, a string or a list may be.
//!
//! Every variable-length thing on the wire has a bound here, so a peer can
//! never make a node allocate more than these numbers allow. The same limits
//! apply when encoding: a message that breaks them is refused with an
//! [`EncodeError`](super::EncodeError) instead of being sent to a peer that
//! would reject it. The defaults are the protocol's baseline (docs/PROTOCOL.md
//! "Limits"): every implementation accepts at least this much.

/// Bounds on frame, string and list sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body in bytes (the header's `length`). Default 1 MiB.
    pub max_frame_len: u32,
    /// Longest string in bytes (procedure and topic names, patterns, realm,
    /// error texts). Default 1024; the wire format caps it at 65535.
    pub max_string_len: usize,
    /// Most items in a list of records or statuses. Default 256; the wire
    /// format caps it at 65535.
    pub max_list_len: usize,
    /// Most contacts in one reply. Default 64 (k = 20, with room for
    /// implementations that answer with more).
    pub max_contacts: usize,
    /// Most socket addresses per node (listen addresses, a contact's
    /// addresses). Default 16.
    pub max_addrs: usize,
}

impl Limits {
    /// The protocol's baseline limits.
    pub const DEFAULT: Limits = Limits {
        max_frame_len: 1 << 20,
        max_string_len: 1024,
        max_list_len: 256,
        max_contacts: 64,
        max_addrs: 16,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
