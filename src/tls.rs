//! TLS for node connections: identity certificates, peer verification, pins.
//!
//! Every connection is mutual TLS 1.3 with ALPN [`ALPN`] and the fixed server
//! name [`SERVER_NAME`]. A node's certificate carries its Ed25519 identity key;
//! the peer's [`NodeId`] is the SHA-256 of the certificate's
//! SubjectPublicKeyInfo. The dialer knows which node it wants and puts that
//! id into the per-dial client configuration ([`NodeTls::client_config`]); the
//! acceptor derives the dialer's id from its certificate ([`peer_node_id`]).
//!
//! [`PeerVerification`] picks how far a certificate is trusted beyond that
//! binding: the identity alone, a chain to configured CAs (with validity
//! dates), or a pin set. Every mode still checks the handshake signature, so
//! a peer replaying another node's certificate without its key is refused.
//! Turning verification off exists only as
//! [`PeerVerification::InsecureAcceptAnyNodeId`].
//!
//! Wall-clock time for certificate validity is an explicit input
//! ([`WallClock`]), never read from the system by the core.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, TrustAnchor, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::id::{Identity, NodeId, PublicKey};

pub use crate::wire::{ALPN, SERVER_NAME};

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): version 0, the
/// algorithm 1.3.101.112, and an OCTET STRING wrapping the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What went wrong while setting up TLS. File errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the expected kind.
    #[error("{path}: no {expected} found (expected PEM \"-----BEGIN {expected}-----\")")]
    MissingPem {
        /// The file.
        path: PathBuf,
        /// The PEM label looked for.
        expected: &'static str,
    },
    /// A file's PEM is malformed.
    #[error("{path}: malformed PEM: {problem}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        problem: String,
    },
    /// A certificate's key is not an Ed25519 identity key.
    #[error(
        "{path}: the certificate's public key is not Ed25519; node identities are Ed25519 keys"
    )]
    CertificateKeyNotEd25519 {
        /// The certificate file.
        path: PathBuf,
    },
    /// The private key is not an Ed25519 key in PKCS#8.
    #[error("{path}: the private key is not an Ed25519 PKCS#8 key")]
    PrivateKeyNotEd25519 {
        /// The key file.
        path: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error("{key_path} does not hold the private key of the certificate in {cert_path}")]
    KeyDoesNotMatchCertificate {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("{path}: certificate #{index} is not a usable CA certificate: {problem}")]
    BadCaCertificate {
        /// The CA file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// What webpki said.
        problem: String,
    },
    /// A pin is not 64 hex digits.
    #[error("pin {pin:?} is not a SHA-256 in hex (64 hex digits)")]
    BadPin {
        /// The rejected pin.
        pin: String,
    },
    /// Pinned verification with no pins would refuse every peer.
    #[error("pinned verification needs at least one pin")]
    EmptyPinSet,
    /// Generating the identity certificate failed.
    #[error("cannot generate the identity certificate: {0}")]
    CertificateGeneration(String),
    /// rustls refused the configuration.
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a peer's certificate was refused. It reaches the application inside
/// rustls' `CertificateError::Other`; [`rejection`] digs it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRejected {
    /// The peer showed no certificate.
    #[error("the peer showed no certificate")]
    NoCertificate,
    /// The certificate's key is not an Ed25519 identity key.
    #[error("the peer's certificate key is not Ed25519")]
    NotEd25519,
    /// The certificate belongs to another node than the one dialed.
    #[error("dialed {expected} but the peer is {actual}")]
    WrongNodeId {
        /// The node we dialed.
        expected: NodeId,
        /// The node the certificate names.
        actual: NodeId,
    },
    /// The key's SPKI SHA-256 is not in the pin set.
    #[error("peer {node} (SPKI SHA-256 {spki_sha256}) is not pinned")]
    NotPinned {
        /// The peer.
        node: NodeId,
        /// Its SPKI hash in hex.
        spki_sha256: String,
    },
    /// The chain does not verify against the configured CAs.
    #[error("peer {node}: certificate chain rejected: {problem}")]
    Untrusted {
        /// The peer.
        node: NodeId,
        /// What webpki said.
        problem: String,
    },
}

/// The typed reason inside a rustls error, if it came from our verifiers.
pub fn rejection(error: &rustls::Error) -> Option<&PeerRejected> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PeerRejected>()
        }
        _ => None,
    }
}

