//! One beat for the keep-alives of the connections we dialed over relay
//! circuits, so that they leave together and share the relay connection's
//! packets.
//!
//! Each circuit packet is a frame on our connection to the relay, and QUIC
//! packs the frames written in one turn into as few packets as fit. Left to
//! quinn, every connection over a circuit PINGs on its own timer (its
//! keep-alive runs from the last packet it received), so an idle node with
//! a hundred of them sends a relay-connection packet for each PING, and
//! acknowledges one relay packet for each of the peers' ACKs: two datagrams
//! per connection per keep-alive period (README, "Idle cost").
//!
//! So the node PINGs every connection it dialed that runs over a circuit at
//! one instant every period (the circuit dialer's keep-alive,
//! [`crate::quic::TransportSettings::acceptor_keep_alive`]), counted from
//! the node's start. quinn's own keep-alive comes due a period after the
//! last packet received, here the ACK of the beat's PING, so the next beat
//! comes first by that ACK's delay and quinn's timer never fires while the
//! node is driven on time (should both come due in one turn, they ask for
//! the same PING); a connection made between two beats PINGs once on its
//! own at most before it joins them. The PINGs
//! of one beat leave in the same relay-connection packets, a few packets
//! for a hundred connections, and the peers' ACKs come back close together.

use std::time::{Duration, Instant};

/// The node's keep-alive beat: one instant every `period` from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beat {
    period: Duration,
    next: Instant,
}

impl Beat {
    /// A beat every `period` from `start` (the first at `start + period`).
    /// A zero period reads as one millisecond.
    pub fn new(start: Instant, period: Duration) -> Self {
        let period = period.max(Duration::from_millis(1));
        Self {
            period,
            next: start.checked_add(period).unwrap_or(start),
        }
    }

    /// When the next beat is.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Whether a beat is due at `now`; if so it is taken, and the next one
    /// is the first beat after `now` (beats missed while the node was not
    /// driven are not made up).
    pub fn take_due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        let missed = now.saturating_duration_since(self.next).as_nanos() / self.period.as_nanos();
        let periods = u32::try_from(missed + 1).unwrap_or(u32::MAX);
        let step = self.period.saturating_mul(periods);
        self.next = self.next.checked_add(step).unwrap_or(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_fall_on_whole_periods_from_the_start_and_missed_ones_are_not_made_up() {
        let t0 = crate::test_epoch();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut beat = Beat::new(t0, Duration::from_secs(30));
        assert_eq!(beat.deadline(), at(30_000));
        assert!(!beat.take_due(at(29_999)));
        assert!(beat.take_due(at(30_004)), "a late wake-up takes the beat");
        assert_eq!(beat.deadline(), at(60_000), "the grid does not drift");
        assert!(!beat.take_due(at(30_005)), "one beat, taken once");
        assert!(beat.take_due(at(125_000)), "after a long pause");
        assert_eq!(beat.deadline(), at(150_000), "the next on the grid");
    }

    #[test]
    fn a_zero_period_still_moves_on() {
        let t0 = crate::test_epoch();
        let mut beat = Beat::new(t0, Duration::ZERO);
        assert!(beat.take_due(t0 + Duration::from_millis(5)));
        assert!(beat.deadline() > t0 + Duration::from_millis(5));
    }
}
