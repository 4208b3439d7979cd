//! Unit tests of the pool: each timer and each error path, with explicit
//! instants.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 4433))
}

/// Our id is 50: peers below it win tie-breaks, peers above lose them.
fn config() -> PoolConfig {
    PoolConfig {
        max_outbound: 2,
        max_inbound: 2,
        ..PoolConfig::new(id(50))
    }
}

fn pool(config: PoolConfig) -> Pool {
    Pool::new(config).expect("valid config")
}

fn t0() -> Instant {
    crate::test_epoch()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Drains the actions and checks the pool after every step.
fn drain(pool: &mut Pool) -> Vec<Action> {
    pool.check_consistency().expect("consistent");
    core::iter::from_fn(|| pool.poll_output()).collect()
}

fn waiting(result: Result<Acquired, PoolError>) -> WaitId {
    match result {
        Ok(Acquired::Waiting(wait)) => wait,
        other => panic!("expected to wait, got {other:?}"),
    }
}

fn leased(result: Result<Acquired, PoolError>) -> Lease {
    match result {
        Ok(Acquired::Ready(lease)) => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// The one action, a `Connect` to peer `n`: its connection id.
fn connect_of(actions: Vec<Action>, n: u8) -> ConnId {
    match <[Action; 1]>::try_from(actions) {
        Ok(
            [
                Action::Connect {
                    peer,
                    addr: a,
                    conn,
                },
            ],
        ) if peer == id(n) && a == addr(n) => conn,
        other => panic!("expected one connect to {n}, got {other:?}"),
    }
}

/// Connects peer `n` with one acquire; returns its lease.
fn connected(pool: &mut Pool, now: Instant, n: u8) -> Lease {
    let wait = waiting(pool.acquire(now, id(n), addr(n)));
    let conn = connect_of(drain(pool), n);
    pool.handle_connected(now, id(n), conn);
    match <[Action; 1]>::try_from(drain(pool)) {
        Ok(
            [
                Action::Ready {
                    wait: w,
                    peer,
                    lease,
                },
            ],
        ) if w == wait && peer == id(n) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

fn close(n: u8, conn: ConnId, reason: CloseReason) -> Action {
    Action::Close {
        peer: id(n),
        conn,
        reason,
    }
}

#[test]
fn a_ready_peer_is_a_hit_and_concurrent_acquires_share_one_connect() {
    let now = t0();
    let mut pool = pool(config());
    let first = waiting(pool.acquire(now, id(1), addr(1)));
    let second = waiting(pool.acquire(now, id(1), addr(1)));
    let conn = connect_of(drain(&mut pool), 1);
    assert_eq!(
        pool.peer_state(&id(1)),
        Some(PeerState::Connecting { conn, attempt: 1 })
    );

    pool.handle_connected(now, id(1), conn);
    let ready = |wait| Action::Ready {
        wait,
        peer: id(1),
        lease: Lease { conn, slot: 0 },
    };
    assert_eq!(drain(&mut pool), [ready(first), ready(second)]);
    let third = leased(pool.acquire(now, id(1), addr(1)));
    assert_eq!(third.conn(), conn);
    let state = PeerState::Ready {
        conn,
        direction: Direction::Outbound,
        leases: 3,
    };
    assert_eq!(pool.peer_state(&id(1)), Some(state));
    let metrics = pool.metrics();
    assert_eq!((metrics.hits, metrics.misses, metrics.connects), (1, 2, 1));
    assert_eq!((metrics.outbound, metrics.inbound), (1, 0));
}

#[test]
fn the_least_recently_released_idle_entry_is_evicted_at_the_cap() {
    let now = t0();
    let mut pool = pool(config());
    let one = connected(&mut pool, now, 1);
    let two = connected(&mut pool, now, 2);
    let (conn1, conn2) = (one.conn(), two.conn());
    pool.release(now + ms(1), one);
    pool.release(now + ms(2), two);
    // Using 1 again makes 2 the least recently used.
    let again = leased(pool.acquire(now + ms(3), id(1), addr(1)));
    pool.release(now + ms(4), again);

    waiting(pool.acquire(now + ms(5), id(3), addr(3)));
    let actions = drain(&mut pool);
    assert_eq!(actions[0], close(2, conn2, CloseReason::Capacity));
    assert!(matches!(actions[1], Action::Connect { peer, .. } if peer == id(3)));
    assert_eq!(pool.peer_state(&id(2)), None);
    assert!(
        matches!(pool.peer_state(&id(1)), Some(PeerState::Ready { conn, .. }) if conn == conn1)
    );
    assert_eq!(pool.metrics().evicted_capacity, 1);
    assert_eq!(pool.len(Direction::Outbound), 2);
}

#[test]
fn pinned_entries_are_never_evicted_and_a_queued_peer_gets_the_first_freed_slot() {
    let now = t0();
    let mut pool = pool(config());
    let one = connected(&mut pool, now, 1);
    let two = connected(&mut pool, now, 2);
    let wait = waiting(pool.acquire(now, id(3), addr(3)));
    assert_eq!(drain(&mut pool), []);
    assert_eq!(pool.peer_state(&id(3)), Some(PeerState::Queued));

    let conn2 = two.conn();
    pool.release(now + ms(1), two);
    let mut actions = drain(&mut pool);
    let connect = actions.split_off(1);
    assert_eq!(actions, [close(2, conn2, CloseReason::Capacity)]);
    let conn3 = connect_of(connect, 3);
    pool.handle_connected(now + ms(2), id(3), conn3);
    assert!(matches!(&drain(&mut pool)[..], [Action::Ready { wait: w, .. }] if *w == wait));
    let state = PeerState::Ready {
        conn: one.conn(),
        direction: Direction::Outbound,
        leases: 1,
    };
    assert_eq!(pool.peer_state(&id(1)), Some(state));
}

#[test]
fn a_peer_queued_behind_pinned_entries_fails_with_pool_full_at_its_deadline() {
    let now = t0();
    let mut pool = pool(config());
    let _one = connected(&mut pool, now, 1);
    let _two = connected(&mut pool, now, 2);
    let wait = waiting(pool.acquire(now + ms(5), id(3), addr(3)));
    let deadline = now + ms(5) + pool.config().wait_timeout;
    assert_eq!(drain(&mut pool), []);
    assert_eq!(pool.poll_timeout(), Some(deadline));

    pool.handle_timeout(deadline - ms(1));
    assert_eq!(drain(&mut pool), []);
    pool.handle_timeout(deadline);
    let waited = pool.config().wait_timeout;
    let error = PoolError::PoolFull {
        peer: id(3),
        waited,
    };
    assert_eq!(drain(&mut pool), [Action::Failed { wait, error }]);
    assert_eq!(pool.peer_state(&id(3)), None);
    assert_eq!(pool.poll_timeout(), None);
}

#[test]
fn ourselves_and_full_wait_queues_are_refused_at_once() {
    let now = t0();
    let mut pool = pool(PoolConfig {
        max_outbound: 1,
        max_waiters_per_peer: 1,
        max_queued_peers: 1,
        ..config()
    });
    assert_eq!(
        pool.acquire(now, id(50), addr(50)),
        Err(PoolError::SelfDial { peer: id(50) })
    );
    waiting(pool.acquire(now, id(1), addr(1)));
    assert_eq!(
        pool.acquire(now, id(1), addr(1)),
        Err(PoolError::WaitQueueFull {
            peer: id(1),
            limit: 1
        })
    );
    // The only slot is taken by the connect to 1: 2 queues, 3 cannot.
    waiting(pool.acquire(now, id(2), addr(2)));
    assert_eq!(
        pool.acquire(now, id(3), addr(3)),
        Err(PoolError::SlotQueueFull {
            peer: id(3),
            limit: 1
        })
    );
    assert_eq!(pool.metrics().misses, 2);
    drain(&mut pool);
    let own = pool.handle_inbound(now, id(50), addr(50));
    assert_eq!(drain(&mut pool), [close(50, own, CloseReason::OwnId)]);
    assert_eq!(pool.peer_state(&id(50)), None);
}

#[test]
fn an_entry_idle_for_the_ttl_is_closed_and_each_release_restarts_its_clock() {
    let now = t0();
    let ttl = config().idle_ttl;
    let mut pool = pool(config());
    let lease = connected(&mut pool, now, 1);
    let conn = lease.conn();
    assert_eq!(
        pool.poll_timeout(),
        None,
        "a leased entry has no idle deadline"
    );
    pool.release(now + ms(10), lease);
    assert_eq!(pool.poll_timeout(), Some(now + ms(10) + ttl));

    // Used again and given back later: the deadline moves.
    let lease = leased(pool.acquire(now + ms(20), id(1), addr(1)));
    pool.release(now + ms(30), lease);
    assert_eq!(pool.poll_timeout(), Some(now + ms(30) + ttl));
    pool.handle_timeout(now + ms(10) + ttl);
    assert_eq!(drain(&mut pool), []);

    pool.handle_timeout(now + ms(30) + ttl);
    assert_eq!(drain(&mut pool), [close(1, conn, CloseReason::IdleTimeout)]);
    let metrics = pool.metrics();
    assert_eq!((metrics.evicted_idle, metrics.outbound), (1, 0));
    assert_eq!(metrics.lifetime.count, 1);
    assert_eq!(metrics.lifetime.max, ms(30) + ttl);
    assert_eq!(pool.poll_timeout(), None);
}

#[test]
fn failed_connects_back_off_exponentially_then_fail_their_waiters() {
    let now = t0();
    let base = config().backoff_base;
    let mut pool = pool(PoolConfig {
        max_connect_attempts: 3,
        wait_timeout: Duration::from_secs(3600),
        ..config()
    });
    let wait = waiting(pool.acquire(now, id(1), addr(1)));
    let mut conn = connect_of(drain(&mut pool), 1);
    let mut at = now;
    for failures in 1..=2u32 {
        pool.handle_connect_failed(at, id(1), conn);
        assert_eq!(drain(&mut pool), []);
        let Some(PeerState::BackingOff { until, failures: f }) = pool.peer_state(&id(1)) else {
            panic!("expected a backoff");
        };
        assert_eq!(f, failures);
        let ceiling = base * 2u32.pow(failures - 1);
        let delay = until - at;
        assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?}");
        assert_eq!(pool.poll_timeout(), Some(until));
        pool.handle_timeout(until - ms(1));
        assert_eq!(drain(&mut pool), []);
        pool.handle_timeout(until);
        conn = connect_of(drain(&mut pool), 1);
        assert_eq!(
            pool.peer_state(&id(1)),
            Some(PeerState::Connecting {
                conn,
                attempt: failures + 1
            })
        );
        at = until;
    }
    pool.handle_connect_failed(at, id(1), conn);
    let error = PoolError::ConnectFailed {
        peer: id(1),
        attempts: 3,
    };
    assert_eq!(drain(&mut pool), [Action::Failed { wait, error }]);
    assert_eq!(pool.peer_state(&id(1)), None);
    assert_eq!(pool.metrics().connect_failures, 3);
    assert_eq!(pool.poll_timeout(), None);
}

#[test]
fn a_connect_that_failed_for_good_fails_its_waiters_with_attempts_left() {
    let now = t0();
    let mut pool = pool(config());
    let wait = waiting(pool.acquire(now, id(1), addr(1)));
    let other = waiting(pool.acquire(now, id(1), addr(1)));
    let conn = connect_of(drain(&mut pool), 1);
    pool.handle_connect_failed_for_good(now, id(2), conn);
    assert_eq!(drain(&mut pool), [], "not that peer's connect");
    pool.handle_connect_failed_for_good(now, id(1), conn);
    let error = PoolError::ConnectFailed {
        peer: id(1),
        attempts: 1,
    };
    let failed = drain(&mut pool);
    assert_eq!(failed.len(), 2);
    for wait in [wait, other] {
        let error = error.clone();
        assert!(failed.contains(&Action::Failed { wait, error }));
    }
    assert_eq!(pool.peer_state(&id(1)), None, "no backoff, no retry");
    assert_eq!(pool.poll_timeout(), None);
    assert_eq!(pool.metrics().connect_failures, 1);
}

#[test]
fn a_successful_connect_resets_the_attempt_count() {
    let now = t0();
    let mut pool = pool(config());
    waiting(pool.acquire(now, id(1), addr(1)));
    let conn = connect_of(drain(&mut pool), 1);
    pool.handle_connect_failed(now, id(1), conn);
    let Some(PeerState::BackingOff { until, .. }) = pool.peer_state(&id(1)) else {
        panic!("expected a backoff");
    };
    pool.handle_timeout(until);
    let conn = connect_of(drain(&mut pool), 1);
    assert_eq!(
        pool.peer_state(&id(1)),
        Some(PeerState::Connecting { conn, attempt: 2 })
    );
    pool.handle_connected(until, id(1), conn);
    drain(&mut pool);
    // Lost while leased: redialed as a first attempt, not a third.
    pool.handle_closed(until, id(1), conn);
    let conn = connect_of(drain(&mut pool), 1);
    assert_eq!(
        pool.peer_state(&id(1)),
        Some(PeerState::Connecting { conn, attempt: 1 })
    );
}

#[test]
fn the_same_seed_gives_the_same_backoff() {
    let run = |seed| {
        let now = t0();
        let mut pool = pool(PoolConfig { seed, ..config() });
        waiting(pool.acquire(now, id(1), addr(1)));
        let conn = connect_of(drain(&mut pool), 1);
        pool.handle_connect_failed(now, id(1), conn);
        pool.poll_timeout().map(|t| t - now)
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn a_connect_that_does_not_finish_in_time_times_its_waiter_out() {
    let now = t0();
    let mut pool = pool(config());
    let wait = waiting(pool.acquire(now, id(1), addr(1)));
    let conn = connect_of(drain(&mut pool), 1);
    let timeout = pool.config().wait_timeout;
    pool.handle_timeout(now + timeout);
    let error = PoolError::ConnectTimedOut {
        peer: id(1),
        waited: timeout,
    };
    assert_eq!(drain(&mut pool), [Action::Failed { wait, error }]);
    // The connect goes on; when it lands the entry is idle, not leased.
    pool.handle_connected(now + timeout + ms(1), id(1), conn);
    assert_eq!(drain(&mut pool), []);
    let state = PeerState::Ready {
        conn,
        direction: Direction::Outbound,
        leases: 0,
    };
    assert_eq!(pool.peer_state(&id(1)), Some(state));
}

#[test]
fn a_cancelled_acquire_is_never_answered_and_its_queue_place_is_dropped() {
    let now = t0();
    let mut pool = pool(PoolConfig {
        max_outbound: 1,
        ..config()
    });
    let _one = connected(&mut pool, now, 1);
    let wait = waiting(pool.acquire(now, id(2), addr(2)));
    assert!(pool.cancel(now, wait));
    assert!(!pool.cancel(now, wait));
    assert_eq!(pool.peer_state(&id(2)), None);
    pool.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(drain(&mut pool), []);
}

#[test]
fn a_connect_nobody_wants_any_more_is_closed_as_stale() {
    let now = t0();
    let mut pool = pool(config());
    pool.handle_connected(now, id(1), ConnId(77));
    assert_eq!(drain(&mut pool), [close(1, ConnId(77), CloseReason::Stale)]);
    // Failures and closes of unknown connections change nothing.
    pool.handle_connect_failed(now, id(1), ConnId(77));
    pool.handle_closed(now, id(1), ConnId(77));
    assert_eq!(drain(&mut pool), []);
    assert!(pool.is_empty());
    // A second report that a ready connection is up changes nothing either.
    let lease = connected(&mut pool, now, 1);
    pool.handle_connected(now, id(1), lease.conn());
    assert_eq!(drain(&mut pool), []);
}

#[test]
fn losing_a_leased_connection_redials_at_once_and_an_idle_one_is_dropped() {
    let now = t0();
    let mut pool = pool(config());
    let stale = connected(&mut pool, now, 1);
    pool.handle_closed(now + ms(1), id(1), stale.conn());
    let conn = connect_of(drain(&mut pool), 1);
    assert_eq!(
        pool.peer_state(&id(1)),
        Some(PeerState::Connecting { conn, attempt: 1 })
    );
    // The old lease is void: giving it back changes nothing.
    pool.release(now + ms(2), stale);
    assert_eq!(
        pool.peer_state(&id(1)),
        Some(PeerState::Connecting { conn, attempt: 1 })
    );

    pool.handle_connected(now + ms(3), id(1), conn);
    pool.handle_closed(now + ms(4), id(1), conn);
    assert_eq!(drain(&mut pool), []);
    assert_eq!(pool.peer_state(&id(1)), None);
    assert_eq!(pool.metrics().lost, 2);
}

#[test]
fn a_dial_from_a_peer_long_after_ours_is_ready_replaces_ours_leases_and_all() {
    // Peer 60 is above us (50), so our dial would win a race; but ours has been ready
    // longer than any race lasts: the peer lost it (it restarted), so its dial takes
    // over and ours is closed at once, though leased (issue 17's restarted subscriber).
    let now = t0();
    let mut pool = pool(config());
    waiting(pool.acquire(now, id(60), addr(60)));
    let ours = connect_of(drain(&mut pool), 60);
    pool.handle_connected(now, id(60), ours);
    assert!(matches!(drain(&mut pool)[..], [Action::Ready { .. }]));
    let later = now + config().wait_timeout + ms(1);
    let lease = leased(pool.acquire(later, id(60), addr(60)));
    assert_eq!(lease.conn, ours);
    let theirs = pool.handle_inbound(later, id(60), addr(60));
    assert_eq!(drain(&mut pool), [close(60, ours, CloseReason::Duplicate)]);
    assert!(matches!(
        pool.peer_state(&id(60)),
        Some(PeerState::Ready { conn, direction: Direction::Inbound, .. }) if conn == theirs
    ));
    // The lease on the closed connection comes back to nothing.
    pool.release(later, lease);
    assert_eq!(drain(&mut pool), []);

    // Within the race window the tie-break still holds: theirs waits on standby.
    let mut pool = self::pool(config());
    waiting(pool.acquire(now, id(60), addr(60)));
    let ours = connect_of(drain(&mut pool), 60);
    pool.handle_connected(now, id(60), ours);
    drain(&mut pool);
    pool.handle_inbound(now + config().wait_timeout, id(60), addr(60));
    assert_eq!(drain(&mut pool), [], "a race: theirs on standby");
}

#[test]
fn a_simultaneous_dial_keeps_the_connection_dialed_by_the_lower_id_on_both_sides() {
    // Peer 60 is above us (50): our dial wins. Peer 40 is below: theirs wins.
    let now = t0();
    let mut pool = pool(config());
    let ours = waiting(pool.acquire(now, id(60), addr(60)));
    let our_dial = connect_of(drain(&mut pool), 60);
    let theirs = pool.handle_inbound(now, id(60), addr(60));
    // Theirs loses but is not ours to close: the peer may have sent requests
    // on it already, and closes it itself once it sees our dial.
    assert_eq!(drain(&mut pool), []);
    pool.handle_connected(now, id(60), our_dial);
    assert!(matches!(&drain(&mut pool)[..], [Action::Ready { wait, .. }] if *wait == ours));
    pool.handle_closed(now, id(60), theirs);
    assert_eq!(drain(&mut pool), []);
    assert!(matches!(
        pool.peer_state(&id(60)),
        Some(PeerState::Ready { conn, .. }) if conn == our_dial
    ));

    let wait = waiting(pool.acquire(now, id(40), addr(40)));
    let our_dial = connect_of(drain(&mut pool), 40);
    let theirs = pool.handle_inbound(now, id(40), addr(40));
    let actions = drain(&mut pool);
    assert_eq!(actions[0], close(40, our_dial, CloseReason::Duplicate));
    let lease = Lease {
        conn: theirs,
        slot: 1,
    };
    let peer = id(40);
    assert_eq!(actions[1..], [Action::Ready { wait, peer, lease }]);
    assert_eq!(
        (pool.len(Direction::Outbound), pool.len(Direction::Inbound)),
        (1, 1)
    );
    // The abandoned dial reporting late is closed, not adopted.
    pool.handle_connected(now, id(40), our_dial);
    assert_eq!(drain(&mut pool), [close(40, our_dial, CloseReason::Stale)]);
    assert_eq!(pool.metrics().closed_duplicate, 1);
}

#[test]
fn two_pools_dialing_each_other_end_with_one_shared_connection() {
    // Each pool numbers connections itself. Both orders: the crossing dials
    // arrive before or after each side saw its own dial complete.
    for inbound_first in [false, true] {
        let now = t0();
        let (lo, hi) = (id(10), id(20));
        let mut a = pool(PoolConfig::new(lo));
        let mut b = pool(PoolConfig::new(hi));
        waiting(a.acquire(now, hi, addr(20)));
        waiting(b.acquire(now, lo, addr(10)));
        let a_dial = connect_of_peer(drain(&mut a));
        let b_dial = connect_of_peer(drain(&mut b));
        let (mut a_out, mut b_out) = (Vec::new(), Vec::new());
        if !inbound_first {
            a.handle_connected(now, hi, a_dial);
            b.handle_connected(now, lo, b_dial);
            a_out.extend(drain(&mut a));
            b_out.extend(drain(&mut b));
        }
        // a's dial arrives at b, b's at a.
        let at_b = b.handle_inbound(now, lo, addr(10));
        let at_a = a.handle_inbound(now, hi, addr(20));
        a_out.extend(drain(&mut a));
        b_out.extend(drain(&mut b));
        if inbound_first {
            a.handle_connected(now, hi, a_dial);
            a_out.extend(drain(&mut a));
        }
        // Every waiter is answered; give the leases back.
        for (pool, actions) in [(&mut a, &mut a_out), (&mut b, &mut b_out)] {
            let mut rest = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::Ready { lease, .. } => pool.release(now, lease),
                    other => rest.push(other),
                }
            }
            rest.extend(drain(pool));
            *actions = rest;
        }
        // The lower id's (a's) dial survives: b closes its own (once its
        // leases are back), a keeps b's on standby until b's close arrives.
        assert_eq!(closes(a_out), []);
        assert_eq!(closes(b_out), [b_dial]);
        a.handle_closed(now, hi, at_a);
        assert_eq!(drain(&mut a), []);
        a.check_consistency().unwrap();
        let conn_of = |pool: &Pool, peer| match pool.peer_state(&peer) {
            Some(PeerState::Ready { conn, .. }) => conn,
            other => panic!("{other:?}"),
        };
        assert_eq!((conn_of(&a, hi), conn_of(&b, lo)), (a_dial, at_b));
    }
}

fn connect_of_peer(actions: Vec<Action>) -> ConnId {
    match &actions[..] {
        [Action::Connect { conn, .. }] => *conn,
        other => panic!("expected one connect, got {other:?}"),
    }
}

fn closes(actions: Vec<Action>) -> Vec<ConnId> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Close { conn, .. } => Some(conn),
            _ => None,
        })
        .collect()
}

#[test]
fn a_losing_connection_with_leases_out_drains_until_its_last_release() {
    let now = t0();
    let mut pool = pool(config());
    let lease = connected(&mut pool, now, 40); // we dialed; 40 < 50 will win
    let old = lease.conn();
    let new = pool.handle_inbound(now + ms(1), id(40), addr(40));
    assert_eq!(drain(&mut pool), []);
    let state = PeerState::Ready {
        conn: new,
        direction: Direction::Inbound,
        leases: 0,
    };
    assert_eq!(pool.peer_state(&id(40)), Some(state));
    assert_eq!(
        (pool.len(Direction::Outbound), pool.len(Direction::Inbound)),
        (0, 1)
    );
    pool.release(now + ms(2), lease);
    assert_eq!(drain(&mut pool), [close(40, old, CloseReason::Duplicate)]);
    assert_eq!(
        pool.peer_state(&id(40)),
        Some(state),
        "the winner is untouched"
    );
}

#[test]
fn inbound_connections_have_their_own_cap_and_are_refused_when_it_is_pinned() {
    let now = t0();
    let mut pool = pool(PoolConfig {
        max_inbound: 1,
        ..config()
    });
    let first = pool.handle_inbound(now, id(1), addr(1));
    let lease = leased(pool.acquire(now, id(1), addr(1)));
    assert_eq!(lease.conn(), first);
    let refused = pool.handle_inbound(now, id(2), addr(2));
    assert_eq!(
        drain(&mut pool),
        [close(2, refused, CloseReason::InboundFull)]
    );
    pool.release(now, lease);
    // Now 1 is idle: 2 evicts it.
    let second = pool.handle_inbound(now, id(2), addr(2));
    assert_eq!(drain(&mut pool), [close(1, first, CloseReason::Capacity)]);
    assert!(
        matches!(pool.peer_state(&id(2)), Some(PeerState::Ready { conn, .. }) if conn == second)
    );
    // Outbound slots are untouched by inbound traffic.
    assert_eq!(pool.len(Direction::Outbound), 0);
    assert_eq!(pool.metrics().refused_inbound, 1);
}

#[test]
fn an_inbound_connection_answers_a_peer_that_was_backing_off() {
    let now = t0();
    let mut pool = pool(config());
    let wait = waiting(pool.acquire(now, id(60), addr(60)));
    let conn = connect_of(drain(&mut pool), 60);
    pool.handle_connect_failed(now, id(60), conn);
    let inbound = pool.handle_inbound(now + ms(1), id(60), addr(60));
    let lease = Lease {
        conn: inbound,
        slot: 0,
    };
    let peer = id(60);
    assert_eq!(drain(&mut pool), [Action::Ready { wait, peer, lease }]);
    assert_eq!(pool.poll_timeout(), None, "the backoff timer is gone");
}

#[test]
fn poll_timeout_is_the_last_input_time_while_actions_are_queued() {
    let now = t0();
    let mut pool = pool(config());
    waiting(pool.acquire(now + ms(7), id(1), addr(1)));
    assert_eq!(pool.poll_timeout(), Some(now + ms(7)));
    drain(&mut pool);
    assert_eq!(
        pool.poll_timeout(),
        Some(now + ms(7) + pool.config().wait_timeout)
    );
}

#[test]
fn a_standby_connection_becomes_the_peers_when_our_own_dial_fails() {
    // Peer 60 is above us (50): its dial loses to ours and waits on standby;
    // a newer one replaces it; when our dial fails the standby is adopted.
    let now = t0();
    let mut pool = pool(config());
    let wait = waiting(pool.acquire(now, id(60), addr(60)));
    let our_dial = connect_of(drain(&mut pool), 60);
    let older = pool.handle_inbound(now, id(60), addr(60));
    let theirs = pool.handle_inbound(now, id(60), addr(60));
    assert_eq!(drain(&mut pool), [close(60, older, CloseReason::Duplicate)]);
    pool.handle_connect_failed(now, id(60), our_dial);
    assert!(matches!(
        &drain(&mut pool)[..],
        [Action::Ready { wait: w, lease, .. }] if *w == wait && lease.conn() == theirs
    ));
    assert!(matches!(
        pool.peer_state(&id(60)),
        Some(PeerState::Ready { conn, direction: Direction::Inbound, leases: 1 }) if conn == theirs
    ));
    pool.check_consistency().unwrap();
}

#[test]
fn a_direct_connection_beats_a_relayed_one_whoever_dialed_it() {
    // Peer 40 is below us (50) and would win on ids, but its dial comes
    // over a relay circuit (a virtual address) while ours is direct.
    let now = t0();
    let mut pool = pool(config());
    let circuit: SocketAddr = "[fd6d:6163:756c:6100::1]:1".parse().unwrap();
    waiting(pool.acquire(now, id(40), addr(40)));
    let our_dial = connect_of(drain(&mut pool), 40);
    let theirs = pool.handle_inbound(now, id(40), circuit);
    assert_eq!(drain(&mut pool), [], "theirs waits on standby");
    pool.handle_connected(now, id(40), our_dial);
    assert!(matches!(drain(&mut pool)[..], [Action::Ready { .. }]));
    pool.handle_closed(now, id(40), theirs);
    assert_eq!(drain(&mut pool), []);

    // Peer 60 is above us and would lose on ids, but our dial goes over a
    // circuit while its dial is direct: ours gives way.
    waiting(pool.acquire(now, id(60), circuit));
    let our_dial = connect_of_peer(drain(&mut pool));
    let theirs = pool.handle_inbound(now, id(60), addr(60));
    let actions = drain(&mut pool);
    assert_eq!(actions[0], close(60, our_dial, CloseReason::Duplicate));
    assert!(matches!(
        pool.peer_state(&id(60)),
        Some(PeerState::Ready { conn, direction: Direction::Inbound, .. }) if conn == theirs
    ));
    pool.check_consistency().unwrap();
}
