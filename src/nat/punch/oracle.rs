//! When a direct path is possible at all: the RFC 4787 oracle.
//!
//! A side X receives the other side Y's probes only if X's filter admits the address Y's NAT
//! maps Y's probe to — and X can only open its filter toward addresses it knows or guesses:
//!
//! | Y's mapping toward X                        | X's filter admits Y when X filters ... |
//! | ------------------------------------------- | -------------------------------------- |
//! | endpoint-independent (or no NAT)            | any way: X sends to Y's reflexive address first |
//! | endpoint-dependent, sequential or preserving ports | any way: X sends to the predicted ports |
//! | endpoint-dependent, random ports            | independently of the endpoint (EIF) or by address only (ADF); by address and port (APDF) only through the **birthday search**, which needs X's own mapping endpoint-independent |
//!
//! A direct path needs both directions: `admits(X, Y) && admits(Y, X)`. The birthday search
//! ([`search_side`], see [`crate::nat::punch`]): Y (the hard side) opens many sockets and
//! sends from each toward X's one reflexive address, so Y's NAT holds many mappings toward
//! it; X (the easy side) probes random ports of Y's NAT and, with its endpoint-independent
//! mapping, comes from exactly the address those mappings expect. So a symmetric NAT with
//! random ports and a port-restricted cone (Linux masquerade, a carrier-grade NAT) can meet;
//! two symmetric NATs with random ports and port-dependent filtering rule each other out —
//! RFC 4787 §4.1/§5 and the example the NAT issue gives. Everything uncertain counts as possible:
//! classification is a hint, and a punch is tried unless the classes certainly rule it out.
//! Two hosts behind one NAT are outside this table: their LAN addresses reach each other
//! whatever the NAT does (the punch machine does not skip when both share a public IP).

use crate::nat::stun::{FilteringBehaviour, MappingBehaviour, PortAllocation};

/// What discovery found about the NAT in front of a node (RFC 4787 classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatClass {
    /// How it maps (endpoint-independent for no NAT at all).
    pub mapping: MappingBehaviour,
    /// How it filters (endpoint-independent for no NAT and no firewall).
    pub filtering: FilteringBehaviour,
    /// How it picks ports for new mappings.
    pub ports: PortAllocation,
}

impl NatClass {
    /// No NAT and no filtering: a public host.
    pub const OPEN: NatClass = NatClass {
        mapping: MappingBehaviour::EndpointIndependent,
        filtering: FilteringBehaviour::EndpointIndependent,
        ports: PortAllocation::Preserving,
    };

    /// Nothing known.
    pub const UNKNOWN: NatClass = NatClass {
        mapping: MappingBehaviour::Uncertain,
        filtering: FilteringBehaviour::Uncertain,
        ports: PortAllocation::Uncertain,
    };

    /// Whether this NAT maps a new destination to a new port ("symmetric").
    fn destination_dependent(&self) -> bool {
        matches!(
            self.mapping,
            MappingBehaviour::AddressDependent
                | MappingBehaviour::AddressAndPortDependent
                | MappingBehaviour::DestinationDependent
        )
    }

    /// Whether this NAT's mapping toward a new destination is unknowable in advance: it
    /// depends on the destination and its port is drawn at random.
    fn unpredictable(&self) -> bool {
        self.destination_dependent() && self.ports == PortAllocation::Random
    }

    /// Whether this NAT gives each new destination the next port of a sequence, so the
    /// order in which it sees our first packets decides which port each destination gets
    /// (and a peer predicting our ports must see them in that order).
    pub fn maps_each_destination_to_next_port(&self) -> bool {
        self.destination_dependent() && matches!(self.ports, PortAllocation::Sequential { .. })
    }

    /// Whether a NAT of this class admits probes from a peer behind `other` once it has
    /// sent toward the peer's known or predicted addresses (no search).
    fn admits_plainly(&self, other: &NatClass) -> bool {
        !other.unpredictable() || self.filtering != FilteringBehaviour::AddressAndPortDependent
    }

    /// Whether a NAT of this class admits probes from a peer behind `other`, the birthday
    /// search included: it finds the peer's random mapping when this NAT maps every
    /// destination to one address.
    fn admits(&self, other: &NatClass) -> bool {
        self.admits_plainly(other) || self.mapping == MappingBehaviour::EndpointIndependent
    }
}

