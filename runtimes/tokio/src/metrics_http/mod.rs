//! The HTTP/1.1 server (hyper) for `GET /metrics` (OpenMetrics text; the
//! Prometheus text format 0.0.4 to a client that accepts `text/plain` and
//! not OpenMetrics, such as `curl -H 'Accept: text/plain' ... | promtool
//! check metrics`) and `GET /health` (JSON, rules in [`macula::node::Health`]).
//!
//! One request per connection, then the connection closes. A client has
//! [`HEADER_TIMEOUT`] from connecting to send its whole request head (at
//! most [`MAX_REQUEST_HEAD`] bytes) and [`CONNECTION_TIMEOUT`] for the whole
//! exchange; [`slots`] caps the connections open at once, in all and per IP,
//! and lets a newcomer take the place of an idle one, so idle or slow
//! clients cannot keep `/health` from answering. Answers: 200, 400 (not an
//! HTTP/1.x request), 404 (another path), 405 (another method than GET),
//! 431 (a head over the limit), 503 (node stopped, or `/health` degraded).
//! Connections dropped unanswered are counted by reason in
//! `metrics_http_dropped_connections_total`. The server holds the node
//! weakly: it does not keep it running, and stops when the node's last
//! handle is dropped.

mod slots;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use macula::metrics::{Family, Series, Value};
use macula::node::{Health, NodeStats};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::clock;
use crate::exporter::{
    OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, openmetrics_text_with,
    to_prometheus_text,
};
use crate::task::Command;
use slots::{Dropped, HttpCounters, Slot, Slots};
pub use slots::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP};

/// Largest request head (request line and headers) read: hyper's smallest
/// read buffer.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take, from connecting, to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may last in all (head, answer, writing it).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node may take to hand over its state for an answer.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `metrics_http_dropped_connections_total`.
pub const METRICS_HTTP_DROPPED: Family = Family::counter(
    "metrics_http_dropped_connections_total",
    "Connections to the metrics server closed unanswered, by reason (refused: over a cap with no idle connection to replace; evicted: idle, replaced by a newer one; timeout: the head or the exchange overran its deadline)",
);

/// The running server; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves the node behind `commands`.
    pub(crate) async fn start(
        addr: SocketAddr,
        commands: mpsc::WeakSender<Command>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(listener, commands, stopped));
        Ok(Self { addr, _stop: stop })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve(
    listener: TcpListener,
    commands: mpsc::WeakSender<Command>,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Slots::default());
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Refused: dropping the stream closes it. An IPv6 host
                // counts by its /64 (it may hold all of it).
                let network = macula::scope::prefix(peer.ip(), 32, 64).network;
                let Some(slot) = slots.admit(network) else {
                    continue;
                };
                let commands = commands.clone();
                let id = slot.id();
                let task = tokio::spawn(async move {
                    let counters = slot.counters();
                    match timeout(CONNECTION_TIMEOUT, connection(stream, &slot, commands)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) if error.is_timeout() => counters.count(Dropped::TimedOut),
                        Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
                        Err(_) => counters.count(Dropped::TimedOut),
                    }
                });
                slots.set_abort(id, task.abort_handle());
            }
            Err(error) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(%error, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
}

/// The route of `method` and `path`, or the status that refuses it.
fn route(method: &Method, path: &str) -> Result<Route, StatusCode> {
    let route = match path {
        "/metrics" => Route::Metrics,
        "/health" => Route::Health,
        _ => return Err(StatusCode::NOT_FOUND),
    };
    if method != Method::GET {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    Ok(route)
}

/// Serves one connection: one request, one answer, close.
async fn connection(
    stream: TcpStream,
    slot: &Slot,
    commands: mpsc::WeakSender<Command>,
) -> Result<(), hyper::Error> {
    let service = service_fn(|request: Request<Incoming>| {
        slot.answering();
        let commands = commands.clone();
        async move {
            let answer = answer(&request, &commands, slot.counters()).await;
            Ok::<_, Infallible>(answer)
        }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `request`.
async fn answer(
    request: &Request<Incoming>,
    commands: &mpsc::WeakSender<Command>,
    counters: &HttpCounters,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match route(request.method(), request.uri().path()) {
        Ok(Route::Metrics) => match inspect(commands).await {
            Some(stats) => {
                let text = openmetrics_text_with(
                    &stats.metrics,
                    vec![(METRICS_HTTP_DROPPED, dropped(counters))],
                );
                if wants_prometheus_text(request.headers().get(ACCEPT)) {
                    let text = to_prometheus_text(&text);
                    (StatusCode::OK, PROMETHEUS_TEXT_CONTENT_TYPE, text)
                } else {
                    (StatusCode::OK, OPENMETRICS_CONTENT_TYPE, text)
                }
            }
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "node stopped\n".into(),
            ),
        },
        Ok(Route::Health) => {
            let health = inspect(commands)
                .await
                .map_or_else(Health::stopped, |stats| {
                    Health::assess(&stats, clock::now())
                });
            let status = if health.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "application/json", health.to_json())
        }
        Err(status) => (status, TEXT, format!("{status}\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET"));
    }
    response
}

/// The client asked for the Prometheus text format 0.0.4: its `Accept`
/// names `text/plain` and not OpenMetrics (Prometheus itself names both,
/// OpenMetrics first; no header or `*/*` gets OpenMetrics).
fn wants_prometheus_text(accept: Option<&HeaderValue>) -> bool {
    let accept = accept
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

/// The server's own family: connections dropped unanswered, by reason.
fn dropped(counters: &HttpCounters) -> Vec<Series<'static>> {
    Dropped::ALL
        .iter()
        .map(|&reason| Series {
            labels: reason.labels(),
            value: Value::Counter(counters.get(reason)),
        })
        .collect()
}

/// The node's state now; `None` when it no longer runs or does not answer
/// in time (its command queue may be full).
async fn inspect(commands: &mpsc::WeakSender<Command>) -> Option<NodeStats> {
    let commands = commands.upgrade()?;
    let ask = async move {
        let (reply, answer) = oneshot::channel();
        commands.send(Command::Inspect { reply }).await.ok()?;
        drop(commands);
        answer.await.ok()
    };
    timeout(INSPECT_TIMEOUT, ask).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_route_or_get_a_status() {
        let cases = [
            (Method::GET, "/metrics", Ok(Route::Metrics)),
            (Method::GET, "/health", Ok(Route::Health)),
            (
                Method::POST,
                "/metrics",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (Method::GET, "/other", Err(StatusCode::NOT_FOUND)),
            (Method::POST, "/other", Err(StatusCode::NOT_FOUND)),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn only_a_client_that_asks_for_text_plain_alone_gets_the_older_format() {
        let wants =
            |accept: &'static str| wants_prometheus_text(Some(&HeaderValue::from_static(accept)));
        assert!(wants("text/plain"));
        assert!(wants("text/plain; version=0.0.4"));
        assert!(!wants("*/*"));
        assert!(!wants("application/openmetrics-text; version=1.0.0"));
        // What Prometheus sends: OpenMetrics first.
        assert!(!wants(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ));
        assert!(!wants_prometheus_text(None));
    }
}
