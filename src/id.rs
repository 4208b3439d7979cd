//! Identity: Ed25519 keys, node ids, XOR distance, realms and record keys.
//!
//! A node's identity is an Ed25519 key pair. Its [`NodeId`] is the SHA-256 of
//! the public key's SubjectPublicKeyInfo (DER), so anyone holding the peer's
//! TLS certificate can check the id without trusting anything else. Distances
//! between ids are XOR (Kademlia); [`Distance::bucket_index`] picks the routing
//! bucket. Records in the DHT live under [`RecordKey`]s, SHA-256 of
//! `realm/kind/name`, so realms and kinds never collide.

use core::fmt;

use ed25519_dalek::Signer;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length in bytes of a [`NodeId`], a [`Distance`] and a [`RecordKey`].
pub const ID_LEN: usize = 32;

/// Number of bits in an id, and so the number of Kademlia buckets.
pub const ID_BITS: usize = ID_LEN * 8;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): a SEQUENCE
/// holding the algorithm identifier 1.3.101.112 and a 33-byte BIT STRING
/// (a zero "unused bits" byte, then the 32-byte key).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Length of an Ed25519 SubjectPublicKeyInfo in DER.
pub const ED25519_SPKI_LEN: usize = ED25519_SPKI_PREFIX.len() + 32;

/// What went wrong with key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not an Ed25519 SubjectPublicKeyInfo.
    #[error(
        "not an Ed25519 SubjectPublicKeyInfo ({len} bytes; expected {ED25519_SPKI_LEN} starting with the Ed25519 algorithm identifier)"
    )]
    NotEd25519Spki {
        /// Length of the rejected input.
        len: usize,
    },
    /// The 32 bytes are not a valid Ed25519 point.
    #[error("the 32 bytes are not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// A signature did not verify.
    #[error("signature does not verify under this public key")]
    BadSignature,
}

/// An Ed25519 identity key pair. Signatures are deterministic (RFC 8032).
#[derive(Clone)]
pub struct Identity {
    signing: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl Identity {
    /// The identity whose secret key is `seed` (the 32-byte Ed25519 seed).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = PublicKey(signing.verifying_key());
        Self { signing, public }
    }

    /// A new identity from randomness the caller supplies (seeded in tests and
    /// the simulator, the OS in the drivers).
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The secret seed, for persisting the identity. Keep it secret.
    pub fn secret_seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// This identity's node id.
    pub fn node_id(&self) -> NodeId {
        self.public.node_id()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parses a raw 32-byte Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// Parses an Ed25519 SubjectPublicKeyInfo in DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let not_spki = KeyError::NotEd25519Spki { len: der.len() };
        let key = der
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .ok_or(not_spki.clone())?;
        let key: &[u8; 32] = key.try_into().map_err(|_| not_spki)?;
        Self::from_bytes(key)
    }

    /// The raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The SubjectPublicKeyInfo in DER, as it appears in the node's certificate.
    pub fn spki_der(&self) -> [u8; ED25519_SPKI_LEN] {
        let mut der = [0u8; ED25519_SPKI_LEN];
        der[..ED25519_SPKI_PREFIX.len()].copy_from_slice(&ED25519_SPKI_PREFIX);
        der[ED25519_SPKI_PREFIX.len()..].copy_from_slice(self.0.as_bytes());
        der
    }

    /// The node id of this key: SHA-256 of its SubjectPublicKeyInfo.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_spki_der(&self.spki_der())
    }

    /// Checks `signature` over `message` (strict: rejects malleable encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), KeyError> {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", Hex(&self.to_bytes()))
    }
}

/// Lowercase hex of a byte slice, for `Debug` and `Display`.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A 256-bit node id: SHA-256 of the node's SubjectPublicKeyInfo (DER).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; ID_LEN]);

impl NodeId {
    /// The id with these exact bytes (ids off the wire, test fixtures).
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The id of the key in this SubjectPublicKeyInfo.
    pub fn from_spki_der(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &NodeId) -> Distance {
        // A plain loop: `array::from_fn` is ~10x slower in unoptimised test
        // builds, and the DHT computes distances on every hot path.
        let mut d = self.0;
        for (out, b) in d.iter_mut().zip(&other.0) {
            *out ^= b;
        }
        Distance(d)
    }

    /// The Kademlia bucket `other` falls in from our point of view, or `None`
    /// when it is our own id.
    pub fn bucket_index(&self, other: &NodeId) -> Option<usize> {
        self.distance(other).bucket_index()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", Hex(&self.0[..8]))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.0))
    }
}

/// A string that is not a node id in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a node id (64 hex digits)")]
pub struct NodeIdParseError {
    /// The rejected text (at most its first 80 characters).
    pub text: String,
}

impl core::str::FromStr for NodeId {
    type Err = NodeIdParseError;

