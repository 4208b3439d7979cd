//! NAT boxes as RFC 4787 describes them, plus the Linux conntrack quirk.
//!
//! A [`Nat`] translates UDP between its inside network and its one external
//! address. Its [`NatConfig`] picks the mapping behaviour (when a new external
//! port is used), the filtering behaviour (which inbound packets pass), how
//! ports are allocated, the binding timeout and its refresh, and hairpinning.
//! Everything the box does is written to an observable log of [`NatEvent`]s.
//! The box is pure: the world hands it the time and the random generator.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::trace::DropReason;
use super::world::NatId;

/// The lowest external port a NAT allocates (RFC 4787 REQ-3a: dynamic
/// mappings stay out of the well-known range).
const FIRST_PORT: u16 = 1024;
/// How many ports a NAT can allocate.
const PORT_RANGE: u32 = 65536 - FIRST_PORT as u32;
/// Random picks tried before a random allocator falls back to scanning.
const RANDOM_TRIES: usize = 64;

/// What a mapping or a filter depends on (RFC 4787 §4.1 and §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Any remote endpoint (EIM / EIF).
    EndpointIndependent,
    /// The remote IP address, whatever its port (ADM / ADF).
    AddressDependent,
    /// The remote IP address and port (APDM / APDF).
    AddressAndPortDependent,
}

/// How a NAT picks the external port of a new mapping (RFC 4787 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAllocation {
    /// Reuse the internal port when free (and not below 1024), else scan
    /// upwards from 1024.
    Preserving,
    /// Hand out `first`, `first + step`, ... (wrapping within 1024..=65535),
    /// skipping ports in use.
    Sequential {
        /// The first port handed out.
        first: u16,
        /// The distance between consecutive allocations.
        step: u16,
    },
    /// Uniformly random free ports in 1024..=65535.
    Random,
    /// Reuse the internal port when free (and not below 1024), else a random
    /// free port: Linux `masquerade`, whose NAT core keeps the source port
    /// when it can and otherwise tries pseudo-random ports of the range (the
    /// lab saw 1329, 2029, 9034, 38572, 46181, 65004 …).
    PreservingElseRandom,
}

/// How a NAT behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// When an outbound packet reuses an existing mapping.
    pub mapping: Behavior,
    /// Which inbound packets a mapping admits: from remotes the internal
    /// endpoint sent to through it, compared by this behaviour.
    pub filtering: Behavior,
    /// How external ports are chosen.
    pub ports: PortAllocation,
    /// How long a mapping lives without traffic refreshing it (once a remote
    /// answered through it, when [`NatConfig::unreplied_timeout`] is set).
    pub binding_timeout: Duration,
    /// How long a mapping through which no remote has answered yet lives
    /// without traffic: Linux conntrack's `nf_conntrack_udp_timeout` (30 s),
    /// against `nf_conntrack_udp_timeout_stream` (120 s,
    /// [`NatConfig::binding_timeout`]) for a flow that saw a reply. `None`:
    /// `binding_timeout` for every mapping.
    pub unreplied_timeout: Option<Duration>,
    /// Whether admitted inbound packets refresh the mapping (outbound ones
    /// always do, REQ-6).
    pub refresh_on_inbound: bool,
    /// Whether packets from inside to the NAT's own external address are
    /// looped back (with the external source address, REQ-9a). A looped
    /// packet creates or refreshes the sender's mapping like any outbound
    /// one, then passes the destination mapping's filter like any inbound
    /// one.
    pub hairpinning: bool,
    /// The Linux conntrack quirk, with the lifetime of unreplied entries: a
    /// filtered inbound packet from remote R to external port P leaves an
    /// entry, and while it lives no outbound flow toward R may use P, so an
    /// outbound packet that would is moved to a new port. `None`: off.
    pub conntrack_quirk: Option<Duration>,
}

impl NatConfig {
    /// The RFC 4787 recommended default timeout (REQ-5 allows 2 min).
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
    /// Linux's `nf_conntrack_udp_timeout`: an unreplied UDP entry's lifetime.
    const LINUX_UNREPLIED: Duration = Duration::from_secs(30);

    /// How long a mapping lives without traffic, `replied` or not.
    fn lifetime(&self, replied: bool) -> Duration {
        match self.unreplied_timeout {
            Some(unreplied) if !replied => unreplied,
            _ => self.binding_timeout,
        }
    }

