//! Labels and counts of NAT traversal: the path a connection runs on, the
//! NAT type of each side of a punch, and how punches ended per pair of
//! types.

use super::{Label, LabelValue, PerLabel, label_enum};
use crate::nat::punch::NatClass;
use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};
use crate::path::PathKind;

label_enum!(
    /// Why a dial-back or hole-punch input was refused or ignored
    /// (`nat_refusals_total`).
    NatRefusal, "reason", {
        /// A DIAL_BACK_PROBE refused whole (rate limit, or no target allowed).
        DialBackProbe => "dial_back_probe",
        /// A DIAL_BACK_PROBE target refused (address policy, or another IP
        /// than the sender's while the sender is no dial-back server).
        DialBackTarget => "dial_back_target",
        /// A PUNCH_OFFER or PUNCH_SYNC over the per-connection rate limit.
        PunchRateLimit => "punch_rate_limit",
        /// A peer's punch candidate refused (address policy, unknown type, cap).
        PunchCandidate => "punch_candidate",
        /// A punch or liveness probe or answer without a valid
        /// MESSAGE-INTEGRITY-SHA256.
        Unauthenticated => "unauthenticated",
    }
);

label_enum!(
    /// NAT discovery runs started and how they ended
    /// (`nat_discovery_runs_total`, docs/PROTOCOL.md §10).
    DiscoveryRun, "event", {
        /// A run started.
        Started => "started",
        /// A run produced a report (the node's NAT type and address).
        Reported => "reported",
        /// A run behind a NAT reported private before its dial-backs ended
        /// (`nat::discovery`'s early report).
        ReportedEarly => "reported_early",
        /// No reflector and no dial-back answered a run: the last report,
        /// if any, stands and the run is tried again with backoff.
        Unanswered => "unanswered",
    }
);

label_enum!(
    /// How checks of claimed listen addresses went
    /// (`nat_claim_checks_total`, docs/PROTOCOL.md §12.4).
    ClaimCheckResult, "result", {
        /// A probe sent to a claimed address.
        Probed => "probed",
        /// A claimed address answered under its connection's key: handed
        /// out from now on.
        Verified => "verified",
        /// No valid answer in time: never handed out.
        Failed => "failed",
        /// A claimed address not probed: address policy, or a bound
        /// (pending checks, per network, per target IP, remembered
        /// addresses).
        Refused => "refused",
        /// A request or answer with our tag or transaction id that did not
        /// verify or came from elsewhere, or a valid request over the
        /// answer rate.
        Ignored => "ignored",
    }
);

label_enum!(
    /// What the port-mapping client did (`nat_port_mapping_total`,
    /// [`crate::nat::portmap`]).
    PortMapChange, "event", {
        /// A request sent to the gateway (retransmissions and deletions
        /// included).
        Requested => "requested",
        /// A mapping granted: the first grant, or a new external address.
        Mapped => "mapped",
        /// A mapping renewed before it expired.
        Renewed => "renewed",
        /// A mapping lost (expired unrenewed, or refused on renewal).
        Lost => "lost",
        /// Asking failed (no answer, a refusal, a gateway that speaks
        /// neither protocol); the client tries again later.
        Failed => "failed",
        /// An answer refusing a request (a result code other than success).
        Refused => "refused",
        /// The gateway restarted (its epoch went back): mappings redone.
        GatewayRestarted => "gateway_restarted",
        /// A deletion sent at shutdown.
        Deleted => "deleted",
    }
);

label_enum!(
    /// Why a datagram from the gateway's port-mapping server was dropped
    /// (`nat_port_mapping_dropped_total`).
    PortMapDrop, "reason", {
        /// Not from the gateway's server port.
        WrongSource => "wrong_source",
        /// Truncated, oversized, a request, an unknown version or opcode.
        Malformed => "malformed",
        /// Another nonce or internal port than ours.
        Mismatched => "mismatched",
        /// An answer nobody asked for.
        Unexpected => "unexpected",
    }
);

