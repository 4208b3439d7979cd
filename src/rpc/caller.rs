//! The caller's side of RPC: find providers, send the call, fail over when it
//! is safe (the rule is in the [module docs](super)), cancel, and end every
//! call by its deadline.

use std::collections::{BTreeMap, BTreeSet};

use crate::contract::OutputQueue;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ProviderFlags, RpcConfig, RpcError, RpcEvent, RpcOutput, RpcStats};
use crate::collections::HashMap;
use crate::directory::{Answered, Cached, DirectoryRequest, Filled, Found, LookupCache};
use crate::id::{NodeId, RecordKey};
use crate::metrics::CacheCounts;
use crate::topic::Topic;
use crate::wire::{self, ErrorCode, ErrorReply, Reply};

/// A call this node makes; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// How the caller picks among providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Uniformly at random (from the machine's seed).
    Random,
    /// In turn: the n-th call of the machine starts at provider n modulo
    /// the number of providers.
    RoundRobin,
}

/// Per-call options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Never fail over once the request may have been delivered, even when
    /// the provider registered the procedure idempotent.
    pub at_most_once: bool,
    /// How long one provider has to answer before the call moves on (when
    /// that is safe, see [`RpcConfig::attempts`]); `None` for the call's
    /// timeout divided by [`RpcConfig::attempts`].
    pub attempt_timeout: Option<Duration>,
}

/// What the Node knows of a request that failed without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The provider cannot have read the request: the connection could not
    /// be made, or the stream was refused or reset before any of it was
    /// acknowledged.
    NotDelivered,
    /// The provider may have read the request (the connection was lost
    /// after it was sent).
    MaybeDelivered,
}

#[derive(Clone, Debug)]
struct Attempt {
    request_id: u64,
    provider: NodeId,
    may_retry: bool,
    /// The Node wrote the CALL: the provider may read it from now on.
    sent: bool,
    /// When the attempt is given up if moving on is safe.
    deadline: Instant,
}

#[derive(Clone, Debug)]
struct Call {
    procedure: Topic,
    key: RecordKey,
    payload: Bytes,
    timeout: Duration,
    deadline: Instant,
    options: CallOptions,
    tried: Vec<NodeId>,
    attempt: Option<Attempt>,
    /// Why the last provider tried did not take the request.
    last_refusal: Option<RpcError>,
}

/// The calls this node makes.
#[derive(Debug)]
pub(crate) struct Caller {
    rng: ChaCha8Rng,
    choice: ProviderChoice,
    max_payload: usize,
    max_in_flight: usize,
    attempts: u32,
    cache: LookupCache,
    calls: BTreeMap<CallId, Call>,
    by_request: HashMap<u64, CallId>,
    deadlines: BTreeSet<(Instant, CallId)>,
    /// Deadlines of the open attempts that may still move on.
    attempt_deadlines: BTreeSet<(Instant, CallId)>,
    waiting: HashMap<RecordKey, Vec<CallId>>,
    next_call: u64,
    next_request: u64,
    stats: RpcStats,
}

impl Caller {
    pub(crate) fn new(config: &RpcConfig) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            choice: config.choice,
            max_payload: config.max_payload,
            max_in_flight: config.max_in_flight,
            attempts: config.attempts.max(1),
            cache: LookupCache::new(config.cache_ttl, config.lookup_timeout),
            calls: BTreeMap::new(),
            by_request: HashMap::default(),
            deadlines: BTreeSet::new(),
            attempt_deadlines: BTreeSet::new(),
            waiting: HashMap::default(),
            next_call: 0,
            next_request: 0,
            stats: RpcStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> RpcStats {
        self.stats
    }

