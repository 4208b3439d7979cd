//! Real rustls handshakes in memory between node TLS configurations: every
//! verification mode accepts the right peer and refuses the wrong one.

use std::sync::Arc;

use macula::id::{Identity, NodeId};
use macula::tls::{
    self, CaRoots, NodeTls, PeerRejected, PeerVerification, PinSet, TlsError, WallClock,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, ServerConnection};

/// 2026-11-24, the wall-clock time of every handshake here.
const NOW: u64 = 1_795_478_400;
const DAY: i64 = 86_400;

fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

fn self_signed(seed: u8, verification: PeerVerification) -> NodeTls {
    NodeTls::self_signed(&identity(seed), verification, WallClock::at(NOW)).unwrap()
}

/// What each side concluded.
struct Outcome {
    client: Result<(), rustls::Error>,
    server: Result<(), rustls::Error>,
    /// The dialer's node id as the acceptor derived it.
    client_id_seen_by_server: Option<NodeId>,
}

/// Runs a TLS 1.3 handshake between the two configurations, moving bytes in
/// memory until both finish or one fails.
fn handshake(client: Arc<rustls::ClientConfig>, server: Arc<rustls::ServerConfig>) -> Outcome {
    let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
    let mut c = ClientConnection::new(client, name).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    let (mut client_result, mut server_result) = (Ok(()), Ok(()));
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            if let Err(e) = s.process_new_packets() {
                server_result = Err(e);
            }
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            if let Err(e) = c.process_new_packets() {
                client_result = Err(e);
            }
        }
        let done = !c.is_handshaking() && !s.is_handshaking();
        if done || client_result.is_err() || server_result.is_err() {
            break;
        }
    }
    assert!(
        client_result.is_err()
            || server_result.is_err()
            || (!c.is_handshaking() && !s.is_handshaking()),
        "handshake neither finished nor failed"
    );
    let client_id_seen_by_server = s
        .peer_certificates()
        .map(|chain| tls::peer_node_id(chain).unwrap());
    Outcome {
        client: client_result,
        server: server_result,
        client_id_seen_by_server,
    }
}

fn rejection_of(result: &Result<(), rustls::Error>) -> PeerRejected {
    let error = result.as_ref().expect_err("the handshake must fail");
    tls::rejection(error)
        .unwrap_or_else(|| panic!("not a typed rejection: {error:?}"))
        .clone()
}

#[test]
fn identity_mode_connects_and_binds_both_node_ids() {
    let (a, b) = (
        self_signed(1, PeerVerification::Identity),
        self_signed(2, PeerVerification::Identity),
    );
    let outcome = handshake(a.client_config(identity(2).node_id()), b.server_config());
    outcome.client.unwrap();
    outcome.server.unwrap();
    assert_eq!(
        outcome.client_id_seen_by_server,
        Some(identity(1).node_id())
    );
}

#[test]
fn a_dialer_refuses_a_peer_with_another_node_id() {
    let (a, b) = (
        self_signed(1, PeerVerification::Identity),
        self_signed(2, PeerVerification::Identity),
    );
    let outcome = handshake(a.client_config(identity(3).node_id()), b.server_config());
    assert_eq!(
        rejection_of(&outcome.client),
        PeerRejected::WrongNodeId {
            expected: identity(3).node_id(),
            actual: identity(2).node_id()
        }
    );
}

#[test]
fn insecure_mode_accepts_any_node_id() {
    let a = self_signed(1, PeerVerification::InsecureAcceptAnyNodeId);
    let b = self_signed(2, PeerVerification::Identity);
    let outcome = handshake(a.client_config(identity(3).node_id()), b.server_config());
    outcome.client.unwrap();
    outcome.server.unwrap();
}

