//! The STUN responder every node runs: answers Binding requests with the source's reflexive
//! address, rate-limited and without amplification.
//!
//! A success response carries XOR-MAPPED-ADDRESS, and as far as the size rule below allows,
//! OTHER-ADDRESS (only with an alternate address configured), RESPONSE-ORIGIN, FINGERPRINT and
//! SOFTWARE, in that order of preference. A request with comprehension-required attributes we
//! do not know gets a 420 listing them; so does a CHANGE-REQUEST asking for a change when no
//! alternate address is configured (RFC 5780 §6.1: CHANGE-REQUEST is then as unknown).
//! Malformed datagrams, requests of other methods, indications and responses get nothing.
//!
//! ## No amplification
//!
//! A response is never longer than the request it answers plus [`AMPLIFICATION_ALLOWANCE`]
//! (32) bytes: optional attributes are added in order of preference while they fit. The
//! mandatory part always fits: XOR-MAPPED-ADDRESS of IPv6 takes 24 bytes, and a 420 lists
//! unknown attributes in 2 bytes each where the request spent at least 4. So a spoofed
//! 20-byte request reflects at most 52 bytes (2.6×) toward its victim, a 28-byte
//! fingerprinted one at most 60 (2.1×), and with the rate limits ([`RateLimit`]) the reflected
//! traffic toward anyone is at most `global rate × (request size + 32)`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::codec::{Decoded, FINGERPRINT_LEN, decode};
use super::message::{Attribute, ChangeRequest, Class, ErrorCode, Message, Method, StunText, kind};
use super::rate::{RateLimit, RateLimiter};
use crate::{Datagram, Input, Machine, Output, Transmit};

/// The most bytes a response may exceed its request by.
pub const AMPLIFICATION_ALLOWANCE: usize = 32;

/// A server with two IP addresses and two ports, for RFC 5780 behaviour discovery: the
/// responder answers CHANGE-REQUEST from the other IP and/or port, and names the address
/// differing in both as OTHER-ADDRESS. The driver must listen on all four combinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alternate {
    /// The server's two IP addresses.
    pub ips: [IpAddr; 2],
    /// The server's two ports.
    pub ports: [u16; 2],
}

impl Alternate {
    /// The address differing from `local` in the IP when `ip`, in the port when `port`.
    fn changed(&self, local: SocketAddr, ip: bool, port: bool) -> SocketAddr {
        let ip = if ip {
            other(self.ips, local.ip())
        } else {
            local.ip()
        };
        let port = if port {
            other(self.ports, local.port())
        } else {
            local.port()
        };
        SocketAddr::new(ip, port)
    }
}

/// The element of `pair` that is not `mine` (the first when `mine` is neither).
fn other<T: PartialEq + Copy>(pair: [T; 2], mine: T) -> T {
    if mine == pair[0] { pair[1] } else { pair[0] }
}

/// How a responder answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderConfig {
    /// SOFTWARE to send when it fits. Default: `macula`.
    pub software: Option<StunText>,
    /// The alternate address for CHANGE-REQUEST (RFC 5780). Default: none (a node has one
    /// socket).
    pub alternate: Option<Alternate>,
    /// Per-source and global rate limits.
    pub rate_limit: RateLimit,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            software: StunText::new("macula").ok(),
            alternate: None,
            rate_limit: RateLimit::default(),
        }
    }
}

/// What a responder did with the datagrams it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Binding requests answered with success.
    pub answered: u64,
    /// Binding requests answered with an error (420).
    pub errors: u64,
    /// Binding requests left unanswered by a rate limit.
    pub rate_limited: u64,
    /// Datagrams that did not decode.
    pub malformed: u64,
    /// Well-formed messages that are not Binding requests.
    pub ignored: u64,
}

/// Answers Binding requests. Its [`Machine`] events are uninhabited: it only transmits.
#[derive(Debug)]
pub struct Responder {
    config: ResponderConfig,
    limiter: RateLimiter,
    stats: ResponderStats,
    queue: VecDeque<Transmit>,
    last_input: Option<Instant>,
}

