//! Signed records: what the DHT stores.
//!
//! A record says "the holder of this identity key publishes this value under
//! this key, from this time, for this long". The publisher signs it; every
//! node checks the signature when it accepts a STORE and again when it reads a
//! record off the wire, so a relay of records cannot forge or alter one. The
//! provider of a record is the node id of its publisher key: a key holds at
//! most one value per provider.

use bytes::Bytes;

use crate::id::{Identity, KeyError, NodeId, PublicKey, RecordKey, SIGNATURE_LEN};

/// Domain separation for record signatures, so a record signature can never
/// be replayed as a signature over anything else the identity signs.
const SIGNING_CONTEXT: &[u8] = b"macula-record-v1";

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The signature does not match the publisher key and the contents.
    #[error("record under {key:?} from {provider:?} has a bad signature")]
    BadSignature {
        /// The record's key.
        key: RecordKey,
        /// The claimed provider.
        provider: NodeId,
    },
    /// The record's lifetime is over.
    #[error(
        "record under {key:?} from {provider:?} expired at {expires_at_ms} ms (now {now_ms} ms)"
    )]
    Expired {
        /// The record's key.
        key: RecordKey,
        /// The provider.
        provider: NodeId,
        /// When it expired (Unix ms).
        expires_at_ms: u64,
        /// The time of the check (Unix ms).
        now_ms: u64,
    },
}

/// A value published under a key and signed by its publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRecord {
    /// Where the record lives in the DHT.
    pub key: RecordKey,
    /// The publisher's identity key; its node id is the record's provider.
    pub publisher: PublicKey,
    /// Opaque application value (a peer record, an RPC provider entry, ...).
    pub value: Bytes,
    /// Wall-clock time of publication, Unix milliseconds (an explicit input,
    /// never read from a clock by the core).
    pub issued_at_ms: u64,
    /// Lifetime in seconds from `issued_at_ms`.
    pub ttl_secs: u32,
    /// Ed25519 signature over [`SignedRecord::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedRecord {
    /// Builds and signs a record with `identity`.
    pub fn sign(
        identity: &Identity,
        key: RecordKey,
        value: Bytes,
        issued_at_ms: u64,
        ttl_secs: u32,
    ) -> Self {
        let publisher = *identity.public_key();
        let signed = signed_bytes(&key, &publisher, &value, issued_at_ms, ttl_secs);
        Self {
            key,
            publisher,
            value,
            issued_at_ms,
            ttl_secs,
            signature: identity.sign(&signed),
        }
    }

    /// The node that published the record.
    pub fn provider(&self) -> NodeId {
        self.publisher.node_id()
    }

    /// When the record stops being valid, Unix milliseconds (saturating).
    pub fn expires_at_ms(&self) -> u64 {
        self.issued_at_ms
            .saturating_add(u64::from(self.ttl_secs) * 1000)
    }

    /// The exact bytes the signature covers: the context string
    /// `macula-record-v1`, the 32-byte key, the 32-byte publisher key,
    /// `issued_at_ms` (u64 BE), `ttl_secs` (u32 BE), the value length (u32 BE)
    /// and the value.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            &self.key,
            &self.publisher,
            &self.value,
            self.issued_at_ms,
            self.ttl_secs,
        )
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        self.publisher
            .verify(&self.signed_bytes(), &self.signature)
            .map_err(|_: KeyError| RecordError::BadSignature {
                key: self.key,
                provider: self.provider(),
            })
    }

    /// Checks the signature and that the record is still alive at `now_ms`
    /// (Unix milliseconds).
    pub fn verify_at(&self, now_ms: u64) -> Result<(), RecordError> {
        self.verify()?;
        let expires_at_ms = self.expires_at_ms();
        if now_ms >= expires_at_ms {
            return Err(RecordError::Expired {
                key: self.key,
                provider: self.provider(),
                expires_at_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

fn signed_bytes(
    key: &RecordKey,
    publisher: &PublicKey,
    value: &[u8],
    issued_at_ms: u64,
    ttl_secs: u32,
) -> Vec<u8> {
    let value_len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(SIGNING_CONTEXT.len() + 32 + 32 + 8 + 4 + 4 + value.len());
    out.extend_from_slice(SIGNING_CONTEXT);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&publisher.to_bytes());
    out.extend_from_slice(&issued_at_ms.to_be_bytes());
    out.extend_from_slice(&ttl_secs.to_be_bytes());
    out.extend_from_slice(&value_len.to_be_bytes());
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Realm, RecordKind};

    fn record() -> (Identity, SignedRecord) {
        let identity = Identity::from_seed([5; 32]);
        let key = RecordKey::new(&Realm::new("io.macula").unwrap(), RecordKind::Rpc, "echo");
        let record = SignedRecord::sign(&identity, key, Bytes::from_static(b"v"), 1_000, 300);
        (identity, record)
    }

    #[test]
    fn a_signed_record_verifies_until_it_expires() {
        let (identity, record) = record();
        assert_eq!(record.provider(), identity.node_id());
        record.verify().unwrap();
        record.verify_at(300_999).unwrap();
        assert!(matches!(
            record.verify_at(301_000),
            Err(RecordError::Expired {
                expires_at_ms: 301_000,
                ..
            })
        ));
    }

    #[test]
    fn any_altered_field_breaks_the_signature() {
        let (_, record) = record();
        let other = *Identity::from_seed([6; 32]).public_key();
        let mut altered = [
            record.clone(),
            record.clone(),
            record.clone(),
            record.clone(),
            record.clone(),
        ];
        altered[0].value = Bytes::from_static(b"w");
        altered[1].issued_at_ms += 1;
        altered[2].ttl_secs += 1;
        altered[3].publisher = other;
        altered[4].key = RecordKey::from_bytes([0; 32]);
        for r in altered {
            assert!(
                matches!(r.verify(), Err(RecordError::BadSignature { .. })),
                "{r:?}"
            );
        }
    }
}