    pub(crate) fn cache_counts(&self) -> CacheCounts {
        self.cache.counts()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.calls.len()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &mut self,
        now: Instant,
        key: RecordKey,
        procedure: Topic,
        payload: Bytes,
        timeout: Duration,
        options: CallOptions,
        out: &mut OutputQueue<RpcOutput>,
    ) -> Result<CallId, RpcError> {
        if payload.len() > self.max_payload {
            return Err(RpcError::TooLarge {
                size: payload.len(),
                max: self.max_payload,
            });
        }
        if self.calls.len() >= self.max_in_flight {
            return Err(RpcError::Overloaded {
                provider: None,
                bound: self.max_in_flight,
            });
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        self.stats.calls += 1;
        let deadline = now + timeout;
        self.deadlines.insert((deadline, id));
        self.calls.insert(
            id,
            Call {
                procedure,
                key,
                payload,
                timeout,
                deadline,
                options,
                tried: Vec::new(),
                attempt: None,
                last_refusal: None,
            },
        );
        self.cache.drop_emptied(&key);
        let _ = self.cache.consult(now, &key);
        self.advance(now, id, out);
        Ok(id)
    }

    /// Moves a call without an attempt on: to a provider, a lookup, or its end.
    fn advance(&mut self, now: Instant, id: CallId, out: &mut OutputQueue<RpcOutput>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let key = call.key;
        if let Cached::Stale(_) = self.cache.get(now, &key) {
            self.cache.started(now, key);
            out.push(RpcOutput::Directory(DirectoryRequest::Lookup { key }));
        }
        match self.cache.get(now, &key) {
            Cached::Fresh(found) | Cached::Stale(found) => {
                let candidates: Vec<Found> = found
                    .iter()
                    .filter(|f| !call.tried.contains(&f.provider))
                    .cloned()
                    .collect();
                if candidates.is_empty() {
                    let error = call.last_refusal.clone().unwrap_or(RpcError::NoProvider {
                        procedure: call.procedure.as_str().into(),
                        tried: call.tried.len(),
                    });
                    self.finish(id, Err(error), out);
                    return;
                }
                let index = match self.choice {
                    ProviderChoice::Random => self.rng.random_range(0..candidates.len()),
                    ProviderChoice::RoundRobin => (id.0 % candidates.len() as u64) as usize,
                };
                self.send(now, id, &candidates[index], out);
            }
            Cached::Pending => self.waiting.entry(key).or_default().push(id),
            Cached::Missing => {
                self.cache.started(now, key);
                out.push(RpcOutput::Directory(DirectoryRequest::Lookup { key }));
                self.waiting.entry(key).or_default().push(id);
            }
        }
    }

    fn send(
        &mut self,
        now: Instant,
        id: CallId,
        provider: &Found,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let request_id = self.next_request;
        self.next_request += 1;
        self.stats.attempts += 1;
        self.stats.failovers += u64::from(!call.tried.is_empty());
        let may_retry =
            ProviderFlags::decode(&provider.value).idempotent && !call.options.at_most_once;
        let remaining = call.deadline.saturating_duration_since(now);
        let window = (call.options.attempt_timeout)
            .unwrap_or(call.timeout / self.attempts)
            .min(remaining);
        let deadline = now + window;
        call.tried.push(provider.provider);
        call.attempt = Some(Attempt {
            request_id,
            provider: provider.provider,
            may_retry,
            sent: false,
            deadline,
        });
        self.attempt_deadlines.insert((deadline, id));
        self.by_request.insert(request_id, id);
        out.push(RpcOutput::Call {
            call: id,
            provider: provider.provider,
            message: wire::Call {
                request_id,
                procedure: call.procedure.as_str().into(),
                timeout_ms: u32::try_from(remaining.as_millis())
                    .unwrap_or(u32::MAX)
                    .max(1),
                idempotent: may_retry,
                payload: call.payload.clone(),
            },
        });
    }

    /// The open call whose current attempt is `request_id` to `peer`.
    fn attempt_of(&self, peer: &NodeId, request_id: u64) -> Option<CallId> {
        let id = *self.by_request.get(&request_id)?;
        let attempt = self.calls.get(&id)?.attempt.as_ref()?;
        (attempt.provider == *peer).then_some(id)
    }

    /// Ends the current attempt of `id` (it failed) and tries the next
    /// provider, noting why this one did not take it.
    fn fail_over(
        &mut self,
        now: Instant,
        id: CallId,
        refusal: Option<RpcError>,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(attempt) = call.attempt.take() {
            self.by_request.remove(&attempt.request_id);
            self.attempt_deadlines.remove(&(attempt.deadline, id));
            self.cache.forget(&call.key, &attempt.provider);
        }
        call.last_refusal = refusal;
        self.advance(now, id, out);
    }

    /// Whether a provider of `call`'s procedure is known (fresh or stale)
    /// that the call has not tried yet.
    fn has_untried(&self, now: Instant, call: &Call) -> bool {
        (self.cache.get(now, &call.key).values())
            .is_some_and(|found| found.iter().any(|f| !call.tried.contains(&f.provider)))
    }

    /// The Node wrote the CALL of `request_id` to `peer`.
    pub(crate) fn handle_sent(&mut self, peer: &NodeId, request_id: u64) {
        let Some(id) = self.attempt_of(peer, request_id) else {
            return;
        };
        let Some(attempt) = self.calls.get_mut(&id).and_then(|c| c.attempt.as_mut()) else {
            return;
        };
        attempt.sent = true;
        if !attempt.may_retry {
            // Nothing safe to move on to: the call's own deadline ends it.
            self.attempt_deadlines.remove(&(attempt.deadline, id));
        }
    }

    /// Gives up the attempts past their deadline that may move on: CANCEL
    /// goes to their provider (the Node drops a CALL not written yet) and
    /// the call tries the next one, or ends with a timeout.
    fn expire_attempts(&mut self, now: Instant, out: &mut OutputQueue<RpcOutput>) {
        while let Some(&(deadline, id)) = self.attempt_deadlines.first() {
            if deadline > now {
                break;
            }
            self.attempt_deadlines.remove(&(deadline, id));
            let Some(call) = self.calls.get(&id).filter(|c| deadline < c.deadline) else {
                continue; // the call's own deadline ends it
            };
            if !self.has_untried(now, call) {
                // Nobody else to move on to: giving this provider up would
                // only end the call early. Its own deadline ends it.
                continue;
            }
            let timeout = RpcError::Timeout {
                procedure: call.procedure.as_str().into(),
                after: call.timeout,
            };
            self.cancel_attempt(id, out);
            self.fail_over(now, id, Some(timeout), out);
        }
    }

    pub(crate) fn handle_reply(
        &mut self,
        peer: &NodeId,
        reply: Reply,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        if let Some(id) = self.attempt_of(peer, reply.request_id) {
            self.finish(id, Ok(reply.payload), out);
        }
    }

    pub(crate) fn handle_error(
        &mut self,
        now: Instant,
        peer: &NodeId,
        error: ErrorReply,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let Some(id) = self.attempt_of(peer, error.request_id) else {
            return;
        };
        let provider = *peer;
        let result = match error.code {
            ErrorCode::Overloaded => {
                let refusal = RpcError::Overloaded {
                    provider: Some(provider),
                    bound: 0,
                };
                return self.fail_over(now, id, Some(refusal), out);
            }
            ErrorCode::UnknownProcedure => return self.fail_over(now, id, None, out),
            // The provider gave up at the deadline the call carries: the same
            // end as our own timer's, whichever comes first.
            ErrorCode::Timeout => {
                let call = &self.calls[&id];
                RpcError::Timeout {
                    procedure: call.procedure.as_str().into(),
                    after: call.timeout,
                }
            }
            ErrorCode::Refused => RpcError::Refused {
                provider,
                message: error.message,
            },
            ErrorCode::Unauthorized => RpcError::Unauthorized {
                provider,
                message: error.message,
            },
            code => RpcError::Remote {
                provider,
                code,
                message: error.message,
            },
        };
        self.finish(id, Err(result), out);
    }

    pub(crate) fn handle_failure(
        &mut self,
        now: Instant,
        peer: &NodeId,
        request_id: u64,
        delivery: Delivery,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let Some(id) = self.attempt_of(peer, request_id) else {
            return;
        };
        let may_retry = self.calls[&id]
            .attempt
            .as_ref()
            .is_some_and(|a| a.may_retry);
        if delivery == Delivery::NotDelivered || may_retry {
            self.fail_over(now, id, None, out);
        } else {
            self.cache.forget(&self.calls[&id].key, peer);
            self.finish(id, Err(RpcError::Lost { provider: *peer }), out);
        }
    }

    pub(crate) fn handle_lookup(
        &mut self,
        now: Instant,
        key: RecordKey,
        (found, answered): (Vec<Found>, Answered),
        out: &mut OutputQueue<RpcOutput>,
    ) {
        match self.cache.fill(now, key, found, answered) {
            Filled::Stored => self.resume(now, key, out),
            Filled::LookAgain => out.push(RpcOutput::Directory(DirectoryRequest::Lookup { key })),
            Filled::Unasked => {}
        }
    }

    /// Moves on the calls that waited for a lookup of `key`.
    fn resume(&mut self, now: Instant, key: RecordKey, out: &mut OutputQueue<RpcOutput>) {
        for id in self.waiting.remove(&key).unwrap_or_default() {
            self.advance(now, id, out);
        }
    }

    pub(crate) fn cancel(
        &mut self,
        id: CallId,
        out: &mut OutputQueue<RpcOutput>,
    ) -> Result<(), RpcError> {
        if !self.calls.contains_key(&id) {
            return Err(RpcError::UnknownCall(id.0));
        }
        self.abandon(id, RpcError::Cancelled, out);
        Ok(())
    }

    /// Ends the call with its one [`RpcEvent::Completed`].
    fn finish(
        &mut self,
        id: CallId,
        result: Result<Bytes, RpcError>,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(call.deadline, id));
        if let Some(attempt) = call.attempt {
            self.by_request.remove(&attempt.request_id);
            self.attempt_deadlines.remove(&(attempt.deadline, id));
        }
        match result {
            Ok(_) => self.stats.succeeded += 1,
            Err(_) => self.stats.failed += 1,
        }
        out.push(RpcOutput::Event(RpcEvent::Completed { call: id, result }));
    }

