//! The world: hosts, networks and NAT boxes under one virtual clock.
//!
//! A [`World`] owns every host's machine, the networks (the internet and the
//! private network behind each NAT), the NAT boxes, the packets in flight,
//! the host events and the trace. The clock only moves when the world steps:
//! it jumps to the earliest packet arrival, host deadline or NAT timeout and
//! handles it. One seeded generator decides every loss, delay and random port,
//! so the same seed and the same calls give the same trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use smallvec::smallvec;

use super::link::{Burst, Copies, Link};
use super::nat::{Nat, NatConfig};
use super::trace::{DropReason, Outcome, Trace, TraceEntry};
use crate::{Datagram, Input, Machine, Output, SocketRequest, Transmit};

/// The IP TTL of a transmit that does not set one.
pub const DEFAULT_TTL: u8 = 64;

/// The most extra sockets one host keeps open ([`SocketRequest::Open`] beyond it gets
/// fewer).
pub const MAX_EXTRA_SOCKETS: usize = 1024;

/// The first ephemeral port extra sockets are bound to (Linux's default range).
const EPHEMERAL_PORTS: u16 = 32768;

/// A network: the internet or the inside of a NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetId(usize);

/// A host of a world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(usize);

/// A NAT box of a world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatId(pub(crate) usize);

/// An event a host's machine reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEvent<E> {
    /// When.
    pub at: Instant,
    /// Which host.
    pub host: HostId,
    /// The event.
    pub event: E,
}

/// Where a packet can arrive: a host, or one side of a NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Attachment {
    Host(HostId),
    /// A NAT's external side, on the network outside it.
    Outside(NatId),
    /// A NAT's internal side, the gateway of the network inside it.
    Inside(NatId),
}

/// A packet on its way.
#[derive(Clone, Debug)]
struct Packet {
    source: SocketAddr,
    destination: SocketAddr,
    payload: Bytes,
    ttl: u8,
}

impl Packet {
    /// The size of the IP packet: payload plus IP and UDP headers.
    fn ip_size(&self) -> usize {
        let headers = if self.destination.is_ipv4() { 28 } else { 48 };
        self.payload.len().saturating_add(headers)
    }
}

struct Host<M> {
    machine: M,
    net: NetId,
    addr: SocketAddr,
    /// Extra sockets the machine asked for, on `addr`'s IP.
    extra: BTreeSet<SocketAddr>,
    link: Link,
    /// The link's loss chains: outbound, inbound.
    bursts: [Burst; 2],
    online: bool,
    deadline: Option<Instant>,
}

impl<M> Host<M> {
    /// Whether `addr` is one of the host's sockets.
    fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.addr || self.extra.contains(&addr)
    }
}

struct NatBox {
    nat: Nat,
    /// The NAT's next timeout, as filed in the world's timers.
    expiry: Option<Instant>,
    outside: NetId,
    inside: NetId,
    link: Link,
    /// The link's loss chains: outbound, inbound.
    bursts: [Burst; 2],
}

/// What the next step handles, in this order when times tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Expiry(NatId),
    Arrival(u64),
    Timer(HostId),
}

/// A simulated network of machines; see the module docs.
pub struct World<M: Machine> {
    start: Instant,
    now: Instant,
    rng: ChaCha8Rng,
    hosts: Vec<Host<M>>,
    nats: Vec<NatBox>,
    /// The NAT each network is behind (`None` for the internet).
    networks: Vec<Option<NatId>>,
    /// The hosts on each network by address (several may share an IP).
    hosts_at: BTreeMap<(NetId, SocketAddr), HostId>,
    /// The NATs' external sides on each network.
    nats_at: BTreeMap<(NetId, IpAddr), NatId>,
    flights: BTreeMap<(Instant, u64), (Attachment, Packet)>,
    /// The deadlines of online hosts and the NATs' next timeouts.
    timers: BTreeSet<(Instant, Due)>,
    sent: u64,
    /// Transmits of several datagrams (GSO bursts) the machines sent, and the
    /// datagrams in them.
    bursts: (u64, u64),
    /// Pairs of IPs (lower first) between which every packet is dropped.
    cuts: BTreeSet<(IpAddr, IpAddr)>,
    events: Vec<HostEvent<M::Event>>,
    trace: Trace,
}