/// Whether a direct path between nodes behind NATs of classes `a` and `b` is possible (see
/// the module docs), the birthday search included; `false` only when the classes certainly
/// rule it out.
pub fn direct_possible(a: &NatClass, b: &NatClass) -> bool {
    a.admits(b) && b.admits(a)
}

/// Whether a direct path between `a` and `b` is possible without the birthday search;
/// `false` only when the classes certainly rule it out.
pub(super) fn plainly_possible(a: &NatClass, b: &NatClass) -> bool {
    a.admits_plainly(b) && b.admits_plainly(a)
}

/// The part a side plays in a birthday search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SearchSide {
    /// Behind the endpoint-dependent NAT with random ports: opens many sockets, each
    /// opening a mapping toward the peer's reflexive address.
    Hard,
    /// Behind the endpoint-independent NAT: probes random ports of the hard side's NAT.
    Easy,
}

/// Our part in a birthday search between `local` and `remote`, when the plain punch may
/// not work and the search can: one side is certainly [`unpredictable`](NatClass), the
/// other certainly maps endpoint-independently and does not certainly admit any port of
/// the first side's IP (port-dependent filtering, or filtering discovery could not tell:
/// it rarely can without a reflector on a second IP answering).
pub fn search_side(local: &NatClass, remote: &NatClass) -> Option<SearchSide> {
    let needed = |easy: &NatClass, hard: &NatClass| {
        let admits_any_port = matches!(
            easy.filtering,
            FilteringBehaviour::EndpointIndependent | FilteringBehaviour::AddressDependent
        );
        hard.unpredictable()
            && easy.mapping == MappingBehaviour::EndpointIndependent
            && !admits_any_port
    };
    if needed(local, remote) {
        Some(SearchSide::Easy)
    } else if needed(remote, local) {
        Some(SearchSide::Hard)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(
        mapping: MappingBehaviour,
        filtering: FilteringBehaviour,
        ports: PortAllocation,
    ) -> NatClass {
        NatClass {
            mapping,
            filtering,
            ports,
        }
    }

    #[test]
    fn random_symmetric_rules_out_port_restricted_filtering_only() {
        use FilteringBehaviour::*;
        let random = class(
            MappingBehaviour::AddressAndPortDependent,
            AddressAndPortDependent,
            PortAllocation::Random,
        );
        let sequential = NatClass {
            ports: PortAllocation::Sequential { step: 1 },
            ..random
        };
        let cone = |filtering| {
            class(
                MappingBehaviour::EndpointIndependent,
                filtering,
                PortAllocation::Preserving,
            )
        };
        // A port-restricted cone meets random ports only through the birthday search.
        assert!(direct_possible(&random, &cone(AddressAndPortDependent)));
        assert!(direct_possible(&cone(AddressAndPortDependent), &random));
        let restricted = cone(AddressAndPortDependent);
        assert_eq!(search_side(&random, &restricted), Some(SearchSide::Hard));
        assert_eq!(search_side(&restricted, &random), Some(SearchSide::Easy));
        assert_eq!(search_side(&random, &cone(AddressDependent)), None);
        assert_eq!(search_side(&restricted, &restricted), None);
        assert_eq!(search_side(&random, &random), None);
        assert_eq!(search_side(&random, &NatClass::UNKNOWN), None);
        // What discovery usually reports: the filtering uncertain on both sides.
        let unsure = |c: NatClass| NatClass {
            filtering: Uncertain,
            ..c
        };
        assert_eq!(
            search_side(&unsure(restricted), &unsure(random)),
            Some(SearchSide::Easy)
        );
        assert_eq!(
            search_side(&unsure(random), &unsure(restricted)),
            Some(SearchSide::Hard)
        );
        assert!(!direct_possible(&random, &random));
        assert!(!direct_possible(&random, &sequential));
        assert!(direct_possible(&random, &cone(AddressDependent)));
        assert!(direct_possible(&random, &cone(EndpointIndependent)));
        assert!(direct_possible(&random, &NatClass::OPEN));
        assert!(direct_possible(&sequential, &sequential));
        assert!(direct_possible(&sequential, &cone(AddressAndPortDependent)));
        assert!(direct_possible(&random, &NatClass::UNKNOWN));
        assert!(direct_possible(&NatClass::UNKNOWN, &NatClass::UNKNOWN));
    }
}
