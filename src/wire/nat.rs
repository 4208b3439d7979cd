//! Hole-punch coordination (0x6_): candidates, the agreed start and the result, carried
//! on the peers' (relayed) connection (docs/PROTOCOL.md §13).

use std::net::SocketAddr;

use super::field::{wire_enum, wire_struct};
use crate::nat::punch::{Candidate, CandidateKind, NatClass};
use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};

wire_enum! {
    /// Where a candidate address comes from, one byte.
    pub enum CandidateType: u8 {
        /// A predicted port of a sequential allocator.
        Predicted = 0,
        /// Seen by a reflector (server-reflexive).
        Reflexive = 1,
        /// Seen on a probe from the peer (peer-reflexive).
        PeerReflexive = 2,
        /// The node's own socket address on its LAN.
        Lan = 3,
    }
}

wire_struct! {
    /// One candidate: its type and address.
    pub struct WireCandidate {
        /// Where it comes from.
        pub kind: CandidateType,
        /// The address.
        pub addr: SocketAddr,
    }
}

wire_enum! {
    /// A NAT's mapping behaviour (RFC 4787 §4.1), one byte.
    pub enum MappingCode: u8 {
        /// Unknown.
        Uncertain = 0,
        /// The same mapping toward every destination (or no NAT).
        EndpointIndependent = 1,
        /// A mapping per destination IP.
        AddressDependent = 2,
        /// A mapping per destination IP and port.
        AddressAndPortDependent = 3,
        /// Per destination IP, port dependence unknown.
        DestinationDependent = 4,
    }
}

wire_enum! {
    /// A NAT's filtering behaviour (RFC 4787 §5), one byte.
    pub enum FilteringCode: u8 {
        /// Unknown.
        Uncertain = 0,
        /// Anyone may send to a mapping.
        EndpointIndependent = 1,
        /// Only IPs the mapping sent to.
        AddressDependent = 2,
        /// Only the exact addresses the mapping sent to.
        AddressAndPortDependent = 3,
    }
}

wire_enum! {
    /// How a NAT picks ports for new mappings, one byte.
    pub enum AllocationCode: u8 {
        /// Unknown.
        Uncertain = 0,
        /// Keeps the local port.
        Preserving = 1,
        /// Moves by `port_step` per new mapping.
        Sequential = 2,
        /// Random ports.
        Random = 3,
    }
}

wire_struct! {
    /// What the sender knows of the NAT in front of it.
    pub struct NatInfo {
        /// Mapping behaviour.
        pub mapping: MappingCode,
        /// Filtering behaviour.
        pub filtering: FilteringCode,
        /// Port allocation.
        pub allocation: AllocationCode,
        /// For `Sequential`: the step between mappings, a signed 16-bit number in two's
        /// complement; 0 otherwise.
        pub port_step: u16,
    }
}

wire_struct! {
    /// PUNCH_OFFER (0x60): the opener's candidates, NAT and session tag. The sender is the
    /// opener of the first attempt.
    pub struct PunchOffer {
        /// Echoed by the PUNCH_ANSWER, the PUNCH_SYNC and the PUNCH_RESULTs.
        pub request_id: u64,
        /// The session tag that starts every probe's STUN transaction id.
        pub tag: [u8; 8],
        /// The sender's NAT.
        pub nat: NatInfo,
        /// The sender's candidates, at most `max_addrs`.
        pub candidates: Vec<WireCandidate>; Addrs,
    }
}

wire_struct! {
    /// PUNCH_ANSWER (0x61): the follower's candidates and NAT; its arrival gives the
    /// opener the round-trip time.
    pub struct PunchAnswer {
        /// The offer's.
        pub request_id: u64,
        /// The sender's NAT.
        pub nat: NatInfo,
        /// The sender's candidates, at most `max_addrs`.
        pub candidates: Vec<WireCandidate>; Addrs,
    }
}

wire_struct! {
    /// PUNCH_SYNC (0x62): the opener fixes the start. The follower starts `start_in_ms`
    /// after the SYNC arrives; the opener `rtt / 2 + start_in_ms` after sending it.
    pub struct PunchSync {
        /// The offer's.
        pub request_id: u64,
        /// Extra delay before the start, milliseconds.
        pub start_in_ms: u32,
    }
}

wire_enum! {
    /// How a punch ended for its sender, one byte.
    pub enum PunchOutcome: u8 {
        /// A probe was answered.
        Succeeded = 0,
        /// Every attempt failed.
        Failed = 1,
        /// The NAT classes rule a direct path out.
        Skipped = 2,
    }
}

wire_struct! {
    /// PUNCH_RESULT (0x63): how the punch ended for the sender.
    pub struct PunchResult {
        /// The offer's.
        pub request_id: u64,
        /// The outcome.
        pub outcome: PunchOutcome,
        /// Attempts made.
        pub attempts: u8,
        /// For `Succeeded`: the peer address that answered (one entry); empty otherwise.
        pub remote: Vec<SocketAddr>; Addrs,
    }
}

impl From<Candidate> for WireCandidate {
    fn from(c: Candidate) -> Self {
        let kind = match c.kind {
            CandidateKind::Predicted => CandidateType::Predicted,
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
