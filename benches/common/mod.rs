//! What the round-trip benches share (`benches/node.rs` and macula-tokio's
//! `benches/messaging.rs`, which includes this file by path): samples and
//! their report, and the plain-quinn floor.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Timing is what a benchmark does: the ban on clocks is for the core.
#[allow(clippy::disallowed_methods)]
pub fn clock() -> Instant {
    Instant::now()
}

// ---- samples and the report ----------------------------------------------

/// Round trips of one series.
pub struct Series(pub Vec<Duration>);

impl Series {
    /// The `p`-quantile (0..=1), nearest rank.
    pub fn quantile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = (p * (sorted.len().saturating_sub(1)) as f64).round() as usize;
        sorted.get(rank).copied().unwrap_or_default()
    }

    /// Prints `NAME_p50_us` and `NAME_p99_us` (and the sample count).
    pub fn print(&self, name: &str) {
        println!("{name}_samples={}", self.0.len());
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            println!("{name}_{label}_us={:.1}", micros(self.quantile(p)));
        }
    }
}

/// A duration in microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Prints `NAME=a/b` for the median and p99 of two series, and whether the
/// medians' ratio meets `target` when one is given.
pub fn ratio(name: &str, a: &Series, b: &Series, target: Option<(&str, bool)>) {
    let of = |p| micros(a.quantile(p)) / micros(b.quantile(p));
    let median = of(0.5);
    println!("{name}_p50={median:.2}");
    println!("{name}_p99={:.2}", of(0.99));
    if let Some((rule, met)) = target {
        let verdict = if met { "met" } else { "missed" };
        println!("target_{rule}={verdict}");
    }
}

// ---- plain quinn -----------------------------------------------------------

/// A quinn connection to `addr`.
pub async fn quinn_connect(client: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    let connecting = client.connect(addr, "localhost").expect("a valid dial");
    connecting.await.expect("the quinn handshake")
}

/// `count` requests timed after `warmup` untimed ones, each on its own
/// stream: all on one connection, or (`fresh`) each on a new connection,
/// closed once the answer is in (the handshake is timed, the close is not).
pub async fn quinn_series(
    client: &quinn::Endpoint,
    addr: SocketAddr,
    request: &[u8],
    (warmup, count): (usize, usize),
    fresh: bool,
) -> Series {
    let shared = match fresh {
        true => None,
        false => Some(quinn_connect(client, addr).await),
    };
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let start = clock();
        let conn = match &shared {
            Some(conn) => conn.clone(),
            None => quinn_connect(client, addr).await,
        };
        quinn_exchange(&conn, request).await;
        let elapsed = start.elapsed();
        if i >= warmup {
            samples.push(elapsed);
        }
        if fresh {
            conn.close(0u32.into(), b"done");
        }
    }
    if let Some(conn) = shared {
        conn.close(0u32.into(), b"done");
    }
    Series(samples)
}

/// One request on its own stream of `conn`, and its answer.
pub async fn quinn_exchange(conn: &quinn::Connection, request: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("a stream");
    send.write_all(request)
        .await
        .expect("the request is written");
    send.finish().expect("the request is finished");
    recv.read_to_end(1 << 16).await.expect("the answer")
}

/// A quinn server endpoint with an Ed25519 self-signed certificate for
/// `localhost` and a client endpoint that trusts it, both on loopback.
pub fn quinn_pair() -> (quinn::Endpoint, quinn::Endpoint) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("valid names");
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    let cert: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls13 = [&rustls::version::TLS13];

    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&tls13)
        .expect("ring does TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("the key fits the certificate");
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).expect("a QUIC suite");
    let server = quinn::ServerConfig::with_crypto(Arc::new(server));
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server = quinn::Endpoint::server(server, loopback).expect("a server endpoint");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("the certificate is a usable root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&tls13)
        .expect("ring does TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).expect("a QUIC suite");
    let mut endpoint = quinn::Endpoint::client(loopback).expect("a client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
    (server, endpoint)
}

/// Answers every request stream of every connection with what `answer`
/// makes of the request: one stream after the other per connection, or, when
/// `concurrent`, each stream in a task of its own (for concurrent requests;
/// the task hop costs a sequential request a little).
pub async fn serve_quinn<F>(server: quinn::Endpoint, answer: F, concurrent: bool)
where
    F: Fn(Vec<u8>) -> Bytes + Clone + Send + Sync + 'static,
{
    while let Some(incoming) = server.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                let exchange = answer_stream(send, recv, answer.clone());
                if concurrent {
                    tokio::spawn(exchange);
                } else {
                    exchange.await;
                }
            }
        });
    }
}

/// Reads one request to its end and writes its answer.
async fn answer_stream<F>(mut send: quinn::SendStream, mut recv: quinn::RecvStream, answer: F)
where
    F: Fn(Vec<u8>) -> Bytes,
{
    if let Ok(request) = recv.read_to_end(1 << 16).await {
        let _ = send.write_all(&answer(request)).await;
        let _ = send.finish();
    }
}
