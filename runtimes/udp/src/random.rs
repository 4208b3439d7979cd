//! The OS random source: the only place the drivers draw randomness. A
//! node's identity key and its 256-bit [`Secret`] (every transport secret
//! derives from it) come from here.

use macula::id::Identity;
use macula::secret::Secret;

/// 256 fresh bits from the OS random source.
pub fn secret() -> Result<Secret, getrandom::Error> {
    Ok(Secret::from_bytes(bytes()?))
}

/// A fresh Ed25519 identity from the OS random source.
pub fn identity() -> Result<Identity, getrandom::Error> {
    Ok(Identity::from_seed(bytes()?))
}

fn bytes() -> Result<[u8; 32], getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        let reset_key = || secret().unwrap().derive("quic-reset-key");
        assert_ne!(reset_key(), reset_key());
        assert_ne!(identity().unwrap().node_id(), identity().unwrap().node_id());
    }
}
