//! Hole-punch coordination (0x6_): candidates, the agreed start and the result, carried
//! on the peers' (relayed) connection (docs/PROTOCOL.md §13).

use std::net::SocketAddr;

use super::field::{wire_enum, wire_struct};

wire_enum! {
    /// Where a candidate address comes from, one byte.
    pub enum CandidateType: u8 {
        /// A predicted port of a sequential allocator.
        Predicted = 0,
        /// Seen by a reflector (server-reflexive).
        Reflexive = 1,
        /// Seen on a probe from the peer (peer-reflexive).
        PeerReflexive = 2,
        /// The node's own socket address (host candidate): on its LAN, or a
        /// global IPv6 address.
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
        /// The key of every probe's and answer's MESSAGE-INTEGRITY-SHA256 (32 random
        /// bytes; secret: it travels only inside the encrypted connection).
        pub key: [u8; 32],
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
