//! Model-based test of the connection pool.
//!
//! Random sequences of acquire, release, cancel, connect outcomes, losses,
//! inbound connections and time steps drive the real [`Pool`] and a naive
//! reference model side by side (linear scans, no intrusive lists, no slab).
//! After every step the actions must match the model's (as multisets: the
//! order of same-instant deadlines is an implementation detail), every peer's
//! state, the sizes and the next deadline must agree, and
//! [`Pool::check_consistency`] must pass (caps hold, pinned entries are never
//! idle, one entry, connect and connection per peer, timers consistent).
//! The model learns what is the pool's to choose: fresh connection ids
//! (checked to be fresh) and jittered backoff ends (checked to lie in their
//! window).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::Child;
use macula::id::NodeId;
use macula::pool::{
    Acquired, Action, CloseReason, ConnId, Direction, Lease, PeerState, Pool, PoolConfig,
    PoolError, WaitId,
};
use proptest::prelude::*;

const LOCAL: u8 = 50;
/// Peers below and above our id, so tie-breaks go both ways.
const PEERS: [u8; 6] = [10, 20, 30, 60, 70, 80];

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

fn addr(n: u8, variant: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, variant, n], 4433))
}

fn config() -> PoolConfig {
    PoolConfig {
        max_outbound: 3,
        max_inbound: 2,
        idle_ttl: Duration::from_millis(1000),
        wait_timeout: Duration::from_millis(300),
        max_connect_attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(25),
        max_waiters_per_peer: 2,
        max_queued_peers: 2,
        seed: 9,
        ..PoolConfig::new(id(LOCAL))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire { peer: u8, addr: u8 },
    Release(usize),
    Cancel(usize),
    Connected(u8),
    Failed(u8),
    Closed(u8),
    CloseDraining(usize),
    CloseStandby(usize),
    Inbound { peer: u8, addr: u8 },
    Advance(u64),
    Timeout(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let peer = prop::sample::select(PEERS.to_vec());
    prop_oneof![
        6 => (peer.clone(), 0..2u8).prop_map(|(peer, addr)| Op::Acquire { peer, addr }),
        1 => Just(Op::Acquire { peer: LOCAL, addr: 0 }),
        5 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => peer.clone().prop_map(Op::Connected),
        2 => peer.clone().prop_map(Op::Failed),
        2 => peer.clone().prop_map(Op::Closed),
        1 => any::<usize>().prop_map(Op::CloseDraining),
        1 => any::<usize>().prop_map(Op::CloseStandby),
        2 => (peer, 0..2u8).prop_map(|(peer, addr)| Op::Inbound { peer, addr }),
        2 => (0..400u64).prop_map(Op::Advance),
        3 => prop_oneof![0..50u64, 0..1500u64].prop_map(Op::Timeout),
    ]
}

/// An action with the lease's private slot left out.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Connect {
        peer: NodeId,
        addr: SocketAddr,
    },
    Close {
        peer: NodeId,
        conn: ConnId,
        reason: CloseReason,
    },
    Ready {
        wait: WaitId,
        peer: NodeId,
        conn: ConnId,
    },
    Failed {
        wait: WaitId,
        error: PoolError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MState {
    Queued,
    /// `conn` is learned from the pool's `Connect`.
    Connecting {
        conn: Option<ConnId>,
        attempt: u32,
    },
    /// `until` is learned from the pool (the jitter is the pool's).
    BackingOff {
        until: Option<Instant>,
        failures: u32,
    },
    Ready {
        conn: ConnId,
        dir: Direction,
        leases: u32,
        idle_since: Instant,
        idle_seq: u64,
        /// When it became ready: a peer's dial after a dial race's length
        /// means the peer lost it.
        ready_at: Instant,
    },
}

#[derive(Clone, Debug)]
struct MEntry {
    state: MState,
    addr: SocketAddr,
    waiters: Vec<WaitId>,
}

/// The reference: the pool's rules written as plainly as possible.
struct Model {
    cfg: PoolConfig,
    now: Instant,
    entries: BTreeMap<NodeId, MEntry>,
    queue: VecDeque<NodeId>,
    /// Waiting acquires: peer and start time.
    waiters: BTreeMap<WaitId, (NodeId, Instant)>,
    draining: BTreeMap<ConnId, (NodeId, u32)>,
    /// The peer's losing dial, kept until the peer closes it.
    standby: BTreeMap<NodeId, ConnId>,
    expect: Vec<Seen>,
    seq: u64,
    max_conn: Option<ConnId>,
}

impl Model {
    fn count(&self, dir: Direction) -> usize {
        self.entries
            .values()
            .filter(|e| match e.state {
                MState::Queued => false,
                MState::Ready { dir: d, .. } => d == dir,
                _ => dir == Direction::Outbound,
            })
            .count()
    }

    fn cap(&self, dir: Direction) -> usize {
        match dir {
            Direction::Outbound => self.cfg.max_outbound,
            Direction::Inbound => self.cfg.max_inbound,
        }
    }

    /// The least recently released idle entry of `dir`.
    fn lru(&self, dir: Direction) -> Option<NodeId> {
        self.entries
            .iter()
            .filter_map(|(p, e)| match e.state {
                MState::Ready {
                    dir: d,
                    leases: 0,
                    idle_seq,
                    ..
                } if d == dir => Some((idle_seq, *p)),
                _ => None,
            })
            .min()
            .map(|(_, p)| p)
    }

    fn room(&self, dir: Direction) -> bool {
        self.count(dir) < self.cap(dir) || self.lru(dir).is_some()
    }

    /// Evicts if at the cap; false if every slot is pinned.
    fn claim(&mut self, dir: Direction) -> bool {
        if self.count(dir) < self.cap(dir) {
            return true;
        }
        let Some(victim) = self.lru(dir) else {
            return false;
        };
        self.drop_ready(victim, CloseReason::Capacity);
        true
    }

    fn drop_ready(&mut self, peer: NodeId, reason: CloseReason) {
        let entry = self.entries.remove(&peer).expect("victim");
        let MState::Ready { conn, leases, .. } = entry.state else {
            panic!("not ready")
        };
        assert_eq!(leases, 0, "a pinned entry must never be evicted");
        self.expect.push(Seen::Close { peer, conn, reason });
    }

    fn idle(&mut self) -> (Instant, u64) {
        self.seq += 1;
        (self.now, self.seq)
    }

    fn connect(&mut self, peer: NodeId, attempt: u32) {
        let entry = self.entries.get_mut(&peer).expect("entry");
        entry.state = MState::Connecting {
            conn: None,
            attempt,
        };
        self.expect.push(Seen::Connect {
            peer,
            addr: entry.addr,
        });
    }

    fn admit(&mut self) {
        while let Some(&peer) = self.queue.front() {
            if !self.claim(Direction::Outbound) {
                break;
            }
            self.queue.pop_front();
            self.connect(peer, 1);
        }
    }

    fn add_waiter(&mut self, peer: NodeId, wait: WaitId) {
        self.entries.get_mut(&peer).unwrap().waiters.push(wait);
        self.waiters.insert(wait, (peer, self.now));
    }

    /// What `acquire` must return (`None`: wait, with the id the pool picks).
    fn acquire(&mut self, peer: NodeId, addr: SocketAddr) -> Result<Option<ConnId>, PoolError> {
        if let Some(entry) = self.entries.get_mut(&peer) {
            if let MState::Ready { conn, leases, .. } = &mut entry.state {
                *leases += 1;
                return Ok(Some(*conn));
            }
            if entry.waiters.len() >= self.cfg.max_waiters_per_peer {
                return Err(PoolError::WaitQueueFull {
                    peer,
                    limit: self.cfg.max_waiters_per_peer,
                });
            }
            entry.addr = addr;
            return Ok(None);
        }
        if peer == self.cfg.local {
            return Err(PoolError::SelfDial { peer });
        }
        let queued = !self.room(Direction::Outbound);
        if queued && self.queue.len() >= self.cfg.max_queued_peers {
            return Err(PoolError::SlotQueueFull {
                peer,
                limit: self.cfg.max_queued_peers,
            });
        }
        let state = MState::Queued;
        self.entries.insert(
            peer,
            MEntry {
                state,
                addr,
                waiters: Vec::new(),
            },
        );
        if queued {
            self.queue.push_back(peer);
        } else {
            assert!(self.claim(Direction::Outbound));
            self.connect(peer, 1);
        }
        Ok(None)
    }

    fn release(&mut self, peer: NodeId, conn: ConnId) {
        let (since, seq) = self.idle();
        if let Some(MEntry {
            state:
                MState::Ready {
                    conn: c,
                    leases,
                    idle_since,
                    idle_seq,
                    ..
                },
            ..
        }) = self.entries.get_mut(&peer)
        {
            if *c == conn {
                *leases -= 1;
                if *leases == 0 {
                    (*idle_since, *idle_seq) = (since, seq);
                    self.admit();
                }
                return;
            }
        }
        if let Some((p, leases)) = self.draining.get_mut(&conn) {
            *leases -= 1;
            if *leases == 0 {
                let p = *p;
                self.draining.remove(&conn);
                self.expect.push(Seen::Close {
                    peer: p,
                    conn,
                    reason: CloseReason::Duplicate,
                });
            }
        }
    }

    fn remove_waiter(&mut self, wait: WaitId) -> Option<NodeId> {
        let (peer, _) = self.waiters.remove(&wait)?;
        let entry = self.entries.get_mut(&peer).unwrap();
        entry.waiters.retain(|w| *w != wait);
        if entry.state == MState::Queued && entry.waiters.is_empty() {
            self.entries.remove(&peer);
            self.queue.retain(|p| *p != peer);
        }
        Some(peer)
    }

    fn connected(&mut self, peer: NodeId) {
        let entry = self.entries.get_mut(&peer).unwrap();
        let MState::Connecting {
            conn: Some(conn), ..
        } = entry.state
        else {
            panic!()
        };
        self.become_ready(peer, conn, Direction::Outbound);
        self.admit();
    }

    fn become_ready(&mut self, peer: NodeId, conn: ConnId, dir: Direction) {
        let (idle_since, idle_seq) = self.idle();
        let entry = self.entries.get_mut(&peer).unwrap();
        let waiters = std::mem::take(&mut entry.waiters);
        let leases = waiters.len() as u32;
        entry.state = MState::Ready {
            conn,
            dir,
            leases,
            idle_since,
            idle_seq,
            ready_at: self.now,
        };
        for wait in waiters {
            self.waiters.remove(&wait);
            self.expect.push(Seen::Ready { wait, peer, conn });
        }
    }

    fn failed(&mut self, peer: NodeId) {
        let MState::Connecting { attempt, .. } = self.entries[&peer].state else {
            panic!()
        };
        if self.standby.contains_key(&peer) && self.room(Direction::Inbound) {
            // The peer's own connection, on standby, becomes the peer's.
            let conn = self.standby.remove(&peer).unwrap();
            // Holds no slot while claiming one.
            self.entries.get_mut(&peer).unwrap().state = MState::Queued;
            assert!(self.claim(Direction::Inbound));
            self.become_ready(peer, conn, Direction::Inbound);
            self.admit();
            return;
        }
        if attempt < self.cfg.max_connect_attempts {
            self.entries.get_mut(&peer).unwrap().state = MState::BackingOff {
                until: None,
                failures: attempt,
            };
            return;
        }
        let entry = self.entries.remove(&peer).unwrap();
        for wait in entry.waiters {
            self.waiters.remove(&wait);
            let error = PoolError::ConnectFailed {
                peer,
                attempts: attempt,
            };
            self.expect.push(Seen::Failed { wait, error });
        }
        self.admit();
    }

    fn closed(&mut self, peer: NodeId) {
        let entry = self.entries.remove(&peer).unwrap();
        let MState::Ready { leases, .. } = entry.state else {
            panic!()
        };
        if leases > 0 && self.claim(Direction::Outbound) {
            self.entries.insert(
                peer,
                MEntry {
                    state: MState::Queued,
                    ..entry
                },
            );
            self.connect(peer, 1);
        }
        self.admit();
    }

    fn inbound(&mut self, peer: NodeId, addr: SocketAddr, conn: ConnId) {
        let state = self.entries.get(&peer).map(|e| e.state);
        let our_dial = matches!(
            state,
            Some(
                MState::Connecting { .. }
                    | MState::Ready {
                        dir: Direction::Outbound,
                        ..
                    }
            )
        );
        let needs_slot = !matches!(
            state,
            Some(MState::Ready {
                dir: Direction::Inbound,
                ..
            })
        );
        // Ours ready for longer than a dial race lasts: the peer lost it (it
        // restarted), so its dial replaces ours at once, leases and all.
        let lost = matches!(state, Some(MState::Ready { ready_at, .. })
            if self.now.saturating_duration_since(ready_at) > self.cfg.wait_timeout);
        if our_dial && self.cfg.local < peer && !lost {
            if let Some(older) = self.standby.insert(peer, conn) {
                self.expect.push(Seen::Close {
                    peer,
                    conn: older,
                    reason: CloseReason::Duplicate,
                });
            }
            return;
        }
        if needs_slot && !self.room(Direction::Inbound) {
            self.expect.push(Seen::Close {
                peer,
                conn,
                reason: CloseReason::InboundFull,
            });
            return;
        }
        let mut entry = self.entries.remove(&peer).unwrap_or(MEntry {
            state: MState::Queued,
            addr,
            waiters: Vec::new(),
        });
        match entry.state {
            MState::Connecting {
                conn: Some(old), ..
            } => {
                self.expect.push(Seen::Close {
                    peer,
                    conn: old,
                    reason: CloseReason::Duplicate,
                });
            }
            MState::Ready {
                conn: old, leases, ..
            } if leases > 0 && !lost => {
                self.draining.insert(old, (peer, leases));
            }
            MState::Ready { conn: old, .. } => {
                self.expect.push(Seen::Close {
                    peer,
                    conn: old,
                    reason: CloseReason::Duplicate,
                });
            }
            MState::Queued => self.queue.retain(|p| *p != peer),
            _ => {}
        }
        entry.addr = addr;
        assert!(self.claim(Direction::Inbound));
        self.entries.insert(peer, entry);
        self.become_ready(peer, conn, Direction::Inbound);
        self.admit();
    }

    fn timeout(&mut self) {
        let now = self.now;
        let ttl = self.cfg.idle_ttl;
        let expired: Vec<NodeId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, MState::Ready { leases: 0, idle_since, .. } if idle_since + ttl <= now)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.drop_ready(peer, CloseReason::IdleTimeout);
        }
        let due: Vec<NodeId> = self
            .entries
            .iter()
            .filter(
                |(_, e)| matches!(e.state, MState::BackingOff { until: Some(u), .. } if u <= now),
            )
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let MState::BackingOff { failures, .. } = self.entries[&peer].state else {
                panic!()
            };
            self.connect(peer, failures + 1);
        }
        let wait_timeout = self.cfg.wait_timeout;
        let late: Vec<(WaitId, NodeId, Instant)> = self
            .waiters
            .iter()
            .filter(|(_, (_, since))| *since + wait_timeout <= now)
            .map(|(w, (p, s))| (*w, *p, *s))
            .collect();
        for (wait, peer, since) in late {
            let waited = now - since;
            let error = match self.entries[&peer].state {
                MState::Queued => PoolError::PoolFull { peer, waited },
                _ => PoolError::ConnectTimedOut { peer, waited },
            };
            self.remove_waiter(wait);
            self.expect.push(Seen::Failed { wait, error });
        }
        self.admit();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.entries.values().filter_map(|e| match e.state {
            MState::Ready {
                leases: 0,
                idle_since,
                ..
            } => Some(idle_since + self.cfg.idle_ttl),
            MState::BackingOff { until, .. } => until,
            _ => None,
        });
        let waits = self
            .waiters
            .values()
            .map(|(_, since)| *since + self.cfg.wait_timeout);
        idle.chain(waits).min()
    }

    fn fresh(&mut self, conn: ConnId) {
        assert!(self.max_conn.is_none_or(|max| conn > max), "{conn} reused");
        self.max_conn = Some(conn);
    }

    /// Checks the pool's actions against the expected ones and learns the
    /// pool's choices. Returns the leases the actions granted, with their peers.
    fn settle(&mut self, pool: &mut Pool) -> Vec<(NodeId, Lease)> {
        let mut leases = Vec::new();
        let mut seen = Vec::new();
        while let Some(action) = pool.poll_output() {
            seen.push(match action {
                Action::Connect { peer, addr, conn } => {
                    self.fresh(conn);
                    let entry = self
                        .entries
                        .get_mut(&peer)
                        .expect("connect for a known peer");
                    match &mut entry.state {
                        MState::Connecting { conn: c @ None, .. } => *c = Some(conn),
                        other => panic!("connect to {peer} in {other:?}"),
                    }
                    Seen::Connect { peer, addr }
                }
                Action::Close { peer, conn, reason } => Seen::Close { peer, conn, reason },
                Action::Ready { wait, peer, lease } => {
                    let seen = Seen::Ready {
                        wait,
                        peer,
                        conn: lease.conn(),
                    };
                    leases.push((peer, lease));
                    seen
                }
                Action::Failed { wait, error } => Seen::Failed { wait, error },
            });
        }
        let key = |s: &Seen| format!("{s:?}");
        let mut expect = std::mem::take(&mut self.expect);
        seen.sort_by_key(key);
        expect.sort_by_key(key);
        assert_eq!(seen, expect, "actions");
        let (base, max) = (self.cfg.backoff_base, self.cfg.backoff_max);
        for (peer, entry) in &mut self.entries {
            if let MState::BackingOff {
                until: until @ None,
                failures,
            } = &mut entry.state
            {
                let Some(PeerState::BackingOff {
                    until: u,
                    failures: f,
                }) = pool.peer_state(peer)
                else {
                    panic!("{peer} should back off");
                };
                assert_eq!(f, *failures);
                let ceiling = base.saturating_mul(1 << (*failures - 1)).min(max);
                let delay = u - self.now;
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "backoff {delay:?}"
                );
                *until = Some(u);
            }
        }
        leases
    }

    fn check(&self, pool: &Pool) {
        pool.check_consistency().unwrap();
        for n in PEERS.into_iter().chain([LOCAL]) {
            let peer = id(n);
            let expected = self.entries.get(&peer).map(|e| match e.state {
                MState::Queued => PeerState::Queued,
                MState::Connecting { conn, attempt } => PeerState::Connecting {
                    conn: conn.unwrap(),
                    attempt,
                },
                MState::BackingOff { until, failures } => PeerState::BackingOff {
                    until: until.unwrap(),
                    failures,
                },
                MState::Ready {
                    conn, dir, leases, ..
                } => PeerState::Ready {
                    conn,
                    direction: dir,
                    leases,
                },
            });
            assert_eq!(pool.peer_state(&peer), expected, "state of {n}");
        }
        for dir in [Direction::Outbound, Direction::Inbound] {
            assert_eq!(pool.len(dir), self.count(dir), "{dir:?} size");
            assert!(self.count(dir) <= self.cap(dir));
        }
        assert_eq!(pool.poll_timeout(), self.next_deadline(), "next deadline");
    }
}

