//! Binding transactions: ask reflectors for this node's reflexive address, with RFC 8489
//! retransmission, and report each answer or timeout.
//!
//! A transaction sends its request at once, then again after `rto`, `2·rto`, `4·rto`, ... until
//! `max_requests` (Rc) requests are out; it gives up `final_wait_factor` (Rm) × `rto` after the
//! last one (RFC 8489 §6.2.1; defaults tuned for a mesh: 250 ms, 5 requests, Rm = 8, so a
//! reflector that never answers is given up 5.75 s after the first request). Every
//! retransmission carries the same transaction id. Ids come from a seeded ChaCha8 stream, so
//! the same seed gives the same ids, and a live id is never drawn twice.
//!
//! A response is taken only when its transaction id is live and it comes from where the
//! request was sent, or, for a success to a CHANGE-REQUEST, from an address differing exactly
//! in the requested parts; anything else is counted and ignored, and the transaction goes on.
//! Deadlines are kept per transaction and scanned linearly: a node runs a handful at a time.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smallvec::SmallVec;

use super::codec::decode;
use super::message::{Attribute, ChangeRequest, Class, Message, StunText, TransactionId};
use crate::{Datagram, Input, Machine, Output, Transmit};

/// Retransmission and content of Binding requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The first retransmission timeout; it doubles after each retransmission. Default 250 ms.
    pub rto: Duration,
    /// Rc: requests sent in all, the first included. Default 5.
    pub max_requests: u32,
    /// Rm: after the last request, wait this many (initial) RTOs for an answer. Default 8.
    pub final_wait_factor: u32,
    /// SOFTWARE in each request. Besides naming us, its bytes give the responder room for
    /// RESPONSE-ORIGIN and FINGERPRINT under its no-amplification rule. Default `macula`.
    pub software: Option<StunText>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            rto: Duration::from_millis(250),
            max_requests: 5,
            final_wait_factor: 8,
            software: StunText::new("macula").ok(),
        }
    }
}

/// The longest wait between two steps of a transaction, whatever the configuration says, so
/// deadline arithmetic cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Names one Binding transaction of one client; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(pub u64);

/// What a reflector told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Our reflexive address as the reflector saw it.
    pub mapped: SocketAddr,
    /// Where the response came from.
    pub responder: SocketAddr,
    /// RESPONSE-ORIGIN, if the reflector sent it.
    pub response_origin: Option<SocketAddr>,
    /// OTHER-ADDRESS, if the reflector has an alternate address (RFC 5780).
    pub other_address: Option<SocketAddr>,
    /// Round-trip time, when the answer came before any retransmission (Karn: after one, it
    /// is ambiguous which request it answers).
    pub rtt: Option<Duration>,
}

/// Why a transaction ended without a mapping.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// No answer to any of the requests.
    #[error("no answer to {requests} requests within {elapsed:?}")]
    TimedOut {
        /// Requests sent.
        requests: u32,
        /// From the first request to giving up.
        elapsed: Duration,
    },
    /// The reflector answered with an error.
    #[error("error response {code:?}")]
    ErrorResponse {
        /// Its ERROR-CODE, if it had one.
        code: Option<u16>,
    },
    /// The success response carried comprehension-required attributes we do not know.
    #[error("response has unknown comprehension-required attributes {0:?}")]
    UnknownAttributes(SmallVec<[u16; 4]>),
    /// The success response carried no mapped address.
    #[error("success response without a mapped address")]
    NoMappedAddress,
}

/// What a client tells its application: one per transaction, when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingOutcome {
    /// The transaction.
    pub id: BindingId,
    /// The reflector it asked.
    pub reflector: SocketAddr,
    /// The CHANGE-REQUEST it sent.
    pub change: ChangeRequest,
    /// The answer.
    pub result: Result<Mapping, BindingError>,
}

/// What a client did with its datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent, retransmissions included.
    pub requests_sent: u64,
    /// Responses that ended a transaction.
    pub responses: u64,
    /// Transactions that timed out.
    pub timeouts: u64,
    /// Responses with no live transaction id (late, duplicate or forged).
    pub unmatched: u64,
    /// Responses with a live id from an address the request was not sent to.
    pub wrong_source: u64,
    /// Datagrams that did not decode.
    pub malformed: u64,
}

