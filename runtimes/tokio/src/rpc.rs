//! RPC on a [`MaculaNode`]: serve a procedure with an async handler
//! ([`MaculaNode::register`]) and call one ([`MaculaNode::call`]).
//!
//! - **Handlers** run in their own tokio task, one per incoming call. The
//!   limits are the core node's (`macula::rpc`): each procedure handles at
//!   most [`ProcedureOptions::max_concurrent`] calls at once (default
//!   [`DEFAULT_MAX_CONCURRENT`]), the node as a whole
//!   `NodeConfig::rpc.max_handlers` (256 by default); a call past either is
//!   answered `overloaded` without running the handler, so the caller moves
//!   on to another provider or gets `RpcError::Overloaded`.
//! - **Cancellation** reaches a handler through [`Request::cancelled`]: the
//!   caller cancelled (dropped its call future), its deadline passed, or its
//!   connection went away. The handler's answer is then discarded, and the
//!   call's concurrency slot is free at once (the call has ended for the
//!   node). The handler is not stopped by force: it should watch the token
//!   when it runs long.
//! - **Calls** resolve with the reply or a typed [`CallError`]. Dropping the
//!   future of [`MaculaNode::call`] cancels the call: CANCEL goes to the
//!   provider.
//! - **Errors** are the core's [`RpcError`] inside [`CallError::Rpc`].
//! - A [`Registration`] unregisters when it is dropped or
//!   [`Registration::unregister`]ed; calls already running still answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use macula::id::NodeId;
use macula::rpc::RpcError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How a procedure is served ([`MaculaNode::register`]): the core's
/// options, `idempotent` and `max_concurrent`.
pub use macula::rpc::RegisterOptions as ProcedureOptions;
pub use macula::rpc::{DEFAULT_MAX_CONCURRENT, HandlerError};

use crate::handle::MaculaNode;
use crate::routes::{Notice, Order};

/// How long a call may take unless [`CallOptions::timeout`] says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a handler's future resolves to.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, HandlerError>> + Send>>;

/// A registered handler, as the node task keeps it.
pub(crate) type Handler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// How a call is made ([`MaculaNode::call`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOptions {
    /// The call ends with `RpcError::Timeout` if no answer came by then,
    /// provider lookup included. Default [`DEFAULT_CALL_TIMEOUT`].
    pub timeout: Duration,
    /// Never fail over once the request may have been delivered, even to a
    /// provider that registered the procedure idempotent. Default false.
    pub at_most_once: bool,
    /// How long one provider may take before the call moves to the next
    /// (when that cannot run a handler twice). Default `None`: the timeout
    /// shared among the core's `RpcConfig::attempts` providers.
    pub attempt_timeout: Option<Duration>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_CALL_TIMEOUT,
            at_most_once: false,
            attempt_timeout: None,
        }
    }
}

impl CallOptions {
    /// The defaults with `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            ..Self::default()
        }
    }
}

/// One incoming call, as a handler gets it.
#[derive(Debug)]
pub struct Request {
    /// Who calls.
    pub caller: NodeId,
    /// The procedure called.
    pub procedure: String,
    /// The arguments.
    pub payload: Bytes,
    /// Fires when the call ends without this handler's answer (see
    /// [`Request::cancelled`]).
    pub cancellation: CancellationToken,
}

impl Request {
    /// Resolves when the call is cancelled: the caller sent CANCEL (it
    /// dropped its call future), the call's deadline passed, or the caller's
    /// connection went away. The answer is discarded from then on.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancellation.cancelled()
    }

    /// Whether the call has been cancelled already.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }
}

/// Why [`MaculaNode::register`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The node refused the registration (a bad procedure name: the rules
    /// of topics apply).
    #[error(transparent)]
    Rpc(RpcError),
    /// This node already serves the procedure (drop or unregister that
    /// [`Registration`] first): the core's
    /// [`RpcError::AlreadyRegistered`].
    #[error("{0:?} is already registered on this node")]
    AlreadyRegistered(String),
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
}

impl From<RpcError> for RegisterError {
    fn from(error: RpcError) -> Self {
        match error {
            RpcError::AlreadyRegistered(procedure) => Self::AlreadyRegistered(procedure),
            other => Self::Rpc(other),
        }
    }
}

