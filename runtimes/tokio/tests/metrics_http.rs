//! `/metrics` and `/health` over real HTTP on loopback: two nodes with a
//! `metrics_addr` do DHT traffic; the OpenMetrics text parses and carries
//! every family with the core's names and the traffic's numbers; health
//! turns from degraded to ok; bad requests get typed answers and nothing
//! hangs; idle connections held open cannot keep `/health` from answering,
//! and a slow-loris client is cut off at the header timeout (issue 13,
//! item 8), both counted in `metrics_http_dropped_connections_total`.

// Not every shared helper is used here.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use macula::id::{RecordKey, RecordKind};
use macula::metrics::{FAMILIES, Kind};
use macula_tokio::{HEADER_TIMEOUT, MAX_CONNECTIONS_PER_IP, MaculaConfig, MaculaNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use common::{LIMIT, find, join, realm};

/// A node of the test realm on loopback serving metrics at `metrics_addr`.
fn config(metrics_addr: &str) -> MaculaConfig {
    let mut config = MaculaConfig::new(realm(), "127.0.0.1:0".parse().unwrap());
    config.metrics_addr = Some(metrics_addr.parse().unwrap());
    config
}

/// A node serving metrics on a free loopback port.
async fn node_with_metrics() -> MaculaNode {
    MaculaNode::bind(config("127.0.0.1:0")).await.unwrap()
}

/// Sends `request` as is and reads the whole answer: status code and body.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    };
    let answer = timeout(LIMIT, exchange).await.expect("answered in time");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("content-length").then_some(value)
        })
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{head}");
    (status, body.to_string())
}

/// Sends `request` and reads until the server closes: the status it
/// answered with, or `None` when it closed (or reset) without answering.
async fn status_or_close(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A server that cut the request short may reset the rest of it.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = timeout(LIMIT, exchange).await.expect("closed in time");
    let head = String::from_utf8_lossy(&answer);
    head.split(' ').nth(1).and_then(|code| code.parse().ok())
}

/// The server's count of connections dropped unanswered for `reason`.
async fn dropped(addr: SocketAddr, reason: &str) -> f64 {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let (samples, _) = parse(&text);
    let labels = format!("reason=\"{reason}\"");
    value(&samples, "metrics_http_dropped_connections_total", &labels)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    exchange(addr, request.as_bytes()).await
}

/// Sample name → every (labels, value) under it.
type Samples = BTreeMap<String, Vec<(String, f64)>>;

/// OpenMetrics text as samples and family types (name → type), checking
/// the form of every line on the way: `# TYPE|HELP|UNIT|EOF` or
/// `name{labels} value`.
fn parse(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"));
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().unwrap().to_string();
                    types.insert(name, words.next().unwrap().to_string());
                }
                Some("HELP" | "UNIT" | "EOF") => {}
                other => panic!("unknown comment {other:?}: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("closed labels")),
            None => (series, ""),
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{line}"
        );
        samples
            .entry(name.to_string())
            .or_default()
            .push((labels.to_string(), value));
    }
    (samples, types)
}

fn value(samples: &Samples, name: &str, labels: &str) -> f64 {
    samples[name]
        .iter()
        .find(|(l, _)| l == labels)
        .unwrap_or_else(|| panic!("{name}{{{labels}}} missing"))
        .1
}

