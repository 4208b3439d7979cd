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
//!
//! For hole punching, a global IPv6 address ([`is_global_ipv6`]) is special:
//! no NAT rewrites it, so a host's own global IPv6 address is also the
//! address strangers see (its own reflexive address), and a pair of them is
//! preferred over IPv4 pairs ([`crate::nat::punch`]). An IPv6 link-local
//! address names no host without the interface it is on, which only the
//! holder knows ([`needs_zone`]): it is never offered as a candidate.

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

/// Whether `addr` is a global IPv6 address: IPv6 on the wire (not
/// IPv4-mapped) and of [`Scope::Global`] — no NAT stands between it and the
/// internet, though a firewall may.
pub fn is_global_ipv6(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none())
        && Scope::of(addr) == Scope::Global
}

/// Whether `addr` is an IPv6 link-local address (`fe80::/10`): usable only
/// with the zone (interface) it is on, which means nothing to another host.
pub fn needs_zone(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Which addresses a peer's claims may name (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback addresses are allowed (the node itself is on loopback).
    pub allow_loopback: bool,
}

impl AddressPolicy {
    /// The policy of a node announcing `listen`: loopback is allowed only
    /// when one of them is a loopback address, or when it announces none (a
    /// node bound to a wildcard address, e.g. a dual-stack socket on a
    /// developer's host, may well be on loopback).
    pub fn for_listen(listen: &[SocketAddr]) -> Self {
        let allow_loopback =
            listen.is_empty() || listen.iter().any(|a| canonical(a.ip()).is_loopback());
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

/// A network prefix: an address cut to its first bits (see [`prefix`]).
/// Limits that count per network rather than per address key on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    /// The address with every bit past the prefix cleared.
    pub network: IpAddr,
    /// How many leading bits are kept.
    pub bits: u8,
}

/// The network of `ip`: IPv4 (and IPv4-mapped IPv6) cut to `v4_bits`, IPv6
/// to `v6_bits` (each capped at the address length).
pub fn prefix(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> IpPrefix {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let bits = v4_bits.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpPrefix {
                network: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                bits,
            }
        }
        IpAddr::V6(v6) => {
            let bits = v6_bits.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpPrefix {
                network: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                bits,
            }
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
    fn global_ipv6_and_zoned_addresses() {
        let global = ["[2001:db8:a::11]:4433", "[2a00:1450::1]:1"];
        let not_global = [
            "[fd00::1]:1",
            "[fe80::1]:1",
            "[::1]:1",
            "[::ffff:8.8.8.8]:53",
            "8.8.8.8:53",
            "[2001:db8::1]:0",
            "[fd6d:6163:756c:6100::7]:1",
        ];
        for text in global {
            assert!(is_global_ipv6(&addr(text)), "{text}");
        }
        for text in not_global {
            assert!(!is_global_ipv6(&addr(text)), "{text}");
        }
        assert!(needs_zone(&addr("[fe80::1]:1")));
        assert!(needs_zone(&addr("[febf::1]:1")));
        for text in ["[fd00::1]:1", "[2001:db8::1]:1", "169.254.1.1:1"] {
            assert!(!needs_zone(&addr(text)), "{text}");
        }
    }

    #[test]
    fn prefixes() {
        let net = |text: &str| prefix(text.parse().expect("test ip"), 24, 48);
        assert_eq!(net("198.51.100.7"), net("198.51.100.200"));
        assert_ne!(net("198.51.100.7"), net("198.51.101.7"));
        assert_eq!(net("::ffff:198.51.100.7"), net("198.51.100.9"));
        assert_eq!(net("198.51.100.7").network.to_string(), "198.51.100.0");
        assert_eq!(net("2001:db8:1:2::1"), net("2001:db8:1:ffff::9"));
        assert_ne!(net("2001:db8:1::1"), net("2001:db8:2::1"));
        let whole = prefix("10.1.2.3".parse().expect("test ip"), 0, 0);
        assert_eq!(whole.network.to_string(), "0.0.0.0");
        let exact = prefix("10.1.2.3".parse().expect("test ip"), 40, 200);
        assert_eq!(
            (exact.network.to_string().as_str(), exact.bits),
            ("10.1.2.3", 32)
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