    /// "Full cone": EIM, EIF, port preserving, hairpinning.
    pub fn full_cone() -> Self {
        Self {
            mapping: Behavior::EndpointIndependent,
            filtering: Behavior::EndpointIndependent,
            ports: PortAllocation::Preserving,
            binding_timeout: Self::DEFAULT_TIMEOUT,
            unreplied_timeout: None,
            refresh_on_inbound: false,
            hairpinning: true,
            conntrack_quirk: None,
        }
    }

    /// "Restricted cone": EIM, ADF.
    pub fn restricted_cone() -> Self {
        Self {
            filtering: Behavior::AddressDependent,
            ..Self::full_cone()
        }
    }

    /// "Port-restricted cone": EIM, APDF.
    pub fn port_restricted_cone() -> Self {
        Self {
            filtering: Behavior::AddressAndPortDependent,
            ..Self::full_cone()
        }
    }

    /// "Symmetric": APDM, APDF, sequential ports.
    pub fn symmetric() -> Self {
        Self {
            mapping: Behavior::AddressAndPortDependent,
            filtering: Behavior::AddressAndPortDependent,
            ports: PortAllocation::Sequential {
                first: 40000,
                step: 1,
            },
            ..Self::full_cone()
        }
    }

    /// Linux `masquerade` with conntrack's default timers, as the NAT lab
    /// measured it: EIM, APDF, port preserving with a random port on a
    /// collision, no hairpinning, the conntrack quirk; a mapping lives 30 s
    /// until a remote answers through it, then 120 s, and every packet of
    /// it, inbound too, refreshes it.
    pub fn linux_masquerade() -> Self {
        Self {
            ports: PortAllocation::PreservingElseRandom,
            unreplied_timeout: Some(Self::LINUX_UNREPLIED),
            refresh_on_inbound: true,
            hairpinning: false,
            conntrack_quirk: Some(Self::LINUX_UNREPLIED),
            ..Self::port_restricted_cone()
        }
    }

    /// Linux `masquerade random,fully-random` (the lab's natS): APDM on
    /// random ports, with masquerade's filtering, timers and quirk.
    pub fn linux_fully_random() -> Self {
        Self {
            mapping: Behavior::AddressAndPortDependent,
            ports: PortAllocation::Random,
            ..Self::linux_masquerade()
        }
    }

    /// A stateful firewall that translates nothing, as a home router filters routed IPv6
    /// (RFC 6092: outbound and established/related inbound only): EIM, APDF, ports
    /// preserved, no hairpinning, and no conntrack quirk (an unsolicited packet is dropped
    /// in the router's forward filter, addressed to the host and not to the router, so it
    /// leaves no confirmed conntrack entry: the NAT lab's `ipv6-naive-race` and
    /// `ipv6-hop-limit`). Give the box the IP of the one host behind it as its external
    /// address: with ports preserved, the host's packets leave with their own source, and
    /// packets to the host's address reach the box's filter first. One host per box.
    pub fn stateful_firewall() -> Self {
        Self {
            hairpinning: false,
            ..Self::port_restricted_cone()
        }
    }

    /// A carrier-grade NAT (RFC 6888): EIM, APDF, random ports, hairpinning.
    pub fn carrier_grade() -> Self {
        Self {
            ports: PortAllocation::Random,
            ..Self::port_restricted_cone()
        }
    }
}

/// Something a NAT did, for its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatEvent {
    /// A new mapping, created by a packet toward `toward`.
    MappingCreated {
        /// The inside endpoint.
        internal: SocketAddr,
        /// Its external address and port.
        external: SocketAddr,
        /// The destination of the packet that created it.
        toward: SocketAddr,
    },
    /// A mapping timed out.
    MappingExpired {
        /// The inside endpoint.
        internal: SocketAddr,
        /// Its external address and port.
        external: SocketAddr,
    },
    /// An inbound packet was dropped.
    Filtered {
        /// Where it came from.
        remote: SocketAddr,
        /// The external address it was sent to.
        external: SocketAddr,
        /// Whether a mapping existed (and its filter refused the remote) or
        /// not.
        mapped: bool,
    },
    /// A packet from inside to the external address was looped back in.
    Hairpinned {
        /// Its source after translation (the sender's external endpoint).
        from: SocketAddr,
        /// The inside endpoint it went to.
        to: SocketAddr,
    },
    /// A packet from inside to the external address was dropped: no
    /// hairpinning.
    HairpinRefused {
        /// The inside sender.
        internal: SocketAddr,
        /// The external address it was sent to.
        destination: SocketAddr,
    },
    /// The conntrack quirk moved an outbound flow off a port.
    QuirkHit {
        /// The inside sender.
        internal: SocketAddr,
        /// The remote whose unreplied entry holds the port.
        remote: SocketAddr,
        /// The port the flow would have used.
        avoided: u16,
        /// The external endpoint it got instead.
        external: SocketAddr,
    },
    /// The NAT rebooted: every mapping and conntrack entry is gone.
    Rebooted {
        /// Its external IP from now on.
        external_ip: IpAddr,
        /// Whether the ports mapped before are never used again.
        new_ports: bool,
    },
}