#[test]
fn wrong_alpn_is_refused() {
    let (a, b) = (
        self_signed(1, PeerVerification::Identity),
        self_signed(2, PeerVerification::Identity),
    );
    let mut client = (*a.client_config(identity(2).node_id())).clone();
    client.alpn_protocols = vec![b"h3".to_vec()];
    let outcome = handshake(Arc::new(client), b.server_config());
    assert!(
        matches!(outcome.server, Err(rustls::Error::NoApplicationProtocol)),
        "{:?}",
        outcome.server
    );
}

/// A node that shows `victim`'s certificate but signs with its own key.
fn impostor(own: u8, victim: u8) -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let victim_cert = self_signed(victim, PeerVerification::Identity)
        .chain()
        .to_vec();
    let own_key = identity(own);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der =
        rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
            rcgen::KeyPair::from_pem(&tls::identity_to_pem(&own_key))
                .unwrap()
                .serialize_der(),
        ));
    let key = provider.key_provider.load_private_key(key_der).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(victim_cert, key));
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    impl rustls::client::ResolvesClientCert for Fixed {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let honest = self_signed(own, PeerVerification::Identity);
    let mut server = (*honest.server_config()).clone();
    server.cert_resolver = Arc::new(Fixed(certified.clone()));
    let mut client = (*honest.client_config(identity(9).node_id())).clone();
    client.client_auth_cert_resolver = Arc::new(Fixed(certified));
    (Arc::new(client), Arc::new(server))
}

#[test]
fn a_replayed_certificate_without_its_key_is_refused_on_both_sides() {
    // Server side impostor: shows node 2's certificate, holds node 3's key.
    let a = self_signed(1, PeerVerification::Identity);
    let (_, impostor_server) = impostor(3, 2);
    let outcome = handshake(a.client_config(identity(2).node_id()), impostor_server);
    let error = outcome
        .client
        .expect_err("the dialer must notice the bad handshake signature");
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{error:?}"
    );

    // Client side impostor: dials node 9 showing node 2's certificate.
    let b = self_signed(9, PeerVerification::Identity);
    let (impostor_client, _) = impostor(3, 2);
    let outcome = handshake(impostor_client, b.server_config());
    let error = outcome
        .server
        .expect_err("the acceptor must notice the bad handshake signature");
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{error:?}"
    );
}

#[test]
fn pinned_mode_accepts_pinned_keys_only() {
    let mut pins = PinSet::default();
    pins.insert(identity(2).node_id());
    let a = self_signed(1, PeerVerification::Pinned(pins));
    let b = self_signed(2, PeerVerification::Identity);
    handshake(a.client_config(identity(2).node_id()), b.server_config())
        .client
        .unwrap();

    let c = self_signed(3, PeerVerification::Identity);
    let outcome = handshake(a.client_config(identity(3).node_id()), c.server_config());
    assert!(
        matches!(rejection_of(&outcome.client), PeerRejected::NotPinned { node, .. } if node == identity(3).node_id())
    );
}

#[test]
fn pins_parse_from_hex_with_clear_errors() {
    let id = identity(2).node_id().to_string();
    let pins = PinSet::from_hex([id.as_str()]).unwrap();
    assert!(pins.contains(identity(2).node_id().as_bytes()));
    assert!(matches!(
        PinSet::from_hex(["abc"]),
        Err(TlsError::BadPin { .. })
    ));
    assert!(matches!(
        PinSet::from_hex([&"zz".repeat(32)[..]]),
        Err(TlsError::BadPin { .. })
    ));
    assert!(matches!(
        PinSet::from_hex(std::iter::empty()),
        Err(TlsError::EmptyPinSet)
    ));
}

/// A CA and certificates it issues for node identities.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: CertificateDer<'static>,
}

