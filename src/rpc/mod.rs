//! RPC semantics as pure machines the Node drives: provider discovery,
//! calls with failover that never runs a non-idempotent handler twice,
//! cancellation, deadlines, bounded concurrency and authorization.
//!
//! The Node feeds [`Rpc`] the application's commands (`call`, `cancel`,
//! `register`, `reply`), lookup results, the frames that arrived (CALL,
//! REPLY, ERROR, CANCEL), request failures with what is known of their
//! delivery, and time; it carries out the [`RpcOutput`]s: DHT requests
//! ([`DirectoryRequest`], from the shared [`crate::directory`]), CALL frames to
//! send on a new request stream, CANCEL and answer frames for existing
//! streams, and events for the application.
//!
//! Decisions, in one place:
//! - **At most once.** A call moves to another provider only when the first
//!   certainly did not run the handler: the request was
//!   [`Delivery::NotDelivered`], or the provider answered ERROR `overloaded`
//!   or `unknown procedure` (it refuses those before running anything). When
//!   the request may have been read ([`Delivery::MaybeDelivered`]) the call
//!   fails over only if the provider registered the procedure idempotent
//!   (its record says so, [`ProviderFlags`]) and the caller did not ask for
//!   [`CallOptions::at_most_once`]; otherwise it ends with [`RpcError::Lost`].
//!   Other ERROR codes are final: `refused` becomes [`RpcError::Refused`],
//!   `unauthorized` [`RpcError::Unauthorized`],
//!   `timeout` (the provider's copy of the call's deadline passed)
//!   [`RpcError::Timeout`], the rest (unknown codes included)
//!   [`RpcError::Remote`].
//!   A CALL the Node never wrote ([`Rpc::handle_sent`] not called) counts
//!   as not delivered.
//! - **Attempt windows.** Each attempt has a window (the call's timeout
//!   divided by [`RpcConfig::attempts`], default 3, or
//!   [`CallOptions::attempt_timeout`]). A provider that does not answer in
//!   it — dead, unreachable, stuck — is given up (CANCEL) and the next one
//!   tried, under the same rule: only when the Node has not written the CALL
//!   yet ([`Rpc::handle_sent`]) or the provider registered idempotent. A
//!   written non-idempotent attempt keeps the whole rest of the call's time,
//!   and so does an attempt with no fresh untried provider to move on to
//!   (the last one is never given up before the call's deadline: reaching
//!   a provider behind a relay can take longer than one window). A call
//!   that runs out of time ends with [`RpcError::Timeout`].
//! - Every provider that fails is dropped from the cached provider list
//!   (cached [`RpcConfig::cache_ttl`]); a lookup that does not come back
//!   within [`RpcConfig::lookup_timeout`] is asked again while the call's
//!   deadline allows.
//! - Every call ends with exactly one [`RpcEvent::Completed`], by its
//!   deadline at the latest; a call given up (timeout, [`Rpc::cancel`])
//!   sends CANCEL on its open attempt. A handled call ends with one answer,
//!   or with [`RpcEvent::Cancelled`] (CANCEL, or its own deadline).
//! - A provider record whose store fails (the first one or a republish)
//!   is reported as [`RpcEvent::RegistrationFailed`] and announced again
//!   after a backoff, until a store succeeds or the procedure is
//!   unregistered.
//! - **Who may call.** [`RpcConfig::callers`] (allow-lists of node ids per
//!   procedure pattern, and a callback: [`AccessList`]) is asked for every
//!   CALL of a registered procedure; a refused one is answered ERROR
//!   `unauthorized` and never reaches the application. One caller may have
//!   at most [`RpcConfig::max_handlers_per_caller`] calls handled at once;
//!   past it, past [`RpcConfig::max_handlers`] in all, and past the
//!   procedure's own [`RegisterOptions::max_concurrent`], a CALL is answered
//!   `overloaded`. Every refusal is counted by reason ([`Refusals`]).
//! - **One registration per procedure.** Registering a procedure that is
//!   registered already fails with [`RpcError::AlreadyRegistered`].
//! - Provider records hold one byte of flags; their DHT key is
//!   `rpc/<procedure>` in the realm. Procedure names follow the topic rules
//!   ([`crate::topic::Topic`]).

mod caller;
mod error;
mod handler;
mod machine;
mod types;

pub use crate::access::{AccessList, Authorize};
pub use crate::directory::{
    ANNOUNCE_RETRY_BASE, ANNOUNCE_RETRY_MAX, AnnounceFailed, AnnounceFailure, DirectoryRequest,
    Found,
};
pub use caller::{CallId, CallOptions, Delivery, ProviderChoice};
pub use error::{HandlerError, RpcError};
pub use handler::{CancelReason, InboundId};
pub use machine::Rpc;
pub use types::{
    DEFAULT_MAX_CONCURRENT, ProviderFlags, Refusals, RegisterOptions, RpcConfig, RpcEvent,
    RpcOutput, RpcStats,
};