impl super::Metrics {
    /// Copies what the port-mapping client counted (nothing when port
    /// mapping is off: the families stay at zero).
    pub fn copy_port_mapping(&mut self, stats: &crate::nat::portmap::PortMapStats) {
        self.nat_port_mapping.set_each([
            (PortMapChange::Requested, stats.requests_sent),
            (PortMapChange::Mapped, stats.mapped),
            (PortMapChange::Renewed, stats.renewed),
            (PortMapChange::Lost, stats.lost),
            (PortMapChange::Failed, stats.failed),
            (PortMapChange::Refused, stats.refused),
            (PortMapChange::GatewayRestarted, stats.epoch_resets),
            (PortMapChange::Deleted, stats.deleted),
        ]);
        self.nat_port_mapping_dropped.set_each([
            (PortMapDrop::WrongSource, stats.wrong_source),
            (PortMapDrop::Malformed, stats.malformed),
            (PortMapDrop::Mismatched, stats.mismatched),
            (PortMapDrop::Unexpected, stats.unexpected),
        ]);
    }

    /// Copies the refusal, discovery and claim-check counters the
    /// reachability and upgrade children keep.
    pub fn copy_nat_refusals(
        &mut self,
        reach: &crate::nat::reach::ReachStats,
        upgrades: &crate::path::upgrade::UpgradeCounters,
    ) {
        self.nat_refusals.set_each([
            (NatRefusal::DialBackProbe, reach.probe_requests_refused),
            (NatRefusal::DialBackTarget, reach.probe_targets_refused),
            (NatRefusal::PunchRateLimit, upgrades.frames_rate_limited),
            (NatRefusal::PunchCandidate, upgrades.candidates_refused),
            (NatRefusal::Unauthenticated, upgrades.unauthenticated),
        ]);
        let discovery = &reach.discovery;
        self.nat_discovery_runs.set_each([
            (DiscoveryRun::Started, discovery.runs),
            (DiscoveryRun::Reported, discovery.reports),
            (DiscoveryRun::ReportedEarly, discovery.early_reports),
            (DiscoveryRun::Unanswered, discovery.unanswered_runs),
        ]);
        let claims = &reach.claim_checks;
        self.nat_claim_checks.set_each([
            (ClaimCheckResult::Probed, claims.probed),
            (ClaimCheckResult::Verified, claims.verified),
            (ClaimCheckResult::Failed, claims.failed),
            (ClaimCheckResult::Refused, claims.refused),
            (ClaimCheckResult::Ignored, claims.ignored),
        ]);
    }
}

label_enum!(
    /// Where a connection's packets go.
    ConnectionPath, "path", {
        /// Straight over UDP.
        Direct => "direct",
        /// Through a relay circuit.
        Relayed => "relayed",
    }
);

impl From<PathKind> for ConnectionPath {
    fn from(kind: PathKind) -> Self {
        match kind {
            PathKind::Direct => ConnectionPath::Direct,
            PathKind::Relayed => ConnectionPath::Relayed,
        }
    }
}

label_enum!(
    /// A NAT's type as a label: the RFC 4787 class a node knew, folded into
    /// the kinds that decide a punch. Exported under `local_nat` and
    /// `remote_nat`.
    NatType, "nat", {
        /// Endpoint-independent mapping and filtering: no NAT, or a full cone.
        Open => "open",
        /// Endpoint-independent mapping, filtering by address.
        AddressRestricted => "address_restricted",
        /// Endpoint-independent mapping, filtering by address and port (a
        /// port-restricted cone, Linux masquerade).
        PortRestricted => "port_restricted",
        /// A mapping per destination whose ports are predictable or not
        /// classified.
        Symmetric => "symmetric",
        /// A mapping per destination with random ports.
        SymmetricRandom => "symmetric_random",
        /// Not classified (discovery found too little).
        Unknown => "unknown",
    }
);

impl From<NatClass> for NatType {
    fn from(class: NatClass) -> Self {
        use FilteringBehaviour as F;
        use MappingBehaviour as M;
        match (class.mapping, class.filtering) {
            (M::EndpointIndependent, F::EndpointIndependent) => NatType::Open,
            (M::EndpointIndependent, F::AddressDependent) => NatType::AddressRestricted,
            (M::EndpointIndependent, F::AddressAndPortDependent) => NatType::PortRestricted,
            (M::EndpointIndependent | M::Uncertain, _) => NatType::Unknown,
            _ if class.ports == PortAllocation::Random => NatType::SymmetricRandom,
            _ => NatType::Symmetric,
        }
    }
}

label_enum!(
    /// How a punch ended.
    PunchResult, "result", {
        /// It found a direct path.
        Success => "success",
        /// Every attempt went unanswered.
        Failure => "failure",
        /// The NAT types ruled a direct path out, so no probe was sent.
        Skipped => "skipped",
    }
);