fn run(ops: Vec<Op>) {
    #[allow(clippy::disallowed_methods)] // one base instant; the rest is added to it
    let start = Instant::now();
    let cfg = config();
    let mut pool = Pool::new(cfg.clone()).unwrap();
    let mut model = Model {
        cfg,
        now: start,
        entries: BTreeMap::new(),
        queue: VecDeque::new(),
        waiters: BTreeMap::new(),
        draining: BTreeMap::new(),
        standby: BTreeMap::new(),
        expect: Vec::new(),
        seq: 0,
        max_conn: None,
    };
    let mut held: Vec<(NodeId, Lease)> = Vec::new();
    let mut waits: Vec<WaitId> = Vec::new();
    for op in ops {
        let now = model.now;
        let state_of = |m: &Model, n: u8| m.entries.get(&id(n)).map(|e| e.state);
        let dialing = |m: &Model, n: u8| match state_of(m, n) {
            Some(MState::Connecting { conn, .. }) => conn,
            _ => None,
        };
        match op {
            Op::Acquire { peer: n, addr: a } => {
                let expected = model.acquire(id(n), addr(n, a));
                let got = pool.acquire(now, id(n), addr(n, a));
                match (expected, got) {
                    (Ok(Some(conn)), Ok(Acquired::Ready(lease))) => {
                        assert_eq!(lease.conn(), conn);
                        held.push((id(n), lease));
                    }
                    (Ok(None), Ok(Acquired::Waiting(wait))) => {
                        model.add_waiter(id(n), wait);
                        waits.push(wait);
                    }
                    (Err(e), Err(g)) => assert_eq!(e, g),
                    (e, g) => panic!("acquire {n}: expected {e:?}, got {g:?}"),
                }
            }
            Op::Release(i) if !held.is_empty() => {
                let (peer, lease) = held.swap_remove(i % held.len());
                model.release(peer, lease.conn());
                pool.release(now, lease);
            }
            Op::Cancel(i) if !waits.is_empty() => {
                let wait = waits.swap_remove(i % waits.len());
                let was = model.remove_waiter(wait).is_some();
                assert_eq!(pool.cancel(now, wait), was);
            }
            Op::Connected(n) => {
                if let Some(conn) = dialing(&model, n) {
                    model.connected(id(n));
                    pool.handle_connected(now, id(n), conn);
                }
            }
            Op::Failed(n) => {
                if let Some(conn) = dialing(&model, n) {
                    model.failed(id(n));
                    pool.handle_connect_failed(now, id(n), conn);
                }
            }
            Op::Closed(n) => {
                if let Some(MState::Ready { conn, .. }) = state_of(&model, n) {
                    model.closed(id(n));
                    pool.handle_closed(now, id(n), conn);
                }
            }
            Op::CloseDraining(i) if !model.draining.is_empty() => {
                let (&conn, &(peer, _)) =
                    model.draining.iter().nth(i % model.draining.len()).unwrap();
                model.draining.remove(&conn);
                pool.handle_closed(now, peer, conn);
            }
            Op::CloseStandby(i) if !model.standby.is_empty() => {
                let (&peer, &conn) = model.standby.iter().nth(i % model.standby.len()).unwrap();
                model.standby.remove(&peer);
                pool.handle_closed(now, peer, conn);
            }
            Op::Inbound { peer: n, addr: a } => {
                let conn = pool.handle_inbound(now, id(n), addr(n, a));
                model.fresh(conn);
                model.inbound(id(n), addr(n, a), conn);
            }
            Op::Advance(ms) => model.now += Duration::from_millis(ms),
            Op::Timeout(ms) => {
                model.now += Duration::from_millis(ms);
                model.timeout();
                pool.handle_timeout(model.now);
            }
            _ => {}
        }
        let granted = model.settle(&mut pool);
        waits.retain(|w| model.waiters.contains_key(w));
        held.extend(granted);
        model.check(&pool);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_pool_behaves_like_the_reference_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
