//! # macula: a sans-IO P2P service mesh
//!
//! Nodes find each other through a Kademlia DHT, call each other (RPC) and
//! publish to each other (pub/sub) over direct QUIC connections, get through
//! NATs by hole punching and fall back to a relay when they cannot.
//!
//! This crate is the protocol core and does no I/O: no sockets, no clocks, no
//! threads. Every state machine takes the current time and incoming datagrams
//! as inputs and answers with datagrams to send and events for the
//! application. Randomness comes from seeds given at construction, so the same
//! seed and the same inputs always give the same outputs. The drivers
//! `macula-tokio` and `macula-mio` run the machines over real UDP sockets;
//! the simulator (feature `sim`) runs many of them over a virtual network.
//!
//! ## The drive loop
//!
//! Every machine implements [`Machine`]. A driver loops:
//!
//! 1. feed one [`Input`] (a [`Datagram`], a [`Input::Timeout`], an address
//!    change) stamped with the current time;
//! 2. drain [`Machine::poll_output`] until it returns `None`: send each
//!    [`Transmit`] (with its TTL, if set; several datagrams in one GSO send
//!    when it has a segment size, or one by one: [`Transmit::split`]), hand
//!    each event to the application;
//! 3. read [`Machine::poll_timeout`] and wait for the first of that deadline
//!    or the next datagram, then go back to 1.
//!
//! A parent machine drains its children inside its own `handle_input`; only
//! the outermost machine is driven from outside.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use macula::{Datagram, Input, Machine, Output, Transmit};
//!
//! /// Answers each datagram 10 ms after it arrived and reports it.
//! struct DelayedEcho {
//!     pending: VecDeque<(Instant, Datagram)>,
//!     ready: VecDeque<Output<usize>>,
//! }
//!
//! impl Machine for DelayedEcho {
//!     type Event = usize;
//!
//!     fn handle_input(&mut self, now: Instant, input: Input) {
//!         if let Input::Datagram(d) = input {
//!             self.pending.push_back((now + Duration::from_millis(10), d));
//!         }
//!         while self.pending.front().is_some_and(|(due, _)| *due <= now) {
//!             let (_, d) = self.pending.pop_front().unwrap();
//!             self.ready.push_back(Output::Event(d.payload.len()));
//!             self.ready.push_back(Output::Transmit(Transmit {
//!                 source: Some(d.local),
//!                 destination: d.remote,
//!                 payload: d.payload,
//!                 segment_size: None,
//!                 ttl: None,
//!             }));
//!         }
//!     }
//!
//!     fn poll_output(&mut self) -> Option<Output<usize>> {
//!         self.ready.pop_front()
//!     }
//!
//!     fn poll_timeout(&self) -> Option<Instant> {
//!         self.pending.front().map(|(due, _)| *due)
//!     }
//! }
//!
//! let mut echo = DelayedEcho { pending: VecDeque::new(), ready: VecDeque::new() };
//! let local: SocketAddr = "127.0.0.1:4433".parse().unwrap();
//! let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
//! // A real driver reads these from its clock and socket.
//! let start = Instant::now();
//! let datagram = Datagram { local, remote, payload: Bytes::from_static(b"hello") };
//!
//! echo.handle_input(start, Input::Datagram(datagram));
//! let mut sent = Vec::new();
//! let deadline = echo.drain(|output| {
//!     if let Output::Transmit(t) = output { sent.push(t) }
//! });
//! assert!(sent.is_empty());
//! assert_eq!(deadline, Some(start + Duration::from_millis(10)));
//!
//! // The deadline came: deliver the timeout and drain again.
//! echo.handle_input(deadline.unwrap(), Input::Timeout);
//! let deadline = echo.drain(|output| match output {
//!     Output::Transmit(t) => sent.push(t),
//!     Output::Event(len) => assert_eq!(len, 5),
//!     Output::Sockets(_) => unreachable!("the echo keeps to one socket"),
//! });
//! assert_eq!(sent[0].destination, remote);
//! assert_eq!(deadline, None);
//! ```
//!
//! ## Modules
//!
//! - [`demux`]: splits the one socket's datagrams into STUN and QUIC by first byte.
//! - [`nat`]: STUN codec, responder and client transactions; NAT behaviour discovery.
//! - [`path`]: stable virtual addresses for quinn-proto, mapped to real paths
//!   (a UDP address or a relay circuit).
//! - [`relay`]: relay limits, counters and circuit frames (the Node serves and
//!   uses relays).
//! - [`id`]: identity keys, node ids, XOR distance, realms, record keys.
//! - [`record`]: signed DHT records.
//! - [`exchange`]: requests over leased streams, shared by DHT requests and
//!   RPC calls (send or queue, match the answer, release, fail).
//! - [`directory`]: the DHT as RPC and pub/sub see it: lookups cached with a
//!   TTL and announcements retried with backoff, asked of the Node as requests.
//! - [`scope`]: which addresses a stranger may make us talk to.
//! - [`secret`]: the node's 256-bit secret (drawn by the driver) and the keys
//!   derived from it.
//! - [`topic`]: topics and patterns (validation, matching, DHT prefixes); RPC
//!   procedure names follow the same rules.
//! - [`access`]: who may call which procedure and publish on which topic
//!   (allow-lists of node ids per pattern, and a callback).
//! - [`rpc`]: RPC semantics: providers, calls, failover, cancellation, handlers.
//! - [`pubsub`]: pub/sub semantics: topics, patterns, subscriptions, ordered
//!   delivery with bounded per-subscriber queues.
//! - [`quic`]: quinn-proto configuration keyed by the node's secret, with agreeing timers.
//! - [`tls`]: rustls configurations: identity certificates, peer verification, pins.
//! - [`wire`]: the frame codec, every message, limits and per-stream
//!   reassembly (spec: `docs/PROTOCOL.md`).
//! - [`dht`]: the Kademlia DHT: routing table, lookups, request correlation,
//!   record store and the operations built on them.
//! - [`metrics`]: what a node measured (counters, gauges, histograms), plain data.
//! - [`node`]: the Node: every machine behind one `Machine`, real QUIC with mutual TLS.
//! - [`pool`]: the connection pool (LRU, idle TTL, pinning, reconnect backoff).
//! - `sim` (feature `sim`): the deterministic network simulator with NAT models.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
mod backoff;
pub mod collections;
mod connection;
mod contract;
pub mod demux;
pub mod dht;
pub mod directory;
pub mod exchange;
pub mod id;
pub mod limiter;
pub mod messaging;
pub mod metrics;
pub mod nat;
pub mod node;
pub mod path;
pub mod peer_record;
pub mod pool;
pub mod pubsub;
pub mod quic;
pub mod record;
mod record_keys;
pub mod relay;
pub mod rpc;
pub mod scope;
pub mod secret;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tls;
pub mod topic;
pub mod wire;

pub use contract::{Child, Datagram, Input, Machine, Output, OutputQueue, SocketRequest, Transmit};

/// An arbitrary base instant for unit tests, which only ever add to it (the
/// core never reads a clock; its tests take this one reading).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
