//! Port mapping: asking the gateway in front of the node for an inbound UDP
//! mapping of the node's socket, with PCP (RFC 6887) first and NAT-PMP
//! (RFC 6886) when the gateway speaks only that (NetBird's order).
//!
//! A mapped address is reachable by anyone, whatever the NAT does to the
//! node's own outbound flows: behind a symmetric NAT with random ports, no
//! peer could otherwise guess where to send. The Node makes it a punch
//! candidate and publishes it in its peer record ([`crate::nat::reach`]).
//!
//! [`PortMapper`] is a sans-IO [`Machine`]: it is told the gateway's address
//! (the driver or the user knows it; the core cannot read routing tables),
//! the node's socket address, the time, and the datagrams that came from the
//! gateway's port [`SERVER_PORT`]; it asks for transmits to that port and
//! tells [`MapEvent`]s.
//!
//! **Requests.** A MAP request (PCP) or an external-address plus a UDP
//! mapping request (NAT-PMP) for the socket's port, suggesting the same
//! port outside, for [`PortMapConfig::lifetime`]. Unanswered requests are
//! sent again after [`PortMapConfig::initial_rto`], doubling up to
//! [`PortMapConfig::max_rto`], [`PortMapConfig::attempts`] times in all per
//! protocol (250 ms doubling to 4 s, 6 times: about 12 s, as NAT-PMP's own
//! 250 ms doubling but capped; PCP's 3 s first wait would delay every
//! node's first candidates). No jitter: one node maps one socket, so
//! clients of one gateway do not fall into step through us. A gateway that
//! answers PCP with version 0 or "unsupported version" is asked with
//! NAT-PMP at once; one that never answers either is asked again after
//! [`PortMapConfig::retry_after`].
//!
//! **Renewal.** A granted mapping is renewed at half its lifetime with the
//! same request (PCP: the same nonce, suggesting the external address held);
//! renewals retransmit until the mapping expires, and then it is
//! [`MapEvent::Lost`] and asked for anew.
//!
//! **Server restarts.** Every answer carries the server's epoch (seconds
//! since it started); when it went backwards, or did not advance with our
//! clock (RFC 6887 §8.5's test), the server lost its state and the mapping
//! is asked for again at once.
//!
//! **Shutdown** ([`PortMapper::shutdown`]) sends the deletion (lifetime 0)
//! and stops.
//!
//! **Hostile input.** Only datagrams from the gateway's address and port are
//! read; anything else, anything malformed (truncated, oversized, a request,
//! an unknown opcode), a PCP answer whose nonce is not ours, an answer for
//! another port, an answer nobody asked for: each is a typed
//! [`PortMapError`], counted in [`PortMapStats`], never a panic.

mod natpmp;
mod pcp;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::contract::{Datagram, Input, Machine, Output, OutputQueue, Transmit};

/// The UDP port PCP and NAT-PMP servers listen on.
pub const SERVER_PORT: u16 = 5351;

/// The port-mapping protocols, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Port Control Protocol, RFC 6887.
    Pcp,
    /// NAT Port Mapping Protocol, RFC 6886.
    NatPmp,
}

/// Port-mapping settings.
///
/// | setting | default |
/// | --- | --- |
/// | lifetime | 7200 s asked for (RFC 6886's recommendation) |
/// | initial_rto | 250 ms |
/// | max_rto | 4 s |
/// | attempts | 6 per protocol |
/// | retry_after | 5 min after both protocols failed |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapConfig {
    /// The gateway that runs the PCP or NAT-PMP server (the default
    /// route's next hop, as the driver or the user knows it).
    pub gateway: IpAddr,
    /// The lifetime asked for; the server may grant less.
    pub lifetime: Duration,
    /// The first wait for an answer.
    pub initial_rto: Duration,
    /// The longest wait between two sends of one request.
    pub max_rto: Duration,
    /// Sends of one request per protocol before it is given up.
    pub attempts: u32,
    /// How long after both protocols failed they are tried again.
    pub retry_after: Duration,
}

impl PortMapConfig {
    /// The defaults above, for a gateway at `gateway`.
    pub fn new(gateway: IpAddr) -> Self {
        Self {
            gateway,
            lifetime: Duration::from_secs(7200),
            initial_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(4),
            attempts: 6,
            retry_after: Duration::from_secs(300),
        }
    }
}