impl Responder {
    /// A responder with full rate-limit buckets.
    pub fn new(config: ResponderConfig) -> Self {
        Responder {
            limiter: RateLimiter::new(config.rate_limit),
            config,
            stats: ResponderStats::default(),
            queue: VecDeque::new(),
            last_input: None,
        }
    }

    /// Counters since construction.
    pub fn stats(&self) -> ResponderStats {
        self.stats
    }

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let Decoded {
            message: request,
            unknown_required,
        } = match decode(&datagram.payload) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::trace!(remote = %datagram.remote, %error, "malformed STUN datagram");
                self.stats.malformed += 1;
                return;
            }
        };
        if request.class != Class::Request || request.method != Method::BINDING {
            self.stats.ignored += 1;
            return;
        }
        if self.limiter.allow(now, datagram.remote.ip()).is_err() {
            self.stats.rate_limited += 1;
            return;
        }
        let change = request.change_request();
        let mut unknown = unknown_required;
        if change.any() && self.config.alternate.is_none() {
            unknown.push(kind::CHANGE_REQUEST);
        }
        let budget = datagram.payload.len() + AMPLIFICATION_ALLOWANCE;
        let local = canonical(datagram.local);
        let (response, source) = if unknown.is_empty() {
            self.stats.answered += 1;
            self.success(&request, change, local, canonical(datagram.remote), budget)
        } else {
            self.stats.errors += 1;
            let mut response = Message::binding(Class::Error, request.transaction_id);
            response.attributes = vec![
                Attribute::ErrorCode(ErrorCode::unknown_attribute()),
                Attribute::UnknownAttributes(unknown),
            ];
            self.fit(&mut response, None, budget);
            (response, local)
        };
        let Ok(payload) = response.encode() else {
            // Unreachable: a response has a few hundred bytes at most.
            return;
        };
        self.queue.push_back(Transmit {
            source: (!source.ip().is_unspecified()).then_some(source),
            destination: datagram.remote,
            payload,
            segment_size: None,
            ttl: None,
        });
    }

    /// The success response to a request from `remote` to `local`, and the address to send it
    /// from.
    fn success(
        &self,
        request: &Message,
        change: ChangeRequest,
        local: SocketAddr,
        remote: SocketAddr,
        budget: usize,
    ) -> (Message, SocketAddr) {
        let alternate = self.config.alternate;
        let source = match alternate {
            Some(alternate) if change.any() => {
                alternate.changed(local, change.change_ip, change.change_port)
            }
            _ => local,
        };
        let mut response = Message::binding(Class::Success, request.transaction_id);
        response.attributes = vec![Attribute::XorMappedAddress(remote)];
        let other = alternate.map(|a| Attribute::OtherAddress(a.changed(local, true, true)));
        let origin = (!source.ip().is_unspecified()).then_some(Attribute::ResponseOrigin(source));
        self.fit(&mut response, other.into_iter().chain(origin), budget);
        (response, source)
    }

    /// Adds `preferred` (in order), then FINGERPRINT, then SOFTWARE, each only if the
    /// response stays within `budget` bytes.
    fn fit(
        &self,
        response: &mut Message,
        preferred: impl IntoIterator<Item = Attribute>,
        budget: usize,
    ) {
        let add_if_it_fits = |response: &mut Message, attribute| {
            response.attributes.push(attribute);
            if response.encoded_len() > budget {
                response.attributes.pop();
            }
        };
        response.fingerprint = false;
        for attribute in preferred {
            add_if_it_fits(response, attribute);
        }
        response.fingerprint = response.encoded_len() + FINGERPRINT_LEN <= budget;
        if let Some(software) = &self.config.software {
            add_if_it_fits(response, Attribute::Software(software.clone()));
        }
    }
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) as the IPv4 address they are.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Machine for Responder {
    type Event = Infallible;

    fn handle_input(&mut self, now: Instant, input: Input) {
        self.last_input = Some(now);
        if let Input::Datagram(datagram) = input {
            self.handle_datagram(now, datagram);
        }
    }

    fn poll_output(&mut self) -> Option<Output<Infallible>> {
        self.queue.pop_front().map(Output::Transmit)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.last_input.filter(|_| !self.queue.is_empty())
    }
}
