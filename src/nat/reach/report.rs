//! What follows a finished report: the DHT role, the puncher's candidates,
//! the relays a private node keeps, and the peer record; and the choice of
//! reflectors for the next run.

use std::net::SocketAddr;
use std::time::Instant;

use super::{RELAY_GROUP_V4_BITS, RELAY_GROUP_V6_BITS, Reach, ReachOutput, ReachView};
use crate::backoff;
use crate::collections::HashSet;
use crate::dht::{self, Mode, RoutingTable};
use crate::id::{NodeId, RecordKey};
use crate::nat::discovery::NatReport;
use crate::nat::punch::{self, Candidate, CandidateKind, NatClass};
use crate::peer_record::{PeerRecord, Reachability};
use crate::scope::{self, IpPrefix};
use crate::wire;

impl Reach {
    /// A finished report: the DHT role, the puncher's candidates, and the
    /// relays and peer record (checked in the same settle).
    pub(super) fn apply_report(&mut self, report: &NatReport) {
        let role = match report.reachability {
            Reachability::Public => Some(Mode::Server),
            Reachability::Private => Some(Mode::Client),
            _ => None,
        };
        if let Some(mode) = role.filter(|m| *m != self.setup.mode) {
            self.setup.mode = mode;
            self.stats.role_changes += 1;
            self.out.push(ReachOutput::Role(mode));
        }
        self.feed_puncher(Some(report));
        self.relays_changed = true;
    }

    /// Our own punch candidates and NAT class: the address the gateway
    /// maps to us first, the socket's own addresses (host candidates: LAN
    /// addresses, and global IPv6 ones, which are their own reflexive
    /// addresses; IPv6 link-local ones mean nothing to a peer), and from the
    /// last report the reflexive ones and, for a sequential port allocator,
    /// the next ports after the last mapping. The class is the report's, or
    /// open while a mapping lets anyone in (unknown without either).
    pub(super) fn feed_puncher(&mut self, report: Option<&NatReport>) {
        let mapped = (self.mapped.iter()).map(|a| Candidate::new(CandidateKind::Reflexive, *a));
        let lan = (self.local_addrs().into_iter())
            .filter(|a| !a.ip().is_unspecified() && !scope::needs_zone(a))
            .map(|a| Candidate::new(CandidateKind::Lan, a));
        let reflexive = (report.iter().flat_map(|r| r.reflexive.iter()))
            .map(|a| Candidate::new(CandidateKind::Reflexive, *a));
        let mut candidates: Vec<Candidate> = mapped.chain(lan).chain(reflexive).collect();
        // Ports are predicted behind a NAT: never for a global IPv6 address.
        let translated = report.and_then(|r| {
            let last = (r.reflexive.iter()).rfind(|a| !scope::is_global_ipv6(a))?;
            Some((*last, r))
        });
        if let Some((last, report)) = translated {
            candidates.extend(punch::predict(last, report.ports));
        }
        let nat = match report {
            _ if self.mapped.is_some() => NatClass::OPEN,
            Some(report) => NatClass {
                mapping: report.mapping,
                filtering: report.filtering,
                ports: report.ports,
            },
            None => NatClass::UNKNOWN,
        };
        self.out.push(ReachOutput::PunchCandidates {
            candidates,
            nat,
            hops: report.and_then(|r| r.hops),
        });
    }

    /// A private node keeps `relays` reservations on public nodes of its
    /// routing table, replacing those that fail; the closest by id first,
    /// but one per network while others are left ([`diverse`]).
    pub(super) fn keep_relays(&mut self, now: Instant, view: &ReachView<'_>) {
        if self.reachability() != Reachability::Private {
            self.reserve_retry_at = None;
            return;
        }
        let retry = self.config.relay_retry;
        self.failed_relays
            .retain(|_, at| now.saturating_duration_since(*at) < retry);
        let wanted: HashSet<NodeId> = view.wanted_relays.iter().copied().collect();
        let missing = self.config.relays.saturating_sub(wanted.len());
        // Once no relay is left to ask, those that failed us or fell silent
        // are asked again (see `ReachConfig::reserve_retry`), never those
        // convicted of dropping circuits ...
        let again = self.reserve_retry_at.is_some_and(|at| at <= now);
        let askable = |id: &NodeId| {
            let failed = self.failed_relays.contains_key(id);
            let avoided = view.avoided_relays.contains(id);
            if again {
                !avoided || view.silent_relays.contains(id)
            } else {
                !failed && !avoided
            }
        };
        // ... and routing-table entries gone stale too (after a partition of
        // our network every entry may be stale, and only an answer revives one).
        let (table, node) = (view.table, &self.setup.node);
        let contacts = if again {
            table.closest_including_stale(node, table.len())
        } else {
            table.closest(node, table.len(), None)
        };
        let candidates: Vec<dht::Contact> = (contacts.into_iter())
            .filter(|c| !wanted.contains(&c.id) && askable(&c.id))
            .collect();
        let taken: Vec<Option<IpPrefix>> = (view.wanted_relays.iter())
            .filter_map(|id| view.table.get(id))
            .map(network)
            .collect();
        let chosen = diverse(candidates, taken, missing);
        if chosen.len() >= missing {
            self.reserve_retry_at = None;
        } else if again || self.reserve_retry_at.is_none() {
            self.reserve_rounds = self.reserve_rounds.saturating_add(1);
            let wait = backoff::ceiling(self.config.reserve_retry, retry, self.reserve_rounds);
            self.reserve_retry_at = Some(now + wait);
        }
        for relay in chosen {
            self.stats.relay_reservations_asked += 1;
            self.out.push(ReachOutput::Reserve(relay));
        }
    }

