//! What idling costs (feature `sim`): a hub node behind a Linux masquerade NAT dials
//! `direct` peers behind masquerade NATs and `relayed` peers behind random symmetric NATs,
//! every one through a public relay. The first kind punches through and goes direct; with
//! the second the NAT classes rule a direct path out, so those connections stay on the
//! relay. Once every connection settled, nothing is asked of any node: [`IdleLab::idle`]
//! counts the datagrams the hub sends over a span of virtual time (its keep-alives and
//! whatever else idling makes it send).
//!
//! Candidates and classes are handed to the nodes as [`node_lab`](super::node_lab) does
//! (read from the simulated NATs' tables), so no discovery runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::node_lab::nat_candidates;
use super::punch_lab::NatKind;
use super::{HostId, Link, Mesh, NatId, Outcome, PORT, lan_addr};
use crate::dht::Mode;
use crate::node::{Event, Node, NodeConfig, RelayEvent};
use crate::relay::RelayMode;

/// How an idle lab is set up.
#[derive(Clone, Debug)]
pub struct IdleLabConfig {
    /// The world's seed.
    pub seed: u64,
    /// Peers whose connection to the hub goes direct.
    pub direct: usize,
    /// Peers whose connection to the hub stays relayed.
    pub relayed: usize,
    /// Round-trip time between two NATs (and to the relay).
    pub rtt: Duration,
    /// How long the hub waits after each dial before the next (zero: it dials every peer
    /// at once).
    pub dial_gap: Duration,
}

impl Default for IdleLabConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            direct: 100,
            relayed: 100,
            rtt: Duration::from_millis(50),
            dial_gap: Duration::ZERO,
        }
    }
}

/// How long [`IdleLab::connect`] lets the connections settle once they are up.
pub const SETTLE: Duration = Duration::from_secs(120);

/// A hub with many idle connections; see the module docs.
pub struct IdleLab {
    /// The nodes and their world.
    pub mesh: Mesh,
    relay: HostId,
    hub: HostId,
    /// The hub's NAT's external IP: the source of everything the hub sends, as the
    /// internet sees it.
    hub_ip: IpAddr,
    /// Every node behind a NAT (the hub first), with its NAT and the NAT's kind.
    private: Vec<(HostId, NatId, NatKind)>,
    dial_gap: Duration,
}

/// The external IP of the `i`-th NAT (at most 255): `100.64.i.1`, one /24 each, as
/// subscribers of different providers (the relay's per-network handshake rate would
/// slow a crowd from one /24).
fn nat_ip(i: usize) -> IpAddr {
    let i = u8::try_from(i).unwrap_or_else(|_| unreachable!("at most 250 peers"));
    IpAddr::V4(Ipv4Addr::new(100, 64, i, 1))
}

/// Every node of the lab: a DHT client (the relay a server that always relays) with pool
/// and relay limits wide enough for every peer's connection, reservation and circuit, no
/// discovery, no birthday search, and a pool that keeps idle connections.
fn configure(config: &mut NodeConfig, private: bool) {
    if private {
        config.dht.mode = Mode::Client;
    } else {
        config.relay.mode = RelayMode::Always;
    }
    config.reach.auto_discover = false;
    // The relayed peers (fully-random NAT) stay relayed: no birthday search, which would
    // make them direct (the search's own cost is measured by the punch tests, not here).
    config.upgrade.search = false;
    // The hub dials every peer, each over a circuit: a stream of its relay connection.
    config.pool.max_outbound = 1024;
    config.transport.max_concurrent_bidi_streams = 1024;
    // Idle connections stay open (the pool would close them after 5 idle minutes).
    config.pool.idle_ttl = Duration::from_secs(86_400);
    let relay = &mut config.relay;
    relay.max_reservations = 1024;
    relay.max_reservations_per_ip = 1024;
    relay.max_circuits = 1024;
    relay.max_circuits_per_peer = 1024;
    relay.max_circuits_per_ip = 1024;
}

