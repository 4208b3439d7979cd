//! The types the Node and the application see of RPC: settings, options,
//! provider records, outputs, events and counters.

use std::time::Duration;

use bytes::Bytes;

use super::RpcError;
use super::caller::{CallId, ProviderChoice};
use super::handler::{CancelReason, InboundId};
use crate::access::AccessList;
use crate::directory::AnnounceFailed;
use crate::directory::DirectoryRequest;
use crate::id::{NodeId, Realm};
use crate::wire::{Call, Cancel, Message};

/// Settings of an [`Rpc`](super::Rpc) machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    /// The realm provider records are published in.
    pub realm: Realm,
    /// Seed of the random provider choice.
    pub seed: u64,
    /// How a provider is picked (default random).
    pub choice: ProviderChoice,
    /// Largest call or reply payload (default 16 MiB): larger ones are
    /// refused [`RpcError::TooLarge`] before anything is sent. The Node
    /// streams payloads over one frame (docs/PROTOCOL.md §8.3) and refuses
    /// incoming ones over this limit on their declared length.
    pub max_payload: usize,
    /// How many providers a call's timeout is shared among (default 3):
    /// each attempt may take the call's timeout divided by this (or
    /// [`CallOptions::attempt_timeout`](super::CallOptions::attempt_timeout)),
    /// and at most what is left of the call. An attempt past its window is
    /// given up (CANCEL) and the call moves to the next provider — but only
    /// when that cannot run a handler twice: the CALL was not written yet,
    /// or the provider registered idempotent. A written non-idempotent
    /// attempt keeps the rest of the call's time.
    pub attempts: u32,
    /// Calls this node may have open at once (default 1024).
    pub max_in_flight: usize,
    /// Calls this node handles at once (default 256).
    pub max_handlers: usize,
    /// Calls one caller may have handled here at once (default 128, half of
    /// the default `max_handlers`), so one caller cannot take every handler
    /// slot; past it its calls are refused ERROR `overloaded` (counted in
    /// [`Refusals::caller_share`]).
    pub max_handlers_per_caller: usize,
    /// Who may call which procedure (default [`AccessList::open`]: every
    /// caller, every procedure). A refused call is answered ERROR
    /// `unauthorized` before the application sees it (counted in
    /// [`Refusals::unauthorized`]).
    pub callers: AccessList,
    /// How long a provider list is used (default 30 s).
    pub cache_ttl: Duration,
    /// How long a provider lookup may take before it is tried again
    /// (default 5 s; the call's own deadline still bounds it).
    pub lookup_timeout: Duration,
}

impl RpcConfig {
    /// The defaults for a node in `realm`, seeded with `seed`.
    pub fn new(realm: Realm, seed: u64) -> Self {
        Self {
            realm,
            seed,
            choice: ProviderChoice::Random,
            max_payload: 16 << 20,
            attempts: 3,
            max_in_flight: 1024,
            max_handlers: 256,
            max_handlers_per_caller: 128,
            callers: AccessList::open(),
            cache_ttl: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(5),
        }
    }
}

/// Calls of one procedure handled at once unless
/// [`RegisterOptions::max_concurrent`] says otherwise.
pub const DEFAULT_MAX_CONCURRENT: usize = 64;

/// How a procedure is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterOptions {
    /// Running the handler twice for one call is harmless, so callers may
    /// fail over even after the request may have been delivered (published
    /// in the provider record). Default false.
    pub idempotent: bool,
    /// Calls of this procedure handled at once (at least 1): past it a CALL
    /// is answered ERROR `overloaded` before the application sees it
    /// (counted in [`Refusals::procedure_limit`]), so the caller moves on
    /// to another provider. A slot is taken by an
    /// [`RpcEvent::Request`] and freed when the call ends here: answered,
    /// cancelled or past its deadline. Default [`DEFAULT_MAX_CONCURRENT`].
    pub max_concurrent: usize,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        Self {
            idempotent: false,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
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
    /// Calls started (accepted by [`Rpc::call`](super::Rpc::call)).
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
    /// application (unknown, too large, unauthorized, overloaded): the sum
    /// of [`RpcStats::refusals`].
    pub refused: u64,
    /// The incoming calls refused, by reason.
    pub refusals: Refusals,
}

/// Incoming calls refused before reaching the application, by reason (the
/// ERROR code each was answered with in brackets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// The procedure is not registered here (`unknown procedure`).
    pub unknown_procedure: u64,
    /// The payload is over [`RpcConfig::max_payload`] (`too large`).
    pub too_large: u64,
    /// [`RpcConfig::callers`] refused the caller (`unauthorized`).
    pub unauthorized: u64,
    /// [`RpcConfig::max_handlers`] calls were being handled (`overloaded`).
    pub overloaded: u64,
    /// The caller already had [`RpcConfig::max_handlers_per_caller`] calls
    /// being handled (`overloaded`).
    pub caller_share: u64,
    /// The procedure already had [`RegisterOptions::max_concurrent`] calls
    /// being handled (`overloaded`).
    pub procedure_limit: u64,
}

impl Refusals {
    fn plus(self, other: Refusals) -> Refusals {
        Refusals {
            unknown_procedure: self.unknown_procedure + other.unknown_procedure,
            too_large: self.too_large + other.too_large,
            unauthorized: self.unauthorized + other.unauthorized,
            overloaded: self.overloaded + other.overloaded,
            caller_share: self.caller_share + other.caller_share,
            procedure_limit: self.procedure_limit + other.procedure_limit,
        }
    }
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
            refusals: self.refusals.plus(other.refusals),
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
    /// Someone calls one of our procedures; answer with [`Rpc::reply`](super::Rpc::reply).
    Request {
        /// Give it back to [`Rpc::reply`](super::Rpc::reply).
        id: InboundId,
        /// Who calls.
        caller: NodeId,
        /// The procedure.
        procedure: String,
        /// The arguments.
        payload: Bytes,
    },
    /// The provider record of a registered procedure could not be stored
    /// in the DHT, so callers may not find it; it is announced again in
    /// `retry_in` (and so on, backing off, until a store succeeds).
    RegistrationFailed {
        /// The procedure.
        procedure: String,
        /// Why, and when it is tried again.
        failed: AnnounceFailed,
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
    /// side open for a CANCEL until the answer arrives. Report the answer
    /// with [`handle_reply`](super::Rpc::handle_reply) or
    /// [`handle_error`](super::Rpc::handle_error), or its failure with
    /// [`handle_failure`](super::Rpc::handle_failure).
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
