//! The [`Rpc`] machine: both sides of RPC behind one sans-IO interface, and
//! the procedures this node registers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::caller::{CallId, CallOptions, Caller, Delivery};
use super::handler::{Handler, InboundId};
use super::{
    HandlerError, ProviderFlags, RegisterOptions, RpcConfig, RpcError, RpcEvent, RpcOutput,
    RpcStats,
};
use crate::access::Authorize;
use crate::contract::{Child, OutputQueue};
use crate::directory::{AnnounceFailure, Announcements, Answered, Found};
use crate::id::{NodeId, RecordKey, RecordKind};
use crate::metrics::CacheCounts;
use crate::record_keys::RecordKeys;
use crate::topic::Topic;
use crate::wire::{Call, ErrorReply, Reply};

/// Both sides of RPC, with no I/O.
#[derive(Debug)]
pub struct Rpc {
    keys: RecordKeys,
    caller: Caller,
    handler: Handler,
    registered: BTreeMap<String, RegisterOptions>,
    announcements: Announcements,
    outputs: OutputQueue<RpcOutput>,
}

impl Rpc {
    /// A machine with nothing registered and no call open; callers are
    /// authorized by [`RpcConfig::callers`].
    pub fn new(config: RpcConfig) -> Self {
        Self {
            caller: Caller::new(&config),
            handler: Handler::new(&config),
            announcements: Announcements::new(config.seed),
            keys: RecordKeys::new(config.realm, RecordKind::Rpc),
            registered: BTreeMap::new(),
            outputs: OutputQueue::new(),
        }
    }

    /// Replaces the callback of [`RpcConfig::callers`] (a closure
    /// `Fn(&NodeId, &str) -> bool` will do); its allow-lists stay.
    pub fn set_authorizer(&mut self, authorize: impl Authorize + 'static) {
        self.handler.set_authorizer(authorize);
    }

    /// The counters so far.
    pub fn stats(&self) -> RpcStats {
        self.caller.stats().plus(self.handler.stats())
    }

    /// Hits and misses of the provider cache (one lookup per call).
    pub fn provider_cache(&self) -> CacheCounts {
        self.caller.cache_counts()
    }

    /// Calls of ours still open.
    pub fn calls_in_flight(&self) -> usize {
        self.caller.in_flight()
    }

    /// Calls we are handling.
    pub fn calls_handled(&self) -> usize {
        self.handler.handling()
    }

    /// The DHT key of a procedure's provider records.
    fn key(&self, procedure: &Topic) -> RecordKey {
        self.keys.key(procedure.as_str())
    }

    /// Starts a call of `procedure` that ends by `now + timeout`. Fails at
    /// once on a bad name, a payload over the limit, or too many open calls.
    pub fn call(
        &mut self,
        now: Instant,
        procedure: &str,
        payload: Bytes,
        timeout: Duration,
        options: CallOptions,
    ) -> Result<CallId, RpcError> {
        self.outputs.mark(now);
        let procedure = Topic::new(procedure)?;
        let key = self.key(&procedure);
        self.caller.call(
            now,
            key,
            procedure,
            payload,
            timeout,
            options,
            &mut self.outputs,
        )
    }

    /// Cancels an open call: CANCEL goes to the provider, and the call ends
    /// with [`RpcError::Cancelled`].
    pub fn cancel(&mut self, now: Instant, call: CallId) -> Result<(), RpcError> {
        self.outputs.mark(now);
        self.caller.cancel(call, &mut self.outputs)
    }

    /// Whether any procedure is registered (the node announces RPC).
    pub fn serves(&self) -> bool {
        !self.registered.is_empty()
    }

    /// Registers `procedure`: its provider record is announced now (the DHT
    /// republishes it until [`Rpc::unregister`]). Fails on a bad name, and
    /// with [`RpcError::AlreadyRegistered`] when it is registered already.
    pub fn register(
        &mut self,
        now: Instant,
        procedure: &str,
        options: RegisterOptions,
    ) -> Result<(), RpcError> {
        self.outputs.mark(now);
        let name = Topic::new(procedure)?;
        if self.registered.contains_key(procedure) {
            return Err(RpcError::AlreadyRegistered(procedure.into()));
        }
        let key = self.key(&name);
        let options = RegisterOptions {
            max_concurrent: options.max_concurrent.max(1),
            ..options
        };
        self.registered.insert(procedure.into(), options);
        let flags = ProviderFlags {
            idempotent: options.idempotent,
        };
        let request = self.announcements.set(key, flags.encode());
        self.outputs.push(RpcOutput::Directory(request));
        Ok(())
    }

    /// Stops serving `procedure` (calls being handled may still be
    /// answered). False when it was not registered.
    pub fn unregister(&mut self, now: Instant, procedure: &str) -> bool {
        self.outputs.mark(now);
        if self.registered.remove(procedure).is_none() {
            return false;
        }
        if let Ok(name) = Topic::new(procedure) {
            let key = self.key(&name);
            self.outputs
                .extend(self.announcements.remove(&key).map(RpcOutput::Directory));
        }
        true
    }

    /// Answers a call we are handling.
    pub fn reply(
        &mut self,
        now: Instant,
        id: InboundId,
        result: Result<Bytes, HandlerError>,
    ) -> Result<(), RpcError> {
        self.outputs.mark(now);
        self.handler.reply(id, result, &mut self.outputs)
    }