/// What can be wrong with a datagram from the gateway, as the codecs read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its version and opcode need.
    #[error("truncated")]
    Truncated,
    /// Longer than any message of its protocol.
    #[error("oversized")]
    Oversized,
    /// A length or field no server sends.
    #[error("malformed")]
    Malformed,
    /// A request, not a response.
    #[error("not a response")]
    NotAResponse,
    /// A protocol version this client does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// An opcode this client never asks for.
    #[error("unexpected opcode {0}")]
    UnexpectedOpcode(u8),
    /// The server's result code says no.
    #[error("refused with result code {0}")]
    Refused(u16),
}

/// Why a mapping failed, or why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortMapError {
    /// The datagram did not come from the gateway's server port.
    #[error("datagram from {0}, not from the gateway")]
    WrongSource(SocketAddr),
    /// The datagram does not decode, or says no.
    #[error("{protocol:?}: {error}")]
    Wire {
        /// The protocol it was read as.
        protocol: Protocol,
        /// What is wrong.
        error: WireError,
    },
    /// A PCP answer whose nonce is not ours.
    #[error("PCP answer with another nonce")]
    NonceMismatch,
    /// An answer for another internal port.
    #[error("answer for internal port {0}")]
    WrongPort(u16),
    /// An answer while none was asked for, or of the other protocol.
    #[error("unexpected answer")]
    Unexpected,
    /// A success that grants nothing (lifetime 0, external port 0).
    #[error("empty grant")]
    EmptyGrant,
    /// Neither protocol was answered.
    #[error("the gateway does not answer")]
    Timeout,
    /// The socket's address is unspecified, or of another family than the
    /// gateway's: a request could not name it.
    #[error("no usable local address")]
    NoLocalAddress,
}

/// What the port mapper tells its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapEvent {
    /// The gateway maps `external` to our socket (new, or its address
    /// changed).
    Mapped {
        /// The address peers reach us at.
        external: SocketAddr,
        /// How long the gateway granted it for (it is renewed before).
        lifetime: Duration,
        /// The protocol that got it.
        protocol: Protocol,
    },
    /// The mapping we had is gone (expired unrenewed, or refused on renewal).
    Lost,
    /// Asking failed; the machine tries again later.
    Failed(PortMapError),
}

/// What the port mapper counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortMapStats {
    /// Requests sent (retransmissions and deletions included).
    pub requests_sent: u64,
    /// Mappings granted (first grants, new addresses).
    pub mapped: u64,
    /// Renewals granted.
    pub renewed: u64,
    /// Mappings lost.
    pub lost: u64,
    /// Failures ([`MapEvent::Failed`]).
    pub failed: u64,
    /// Server restarts seen in the epoch.
    pub epoch_resets: u64,
    /// Deletions sent at shutdown.
    pub deleted: u64,
    /// Datagrams dropped: not from the gateway's server port.
    pub wrong_source: u64,
    /// Datagrams dropped: malformed (truncated, oversized, a request, an
    /// unknown version or opcode).
    pub malformed: u64,
    /// Datagrams dropped: another nonce or internal port.
    pub mismatched: u64,
    /// Datagrams dropped: nobody asked.
    pub unexpected: u64,
    /// Answers refusing a request (a result code other than success).
    pub refused: u64,
}

/// The bit of the opcode that marks a response, in both protocols.
const RESPONSE_BIT: u8 = 0x80;