    /// Parses 64 hex digits, as [`NodeId`]'s `Display` writes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || NodeIdParseError {
            text: text.chars().take(80).collect(),
        };
        let digits = text.as_bytes();
        if digits.len() != ID_LEN * 2 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(error());
        }
        let value = |digit: u8| (digit as char).to_digit(16).unwrap_or(0) as u8;
        let mut bytes = [0u8; ID_LEN];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = value(pair[0]) << 4 | value(pair[1]);
        }
        Ok(Self(bytes))
    }
}

/// The XOR distance between two ids, ordered as a 256-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance([u8; ID_LEN]);

impl Distance {
    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Number of leading zero bits (256 for the zero distance).
    pub fn leading_zeros(&self) -> u32 {
        let mut zeros = 0;
        for byte in self.0 {
            zeros += byte.leading_zeros();
            if byte != 0 {
                break;
            }
        }
        zeros
    }

    /// Bucket `i` holds distances in `[2^i, 2^(i+1))`; the zero distance has none.
    pub fn bucket_index(&self) -> Option<usize> {
        let zeros = self.leading_zeros() as usize;
        (zeros < ID_BITS).then(|| ID_BITS - 1 - zeros)
    }
}

/// What went wrong with a realm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealmError {
    /// Empty, or longer than [`Realm::MAX_LEN`].
    #[error("realm name is {len} bytes; it must be 1..={max}", max = Realm::MAX_LEN)]
    Length {
        /// Length of the rejected name.
        len: usize,
    },
    /// Fewer than two labels.
    #[error(
        "realm {name:?} needs at least two dot-separated labels (reverse DNS, like \"io.macula\")"
    )]
    TooFewLabels {
        /// The rejected name.
        name: String,
    },
    /// A label that is empty, too long, or starts or ends with '-'.
    #[error(
        "realm {name:?}: label {label:?} must be 1..=63 characters and not start or end with '-'"
    )]
    BadLabel {
        /// The rejected name.
        name: String,
        /// The offending label.
        label: String,
    },
    /// A character outside `a-z`, `0-9`, `-`, `.`.
    #[error(
        "realm {name:?}: character {ch:?} is not allowed (use lowercase a-z, 0-9, '-' and '.')"
    )]
    BadCharacter {
        /// The rejected name.
        name: String,
        /// The offending character.
        ch: char,
    },
}

/// A realm: an isolated namespace of the mesh, named in reverse DNS
/// (`io.macula.demo`). Lowercase ASCII letters, digits and hyphens in
/// dot-separated labels of 1..=63 characters, at least two labels, at most
/// 253 bytes in all. Nodes of different realms refuse each other.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Realm(String);

impl Realm {
    /// Longest realm name in bytes (as for a DNS name).
    pub const MAX_LEN: usize = 253;

