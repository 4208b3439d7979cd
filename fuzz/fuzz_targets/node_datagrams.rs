//! Arbitrary datagrams into a Node: whatever arrives, from whoever, the node
//! never panics and keeps answering the contract (drain, then a deadline).
//!
//! Input layout: a sequence of records `[len: u8][sender: u8][len bytes]`;
//! the sender byte picks one of 4 remote addresses, so fuzzed packets can
//! continue a "conversation" the node started with an earlier one.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use macula::id::{Identity, Realm};
use macula::node::{Node, NodeConfig};
use macula::secret::Secret;
use macula::{Datagram, Input, Machine};

/// One base instant for every run (the core never reads a clock).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)]
    *EPOCH.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    let start = epoch();
    let local: SocketAddr = "198.51.100.1:4433".parse().unwrap();
    let mut config = NodeConfig::new(Realm::new("io.macula.fuzz").unwrap());
    config.listen_addrs = vec![local];
    let mut node = Node::new(config, Identity::from_seed([1; 32]), Secret::deterministic(1), start, 1_795_478_400_000).unwrap();
    let mut now = start;
    let mut rest = data;
    while let [len, sender, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let remote = SocketAddr::from(([203, 0, 113, 1 + sender % 4], 5000));
        now += Duration::from_millis(u64::from(*sender));
        let datagram = Datagram { local, remote, payload: Bytes::copy_from_slice(payload) };
        node.handle_input(now, Input::Datagram(datagram));
        while node.poll_output().is_some() {}
        if let Some(deadline) = node.poll_timeout() {
            assert!(deadline >= start);
            if deadline <= now {
                node.handle_input(now, Input::Timeout);
                while node.poll_output().is_some() {}
            }
        }
    }
    node.handle_input(now + Duration::from_secs(120), Input::Timeout);
    while node.poll_output().is_some() {}
});
