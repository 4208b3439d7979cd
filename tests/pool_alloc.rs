//! The pool's hit path (acquire of a ready peer, release) allocates nothing.
//!
//! A counting global allocator wraps the system one; the test warms a pool
//! up, then counts allocations across many hits and releases, on the test's
//! own thread only: the test harness's threads allocate when they please (a
//! loaded machine once showed 4 of theirs in the count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::Child;
use macula::id::NodeId;
use macula::pool::{Acquired, Action, Pool, PoolConfig};

struct Counting;

thread_local! {
    /// Allocations made by this thread (constant-initialised: counting
    /// allocates nothing itself).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts one allocation of the calling thread (none while it is torn down).
fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: defers every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn hits_and_releases_allocate_nothing() {
    #[allow(clippy::disallowed_methods)] // one base instant; the rest is added to it
    let start = Instant::now();
    let addr: SocketAddr = "10.0.0.1:4433".parse().unwrap();
    let peers: Vec<NodeId> = (1..=64).map(|n| NodeId::from_bytes([n; 32])).collect();
    let mut pool = Pool::new(PoolConfig::new(NodeId::from_bytes([0; 32]))).unwrap();
    for &peer in &peers {
        let Ok(Acquired::Waiting(_)) = pool.acquire(start, peer, addr) else {
            panic!()
        };
        while let Some(action) = pool.poll_output() {
            match action {
                Action::Connect { conn, .. } => pool.handle_connected(start, peer, conn),
                Action::Ready { lease, .. } => pool.release(start, lease),
                other => panic!("{other:?}"),
            }
        }
    }
    let before = allocations();
    for round in 0..100u64 {
        let now = start + Duration::from_millis(round);
        for &peer in peers.iter().rev() {
            let Ok(Acquired::Ready(lease)) = pool.acquire(now, peer, addr) else {
                panic!()
            };
            pool.release(now, lease);
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "the hit path allocated");
    assert_eq!(pool.metrics().hits, 6400);
    pool.check_consistency().unwrap();
}