    /// Validates `name` as a realm.
    pub fn new(name: &str) -> Result<Self, RealmError> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(RealmError::Length { len: name.len() });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            return Err(RealmError::BadCharacter {
                name: name.into(),
                ch,
            });
        }
        if let Some(label) = name
            .split('.')
            .find(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
        {
            return Err(RealmError::BadLabel {
                name: name.into(),
                label: label.into(),
            });
        }
        if name.split('.').count() < 2 {
            return Err(RealmError::TooFewLabels { name: name.into() });
        }
        Ok(Self(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::str::FromStr for Realm {
    type Err = RealmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// What a DHT record describes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum RecordKind {
    /// A node's peer record (addresses, relays), named by its node id.
    Peer,
    /// A provider of an RPC procedure.
    Rpc,
    /// A subscriber to a topic prefix.
    Topic,
}

impl RecordKind {
    /// Every kind, in wire order.
    pub const ALL: [RecordKind; 3] = [RecordKind::Peer, RecordKind::Rpc, RecordKind::Topic];

    /// The label hashed into record keys.
    pub const fn label(self) -> &'static str {
        match self {
            RecordKind::Peer => "peer",
            RecordKind::Rpc => "rpc",
            RecordKind::Topic => "topic",
        }
    }
}

/// A DHT key: SHA-256 of `realm "/" kind "/" name`. Realm names hold no '/',
/// and kinds are fixed words, so two different (realm, kind, name) triples
/// never hash the same input.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey([u8; ID_LEN]);

impl RecordKey {
    /// The key of `name` of `kind` in `realm`.
    pub fn new(realm: &Realm, kind: RecordKind, name: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(realm.as_str().as_bytes());
        hasher.update(b"/");
        hasher.update(kind.label().as_bytes());
        hasher.update(b"/");
        hasher.update(name.as_bytes());
        Self(hasher.finalize().into())
    }

    /// The key of a node's peer record: its id in lowercase hex as the name.
    pub fn peer(realm: &Realm, node: &NodeId) -> Self {
        Self::new(realm, RecordKind::Peer, &node.to_string())
    }

    /// The key with these exact bytes (keys off the wire).
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The key as a point in the id space, for distance to nodes.
    pub const fn as_node_id(&self) -> NodeId {
        NodeId(self.0)
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({})", Hex(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn id(first: u8, last: u8) -> NodeId {
        let mut b = [0u8; ID_LEN];
        b[0] = first;
        b[ID_LEN - 1] = last;
        NodeId::from_bytes(b)
    }

    #[test]
    fn node_id_is_sha256_of_the_spki_der() {
        let identity = Identity::from_seed([7; 32]);
        let der = identity.public_key().spki_der();
        assert_eq!(&der[..12], &ED25519_SPKI_PREFIX);
        let expected: [u8; 32] = Sha256::digest(der).into();
        assert_eq!(identity.node_id().as_bytes(), &expected);
        let parsed = PublicKey::from_spki_der(&der).unwrap();
        assert_eq!(parsed.node_id(), identity.node_id());
    }

    #[test]
    fn spki_parse_rejects_other_algorithms_and_lengths() {
        let mut der = Identity::from_seed([1; 32]).public_key().spki_der();
        assert!(matches!(
            PublicKey::from_spki_der(&der[..40]),
            Err(KeyError::NotEd25519Spki { len: 40 })
        ));
        der[8] = 0x71; // 1.3.101.113 = Ed448
        assert!(matches!(
            PublicKey::from_spki_der(&der),
            Err(KeyError::NotEd25519Spki { .. })
        ));
    }

    #[test]
    fn generated_identities_follow_the_seed() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        assert_eq!(
            Identity::generate(&mut a).node_id(),
            Identity::generate(&mut b).node_id()
        );
        assert_ne!(
            Identity::generate(&mut a).node_id(),
            Identity::from_seed([0; 32]).node_id()
        );
    }

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let identity = Identity::from_seed([3; 32]);
        let sig = identity.sign(b"record");
        assert_eq!(
            sig,
            identity.sign(b"record"),
            "Ed25519 signatures are deterministic"
        );
        identity.public_key().verify(b"record", &sig).unwrap();
        assert_eq!(
            identity.public_key().verify(b"recorD", &sig),
            Err(KeyError::BadSignature)
        );
        let other = Identity::from_seed([4; 32]);
        assert_eq!(
            other.public_key().verify(b"record", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn node_ids_parse_from_their_hex_form() {
        let id = Identity::from_seed([8; 32]).node_id();
        assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        assert!("abc".parse::<NodeId>().is_err());
        assert!("zz".repeat(32).parse::<NodeId>().is_err());
        assert!("+1".repeat(32).parse::<NodeId>().is_err());
    }

    #[test]
    fn distance_and_buckets() {
        let a = id(0, 0);
        assert_eq!(a.bucket_index(&a), None);
        assert_eq!(a.distance(&a).leading_zeros(), 256);
        assert_eq!(a.bucket_index(&id(0, 1)), Some(0));
        assert_eq!(a.bucket_index(&id(0, 0xff)), Some(7));
        assert_eq!(a.bucket_index(&id(0x80, 0)), Some(255));
        assert_eq!(a.bucket_index(&id(0x01, 0)), Some(248));
        assert!(a.distance(&id(0, 2)) < a.distance(&id(1, 0)));
        let (b, c) = (id(0x12, 0x34), id(0x56, 0x78));
        assert_eq!(b.distance(&c), c.distance(&b));
    }

    #[test]
    fn realms_are_validated() {
        assert!(Realm::new("io.macula").is_ok());
        assert!(Realm::new("com.example.mesh-1").is_ok());
        assert!(matches!(Realm::new(""), Err(RealmError::Length { len: 0 })));
        assert!(matches!(
            Realm::new("macula"),
            Err(RealmError::TooFewLabels { .. })
        ));
        assert!(matches!(
            Realm::new("io..macula"),
            Err(RealmError::BadLabel { .. })
        ));
        assert!(matches!(
            Realm::new("io.-macula"),
            Err(RealmError::BadLabel { .. })
        ));
        assert!(matches!(
            Realm::new("io.Macula"),
            Err(RealmError::BadCharacter { ch: 'M', .. })
        ));
        assert!(matches!(
            Realm::new("io/macula"),
            Err(RealmError::BadCharacter { ch: '/', .. })
        ));
        let long = format!("io.{}", "a".repeat(64));
        assert!(matches!(
            Realm::new(&long),
            Err(RealmError::BadLabel { .. })
        ));
        let too_long = vec!["abc"; 64].join(".");
        assert!(matches!(
            Realm::new(&too_long),
            Err(RealmError::Length { .. })
        ));
    }

    #[test]
    fn record_keys_separate_realms_and_kinds() {
        let r1 = Realm::new("io.macula").unwrap();
        let r2 = Realm::new("io.other").unwrap();
        let key = RecordKey::new(&r1, RecordKind::Rpc, "echo");
        let expected: [u8; 32] = Sha256::digest(b"io.macula/rpc/echo").into();
        assert_eq!(key.as_bytes(), &expected);
        assert_ne!(key, RecordKey::new(&r2, RecordKind::Rpc, "echo"));
        assert_ne!(key, RecordKey::new(&r1, RecordKind::Topic, "echo"));
        let node = Identity::from_seed([9; 32]).node_id();
        assert_eq!(
            RecordKey::peer(&r1, &node),
            RecordKey::new(&r1, RecordKind::Peer, &node.to_string())
        );
    }
}