fn unix(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

impl Ca {
    fn new(seed: u8) -> Self {
        let key = rcgen::KeyPair::from_pem(&tls::identity_to_pem(&identity(seed))).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {seed}"));
        let cert = params.self_signed(&key).unwrap().der().clone();
        let issuer = rcgen::Issuer::new(params, key);
        Self { issuer, cert }
    }

    fn roots(&self) -> CaRoots {
        CaRoots::from_der(
            std::path::Path::new("test-ca.pem"),
            std::slice::from_ref(&self.cert),
        )
        .unwrap()
    }

    /// A certificate for `seed`'s identity valid from `from` to `until` (Unix s).
    fn issue(&self, seed: u8, from: i64, until: i64) -> Vec<CertificateDer<'static>> {
        let node_key = rcgen::KeyPair::from_pem(&tls::identity_to_pem(&identity(seed))).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![tls::SERVER_NAME.into()]).unwrap();
        params.not_before = unix(from);
        params.not_after = unix(until);
        vec![
            params
                .signed_by(&node_key, &self.issuer)
                .unwrap()
                .der()
                .clone(),
        ]
    }
}

fn ca_node(seed: u8, ca: &Ca, chain: Vec<CertificateDer<'static>>) -> NodeTls {
    NodeTls::with_chain(
        &identity(seed),
        chain,
        PeerVerification::CertificateAuthority(ca.roots()),
        WallClock::at(NOW),
    )
    .unwrap()
}

#[test]
fn ca_mode_accepts_issued_certificates_and_still_binds_the_node_id() {
    let ca = Ca::new(100);
    let now = NOW as i64;
    let a = ca_node(1, &ca, ca.issue(1, now - DAY, now + DAY));
    let b = ca_node(2, &ca, ca.issue(2, now - DAY, now + DAY));
    let outcome = handshake(a.client_config(identity(2).node_id()), b.server_config());
    outcome.client.unwrap();
    outcome.server.unwrap();
    assert_eq!(
        outcome.client_id_seen_by_server,
        Some(identity(1).node_id())
    );

    let outcome = handshake(a.client_config(identity(5).node_id()), b.server_config());
    assert!(matches!(
        rejection_of(&outcome.client),
        PeerRejected::WrongNodeId { .. }
    ));
}

#[test]
fn ca_mode_refuses_an_untrusted_ca_and_self_signed_peers() {
    let (ca, rogue) = (Ca::new(100), Ca::new(101));
    let now = NOW as i64;
    let a = ca_node(1, &ca, ca.issue(1, now - DAY, now + DAY));
    let b = ca_node(2, &ca, rogue.issue(2, now - DAY, now + DAY));
    let outcome = handshake(a.client_config(identity(2).node_id()), b.server_config());
    assert!(
        matches!(rejection_of(&outcome.client), PeerRejected::Untrusted { problem, .. } if problem.contains("UnknownIssuer"))
    );

    let c = self_signed(3, PeerVerification::Identity);
    let outcome = handshake(a.client_config(identity(3).node_id()), c.server_config());
    assert!(matches!(
        rejection_of(&outcome.client),
        PeerRejected::Untrusted { .. }
    ));
}

#[test]
fn ca_mode_refuses_expired_and_not_yet_valid_certificates() {
    let ca = Ca::new(100);
    let now = NOW as i64;
    let a = ca_node(1, &ca, ca.issue(1, now - DAY, now + DAY));
    let expired = ca_node(2, &ca, ca.issue(2, now - 10 * DAY, now - DAY));
    let outcome = handshake(
        a.client_config(identity(2).node_id()),
        expired.server_config(),
    );
    assert!(
        matches!(rejection_of(&outcome.client), PeerRejected::Untrusted { problem, .. } if problem.contains("CertExpired"))
    );

    let early = ca_node(2, &ca, ca.issue(2, now + DAY, now + 10 * DAY));
    let outcome = handshake(
        a.client_config(identity(2).node_id()),
        early.server_config(),
    );
    assert!(
        matches!(rejection_of(&outcome.client), PeerRejected::Untrusted { problem, .. } if problem.contains("CertNotValidYet"))
    );

    // The acceptor checks the dialer's dates too.
    let outcome = handshake(
        expired.client_config(identity(1).node_id()),
        a.server_config(),
    );
    assert!(matches!(
        rejection_of(&outcome.server),
        PeerRejected::Untrusted { .. }
    ));
}

