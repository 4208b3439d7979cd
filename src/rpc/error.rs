//! What can go wrong with a call, for the caller and for the handler.

use std::time::Duration;

use crate::id::NodeId;
use crate::topic::TopicError;
use crate::wire::ErrorCode;

/// Why a call failed, or why an RPC command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The procedure name is not valid (the rules of topics apply).
    #[error("bad procedure name: {0}")]
    BadName(#[from] TopicError),
    /// No provider of the procedure was found, or every one found failed
    /// before it could take the request.
    #[error("no provider of {procedure:?} (tried {tried})")]
    NoProvider {
        /// The procedure.
        procedure: String,
        /// How many providers were tried.
        tried: usize,
    },
    /// No answer by the deadline.
    #[error("call of {procedure:?} timed out after {after:?}")]
    Timeout {
        /// The procedure.
        procedure: String,
        /// The call's timeout.
        after: Duration,
    },
    /// The provider answered with an error.
    #[error("{provider:?} answered {code:?}: {message}")]
    Remote {
        /// Who answered.
        provider: NodeId,
        /// What kind of failure.
        code: ErrorCode,
        /// The provider's detail.
        message: String,
    },
    /// The provider does not serve the call, or refused it by a policy
    /// other than authorization (ERROR `refused`).
    #[error("{provider:?} refused the call: {message}")]
    Refused {
        /// Who refused.
        provider: NodeId,
        /// The provider's detail.
        message: String,
    },
    /// The provider's authorization (its allow-lists or callback) does not
    /// let this node call the procedure (ERROR `unauthorized`).
    #[error("{provider:?} does not authorize this node: {message}")]
    Unauthorized {
        /// Who refused.
        provider: NodeId,
        /// The provider's detail.
        message: String,
    },
    /// The request may have reached the provider when its connection was
    /// lost; the procedure is not idempotent, so it is not tried elsewhere.
    #[error("connection to {provider:?} lost after the request may have reached it")]
    Lost {
        /// The provider.
        provider: NodeId,
    },
    /// A payload is over the size limit.
    #[error("payload of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A bound was hit: this node's in-flight calls (`provider` is `None`),
    /// or every provider tried answered that it is overloaded.
    #[error("overloaded (bound {bound}, provider {provider:?})")]
    Overloaded {
        /// The provider that was overloaded, if it was not this node.
        provider: Option<NodeId>,
        /// The local bound that was hit (0 for a provider's).
        bound: usize,
    },
    /// The call was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The procedure is registered on this node already: unregister it
    /// first to serve it with other options.
    #[error("{0:?} is already registered on this node")]
    AlreadyRegistered(String),
    /// No such call (already answered, cancelled, or never made).
    #[error("no call {0} is open")]
    UnknownCall(u64),
}

/// A handler's failure, sent to the caller as ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The code (usually [`ErrorCode::RemoteError`]).
    pub code: ErrorCode,
    /// Detail for the caller.
    pub message: String,
}

impl HandlerError {
    /// The handler ran and failed: [`ErrorCode::RemoteError`] with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::RemoteError,
            message: message.into(),
        }
    }
}