impl fmt::Display for NatEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MappingCreated {
                internal,
                external,
                toward,
            } => write!(f, "mapping {internal} => {external} (toward {toward})"),
            Self::MappingExpired { internal, external } => {
                write!(f, "expired {internal} => {external}")
            }
            Self::Filtered {
                remote,
                external,
                mapped,
            } => {
                let why = if *mapped { "filter" } else { "no mapping" };
                write!(f, "dropped {remote} -> {external} ({why})")
            }
            Self::Hairpinned { from, to } => write!(f, "hairpinned {from} -> {to}"),
            Self::HairpinRefused {
                internal,
                destination,
            } => write!(f, "hairpin refused {internal} -> {destination}"),
            Self::QuirkHit {
                internal,
                remote,
                avoided,
                external,
            } => write!(
                f,
                "conntrack quirk: {internal} toward {remote} cannot use port {avoided}, got {external}"
            ),
            Self::Rebooted {
                external_ip,
                new_ports,
            } => {
                let ports = if *new_ports { ", new ports" } else { "" };
                write!(f, "rebooted as {external_ip}{ports}")
            }
        }
    }
}

/// One line of a NAT's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatLogEntry {
    /// When it happened.
    pub at: Instant,
    /// What happened.
    pub event: NatEvent,
}

/// A live mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The inside endpoint.
    pub internal: SocketAddr,
    /// Its external address and port.
    pub external: SocketAddr,
    /// When it times out unless refreshed.
    pub expires: Instant,
    /// The remotes the inside endpoint sent to through it.
    peers: BTreeSet<SocketAddr>,
    /// Whether a remote answered through it.
    replied: bool,
}

impl Binding {
    /// The remotes the inside endpoint sent to through this mapping.
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().copied()
    }
}

/// The remote part of a mapping's key, as narrow as the mapping behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Remote {
    Any,
    Address(IpAddr),
    Endpoint(SocketAddr),
}

/// Which mapping an outbound packet uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    internal: SocketAddr,
    remote: Remote,
}

impl Behavior {
    /// The part of `remote` this behaviour depends on.
    fn remote(self, remote: SocketAddr) -> Remote {
        match self {
            Self::EndpointIndependent => Remote::Any,
            Self::AddressDependent => Remote::Address(remote.ip()),
            Self::AddressAndPortDependent => Remote::Endpoint(remote),
        }
    }

    /// Whether a filter with this behaviour admits `remote` on a mapping
    /// that sent to `peers`.
    fn admits(self, peers: &BTreeSet<SocketAddr>, remote: SocketAddr) -> bool {
        let wanted = self.remote(remote);
        wanted == Remote::Any || peers.iter().any(|&p| self.remote(p) == wanted)
    }
}

/// A NAT box: its mappings, its conntrack entries and its log.
#[derive(Clone, Debug)]
pub struct Nat {
    id: NatId,
    config: NatConfig,
    external_ip: IpAddr,
    bindings: BTreeMap<Key, Binding>,
    by_port: BTreeMap<u16, Key>,
    /// Unreplied conntrack entries (external port, remote) and their expiry.
    unreplied: BTreeMap<(u16, SocketAddr), Instant>,
    next_port: u16,
    /// Ports a reboot took out of use (the same IP, new ports).
    retired: BTreeSet<u16>,
    log: Vec<NatLogEntry>,
}

impl Nat {
    /// A NAT with no mappings.
    pub(crate) fn new(id: NatId, external_ip: IpAddr, config: NatConfig) -> Self {
        let next_port = match config.ports {
            PortAllocation::Sequential { first, .. } => first.max(FIRST_PORT),
            PortAllocation::Preserving
            | PortAllocation::PreservingElseRandom
            | PortAllocation::Random => FIRST_PORT,
        };
        Self {
            id,
            config,
            external_ip,
            bindings: BTreeMap::new(),
            by_port: BTreeMap::new(),
            unreplied: BTreeMap::new(),
            next_port,
            retired: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    /// Its id in the world.
    pub fn id(&self) -> NatId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// The external address.
    pub fn external_ip(&self) -> IpAddr {
        self.external_ip
    }

    /// The live mappings.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> + '_ {
        self.bindings.values()
    }

    /// Everything the NAT did, oldest first.
    pub fn log(&self) -> &[NatLogEntry] {
        &self.log
    }

    /// When the next mapping or conntrack entry times out.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let bindings = self.bindings.values().map(|b| b.expires);
        bindings.chain(self.unreplied.values().copied()).min()
    }