#[tokio::test]
async fn metrics_and_health_follow_the_traffic_over_http() {
    let seed = node_with_metrics().await;
    let node = node_with_metrics().await;
    let addr = node.metrics_addr().expect("serving metrics");
    assert_ne!(addr.port(), 0);

    // Alone, the node is degraded and says why.
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(r#"{"status":"degraded","reasons":["#),
        "{body}"
    );
    assert!(body.contains("no connected peers"), "{body}");
    assert!(body.contains("empty routing table"), "{body}");

    join(&node, seed.contact()).await;
    find(&node, seed.node_id()).await;
    let key = RecordKey::new(&realm(), RecordKind::Rpc, "metrics.http");
    let stored = timeout(LIMIT, node.store(key, Bytes::from_static(b"v"), LIMIT)).await;
    assert!(stored.unwrap().unwrap().success);
    let found = timeout(LIMIT, node.query(key, LIMIT)).await;
    assert_eq!(found.unwrap().unwrap().records.len(), 1);

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let (samples, types) = parse(&text);
    for family in FAMILIES {
        let (typed, sample) = match family.kind {
            Kind::Counter => (
                family.name.strip_suffix("_total").unwrap(),
                family.name.to_string(),
            ),
            Kind::Gauge => (family.name, family.name.to_string()),
            Kind::Histogram => (family.name, format!("{}_count", family.name)),
        };
        assert!(types.contains_key(typed), "no TYPE for {typed}");
        // The punch families list only the pairs of NAT types that punched:
        // none here, where no connection is relayed.
        let listed = !family.name.starts_with("nat_punch_");
        assert_eq!(
            samples.contains_key(&sample),
            listed,
            "sample {sample} in\n{text}"
        );
    }
    assert!(samples.keys().all(|name| !name.ends_with("_total_total")));
    assert!(value(&samples, "p2p_connections_total", r#"direction="outbound""#) >= 1.0);
    assert!(value(&samples, "p2p_connections_by_path", r#"path="direct""#) >= 1.0);
    assert_eq!(
        value(&samples, "p2p_connections_by_path", r#"path="relayed""#),
        0.0
    );
    assert!(
        value(
            &samples,
            "p2p_connection_pool_size",
            r#"direction="outbound""#
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "dht_store_operations_total",
            r#"result="success""#
        ) >= 1.0
    );
    assert_eq!(
        value(&samples, "dht_store_propagation_success_rate", ""),
        1.0
    );
    let lookups = r#"kind="find_node""#;
    assert!(value(&samples, "dht_query_latency_seconds_count", lookups) >= 1.0);
    let inf = r#"le="+Inf",kind="find_node""#;
    assert_eq!(
        value(&samples, "dht_query_latency_seconds_bucket", inf),
        value(&samples, "dht_query_latency_seconds_count", lookups)
    );
    assert_eq!(value(&samples, "rpc_calls_total", r#"outcome="ok""#), 0.0);

    // A client that accepts only text/plain (promtool's input) gets the
    // Prometheus text format 0.0.4: counter families by their `_total` name,
    // no units, no `# EOF`; the same samples.
    let request = "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: text/plain\r\n\r\n";
    let (status, text) = exchange(addr, request.as_bytes()).await;
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|l| l == "# TYPE rpc_calls_total counter"),
        "{text}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(
        text.contains("\nrpc_calls_total{outcome=\"ok\"} 0\n"),
        "{text}"
    );

    // The handle's snapshot says the same.
    let metrics = node.metrics().await.unwrap();
    assert!(metrics.connections.total() >= 1);
    assert_eq!(metrics.rpc_calls.total(), 0);

    let (status, body) = get(addr, "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"ok","reasons":[]}"#)
    );

    // A stopped node answers, but as stopped.
    node.shutdown().await;
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 503);
    assert!(body.contains("node stopped"), "{body}");
    assert_eq!(get(addr, "/metrics").await.0, 503);
    seed.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_typed_answers_and_nothing_hangs() {
    let node = node_with_metrics().await;
    let addr = node.metrics_addr().unwrap();
    assert_eq!(get(addr, "/nowhere").await.0, 404);
    let posted = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(posted.0, 405);
    assert_eq!(exchange(addr, b"garbage\r\n\r\n").await.0, 400);
    assert_eq!(exchange(addr, b"\x00\xff\r\n\r\n").await.0, 400);
    // A head that never ends is cut at the limit: 431, or a reset of the
    // rest of it.
    let huge = [
        b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
        &[b'A'; 64 * 1024],
    ]
    .concat();
    assert!(matches!(
        status_or_close(addr, &huge).await,
        Some(431) | None
    ));
    // One that never comes is closed once the header timeout passed.
    assert!(HEADER_TIMEOUT < LIMIT);
    assert_eq!(status_or_close(addr, b"GET /metr").await, None);
    assert!(dropped(addr, "timeout").await >= 1.0);
    // The server still serves.
    assert_eq!(get(addr, "/metrics").await.0, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn a_busy_metrics_port_fails_the_bind() {
    let first = node_with_metrics().await;
    let taken = first.metrics_addr().unwrap();
    let refused = MaculaNode::bind(config(&taken.to_string())).await;
    assert!(
        matches!(refused, Err(macula_tokio::BindError::Metrics { addr, .. }) if addr == taken),
        "{:?}",
        refused.err()
    );
    first.shutdown().await;
}

/// Holds `count` idle connections to `addr`, each dropped and reopened
/// every `every`, for `rounds` rounds.
async fn hold_idle(addr: SocketAddr, count: usize, every: std::time::Duration, rounds: usize) {
    for _ in 0..rounds {
        let mut held = Vec::new();
        for _ in 0..count {
            if let Ok(stream) = TcpStream::connect(addr).await {
                held.push(stream);
            }
        }
        sleep(every).await;
    }
}

#[tokio::test]
async fn idle_connections_held_open_cannot_keep_health_from_answering() {
    let node = node_with_metrics().await;
    let addr = node.metrics_addr().unwrap();
    // 16 idle connections from this IP (twice the per-IP cap), reopened
    // every 3 s, for longer than the asking below takes.
    const IDLE: usize = 16;
    const { assert!(IDLE > MAX_CONNECTIONS_PER_IP) };
    let mut attack = JoinSet::new();
    attack.spawn(hold_idle(addr, IDLE, std::time::Duration::from_secs(3), 4));
    sleep(std::time::Duration::from_millis(200)).await;
    let mut answered = 0;
    for _ in 0..5 {
        let (status, body) = get(addr, "/health").await;
        assert_eq!(status, 503, "alone, the node is degraded: {body}");
        answered += 1;
        sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(answered, 5);
    attack.abort_all();
    // Each answer took the place of an idle connection.
    assert!(dropped(addr, "evicted").await >= 5.0);
    node.shutdown().await;
}

#[tokio::test]
async fn a_slow_loris_is_cut_off_at_the_header_timeout() {
    let node = node_with_metrics().await;
    let addr = node.metrics_addr().unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: a-slow-client.example\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut sent = 0;
    let mut buf = [0u8; 256];
    let cut = async {
        for byte in request {
            if stream.write_all(&[*byte]).await.is_err() {
                return true;
            }
            sent += 1;
            // One byte a second; a read that ends (or fails) is the cut.
            match timeout(std::time::Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => panic!("answered a head that never arrived"),
                Err(_) => {}
            }
        }
        false
    };
    assert!(timeout(LIMIT, cut).await.unwrap(), "never cut off");
    assert!(sent < request.len(), "cut after {sent} bytes");
    assert!(dropped(addr, "timeout").await >= 1.0);
    // And the server still serves.
    assert_eq!(get(addr, "/health").await.0, 503);
    node.shutdown().await;
}
