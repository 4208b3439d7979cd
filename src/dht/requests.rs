//! Request correlation: which outbound request is which, and when it expires.
//!
//! Every request gets a fresh [`RequestId`] from a counter that never
//! repeats. The table maps it to the peer asked, what the request is for and
//! two deadlines: a soft one (the lookup stops waiting for the peer but still
//! takes a late answer) and a hard one (the request is dropped and counted as
//! failed). A reply is matched by id *and* peer: an id never issued, one
//! already answered or expired, or one answered by another peer is refused
//! with a typed reason, and the table is left as it was.
//!
//! Requests ride reliable streams, so none is ever resent on the same
//! connection; the hard deadline comes from the peer's connection RTT.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::collections::HashMap;
use crate::id::NodeId;

use super::message::RequestId;

/// Why a reply matched no outstanding request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The id was never issued by us.
    #[error("reply to request {0:?}, which was never sent")]
    Unknown(RequestId),
    /// The id was issued but is no longer outstanding: answered already
    /// (a duplicate), failed or expired (a late reply).
    #[error("reply to request {0:?}, which is already answered or expired")]
    Settled(RequestId),
    /// The reply came from a peer other than the one asked.
    #[error("reply to request {id:?} from {from:?}, but it was sent to {asked:?}")]
    WrongPeer {
        /// The request.
        id: RequestId,
        /// Who was asked.
        asked: NodeId,
        /// Who answered.
        from: NodeId,
    },
}

/// One outstanding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outstanding<T> {
    /// The peer asked.
    pub peer: NodeId,
    /// What the request is for.
    pub purpose: T,
    /// When the request counts as failed.
    pub deadline: Instant,
    /// When its lookup stops waiting for it, if it belongs to one.
    pub soft_deadline: Option<Instant>,
}

/// How long to wait for a peer: `factor` × its connection RTT, at least
/// `floor`, at most `cap`; a peer with no connection (unknown RTT) gets `cap`.
pub fn rtt_deadline(
    rtt: Option<Duration>,
    factor: u32,
    floor: Duration,
    cap: Duration,
) -> Duration {
    rtt.map_or(cap, |rtt| {
        rtt.saturating_mul(factor).clamp(floor, cap.max(floor))
    })
}

/// Outstanding outbound requests, by id, with their deadlines.
#[derive(Clone, Debug)]
pub struct RequestTable<T> {
    next_id: u64,
    pending: HashMap<RequestId, Outstanding<T>>,
    hard: BTreeSet<(Instant, RequestId)>,
    soft: BTreeSet<(Instant, RequestId)>,
}

impl<T> Default for RequestTable<T> {
    fn default() -> Self {
        Self {
            next_id: 0,
            pending: HashMap::default(),
            hard: BTreeSet::new(),
            soft: BTreeSet::new(),
        }
    }
}