#[test]
fn config_errors_name_the_file_and_the_problem() {
    let dir = std::env::temp_dir().join(format!("macula-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let err = NodeTls::from_pem_files(
        &missing,
        &missing,
        PeerVerification::Identity,
        WallClock::default(),
    )
    .unwrap_err();
    assert!(matches!(&err, TlsError::Read { path, .. } if path == &missing));
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not pem at all").unwrap();
    let err = CaRoots::from_pem_file(&garbage).unwrap_err();
    assert!(
        matches!(&err, TlsError::MissingPem { path, expected: "CERTIFICATE" } if path == &garbage),
        "{err}"
    );

    let cert = dir.join("node.pem");
    let key = dir.join("node.key");
    let other_key = dir.join("other.key");
    let node = self_signed(1, PeerVerification::Identity);
    std::fs::write(&cert, tls::certificate_to_pem(&node.chain()[0])).unwrap();
    std::fs::write(&key, tls::identity_to_pem(&identity(1))).unwrap();
    std::fs::write(&other_key, tls::identity_to_pem(&identity(2))).unwrap();
    let (loaded, _) = NodeTls::from_pem_files(
        &cert,
        &key,
        PeerVerification::Identity,
        WallClock::default(),
    )
    .unwrap();
    assert_eq!(loaded.node_id(), identity(1).node_id());
    let err = NodeTls::from_pem_files(
        &cert,
        &other_key,
        PeerVerification::Identity,
        WallClock::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TlsError::KeyDoesNotMatchCertificate { .. }),
        "{err}"
    );
    let err = NodeTls::from_pem_files(
        &cert,
        &cert,
        PeerVerification::Identity,
        WallClock::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TlsError::MissingPem { path, expected: "PRIVATE KEY" } if path == &cert),
        "{err}"
    );

    let not_ca = dir.join("not-ca.pem");
    std::fs::write(
        &not_ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = CaRoots::from_pem_file(&not_ca).unwrap_err();
    assert!(
        matches!(&err, TlsError::BadCaCertificate { index: 0, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn identity_certificates_are_deterministic() {
    let a = self_signed(1, PeerVerification::Identity);
    let b = self_signed(1, PeerVerification::Identity);
    assert_eq!(a.chain(), b.chain());
    assert_eq!(tls::peer_node_id(a.chain()).unwrap(), identity(1).node_id());
}

#[test]
fn identity_and_pinned_modes_count_only_the_key_not_dates_or_issuer() {
    // docs/PROTOCOL.md §1: an expired certificate, issued by another key,
    // still proves its key through CertificateVerify.
    let ca = Ca::new(100);
    let now = NOW as i64;
    let foreign_and_expired = ca.issue(2, now - 10 * DAY, now - DAY);
    let pins = PinSet::from_hex([identity(2).node_id().to_string().as_str()]).unwrap();
    for verification in [PeerVerification::Identity, PeerVerification::Pinned(pins)] {
        let a = self_signed(1, verification);
        let b = NodeTls::with_chain(
            &identity(2),
            foreign_and_expired.clone(),
            PeerVerification::Identity,
            WallClock::at(NOW),
        )
        .unwrap();
        let outcome = handshake(a.client_config(identity(2).node_id()), b.server_config());
        outcome.client.unwrap();
        outcome.server.unwrap();
        // And the acceptor's side: the dialer presents it.
        let outcome = handshake(b.client_config(identity(1).node_id()), a.server_config());
        outcome.client.unwrap();
        outcome.server.unwrap();
        assert_eq!(
            outcome.client_id_seen_by_server,
            Some(identity(2).node_id())
        );
    }
    // Whoever lacks the key still fails: the CertificateVerify counts
    // (a_replayed_certificate_without_its_key_is_refused_on_both_sides).
}
