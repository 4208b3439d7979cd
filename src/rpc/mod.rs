//! RPC semantics as pure machines the Node drives: provider discovery,
//! calls with failover that never runs a non-idempotent handler twice,
//! cancellation, deadlines, bounded concurrency and authorization.
//!
//! The Node feeds [`Rpc`] the application's commands (`call`, `cancel`,
//! `register`, `reply`), lookup results, the frames that arrived (CALL,
//! REPLY, ERROR, CANCEL), request failures with what is known of their
//! delivery, and time; it carries out the [`RpcOutput`]s: DHT requests
//! ([`DirectoryRequest`], shared with [`crate::pubsub`]), CALL frames to
//! send on a new request stream, CANCEL and answer frames for existing
//! streams, and events for the application. The failover rule is stated in
//! the caller's module ([`Delivery`]).

mod caller;
pub(crate) mod directory;
mod error;
mod handler;
mod machine;

pub use caller::{CallId, CallOptions, Delivery, ProviderChoice};
pub use directory::{DirectoryRequest, Found};
pub use error::{HandlerError, RpcError};
pub use handler::{Authorize, CancelReason, InboundId};
pub use machine::{ProviderFlags, RegisterOptions, Rpc, RpcConfig, RpcEvent, RpcOutput};
