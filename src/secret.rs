//! The node's secret: 256 bits from which every transport secret derives.
//!
//! The core draws no randomness of its own (it does no I/O). A driver fills
//! a [`Secret`] from the operating system's random source and hands it to
//! [`crate::node::Node::new`]; the node derives each purpose's key from it
//! with [`Secret::derive`]: the QUIC stateless-reset key, the
//! address-validation token key, the connection-id generator, quinn's own
//! RNG, the STUN transaction ids, NAT discovery nonces and the punch tags,
//! and the seeds of the generators that only jitter or shuffle (pool, DHT,
//! RPC). Whoever knows the secret can forge a stateless reset (and so close
//! the node's connections from off the path) or predict its probes, so a
//! real node never uses a constant one.
//!
//! The simulator and tests need the same run twice: they use
//! [`Secret::deterministic`], which expands a number and is no secret at all.

use core::fmt;

use sha2::{Digest, Sha256};

/// 256 bits of secret randomness; [`fmt::Debug`] never shows them.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// A secret from 32 bytes the caller drew from the OS random source.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A reproducible stand-in for simulations, tests and benches: the same
    /// `n` always gives the same secret, and anyone who knows `n` knows every
    /// key derived from it. Never for a node on a real network.
    pub fn deterministic(n: u64) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"macula-deterministic-secret\0");
        hasher.update(n.to_be_bytes());
        Self(hasher.finalize().into())
    }

    /// The 32-byte key for one `purpose` (a short fixed label): independent
    /// of every other purpose's key, and as secret as the secret.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"macula-secret\0");
        hasher.update(self.0);
        hasher.update(purpose.as_bytes());
        hasher.finalize().into()
    }

    /// A 64-bit seed for one `purpose`, for generators that only jitter,
    /// shuffle or key a hash table (never for a key an attacker must not
    /// guess: use [`Secret::derive`]).
    pub fn derive_u64(&self, purpose: &str) -> u64 {
        let key = self.derive(purpose);
        let mut first = [0u8; 8];
        first.copy_from_slice(&key[..8]);
        u64::from_le_bytes(first)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_independent_keys_and_the_same_secret_the_same_ones() {
        let secret = Secret::from_bytes([7; 32]);
        assert_ne!(secret.derive("reset-key"), secret.derive("token-key"));
        assert_eq!(
            secret.derive("reset-key"),
            Secret::from_bytes([7; 32]).derive("reset-key")
        );
        assert_ne!(
            secret.derive("reset-key"),
            Secret::from_bytes([8; 32]).derive("reset-key")
        );
        assert_ne!(secret.derive_u64("pool"), secret.derive_u64("dht"));
    }

    #[test]
    fn deterministic_secrets_follow_their_number() {
        let key = |n| Secret::deterministic(n).derive("reset-key");
        assert_eq!(key(1), key(1));
        assert_ne!(key(1), key(2));
    }

    #[test]
    fn debug_hides_the_bytes() {
        assert_eq!(
            format!("{:?}", Secret::from_bytes([0xab; 32])),
            "Secret(..)"
        );
    }
}