/// The checks every answer passes first: at most `max_len` bytes, of
/// `version`.
fn envelope(payload: &[u8], max_len: usize, version: u8) -> Result<(), WireError> {
    if payload.len() > max_len {
        return Err(WireError::Oversized);
    }
    match *payload.first().ok_or(WireError::Truncated)? {
        v if v == version => Ok(()),
        // A NAT-PMP-only server answers a PCP request with version 0 and
        // "unsupported version" (RFC 6887 §9).
        other => Err(WireError::UnsupportedVersion(other)),
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A decoded response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reply {
    /// Seconds since the server's epoch.
    epoch: u32,
    kind: ReplyKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyKind {
    /// PCP ANNOUNCE: only the epoch.
    Announce,
    /// NAT-PMP's external address.
    ExternalIp(IpAddr),
    /// A mapping (PCP carries the external IP, NAT-PMP does not).
    Map {
        nonce: Option<[u8; 12]>,
        internal_port: u16,
        external_ip: Option<IpAddr>,
        external_port: u16,
        lifetime: u32,
    },
}

/// A mapping the gateway granted.
#[derive(Clone, Copy, Debug)]
struct Grant {
    external: SocketAddr,
    expires: Instant,
    renew_at: Instant,
}

/// A request under way.
#[derive(Clone, Copy, Debug)]
struct Ask {
    protocol: Protocol,
    sent: u32,
    next: Instant,
    /// NAT-PMP: the external address, once answered.
    external_ip: Option<IpAddr>,
    /// NAT-PMP: the mapped port and lifetime, once answered.
    port: Option<(u16, u32)>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Nothing under way; asks at the instant, or never without a local address.
    Idle(Option<Instant>),
    Asking(Ask),
    Mapped,
    Stopped,
}

/// The server's epoch as last seen, with our time then.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    server: u32,
    at: Instant,
}

/// The port-mapping client; see the module docs.
pub struct PortMapper {
    config: PortMapConfig,
    local: SocketAddr,
    state: State,
    grant: Option<Grant>,
    /// The protocol the gateway last answered.
    protocol: Protocol,
    nonce: [u8; 12],
    epoch: Option<Epoch>,
    rng: ChaCha8Rng,
    stats: PortMapStats,
    out: OutputQueue<Output<MapEvent>>,
}

impl PortMapper {
    /// A client for the socket at `local` that asks at its first timeout,
    /// drawing its PCP nonces from `seed`.
    pub fn new(config: PortMapConfig, local: SocketAddr, seed: [u8; 32], now: Instant) -> Self {
        let mut rng = ChaCha8Rng::from_seed(seed);
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        Self {
            config,
            local,
            state: State::Idle(Some(now)),
            grant: None,
            protocol: Protocol::Pcp,
            nonce,
            epoch: None,
            rng,
            stats: PortMapStats::default(),
            out: OutputQueue::new(),
        }
    }

    /// The address the gateway maps to us, while it does.
    pub fn external(&self) -> Option<SocketAddr> {
        self.grant.map(|g| g.external)
    }

    /// The gateway's server address, the only source answers are read from.
    pub fn server(&self) -> SocketAddr {
        SocketAddr::new(self.config.gateway, SERVER_PORT)
    }

    /// What was counted.
    pub fn stats(&self) -> PortMapStats {
        self.stats
    }

    /// Deletes the mapping (a request with lifetime 0, also when one may be
    /// under way) and stops: nothing is asked after this.
    pub fn shutdown(&mut self, now: Instant) {
        self.out.mark(now);
        let asked = matches!(self.state, State::Asking(_) | State::Mapped);
        if asked && self.usable_local() {
            let suggested = self.grant.map(|g| g.external);
            let protocol = self.protocol;
            self.send_request(protocol, suggested, 0);
            self.stats.deleted += 1;
        }
        self.grant = None;
        self.state = State::Stopped;
    }

    /// Timers: sends, retransmissions, renewals, expiry.
    fn handle_timeout(&mut self, now: Instant) {
        if self.grant.is_some_and(|g| g.expires <= now) {
            self.grant = None;
            self.lose();
            self.state = State::Asking(self.fresh_ask(Protocol::Pcp, now));
        }
        match self.state {
            State::Idle(Some(at)) if at <= now => {
                if !self.usable_local() {
                    self.state = State::Idle(None);
                    self.fail(PortMapError::NoLocalAddress);
                    return;
                }
                self.state = State::Asking(self.fresh_ask(self.protocol, now));
            }
            State::Mapped if self.grant.is_some_and(|g| g.renew_at <= now) => {
                self.state = State::Asking(self.fresh_ask(self.protocol, now));
            }
            _ => {}
        }
        let State::Asking(mut ask) = self.state else {
            return;
        };
        if ask.next > now {
            return;
        }
        let renewing = self.grant.is_some();
        if ask.sent >= self.config.attempts && !renewing {
            match ask.protocol {
                Protocol::Pcp => ask = self.fresh_ask(Protocol::NatPmp, now),
                Protocol::NatPmp => {
                    self.protocol = Protocol::Pcp;
                    self.state = State::Idle(Some(now + self.config.retry_after));
                    self.fail(PortMapError::Timeout);
                    return;
                }
            }
        }
        // The held address on renewal; at first only our own port (any IP).
        let any = SocketAddr::new(unspecified(self.local.ip()), self.local.port());
        let suggested = Some(self.grant.map_or(any, |g| g.external));
        let lifetime = u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX);
        self.send_request(ask.protocol, suggested, lifetime);
        let doublings = ask.sent.min(16);
        let rto = (self.config.initial_rto.saturating_mul(1 << doublings)).min(self.config.max_rto);
        ask.sent = ask.sent.saturating_add(1);
        ask.next = now + rto;
        self.state = State::Asking(ask);
    }

    /// A datagram that came to the node's socket from the gateway.
    fn handle_datagram(&mut self, now: Instant, datagram: &Datagram) {
        if let Err(error) = self.read(now, datagram) {
            match error {
                PortMapError::WrongSource(_) => self.stats.wrong_source += 1,
                PortMapError::Wire {
                    error: WireError::Refused(_),
                    ..
                } => self.stats.refused += 1,
                PortMapError::Wire { .. } | PortMapError::EmptyGrant => self.stats.malformed += 1,
                PortMapError::NonceMismatch | PortMapError::WrongPort(_) => {
                    self.stats.mismatched += 1
                }
                _ => self.stats.unexpected += 1,
            }
            tracing::debug!(%error, "port mapping: answer dropped");
        }
    }

    fn read(&mut self, now: Instant, datagram: &Datagram) -> Result<(), PortMapError> {
        if datagram.remote.ip().to_canonical() != self.config.gateway.to_canonical()
            || datagram.remote.port() != SERVER_PORT
        {
            return Err(PortMapError::WrongSource(datagram.remote));
        }
        let payload = &datagram.payload[..];
        let (protocol, decoded) = match payload.first() {
            Some(&natpmp::VERSION) => (Protocol::NatPmp, natpmp::decode(payload)),
            _ => (Protocol::Pcp, pcp::decode(payload)),
        };
        let asking = match self.state {
            State::Asking(ask) => Some(ask),
            _ => None,
        };
        let reply = match decoded {
            Ok(reply) => reply,
            Err(error) => {
                let wire = PortMapError::Wire { protocol, error };
                let refused = matches!(error, WireError::Refused(_));
                let Some(ask) = asking.filter(|_| refused) else {
                    return Err(wire);
                };
                // A gateway that speaks only NAT-PMP answers PCP with version 0
                // and "unsupported version"; a PCP one may say the same (1).
                if ask.protocol == Protocol::Pcp && error == WireError::Refused(1) {
                    self.state = State::Asking(self.fresh_ask(Protocol::NatPmp, now));
                } else if ask.protocol == protocol {
                    self.give_up(now, wire);
                }
                return Err(wire);
            }
        };
        if asking.is_some_and(|a| a.protocol != protocol) && protocol == Protocol::NatPmp {
            // A version-0 success while PCP was asked: not an answer of ours.
            return Err(PortMapError::Unexpected);
        }
        self.check_epoch(now, reply.epoch);
        match reply.kind {
            ReplyKind::Announce => Ok(()),
            ReplyKind::ExternalIp(ip) => match asking {
                Some(mut ask) if ask.protocol == Protocol::NatPmp => {
                    ask.external_ip = Some(ip);
                    self.state = State::Asking(ask);
                    self.complete(now, ask);
                    Ok(())
                }
                _ if self.grant.is_some_and(|g| g.external.ip() != ip) => {
                    // The gateway's address changed: ask again.
                    self.state = State::Asking(self.fresh_ask(Protocol::NatPmp, now));
                    Ok(())
                }
                _ => Ok(()),
            },
            ReplyKind::Map {
                nonce,
                internal_port,
                external_ip,
                external_port,
                lifetime,
            } => {
                if nonce.is_some_and(|n| n != self.nonce) {
                    return Err(PortMapError::NonceMismatch);
                }
                if internal_port != self.local.port() {
                    return Err(PortMapError::WrongPort(internal_port));
                }
                let Some(mut ask) = asking.filter(|a| a.protocol == protocol) else {
                    return Err(PortMapError::Unexpected);
                };
                if lifetime == 0 || external_port == 0 {
                    self.give_up(now, PortMapError::EmptyGrant);
                    return Err(PortMapError::EmptyGrant);
                }
                ask.port = Some((external_port, lifetime));
                if external_ip.is_some() {
                    ask.external_ip = external_ip;
                }
                self.state = State::Asking(ask);
                self.complete(now, ask);
                Ok(())
            }
        }
    }

    /// A request whose answers are all in becomes the grant.
    fn complete(&mut self, now: Instant, ask: Ask) {
        let (Some(ip), Some((port, lifetime))) = (ask.external_ip, ask.port) else {
            return;
        };
        let external = SocketAddr::new(ip, port);
        let lifetime = Duration::from_secs(u64::from(lifetime));
        let renewal = self.grant.is_some_and(|g| g.external == external);
        self.grant = Some(Grant {
            external,
            expires: now + lifetime,
            renew_at: now + (lifetime / 2).max(Duration::from_secs(1)),
        });
        self.protocol = ask.protocol;
        self.state = State::Mapped;
        if renewal {
            self.stats.renewed += 1;
        } else {
            self.stats.mapped += 1;
            self.out.push(Output::Event(MapEvent::Mapped {
                external,
                lifetime,
                protocol: ask.protocol,
            }));
        }
    }

    /// RFC 6887 §8.5: the server lost its state when its epoch went back
    /// more than a second, or moved apart from our clock by more than 2 s
    /// plus a sixteenth. A held mapping is then asked for again at once.
    fn check_epoch(&mut self, now: Instant, server: u32) {
        let previous = self.epoch.replace(Epoch { server, at: now });
        let Some(prev) = previous else {
            return;
        };
        let lost = if server.saturating_add(1) < prev.server {
            true
        } else {
            let client = now.saturating_duration_since(prev.at).as_secs();
            let served = u64::from(server.saturating_sub(prev.server));
            client + 2 < served - served / 16 || served + 2 < client - client / 16
        };
        if !lost {
            return;
        }
        self.stats.epoch_resets += 1;
        if matches!(self.state, State::Mapped) {
            self.state = State::Asking(self.fresh_ask(self.protocol, now));
        }
    }

    /// A request refused, or empty: a held mapping is lost; ask later.
    fn give_up(&mut self, now: Instant, error: PortMapError) {
        if self.grant.take().is_some() {
            self.lose();
        }
        self.protocol = Protocol::Pcp;
        self.state = State::Idle(Some(now + self.config.retry_after));
        self.fail(error);
    }

    fn lose(&mut self) {
        self.stats.lost += 1;
        self.out.push(Output::Event(MapEvent::Lost));
    }

    fn fail(&mut self, error: PortMapError) {
        self.stats.failed += 1;
        self.out.push(Output::Event(MapEvent::Failed(error)));
    }

    /// A new request of `protocol`, due now; a new PCP nonce unless a held
    /// mapping is being renewed.
    fn fresh_ask(&mut self, protocol: Protocol, now: Instant) -> Ask {
        if self.grant.is_none() {
            self.rng.fill_bytes(&mut self.nonce);
        }
        Ask {
            protocol,
            sent: 0,
            next: now,
            external_ip: None,
            port: None,
        }
    }

    /// Whether requests can name our socket: a specified address of the
    /// gateway's family.
    fn usable_local(&self) -> bool {
        !self.local.ip().is_unspecified() && self.local.is_ipv4() == self.config.gateway.is_ipv4()
    }

    /// Sends one request of `protocol` for `lifetime` seconds (NAT-PMP: with
    /// the external-address request in front).
    fn send_request(&mut self, protocol: Protocol, suggested: Option<SocketAddr>, lifetime: u32) {
        let port = self.local.port();
        let payloads = match protocol {
            Protocol::Pcp => {
                let request =
                    pcp::map_request(&self.nonce, self.local.ip(), port, suggested, lifetime);
                vec![request]
            }
            Protocol::NatPmp => {
                // A deletion suggests port 0 (RFC 6886 §3.4).
                let suggested = suggested.filter(|_| lifetime > 0).map_or(0, |a| a.port());
                vec![
                    natpmp::external_request(),
                    natpmp::map_request(port, suggested, lifetime),
                ]
            }
        };
        let destination = self.server();
        for payload in payloads {
            self.stats.requests_sent += 1;
            self.out.push(Output::Transmit(Transmit {
                source: None,
                destination,
                payload: Bytes::from(payload),
                segment_size: None,
                ttl: None,
            }));
        }
    }
}

/// The unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    }
}

impl Machine for PortMapper {
    type Event = MapEvent;

    fn handle_input(&mut self, now: Instant, input: Input) {
        self.out.mark(now);
        if matches!(self.state, State::Stopped) {
            return;
        }
        match input {
            Input::Datagram(datagram) => self.handle_datagram(now, &datagram),
            Input::Timeout => self.handle_timeout(now),
            // Port mapping never asks for extra sockets.
            Input::SocketsOpened(_) => {}
            Input::LocalAddressChanged { new, .. } => {
                // The old socket's mapping is useless: a new one for the new socket.
                if self.grant.take().is_some() {
                    self.lose();
                }
                self.local = new;
                self.epoch = None;
                self.protocol = Protocol::Pcp;
                self.state = State::Idle(Some(now));
                self.handle_timeout(now);
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<MapEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let timer = match self.state {
            State::Idle(at) => at,
            State::Asking(ask) => Some(ask.next),
            State::Mapped => self.grant.map(|g| g.renew_at),
            State::Stopped => None,
        };
        let expiry = self.grant.map(|g| g.expires);
        self.out.deadline([timer, expiry])
    }
}
