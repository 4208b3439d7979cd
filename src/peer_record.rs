//! Peer records: where a node can be reached, signed by the node itself and
//! published in the DHT under its node id.
//!
//! A [`PeerRecord`] names the node's observed (reflexive) addresses, its LAN
//! addresses and the relays it holds reservations on. Its bytes are the value
//! of a [`SignedRecord`] under [`RecordKey::peer`]: the signature, the issue
//! time and the lifetime are the signed record's. A reader accepts a record
//! only when [`PeerRecord::open`] succeeds: the signature verifies, the record
//! is alive, it was published by the node it describes under that node's key,
//! and the value decodes (docs/PROTOCOL.md §12.3). Of several acceptable
//! records the one with the highest `seq` wins ([`PeerRecord::newest`]).

use std::net::SocketAddr;

use bytes::Bytes;

use crate::id::{Identity, NodeId, Realm, RecordKey};
use crate::record::{RecordError, SignedRecord};
use crate::wire::field::{Bound, Ctx, Field, Reader, wire_enum, wire_struct};
use crate::wire::{Contact, DecodeError, EncodeError, Limits};

/// The layout version of a peer record value (its first byte).
pub const PEER_RECORD_VERSION: u8 = 1;

wire_enum! {
    /// What the node knows of its own reachability, one byte.
    pub enum Reachability: u8 {
        /// Not checked yet, or the checks were inconclusive.
        Undetermined = 0,
        /// A stranger's probe reached the node's own address: it serves the
        /// DHT and can be dialled directly.
        Public = 1,
        /// Behind a NAT or a filter: reach it through its relays (or a punch).
        Private = 2,
    }
}

wire_struct! {
    /// The body of a peer record value, after the version byte.
    pub struct PeerRecord {
        /// The node the record describes; must be the publisher.
        pub node_id: NodeId,
        /// Grows with every new record of the node; the highest wins.
        pub seq: u64,
        /// What the node found out about itself.
        pub reachability: Reachability,
        /// Its addresses as others see them (reflexive, or its public
        /// listen addresses), at most `max_addrs`.
        pub observed: Vec<SocketAddr>; Addrs,
        /// Its addresses on its own network, at most `max_addrs`.
        pub lan: Vec<SocketAddr>; Addrs,
        /// Relays holding a reservation for it, at most `max_contacts`.
        pub relays: Vec<Contact>; Contacts,
    }
}

/// Why a peer record is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRecordError {
    /// The signed record is forged, altered or expired.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The record lives under another key than its node's peer key.
    #[error("peer record of {node} stored under a foreign key")]
    WrongKey {
        /// The node the record names.
        node: NodeId,
    },
    /// The publisher is not the node the record describes.
    #[error("peer record of {node} published by {publisher}")]
    WrongPublisher {
        /// The node the record names.
        node: NodeId,
        /// Who signed it.
        publisher: NodeId,
    },
    /// The value's version byte is not one this implementation reads.
    #[error("peer record version {0} is not supported")]
    Version(u8),
    /// The value does not decode, or has bytes after the record.
    #[error("peer record does not decode: {0}")]
    Decode(#[from] DecodeError),
}

impl PeerRecord {
    /// The record's value bytes: the version byte, then the fields.
    pub fn encode(&self, limits: &Limits) -> Result<Bytes, EncodeError> {
        let ctx = Ctx {
            what: "peer record",
            bound: Bound::List,
        };
        let len = 1 + self.wire_len(ctx, limits)?;
        let mut out = Vec::with_capacity(len);
        out.push(PEER_RECORD_VERSION);
        self.put(&mut out);
        Ok(Bytes::from(out))
    }

