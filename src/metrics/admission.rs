//! What admission refused (the node's front door, docs of
//! `crate::connection::admission`), as metric families.

use super::{Family, PerLabel, Series, Value, Visitor, counter, counters, label_enum};
use crate::connection::admission::AdmissionCounters;

label_enum!(
    /// Why a stranger's handshake, connection or PING was turned away.
    AdmissionRefusal, "reason", {
        /// Asked to prove its address first (QUIC Retry sent).
        Retry => "retry",
        /// Too many incoming handshakes in progress.
        Handshakes => "handshakes",
        /// Too many connections from the source network.
        SourceNetwork => "source_network",
        /// Too many connections awaiting CONNECT.
        AwaitingConnect => "awaiting_connect",
        /// Too many connections of the node id.
        NodeId => "node_id",
        /// A PING over the per-connection rate, left unanswered.
        PingRate => "ping_rate",
        /// New handshakes over the node-wide or the source network's rate.
        HandshakeRate => "handshake_rate",
        /// A connection closed for flooding (PINGs far over the rate).
        Flooding => "flooding",
    }
);

/// `p2p_admission_refusals_total`.
pub const P2P_ADMISSION_REFUSALS: Family = Family::counter(
    "p2p_admission_refusals_total",
    "Handshakes, connections and PINGs turned away at admission, by reason",
);
/// `p2p_handshakes_in_progress`.
pub const P2P_HANDSHAKES_IN_PROGRESS: Family = Family::gauge(
    "p2p_handshakes_in_progress",
    "Incoming QUIC handshakes in progress now",
);
/// `p2p_connections_awaiting_connect`.
pub const P2P_CONNECTIONS_AWAITING_CONNECT: Family = Family::gauge(
    "p2p_connections_awaiting_connect",
    "Inbound connections past their handshake whose CONNECT has not come yet",
);
/// `p2p_protocol_errors_total`.
pub const P2P_PROTOCOL_ERRORS: Family = Family::counter(
    "p2p_protocol_errors_total",
    "Frames or streams of peers that broke the protocol",
);

/// The admission families' values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionMetrics {
    /// Refusals, by reason.
    pub refusals: PerLabel<AdmissionRefusal, u64, 8>,
    /// Incoming handshakes in progress now.
    pub handshakes: u64,
    /// Inbound connections awaiting CONNECT now.
    pub awaiting_connect: u64,
    /// Protocol errors of peers.
    pub protocol_errors: u64,
}

impl AdmissionMetrics {
    /// Copies admission's counters and gauges.
    pub fn copy(&mut self, counters: &AdmissionCounters, handshakes: usize, awaiting: usize) {
        for (reason, value) in [
            (AdmissionRefusal::Retry, counters.retries),
            (AdmissionRefusal::Handshakes, counters.refused_handshakes),
            (
                AdmissionRefusal::SourceNetwork,
                counters.refused_source_network,
            ),
            (
                AdmissionRefusal::AwaitingConnect,
                counters.refused_awaiting_connect,
            ),
            (AdmissionRefusal::NodeId, counters.refused_node_id),
            (AdmissionRefusal::PingRate, counters.pings_unanswered),
            (
                AdmissionRefusal::HandshakeRate,
                counters.refused_handshake_rate,
            ),
            (AdmissionRefusal::Flooding, counters.closed_flooding),
        ] {
            *self.refusals.get_mut(reason) = value;
        }
        self.handshakes = handshakes as u64;
        self.awaiting_connect = awaiting as u64;
    }

    pub(super) fn visit(&self, visitor: &mut impl Visitor) {
        visitor.family(&P2P_ADMISSION_REFUSALS, &counters(&self.refusals));
        for (family, value) in [
            (&P2P_HANDSHAKES_IN_PROGRESS, self.handshakes),
            (&P2P_CONNECTIONS_AWAITING_CONNECT, self.awaiting_connect),
        ] {
            let gauge = Series {
                labels: &[],
                value: Value::Gauge(value as f64),
            };
            visitor.family(family, &[gauge]);
        }
        visitor.family(&P2P_PROTOCOL_ERRORS, &[counter(self.protocol_errors)]);
    }
}
