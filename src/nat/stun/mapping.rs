//! Mapping behaviour (RFC 4787 §4.1) from what several reflectors reported, as far as they can
//! tell it.
//!
//! All observations must come from one local socket. Pairs of observations are compared by how
//! their reflectors differ: the same mapping toward two reflector IPs means the NAT maps
//! independently of the destination; a different mapping toward two ports of one IP means it
//! maps per destination port. Reflectors of different address families are never compared.
//! When the observations contradict each other (one reflector saw two mappings, or the mapping
//! changed with the port but not with the IP) or cannot separate the classes, the answer is
//! [`MappingBehaviour::Uncertain`], and hole punching is still tried.

use std::net::SocketAddr;

use super::client::BindingOutcome;

/// One reflector's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Where the request went: the NAT's mapping is the one toward this address, even when a
    /// CHANGE-REQUEST had the answer come from elsewhere.
    pub reflector: SocketAddr,
    /// The reflexive address it reported.
    pub mapped: SocketAddr,
}

impl Observation {
    /// The observation in a successful transaction's outcome.
    pub fn from_outcome(outcome: &BindingOutcome) -> Option<Observation> {
        let mapping = outcome.result.as_ref().ok()?;
        Some(Observation {
            reflector: outcome.reflector,
            mapped: mapping.mapped,
        })
    }
}

/// How the NAT in front of a socket picks the external address for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingBehaviour {
    /// One mapping for every destination (or no NAT at all): the reflexive address works
    /// toward anyone.
    EndpointIndependent,
    /// One mapping per destination IP, whatever its port.
    AddressDependent,
    /// One mapping per destination IP and port ("symmetric").
    AddressAndPortDependent,
    /// The mapping changes with the destination IP; whether with its port too, the
    /// reflectors cannot tell (no two of them share an IP).
    DestinationDependent,
    /// Too few or contradictory observations.
    Uncertain,
}

/// Classifies the mapping behaviour seen through `observations` (see the module docs).
pub fn classify_mapping(observations: &[Observation]) -> MappingBehaviour {
    let mut contradiction = false;
    let (mut other_ip_seen, mut other_ip_changes, mut other_ip_same) = (false, false, false);
    let (mut other_port_seen, mut other_port_changes) = (false, false);
    for (i, a) in observations.iter().enumerate() {
        for b in &observations[i + 1..] {
            let (ra, rb) = (canonical(a.reflector), canonical(b.reflector));
            if ra.is_ipv4() != rb.is_ipv4() {
                continue;
            }
            let changed = canonical(a.mapped) != canonical(b.mapped);
            if ra == rb {
                contradiction |= changed;
            } else if ra.ip() == rb.ip() {
                other_port_seen = true;
                other_port_changes |= changed;
            } else {
                other_ip_seen = true;
                other_ip_changes |= changed;
                other_ip_same |= !changed;
            }
        }
    }
    // Two IPs sharing a mapping rules out every class but endpoint-independent, so any
    // change elsewhere contradicts it (a mapping that expired and was remade, a NAT pooling
    // addresses arbitrarily).
    if contradiction || (other_ip_same && (other_ip_changes || other_port_changes)) {
        return MappingBehaviour::Uncertain;
    }
    match (
        other_ip_seen,
        other_ip_changes,
        other_port_seen,
        other_port_changes,
    ) {
        (_, _, _, true) => MappingBehaviour::AddressAndPortDependent,
        (true, false, _, _) => MappingBehaviour::EndpointIndependent,
        (true, true, true, false) => MappingBehaviour::AddressDependent,
        (true, true, false, _) => MappingBehaviour::DestinationDependent,
        (false, ..) => MappingBehaviour::Uncertain,
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use MappingBehaviour::*;

    /// (reflector, mapped) pairs to observations.
    fn seen(pairs: &[(&str, &str)]) -> Vec<Observation> {
        pairs
            .iter()
            .map(|(reflector, mapped)| Observation {
                reflector: reflector.parse().unwrap(),
                mapped: mapped.parse().unwrap(),
            })
            .collect()
    }

    const R1: &str = "192.0.2.1:3478";
    const R1_PORT2: &str = "192.0.2.1:3479";
    const R2: &str = "198.51.100.1:3478";
    const R2_PORT2: &str = "198.51.100.1:3479";
    const R6: &str = "[2001:db8::1]:3478";
    const M1: &str = "203.0.113.5:40000";
    const M2: &str = "203.0.113.5:40001";
    const M3: &str = "203.0.113.5:40002";
    const M6: &str = "[2001:db8:1::5]:40000";

    /// A case's name, its (reflector, mapped) pairs and the expected verdict.
    type Row = (
        &'static str,
        &'static [(&'static str, &'static str)],
        MappingBehaviour,
    );

    #[test]
    fn the_classification_table() {
        let table: &[Row] = &[
            ("nothing seen", &[], Uncertain),
            ("one reflector", &[(R1, M1)], Uncertain),
            (
                "same mapping from two IPs",
                &[(R1, M1), (R2, M1)],
                EndpointIndependent,
            ),
            (
                "same mapping from two IPs and two ports",
                &[(R1, M1), (R1_PORT2, M1), (R2, M1)],
                EndpointIndependent,
            ),
            (
                "two IPs differ, two ports of one IP agree",
                &[(R1, M1), (R1_PORT2, M1), (R2, M2)],
                AddressDependent,
            ),
            (
                "two IPs differ, two ports of one IP differ",
                &[(R1, M1), (R1_PORT2, M2), (R2, M3)],
                AddressAndPortDependent,
            ),
            (
                "two IPs differ, no shared IP",
                &[(R1, M1), (R2, M2)],
                DestinationDependent,
            ),
            (
                "two ports of one IP differ, one IP only",
                &[(R1, M1), (R1_PORT2, M2)],
                AddressAndPortDependent,
            ),
            (
                "two ports of one IP agree, one IP only",
                &[(R1, M1), (R1_PORT2, M1)],
                Uncertain,
            ),
            (
                "changes with the port but not with the IP",
                &[(R1, M1), (R1_PORT2, M2), (R2, M1)],
                Uncertain,
            ),
            (
                "one reflector, two mappings",
                &[(R1, M1), (R1, M2), (R2, M1)],
                Uncertain,
            ),
            (
                "families are not compared",
                &[(R1, M1), (R6, M6)],
                Uncertain,
            ),
            (
                "IPv4-mapped reflectors are IPv4",
                &[("[::ffff:192.0.2.1]:3478", M1), (R2, M1)],
                EndpointIndependent,
            ),
            (
                "both IPs on two ports each, all alike",
                &[(R1, M1), (R1_PORT2, M1), (R2, M1), (R2_PORT2, M1)],
                EndpointIndependent,
            ),
        ];
        for (name, pairs, expected) in table {
            assert_eq!(classify_mapping(&seen(pairs)), *expected, "{name}");
        }
    }
}
