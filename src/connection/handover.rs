//! The first acknowledgement on a connection's new path: QUIC PINGs after a
//! path switch until one comes back.
//!
//! When the path layer moves a connection onto another path (a fall back to
//! the relay circuit, an upgrade, a NAT rebinding followed) quinn is told to
//! start its congestion control and RTT estimate afresh, and one PING goes
//! out so that its acknowledgement shows, within a round trip of the new
//! path, which packets the old one lost. quinn's probe timeout is not reset
//! by the switch, though: it stays backed off for as long as the old path
//! was dying. When that one PING is lost as well (a burst of loss on a bad
//! cellular link), nothing else goes out until the backed-off probe timeout
//! fires, seconds later, however well the new path works meanwhile; on the
//! link ladder's very bad cellular rung a fallen-back pair sent nothing over
//! a relay that answered for 2.5 s, and its circuit was judged silent.
//!
//! So after a switch the connection PINGs again after [`FIRST_GAP`], then
//! at gaps doubling up to [`MAX_GAP`], until quinn has received an ACK frame
//! since the switch, and at most [`MAX_PINGS`] times. The first ACK resets
//! quinn's backed-off timer and lets its loss detection resend what the old
//! path lost. The cost: a few PINGs of some 40 bytes per switch, none once
//! the new path answers.

use std::time::{Duration, Instant};

/// The wait after the switch's own PING before the first repeat.
pub const FIRST_GAP: Duration = Duration::from_millis(200);

/// The longest wait between two PINGs.
pub const MAX_GAP: Duration = Duration::from_millis(800);

/// PINGs repeated after one switch at most (some 7 s of them): by then a
/// watched connection's silence has been judged.
pub const MAX_PINGS: u32 = 10;

/// One connection's watch for the first acknowledgement on its new path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handover {
    /// ACK frames quinn had received when the path switched.
    acks_at_switch: u64,
    /// When the next PING is due, while no ACK came since the switch.
    next: Option<Instant>,
    /// PINGs repeated since the switch.
    sent: u32,
}

impl Handover {
    /// The connection switched paths at `now`, quinn having received
    /// `acks_received` ACK frames so far (the switch's own PING is sent by
    /// the caller).
    pub fn switched(&mut self, now: Instant, acks_received: u64) {
        *self = Self {
            acks_at_switch: acks_received,
            next: now.checked_add(FIRST_GAP),
            sent: 0,
        };
    }

    /// Takes in the ACK frames quinn received so far: one since the switch
    /// ends the watch.
    pub fn observe(&mut self, acks_received: u64) {
        if acks_received != self.acks_at_switch {
            self.next = None;
        }
    }

    /// When the next PING is due, while one is owed.
    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Whether a PING is due at `now`; if so it is taken as sent and the
    /// next one is scheduled (none after [`MAX_PINGS`]).
    pub fn take_due(&mut self, now: Instant) -> bool {
        let due = self.next.is_some_and(|at| at <= now);
        if due {
            self.sent += 1;
            let gap = FIRST_GAP
                .saturating_mul(2u32.saturating_pow(self.sent))
                .min(MAX_GAP);
            self.next = (self.sent < MAX_PINGS)
                .then(|| now.checked_add(gap))
                .flatten();
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn pings_repeat_at_doubling_gaps_until_the_cap() {
        let t0 = crate::test_epoch();
        let mut handover = Handover::default();
        assert_eq!(handover.deadline(), None, "no switch, nothing owed");
        handover.switched(t0, 7);
        handover.observe(7);
        let mut times = Vec::new();
        let mut now = t0;
        while let Some(next) = handover.deadline() {
            assert!(!handover.take_due(next - Duration::from_millis(1)));
            now = next;
            assert!(handover.take_due(now));
            times.push(now.duration_since(t0).as_millis());
        }
        assert_eq!(
            times,
            [200, 600, 1400, 2200, 3000, 3800, 4600, 5400, 6200, 7000]
        );
        assert!(!handover.take_due(at(now, 10_000)), "capped");
    }

    #[test]
    fn an_acknowledgement_since_the_switch_ends_the_watch() {
        let t0 = crate::test_epoch();
        let mut handover = Handover::default();
        handover.switched(t0, 3);
        assert!(handover.take_due(at(t0, 200)));
        handover.observe(4);
        assert_eq!(handover.deadline(), None);
        assert!(!handover.take_due(at(t0, 5_000)));
        // A later switch watches anew from the count then.
        handover.switched(at(t0, 6_000), 4);
        assert_eq!(handover.deadline(), Some(at(t0, 6_200)));
    }
}
