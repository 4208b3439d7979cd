//! NAT behaviour (RFC 4787) from what reflectors reported: mapping, filtering and port
//! allocation, each as far as the observations can tell it.
//!
//! These are pure functions; NAT discovery runs the transactions and feeds them the results.
//! Every verdict has an `Uncertain` answer for too few or contradictory observations, and no
//! verdict forbids trying a hole punch: it only chooses the strategy.
//!
//! **Mapping.** All observations must come from one local socket. Pairs of observations are
//! compared by how their reflectors differ: the same mapping toward two reflector IPs means
//! the NAT maps independently of the destination; a different mapping toward two ports of one
//! IP means it maps per destination port. Reflectors of different address families are never
//! compared. One reflector seeing two mappings, or two IPs sharing a mapping while something
//! else changes it, is a contradiction.
//!
//! **Filtering.** Whether a packet from an address we never sent to reaches us: from another
//! IP (RFC 5780 test II, CHANGE-REQUEST for IP and port, or a third node's dial-back), and
//! from our peer's IP but another port (test III, CHANGE-REQUEST for the port).
//!
//! **Port allocation.** The external ports of successive new mappings, in the order they
//! were made: the local port kept, a small constant-signed step (predictable), or jumps.

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

/// How the NAT in front of a socket filters packets arriving on a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilteringBehaviour {
    /// Anyone may send to the mapping ("full cone").
    EndpointIndependent,
    /// Only IPs we sent to, from any port ("restricted cone").
    AddressDependent,
    /// Only the exact addresses we sent to ("port-restricted cone" or symmetric).
    AddressAndPortDependent,
    /// A test was not run or had no clear result.
    Uncertain,
}

/// Classifies filtering from two probes toward our mapping, each `None` when not run:
/// whether a probe from an IP we never sent to arrived, and whether one from the IP we sent
/// to but another port arrived.
pub fn classify_filtering(
    from_other_ip: Option<bool>,
    from_other_port: Option<bool>,
) -> FilteringBehaviour {
    match (from_other_ip, from_other_port) {
        (Some(true), _) => FilteringBehaviour::EndpointIndependent,
        (Some(false), Some(true)) => FilteringBehaviour::AddressDependent,
        (Some(false), Some(false)) => FilteringBehaviour::AddressAndPortDependent,
        _ => FilteringBehaviour::Uncertain,
    }
}

/// How the NAT picks the external port of a new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAllocation {
    /// Every mapping kept the local port.
    Preserving,
    /// Each new mapping's port moved by a small step in one direction; `step` is the smallest
    /// move seen (other hosts behind the NAT can take ports in between), so the next port is
    /// likely the last one plus a small multiple of `step`.
    Sequential {
        /// The smallest move between two successive mappings, with its sign.
        step: i32,
    },
    /// Successive mappings jumped by more than [`SEQUENTIAL_MAX_STEP`] or back and forth.
    Random,
    /// Fewer than three distinct mappings, or moves too mixed to call.
    Uncertain,
}

/// The largest move between two successive mappings still called sequential.
pub const SEQUENTIAL_MAX_STEP: u16 = 16;

/// Classifies port allocation from `local_port` and the external ports of successive new
/// mappings, oldest first (repeats of one mapping count once).
pub fn classify_port_allocation(local_port: u16, mapped_ports: &[u16]) -> PortAllocation {
    if !mapped_ports.is_empty() && mapped_ports.iter().all(|p| *p == local_port) {
        return PortAllocation::Preserving;
    }
    let mut distinct: Vec<u16> = mapped_ports.to_vec();
    distinct.dedup();
    // Moves between successive mappings, as signed 16-bit steps (ports wrap).
    let moves: Vec<i32> = distinct
        .windows(2)
        .map(|pair| i32::from(pair[1].wrapping_sub(pair[0]) as i16))
        .collect();
    if moves.len() < 2 {
        return PortAllocation::Uncertain;
    }
    let small = |m: &i32| m.unsigned_abs() <= u32::from(SEQUENTIAL_MAX_STEP);
    let one_direction = moves.iter().all(|m| *m > 0) || moves.iter().all(|m| *m < 0);
    if one_direction && moves.iter().all(small) {
        let step = moves
            .iter()
            .copied()
            .min_by_key(|m| m.unsigned_abs())
            .unwrap_or(1);
        PortAllocation::Sequential { step }
    } else if moves.iter().filter(|m| !small(m)).count() * 2 >= moves.len() {
        PortAllocation::Random
    } else {
        PortAllocation::Uncertain
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
    fn the_mapping_table() {
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

    #[test]
    fn the_filtering_table() {
        let table = [
            (Some(true), None, FilteringBehaviour::EndpointIndependent),
            (
                Some(true),
                Some(false),
                FilteringBehaviour::EndpointIndependent,
            ),
            (
                Some(false),
                Some(true),
                FilteringBehaviour::AddressDependent,
            ),
            (
                Some(false),
                Some(false),
                FilteringBehaviour::AddressAndPortDependent,
            ),
            (Some(false), None, FilteringBehaviour::Uncertain),
            (None, Some(true), FilteringBehaviour::Uncertain),
            (None, None, FilteringBehaviour::Uncertain),
        ];
        for (other_ip, other_port, expected) in table {
            assert_eq!(
                classify_filtering(other_ip, other_port),
                expected,
                "{other_ip:?} {other_port:?}"
            );
        }
    }

    #[test]
    fn the_port_allocation_table() {
        use PortAllocation::*;
        let table: &[(&str, &[u16], PortAllocation)] = &[
            ("nothing seen", &[], Uncertain),
            ("the local port everywhere", &[5000, 5000, 5000], Preserving),
            ("one other port", &[40000], Uncertain),
            ("two mappings", &[40000, 40001], Uncertain),
            (
                "plus one each time",
                &[40000, 40001, 40002],
                Sequential { step: 1 },
            ),
            (
                "preserved, then counting up",
                &[5000, 5001, 5002],
                Sequential { step: 1 },
            ),
            (
                "repeats count once",
                &[40000, 40000, 40002, 40004],
                Sequential { step: 2 },
            ),
            (
                "gaps from other hosts",
                &[40000, 40003, 40004, 40009],
                Sequential { step: 1 },
            ),
            (
                "counting down",
                &[40010, 40008, 40006],
                Sequential { step: -2 },
            ),
            (
                "across the wrap",
                &[65534, 65535, 0, 1],
                Sequential { step: 1 },
            ),
            ("jumps", &[40000, 51234, 1027, 33000], Random),
            ("back and forth", &[40000, 40005, 40001], Uncertain),
            ("mostly jumps", &[40000, 40001, 52000, 12000], Random),
        ];
        for (name, ports, expected) in table {
            assert_eq!(classify_port_allocation(5000, ports), *expected, "{name}");
        }
    }
}
