//! Candidates: the addresses a peer may be reached at, and port prediction.

use std::net::SocketAddr;

use crate::nat::stun::PortAllocation;
use crate::scope::is_global_ipv6;

/// Where a candidate address comes from (ICE's candidate types, plus predicted ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// A port the peer's NAT will likely give its next mapping (sequential allocators):
    /// probed first, because every new destination of an endpoint-dependent NAT uses up one
    /// of its ports and the first probe must go where the prediction expects it.
    Predicted,
    /// The address a reflector saw (server-reflexive).
    Reflexive,
    /// Learned from a probe that arrived from an address the peer had not announced
    /// (peer-reflexive, ICE style).
    PeerReflexive,
    /// A random port of the peer's hard NAT that answered the birthday search
    /// ([`crate::nat::punch`]): only ever learned, never announced.
    Searched,
    /// The peer's own socket address (host candidate): on its LAN, or a global IPv6
    /// address, which no NAT rewrites.
    Lan,
}

/// One address to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// Where it comes from.
    pub kind: CandidateKind,
}

impl Candidate {
    /// A candidate of `kind` at `addr`.
    pub fn new(kind: CandidateKind, addr: SocketAddr) -> Self {
        Self { addr, kind }
    }
}

/// How many ports [`predict`] guesses past the last mapping: other hosts behind the same NAT
/// may take ports in between.
pub const PREDICTED_PORTS: u16 = 4;

/// The likely addresses of the next mappings after `last` (the most recent reflexive
/// address) under `allocation`: for a sequential allocator, `last + step`, `last + 2·step`,
/// ... ([`PREDICTED_PORTS`] of them, wrapping within 1024–65535); nothing for any other.
pub fn predict(last: SocketAddr, allocation: PortAllocation) -> Vec<Candidate> {
    let PortAllocation::Sequential { step } = allocation else {
        return Vec::new();
    };
    (1..=i32::from(PREDICTED_PORTS))
        .map(|i| {
            let raw = i32::from(last.port()) + step * i;
            let port = 1024 + (raw - 1024).rem_euclid(65536 - 1024);
            let port = u16::try_from(port).unwrap_or(1024);
            Candidate::new(CandidateKind::Predicted, SocketAddr::new(last.ip(), port))
        })
        .collect()
}

/// Whether our `candidates` show our NAT preserving ports: an IPv4 reflexive candidate
/// kept the port of a host candidate (so a fresh local port likely keeps its port too).
pub fn preserves_ports(candidates: &[Candidate]) -> bool {
    candidates.iter().any(|c| preserved(candidates, c))
}

/// Whether `c` is an IPv4 reflexive candidate with the port of one of our IPv4 host
/// candidates.
fn preserved(candidates: &[Candidate], c: &Candidate) -> bool {
    let host = |h: &&Candidate| h.kind == CandidateKind::Lan && h.addr.is_ipv4();
    c.kind == CandidateKind::Reflexive
        && c.addr.is_ipv4()
        && (candidates.iter().filter(host)).any(|h| h.addr.port() == c.addr.port())
}

/// Our IPv4 `candidates` as they read for another local socket on `port` (a fresh port,
/// [`crate::nat::punch::Plan::socket`]) of the same IP: each reflexive one whose port a
/// host candidate kept ([`preserves_ports`]) and each IPv4 host candidate, with that
/// port. Empty when our NAT was not seen preserving ports: the fresh socket's public
/// address is then unknown.
pub fn on_port(candidates: &[Candidate], port: u16) -> Vec<Candidate> {
    if !preserves_ports(candidates) {
        return Vec::new();
    }
    let kept = |c: &&Candidate| {
        preserved(candidates, c) || (c.kind == CandidateKind::Lan && c.addr.is_ipv4())
    };
    let mut moved: Vec<Candidate> = (candidates.iter().filter(kept))
        .map(|c| Candidate::new(c.kind, SocketAddr::new(c.addr.ip(), port)))
        .collect();
    moved.sort_by_key(|c| c.kind);
    moved
}