impl<M: Machine> World<M>
where
    M::Event: Debug,
{
    /// An empty world (just the internet) whose clock reads `start`, with
    /// every random choice drawn from `seed`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            start,
            now: start,
            rng: ChaCha8Rng::seed_from_u64(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            networks: vec![None],
            hosts_at: BTreeMap::new(),
            nats_at: BTreeMap::new(),
            flights: BTreeMap::new(),
            timers: BTreeSet::new(),
            sent: 0,
            bursts: (0, 0),
            cuts: BTreeSet::new(),
            events: Vec::new(),
            trace: Trace::default(),
        }
    }

    /// The public internet.
    pub fn internet(&self) -> NetId {
        NetId(0)
    }

    /// Adds a NAT whose external side has `external_ip` on network `outside`
    /// (attached through `link`) and returns it with the new network inside
    /// it. Nest NATs by giving a NAT's inside network as `outside`.
    ///
    /// # Panics
    /// If `external_ip` is already taken on `outside`.
    pub fn add_nat(
        &mut self,
        outside: NetId,
        external_ip: IpAddr,
        link: Link,
        config: NatConfig,
    ) -> (NatId, NetId) {
        let id = NatId(self.nats.len());
        let inside = NetId(self.networks.len());
        assert!(
            !self.ip_taken(outside, external_ip),
            "{external_ip} is already taken on {outside:?}"
        );
        self.nats_at.insert((outside, external_ip), id);
        self.networks.push(Some(id));
        self.nats.push(NatBox {
            nat: Nat::new(id, external_ip, config),
            expiry: None,
            outside,
            inside,
            link,
            bursts: [Burst::default(); 2],
        });
        (id, inside)
    }

    /// Adds a host with address `addr` on network `net`, attached through
    /// `link`, running `machine`. It starts online; its machine is asked for
    /// its first deadline.
    ///
    /// # Panics
    /// If `addr` is already taken on `net`, or its IP is a NAT's there.
    pub fn add_host(&mut self, net: NetId, addr: SocketAddr, link: Link, machine: M) -> HostId {
        let id = HostId(self.hosts.len());
        self.claim(net, addr, id);
        self.hosts.push(Host {
            machine,
            net,
            addr,
            extra: BTreeSet::new(),
            link,
            bursts: [Burst::default(); 2],
            online: true,
            deadline: None,
        });
        self.drain(id);
        id
    }

    /// Takes a host offline (it gets nothing, its timers wait) or back.
    pub fn set_online(&mut self, host: HostId, online: bool) {
        let deadline = self.hosts[host.0].deadline;
        self.set_deadline(host, None);
        self.hosts[host.0].online = online;
        self.set_deadline(host, deadline);
    }

    /// Moves a host to address `addr` on network `net` and tells its machine
    /// with [`Input::LocalAddressChanged`] (even while it is offline). Packets
    /// still in flight to the old address are dropped when they arrive.
    ///
    /// # Panics
    /// If `addr` is already taken on `net`, or its IP is a NAT's there.
    pub fn move_host(&mut self, host: HostId, net: NetId, addr: SocketAddr) {
        let old = self.hosts[host.0].addr;
        self.hosts_at.remove(&(self.hosts[host.0].net, old));
        // Extra sockets bound to the old address die with it.
        let extra = std::mem::take(&mut self.hosts[host.0].extra);
        for socket in extra {
            self.hosts_at.remove(&(self.hosts[host.0].net, socket));
        }
        self.claim(net, addr, host);
        let h = &mut self.hosts[host.0];
        h.net = net;
        h.addr = addr;
        let changed = Input::LocalAddressChanged { old, new: addr };
        h.machine.handle_input(self.now, changed);
        self.drain(host);
    }

    /// Replaces a host's machine with `machine`, as a process killed and
    /// started again on the same address: the old machine's state is gone
    /// (it said nothing to anyone), its extra sockets are closed, and
    /// packets in flight reach the new one. The new machine is asked for
    /// its first deadline.
    pub fn restart(&mut self, host: HostId, machine: M) {
        let net = self.hosts[host.0].net;
        let extra = std::mem::take(&mut self.hosts[host.0].extra);
        for socket in extra {
            self.hosts_at.remove(&(net, socket));
        }
        self.hosts[host.0].machine = machine;
        self.drain(host);
    }

    /// Reboots a NAT (see [`Nat`]'s reboot): every mapping is gone, its
    /// external IP becomes `new_ip` (when given) and with `new_ports` it
    /// never maps to the ports it used before. Packets in flight to the old
    /// IP are dropped when they arrive.
    ///
    /// # Panics
    /// If `new_ip` is already taken on the NAT's outside network.
    pub fn reboot_nat(&mut self, nat: NatId, new_ip: Option<IpAddr>, new_ports: bool) {
        let outside = self.nats[nat.0].outside;
        let old_ip = self.nats[nat.0].nat.external_ip();
        let ip = new_ip.unwrap_or(old_ip);
        if ip != old_ip {
            assert!(
                !self.ip_taken(outside, ip),
                "{ip} is already taken on {outside:?}"
            );
            self.nats_at.remove(&(outside, old_ip));
            self.nats_at.insert((outside, ip), nat);
        }
        let now = self.now;
        self.nats[nat.0].nat.reboot(now, ip, new_ports);
    }

    /// Replaces a host's link (to degrade it, or cut it with loss 1.0);
    /// packets already in flight keep their fate.
    pub fn set_host_link(&mut self, host: HostId, link: Link) {
        self.hosts[host.0].link = link;
    }

    /// Cuts (or, with `cut` false, restores) the route between IPs `a` and `b`: every
    /// packet between them, either way, is dropped as it is sent across a network, as
    /// by a broken router between them; other routes of either side keep working.
    pub fn cut(&mut self, a: IpAddr, b: IpAddr, cut: bool) {
        let pair = if a <= b { (a, b) } else { (b, a) };
        if cut {
            self.cuts.insert(pair);
        } else {
            self.cuts.remove(&pair);
        }
    }

    /// Replaces the link of a NAT's external side.
    pub fn set_nat_link(&mut self, nat: NatId, link: Link) {
        self.nats[nat.0].link = link;
    }

    /// Runs `f` on a host's machine at the current time (to give it a
    /// command), then sends what it queued.
    pub fn with_machine<R>(&mut self, host: HostId, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let result = f(&mut self.hosts[host.0].machine, self.now);
        self.drain(host);
        result
    }

    /// A host's machine.
    pub fn machine(&self, host: HostId) -> &M {
        &self.hosts[host.0].machine
    }

    /// The network a host is on.
    pub fn host_net(&self, host: HostId) -> NetId {
        self.hosts[host.0].net
    }

    /// A host's current address.
    pub fn host_addr(&self, host: HostId) -> SocketAddr {
        self.hosts[host.0].addr
    }

    /// A NAT box, to read its mappings and log.
    pub fn nat(&self, nat: NatId) -> &Nat {
        &self.nats[nat.0].nat
    }

    /// Every NAT box, in the order they were added.
    pub fn nats(&self) -> impl Iterator<Item = &Nat> + '_ {
        self.nats.iter().map(|b| &b.nat)
    }

    /// The time the world started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.start)
    }

    /// Every event the hosts reported (since the last
    /// [`take_events`](Self::take_events)), oldest first.
    pub fn events(&self) -> &[HostEvent<M::Event>] {
        &self.events
    }

    /// Takes the events reported so far.
    pub fn take_events(&mut self) -> Vec<HostEvent<M::Event>> {
        std::mem::take(&mut self.events)
    }

    /// The trace so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The transmits of several datagrams (one GSO send each on a real
    /// socket) the machines sent so far, and how many datagrams they held:
    /// each went on the wire datagram by datagram.
    pub fn bursts(&self) -> (u64, u64) {
        self.bursts
    }

    /// The hash of the trace so far ([`Trace::hash`]).
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// When the next thing happens: a packet arrives, an online host's
    /// deadline comes or a NAT entry times out. `None`: nothing ever will.
    pub fn next_time(&self) -> Option<Instant> {
        self.next_due().map(|(at, _)| at)
    }

    /// Moves the clock to the next thing and handles it. Returns `false`
    /// (and does nothing) when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some((at, due)) = self.next_due() else {
            return false;
        };
        self.now = self.now.max(at);
        match due {
            Due::Expiry(nat) => {
                self.nats[nat.0].nat.expire(self.now);
                self.touch_nat(nat);
            }
            Due::Arrival(seq) => {
                if let Some((to, packet)) = self.flights.remove(&(at, seq)) {
                    self.arrive(to, packet);
                }
            }
            Due::Timer(host) => {
                self.hosts[host.0]
                    .machine
                    .handle_input(self.now, Input::Timeout);
                self.drain(host);
            }
        }
        true
    }

    /// Handles everything due up to `until`, then sets the clock to `until`
    /// (if it is later).
    pub fn run_until(&mut self, until: Instant) {
        self.run_while(until, |_| true);
    }

    /// [`run_until`](Self::run_until) `duration` from now.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now.checked_add(duration).unwrap_or(self.now);
        self.run_until(until);
    }

    /// Steps while `keep_going(world)` holds and something is due by `limit`.
    /// Returns `true` if it stopped because `keep_going` turned false (the
    /// clock stays there), `false` if it reached `limit` (the clock moves to
    /// `limit`).
    pub fn run_while(&mut self, limit: Instant, mut keep_going: impl FnMut(&Self) -> bool) -> bool {
        while keep_going(self) {
            match self.next_time() {
                Some(at) if at <= limit => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(limit);
                    return false;
                }
            }
        }
        true
    }

    /// Steps for at most `within`, taking the events as they come and
    /// handing each to `react` (which may act on the world, e.g. answer a
    /// request) until it returns true. Returns false when time ran out
    /// first (the clock stays at the last thing handled).
    pub fn drive(
        &mut self,
        within: Duration,
        mut react: impl FnMut(&mut Self, HostId, M::Event) -> bool,
    ) -> bool {
        let limit = self.now.checked_add(within).unwrap_or(self.now);
        loop {
            let mut done = false;
            for event in self.take_events() {
                done |= react(self, event.host, event.event);
            }
            if done {
                return true;
            }
            match self.next_time() {
                Some(at) if at <= limit => {
                    self.step();
                }
                _ => return false,
            }
        }
    }

    /// The earliest due item, ties broken by [`Due`]'s order.
    fn next_due(&self) -> Option<(Instant, Due)> {
        let arrival = (self.flights.keys().next()).map(|&(at, seq)| (at, Due::Arrival(seq)));
        self.timers
            .first()
            .copied()
            .into_iter()
            .chain(arrival)
            .min()
    }

    /// Files a host's new deadline (an offline host's is kept, not filed).
    fn set_deadline(&mut self, id: HostId, deadline: Option<Instant>) {
        let host = &mut self.hosts[id.0];
        if host.online {
            if let Some(old) = host.deadline {
                self.timers.remove(&(old, Due::Timer(id)));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, Due::Timer(id)));
            }
        }
        host.deadline = deadline;
    }

    /// Files a NAT's next timeout after its state changed.
    fn touch_nat(&mut self, id: NatId) {
        let b = &mut self.nats[id.0];
        let next = b.nat.next_expiry();
        if let Some(old) = b.expiry {
            self.timers.remove(&(old, Due::Expiry(id)));
        }
        if let Some(new) = next {
            self.timers.insert((new, Due::Expiry(id)));
        }
        b.expiry = next;
    }

    /// Registers `addr` on `net` as `host`'s.
    fn claim(&mut self, net: NetId, addr: SocketAddr, host: HostId) {
        let nat = self.nats_at.contains_key(&(net, addr.ip()));
        let previous = self.hosts_at.insert((net, addr), host);
        assert!(
            !nat && previous.is_none(),
            "{addr} is already taken on {net:?}"
        );
    }

    /// Whether a host or NAT has `ip` on `net`.
    fn ip_taken(&self, net: NetId, ip: IpAddr) -> bool {
        let ports = (net, SocketAddr::new(ip, 0))..=(net, SocketAddr::new(ip, u16::MAX));
        self.nats_at.contains_key(&(net, ip)) || self.hosts_at.range(ports).next().is_some()
    }

    /// Who gets a packet for `destination` on `net`: the host with that
    /// address, the NAT with that IP, or the NAT the network is behind.
    fn locate(&self, net: NetId, destination: SocketAddr) -> Result<Attachment, DropReason> {
        if let Some(&host) = self.hosts_at.get(&(net, destination)) {
            return Ok(Attachment::Host(host));
        }
        if let Some(&nat) = self.nats_at.get(&(net, destination.ip())) {
            return Ok(Attachment::Outside(nat));
        }
        if self.ip_taken(net, destination.ip()) {
            return Err(DropReason::NoListener);
        }
        self.networks[net.0]
            .map(Attachment::Inside)
            .ok_or(DropReason::NoRoute)
    }

    /// Drains a host's machine: sends its transmits, records its events.
    fn drain(&mut self, id: HostId) {
        let mut outputs = Vec::new();
        let host = &mut self.hosts[id.0];
        let deadline = host.machine.drain(|output| outputs.push(output));
        let addr = host.addr;
        self.set_deadline(id, deadline);
        for output in outputs {
            match output {
                Output::Transmit(transmit) => self.send(id, transmit),
                Output::Sockets(request) => self.sockets(id, request),
                Output::Event(event) => {
                    let outcome = Outcome::Event(id, format!("{event:?}"));
                    self.record(addr, addr, 0, outcome);
                    let at = self.now;
                    self.events.push(HostEvent {
                        at,
                        host: id,
                        event,
                    });
                }
            }
        }
    }

    /// Opens or closes a host's extra sockets: opened ones take the next free ephemeral
    /// ports of the host's IP (at most [`MAX_EXTRA_SOCKETS`] open) and are reported to the
    /// machine at once; closing forgets the host's own ones.
    fn sockets(&mut self, id: HostId, request: SocketRequest) {
        let (net, ip) = (self.hosts[id.0].net, self.hosts[id.0].addr.ip());
        match request {
            SocketRequest::Open { count } => {
                let room = MAX_EXTRA_SOCKETS.saturating_sub(self.hosts[id.0].extra.len());
                let mut opened = Vec::new();
                let free = (EPHEMERAL_PORTS..=u16::MAX).map(|port| SocketAddr::new(ip, port));
                for addr in free.filter(|a| !self.hosts_at.contains_key(&(net, *a))) {
                    if opened.len() >= room.min(usize::from(count)) {
                        break;
                    }
                    opened.push(addr);
                }
                for &addr in &opened {
                    self.claim(net, addr, id);
                    self.hosts[id.0].extra.insert(addr);
                }
                let now = self.now;
                let input = Input::SocketsOpened(opened);
                self.hosts[id.0].machine.handle_input(now, input);
                self.drain(id);
            }
            SocketRequest::Close(addrs) => {
                for addr in addrs {
                    if self.hosts[id.0].extra.remove(&addr) {
                        self.hosts_at.remove(&(net, addr));
                    }
                }
            }
        }
    }

    /// Puts a host's transmit on its network, datagram by datagram (a
    /// transmit of several segments is several packets on the wire).
    fn send(&mut self, id: HostId, transmit: Transmit) {
        let count = transmit.datagram_count();
        if count > 1 {
            self.bursts.0 += 1;
            self.bursts.1 += count as u64;
        }
        for datagram in transmit.split(1) {
            let host = &self.hosts[id.0];
            let packet = Packet {
                source: datagram.source.unwrap_or(host.addr),
                destination: datagram.destination,
                payload: datagram.payload,
                ttl: datagram.ttl.unwrap_or(DEFAULT_TTL),
            };
            if !host.owns(packet.source) {
                self.drop(&packet, DropReason::BadSource);
                continue;
            }
            self.forward(host.net, Attachment::Host(id), packet);
        }
    }

    /// Sends a packet from `from` across network `net` toward whoever owns
    /// its destination there (or the NAT the network is behind).
    fn forward(&mut self, net: NetId, from: Attachment, mut packet: Packet) {
        let (s, d) = (packet.source.ip(), packet.destination.ip());
        if self.cuts.contains(&(s.min(d), s.max(d))) {
            return self.drop(&packet, DropReason::Cut);
        }
        let to = match self.locate(net, packet.destination) {
            Ok(to) if to == from => return self.drop(&packet, DropReason::NoRoute),
            Ok(to) => to,
            Err(reason) => return self.drop(&packet, reason),
        };
        let size = packet.ip_size();
        let mut delays: Copies = smallvec![Duration::ZERO];
        for (attachment, direction) in [(from, 0), (to, 1)] {
            let crossing = crossing(&mut self.hosts, &mut self.nats, attachment, direction);
            let Some((link, burst)) = crossing else {
                continue;
            };
            match link.cross(&mut self.rng, burst, size, &mut packet.ttl) {
                Ok(copies) => {
                    delays = (delays.iter())
                        .flat_map(|d| copies.iter().map(move |c| d.saturating_add(*c)))
                        .collect();
                }
                Err(reason) => return self.drop(&packet, reason),
            }
        }
        for delay in delays {
            let at = self.now.checked_add(delay).unwrap_or(self.now);
            self.sent = self.sent.wrapping_add(1);
            self.flights.insert((at, self.sent), (to, packet.clone()));
        }
    }

    /// Handles a packet arriving at `to`.
    fn arrive(&mut self, to: Attachment, mut packet: Packet) {
        let nat = match to {
            Attachment::Host(id) => return self.deliver(id, packet),
            Attachment::Outside(id) | Attachment::Inside(id) => id,
        };
        if packet.ttl <= 1 {
            return self.expire_at_nat(to, nat, &packet);
        }
        packet.ttl -= 1;
        let translated = self.translate(to, nat, &packet);
        self.touch_nat(nat);
        match translated {
            Ok(((net, from), source, destination)) => {
                (packet.source, packet.destination) = (source, destination);
                self.forward(net, from, packet);
            }
            Err(reason) => self.drop(&packet, reason),
        }
    }

    /// A packet reached side `at` of NAT `id` with no TTL left to be forwarded.
    /// From inside it dies there (forwarding checks the TTL before the NAT
    /// maps anything). From outside it is addressed to the NAT router itself,
    /// which Linux takes in without a TTL check: conntrack sees it — it plants
    /// the quirk's unreplied entry when filtered, refreshes the mapping it
    /// matches — and only forwarding it inside fails (the NAT lab's
    /// `ttl-too-large`).
    fn expire_at_nat(&mut self, at: Attachment, id: NatId, packet: &Packet) {
        if at != Attachment::Outside(id) {
            return self.drop(packet, DropReason::TtlExpired);
        }
        let (source, port) = (packet.source, packet.destination.port());
        let seen = self.nats[id.0].nat.inbound(self.now, source, port);
        self.touch_nat(id);
        self.drop(packet, seen.err().unwrap_or(DropReason::TtlExpired));
    }

    /// Runs a packet that reached side `at` of NAT `id` through it: returns
    /// the network it goes on and the side it leaves from, and its new source
    /// and destination.
    fn translate(
        &mut self,
        at: Attachment,
        id: NatId,
        packet: &Packet,
    ) -> Result<((NetId, Attachment), SocketAddr, SocketAddr), DropReason> {
        let (now, rng, b) = (self.now, &mut self.rng, &mut self.nats[id.0]);
        let (source, destination) = (packet.source, packet.destination);
        let inward = (b.inside, Attachment::Inside(id));
        if at == Attachment::Outside(id) {
            let internal = b.nat.inbound(now, source, destination.port())?;
            Ok((inward, source, internal))
        } else if destination.ip() == b.nat.external_ip() {
            let (from, to) = b.nat.hairpin(now, rng, source, destination)?;
            Ok((inward, from, to))
        } else {
            let external = b.nat.outbound(now, rng, source, destination)?;
            let outward = (b.outside, Attachment::Outside(id));
            Ok((outward, external, destination))
        }
    }

    /// Hands a packet to its host's machine, if it is online and listening.
    fn deliver(&mut self, id: HostId, packet: Packet) {
        let host = &self.hosts[id.0];
        if !host.online {
            return self.drop(&packet, DropReason::HostOffline);
        }
        if !host.owns(packet.destination) {
            return self.drop(&packet, DropReason::NoListener);
        }
        self.record_packet(&packet, Outcome::Delivered(id));
        let datagram = Datagram {
            local: packet.destination,
            remote: packet.source,
            payload: packet.payload,
        };
        let now = self.now;
        self.hosts[id.0]
            .machine
            .handle_input(now, Input::Datagram(datagram));
        self.drain(id);
    }

    /// Records a dropped packet.
    fn drop(&mut self, packet: &Packet, reason: DropReason) {
        self.record_packet(packet, Outcome::Dropped(reason));
    }

    /// Records what became of a packet.
    fn record_packet(&mut self, packet: &Packet, outcome: Outcome) {
        let size = packet.payload.len();
        self.record(packet.source, packet.destination, size, outcome);
    }

    /// Appends to the trace.
    fn record(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        size: usize,
        outcome: Outcome,
    ) {
        self.trace.record(TraceEntry {
            elapsed: self.elapsed(),
            source,
            destination,
            size,
            outcome,
        });
    }
}

/// The link of an attachment and its loss chain in `direction` (0 out, 1 in);
/// `None` for a NAT's inside, which is ideal.
fn crossing<'a, M>(
    hosts: &'a mut [Host<M>],
    nats: &'a mut [NatBox],
    attachment: Attachment,
    direction: usize,
) -> Option<(Link, &'a mut Burst)> {
    let (link, bursts) = match attachment {
        Attachment::Host(id) => {
            let h = &mut hosts[id.0];
            (h.link, &mut h.bursts)
        }
        Attachment::Outside(id) => {
            let n = &mut nats[id.0];
            (n.link, &mut n.bursts)
        }
        Attachment::Inside(_) => return None,
    };
    bursts.get_mut(direction).map(|b| (link, b))
}
