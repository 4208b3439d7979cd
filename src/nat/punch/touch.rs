//! The first packet to each destination, in order and spaced.
//!
//! A NAT that maps every destination to its next sequential port (endpoint-dependent
//! mapping, sequential allocation) gives our k-th new destination the port `last + k`, and
//! the peer probes exactly those predicted ports in the same order ([`super::predict`]).
//! The pair matches only if our NAT sees our first packets to the peer's candidates in the
//! order we sent them. Sent in one burst, they cross our access link together, and a link
//! whose delay varies per packet (jitter) reorders them: the simulator's congested Wi-Fi
//! rung, 12 ms of jitter, left sym-seq × sym-seq relayed in 9 of 20 seeds, its NAT having
//! handed out `last + 1 … last + 6` to the peer's ports in the order 2, 3, 1, 5, 4, 0.
//!
//! So while our own NAT is such a NAT, the first packet to each new destination leaves a
//! gap after the previous one ([`super::PunchConfig::touch_gap`]); later packets to a
//! destination keep their place behind its first. With any other NAT the gap is zero and
//! nothing waits.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::collections::HashMap;

use super::Candidate;

/// A probe held back until its destination's turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Waiting {
    /// When it may leave.
    pub at: Instant,
    /// The extra socket it leaves from (`None`: the main socket).
    pub local: Option<SocketAddr>,
    /// Where it goes.
    pub target: Candidate,
    /// Its IP TTL (`None`: the default).
    pub ttl: Option<u8>,
}

/// When the first packet to each destination may leave, and the probes waiting for it.
/// At most one entry per destination the punch probes (its candidates, a bounded list).
#[derive(Debug)]
pub(super) struct FirstTouches {
    gap: Duration,
    /// When the next new destination may be touched.
    next: Option<Instant>,
    /// Each touched destination's turn.
    turns: HashMap<SocketAddr, Instant>,
    waiting: VecDeque<Waiting>,
}

impl FirstTouches {
    /// Spaces first touches by `gap` (zero: no spacing, nothing is ever held).
    pub fn new(gap: Duration) -> Self {
        Self {
            gap,
            next: None,
            turns: HashMap::default(),
            waiting: VecDeque::new(),
        }
    }

    /// Whether a probe to `target` from `local` with `ttl` may leave at `now`; if not, it is
    /// held until its destination's turn (a destination not seen before gets the next turn).
    pub fn admit(
        &mut self,
        now: Instant,
        local: Option<SocketAddr>,
        target: Candidate,
        ttl: Option<u8>,
    ) -> bool {
        if self.gap.is_zero() {
            return true;
        }
        let turn = match self.turns.get(&target.addr) {
            Some(turn) => *turn,
            None => {
                let turn = self.next.map_or(now, |next| next.max(now));
                self.next = turn.checked_add(self.gap);
                self.turns.insert(target.addr, turn);
                turn
            }
        };
        if turn <= now && self.waiting.iter().all(|h| h.target.addr != target.addr) {
            return true;
        }
        self.waiting.push_back(Waiting {
            at: turn,
            local,
            target,
            ttl,
        });
        false
    }

    /// The held probes whose turn came by `now`, in the order they were held.
    pub fn due(&mut self, now: Instant) -> Vec<Waiting> {
        let (due, rest): (VecDeque<Waiting>, VecDeque<Waiting>) =
            self.waiting.drain(..).partition(|h| h.at <= now);
        self.waiting = rest;
        due.into()
    }

    /// When the next held probe may leave.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().map(|h| h.at).min()
    }

    /// Drops every held probe (the attempt ended or the punch is over); the turns stay, so
    /// a destination keeps its place in the NAT's order.
    pub fn clear(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::punch::CandidateKind;

    fn to(port: u16) -> Candidate {
        Candidate::new(
            CandidateKind::Predicted,
            SocketAddr::from(([198, 51, 100, 2], port)),
        )
    }

    #[test]
    fn new_destinations_take_turns_a_gap_apart_and_repeats_keep_their_place() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let mut touches = FirstTouches::new(ms(25));
        assert!(
            touches.admit(t0, None, to(1), Some(2)),
            "the first leaves at once"
        );
        assert!(touches.admit(t0, None, to(1), None), "and its repeats");
        assert!(!touches.admit(t0, None, to(2), Some(2)));
        assert!(!touches.admit(t0, None, to(3), Some(2)));
        assert!(!touches.admit(t0, None, to(2), None), "behind its first");
        assert_eq!(touches.next_due(), Some(t0 + ms(25)));
        assert!(touches.due(t0 + ms(24)).is_empty());
        let second: Vec<(u16, Option<u8>)> = (touches.due(t0 + ms(25)).iter())
            .map(|h| (h.target.addr.port(), h.ttl))
            .collect();
        assert_eq!(second, [(2, Some(2)), (2, None)]);
        assert_eq!(touches.next_due(), Some(t0 + ms(50)));
        // A destination whose turn passed, with nothing held for it, goes at once.
        assert!(touches.admit(t0 + ms(30), None, to(2), None));
        touches.clear();
        assert_eq!(touches.next_due(), None);
        // Turns outlive a cleared attempt: a new destination comes after the last turn.
        assert!(!touches.admit(t0 + ms(30), None, to(4), None));
        assert_eq!(touches.next_due(), Some(t0 + ms(75)));
    }

    #[test]
    fn without_a_gap_nothing_is_held() {
        let t0 = crate::test_epoch();
        let mut touches = FirstTouches::new(Duration::ZERO);
        for port in 1..10 {
            assert!(touches.admit(t0, None, to(port), Some(2)));
        }
        assert_eq!(touches.next_due(), None);
    }
}