    /// The answer to a procedure's
    /// [`DirectoryRequest::Lookup`](super::DirectoryRequest::Lookup), fully
    /// answered.
    pub fn handle_lookup(&mut self, now: Instant, key: RecordKey, found: Vec<Found>) {
        self.handle_lookup_answered(now, key, found, Answered::Fully);
    }

    /// As [`Rpc::handle_lookup`] for a lookup `answered` as it was
    /// ([`Answered`]): what it found joins the providers known (one no
    /// answer found for two TTLs goes); a thin answer is due again after
    /// [`THIN_TTL`](crate::directory::THIN_TTL); after one no node answered,
    /// the providers known stay (the calls waiting for it find no provider
    /// when none was known) and the next call after
    /// [`UNANSWERED_TTL`](crate::directory::UNANSWERED_TTL) looks it up
    /// again.
    pub fn handle_lookup_answered(
        &mut self,
        now: Instant,
        key: RecordKey,
        found: Vec<Found>,
        answered: Answered,
    ) {
        self.outputs.mark(now);
        self.caller
            .handle_lookup(now, key, (found, answered), &mut self.outputs);
    }

    /// How the DHT store of the provider record under `key` ended: `Ok`
    /// once it reached its quorum. A failure becomes
    /// [`RpcEvent::RegistrationFailed`] and the record is announced again
    /// after a backoff ([`ANNOUNCE_RETRY_BASE`](super::ANNOUNCE_RETRY_BASE) doubling up to
    /// [`ANNOUNCE_RETRY_MAX`](super::ANNOUNCE_RETRY_MAX)).
    pub fn handle_announced(
        &mut self,
        now: Instant,
        key: RecordKey,
        result: Result<(), AnnounceFailure>,
    ) {
        self.outputs.mark(now);
        let failed = self.announcements.stored(now, &key, result);
        if let (Some(failed), Some(procedure)) = (failed, self.procedure_of(&key)) {
            let event = RpcEvent::RegistrationFailed { procedure, failed };
            self.outputs.push(RpcOutput::Event(event));
        }
    }

    /// The registered procedure whose provider records live under `key`.
    fn procedure_of(&self, key: &RecordKey) -> Option<String> {
        self.registered
            .keys()
            .find(|name| Topic::new(name).is_ok_and(|topic| self.key(&topic) == *key))
            .cloned()
    }

    /// REPLY from `provider` to one of our calls.
    pub fn handle_reply(&mut self, now: Instant, provider: &NodeId, reply: Reply) {
        self.outputs.mark(now);
        self.caller.handle_reply(provider, reply, &mut self.outputs);
    }

    /// ERROR from `provider` to one of our calls.
    pub fn handle_error(&mut self, now: Instant, provider: &NodeId, error: ErrorReply) {
        self.outputs.mark(now);
        self.caller
            .handle_error(now, provider, error, &mut self.outputs);
    }

    /// The CALL `request_id` to `provider` was written on its stream: from
    /// now on the provider may run it, so the attempt moves on at its
    /// deadline only if the procedure is idempotent.
    pub fn handle_sent(&mut self, now: Instant, provider: &NodeId, request_id: u64) {
        self.outputs.mark(now);
        self.caller.handle_sent(provider, request_id);
    }

    /// A CALL to `provider` failed without an answer; `delivery` says
    /// whether the provider may have read it.
    pub fn handle_failure(
        &mut self,
        now: Instant,
        provider: &NodeId,
        request_id: u64,
        delivery: Delivery,
    ) {
        self.outputs.mark(now);
        self.caller
            .handle_failure(now, provider, request_id, delivery, &mut self.outputs);
    }

    /// A CALL from `caller` arrived.
    pub fn handle_call(&mut self, now: Instant, caller: NodeId, call: Call) {
        self.outputs.mark(now);
        let registered = self.registered.get(&call.procedure).copied();
        self.handler
            .handle_call(now, caller, call, registered, &mut self.outputs);
    }

    /// CANCEL from `caller` arrived, or the stream or connection of its
    /// call `request_id` went away.
    pub fn handle_cancel(&mut self, now: Instant, caller: NodeId, request_id: u64) {
        self.outputs.mark(now);
        self.handler
            .handle_cancel(caller, request_id, &mut self.outputs);
    }

    /// Acts on every deadline due by `now`: call timeouts, handled calls
    /// past their deadline, lookups given up on, announcements to retry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.outputs.mark(now);
        self.caller.handle_timeout(now, &mut self.outputs);
        self.handler.handle_timeout(now, &mut self.outputs);
        let due = self.announcements.due(now);
        self.outputs
            .extend(due.into_iter().map(RpcOutput::Directory));
    }
}

impl Child for Rpc {
    type Output = RpcOutput;

    /// The next thing for the Node to do.
    fn poll_output(&mut self) -> Option<RpcOutput> {
        self.outputs.pop()
    }

    /// When [`Rpc::handle_timeout`] is next needed (the last input's time
    /// while output is queued).
    fn poll_timeout(&self) -> Option<Instant> {
        self.outputs.deadline([
            self.caller.next_deadline(),
            self.handler.next_deadline(),
            self.announcements.next_deadline(),
        ])
    }
}
