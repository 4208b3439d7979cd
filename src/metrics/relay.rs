//! Labels of the relay's families, and the copy of the node's
//! [`RelayCounters`] into [`Metrics`].

use super::{Metrics, PerLabel, label_enum};
use crate::relay::RelayCounters;

label_enum!(
    /// Why this node, as a relay, refused a reservation or circuit request.
    RelayRefusal, "reason", {
        /// Relaying is disabled here.
        Disabled => "disabled",
        /// The circuit's target holds no reservation here.
        NoReservation => "no_reservation",
        /// A reservation or circuit limit (in total or per node) was reached.
        Limit => "limit",
        /// A per-IP reservation or circuit limit was reached.
        IpLimit => "ip_limit",
        /// The target's connection to this relay is gone.
        Unreachable => "unreachable",
        /// The request was malformed.
        BadRequest => "bad_request",
    }
);

label_enum!(
    /// A reservation change, on either side of the relay.
    ReservationChange, "change", {
        /// Relay side: a peer's reservation was granted or renewed.
        Granted => "granted",
        /// Relay side: a peer's reservation ended (released, expired, its
        /// connection lost).
        Ended => "ended",
        /// Client side: a relay granted or renewed our reservation.
        Acquired => "acquired",
        /// Client side: our reservation was lost or refused.
        Lost => "lost",
    }
);

label_enum!(
    /// Why circuit packets were dropped.
    RelayDrop, "reason", {
        /// Relay side: over the sender's per-peer rate limit.
        RateLimit => "rate_limit",
        /// Relay side: over the relay-wide rate limit (sender within its own).
        TotalRate => "total_rate",
        /// Either side: the queue toward one end was full.
        QueueFull => "queue_full",
    }
);

impl Metrics {
    /// Copies the relay's monotonic counters (the node keeps them where
    /// the relay events happen, [`Node::relay_counters`]).
    ///
    /// [`Node::relay_counters`]: crate::node::Node::relay_counters
    pub fn copy_relay_counters(&mut self, counters: &RelayCounters) {
        set(
            &mut self.relay_reservations,
            [
                (ReservationChange::Granted, counters.reservations_granted),
                (ReservationChange::Ended, counters.reservations_ended),
                (ReservationChange::Acquired, counters.reservations_held),
                (ReservationChange::Lost, counters.reservations_lost),
            ],
        );
        set(
            &mut self.relay_refusals,
            [
                (RelayRefusal::Disabled, counters.refused_disabled),
                (RelayRefusal::NoReservation, counters.refused_no_reservation),
                (RelayRefusal::Limit, counters.refused_limit),
                (RelayRefusal::IpLimit, counters.refused_ip_limit),
                (RelayRefusal::Unreachable, counters.refused_unreachable),
                (RelayRefusal::BadRequest, counters.refused_bad_request),
            ],
        );
        set(
            &mut self.relay_dropped_packets,
            [
                (RelayDrop::RateLimit, counters.dropped_rate),
                (RelayDrop::TotalRate, counters.dropped_total_rate),
                (RelayDrop::QueueFull, counters.dropped_queue_full),
            ],
        );
        self.relay_circuits = counters.circuits_opened;
        self.relay_bytes = counters.bytes_forwarded;
        self.relay_connections = counters.relayed_connections;
        self.relay_dead_circuits = counters.dead_circuits;
        self.relay_dead_relays = counters.dead_relays;
        self.relay_silent_relays = counters.silent_relays;
        self.relay_unanswered_circuit_requests = counters.unanswered_circuit_requests;
        self.relay_spare_circuits_opened = counters.spares_opened;
        self.relay_spare_circuits_adopted = counters.spares_adopted;
        self.relay_silent_circuit_ends = counters.silent_circuit_ends;
    }
}

/// Sets each label's counter.
pub(super) fn set<L: super::LabelValue, const N: usize>(
    per: &mut PerLabel<L, u64, N>,
    values: [(L, u64); N],
) {
    for (label, value) in values {
        *per.get_mut(label) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relay_counter_lands_under_its_label() {
        let counters = RelayCounters {
            reservations_granted: 1,
            reservations_ended: 2,
            reservations_held: 3,
            reservations_lost: 4,
            refused_disabled: 5,
            refused_no_reservation: 6,
            refused_limit: 7,
            refused_unreachable: 8,
            refused_bad_request: 9,
            dropped_rate: 10,
            dropped_queue_full: 11,
            circuits_opened: 12,
            bytes_forwarded: 13,
            relayed_connections: 14,
            refused_ip_limit: 15,
            dropped_total_rate: 16,
            dead_circuits: 17,
            dead_relays: 18,
            silent_relays: 19,
            unanswered_circuit_requests: 20,
            spares_opened: 21,
            spares_adopted: 22,
            silent_circuit_ends: 23,
            ..RelayCounters::default()
        };
        let mut metrics = Metrics::new();
        metrics.copy_relay_counters(&counters);
        let reservations: Vec<u64> = metrics.relay_reservations.iter().map(|(_, n)| *n).collect();
        assert_eq!(reservations, [1, 2, 3, 4]);
        assert_eq!(*metrics.relay_reservations.get(ReservationChange::Lost), 4);
        let refusals: Vec<u64> = metrics.relay_refusals.iter().map(|(_, n)| *n).collect();
        assert_eq!(refusals, [5, 6, 7, 15, 8, 9]);
        assert_eq!(*metrics.relay_refusals.get(RelayRefusal::Limit), 7);
        assert_eq!(*metrics.relay_dropped_packets.get(RelayDrop::QueueFull), 11);
        assert_eq!(*metrics.relay_dropped_packets.get(RelayDrop::RateLimit), 10);
        assert_eq!(*metrics.relay_dropped_packets.get(RelayDrop::TotalRate), 16);
        assert_eq!(
            (
                metrics.relay_dead_circuits,
                metrics.relay_dead_relays,
                metrics.relay_silent_relays,
                metrics.relay_unanswered_circuit_requests
            ),
            (17, 18, 19, 20)
        );
        assert_eq!(
            (
                metrics.relay_spare_circuits_opened,
                metrics.relay_spare_circuits_adopted,
                metrics.relay_silent_circuit_ends
            ),
            (21, 22, 23)
        );
        assert_eq!(
            (
                metrics.relay_circuits,
                metrics.relay_bytes,
                metrics.relay_connections
            ),
            (12, 13, 14)
        );
    }
}