    /// Reboots the NAT at `now` (a conntrack flush, a power cycle): every
    /// mapping and conntrack entry is forgotten; its external IP becomes
    /// `external_ip`; with `new_ports` the ports mapped so far are never
    /// handed out again (the same IP, new ports), otherwise a
    /// port-preserving NAT maps flows to the same ports again.
    pub(crate) fn reboot(&mut self, now: Instant, external_ip: IpAddr, new_ports: bool) {
        if new_ports {
            self.retired.extend(self.by_port.keys().copied());
        }
        self.bindings.clear();
        self.by_port.clear();
        self.unreplied.clear();
        self.external_ip = external_ip;
        let rebooted = NatEvent::Rebooted {
            external_ip,
            new_ports,
        };
        self.note(now, rebooted);
    }

    /// Removes what timed out by `now`, logging each mapping at its expiry.
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut dead: Vec<(Instant, Key)> = (self.bindings.iter())
            .filter(|(_, b)| b.expires <= now)
            .map(|(k, b)| (b.expires, *k))
            .collect();
        dead.sort();
        for (at, key) in dead {
            if let Some(b) = self.bindings.remove(&key) {
                self.by_port.remove(&b.external.port());
                let (internal, external) = (b.internal, b.external);
                self.note(at, NatEvent::MappingExpired { internal, external });
            }
        }
        self.unreplied.retain(|_, expires| *expires > now);
    }

    /// Translates an outbound packet from `internal` to `remote`: returns the
    /// external source, creating or refreshing the mapping.
    pub(crate) fn outbound(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        internal: SocketAddr,
        remote: SocketAddr,
    ) -> Result<SocketAddr, DropReason> {
        self.expire(now);
        // A flow the quirk moved has its own mapping for exactly this remote.
        let exact = Key {
            internal,
            remote: Remote::Endpoint(remote),
        };
        let normal = Key {
            internal,
            remote: self.config.mapping.remote(remote),
        };
        let found = [exact, normal]
            .into_iter()
            .find_map(|k| self.bindings.get(&k).map(|b| (k, b.external.port())));
        let key = match found {
            Some((_, port)) if self.blocked(port, remote) => {
                self.create(now, rng, exact, remote, Some(port))?
            }
            Some((key, _)) => key,
            None => self.create(now, rng, normal, remote, None)?,
        };
        let binding = self.bindings.get_mut(&key).ok_or(DropReason::NoRoute)?;
        let timeout = self.config.lifetime(binding.replied);
        binding.expires = now.checked_add(timeout).unwrap_or(now);
        binding.peers.insert(remote);
        Ok(binding.external)
    }

    /// Filters an inbound packet from `remote` to external `port`: returns the
    /// inside endpoint it goes to.
    pub(crate) fn inbound(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        port: u16,
    ) -> Result<SocketAddr, DropReason> {
        self.expire(now);
        let binding = (self.by_port.get(&port)).and_then(|k| self.bindings.get_mut(k));
        let mapped = binding.is_some();
        if let Some(b) = binding {
            if self.config.filtering.admits(&b.peers, remote) {
                b.replied = true;
                if self.config.refresh_on_inbound {
                    let timeout = self.config.lifetime(true);
                    b.expires = now.checked_add(timeout).unwrap_or(now);
                }
                return Ok(b.internal);
            }
        }
        let external = SocketAddr::new(self.external_ip, port);
        let filtered = NatEvent::Filtered {
            remote,
            external,
            mapped,
        };
        self.note(now, filtered);
        if let Some(lifetime) = self.config.conntrack_quirk {
            let expires = now.checked_add(lifetime).unwrap_or(now);
            self.unreplied.insert((port, remote), expires);
        }
        Err(DropReason::Filtered(self.id))
    }

    /// Loops a packet from `internal` to the NAT's own external `destination`
    /// back inside: returns its translated source and inside destination.
    pub(crate) fn hairpin(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        internal: SocketAddr,
        destination: SocketAddr,
    ) -> Result<(SocketAddr, SocketAddr), DropReason> {
        if !self.config.hairpinning {
            let refused = NatEvent::HairpinRefused {
                internal,
                destination,
            };
            self.note(now, refused);
            return Err(DropReason::HairpinRefused(self.id));
        }
        let from = self.outbound(now, rng, internal, destination)?;
        let to = self.inbound(now, from, destination.port())?;
        self.note(now, NatEvent::Hairpinned { from, to });
        Ok((from, to))
    }

    /// Whether an unreplied conntrack entry from `remote` holds `port`.
    fn blocked(&self, port: u16, remote: SocketAddr) -> bool {
        self.unreplied.contains_key(&(port, remote))
    }

    /// Creates the mapping `key` (replacing one with the same key) on a new
    /// port, logging a quirk hit when the port it would have had is held.
    fn create(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        key: Key,
        remote: SocketAddr,
        avoided: Option<u16>,
    ) -> Result<Key, DropReason> {
        if let Some(old) = self.bindings.remove(&key) {
            self.by_port.remove(&old.external.port());
        }
        let natural = match self.config.ports {
            PortAllocation::Preserving | PortAllocation::PreservingElseRandom => {
                Some(key.internal.port())
            }
            PortAllocation::Sequential { .. } => Some(self.next_port),
            PortAllocation::Random => None,
        };
        let avoided = avoided.or(natural.filter(|&p| self.blocked(p, remote)));
        let port = self
            .allocate(rng, key.internal.port(), remote)
            .ok_or(DropReason::PortsExhausted(self.id))?;
        let external = SocketAddr::new(self.external_ip, port);
        let binding = Binding {
            internal: key.internal,
            external,
            expires: now,
            peers: BTreeSet::new(),
            replied: false,
        };
        self.bindings.insert(key, binding);
        self.by_port.insert(port, key);
        let internal = key.internal;
        if let Some(avoided) = avoided {
            let hit = NatEvent::QuirkHit {
                internal,
                remote,
                avoided,
                external,
            };
            self.note(now, hit);
        }
        let created = NatEvent::MappingCreated {
            internal,
            external,
            toward: remote,
        };
        self.note(now, created);
        Ok(key)
    }

    /// Picks a free external port for a flow toward `remote`, or `None` when
    /// every port is taken.
    fn allocate(
        &mut self,
        rng: &mut impl Rng,
        internal_port: u16,
        remote: SocketAddr,
    ) -> Option<u16> {
        let usable = |nat: &Self, p: u16| {
            p >= FIRST_PORT
                && !nat.by_port.contains_key(&p)
                && !nat.retired.contains(&p)
                && !nat.blocked(p, remote)
        };
        let step = match self.config.ports {
            PortAllocation::Preserving | PortAllocation::PreservingElseRandom
                if usable(self, internal_port) =>
            {
                return Some(internal_port);
            }
            PortAllocation::Random | PortAllocation::PreservingElseRandom => {
                for _ in 0..RANDOM_TRIES {
                    let p = rng.random_range(FIRST_PORT..=u16::MAX);
                    if usable(self, p) {
                        return Some(p);
                    }
                }
                1
            }
            PortAllocation::Sequential { step, .. } => step.max(1),
            PortAllocation::Preserving => 1,
        };
        for _ in 0..PORT_RANGE {
            let p = self.next_port;
            let offset = (u32::from(p.saturating_sub(FIRST_PORT)) + u32::from(step)) % PORT_RANGE;
            self.next_port = FIRST_PORT.saturating_add(u16::try_from(offset).unwrap_or(0));
            if usable(self, p) {
                return Some(p);
            }
        }
        None
    }

    /// Appends to the log.
    fn note(&mut self, at: Instant, event: NatEvent) {
        self.log.push(NatLogEntry { at, event });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    #[allow(clippy::disallowed_methods)] // a start time for the test
    fn sequential_allocation_wraps_to_the_bottom_of_the_range() {
        let config = NatConfig {
            mapping: Behavior::AddressAndPortDependent,
            ports: PortAllocation::Sequential {
                first: 65534,
                step: 1,
            },
            ..NatConfig::full_cone()
        };
        let mut nat = Nat::new(NatId(0), "198.51.100.1".parse().unwrap(), config);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = crate::test_epoch();
        let inside: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let ports: Vec<u16> = (1..=3)
            .map(|i| {
                let remote = SocketAddr::from(([203, 0, 113, i], 3478));
                nat.outbound(now, &mut rng, inside, remote).unwrap().port()
            })
            .collect();
        assert_eq!(ports, [65534, 65535, 1024]);
    }
}
