//! The [`Rpc`] machine: both sides of RPC behind one sans-IO interface, and
//! the procedures this node registers.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::caller::{CallId, CallOptions, Caller, Delivery, ProviderChoice};
use super::directory::{Announcements, DirectoryRequest, Found};
use super::handler::{Authorize, CancelReason, Handler, InboundId};
use super::{HandlerError, RpcError};
use crate::id::{NodeId, Realm, RecordKey, RecordKind};
use crate::pubsub::Topic;
use crate::wire::{Call, Cancel, ErrorReply, Message, Reply};

/// Settings of an [`Rpc`] machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    /// The realm provider records are published in.
    pub realm: Realm,
    /// Seed of the random provider choice.
    pub seed: u64,
    /// How a provider is picked (default random).
    pub choice: ProviderChoice,
    /// Largest call or reply payload (default 16 MiB).
    pub max_payload: usize,
    /// Calls this node may have open at once (default 1024).
    pub max_in_flight: usize,
    /// Calls this node handles at once (default 256).
    pub max_handlers: usize,
    /// How long a provider list is used (default 30 s).
    pub cache_ttl: Duration,
    /// How long a provider lookup may take before it is tried again
    /// (default 5 s; the call's own deadline still bounds it).
    pub lookup_timeout: Duration,
    /// How often provider records are announced again (default 240 s: DHT
    /// records live 300 s).
    pub republish_interval: Duration,
}

impl RpcConfig {
    /// The defaults for a node in `realm`, seeded with `seed`.
    pub fn new(realm: Realm, seed: u64) -> Self {
        Self {
            realm,
            seed,
            choice: ProviderChoice::Random,
            max_payload: 16 << 20,
            max_in_flight: 1024,
            max_handlers: 256,
            cache_ttl: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(5),
            republish_interval: Duration::from_secs(240),
        }
    }
}

/// How a procedure is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterOptions {
    /// Running the handler twice for one call is harmless, so callers may
    /// fail over even after the request may have been delivered.
    pub idempotent: bool,
}

/// What a provider record says: one byte of flags (bit 0: idempotent).
/// Unknown bits are ignored; an empty or unreadable value means no flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProviderFlags {
    /// The procedure is registered idempotent.
    pub idempotent: bool,
}

impl ProviderFlags {
    /// The record value.
    pub fn encode(self) -> Bytes {
        Bytes::copy_from_slice(&[u8::from(self.idempotent)])
    }

    /// Reads a record value.
    pub fn decode(value: &[u8]) -> Self {
        Self {
            idempotent: value.first().is_some_and(|flags| flags & 1 == 1),
        }
    }
}

/// Counters of the RPC machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcStats {
    /// Calls started (accepted by [`Rpc::call`]).
    pub calls: u64,
    /// Calls that ended with a reply.
    pub succeeded: u64,
    /// Calls that ended with an error (cancelled ones included).
    pub failed: u64,
    /// CALL frames sent.
    pub attempts: u64,
    /// CALL frames sent to another provider after a first one failed.
    pub failovers: u64,
    /// Incoming calls handed to the application.
    pub handled: u64,
    /// Incoming calls answered with an ERROR before reaching the
    /// application (unknown, too large, refused, overloaded).
    pub refused: u64,
}

impl RpcStats {
    /// The field-wise sum (the caller's and the handler's counters).
    pub(crate) fn plus(self, other: RpcStats) -> RpcStats {
        RpcStats {
            calls: self.calls + other.calls,
            succeeded: self.succeeded + other.succeeded,
            failed: self.failed + other.failed,
            attempts: self.attempts + other.attempts,
            failovers: self.failovers + other.failovers,
            handled: self.handled + other.handled,
            refused: self.refused + other.refused,
        }
    }
}

/// What the RPC machine tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcEvent {
    /// A call of ours ended: the reply's payload or why it failed. Every
    /// call ends with exactly one of these, by its deadline at the latest.
    Completed {
        /// The call.
        call: CallId,
        /// Its outcome.
        result: Result<Bytes, RpcError>,
    },
    /// Someone calls one of our procedures; answer with [`Rpc::reply`].
    Request {
        /// Give it back to [`Rpc::reply`].
        id: InboundId,
        /// Who calls.
        caller: NodeId,
        /// The procedure.
        procedure: String,
        /// The arguments.
        payload: Bytes,
    },
    /// A call being handled ended without an answer; drop its work.
    Cancelled {
        /// The call.
        id: InboundId,
        /// Why.
        reason: CancelReason,
    },
}

/// What the RPC machine asks the Node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcOutput {
    /// A DHT request: look up, announce, withdraw.
    Directory(DirectoryRequest),
    /// Open a request stream to `provider` and write `message`, keeping our
    /// side open for a CANCEL until the answer arrives. Report the answer with
    /// [`Rpc::handle_reply`] / [`Rpc::handle_error`], or its failure with
    /// [`Rpc::handle_failure`].
    Call {
        /// The call this attempt belongs to.
        call: CallId,
        /// Where to send it.
        provider: NodeId,
        /// The CALL frame.
        message: Call,
    },
    /// Write `message` on the stream of the call it names, then finish the
    /// stream (if it is already gone, nothing to do).
    Cancel {
        /// The provider the call went to.
        provider: NodeId,
        /// The CANCEL frame.
        message: Cancel,
    },
    /// Write this answer (REPLY or ERROR) on the stream the caller's CALL
    /// came on, then finish it.
    Answer {
        /// Who called.
        caller: NodeId,
        /// The answer.
        message: Message,
    },
    /// Tell the application.
    Event(RpcEvent),
}

