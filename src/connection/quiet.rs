//! The end of the peer's data on a connection, for a node behind a NAT: one
//! QUIC PING when the peer's data stops arriving, so that a NAT mapping
//! lost under a node that only receives (a conntrack flush, a router
//! reboot) is opened again by the PING instead of waiting out the
//! keep-alive.
//!
//! A node that only receives sends nothing but ACKs, and only when
//! something arrives: once its NAT forgets the mapping, the peer's packets
//! die at the NAT, no ACK goes out, and nothing re-opens the mapping until
//! the node's keep-alive (15 s after the last packet it heard). From the
//! inside, the peer's data stopping for good and the NAT dropping it look
//! the same, so the node PINGs once [`TransportSettings::quiet_ping`] after
//! the peer's last STREAM or DATAGRAM frame arrived. A NAT that kept its
//! ports lets the peer's next packet (a new one or a retransmission)
//! through again; a NAT that changed them shows the peer the new address,
//! which the path layer follows.
//!
//! The cost: at most one PING (and the peer's ACK) per run of the peer's
//! data, only on a node that knows it is private. Only the peer's data
//! arms it, never its PINGs or ACKs, so an idle connection (keep-alives
//! only) costs nothing more, and the PING counts as the connection's next
//! keep-alive (quinn restarts that timer on every packet received, the
//! PING's ACK among them).
//!
//! [`TransportSettings::quiet_ping`]: crate::quic::TransportSettings::quiet_ping

use std::time::{Duration, Instant};

use quinn_proto::ConnectionStats;

/// One connection's watch: since when the peer's data has been quiet,
/// while a PING is owed for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quiet {
    data: u64,
    since: Option<Instant>,
}

impl Quiet {
    /// Takes in quinn's counters of the connection at `now`.
    pub fn observe(&mut self, now: Instant, stats: &ConnectionStats) {
        let frames = &stats.frame_rx;
        self.observe_data(now, frames.stream.wrapping_add(frames.datagram));
    }

    /// Takes in the STREAM and DATAGRAM frames received so far: new ones
    /// (re)start the wait from `now`.
    pub fn observe_data(&mut self, now: Instant, data_received: u64) {
        if data_received != self.data {
            self.data = data_received;
            self.since = Some(now);
        }
    }

    /// When a PING is due after `after` of quiet, if one is owed.
    pub fn deadline(&self, after: Duration) -> Option<Instant> {
        self.since.map(|since| since + after)
    }

    /// Whether a PING is due at `now` after `after` of quiet; if so, it is
    /// taken as sent (the next is owed only once new data arrives).
    pub fn take_due(&mut self, now: Instant, after: Duration) -> bool {
        let due = self.deadline(after).is_some_and(|at| at <= now);
        if due {
            self.since = None;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_that_stops_owes_one_ping_after_the_quiet() {
        let t0 = crate::test_epoch();
        let at = |ms| t0 + Duration::from_millis(ms);
        let after = Duration::from_secs(1);
        let mut quiet = Quiet::default();
        quiet.observe_data(at(0), 0);
        assert_eq!(quiet.deadline(after), None, "no data, no PING owed");
        quiet.observe_data(at(100), 3);
        quiet.observe_data(at(300), 5);
        assert_eq!(
            quiet.deadline(after),
            Some(at(1300)),
            "the last data counts"
        );
        quiet.observe_data(at(800), 5);
        assert!(!quiet.take_due(at(1299), after));
        assert!(quiet.take_due(at(1300), after));
        assert!(!quiet.take_due(at(9000), after), "one PING per quiet");
        assert_eq!(quiet.deadline(after), None);
        quiet.observe_data(at(9100), 6);
        assert_eq!(
            quiet.deadline(after),
            Some(at(10_100)),
            "new data, new PING"
        );
    }

    #[test]
    fn a_connection_without_data_never_owes_a_ping() {
        let t0 = crate::test_epoch();
        let mut quiet = Quiet::default();
        for s in 0..10 {
            quiet.observe_data(t0 + Duration::from_secs(s * 15), 0);
        }
        assert!(!quiet.take_due(t0 + Duration::from_secs(600), Duration::ZERO));
    }
}