    /// Gives the call up with `error`: CANCEL goes to the provider of the
    /// open attempt, if any, so its handler can stop.
    fn abandon(&mut self, id: CallId, error: RpcError, out: &mut OutputQueue<RpcOutput>) {
        self.cancel_attempt(id, out);
        self.finish(id, Err(error), out);
    }

    /// CANCEL for the open attempt of `id`, if any.
    fn cancel_attempt(&self, id: CallId, out: &mut OutputQueue<RpcOutput>) {
        if let Some(attempt) = self.calls.get(&id).and_then(|c| c.attempt.as_ref()) {
            out.push(RpcOutput::Cancel {
                provider: attempt.provider,
                message: wire::Cancel {
                    request_id: attempt.request_id,
                },
            });
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut OutputQueue<RpcOutput>) {
        for key in self.cache.expire(now) {
            self.resume(now, key, out);
        }
        self.cache.prune(now);
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let call = &self.calls[&id];
            let error = RpcError::Timeout {
                procedure: call.procedure.as_str().into(),
                after: call.timeout,
            };
            self.abandon(id, error, out);
        }
        self.expire_attempts(now, out);
        for waiting in self.waiting.values_mut() {
            waiting.retain(|id| self.calls.contains_key(id));
        }
        self.waiting.retain(|_, ids| !ids.is_empty());
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let call = self.deadlines.first().map(|(at, _)| *at);
        let attempt = self.attempt_deadlines.first().map(|(at, _)| *at);
        call.into_iter()
            .chain(attempt)
            .chain(self.cache.next_deadline())
            .min()
    }
}
