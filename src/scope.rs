//! Which addresses a stranger may make us talk to.
//!
//! Every address a peer hands us (its CONNECT's listen addresses, the
//! contacts in a FIND_NODE answer, a punch offer's candidates, a dial-back
//! target) is the peer's choice. Before such an address is stored, handed on
//! or sent a packet, it must pass an [`AddressPolicy`]: never the unspecified
//! address, port 0, multicast or broadcast, never our own virtual range
//! ([`crate::path::VIRTUAL_PREFIX`]), and loopback only when the node itself
//! listens on loopback (a test mesh on one host). Private and link-local
//! ranges are allowed: two hosts behind one NAT reach each other over them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::path::PathTable;

/// What kind of address an IP address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `0.0.0.0` or `::`, or port 0: no one to talk to.
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// A multicast group, or the IPv4 broadcast address.
    Multicast,
    /// Our own virtual range (a path table's address, never a real host).
    Virtual,
    /// Private, shared (carrier NAT), link-local or unique-local.
    Local,
    /// Anything else: an address on the internet.
    Global,
}

impl Scope {
    /// The scope of `addr`.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.port() == 0 {
            return Self::Unspecified;
        }
        if PathTable::is_virtual(addr) {
            return Self::Virtual;
        }
        match canonical(addr.ip()) {
            IpAddr::V4(ip) => v4_scope(ip),
            IpAddr::V6(ip) => v6_scope(ip),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v4_scope(ip: Ipv4Addr) -> Scope {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Scope::Unspecified
    } else if ip.is_loopback() {
        Scope::Loopback
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Scope::Multicast
    } else if ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b)) {
        Scope::Local
    } else {
        Scope::Global
    }
}

fn v6_scope(ip: Ipv6Addr) -> Scope {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Scope::Unspecified
    } else if ip.is_loopback() {
        Scope::Loopback
    } else if ip.is_multicast() {
        Scope::Multicast
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 {
        Scope::Local
    } else {
        Scope::Global
    }
}

/// An IP network: the first `bits` of an address (the rest zeroed), for
/// limits that hold per network rather than per address (a host with
/// many addresses in one IPv6 /64 is one source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    network: IpAddr,
    bits: u8,
}

/// The prefix of `ip` that a limit counts: its first `v4_bits` (IPv4, and
/// IPv4-mapped IPv6) or `v6_bits` (IPv6).
pub fn prefix(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> IpPrefix {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let bits = v4_bits.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            let network = IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask));
            IpPrefix { network, bits }
        }
        IpAddr::V6(v6) => {
            let bits = v6_bits.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            let network = IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask));
            IpPrefix { network, bits }
        }
    }
}

/// Which addresses a peer's claims may name (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback addresses are allowed (the node itself is on loopback).
    pub allow_loopback: bool,
}

impl AddressPolicy {
    /// The policy of a node listening on `listen`: loopback is allowed only
    /// when one of them is a loopback address.
    pub fn for_listen(listen: &[SocketAddr]) -> Self {
        let allow_loopback = listen.iter().any(|a| canonical(a.ip()).is_loopback());
        Self { allow_loopback }
    }

    /// True when a stranger's claim of `addr` may be stored, handed on or
    /// sent a packet.
    pub fn permits(&self, addr: &SocketAddr) -> bool {
        match Scope::of(addr) {
            Scope::Local | Scope::Global => true,
            Scope::Loopback => self.allow_loopback,
            Scope::Unspecified | Scope::Multicast | Scope::Virtual => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn scopes() {
        let cases = [
            ("0.0.0.0:4433", Scope::Unspecified),
            ("1.2.3.4:0", Scope::Unspecified),
            ("[::]:4433", Scope::Unspecified),
            ("127.0.0.1:6499", Scope::Loopback),
            ("[::1]:1", Scope::Loopback),
            ("[::ffff:127.0.0.1]:1", Scope::Loopback),
            ("224.0.0.1:1", Scope::Multicast),
            ("255.255.255.255:1", Scope::Multicast),
            ("[ff02::1]:1", Scope::Multicast),
            ("[fd6d:6163:756c:6100::7]:1", Scope::Virtual),
            ("10.0.0.1:1", Scope::Local),
            ("192.168.1.2:1", Scope::Local),
            ("100.64.0.9:1", Scope::Local),
            ("169.254.1.1:1", Scope::Local),
            ("[fe80::1]:1", Scope::Local),
            ("[fd00::1]:1", Scope::Local),
            ("8.8.8.8:53", Scope::Global),
            ("[2001:db8::1]:1", Scope::Global),
        ];
        for (text, scope) in cases {
            assert_eq!(Scope::of(&addr(text)), scope, "{text}");
        }
    }

    #[test]
    fn prefixes_group_networks() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("test address");
        let p = |text| prefix(ip(text), 24, 64);
        assert_eq!(p("10.1.2.3"), p("10.1.2.200"));
        assert_ne!(p("10.1.2.3"), p("10.1.3.3"));
        assert_eq!(p("::ffff:10.1.2.3"), p("10.1.2.9"), "mapped counts as IPv4");
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:2:ffff::9"));
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert_ne!(
            prefix(ip("10.0.0.1"), 32, 64),
            prefix(ip("10.0.0.2"), 32, 64)
        );
        assert_eq!(
            prefix(ip("10.0.0.1"), 0, 0),
            prefix(ip("192.168.0.1"), 0, 0)
        );
    }

    #[test]
    fn loopback_only_for_a_node_on_loopback() {
        let public = AddressPolicy::for_listen(&[addr("0.0.0.0:4433"), addr("8.8.8.8:4433")]);
        let local = AddressPolicy::for_listen(&[addr("127.0.0.1:4433")]);
        assert!(!public.permits(&addr("127.0.0.1:6499")));
        assert!(local.permits(&addr("127.0.0.1:6499")));
        for policy in [public, local] {
            assert!(policy.permits(&addr("10.1.2.3:9")));
            assert!(policy.permits(&addr("8.8.4.4:9")));
            assert!(!policy.permits(&addr("0.0.0.0:9")));
            assert!(!policy.permits(&addr("224.0.0.1:9")));
            assert!(!policy.permits(&addr("[fd6d:6163:756c:6100::1]:1")));
        }
    }
}