/// Wall-clock time for certificate validity, Unix seconds, set by whoever
/// drives the node. Zero means "not known yet": CA verification then fails
/// closed.
#[derive(Clone, Debug, Default)]
pub struct WallClock(Arc<AtomicU64>);

impl WallClock {
    /// A clock reading `unix_secs`.
    pub fn at(unix_secs: u64) -> Self {
        let clock = Self::default();
        clock.set(unix_secs);
        clock
    }

    /// Sets the time.
    pub fn set(&self, unix_secs: u64) {
        self.0.store(unix_secs, Ordering::Relaxed);
    }

    /// The time, if set.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&secs| secs != 0)
    }
}

impl rustls::time_provider::TimeProvider for WallClock {
    fn current_time(&self) -> Option<UnixTime> {
        self.get()
            .map(|secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)))
    }
}

/// CA certificates trusted to vouch for node certificates.
#[derive(Clone)]
pub struct CaRoots(Vec<TrustAnchor<'static>>);

impl CaRoots {
    /// Trust anchors from DER certificates; `path` names their source in errors.
    pub fn from_der(path: &Path, certs: &[CertificateDer<'_>]) -> Result<Self, TlsError> {
        certs
            .iter()
            .enumerate()
            .map(|(index, cert)| {
                webpki::anchor_from_trusted_cert(cert)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::BadCaCertificate {
                        path: path.into(),
                        index,
                        problem: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Trust anchors from a PEM bundle file.
    pub fn from_pem_file(path: &Path) -> Result<Self, TlsError> {
        let certs = read_certificates(path)?;
        Self::from_der(path, &certs)
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for CaRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaRoots({} anchors)", self.0.len())
    }
}

/// SHA-256 hashes of SubjectPublicKeyInfos that are trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinSet(BTreeSet<[u8; 32]>);

impl PinSet {
    /// A pin set from hashes in hex (64 digits each).
    pub fn from_hex<'a>(pins: impl IntoIterator<Item = &'a str>) -> Result<Self, TlsError> {
        // An SPKI SHA-256 has the form of a node id (for Ed25519 keys it is one).
        let parse = |pin: &str| pin.parse::<NodeId>().ok().map(|id| *id.as_bytes());
        let set = pins
            .into_iter()
            .map(|pin| parse(pin).ok_or_else(|| TlsError::BadPin { pin: pin.into() }))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if set.is_empty() {
            return Err(TlsError::EmptyPinSet);
        }
        Ok(Self(set))
    }

    /// Pins the key of `node`. For Ed25519 identities the SPKI hash is the
    /// node id itself.
    pub fn insert(&mut self, node: NodeId) {
        self.0.insert(*node.as_bytes());
    }

    /// True when `spki_sha256` is pinned.
    pub fn contains(&self, spki_sha256: &[u8; 32]) -> bool {
        self.0.contains(spki_sha256)
    }
}

/// How a node checks the certificate its peer shows. In every mode the
/// peer's node id is the SHA-256 of its certificate's SPKI, a dialed peer must
/// be the node that was dialed, and the handshake signature must verify.
#[derive(Clone, Debug)]
pub enum PeerVerification {
    /// The key is the identity: any Ed25519 certificate; its dates, issuer
    /// and signature are not checked (docs/PROTOCOL.md §1). The default.
    Identity,
    /// The certificate must chain to one of these CAs (webpki), inside its
    /// validity dates at the [`WallClock`] time.
    CertificateAuthority(CaRoots),
    /// The SPKI SHA-256 must be in this set.
    Pinned(PinSet),
    /// Accepts a dialed peer whatever node id it shows. INSECURE: anyone can
    /// answer for the node you meant to reach. Handshake signatures are still
    /// checked. For tests and debugging only.
    InsecureAcceptAnyNodeId,
}

/// A node's TLS material and verification policy; makes the rustls
/// configurations the QUIC endpoint needs.
#[derive(Clone, Debug)]
pub struct NodeTls {
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    verification: Arc<PeerVerification>,
    clock: WallClock,
}

impl NodeTls {
    /// TLS for `identity` with a self-signed certificate (deterministic: the
    /// serial is derived from the key, validity spans 1975..4096).
    pub fn self_signed(
        identity: &Identity,
        verification: PeerVerification,
        clock: WallClock,
    ) -> Result<Self, TlsError> {
        let cert = self_signed_certificate(identity)?;
        Self::with_chain(identity, vec![cert], verification, clock)
    }

    /// TLS for `identity` presenting `chain` (end-entity first), e.g. a
    /// certificate a CA issued for the identity key.
    pub fn with_chain(
        identity: &Identity,
        chain: Vec<CertificateDer<'static>>,
        verification: PeerVerification,
        clock: WallClock,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(provider());
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8_der(identity)))?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match()?;
        Ok(Self {
            provider,
            certified: Arc::new(certified),
            verification: Arc::new(verification),
            clock,
        })
    }

    /// TLS from PEM files: a certificate chain and its Ed25519 PKCS#8 key.
    /// Returns the identity the key file holds.
    pub fn from_pem_files(
        cert_path: &Path,
        key_path: &Path,
        verification: PeerVerification,
        clock: WallClock,
    ) -> Result<(Identity, Self), TlsError> {
        let chain = read_certificates(cert_path)?;
        let identity = read_identity(key_path)?;
        let cert_key =
            certificate_key(&chain[0]).ok_or_else(|| TlsError::CertificateKeyNotEd25519 {
                path: cert_path.into(),
            })?;
        if cert_key != *identity.public_key() {
            return Err(TlsError::KeyDoesNotMatchCertificate {
                cert_path: cert_path.into(),
                key_path: key_path.into(),
            });
        }
        let tls = Self::with_chain(&identity, chain, verification, clock)?;
        Ok((identity, tls))
    }

    /// The certificate chain this node presents.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The wall clock the verifiers read.
    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// The client configuration for dialing `expected`.
    pub fn client_config(&self, expected: NodeId) -> Arc<rustls::ClientConfig> {
        let verifier = Arc::new(Verifier {
            policy: self.clone(),
            expected: Some(expected),
        });
        let mut config = rustls::ClientConfig::builder_with_details(
            self.provider.clone(),
            Arc::new(self.clock.clone()),
        )
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(OwnCertificate(self.certified.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_early_data = false;
        Arc::new(config)
    }

    /// The server configuration for accepting connections. Client
    /// certificates are mandatory.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let verifier = Arc::new(Verifier {
            policy: self.clone(),
            expected: None,
        });
        let mut config = rustls::ServerConfig::builder_with_details(
            self.provider.clone(),
            Arc::new(self.clock.clone()),
        )
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(OwnCertificate(self.certified.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.max_early_data_size = 0;
        Arc::new(config)
    }

    /// Applies the policy to a peer's chain and returns its node id.
    fn check(
        &self,
        chain: &[CertificateDer<'_>],
        expected: Option<NodeId>,
        client: bool,
    ) -> Result<NodeId, PeerRejected> {
        let end_entity = chain.first().ok_or(PeerRejected::NoCertificate)?;
        let node = peer_node_id(chain)?;
        let insecure = matches!(
            *self.verification,
            PeerVerification::InsecureAcceptAnyNodeId
        );
        if let Some(expected) = expected.filter(|&e| e != node && !insecure) {
            return Err(PeerRejected::WrongNodeId {
                expected,
                actual: node,
            });
        }
        match &*self.verification {
            PeerVerification::Identity | PeerVerification::InsecureAcceptAnyNodeId => Ok(node),
            PeerVerification::Pinned(pins) => {
                if pins.contains(node.as_bytes()) {
                    Ok(node)
                } else {
                    Err(PeerRejected::NotPinned {
                        node,
                        spki_sha256: node.to_string(),
                    })
                }
            }
            PeerVerification::CertificateAuthority(roots) => {
                let untrusted = |problem: String| PeerRejected::Untrusted { node, problem };
                let now = self.clock.current_time_or_epoch();
                let cert = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|e| untrusted(e.to_string()))?;
                let usage = if client {
                    webpki::KeyUsage::client_auth()
                } else {
                    webpki::KeyUsage::server_auth()
                };
                cert.verify_for_usage(
                    self.provider.signature_verification_algorithms.all,
                    &roots.0,
                    &chain[1..],
                    now,
                    usage,
                    None,
                    None,
                )
                .map(|_| node)
                .map_err(|e| untrusted(e.to_string()))
            }
        }
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl WallClock {
    fn current_time_or_epoch(&self) -> UnixTime {
        use rustls::time_provider::TimeProvider;
        self.current_time()
            .unwrap_or(UnixTime::since_unix_epoch(std::time::Duration::ZERO))
    }
}

/// The node id of the peer whose chain this is: SHA-256 of the end-entity
/// certificate's SPKI, which must be an Ed25519 key.
pub fn peer_node_id(chain: &[CertificateDer<'_>]) -> Result<NodeId, PeerRejected> {
    let end_entity = chain.first().ok_or(PeerRejected::NoCertificate)?;
    certificate_key(end_entity)
        .map(|key| key.node_id())
        .ok_or(PeerRejected::NotEd25519)
}

/// The Ed25519 key in a certificate, if it holds one.
fn certificate_key(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    PublicKey::from_spki_der(cert.subject_public_key_info().as_ref()).ok()
}

/// The ring crypto provider limited to TLS 1.3.
fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|suite| suite.tls13().is_some());
    provider
}

/// The identity's secret key as PKCS#8 v1 DER.
fn pkcs8_der(identity: &Identity) -> PrivatePkcs8KeyDer<'static> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&identity.secret_seed());
    PrivatePkcs8KeyDer::from(der)
}

/// A self-signed certificate for the identity key, naming [`SERVER_NAME`].
fn self_signed_certificate(identity: &Identity) -> Result<CertificateDer<'static>, TlsError> {
    let generation = |e: rcgen::Error| TlsError::CertificateGeneration(e.to_string());
    let key =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der(identity), &rcgen::PKCS_ED25519)
            .map_err(generation)?;
    let params =
        rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(generation)?;
    Ok(params.self_signed(&key).map_err(generation)?.der().clone())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.into(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::MissingPem {
            path: path.into(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads an Ed25519 identity from a PKCS#8 PEM file.
pub fn read_identity(path: &Path) -> Result<Identity, TlsError> {
    let pem = read_file(path)?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::MissingPem {
            path: path.into(),
            expected: "PRIVATE KEY",
        },
        other => TlsError::BadPem {
            path: path.into(),
            problem: other.to_string(),
        },
    })?;
    let der = key.secret_pkcs8_der();
    let seed = der
        .strip_prefix(&ED25519_PKCS8_PREFIX[..])
        .and_then(|rest| rest.get(..32))
        .and_then(|seed| <[u8; 32]>::try_from(seed).ok())
        .ok_or_else(|| TlsError::PrivateKeyNotEd25519 { path: path.into() })?;
    Ok(Identity::from_seed(seed))
}

/// The identity's key as a PKCS#8 PEM document, for persisting it.
pub fn identity_to_pem(identity: &Identity) -> String {
    pem_encode("PRIVATE KEY", pkcs8_der(identity).secret_pkcs8_der())
}

/// A certificate as a PEM document.
pub fn certificate_to_pem(cert: &CertificateDer<'_>) -> String {
    pem_encode("CERTIFICATE", cert)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// Presents the node's own certificate, as client and as server.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Checks peers for both roles: as a dialer with `expected` set, as an
/// acceptor without.
#[derive(Debug)]
struct Verifier {
    policy: NodeTls,
    expected: Option<NodeId>,
}

impl Verifier {
    /// Applies the policy to the peer's chain (`client`: the peer is the
    /// dialer, so its certificate is checked for client use).
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        client: bool,
    ) -> Result<(), rustls::Error> {
        let chain: Vec<_> = std::iter::once(end_entity)
            .chain(intermediates)
            .cloned()
            .collect();
        let expected = if client { None } else { self.expected };
        self.policy
            .check(&chain, expected, client)
            .map(drop)
            .map_err(reject)
    }

    /// Checks the handshake signature: proof that the peer holds the key of
    /// the certificate it showed.
    fn handshake_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.policy.algorithms())
    }
}

/// TLS 1.2 is never negotiated (QUIC needs 1.3).
fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

fn reject(reason: PeerRejected) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_chain(end_entity, intermediates, false)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.policy.algorithms().supported_schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_chain(end_entity, intermediates, true)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.policy.algorithms().supported_schemes()
    }
}
