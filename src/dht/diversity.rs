//! IP diversity: how many DHT contacts one network may supply.
//!
//! Node ids are free and can be ground to land in any bucket, so a table
//! filled by one host (or one rented /24) eclipses its owner. As in discv5
//! and go-libp2p, the routing table holds at most `per_bucket` contacts of
//! one network in a bucket and `per_table` in the whole table, and a
//! lookup keeps at most `per_lookup` candidates of one network.
//!
//! A contact's network is the prefix of its first address (the one that is
//! dialed): the /24 of an IPv4 address, the /48 of an IPv6 one. Only
//! [`Scope::Global`] addresses count: loopback, private and link-local
//! contacts are exempt, so a test mesh on one host (every node on
//! 127.0.0.1) or a LAN works as before, and an attacker has to be on our
//! own network to use them.

use crate::scope::{IpPrefix, Scope, prefix};

use super::message::Contact;

/// The diversity limits (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diversity {
    /// Contacts of one network per routing-table bucket. Default 2.
    pub per_bucket: usize,
    /// Contacts of one network in the whole routing table. Default 10.
    pub per_table: usize,
    /// Candidates of one network in one lookup. Default 5.
    pub per_lookup: usize,
    /// Prefix length of an IPv4 network. Default 24.
    pub v4_prefix: u8,
    /// Prefix length of an IPv6 network. Default 48.
    pub v6_prefix: u8,
}

impl Diversity {
    /// No limits at all.
    pub const UNLIMITED: Diversity = Diversity {
        per_bucket: usize::MAX,
        per_table: usize::MAX,
        per_lookup: usize::MAX,
        v4_prefix: 24,
        v6_prefix: 48,
    };

    /// The network `contact` counts against, `None` when it is exempt (no
    /// address, or its first address is not global).
    pub fn group(&self, contact: &Contact) -> Option<IpPrefix> {
        let addr = contact.addrs.first()?;
        (Scope::of(addr) == Scope::Global)
            .then(|| prefix(addr.ip(), self.v4_prefix, self.v6_prefix))
    }
}

impl Default for Diversity {
    fn default() -> Self {
        Self {
            per_bucket: 2,
            per_table: 10,
            per_lookup: 5,
            v4_prefix: 24,
            v6_prefix: 48,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn contact(addr: &str) -> Contact {
        Contact::new(
            NodeId::from_bytes([1; 32]),
            addr.parse().expect("test address"),
        )
    }

    #[test]
    fn only_global_addresses_have_a_group() {
        let d = Diversity::default();
        assert_eq!(
            d.group(&contact("203.0.113.7:1")),
            d.group(&contact("203.0.113.9:2"))
        );
        assert_ne!(
            d.group(&contact("203.0.113.7:1")),
            d.group(&contact("203.0.114.7:1"))
        );
        assert!(d.group(&contact("[2001:db8:1:2::1]:1")).is_some());
        for exempt in ["127.0.0.1:1", "10.0.0.1:1", "192.168.1.1:1", "[fe80::1]:1"] {
            assert_eq!(d.group(&contact(exempt)), None, "{exempt}");
        }
    }
}