/// Both sides of RPC, with no I/O.
#[derive(Debug)]
pub struct Rpc {
    realm: Realm,
    caller: Caller,
    handler: Handler,
    registered: BTreeMap<String, RegisterOptions>,
    announcements: Announcements,
    outputs: VecDeque<RpcOutput>,
    /// The time of the last input.
    last_now: Option<Instant>,
}

impl Rpc {
    /// A machine with nothing registered and no call open; every caller is
    /// authorized until [`Rpc::set_authorizer`].
    pub fn new(config: RpcConfig) -> Self {
        Self {
            caller: Caller::new(&config),
            handler: Handler::new(&config),
            announcements: Announcements::new(config.republish_interval),
            realm: config.realm,
            registered: BTreeMap::new(),
            outputs: VecDeque::new(),
            last_now: None,
        }
    }

    /// Replaces the authorization hook (a closure
    /// `Fn(&NodeId, &str) -> bool` will do).
    pub fn set_authorizer(&mut self, authorize: impl Authorize + 'static) {
        self.handler.set_authorizer(Box::new(authorize));
    }

    /// The counters so far.
    pub fn stats(&self) -> RpcStats {
        self.caller.stats().plus(self.handler.stats())
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
        RecordKey::new(&self.realm, RecordKind::Rpc, procedure.as_str())
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
        self.last_now = Some(now);
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
        self.last_now = Some(now);
        self.caller.cancel(call, &mut self.outputs)
    }

    /// Registers `procedure`: its provider record is announced now and
    /// every republish interval until [`Rpc::unregister`]. Registering again
    /// changes the options.
    pub fn register(
        &mut self,
        now: Instant,
        procedure: &str,
        options: RegisterOptions,
    ) -> Result<(), RpcError> {
        self.last_now = Some(now);
        let name = Topic::new(procedure)?;
        let key = self.key(&name);
        self.registered.insert(procedure.into(), options);
        let flags = ProviderFlags {
            idempotent: options.idempotent,
        };
        let request = self.announcements.set(now, key, flags.encode());
        self.outputs.push_back(RpcOutput::Directory(request));
        Ok(())
    }

    /// Stops serving `procedure` (calls being handled may still be
    /// answered). False when it was not registered.
    pub fn unregister(&mut self, now: Instant, procedure: &str) -> bool {
        self.last_now = Some(now);
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
        self.last_now = Some(now);
        self.handler.reply(id, result, &mut self.outputs)
    }

    /// The answer to a [`DirectoryRequest::Lookup`] of a procedure.
    pub fn handle_lookup(&mut self, now: Instant, key: RecordKey, found: Vec<Found>) {
        self.last_now = Some(now);
        self.caller
            .handle_lookup(now, key, found, &mut self.outputs);
    }

    /// REPLY from `provider` to one of our calls.
    pub fn handle_reply(&mut self, now: Instant, provider: &NodeId, reply: Reply) {
        self.last_now = Some(now);
        self.caller.handle_reply(provider, reply, &mut self.outputs);
    }

    /// ERROR from `provider` to one of our calls.
    pub fn handle_error(&mut self, now: Instant, provider: &NodeId, error: ErrorReply) {
        self.last_now = Some(now);
        self.caller
            .handle_error(now, provider, error, &mut self.outputs);
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
        self.last_now = Some(now);
        self.caller
            .handle_failure(now, provider, request_id, delivery, &mut self.outputs);
    }

    /// A CALL from `caller` arrived.
    pub fn handle_call(&mut self, now: Instant, caller: NodeId, call: Call) {
        self.last_now = Some(now);
        let registered = self.registered.contains_key(&call.procedure);
        self.handler
            .handle_call(now, caller, call, registered, &mut self.outputs);
    }

    /// CANCEL from `caller` arrived, or the stream or connection of its
    /// call `request_id` went away.
    pub fn handle_cancel(&mut self, now: Instant, caller: NodeId, request_id: u64) {
        self.last_now = Some(now);
        self.handler
            .handle_cancel(caller, request_id, &mut self.outputs);
    }

    /// Acts on every deadline due by `now`: call timeouts, handled calls
    /// past their deadline, lookups given up on, republications.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.caller.handle_timeout(now, &mut self.outputs);
        self.handler.handle_timeout(now, &mut self.outputs);
        let due = self.announcements.due(now);
        self.outputs
            .extend(due.into_iter().map(RpcOutput::Directory));
    }

    /// The next thing for the Node to do.
    pub fn poll_output(&mut self) -> Option<RpcOutput> {
        self.outputs.pop_front()
    }

    /// When [`Rpc::handle_timeout`] is next needed (the last input's time
    /// while output is queued).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.outputs.is_empty() {
            return self.last_now;
        }
        [
            self.caller.next_deadline(),
            self.handler.next_deadline(),
            self.announcements.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
