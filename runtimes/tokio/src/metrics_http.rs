//! A small HTTP/1.1 server for `GET /metrics` (OpenMetrics text) and
//! `GET /health` (JSON, rules in [`crate::health`]).
//!
//! One request per connection, then the connection closes. Every read is
//! bounded: a request head of at most [`MAX_REQUEST_HEAD`] bytes within
//! [`READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] served at once (further
//! ones wait in the listen backlog). Answers: 200, 400 (not an HTTP/1.x
//! request line, or a head over the limit), 404 (another path), 405 (another
//! method than GET), 408 (the head did not come in time), 503 (node stopped,
//! or `/health` degraded). The server holds the node weakly: it does not
//! keep it running, and stops when the node's last handle is dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::timeout;

use crate::exporter::{OPENMETRICS_CONTENT_TYPE, openmetrics_text};
use crate::handle::NodeStats;
use crate::health::Health;
use crate::task::Command;

/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing an answer may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// After answering, what is still read (and dropped) of a request that
/// sent more than its head, so closing does not reset the answer away.
const DRAIN_LIMIT: usize = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = &mut stopped => return,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { return };
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let commands = commands.clone();
                tokio::spawn(async move {
                    answer(stream, commands).await;
                    drop(slot);
                });
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

/// An HTTP status this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Reads the request head: up to the blank line, at most
/// [`MAX_REQUEST_HEAD`] bytes. `None` when the client left without sending
/// anything.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Result<Vec<u8>, Status>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok((!head.is_empty()).then_some(Err(Status::BadRequest)));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Some(Ok(head)));
        }
        if head.len() >= MAX_REQUEST_HEAD {
            return Ok(Some(Err(Status::BadRequest)));
        }
    }
}

/// Where the blank line ending the head is (CRLF or bare LF line ends).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// Reads the request line: `GET /path HTTP/1.x`.
fn route(head: &[u8]) -> Result<Route, Status> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| Status::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(Status::BadRequest);
    }
    let path = target.split('?').next().unwrap_or(target);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/health" => Route::Health,
        _ => return Err(Status::NotFound),
    };
    if method != "GET" {
        return Err(Status::MethodNotAllowed);
    }
    Ok(route)
}

/// Serves one connection: one request, one answer, close.
async fn answer(mut stream: TcpStream, commands: mpsc::WeakSender<Command>) {
    let request = match timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Err(Status::RequestTimeout),
        Ok(Err(_)) | Ok(Ok(None)) => return,
        Ok(Ok(Some(head))) => head.and_then(|head| route(&head)),
    };
    let (status, content_type, body) = match request {
        Ok(Route::Metrics) => match inspect(&commands).await {
            Some(stats) => (
                Status::Ok,
                OPENMETRICS_CONTENT_TYPE,
                openmetrics_text(&stats.metrics),
            ),
            None => (Status::Unavailable, TEXT, "node stopped\n".into()),
        },
        Ok(Route::Health) => {
            let health = inspect(&commands)
                .await
                .map_or_else(Health::stopped, |stats| Health::of(&stats));
            let status = if health.is_ok() {
                Status::Ok
            } else {
                Status::Unavailable
            };
            (status, "application/json", health.to_json())
        }
        Err(status) => (status, TEXT, format!("{}\n", status.line())),
    };
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    );
    let written = timeout(WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let _ = timeout(DRAIN_TIME, drain(&mut stream)).await;
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Reads and drops what the client still sends, up to [`DRAIN_LIMIT`].
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// The node's state now; `None` when it no longer runs.
async fn inspect(commands: &mpsc::WeakSender<Command>) -> Option<NodeStats> {
    let commands = commands.upgrade()?;
    let (reply, answer) = oneshot::channel();
    commands.send(Command::Inspect { reply }).await.ok()?;
    drop(commands);
    timeout(READ_TIMEOUT, answer).await.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_route_or_get_a_typed_status() {
        let cases: [(&[u8], Result<Route, Status>); 11] = [
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Ok(Route::Metrics)),
            (b"GET /health?verbose HTTP/1.0", Ok(Route::Health)),
            (b"GET /metrics HTTP/1.1\n", Ok(Route::Metrics)),
            (b"POST /metrics HTTP/1.1", Err(Status::MethodNotAllowed)),
            (b"GET /other HTTP/1.1", Err(Status::NotFound)),
            (b"GET /metrics HTTP/2", Err(Status::BadRequest)),
            (b"GET /metrics", Err(Status::BadRequest)),
            (b"GET  /metrics HTTP/1.1", Err(Status::BadRequest)),
            (b"get /metrics HTTP/1.1", Err(Status::BadRequest)),
            (b"\xff\xfe garbage", Err(Status::BadRequest)),
            (b"", Err(Status::BadRequest)),
        ];
        for (head, expected) in cases {
            assert_eq!(route(head), expected, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
