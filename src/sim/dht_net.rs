//! A DHT-only network simulator: many [`Dht`]s, virtual time, a QUIC model.
//!
//! No packets and no QUIC, but what the DHT would feel of them: a
//! connection per pair of nodes whose first use costs a handshake round trip
//! (after which both ends learn its RTT, and the requests that waited for it
//! go out), reliable delivery where a lost
//! packet arrives a retransmission delay (1.5 RTT) late instead of never,
//! and dead nodes that never answer (their entries stay in others' tables).
//! Events run from a queue ordered by (virtual time, sequence number), so a
//! run is a pure function of its [`SimConfig`]. Per-node state is the `Dht`
//! itself plus a timer slot, so 10,000 nodes fit in a few hundred MB.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::contract::Child;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::collections::HashMap;
use crate::id::{Distance, Identity, NodeId, RecordKey};

use crate::dht::{
    Contact, Dht, DhtConfig, DhtEvent, DhtOutput, Inbound, Request, RequestId, Response,
};

/// The network and the nodes of one simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes (all DHT servers).
    pub nodes: usize,
    /// Round-trip time of every link.
    pub rtt: Duration,
    /// Each one-way delay is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// Probability that a packet is lost (and retransmitted 1.5 RTT later).
    pub loss: f64,
    /// Virtual time between two nodes joining.
    pub join_spacing: Duration,
    /// Seed of identities, jitter, loss and every node's generator.
    pub seed: u64,
    /// Configuration of every node.
    pub dht: DhtConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 100,
            rtt: Duration::from_millis(50),
            jitter: 0.1,
            loss: 0.0,
            join_spacing: Duration::from_millis(10),
            seed: 1,
            dht: DhtConfig::default(),
        }
    }
}

/// An operation a node is told to start.
#[derive(Clone, Debug)]
pub enum Command {
    /// `bootstrap(seeds)` through these nodes.
    Bootstrap(Vec<usize>),
    /// `find_node(target)`.
    FindNode(NodeId),
    /// `store_with_confirmation(key, value, timeout)`.
    Store(RecordKey, Bytes, Duration),
    /// `query_with_response(key, timeout)`.
    Query(RecordKey, Duration),
}

#[derive(Debug)]
enum Payload {
    Command(usize, Command),
    Timer(usize),
    Rtt {
        node: usize,
        peer: usize,
    },
    /// `node`'s request `id` is out on a connection that is up.
    Sent {
        node: usize,
        id: RequestId,
    },
    Request {
        from: usize,
        to: usize,
        id: RequestId,
        request: Request,
    },
    Reply {
        from: usize,
        to: usize,
        id: RequestId,
        response: Response,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    /// Boxed so the heap moves small entries.
    payload: Box<Payload>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
struct SimNode {
    dht: Dht,
    alive: bool,
    timer: Option<Instant>,
}

/// An event a node reported, with when and where.
#[derive(Clone, Debug)]
pub struct Reported {
    /// The node that reported it.
    pub node: usize,
    /// Virtual time of the report.
    pub at: Instant,
    /// The event.
    pub event: DhtEvent,
}

/// A running simulation.
#[derive(Debug)]
pub struct SimNet {
    config: SimConfig,
    start: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// When the connection between two nodes (lower index first) is ready.
    connections: HashMap<(u32, u32), Instant>,
    rng: ChaCha8Rng,
    reported: Vec<Reported>,
    messages: u64,
}

/// Wall-clock time of the simulation's start, Unix ms (any fixed value).
const UNIX_START_MS: u64 = 1_800_000_000_000;

/// The address of node `i`.
pub fn address(i: usize) -> SocketAddr {
    let b = (i as u32).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, b[1], b[2], b[3]), 4433))
}

fn index_of(addr: &SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) => {
            let o = v4.ip().octets();
            Some(u32::from_be_bytes([0, o[1], o[2], o[3]]) as usize)
        }
        SocketAddr::V6(_) => None,
    }
}