impl<T> RequestTable<T> {
    /// Registers a request to `peer` and returns its new id.
    pub fn insert(
        &mut self,
        peer: NodeId,
        purpose: T,
        deadline: Instant,
        soft_deadline: Option<Instant>,
    ) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.hard.insert((deadline, id));
        if let Some(soft) = soft_deadline {
            self.soft.insert((soft, id));
        }
        self.pending.insert(
            id,
            Outstanding {
                peer,
                purpose,
                deadline,
                soft_deadline,
            },
        );
        id
    }

    /// Number of outstanding requests.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// No outstanding requests.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The outstanding request `id`, if any.
    pub fn get(&self, id: RequestId) -> Option<&Outstanding<T>> {
        self.pending.get(&id)
    }

    /// Takes the request a reply from `from` answers.
    pub fn take_reply(
        &mut self,
        id: RequestId,
        from: &NodeId,
    ) -> Result<Outstanding<T>, ReplyError> {
        match self.pending.get(&id) {
            None if id.0 < self.next_id => Err(ReplyError::Settled(id)),
            None => Err(ReplyError::Unknown(id)),
            Some(o) if o.peer != *from => Err(ReplyError::WrongPeer {
                id,
                asked: o.peer,
                from: *from,
            }),
            Some(_) => Ok(self.remove(id).expect("present")),
        }
    }

    /// Removes request `id` (it failed, or its reply was taken).
    pub fn remove(&mut self, id: RequestId) -> Option<Outstanding<T>> {
        let o = self.pending.remove(&id)?;
        self.hard.remove(&(o.deadline, id));
        if let Some(soft) = o.soft_deadline {
            self.soft.remove(&(soft, id));
        }
        Some(o)
    }

    /// Moves the soft deadline of every request to `peer` that still has one
    /// to `at` (its connection just came up, so the wait can be measured
    /// from now).
    pub fn rearm_soft(&mut self, peer: &NodeId, at: Instant) {
        for (id, o) in self.pending.iter_mut().filter(|(_, o)| o.peer == *peer) {
            if let Some(old) = o.soft_deadline.replace(at) {
                self.soft.remove(&(old, *id));
                self.soft.insert((at, *id));
            } else {
                o.soft_deadline = None;
            }
        }
    }

    /// The next request whose soft deadline is at or before `now`; it stays
    /// outstanding. Each is returned once.
    pub fn pop_soft_expired(&mut self, now: Instant) -> Option<(RequestId, &Outstanding<T>)> {
        let &(at, id) = self.soft.first().filter(|(at, _)| *at <= now)?;
        self.soft.remove(&(at, id));
        let o = self.pending.get_mut(&id)?;
        o.soft_deadline = None;
        Some((id, o))
    }

    /// The next request whose hard deadline is at or before `now`, removed.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(RequestId, Outstanding<T>)> {
        let &(_, id) = self.hard.first().filter(|(at, _)| *at <= now)?;
        self.remove(id).map(|o| (id, o))
    }

    /// The earliest deadline, soft or hard.
    pub fn next_deadline(&self) -> Option<Instant> {
        let hard = self.hard.first().map(|(at, _)| *at);
        let soft = self.soft.first().map(|(at, _)| *at);
        hard.into_iter().chain(soft).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    #[test]
    fn replies_are_matched_by_id_and_peer() {
        let t0 = crate::test_epoch();
        let mut t: RequestTable<&str> = RequestTable::default();
        let a = t.insert(peer(1), "a", t0 + Duration::from_secs(1), None);
        let b = t.insert(peer(2), "b", t0 + Duration::from_secs(1), None);
        assert_ne!(a, b);
        assert_eq!(
            t.take_reply(a, &peer(2)),
            Err(ReplyError::WrongPeer {
                id: a,
                asked: peer(1),
                from: peer(2)
            })
        );
        assert_eq!(t.take_reply(a, &peer(1)).unwrap().purpose, "a");
        assert_eq!(t.take_reply(a, &peer(1)), Err(ReplyError::Settled(a)));
        assert_eq!(
            t.take_reply(RequestId(99), &peer(1)),
            Err(ReplyError::Unknown(RequestId(99)))
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn soft_then_hard_deadlines() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut t: RequestTable<()> = RequestTable::default();
        let a = t.insert(peer(1), (), t0 + 3 * s, Some(t0 + s));
        let b = t.insert(peer(2), (), t0 + 2 * s, None);
        assert_eq!(t.next_deadline(), Some(t0 + s));
        assert!(t.pop_soft_expired(t0).is_none());
        assert_eq!(t.pop_soft_expired(t0 + s).map(|(id, _)| id), Some(a));
        assert!(t.pop_soft_expired(t0 + s).is_none(), "once only");
        assert_eq!(t.next_deadline(), Some(t0 + 2 * s));
        assert_eq!(t.pop_expired(t0 + 3 * s).map(|(id, _)| id), Some(b));
        assert_eq!(t.pop_expired(t0 + 3 * s).map(|(id, _)| id), Some(a));
        assert!(t.is_empty());
        assert_eq!(t.take_reply(a, &peer(1)), Err(ReplyError::Settled(a)));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn soft_deadlines_can_be_moved_per_peer() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut t: RequestTable<()> = RequestTable::default();
        let a = t.insert(peer(1), (), t0 + 9 * s, Some(t0 + s));
        let b = t.insert(peer(1), (), t0 + 9 * s, None);
        let c = t.insert(peer(2), (), t0 + 9 * s, Some(t0 + s));
        t.rearm_soft(&peer(1), t0 + 3 * s);
        assert_eq!(t.get(a).unwrap().soft_deadline, Some(t0 + 3 * s));
        assert_eq!(
            t.get(b).unwrap().soft_deadline,
            None,
            "no soft deadline, none added"
        );
        assert_eq!(t.pop_soft_expired(t0 + s).map(|(id, _)| id), Some(c));
        assert!(t.pop_soft_expired(t0 + 2 * s).is_none());
        assert_eq!(t.pop_soft_expired(t0 + 3 * s).map(|(id, _)| id), Some(a));
    }

    #[test]
    fn deadlines_follow_the_rtt_within_bounds() {
        let ms = Duration::from_millis;
        let (floor, cap) = (ms(100), ms(5000));
        assert_eq!(rtt_deadline(None, 6, floor, cap), cap);
        assert_eq!(rtt_deadline(Some(ms(50)), 6, floor, cap), ms(300));
        assert_eq!(rtt_deadline(Some(ms(5)), 6, floor, cap), floor);
        assert_eq!(rtt_deadline(Some(ms(2000)), 6, floor, cap), cap);
    }
}
