//! # macula-tokio: a macula node on a tokio UDP socket
//!
//! The core crate's machines do no I/O. This crate runs them: one UDP socket
//! on [`macula_udp`], the base it shares with macula-mio (`quinn-udp`:
//! batched receives, GRO and GSO, the destination address of each packet;
//! dual-stack when bound to `[::]`), one timer reset only when
//! the machine's deadline changes, and a bounded amount of work per wake-up.
//!
//! - [`MaculaNode`] runs a [`macula::node::Node`] in its own task behind a
//!   cloneable handle: `bootstrap`, `find_node`, `query` and `store` are
//!   async and resolve when their DHT operation finishes; [`Events`] is a
//!   stream of everything the node reports; `stats` and `health` read the
//!   node's state and the core's health rules.
//! - Messaging on the same handle: [`MaculaNode::register`] serves a
//!   procedure with an async handler (a [`Registration`] guard),
//!   [`MaculaNode::call`] calls one (typed [`CallError`]; dropping the
//!   future cancels the call), [`MaculaNode::subscribe`] gives a
//!   [`Subscription`] of publications matching a pattern and
//!   [`MaculaNode::publish`] publishes. See the [`rpc`] and [`pubsub`]
//!   modules for the bounds and policies. The policies themselves (a
//!   procedure's concurrency limit, one registration per procedure,
//!   subscribers of one pattern sharing one subscription) are the core
//!   node's, so an own-loop or `macula-mio` user gets the same; this crate
//!   adds tasks, channels and guards.
//! - [`Driver`] is the loop itself, for any [`macula::Machine`]: use it to
//!   drive a machine of your own on a socket.
//!
//! The driver reads the clocks (monotonic time at every input, wall-clock
//! time once at start) and the OS random source (a node's identity and its
//! 256-bit secret, unless given; see [`random`]); nothing in the core does.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use macula::id::{Realm, RecordKey, RecordKind};
//! use macula_tokio::{MaculaConfig, MaculaNode};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let realm = Realm::new("io.macula.example")?;
//! let seed = MaculaNode::bind(MaculaConfig::new(realm.clone(), "127.0.0.1:0".parse()?)).await?;
//! let node = MaculaNode::bind(MaculaConfig::new(realm.clone(), "127.0.0.1:0".parse()?)).await?;
//!
//! node.bootstrap(vec![seed.contact()]).await?;
//! let found = node.find_node(seed.node_id()).await?;
//! assert!(found.closest.iter().any(|c| c.id == seed.node_id()));
//!
//! let key = RecordKey::new(&realm, RecordKind::Rpc, "echo");
//! let receipt = node.store(key, Bytes::from_static(b"v1"), Duration::from_secs(5)).await?;
//! println!("stored on {} nodes", receipt.acked.len());
//! let answer = seed.query(key, Duration::from_secs(5)).await?;
//! println!("{} records", answer.records.len());
//!
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Modules
//!
//! - `socket`: the one UDP socket: a [`macula_udp::UdpBase`] with tokio's
//!   readiness.
//! - `driver`: the drive loop of one machine ([`Driver`]).
//! - `task` and `handle`: the node task and its [`MaculaNode`] handle.
//! - [`rpc`] and [`pubsub`]: the messaging API; `routes`: the task's side of
//!   it (orders, notices, event routing).
//! - `config`, `error`, `events`, `counters`: what those take and give.
//! - `exporter`, `metrics_http`: the node's metrics in OpenMetrics text and
//!   the HTTP server for them and the node's health (`metrics_addr`). The
//!   health rules ([`Health`]) and [`NodeStats`] are the core's
//!   (`macula::node`), re-exported here.
//! - `clock`: the only place the crate reads time.
//! - [`random`]: the only place it draws randomness (re-exported from
//!   [`macula_udp::random`]).
//! - `upnp` (feature `upnp`, off by default): port mapping on UPnP-IGD
//!   gateways through `igd-next`, handed to the node with
//!   `Node::set_mapped_address` (PCP and NAT-PMP are the core's own,
//!   `NodeConfig::port_mapping`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod config;
mod counters;
mod driver;
mod error;
mod events;
mod exporter;
mod extra;
mod handle;
mod metrics_http;
pub mod pubsub;
pub use macula_udp::random;
mod routes;
pub mod rpc;
mod socket;
mod task;
#[cfg(feature = "upnp")]
pub mod upnp;

pub use config::MaculaConfig;
pub use counters::DriverCounters;
pub use driver::{DEFAULT_DATAGRAMS_PER_TURN, Driver};
pub use error::{BindError, CommandError};
pub use events::Events;
pub use exporter::{OPENMETRICS_CONTENT_TYPE, openmetrics_text};
pub use handle::{FoundNodes, FoundValues, MaculaNode, StoreReceipt};
pub use macula::node::{
    ERROR_WINDOW, Health, HealthReason as Reason, MIN_STORE_SUCCESS_RATE, NodeStats,
};
pub use metrics_http::{
    CONNECTION_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, MAX_REQUEST_HEAD,
    METRICS_HTTP_DROPPED,
};
pub use pubsub::{
    DEFAULT_SUBSCRIPTION_CAPACITY, Publication, PublishError, SubscribeError, Subscription,
};
pub use rpc::{
    CallError, CallOptions, DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_CONCURRENT, HandlerError,
    HandlerFuture, ProcedureOptions, RegisterError, Registration, Request,
};