impl SimNet {
    /// A network of `config.nodes` fresh nodes at virtual time `start`.
    pub fn new(config: SimConfig, start: Instant) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let nodes: Vec<SimNode> = (0..config.nodes)
            .map(|_| SimNode {
                dht: Dht::new(
                    config.dht.clone(),
                    Identity::generate(&mut rng),
                    rng.random(),
                ),
                alive: true,
                timer: None,
            })
            .collect();
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.dht.local_id()).collect();
        let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        Self {
            index,
            config,
            start,
            now: start,
            nodes,
            ids,
            queue: BinaryHeap::new(),
            seq: 0,
            connections: HashMap::default(),
            rng,
            reported: Vec::new(),
            messages: 0,
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Every node's id, by index.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Node `i`'s DHT.
    pub fn dht(&self, i: usize) -> &Dht {
        &self.nodes[i].dht
    }

    /// Whether node `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Messages (requests and replies) delivered or lost to dead nodes so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Takes the events reported so far.
    pub fn take_reported(&mut self) -> Vec<Reported> {
        std::mem::take(&mut self.reported)
    }

    /// The simulation's own generator (for picking nodes and targets).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start).as_millis();
        UNIX_START_MS + u64::try_from(since).unwrap_or(u64::MAX)
    }

    fn schedule(&mut self, at: Instant, payload: Payload) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            payload: Box::new(payload),
        }));
    }

    /// Tells node `node` to start `command` at `at`.
    pub fn command(&mut self, at: Instant, node: usize, command: Command) {
        self.schedule(at, Payload::Command(node, command));
    }

    /// Node `i` dies silently now: it never answers again.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Has every node join, one every `join_spacing`, each through a random
    /// node that joined before it, then runs until every join finished its
    /// self-lookup plus `settle` of virtual time (for the bucket refreshes).
    pub fn bootstrap_all(&mut self, settle: Duration) {
        let mut at = self.now;
        for i in 0..self.nodes.len() {
            let seeds = if i == 0 {
                Vec::new()
            } else {
                vec![self.rng.random_range(0..i)]
            };
            self.command(at, i, Command::Bootstrap(seeds));
            at += self.config.join_spacing;
        }
        let mut joined = 0;
        while joined < self.nodes.len() && self.step() {
            joined += self
                .reported
                .drain(..)
                .filter(|r| matches!(r.event, DhtEvent::Bootstrapped { .. }))
                .count();
        }
        let until = self.now + settle;
        self.run_until(until);
        self.reported.clear();
    }

    /// Processes events up to virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(next)| next.at <= until)
        {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs until `done` holds for the events reported so far (checked
    /// after each event) or nothing is left to do. Returns whether `done` held.
    pub fn run_while_pending(&mut self, mut done: impl FnMut(&[Reported]) -> bool) -> bool {
        loop {
            if done(&self.reported) {
                return true;
            }
            if !self.step() {
                return false;
            }
        }
    }

    /// The `k` live nodes closest to `target`, closest first (brute force).
    pub fn oracle_closest(&self, target: &NodeId, k: usize) -> Vec<NodeId> {
        let mut live: Vec<(Distance, NodeId)> = self
            .ids
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.alive)
            .map(|(id, _)| (target.distance(id), *id))
            .collect();
        if live.len() > k {
            live.select_nth_unstable(k);
            live.truncate(k);
        }
        live.sort_unstable();
        live.into_iter().map(|(_, id)| id).collect()
    }

    /// Runs the next event; `false` when the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(next)) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(next.at);
        let now = self.now;
        let unix = self.unix_ms(now);
        let node = match *next.payload {
            Payload::Command(i, command) => {
                if !self.nodes[i].alive {
                    return true;
                }
                self.start(i, command);
                i
            }
            Payload::Timer(i) => {
                let n = &mut self.nodes[i];
                if !n.alive || n.timer != Some(next.at) {
                    return true;
                }
                n.timer = None;
                n.dht.handle_timeout(now, unix);
                i
            }
            Payload::Rtt { node, peer } => {
                let rtt = self.config.rtt;
                self.nodes[node].dht.handle_rtt(self.ids[peer], rtt);
                node
            }
            Payload::Sent { node, id } => {
                let rtt = self.config.rtt;
                self.nodes[node].dht.handle_sent(now, id, rtt);
                node
            }
            Payload::Request {
                from,
                to,
                id,
                request,
            } => {
                self.messages += 1;
                if !self.nodes[to].alive {
                    return true;
                }
                let inbound = Inbound {
                    id: self.ids[from],
                    server: true,
                    claimed: vec![address(from)],
                    source: Some(address(from)),
                    proven: Vec::new(),
                };
                self.nodes[to]
                    .dht
                    .handle_request(now, unix, &inbound, id, request);
                to
            }
            Payload::Reply {
                from,
                to,
                id,
                response,
            } => {
                self.messages += 1;
                if !self.nodes[to].alive {
                    return true;
                }
                let from_id = self.ids[from];
                self.nodes[to]
                    .dht
                    .handle_response(now, unix, &from_id, id, response);
                to
            }
        };
        self.drain(node);
        true
    }

    fn start(&mut self, i: usize, command: Command) {
        let (now, unix) = (self.now, self.unix_ms(self.now));
        let dht = &mut self.nodes[i].dht;
        match command {
            Command::Bootstrap(seeds) => {
                let seeds = seeds
                    .into_iter()
                    .map(|s| Contact::new(self.ids[s], address(s)))
                    .collect();
                dht.bootstrap(now, seeds);
            }
            Command::FindNode(target) => {
                dht.find_node(now, target);
            }
            Command::Store(key, value, timeout) => {
                // Values are generated by the scenario, within limits.
                let _ = dht.store_with_confirmation(now, unix, key, value, timeout);
            }
            Command::Query(key, timeout) => {
                dht.query_with_response(now, unix, key, timeout);
            }
        }
    }

    /// One-way delay of a packet: half the RTT with jitter, plus 1.5 RTT per
    /// loss (a lost packet is retransmitted, and may be lost again).
    fn one_way(&mut self) -> Duration {
        let base = self
            .config
            .rtt
            .mul_f64(0.5 * (1.0 + self.config.jitter * self.rng.random_range(-1.0..1.0)));
        let mut delay = base;
        while self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.min(0.9)) {
            delay += self.config.rtt.mul_f64(1.5);
        }
        delay
    }

    /// When a packet sent now from `a` goes out (the connection is up,
    /// opening it first if needed) and when it reaches `b`; `None` when the
    /// handshake can never finish.
    fn arrival(&mut self, a: usize, b: usize) -> Option<(Instant, Instant)> {
        let pair = (a.min(b) as u32, a.max(b) as u32);
        let ready = match self.connections.get(&pair) {
            Some(&ready) => ready,
            None if !self.nodes[b].alive => return None,
            None => {
                let ready = self.now + self.one_way() + self.one_way();
                self.connections.insert(pair, ready);
                self.schedule(ready, Payload::Rtt { node: a, peer: b });
                self.schedule(ready, Payload::Rtt { node: b, peer: a });
                ready
            }
        };
        let out = ready.max(self.now);
        Some((out, out + self.one_way()))
    }

    /// Sends `payload` from `from` to `to` ([`Self::arrival`]); returns when
    /// it goes out, `None` when it never does.
    fn transmit(&mut self, from: usize, to: usize, payload: Payload) -> Option<Instant> {
        let (out, at) = self.arrival(from, to)?;
        self.schedule(at, payload);
        Some(out)
    }

    fn drain(&mut self, i: usize) {
        while let Some(output) = self.nodes[i].dht.poll_output() {
            match output {
                DhtOutput::Request {
                    request_id,
                    peer,
                    request,
                } => {
                    let Some(to) = peer.addrs.first().and_then(index_of) else {
                        continue;
                    };
                    let id = request_id;
                    let payload = Payload::Request {
                        from: i,
                        to,
                        id,
                        request,
                    };
                    match self.transmit(i, to, payload) {
                        Some(out) if out == self.now => {
                            let rtt = self.config.rtt;
                            self.nodes[i].dht.handle_sent(out, id, rtt);
                        }
                        Some(out) => self.schedule(out, Payload::Sent { node: i, id }),
                        None => {}
                    }
                }
                DhtOutput::Reply {
                    request_id,
                    peer,
                    response,
                } => {
                    if let Some(&to) = self.index.get(&peer) {
                        let payload = Payload::Reply {
                            from: i,
                            to,
                            id: request_id,
                            response,
                        };
                        self.transmit(i, to, payload);
                    }
                }
                DhtOutput::Event(event) => self.reported.push(Reported {
                    node: i,
                    at: self.now,
                    event,
                }),
            }
        }
        let node = &mut self.nodes[i];
        if let Some(at) = node.dht.poll_timeout()
            && node.timer.is_none_or(|t| at < t)
        {
            node.timer = Some(at);
            self.schedule(at, Payload::Timer(i));
        }
    }
}
