//! Helpers of the relay children's unit tests: ids, streams, leases and
//! draining a child.

use quinn_proto::{Dir, Side, StreamId};

use crate::contract::Child;
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};

/// The node id of `n` repeated.
pub(super) fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

/// The `n`th bidirectional stream a client opened.
pub(super) fn stream(n: u64) -> StreamId {
    StreamId::new(Side::Client, Dir::Bi, n)
}

/// A lease on connection `conn`.
pub(super) fn lease(conn: u64) -> Lease {
    Lease {
        conn: ConnId(conn),
        slot: 0,
    }
}

/// Every output the child queued, oldest first.
pub(super) fn drain<C: Child>(child: &mut C) -> Vec<C::Output> {
    std::iter::from_fn(|| child.poll_output()).collect()
}
