//! The pub/sub machine driven by arbitrary operation sequences —
//! subscriptions, publications, lookup answers, PUBLISH frames with any
//! epoch, sequence and topic, write completions, disconnects, direct
//! SUBSCRIBE/UNSUBSCRIBE and time — must never panic, must keep every
//! subscriber queue within its bound, and must deliver each publisher's
//! messages at most once between two of its disconnects.
//!
//! Each input byte picks an operation; the bytes after it are its arguments.

#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use macula::Child;
use macula::id::{NodeId, Realm, RecordKey};
use macula::pubsub::{Pattern, PubSub, PubSubConfig, PubSubEvent, PubSubOutput, Topic};
use macula::rpc::{DirectoryRequest, Found};
use macula::wire::{Publish, Subscribe, Unsubscribe};

/// Reads argument bytes, zero once the input runs out.
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
}

fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

const PATTERNS: [&str; 6] = ["a", "a.*", "a.#", "*.b", "#", "a..b"];
const TOPICS: [&str; 4] = ["a", "a.b", "c.b", "bad topic"];
const QUEUE: usize = 4;

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut ps = PubSub::new(PubSubConfig {
        queue_bound: QUEUE,
        send_window: 2,
        max_direct_subscriptions: 3,
        max_direct_per_peer: 2,
        ..PubSubConfig::new(Realm::new("io.fuzz").unwrap(), node(0), 100)
    });
    let mut lookups: Vec<RecordKey> = Vec::new();
    let mut sent: Vec<(NodeId, u64)> = Vec::new();
    let mut delivered: BTreeSet<(NodeId, u64)> = BTreeSet::new();
    let mut args = Args(data);
    while !args.0.is_empty() {
        let op = args.byte();
        let a = args.byte();
        let b = args.byte();
        let pattern = PATTERNS[usize::from(a) % PATTERNS.len()];
        let topic = TOPICS[usize::from(b) % TOPICS.len()];
        let peer = node(1 + a % 3);
        match op % 10 {
            0 => {
                if let Ok(p) = Pattern::new(pattern) {
                    let _ = ps.subscribe(now, p);
                }
            }
            1 => {
                if let Ok(p) = Pattern::new(pattern) {
                    ps.unsubscribe(now, &p);
                }
            }
            2 => {
                if let Ok(t) = Topic::new(topic) {
                    let _ = ps.publish(now, t, Bytes::new());
                }
            }
            3 if !lookups.is_empty() => {
                let key = lookups.remove(usize::from(a) % lookups.len());
                let found = (0..3u8)
                    .filter(|i| b >> i & 1 == 1)
                    .map(|i| Found {
                        provider: node(i + 1),
                        value: Bytes::from(PATTERNS[usize::from(a >> i) % PATTERNS.len()]),
                    })
                    .collect();
                ps.handle_lookup(now, key, found);
            }
            4 => {
                let (epoch, sequence) = (u64::from(a % 3), u64::from(b % 8));
                let message = Publish {
                    message_id: epoch * 8 + sequence,
                    epoch,
                    sequence,
                    topic: topic.into(),
                    payload: Bytes::new(),
                };
                ps.handle_publish(now, peer, message);
            }
            5 if !sent.is_empty() => {
                let (subscriber, epoch) = sent.remove(usize::from(a) % sent.len());
                ps.handle_written(now, subscriber, epoch);
            }
            6 if b & 1 == 0 => ps.handle_disconnected(now, peer),
            6 => ps.handle_unreachable(now, peer),
            7 => ps.handle_connected(now, peer),
            8 => {
                let request_id = u64::from(b);
                let pattern = pattern.to_string();
                if b & 1 == 0 {
                    ps.handle_subscribe(
                        now,
                        peer,
                        Subscribe {
                            request_id,
                            pattern,
                        },
                    );
                } else {
                    ps.handle_unsubscribe(
                        now,
                        peer,
                        Unsubscribe {
                            request_id,
                            pattern,
                        },
                    );
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(a) * 40);
                ps.handle_timeout(now);
            }
        }
        while let Some(output) = ps.poll_output() {
            match output {
                PubSubOutput::Directory(DirectoryRequest::Lookup { key }) => lookups.push(key),
                PubSubOutput::Send {
                    subscriber,
                    message,
                } => sent.push((subscriber, message.epoch)),
                PubSubOutput::Event(PubSubEvent::Message {
                    publisher,
                    message_id,
                    ..
                }) if publisher != node(0) => {
                    // Received frames carry message_id = epoch * 8 + sequence.
                    assert!(delivered.insert((publisher, message_id)), "delivered twice");
                }
                _ => {}
            }
        }
        if op % 10 == 6 {
            // The receiver forgot this publisher (after delivering what it
            // had buffered): its frames may come again in a new session.
            delivered.retain(|(publisher, _)| *publisher != peer);
        }
        for i in 1..4 {
            assert!(ps.queued_for(&node(i)) <= QUEUE);
        }
    }
});
