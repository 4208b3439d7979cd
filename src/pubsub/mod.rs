//! Pub/sub semantics as pure machines the Node drives: topics and patterns,
//! subscriptions announced in the DHT, publications routed to matching
//! subscribers through bounded queues, and ordered, deduplicated delivery.
//!
//! The Node feeds [`PubSub`] the application's commands (`subscribe`,
//! `publish`), lookup results, PUBLISH frames that arrived, write
//! completions, connection changes and time, and carries out its
//! [`PubSubOutput`]s: DHT requests, PUBLISH frames to write on a
//! subscriber's publish stream, and events for the application.
//!
//! Decisions, in one place:
//! - `#` matches zero or more segments (`a.#` matches `a`); see [`Pattern`].
//! - A subscriber record lives under the pattern's longest literal prefix;
//!   its value is every pattern the node subscribes to under that prefix,
//!   one per line (a DHT key holds one value per provider).
//! - Slow subscribers: each has a queue of [`PubSubConfig::queue_bound`]
//!   messages; when it is full the **oldest** is dropped and counted
//!   ([`PubSubStats::dropped_slow`]). The publisher never waits.
//! - Local subscribers ([`Fanout`]): several subscribers of one pattern on
//!   a node share one subscription on the wire, made by the first and
//!   withdrawn when the last goes; each message is handed to every local
//!   subscriber whose pattern matches.
//! - Besides DHT records, a node may subscribe directly on a publisher it
//!   knows with SUBSCRIBE (until UNSUBSCRIBE or a disconnect).
//! - Receiving: a PUBLISH on a topic we do not subscribe to, or from a
//!   publisher [`PubSubConfig::publishers`] (allow-lists of node ids per
//!   topic pattern, and a callback: [`crate::access::AccessList`]) does not
//!   allow on it, is dropped at once and counted, never buffered. Anyone
//!   connected may otherwise publish to us.
//! - Epochs: each publisher-to-subscriber session (a first contact, or a
//!   return after a disconnect) takes a new, larger epoch and numbers its
//!   frames from 0; the receiver resets on a newer epoch. Sequence numbers
//!   far ahead (past the reorder window) or `u64::MAX` are refused
//!   ([`Received::OutOfWindow`]).

mod direct;
mod fanout;
mod machine;
mod outbox;
mod receiver;
mod record;
mod routes;
mod subscriptions;
mod types;

pub use crate::topic::{MAX_LEN, MAX_SEGMENTS, Pattern, Topic, TopicError};
pub use fanout::{Fanout, Removed, SubscriberId};
pub use machine::PubSub;
pub use receiver::{Received, Receiver, ReceiverConfig, ReceiverStats};
pub use record::{decode_subscriber_value, encode_subscriber_value};
pub use types::{
    PubSubConfig, PubSubError, PubSubEvent, PubSubOutput, PubSubStats, max_publish_payload,
};