impl IdleLab {
    /// Builds the world, its virtual clock starting at `start`; nothing runs yet.
    ///
    /// # Panics
    /// With more than 250 peers (node identities are one byte).
    pub fn new(config: &IdleLabConfig, start: Instant) -> Self {
        assert!(config.direct + config.relayed <= 250, "at most 250 peers");
        let mut mesh = Mesh::new(config.seed, start);
        mesh.set_link(Link::with_latency(config.rtt / 4).hops(2));
        let relay_addr = SocketAddr::from(([203, 0, 113, 1], PORT));
        let relay = mesh.add_public(relay_addr, |c| configure(c, false));
        let kinds = std::iter::once(NatKind::LinuxMasquerade)
            .chain(std::iter::repeat_n(NatKind::LinuxMasquerade, config.direct))
            .chain(std::iter::repeat_n(
                NatKind::SymmetricRandom,
                config.relayed,
            ));
        let mut private = Vec::new();
        for (i, kind) in kinds.enumerate() {
            let nat_config = kind.config().unwrap_or_else(|| unreachable!("a NAT"));
            let internet = mesh.world.internet();
            let link = Link::with_latency(config.rtt / 4).hops(2);
            let (nat, net) = mesh.world.add_nat(internet, nat_ip(i), link, nat_config);
            // Each on a LAN of its own: no peer's LAN candidate is another's address.
            let lan = lan_addr(u8::try_from(i + 1).unwrap_or_else(|_| unreachable!("at most 250")));
            let host = mesh.add_node(net, lan, |c| configure(c, true));
            private.push((host, nat, kind));
        }
        Self {
            mesh,
            relay,
            hub: private[0].0,
            hub_ip: nat_ip(0),
            private,
            dial_gap: config.dial_gap,
        }
    }

    /// Every node reserves on the relay and gets its candidates, then the hub dials every
    /// peer through the relay ([`IdleLabConfig::dial_gap`] apart) and the connections settle (punches end, direct paths
    /// switch); the hub's connections (direct, relayed), `None` when a reservation or a
    /// connection did not come up in time.
    pub fn connect(&mut self) -> Option<(usize, usize)> {
        let hosts: Vec<HostId> = self.private.iter().map(|p| p.0).collect();
        for &host in &hosts {
            self.mesh.reserve(host, self.relay);
        }
        let mut granted = 0;
        let reserved = self
            .mesh
            .world
            .drive(Duration::from_secs(60), |_, _, event| {
                granted += usize::from(matches!(
                    event,
                    Event::Relay(RelayEvent::ReservationGranted { .. })
                ));
                granted == hosts.len()
            });
        if !reserved {
            return None;
        }
        let relay_addr = self.mesh.world.host_addr(self.relay);
        for &(host, nat, kind) in &self.private {
            let (candidates, class) =
                nat_candidates(&self.mesh.world, host, &[nat], relay_addr, Some(kind));
            (self.mesh.world).with_machine(host, |n, _| n.set_punch_candidates(candidates, class));
        }
        let relay = self.mesh.contact(self.relay);
        for &peer in &hosts[1..] {
            let target = self.mesh.id(peer);
            let relay = relay.clone();
            (self.mesh.world).with_machine(self.hub, |n, now| n.dial_via_relay(now, relay, target));
            if !self.dial_gap.is_zero() {
                // The events wait for the drive below.
                self.mesh.world.run_for(self.dial_gap);
            }
        }
        let hub = self.hub;
        let mut connected = 0;
        let up = self
            .mesh
            .world
            .drive(Duration::from_secs(60), |_, host, event| {
                connected += usize::from(host == hub && matches!(event, Event::Connected { .. }));
                connected == hosts.len() - 1
            });
        if !up {
            return None;
        }
        // A punch whose first attempt fails waits out the conntrack quirk (31 s) before
        // the next; two minutes see every punch end and the connections settle.
        self.mesh.world.run_for(SETTLE);
        self.mesh.world.take_events();
        Some(self.mesh.node(self.hub).connection_kinds())
    }

    /// Runs `span` of virtual time with nothing asked of any node; the datagrams the hub
    /// sent in it.
    pub fn idle(&mut self, span: Duration) -> usize {
        let since = self.mesh.world.elapsed();
        self.mesh.world.run_for(span);
        self.hub_sent(since, None)
    }

    /// Datagrams the hub sent since `since` (from the world's start), to the host at IP
    /// `to` only when given (a host's own address: [`IdleLab::peer_ip`],
    /// [`IdleLab::relay_ip`]).
    pub fn hub_sent(&self, since: Duration, to: Option<IpAddr>) -> usize {
        (self.mesh.world.trace().entries().iter())
            .filter(|e| e.elapsed >= since && e.size > 0 && e.source.ip() == self.hub_ip)
            .filter(|e| to.is_none_or(|to| e.destination.ip() == to))
            .filter(|e| !matches!(e.outcome, Outcome::Event(..)))
            .count()
    }

    /// Peer `i`'s own address (the direct peers first, then the relayed).
    pub fn peer_ip(&self, i: usize) -> IpAddr {
        self.mesh.world.host_addr(self.private[i + 1].0).ip()
    }

    /// The relay's address.
    pub fn relay_ip(&self) -> IpAddr {
        self.mesh.world.host_addr(self.relay).ip()
    }

    /// The hub.
    pub fn hub(&self) -> &Node {
        self.mesh.node(self.hub)
    }
}