/// Why [`MaculaNode::call`] did not return a reply: the core's typed
/// [`RpcError`] (no provider, timeout, remote error with its code and
/// message, refused, lost, too large, overloaded), or the node stopped.
///
/// ```
/// use macula::rpc::RpcError;
/// use macula_tokio::CallError;
///
/// fn explain(error: &CallError) -> String {
///     match error {
///         CallError::Rpc(RpcError::NoProvider { procedure, .. }) => format!("nobody serves {procedure}"),
///         CallError::Rpc(RpcError::Timeout { after, .. }) => format!("no answer within {after:?}"),
///         CallError::Rpc(RpcError::Remote { code, message, .. }) => format!("failed ({code:?}): {message}"),
///         CallError::Rpc(other) => other.to_string(),
///         CallError::Stopped => "the node has shut down".into(),
///     }
/// }
/// assert_eq!(explain(&CallError::Stopped), "the node has shut down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call failed in the mesh, or the node refused to start it. A call
    /// of this API never ends with [`RpcError::Cancelled`] (dropping its
    /// future is the only way to cancel it, and then nobody waits).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The node shut down before the call ended.
    #[error("the node has shut down")]
    Stopped,
}

/// A procedure this node serves. Dropping it unregisters the procedure (as
/// [`Registration::unregister`] does, without waiting); keep it for as long
/// as the procedure should be served.
#[derive(Debug)]
#[must_use = "dropping a Registration unregisters the procedure"]
pub struct Registration {
    procedure: String,
    id: u64,
    notices: mpsc::UnboundedSender<Notice>,
    /// False once unregistered explicitly.
    armed: bool,
}

impl Registration {
    /// The procedure served.
    pub fn procedure(&self) -> &str {
        &self.procedure
    }

    /// Stops serving the procedure: its provider record is withdrawn and new
    /// calls are refused; handlers already running still answer. Resolves
    /// once the node has done so (at once if it has shut down).
    pub async fn unregister(mut self) {
        self.armed = false;
        let (done, unregistered) = oneshot::channel();
        let notice = Notice::Unregister {
            registration: self.id,
            done: Some(done),
        };
        if self.notices.send(notice).is_ok() {
            // An error means the node stopped: unregistered either way.
            let _ = unregistered.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.armed {
            // Fails only when the node has stopped.
            let _ = self.notices.send(Notice::Unregister {
                registration: self.id,
                done: None,
            });
        }
    }
}

/// Cancels a call whose future is dropped before its outcome arrived.
struct CancelOnDrop<'a> {
    ticket: u64,
    notices: &'a mpsc::UnboundedSender<Notice>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Fails only when the node has stopped.
            let _ = self.notices.send(Notice::CancelCall {
                ticket: self.ticket,
            });
        }
    }
}

impl MaculaNode {
    /// Serves `procedure` with `handler`: the provider record is announced in
    /// the DHT (and kept there while the [`Registration`] lives), and each
    /// call runs `handler` in a task of its own (see the [module
    /// docs](crate::rpc) for concurrency and cancellation). The record takes
    /// a DHT store to spread: callers that look the procedure up before it
    /// arrived find no provider (and cache that for `rpc.cache_ttl`).
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use macula_tokio::{CallOptions, HandlerError, MaculaNode, ProcedureOptions, Request};
    ///
    /// # async fn demo(provider: MaculaNode, caller: MaculaNode) -> Result<(), Box<dyn std::error::Error>> {
    /// let _serving = provider
    ///     .register("svc.echo", ProcedureOptions::default(), |request: Request| async move {
    ///         if request.payload.is_empty() {
    ///             return Err(HandlerError::failed("nothing to echo"));
    ///         }
    ///         Ok(request.payload)
    ///     })
    ///     .await?;
    /// let reply = caller
    ///     .call("svc.echo", Bytes::from_static(b"hi"), CallOptions::default())
    ///     .await?;
    /// assert_eq!(reply, Bytes::from_static(b"hi"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register<F, Fut>(
        &self,
        procedure: &str,
        options: ProcedureOptions,
        handler: F,
    ) -> Result<Registration, RegisterError>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        let order = |reply| Order::Register {
            procedure: procedure.to_owned(),
            options,
            handler,
            reply,
        };
        let id = self.ask(order).await.ok_or(RegisterError::Stopped)??;
        Ok(Registration {
            procedure: procedure.to_owned(),
            id,
            notices: self.notices().clone(),
            armed: true,
        })
    }

    /// Calls `procedure` on one of its providers with `payload` and resolves
    /// with the reply. The provider is looked up in the DHT (cached) and
    /// reached over a pooled connection. Dropping the future cancels the
    /// call: CANCEL reaches the provider's handler.
    pub async fn call(
        &self,
        procedure: &str,
        payload: Bytes,
        options: CallOptions,
    ) -> Result<Bytes, CallError> {
        let ticket = self.next_ticket();
        // Dropped before the outcome arrived: cancel. (If the order never
        // left, or the task reads the notice first, the task skips the call:
        // its reply channel is closed.)
        let mut guard = CancelOnDrop {
            ticket,
            notices: self.notices(),
            armed: true,
        };
        let order = |reply| Order::Call {
            ticket,
            procedure: procedure.to_owned(),
            payload,
            options,
            reply,
        };
        let outcome = self.ask(order).await;
        guard.armed = false;
        outcome.unwrap_or(Err(CallError::Stopped))
    }
}
