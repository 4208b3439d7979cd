//! Plain-quinn floors of the stream workloads: publications as
//! length-prefixed messages on one stream, and one bulk request on one stream.

use std::net::SocketAddr;
use std::sync::Arc;

use super::common::{clock, quinn_connect, quinn_pair};
use super::window::Window;

/// `total` messages of `payload` bytes on one unidirectional stream, each
/// preceded by its length (u32, big-endian) and written on its own, at most
/// `window` ahead of what the receiver has read; messages/s from the first
/// write to the last read.
pub async fn quinn_publish(total: u64, payload: usize, window: u64) -> f64 {
    let (server, client) = quinn_pair();
    let addr: SocketAddr = server.local_addr().expect("a bound endpoint");
    let window = Arc::new(Window::new(window));
    let reader = window.clone();
    let receiving = tokio::spawn(async move {
        let incoming = server.accept().await.expect("a connection");
        let conn = incoming.await.expect("the quinn handshake");
        let mut recv = conn.accept_uni().await.expect("the message stream");
        let mut message = vec![0; payload];
        for _ in 0..total {
            let mut len = [0; 4];
            recv.read_exact(&mut len).await.expect("a length");
            let len = u32::from_be_bytes(len) as usize;
            assert_eq!(len, payload, "every message has the payload's length");
            recv.read_exact(&mut message).await.expect("a message");
            reader.read_one();
        }
        conn
    });
    let conn = quinn_connect(&client, addr).await;
    let mut send = conn.open_uni().await.expect("a stream");
    let start = clock();
    for sent in 0..total {
        window.room_for(sent).await;
        let mut message = Vec::with_capacity(4 + payload);
        message.extend_from_slice(&(payload as u32).to_be_bytes());
        message.resize(4 + payload, 0x5a);
        send.write_all(&message)
            .await
            .expect("a message is written");
    }
    let server_conn = receiving.await.expect("the receiver ends");
    let rate = total as f64 / start.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    server_conn.close(0u32.into(), b"done");
    rate
}

/// `bytes` bytes written on one bidirectional stream in chunks of 64 KiB,
/// read to the end by the server, which answers with one byte; MB/s
/// (10^6 bytes) from the first write to the answer.
pub async fn quinn_bulk(bytes: usize) -> f64 {
    const CHUNK: usize = 64 << 10;
    let (server, client) = quinn_pair();
    let addr: SocketAddr = server.local_addr().expect("a bound endpoint");
    let serving = tokio::spawn(async move {
        let incoming = server.accept().await.expect("a connection");
        let conn = incoming.await.expect("the quinn handshake");
        let (mut send, mut recv) = conn.accept_bi().await.expect("the bulk stream");
        let request = recv.read_to_end(bytes).await.expect("the whole request");
        send.write_all(&[u8::from(request.len() == bytes)])
            .await
            .expect("the answer is written");
        send.finish().expect("the answer is finished");
        conn.closed().await;
    });
    let conn = quinn_connect(&client, addr).await;
    let chunk = bytes::Bytes::from(vec![0x5a; CHUNK]);
    let start = clock();
    let (mut send, mut recv) = conn.open_bi().await.expect("a stream");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        send.write_chunk(chunk.slice(..n))
            .await
            .expect("a chunk is written");
        left -= n;
    }
    send.finish().expect("the request is finished");
    let answer = recv.read_to_end(1).await.expect("the answer");
    let rate = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
    assert_eq!(answer, [1], "the server read the whole request");
    conn.close(0u32.into(), b"done");
    let _ = serving.await;
    rate
}
