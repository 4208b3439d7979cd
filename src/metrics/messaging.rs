//! Labels of the messaging families (what this node refused of others'
//! calls and publications), and the copy of the RPC and pub/sub counters
//! into [`Metrics`].

use super::relay::set;
use super::{Metrics, label_enum};
use crate::pubsub::PubSubStats;
use crate::rpc::Refusals;

label_enum!(
    /// Why an incoming CALL was answered with an ERROR before reaching the
    /// application.
    CallRefusal, "reason", {
        /// The procedure is not registered here.
        UnknownProcedure => "unknown_procedure",
        /// The payload is over the limit.
        TooLarge => "too_large",
        /// The callers' access list refused the caller.
        Unauthorized => "unauthorized",
        /// Every handler slot was taken.
        Overloaded => "overloaded",
        /// The caller already held its share of the handler slots.
        CallerShare => "caller_share",
        /// The procedure already had its own limit of calls in progress.
        ProcedureLimit => "procedure_limit",
    }
);

label_enum!(
    /// Why a received PUBLISH was dropped.
    PublishDrop, "reason", {
        /// No subscription of ours matches its topic.
        Unsolicited => "unsolicited",
        /// The publishers' access list refused the publisher on its topic.
        Unauthorized => "unauthorized",
        /// Its sequence number was too far ahead (or `u64::MAX`).
        OutOfWindow => "out_of_window",
        /// Already delivered or buffered.
        Duplicate => "duplicate",
        /// Of an older epoch than the publisher's current one.
        Stale => "stale",
    }
);

impl Metrics {
    /// Copies the monotonic counters of the RPC handler's refusals and of
    /// the pub/sub receiving side.
    pub fn copy_messaging_counters(&mut self, refusals: &Refusals, pubsub: &PubSubStats) {
        set(
            &mut self.rpc_calls_refused,
            [
                (CallRefusal::UnknownProcedure, refusals.unknown_procedure),
                (CallRefusal::TooLarge, refusals.too_large),
                (CallRefusal::Unauthorized, refusals.unauthorized),
                (CallRefusal::Overloaded, refusals.overloaded),
                (CallRefusal::CallerShare, refusals.caller_share),
                (CallRefusal::ProcedureLimit, refusals.procedure_limit),
            ],
        );
        let receiver = &pubsub.receiver;
        set(
            &mut self.pubsub_received_dropped,
            [
                (PublishDrop::Unsolicited, pubsub.unsolicited),
                (PublishDrop::Unauthorized, pubsub.unauthorized),
                (PublishDrop::OutOfWindow, receiver.out_of_window),
                (PublishDrop::Duplicate, receiver.duplicates),
                (PublishDrop::Stale, receiver.stale),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::ReceiverStats;

    #[test]
    fn every_messaging_counter_lands_under_its_label() {
        let refusals = Refusals {
            unknown_procedure: 1,
            too_large: 2,
            unauthorized: 3,
            overloaded: 4,
            caller_share: 5,
            procedure_limit: 11,
        };
        let pubsub = PubSubStats {
            unsolicited: 6,
            unauthorized: 7,
            receiver: ReceiverStats {
                out_of_window: 8,
                duplicates: 9,
                stale: 10,
                ..ReceiverStats::default()
            },
            ..PubSubStats::default()
        };
        let mut metrics = Metrics::new();
        metrics.copy_messaging_counters(&refusals, &pubsub);
        let calls: Vec<u64> = metrics.rpc_calls_refused.iter().map(|(_, n)| *n).collect();
        assert_eq!(calls, [1, 2, 3, 4, 5, 11]);
        assert_eq!(*metrics.rpc_calls_refused.get(CallRefusal::CallerShare), 5);
        let drops: Vec<u64> = (metrics.pubsub_received_dropped.iter())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(drops, [6, 7, 8, 9, 10]);
        assert_eq!(
            *metrics
                .pubsub_received_dropped
                .get(PublishDrop::OutOfWindow),
            8
        );
    }
}