    /// Asks for our peer record to be stored when what it says changed;
    /// true when it did.
    pub(super) fn publish_record(&mut self, view: &ReachView<'_>) -> bool {
        let Some(report) = self.report() else {
            return false;
        };
        let local = self.local_addrs();
        let reachability = report.reachability;
        let (mut observed, lan) = if report.behind_nat == Some(false) {
            (local, Vec::new())
        } else {
            (report.reflexive.clone(), local)
        };
        // The mapped address first: the one address of ours anyone reaches.
        if let Some(mapped) = self.mapped {
            observed.retain(|a| *a != mapped);
            observed.insert(0, mapped);
        }
        let limits = &self.setup.limits;
        let max = limits.max_addrs;
        let relays: Vec<wire::Contact> = (view.reserved_relays.iter())
            .filter_map(|id| view.table.get(id))
            .take(limits.max_contacts)
            .map(|c| wire::Contact {
                node_id: c.id,
                addrs: c.addrs.iter().copied().take(max).collect(),
            })
            .collect();
        let mut record = PeerRecord {
            node_id: self.setup.node,
            seq: 0,
            reachability,
            observed: observed.into_iter().take(max).collect(),
            lan: lan.into_iter().take(max).collect(),
            relays,
        };
        record.seq = match &self.record {
            Some(old)
                if (PeerRecord {
                    seq: 0,
                    ..old.clone()
                }) == record =>
            {
                return false;
            }
            Some(old) => view.unix_ms.max(old.seq + 1),
            None => view.unix_ms,
        };
        let Ok(value) = record.encode(limits) else {
            return false;
        };
        let key = RecordKey::peer(&self.setup.realm, &self.setup.node);
        self.out
            .push(ReachOutput::StoreRecord { key, value, record });
        true
    }

    /// Reflectors for a run from `table`, as the module docs say.
    pub(super) fn reflectors(&self, table: &RoutingTable, local: &[SocketAddr]) -> Vec<SocketAddr> {
        let max = self.config.discovery.max_reflectors;
        let candidates: Vec<SocketAddr> = (self.config.stun_servers.iter().copied())
            .chain(table.contacts().filter_map(|c| c.addrs.first().copied()))
            .filter(|a| !local.contains(a))
            .collect();
        let mut by_ip: Vec<SocketAddr> = Vec::new();
        for &addr in &candidates {
            if !by_ip.iter().any(|c| c.ip() == addr.ip()) {
                by_ip.push(addr);
            }
        }
        let sibling = candidates.iter().copied().find(|a| {
            !by_ip.contains(a)
                && (by_ip.iter().take(max.saturating_sub(1))).any(|c| c.ip() == a.ip())
        });
        let distinct = if sibling.is_some() {
            max.saturating_sub(1)
        } else {
            max
        };
        by_ip.truncate(distinct);
        by_ip.extend(sibling);
        by_ip
    }
}

/// The network a contact's first address is in, for relay diversity.
fn network(contact: &dht::Contact) -> Option<IpPrefix> {
    let addr = contact.addrs.first()?;
    Some(scope::prefix(
        addr.ip(),
        RELAY_GROUP_V4_BITS,
        RELAY_GROUP_V6_BITS,
    ))
}

/// Up to `n` of `candidates` (best first), skipping those in a network
/// already `taken` or chosen, then, if that leaves fewer than `n`, the
/// skipped ones in their order.
fn diverse(
    candidates: Vec<dht::Contact>,
    mut taken: Vec<Option<IpPrefix>>,
    n: usize,
) -> Vec<dht::Contact> {
    let (mut chosen, mut skipped) = (Vec::new(), Vec::new());
    for contact in candidates {
        let net = network(&contact);
        if net.is_some() && taken.contains(&net) {
            skipped.push(contact);
        } else if chosen.len() < n {
            taken.push(net);
            chosen.push(contact);
        }
    }
    let room = n.saturating_sub(chosen.len());
    chosen.extend(skipped.into_iter().take(room));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(n: u8, addr: &str) -> dht::Contact {
        dht::Contact {
            id: NodeId::from_bytes([n; 32]),
            addrs: vec![addr.parse().expect("test address")]
                .into_iter()
                .collect(),
        }
    }

    fn ids(contacts: &[dht::Contact]) -> Vec<u8> {
        contacts.iter().map(|c| c.id.as_bytes()[0]).collect()
    }

    #[test]
    fn relays_come_from_distinct_networks_while_there_are_some() {
        // Ground ids: the three closest share a /24; the fourth is elsewhere.
        let candidates = vec![
            contact(1, "203.0.113.5:4433"),
            contact(2, "203.0.113.6:4433"),
            contact(3, "203.0.113.7:4433"),
            contact(4, "198.51.100.9:4433"),
            contact(5, "[2001:db8:1:2::1]:4433"),
            contact(6, "[2001:db8:1:3::1]:4433"),
        ];
        assert_eq!(ids(&diverse(candidates.clone(), Vec::new(), 2)), [1, 4]);
        assert_eq!(
            ids(&diverse(candidates.clone(), Vec::new(), 4)),
            [1, 4, 5, 2]
        );
        // A relay we hold takes its network.
        let held = vec![network(&contact(9, "198.51.100.1:1"))];
        assert_eq!(ids(&diverse(candidates.clone(), held, 2)), [1, 5]);
        // Only one network left: it still gives what it has.
        let same = candidates[..3].to_vec();
        assert_eq!(ids(&diverse(same, Vec::new(), 2)), [1, 2]);
    }
}