#[derive(Debug)]
struct Transaction {
    id: BindingId,
    reflector: SocketAddr,
    change: ChangeRequest,
    ttl: Option<u8>,
    payload: Bytes,
    first_sent: Instant,
    requests: u32,
    /// The next retransmission, or after the last request, the time to give up.
    deadline: Instant,
    /// The wait before the next retransmission.
    backoff: Duration,
}

/// Runs Binding transactions toward reflectors. See the module docs.
#[derive(Debug)]
pub struct BindingClient {
    config: ClientConfig,
    rng: ChaCha8Rng,
    next_id: u64,
    transactions: BTreeMap<TransactionId, Transaction>,
    queue: VecDeque<Output<BindingOutcome>>,
    stats: ClientStats,
    last_input: Option<Instant>,
}

impl BindingClient {
    /// A client drawing transaction ids from `seed`.
    pub fn new(config: ClientConfig, seed: [u8; 32]) -> Self {
        BindingClient {
            config,
            rng: ChaCha8Rng::from_seed(seed),
            next_id: 0,
            transactions: BTreeMap::new(),
            queue: VecDeque::new(),
            stats: ClientStats::default(),
            last_input: None,
        }
    }

    /// Starts a transaction toward `reflector`, asking it to answer from the addresses
    /// `change` names; the first request is queued at once.
    pub fn start(
        &mut self,
        now: Instant,
        reflector: SocketAddr,
        change: ChangeRequest,
    ) -> BindingId {
        self.start_with_ttl(now, reflector, change, None)
    }

    /// [`BindingClient::start`] with every request of the transaction sent with IP TTL
    /// `ttl` (`None`: the socket's default). A request whose TTL runs out before the
    /// reflector is never answered, so the transaction times out: NAT discovery counts the
    /// hops to a reflector this way.
    pub fn start_with_ttl(
        &mut self,
        now: Instant,
        reflector: SocketAddr,
        change: ChangeRequest,
        ttl: Option<u8>,
    ) -> BindingId {
        self.last_input = Some(now);
        let id = BindingId(self.next_id);
        self.next_id += 1;
        let transaction_id = self.fresh_transaction_id();
        let mut request = Message::binding(Class::Request, transaction_id);
        if change.any() {
            request.attributes.push(Attribute::ChangeRequest(change));
        }
        request
            .attributes
            .extend(self.config.software.clone().map(Attribute::Software));
        let Ok(payload) = request.encode() else {
            unreachable!("a Binding request of at most two small attributes encodes")
        };
        let transaction = Transaction {
            id,
            reflector,
            change,
            ttl,
            payload,
            first_sent: now,
            requests: 0,
            deadline: now,
            backoff: self.config.rto,
        };
        self.transactions.insert(transaction_id, transaction);
        self.send(now, transaction_id);
        id
    }

    /// Drops a transaction without an outcome; false if it had already ended.
    pub fn cancel(&mut self, id: BindingId) -> bool {
        let before = self.transactions.len();
        self.transactions.retain(|_, t| t.id != id);
        self.transactions.len() != before
    }