    /// Reads value bytes written by [`PeerRecord::encode`]; total: any input
    /// gives a record or a typed error, allocation bounded by `limits`.
    pub fn decode(value: &[u8], limits: &Limits) -> Result<Self, PeerRecordError> {
        let (&version, body) = value.split_first().ok_or(DecodeError::Truncated {
            what: "peer record version",
            needed: 1,
            available: 0,
        })?;
        if version != PEER_RECORD_VERSION {
            return Err(PeerRecordError::Version(version));
        }
        let mut reader = Reader::new(body, limits, None);
        let ctx = Ctx {
            what: "peer record",
            bound: Bound::List,
        };
        let record = PeerRecord::get(&mut reader, ctx)?;
        if reader.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                message: "peer record",
                count: reader.remaining(),
            }
            .into());
        }
        Ok(record)
    }

    /// Signs the record as `identity` (which must be the record's node) for
    /// publication under its peer key in `realm`.
    pub fn sign(
        &self,
        identity: &Identity,
        realm: &Realm,
        issued_at_ms: u64,
        ttl_secs: u32,
        limits: &Limits,
    ) -> Result<SignedRecord, EncodeError> {
        let value = self.encode(limits)?;
        let key = RecordKey::peer(realm, &self.node_id);
        Ok(SignedRecord::sign(
            identity,
            key,
            value,
            issued_at_ms,
            ttl_secs,
        ))
    }

    /// Checks a signed record found under `realm`'s peer keys at `now_ms`
    /// and reads the peer record in it (see the module docs).
    pub fn open(
        signed: &SignedRecord,
        realm: &Realm,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Self, PeerRecordError> {
        signed.verify_at(now_ms)?;
        let record = Self::decode(&signed.value, limits)?;
        let publisher = signed.provider();
        if publisher != record.node_id {
            return Err(PeerRecordError::WrongPublisher {
                node: record.node_id,
                publisher,
            });
        }
        if signed.key != RecordKey::peer(realm, &record.node_id) {
            return Err(PeerRecordError::WrongKey {
                node: record.node_id,
            });
        }
        Ok(record)
    }

    /// The acceptable record of `node` with the highest `seq` among
    /// `signed` (records of other nodes and unacceptable ones are skipped).
    pub fn newest<'a>(
        signed: impl IntoIterator<Item = &'a SignedRecord>,
        node: &NodeId,
        realm: &Realm,
        now_ms: u64,
        limits: &Limits,
    ) -> Option<Self> {
        signed
            .into_iter()
            .filter_map(|s| Self::open(s, realm, now_ms, limits).ok())
            .filter(|r| r.node_id == *node)
            .max_by_key(|r| r.seq)
    }

    /// Every address the record offers for a direct dial, LAN first.
    pub fn direct_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.lan.iter().chain(&self.observed).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_478_400_000;

    fn realm() -> Realm {
        Realm::new("io.macula").unwrap()
    }

    fn record(identity: &Identity) -> PeerRecord {
        PeerRecord {
            node_id: identity.node_id(),
            seq: 3,
            reachability: Reachability::Private,
            observed: vec!["203.0.113.9:40001".parse().unwrap()],
            lan: vec!["10.0.0.2:4433".parse().unwrap()],
            relays: vec![Contact {
                node_id: NodeId::from_bytes([7; 32]),
                addrs: vec!["198.51.100.1:4433".parse().unwrap()],
            }],
        }
    }

    #[test]
    fn a_signed_peer_record_round_trips() {
        let identity = Identity::from_seed([3; 32]);
        let limits = Limits::default();
        let record = record(&identity);
        let signed = record.sign(&identity, &realm(), NOW, 300, &limits).unwrap();
        assert_eq!(
            PeerRecord::open(&signed, &realm(), NOW, &limits),
            Ok(record)
        );
    }

    #[test]
    fn forged_misplaced_and_expired_records_are_refused() {
        let identity = Identity::from_seed([3; 32]);
        let mallory = Identity::from_seed([4; 32]);
        let limits = Limits::default();
        let record = record(&identity);
        // Signed by someone else, under the victim's key.
        let forged = record.sign(&mallory, &realm(), NOW, 300, &limits).unwrap();
        assert!(matches!(
            PeerRecord::open(&forged, &realm(), NOW, &limits),
            Err(PeerRecordError::WrongPublisher { .. })
        ));
        // Altered after signing.
        let mut altered = record.sign(&identity, &realm(), NOW, 300, &limits).unwrap();
        let mut other = record.clone();
        other.observed.clear();
        altered.value = other.encode(&limits).unwrap();
        assert!(matches!(
            PeerRecord::open(&altered, &realm(), NOW, &limits),
            Err(PeerRecordError::Record(RecordError::BadSignature { .. }))
        ));
        // Expired.
        let signed = record.sign(&identity, &realm(), NOW, 300, &limits).unwrap();
        assert!(matches!(
            PeerRecord::open(&signed, &realm(), NOW + 300_000, &limits),
            Err(PeerRecordError::Record(RecordError::Expired { .. }))
        ));
        // Another realm's key.
        let elsewhere = Realm::new("io.other").unwrap();
        assert!(matches!(
            PeerRecord::open(&signed, &elsewhere, NOW, &limits),
            Err(PeerRecordError::WrongKey { .. })
        ));
    }

    #[test]
    fn the_highest_seq_wins() {
        let identity = Identity::from_seed([3; 32]);
        let limits = Limits::default();
        let old = record(&identity);
        let new = PeerRecord {
            seq: 4,
            ..old.clone()
        };
        let signed = [
            new.sign(&identity, &realm(), NOW, 300, &limits).unwrap(),
            old.sign(&identity, &realm(), NOW, 300, &limits).unwrap(),
        ];
        let found = PeerRecord::newest(&signed, &identity.node_id(), &realm(), NOW, &limits);
        assert_eq!(found, Some(new));
    }

    #[test]
    fn bad_versions_and_trailing_bytes_are_typed_errors() {
        let identity = Identity::from_seed([3; 32]);
        let limits = Limits::default();
        let mut bytes = record(&identity).encode(&limits).unwrap().to_vec();
        bytes.push(0);
        assert!(matches!(
            PeerRecord::decode(&bytes, &limits),
            Err(PeerRecordError::Decode(DecodeError::TrailingBytes { .. }))
        ));
        bytes[0] = 2;
        assert_eq!(
            PeerRecord::decode(&bytes, &limits),
            Err(PeerRecordError::Version(2))
        );
        assert!(PeerRecord::decode(&[], &limits).is_err());
    }
}
