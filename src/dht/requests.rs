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
//! connection. A request's hard deadline starts at its limit (the cap: it
//! may wait for a connection first) and comes from its connection's RTT
//! once the driver says it is out on a connection that is up
//! ([`RequestTable::on_wire`]). An answer from a peer shows its connection
//! delivering, so the other requests on the wire to it get a fresh RTT
//! deadline from then ([`RequestTable::on_progress`]): one lost packet that
//! holds up a burst of answers on a shared connection does not fail them all
//! at once. No deadline ever moves past the request's limit.

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
    /// The latest its hard deadline may ever be (its start plus the cap).
    pub limit: Instant,
    /// When its lookup stops waiting for it, if it belongs to one (`None`
    /// once passed).
    pub soft_deadline: Option<Instant>,
    /// The driver reported it out on a connection that is up.
    pub on_wire: bool,
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
    /// The outstanding requests by peer.
    by_peer: BTreeSet<(NodeId, RequestId)>,
}

impl<T> Default for RequestTable<T> {
    fn default() -> Self {
        Self {
            next_id: 0,
            pending: HashMap::default(),
            hard: BTreeSet::new(),
            soft: BTreeSet::new(),
            by_peer: BTreeSet::new(),
        }
    }
}

impl<T> RequestTable<T> {
    /// Registers a request to `peer`, failing at `limit` unless it goes on
    /// the wire first, and returns its new id.
    pub fn insert(
        &mut self,
        peer: NodeId,
        purpose: T,
        limit: Instant,
        soft_deadline: Option<Instant>,
    ) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.hard.insert((limit, id));
        if let Some(soft) = soft_deadline {
            self.soft.insert((soft, id));
        }
        self.by_peer.insert((peer, id));
        self.pending.insert(
            id,
            Outstanding {
                peer,
                purpose,
                deadline: limit,
                limit,
                soft_deadline,
                on_wire: false,
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
        self.by_peer.remove(&(o.peer, id));
        self.hard.remove(&(o.deadline, id));
        if let Some(soft) = o.soft_deadline {
            self.soft.remove(&(soft, id));
        }
        Some(o)
    }

    /// Request `id` went out on a connection that is up: it now fails at
    /// `hard` (never past its limit) and, if its lookup still waits for it,
    /// stops being waited for at `soft`. Returns it; `None` if it is not
    /// outstanding.
    pub fn on_wire(
        &mut self,
        id: RequestId,
        hard: Instant,
        soft: Instant,
    ) -> Option<&Outstanding<T>> {
        let o = self.pending.get_mut(&id)?;
        o.on_wire = true;
        let hard = hard.min(o.limit);
        self.hard.remove(&(o.deadline, id));
        self.hard.insert((hard, id));
        o.deadline = hard;
        if let Some(old) = o.soft_deadline.as_mut() {
            self.soft.remove(&(*old, id));
            self.soft.insert((soft, id));
            *old = soft;
        }
        Some(o)
    }

    /// `peer` answered at a time that gives its other requests on the wire
    /// until `at`: a hard deadline sooner than that moves to it (never past
    /// the request's limit).
    pub fn on_progress(&mut self, peer: &NodeId, at: Instant) {
        let ids = self
            .by_peer
            .range((*peer, RequestId(0))..=(*peer, RequestId(u64::MAX)));
        for &(_, id) in ids {
            let Some(o) = self.pending.get_mut(&id) else {
                continue;
            };
            let to = at.min(o.limit);
            if o.on_wire && o.deadline < to {
                self.hard.remove(&(o.deadline, id));
                self.hard.insert((to, id));
                o.deadline = to;
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
    fn a_request_on_the_wire_gets_its_deadlines_from_then() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut t: RequestTable<()> = RequestTable::default();
        let a = t.insert(peer(1), (), t0 + 9 * s, Some(t0 + s));
        let b = t.insert(peer(1), (), t0 + 9 * s, None);
        let c = t.insert(peer(2), (), t0 + 9 * s, Some(t0 + s));
        assert!(!t.get(a).unwrap().on_wire);
        let out = t.on_wire(a, t0 + 5 * s, t0 + 3 * s).unwrap();
        assert!(out.on_wire);
        assert_eq!(
            (out.deadline, out.soft_deadline),
            (t0 + 5 * s, Some(t0 + 3 * s))
        );
        let out = t.on_wire(b, t0 + 20 * s, t0 + 3 * s).unwrap();
        assert_eq!(out.deadline, t0 + 9 * s, "never past its limit");
        assert_eq!(out.soft_deadline, None, "no soft deadline, none added");
        assert!(t.on_wire(RequestId(99), t0, t0).is_none(), "unknown");
        assert_eq!(t.pop_soft_expired(t0 + s).map(|(id, _)| id), Some(c));
        assert!(t.pop_soft_expired(t0 + 2 * s).is_none());
        assert_eq!(t.pop_soft_expired(t0 + 3 * s).map(|(id, _)| id), Some(a));
        assert_eq!(t.pop_expired(t0 + 5 * s).map(|(id, _)| id), Some(a));
        assert_eq!(t.pop_expired(t0 + 9 * s).map(|(id, _)| id), Some(b));
    }

    #[test]
    fn an_answer_moves_the_peers_other_deadlines_on_the_wire_only() {
        let t0 = crate::test_epoch();
        let s = Duration::from_secs(1);
        let mut t: RequestTable<()> = RequestTable::default();
        let early = t.insert(peer(1), (), t0 + 9 * s, None);
        let late = t.insert(peer(1), (), t0 + 9 * s, None);
        let capped = t.insert(peer(1), (), t0 + 4 * s, None);
        let waiting = t.insert(peer(1), (), t0 + 9 * s, None);
        let other = t.insert(peer(2), (), t0 + 9 * s, None);
        t.on_wire(early, t0 + 2 * s, t0);
        t.on_wire(late, t0 + 7 * s, t0);
        t.on_wire(capped, t0 + 2 * s, t0);
        t.on_wire(other, t0 + 2 * s, t0);
        t.on_progress(&peer(1), t0 + 6 * s);
        let deadline = |id| t.get(id).unwrap().deadline;
        assert_eq!(deadline(early), t0 + 6 * s, "moved");
        assert_eq!(deadline(late), t0 + 7 * s, "never sooner");
        assert_eq!(deadline(capped), t0 + 4 * s, "never past its limit");
        assert_eq!(deadline(waiting), t0 + 9 * s, "not on the wire: its limit");
        assert_eq!(deadline(other), t0 + 2 * s, "other peers alone");
        t.remove(early);
        t.on_progress(&peer(1), t0 + 8 * s);
        assert_eq!(t.get(late).unwrap().deadline, t0 + 8 * s);
        assert_eq!(t.pop_expired(t0 + 2 * s).map(|(id, _)| id), Some(other));
        assert_eq!(t.pop_expired(t0 + 4 * s).map(|(id, _)| id), Some(capped));
        assert_eq!(t.pop_expired(t0 + 8 * s).map(|(id, _)| id), Some(late));
        assert_eq!(t.pop_expired(t0 + 9 * s).map(|(id, _)| id), Some(waiting));
        assert!(t.is_empty());
        t.on_progress(&peer(1), t0 + 10 * s);
        assert_eq!(t.next_deadline(), None, "nothing left to move");
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