    /// Counters since construction.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    fn fresh_transaction_id(&mut self) -> TransactionId {
        loop {
            let mut bytes = [0; 12];
            self.rng.fill_bytes(&mut bytes);
            let id = TransactionId(bytes);
            if !self.transactions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends (or resends) a live transaction's request at `now` and sets its next deadline.
    fn send(&mut self, now: Instant, transaction_id: TransactionId) {
        let config = &self.config;
        let Some(t) = self.transactions.get_mut(&transaction_id) else {
            return;
        };
        t.requests += 1;
        let wait = if t.requests >= config.max_requests {
            config.rto.saturating_mul(config.final_wait_factor)
        } else {
            t.backoff
        };
        t.deadline = now + wait.min(MAX_WAIT);
        t.backoff = t.backoff.saturating_mul(2);
        self.stats.requests_sent += 1;
        self.queue.push_back(Output::Transmit(Transmit {
            source: None,
            destination: t.reflector,
            payload: t.payload.clone(),
            segment_size: None,
            ttl: t.ttl,
        }));
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransactionId> = self
            .transactions
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for transaction_id in due {
            let Some(t) = self.transactions.get(&transaction_id) else {
                continue;
            };
            if t.requests < self.config.max_requests {
                self.send(now, transaction_id);
            } else if let Some(t) = self.transactions.remove(&transaction_id) {
                self.stats.timeouts += 1;
                let error = BindingError::TimedOut {
                    requests: t.requests,
                    elapsed: now.saturating_duration_since(t.first_sent),
                };
                self.finish(t, Err(error));
            }
        }
    }

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let decoded = match decode(&datagram.payload) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::trace!(remote = %datagram.remote, %error, "malformed STUN response");
                self.stats.malformed += 1;
                return;
            }
        };
        let response = decoded.message;
        if !matches!(response.class, Class::Success | Class::Error) {
            return;
        }
        let Some(t) = self.transactions.get(&response.transaction_id) else {
            self.stats.unmatched += 1;
            return;
        };
        // An error (a server that cannot change address answers 420) comes from where the
        // request went; a success from where the CHANGE-REQUEST asked.
        let expected = from_expected_source(t.reflector, t.change, datagram.remote)
            || (response.class == Class::Error
                && from_expected_source(t.reflector, ChangeRequest::default(), datagram.remote));
        if !expected {
            self.stats.wrong_source += 1;
            return;
        }
        let Some(t) = self.transactions.remove(&response.transaction_id) else {
            return;
        };
        self.stats.responses += 1;
        let result = if response.class == Class::Error {
            Err(BindingError::ErrorResponse {
                code: response.error_code().map(|e| e.code()),
            })
        } else if !decoded.unknown_required.is_empty() {
            Err(BindingError::UnknownAttributes(decoded.unknown_required))
        } else {
            response
                .mapped_address()
                .map(|mapped| Mapping {
                    mapped,
                    responder: datagram.remote,
                    response_origin: response.response_origin(),
                    other_address: response.other_address(),
                    rtt: (t.requests == 1).then(|| now.saturating_duration_since(t.first_sent)),
                })
                .ok_or(BindingError::NoMappedAddress)
        };
        self.finish(t, result);
    }

    fn finish(&mut self, t: Transaction, result: Result<Mapping, BindingError>) {
        self.queue.push_back(Output::Event(BindingOutcome {
            id: t.id,
            reflector: t.reflector,
            change: t.change,
            result,
        }));
    }
}

/// Whether a response from `from` fits a request to `reflector` with `change`: each part of
/// the address (IP, port) must differ when a change was asked for it and match otherwise.
/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn from_expected_source(reflector: SocketAddr, change: ChangeRequest, from: SocketAddr) -> bool {
    let same_ip = reflector.ip().to_canonical() == from.ip().to_canonical();
    let same_port = reflector.port() == from.port();
    same_ip != change.change_ip && same_port != change.change_port
}

impl Machine for BindingClient {
    type Event = BindingOutcome;

    /// Datagrams: responses to live transactions (requests and indications are not ours and
    /// pass silently). Timeouts: retransmissions and give-ups. An address change is left to
    /// the caller, which knows whether running transactions still mean anything.
    fn handle_input(&mut self, now: Instant, input: Input) {
        self.last_input = Some(now);
        match input {
            Input::Datagram(datagram) => self.handle_datagram(now, datagram),
            Input::Timeout => self.handle_timeout(now),
            Input::LocalAddressChanged { .. } | Input::SocketsOpened(_) => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<BindingOutcome>> {
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.queue.is_empty() {
            return self.last_input;
        }
        self.transactions.values().map(|t| t.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_sources_follow_the_change_request() {
        let reflector: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let cases = [
            ("192.0.2.1:3478", false, false, true),
            ("[::ffff:192.0.2.1]:3478", false, false, true),
            ("192.0.2.1:3479", false, false, false),
            ("192.0.2.2:3478", true, false, true),
            ("192.0.2.2:3479", true, false, false),
            ("192.0.2.1:3479", false, true, true),
            ("192.0.2.2:3479", true, true, true),
            ("192.0.2.1:3479", true, true, false),
        ];
        for (from, change_ip, change_port, expected) in cases {
            let change = ChangeRequest {
                change_ip,
                change_port,
            };
            assert_eq!(
                from_expected_source(reflector, change, from.parse().unwrap()),
                expected,
                "{from} with {change:?}"
            );
        }
    }
}