/// `candidates` in probing order without repeated addresses, at most `max` of them: global
/// IPv6 addresses first (RFC 8421: IPv6 pairs are preferred; no NAT stands in front of
/// them, so there is no port to predict), then the rest by kind, each group as given.
pub fn ordered(candidates: &[Candidate], max: usize) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::with_capacity(candidates.len().min(max));
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|c| (!is_global_ipv6(&c.addr), c.kind));
    for c in sorted {
        if out.len() < max && !out.iter().any(|o| o.addr == c.addr) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_allocators_are_predicted_and_others_not() {
        let last: SocketAddr = "198.51.100.1:65534".parse().unwrap();
        let ports: Vec<u16> = predict(last, PortAllocation::Sequential { step: 1 })
            .iter()
            .map(|c| c.addr.port())
            .collect();
        assert_eq!(ports, [65535, 1024, 1025, 1026]);
        let down: Vec<u16> = predict(
            "198.51.100.1:5000".parse().unwrap(),
            PortAllocation::Sequential { step: -2 },
        )
        .iter()
        .map(|c| c.addr.port())
        .collect();
        assert_eq!(down, [4998, 4996, 4994, 4992]);
        assert!(predict(last, PortAllocation::Random).is_empty());
        assert!(predict(last, PortAllocation::Preserving).is_empty());
    }

    #[test]
    fn ordering_puts_predictions_first_and_drops_repeats() {
        let a: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let b: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let c: SocketAddr = "198.51.100.1:5001".parse().unwrap();
        let list = [
            Candidate::new(CandidateKind::Lan, a),
            Candidate::new(CandidateKind::Reflexive, b),
            Candidate::new(CandidateKind::Predicted, c),
            Candidate::new(CandidateKind::Lan, b),
        ];
        let got: Vec<SocketAddr> = ordered(&list, 8).iter().map(|c| c.addr).collect();
        assert_eq!(got, [c, b, a]);
        assert_eq!(ordered(&list, 1).len(), 1);
    }

    #[test]
    fn global_ipv6_comes_first_and_local_ipv6_keeps_its_kind_order() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let v4 = addr("198.51.100.1:5000");
        let v6 = addr("[2001:db8:a::11]:5000");
        let ula = addr("[fd00::11]:5000");
        let mapped = addr("[::ffff:198.51.100.2]:5000");
        let list = [
            Candidate::new(CandidateKind::Lan, ula),
            Candidate::new(CandidateKind::Predicted, v4),
            Candidate::new(CandidateKind::Reflexive, mapped),
            Candidate::new(CandidateKind::Lan, v6),
            // The same address again, as discovery reports it: one probe only.
            Candidate::new(CandidateKind::Reflexive, v6),
        ];
        let got: Vec<(CandidateKind, SocketAddr)> = (ordered(&list, 8).iter())
            .map(|c| (c.kind, c.addr))
            .collect();
        assert_eq!(
            got,
            [
                (CandidateKind::Reflexive, v6),
                (CandidateKind::Predicted, v4),
                (CandidateKind::Reflexive, mapped),
                (CandidateKind::Lan, ula),
            ]
        );
        // The cap keeps the preferred one.
        assert_eq!(ordered(&list, 1)[0].addr, v6);
    }

    #[test]
    fn a_fresh_port_is_announced_only_behind_a_port_preserving_nat() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let lan = Candidate::new(CandidateKind::Lan, addr("10.1.0.11:45800"));
        let kept = Candidate::new(CandidateKind::Reflexive, addr("198.51.100.3:45800"));
        let v6 = Candidate::new(CandidateKind::Lan, addr("[2001:db8:a::11]:45800"));
        let got: Vec<(CandidateKind, SocketAddr)> = (on_port(&[lan, v6, kept], 40000).iter())
            .map(|c| (c.kind, c.addr))
            .collect();
        assert_eq!(
            got,
            [
                (CandidateKind::Reflexive, addr("198.51.100.3:40000")),
                (CandidateKind::Lan, addr("10.1.0.11:40000")),
            ]
        );
        // A NAT that moved our port: the fresh socket's public port is anyone's guess.
        let moved = Candidate::new(CandidateKind::Reflexive, addr("198.51.100.3:61000"));
        assert!(on_port(&[lan, moved], 40000).is_empty());
        assert!(preserves_ports(&[lan, kept]) && !preserves_ports(&[lan, moved]));
        assert!(on_port(&[lan], 40000).is_empty());
        assert!(on_port(&[], 40000).is_empty());
    }
}
