//! Which local addresses the node's packets may name as their source.
//!
//! quinn keeps the local IP an accepted connection was reached at, and the
//! node sends that connection's packets from it (src/node/datagrams.rs):
//! on a socket bound to a wildcard address, on a host with several
//! addresses, the kernel would otherwise pick one of its own, which the
//! peer's NAT or firewall drops. An IP is used only while the host still
//! has it: it is one that datagrams arrived on, and no
//! `Input::LocalAddressChanged` has retired it since; a connection whose IP
//! is gone sends without a source, from the kernel's pick, so its peer can
//! follow it to the new address.

use std::net::{IpAddr, SocketAddr};

/// Most local IPs remembered (a host's own addresses: a handful); past it
/// the oldest is forgotten, and packets from it leave without a source.
pub(super) const MAX_LOCAL_IPS: usize = 16;

/// The local IPs datagrams arrived on and the socket's port.
#[derive(Debug, Default)]
pub(super) struct LocalAddrs {
    /// Oldest first; only addresses of the host (the kernel delivers only to
    /// those), so no peer can fill it.
    ips: Vec<IpAddr>,
    port: Option<u16>,
}

impl LocalAddrs {
    /// A datagram arrived on `local`.
    pub(super) fn arrived(&mut self, local: SocketAddr) {
        self.port = Some(local.port());
        let ip = local.ip().to_canonical();
        if ip.is_unspecified() || self.ips.contains(&ip) {
            return;
        }
        if self.ips.len() == MAX_LOCAL_IPS {
            self.ips.remove(0);
        }
        self.ips.push(ip);
    }

    /// The host no longer has `old`.
    pub(super) fn moved(&mut self, old: SocketAddr) {
        let gone = old.ip().to_canonical();
        self.ips.retain(|ip| *ip != gone);
    }

    /// The source of a packet to `destination` that quinn sends from
    /// `src_ip`: that IP with the socket's port while the host has it and it
    /// is of the destination's family; `None` (the kernel's pick) otherwise.
    pub(super) fn source(
        &self,
        src_ip: Option<IpAddr>,
        destination: SocketAddr,
    ) -> Option<SocketAddr> {
        let ip = src_ip?.to_canonical();
        let same_family = ip.is_ipv4() == destination.ip().to_canonical().is_ipv4();
        (same_family && self.ips.contains(&ip)).then_some(SocketAddr::new(ip, self.port?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a test address")
    }

    #[test]
    fn a_known_ip_of_the_destinations_family_is_the_source_until_it_is_gone() {
        let mut local = LocalAddrs::default();
        let (v4, v6) = (addr("203.0.113.12:4433"), addr("[2001:db8:ff::12]:4433"));
        let (peer4, peer6) = (addr("198.51.100.98:5000"), addr("[2001:db8:a::11]:5000"));
        assert_eq!(
            local.source(Some(v4.ip()), peer4),
            None,
            "nothing arrived yet"
        );
        local.arrived(v4);
        local.arrived(v6);
        local.arrived(addr("[::]:4433"));
        assert_eq!(local.source(Some(v4.ip()), peer4), Some(v4));
        assert_eq!(local.source(Some(v6.ip()), peer6), Some(v6));
        assert_eq!(local.source(Some(v4.ip()), peer6), None, "another family");
        assert_eq!(local.source(None, peer4), None);
        let mapped = "::ffff:203.0.113.12".parse().expect("an IP");
        assert_eq!(local.source(Some(mapped), peer4), Some(v4));
        local.moved(v4);
        assert_eq!(local.source(Some(v4.ip()), peer4), None, "the host lost it");
        assert_eq!(local.source(Some(v6.ip()), peer6), Some(v6));
    }

    #[test]
    fn past_the_limit_the_oldest_ip_is_forgotten() {
        let mut local = LocalAddrs::default();
        let at = |i: usize| SocketAddr::from(([10, 0, 0, i as u8], 4433));
        for i in 0..=MAX_LOCAL_IPS {
            local.arrived(at(i));
        }
        let peer = addr("198.51.100.1:5000");
        assert_eq!(local.source(Some(at(0).ip()), peer), None);
        assert_eq!(local.source(Some(at(1).ip()), peer), Some(at(1)));
        assert_eq!(
            local.source(Some(at(MAX_LOCAL_IPS).ip()), peer),
            Some(at(MAX_LOCAL_IPS))
        );
    }
}
