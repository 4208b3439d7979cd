//! Reachability messages (0x58–0x5F): the third-party dial-back that tells a
//! node whether packets from strangers reach it, and the capability update a
//! node sends when its DHT role changes. All of them travel on the control
//! stream of a ready connection (docs/PROTOCOL.md §12).

use std::net::SocketAddr;

use super::field::{wire_enum, wire_struct};
use super::types::Capabilities;

wire_enum! {
    /// Where the dial-back probe must come from, one byte.
    pub enum ProbeSource: u8 {
        /// From a node whose IP the asker never sent to (tests filtering by
        /// address, and public reachability).
        OtherIp = 0,
        /// From the IP of the node asked, but another port (tests filtering
        /// by port).
        OtherPort = 1,
    }
}

wire_enum! {
    /// What the node asked for a dial-back did, one byte.
    pub enum DialBackStatus: u8 {
        /// It asked `helpers` nodes to send the probe.
        Forwarded = 0,
        /// It knows no node that fits the requested source.
        NoHelper = 1,
        /// It refuses (rate limit, no address it may probe).
        Refused = 2,
    }
}

wire_struct! {
    /// DIAL_BACK (0x58): asks the receiver to have other nodes send a STUN
    /// Binding request with transaction id `nonce` to `addrs`.
    pub struct DialBack {
        /// Echoed by the DIAL_BACK_RESULT.
        pub request_id: u64,
        /// The probe's STUN transaction id.
        pub nonce: [u8; 12],
        /// Where the probe must come from.
        pub source: ProbeSource,
        /// The sender's addresses to probe; the receiver keeps only those on
        /// the IP it sees the sender at.
        pub addrs: Vec<SocketAddr>; Addrs,
    }
}

wire_struct! {
    /// DIAL_BACK_RESULT (0x59): answers a DIAL_BACK.
    pub struct DialBackResult {
        /// The DIAL_BACK's request id.
        pub request_id: u64,
        /// What was done.
        pub status: DialBackStatus,
        /// The addresses of the nodes asked to probe, as the sender sees
        /// them: the asker learns whether any of them is a stranger to it.
        pub helpers: Vec<SocketAddr>; Addrs,
    }
}

wire_struct! {
    /// DIAL_BACK_PROBE (0x5A): asks the receiver to send a STUN Binding
    /// request with transaction id `nonce` to each of `addrs`.
    pub struct DialBackProbe {
        /// The probe's STUN transaction id.
        pub nonce: [u8; 12],
        /// Where to send it.
        pub addrs: Vec<SocketAddr>; Addrs,
    }
}

wire_struct! {
    /// CAPABILITIES (0x5B): the sender's capabilities changed since its
    /// CONNECT (it became or stopped being a DHT server).
    pub struct CapabilitiesUpdate {
        /// The new set; replaces the one of CONNECT.
        pub capabilities: Capabilities,
    }
}
