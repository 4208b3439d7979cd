//! Drives the connection pool with arbitrary configurations and operation
//! sequences, including reports about stale, closed and never-seen
//! connections, and checks after every step that its bookkeeping is
//! consistent, that each acquire is answered at most once (never after a
//! cancel), that no peer ever has two connects in flight, and that
//! `handle_timeout` leaves no deadline at or before `now` (no busy loop).

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use macula::Child;
use macula::id::NodeId;
use macula::pool::{Acquired, Action, ConnId, Lease, Pool, PoolConfig, WaitId};

const PEERS: u8 = 8;
const LOCAL: u8 = 3;

#[derive(Arbitrary, Debug)]
enum Op {
    Acquire { peer: u8, port: u8 },
    Release { index: u8 },
    Cancel { index: u8 },
    Connected { index: u8 },
    ConnectFailed { index: u8 },
    Closed { index: u8 },
    Inbound { peer: u8, port: u8 },
    Advance { ms: u16 },
    Timeout { ms: u16 },
}

#[derive(Arbitrary, Debug)]
struct Run {
    caps: [u8; 2],
    attempts: u8,
    waiters: u8,
    queued: u8,
    seed: u64,
    ops: Vec<Op>,
}

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n % PEERS; 32])
}

fn addr(n: u8, port: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n % PEERS], u16::from(port)))
}

/// One base instant for the whole process (the target adds offsets to it).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)]
    *BASE.get_or_init(Instant::now)
}

fn nth<T: Copy>(items: impl ExactSizeIterator<Item = T>, index: u8) -> Option<T> {
    let len = items.len();
    let mut items = items;
    (len > 0)
        .then(|| items.nth(usize::from(index) % len))
        .flatten()
}

fuzz_target!(|run: Run| {
    let config = PoolConfig {
        max_outbound: usize::from(run.caps[0] % 6) + 1,
        max_inbound: usize::from(run.caps[1] % 6) + 1,
        idle_ttl: Duration::from_millis(500),
        wait_timeout: Duration::from_millis(200),
        max_connect_attempts: u32::from(run.attempts % 4) + 1,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        max_waiters_per_peer: usize::from(run.waiters % 4) + 1,
        max_queued_peers: usize::from(run.queued % 4) + 1,
        seed: run.seed,
        ..PoolConfig::new(id(LOCAL))
    };
    let mut pool = Pool::new(config).expect("valid config");
    let mut now = base();
    let mut held: Vec<Lease> = Vec::new();
    let mut waiting: BTreeMap<WaitId, NodeId> = BTreeMap::new();
    let mut answered: BTreeSet<WaitId> = BTreeSet::new();
    // Every connection ever named, with its peer; and the dials in flight.
    let mut conns: BTreeMap<ConnId, NodeId> = BTreeMap::new();
    let mut dialing: BTreeMap<NodeId, ConnId> = BTreeMap::new();
    for op in run.ops {
        let pick = |index| nth(conns.iter().map(|(c, p)| (*c, *p)), index);
        let timed_out = matches!(op, Op::Timeout { .. });
        match op {
            Op::Acquire { peer, port } => match pool.acquire(now, id(peer), addr(peer, port)) {
                Ok(Acquired::Ready(lease)) => held.push(lease),
                Ok(Acquired::Waiting(wait)) => {
                    assert!(waiting.insert(wait, id(peer)).is_none(), "wait id reused");
                }
                Err(_) => {}
            },
            Op::Release { index } if !held.is_empty() => {
                let lease = held.swap_remove(usize::from(index) % held.len());
                pool.release(now, lease);
            }
            Op::Cancel { index } => {
                if let Some(wait) = nth(waiting.keys().copied(), index) {
                    assert!(pool.cancel(now, wait), "a pending wait must cancel");
                    waiting.remove(&wait);
                    answered.insert(wait);
                }
            }
            Op::Connected { index } => {
                if let Some((conn, peer)) = pick(index) {
                    dialing.retain(|_, c| *c != conn);
                    pool.handle_connected(now, peer, conn);
                }
            }
            Op::ConnectFailed { index } => {
                if let Some((conn, peer)) = pick(index) {
                    dialing.retain(|_, c| *c != conn);
                    pool.handle_connect_failed(now, peer, conn);
                }
            }
            Op::Closed { index } => {
                if let Some((conn, peer)) = pick(index) {
                    dialing.retain(|_, c| *c != conn);
                    pool.handle_closed(now, peer, conn);
                }
            }
            Op::Inbound { peer, port } => {
                let conn = pool.handle_inbound(now, id(peer), addr(peer, port));
                assert!(conns.insert(conn, id(peer)).is_none(), "conn id reused");
            }
            Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Op::Timeout { ms } => {
                now += Duration::from_millis(u64::from(ms));
                pool.handle_timeout(now);
            }
            Op::Release { .. } => {}
        }
        while let Some(action) = pool.poll_output() {
            match action {
                Action::Connect { peer, conn, .. } => {
                    assert!(conns.insert(conn, peer).is_none(), "conn id reused");
                    assert!(
                        dialing.insert(peer, conn).is_none(),
                        "two connects to {peer}"
                    );
                }
                Action::Close { conn, .. } => dialing.retain(|_, c| *c != conn),
                Action::Ready { wait, peer, lease } => {
                    assert_eq!(waiting.remove(&wait), Some(peer), "unexpected answer");
                    assert!(answered.insert(wait));
                    held.push(lease);
                }
                Action::Failed { wait, .. } => {
                    assert!(waiting.remove(&wait).is_some(), "unexpected failure");
                    assert!(answered.insert(wait));
                }
            }
        }
        pool.check_consistency().expect("consistent");
        if timed_out {
            let next = pool.poll_timeout();
            assert!(
                next.is_none_or(|t| t > now),
                "handle_timeout left a deadline due"
            );
        }
    }
});