/// The punches of one pair of NAT types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PunchCounts {
    /// Punches started.
    pub attempts: u64,
    /// Punches ended, by result (a punch whose connection was lost first
    /// has no result).
    pub results: PerLabel<PunchResult, u64, 3>,
}

/// Punches per pair of NAT types: ours (`local_nat`), the peer's
/// (`remote_nat`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PunchPairs(PerLabel<NatType, PerLabel<NatType, PunchCounts, 6>, 6>);

impl PunchPairs {
    /// The counts of the pair (ours, the peer's).
    pub fn get(&self, local: NatType, remote: NatType) -> &PunchCounts {
        self.0.get(local).get(remote)
    }

    /// A punch started between NATs of classes `local` (ours) and `remote`.
    pub fn record_attempt(&mut self, local: NatClass, remote: NatClass) {
        let counts = self.pair_mut(local, remote);
        counts.attempts = counts.attempts.saturating_add(1);
    }

    /// A punch between NATs of classes `local` and `remote` ended `result`.
    pub fn record_result(&mut self, local: NatClass, remote: NatClass, result: PunchResult) {
        self.pair_mut(local, remote).results.bump(result);
    }

    fn pair_mut(&mut self, local: NatClass, remote: NatClass) -> &mut PunchCounts {
        self.0.get_mut(local.into()).get_mut(remote.into())
    }

    /// The pairs that saw a punch, with their labels and counts, in label
    /// order (pairs never punched are left out: 36 pairs would be noise).
    pub fn punched(&self) -> impl Iterator<Item = ([Label; 2], &PunchCounts)> + '_ {
        self.0.iter().flat_map(|(local, remotes)| {
            remotes
                .iter()
                .filter(|(_, counts)| counts.attempts > 0 || counts.results.total() > 0)
                .map(move |(remote, counts)| {
                    let labels = [
                        ("local_nat", local.as_str()),
                        ("remote_nat", remote.as_str()),
                    ];
                    (labels, counts)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FilteringBehaviour as F;
    use MappingBehaviour as M;

    /// Endpoint-independent mapping, filtering by address and port.
    const MASQUERADE: NatClass = NatClass {
        filtering: F::AddressAndPortDependent,
        ..NatClass::OPEN
    };

    #[test]
    fn nat_classes_fold_into_the_types_that_decide_a_punch() {
        let symmetric = NatClass {
            mapping: M::AddressAndPortDependent,
            ..MASQUERADE
        };
        let types = [
            (NatClass::OPEN, NatType::Open),
            (NatClass::UNKNOWN, NatType::Unknown),
            (
                NatClass {
                    filtering: F::AddressDependent,
                    ..NatClass::OPEN
                },
                NatType::AddressRestricted,
            ),
            (MASQUERADE, NatType::PortRestricted),
            (
                NatClass {
                    ports: PortAllocation::Random,
                    ..MASQUERADE
                },
                NatType::PortRestricted,
            ),
            (
                NatClass {
                    filtering: F::Uncertain,
                    ..NatClass::OPEN
                },
                NatType::Unknown,
            ),
            (
                NatClass {
                    ports: PortAllocation::Random,
                    ..symmetric
                },
                NatType::SymmetricRandom,
            ),
            (
                NatClass {
                    ports: PortAllocation::Sequential { step: 1 },
                    ..symmetric
                },
                NatType::Symmetric,
            ),
            (
                NatClass {
                    mapping: M::DestinationDependent,
                    ..NatClass::UNKNOWN
                },
                NatType::Symmetric,
            ),
        ];
        for (class, nat) in types {
            assert_eq!(NatType::from(class), nat, "{class:?}");
        }
    }

    #[test]
    fn only_punched_pairs_are_listed_with_both_sides_labelled() {
        let mut pairs = PunchPairs::default();
        let open = NatClass::OPEN;
        pairs.record_attempt(MASQUERADE, open);
        pairs.record_attempt(MASQUERADE, open);
        pairs.record_result(MASQUERADE, open, PunchResult::Success);
        let listed: Vec<_> = pairs.punched().collect();
        assert_eq!(listed.len(), 1);
        let (labels, counts) = &listed[0];
        assert_eq!(
            labels,
            &[("local_nat", "port_restricted"), ("remote_nat", "open")]
        );
        assert_eq!(counts.attempts, 2);
        assert_eq!(*counts.results.get(PunchResult::Success), 1);
        let reverse = pairs.get(NatType::Open, NatType::PortRestricted);
        assert_eq!(reverse.attempts, 0);
    }
}
