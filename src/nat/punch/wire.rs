//! Translation between the punch's types and the hole-punch frames.
//!
//! The punch speaks [`Candidate`]s and [`NatClass`]es; on a connection they travel as the
//! candidate and NAT fields of PUNCH_OFFER and PUNCH_ANSWER (docs/PROTOCOL.md §13). Codes
//! this version does not know read as uncertain, candidates of an unknown type are dropped.

use super::candidate::{Candidate, CandidateKind};
use super::oracle::NatClass;
use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};
use crate::wire::{
    AllocationCode, CandidateType, FilteringCode, MappingCode, NatInfo, WireCandidate,
};

impl From<Candidate> for WireCandidate {
    fn from(c: Candidate) -> Self {
        let kind = match c.kind {
            // A searched port is a guessed one, like a prediction.
            CandidateKind::Predicted | CandidateKind::Searched => CandidateType::Predicted,
            CandidateKind::Reflexive => CandidateType::Reflexive,
            CandidateKind::PeerReflexive => CandidateType::PeerReflexive,
            CandidateKind::Lan => CandidateType::Lan,
        };
        Self { kind, addr: c.addr }
    }
}

impl WireCandidate {
    /// The candidate, or `None` for a type this version does not know.
    pub fn candidate(&self) -> Option<Candidate> {
        let kind = match self.kind {
            CandidateType::Predicted => CandidateKind::Predicted,
            CandidateType::Reflexive => CandidateKind::Reflexive,
            CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
            CandidateType::Lan => CandidateKind::Lan,
            CandidateType::Unknown(_) => return None,
        };
        Some(Candidate::new(kind, self.addr))
    }
}

impl From<NatClass> for NatInfo {
    fn from(class: NatClass) -> Self {
        let mapping = match class.mapping {
            MappingBehaviour::Uncertain => MappingCode::Uncertain,
            MappingBehaviour::EndpointIndependent => MappingCode::EndpointIndependent,
            MappingBehaviour::AddressDependent => MappingCode::AddressDependent,
            MappingBehaviour::AddressAndPortDependent => MappingCode::AddressAndPortDependent,
            MappingBehaviour::DestinationDependent => MappingCode::DestinationDependent,
        };
        let filtering = match class.filtering {
            FilteringBehaviour::Uncertain => FilteringCode::Uncertain,
            FilteringBehaviour::EndpointIndependent => FilteringCode::EndpointIndependent,
            FilteringBehaviour::AddressDependent => FilteringCode::AddressDependent,
            FilteringBehaviour::AddressAndPortDependent => FilteringCode::AddressAndPortDependent,
        };
        let (allocation, step) = match class.ports {
            PortAllocation::Uncertain => (AllocationCode::Uncertain, 0),
            PortAllocation::Preserving => (AllocationCode::Preserving, 0),
            PortAllocation::Sequential { step } => (AllocationCode::Sequential, step),
            PortAllocation::Random => (AllocationCode::Random, 0),
        };
        Self {
            mapping,
            filtering,
            allocation,
            // Two's complement of a step that fits 16 bits (classification keeps it small).
            port_step: i16::try_from(step).unwrap_or(0) as u16,
        }
    }
}

impl From<&NatInfo> for NatClass {
    /// Codes this version does not know read as uncertain.
    fn from(info: &NatInfo) -> Self {
        let mapping = match info.mapping {
            MappingCode::EndpointIndependent => MappingBehaviour::EndpointIndependent,
            MappingCode::AddressDependent => MappingBehaviour::AddressDependent,
            MappingCode::AddressAndPortDependent => MappingBehaviour::AddressAndPortDependent,
            MappingCode::DestinationDependent => MappingBehaviour::DestinationDependent,
            MappingCode::Uncertain | MappingCode::Unknown(_) => MappingBehaviour::Uncertain,
        };
        let filtering = match info.filtering {
            FilteringCode::EndpointIndependent => FilteringBehaviour::EndpointIndependent,
            FilteringCode::AddressDependent => FilteringBehaviour::AddressDependent,
            FilteringCode::AddressAndPortDependent => FilteringBehaviour::AddressAndPortDependent,
            FilteringCode::Uncertain | FilteringCode::Unknown(_) => FilteringBehaviour::Uncertain,
        };
        let ports = match info.allocation {
            AllocationCode::Preserving => PortAllocation::Preserving,
            AllocationCode::Sequential => PortAllocation::Sequential {
                step: i32::from(info.port_step as i16),
            },
            AllocationCode::Random => PortAllocation::Random,
            AllocationCode::Uncertain | AllocationCode::Unknown(_) => PortAllocation::Uncertain,
        };
        NatClass {
            mapping,
            filtering,
            ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_classes_and_candidates_survive_the_wire_types() {
        let class = NatClass {
            mapping: MappingBehaviour::AddressAndPortDependent,
            filtering: FilteringBehaviour::AddressDependent,
            ports: PortAllocation::Sequential { step: -2 },
        };
        let info = NatInfo::from(class);
        assert_eq!(info.port_step, 0xfffe);
        assert_eq!(NatClass::from(&info), class);
        assert_eq!(
            NatClass::from(&NatInfo::from(NatClass::OPEN)),
            NatClass::OPEN
        );
        let unknown = NatInfo {
            mapping: MappingCode::Unknown(9),
            ..info
        };
        assert_eq!(
            NatClass::from(&unknown).mapping,
            MappingBehaviour::Uncertain
        );
        let c = Candidate::new(CandidateKind::PeerReflexive, "192.0.2.1:9".parse().unwrap());
        assert_eq!(WireCandidate::from(c).candidate(), Some(c));
        let odd = WireCandidate {
            kind: CandidateType::Unknown(7),
            addr: c.addr,
        };
        assert_eq!(odd.candidate(), None);
    }
}
