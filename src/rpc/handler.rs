//! The provider's side of RPC: registered procedures, incoming calls handed
//! to the application, their answers, cancellation and the bounds.
//!
//! An incoming CALL is refused with an ERROR — and never reaches the
//! application — when the procedure is not registered (`unknown procedure`),
//! the payload is over the limit (`too large`), [`RpcConfig::callers`] does
//! not let the caller call it (`unauthorized`), or [`RpcConfig::max_handlers`]
//! calls are already being handled, [`RpcConfig::max_handlers_per_caller`]
//! of this caller's, or the procedure's
//! [`RegisterOptions::max_concurrent`](super::RegisterOptions::max_concurrent)
//! (`overloaded`). Otherwise it becomes an [`RpcEvent::Request`];
//! the application answers with [`Rpc::reply`](super::Rpc::reply). A CANCEL,
//! or the call's own deadline passing, ends it with
//! [`RpcEvent::Cancelled`]; a later reply is then refused with
//! [`RpcError::UnknownCall`].

use std::collections::{BTreeMap, BTreeSet};

use crate::contract::OutputQueue;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{HandlerError, RegisterOptions, RpcConfig, RpcError, RpcEvent, RpcOutput, RpcStats};
use crate::access::{AccessList, Authorize};
use crate::collections::HashMap;
use crate::id::NodeId;
use crate::wire::{Call, ErrorCode, ErrorReply, Message, Reply};

/// A call this node handles; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// Why a handled call ended without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The caller sent CANCEL, or its stream or connection went away.
    Caller,
    /// The call's deadline (its `timeout_ms`) passed; the caller was told
    /// `timeout`.
    Deadline,
}

#[derive(Clone, Debug)]
struct Inbound {
    caller: NodeId,
    procedure: String,
    request_id: u64,
    deadline: Option<Instant>,
}

/// The calls this node handles.
pub(crate) struct Handler {
    max_payload: usize,
    max_handlers: usize,
    max_per_caller: usize,
    callers: AccessList,
    inbound: BTreeMap<InboundId, Inbound>,
    /// Calls being handled per caller (no entry at zero: at most one entry
    /// per call being handled).
    per_caller: HashMap<NodeId, usize>,
    /// Calls being handled per procedure (no entry at zero, as above).
    per_procedure: HashMap<String, usize>,
    by_request: HashMap<(NodeId, u64), InboundId>,
    deadlines: BTreeSet<(Instant, InboundId)>,
    next_id: u64,
    stats: RpcStats,
}

impl core::fmt::Debug for Handler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handler")
            .field("inbound", &self.inbound)
            .finish_non_exhaustive()
    }
}

fn error(caller: NodeId, request_id: u64, code: ErrorCode, message: String) -> RpcOutput {
    RpcOutput::Answer {
        caller,
        message: Message::ErrorReply(ErrorReply {
            request_id,
            code,
            message,
        }),
    }
}

/// Takes one from the count under `key`, dropping the entry at zero.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Handler {
    pub(crate) fn new(config: &RpcConfig) -> Self {
        Self {
            max_payload: config.max_payload,
            max_handlers: config.max_handlers,
            max_per_caller: config.max_handlers_per_caller,
            callers: config.callers.clone(),
            inbound: BTreeMap::new(),
            per_caller: HashMap::default(),
            per_procedure: HashMap::default(),
            by_request: HashMap::default(),
            deadlines: BTreeSet::new(),
            next_id: 0,
            stats: RpcStats::default(),
        }
    }

    /// Sets the callback of the callers' access list (its rules stay).
    pub(crate) fn set_authorizer(&mut self, authorize: impl Authorize + 'static) {
        self.callers = std::mem::take(&mut self.callers).check(authorize);
    }

    pub(crate) fn stats(&self) -> RpcStats {
        self.stats
    }

    pub(crate) fn handling(&self) -> usize {
        self.inbound.len()
    }

    pub(crate) fn handle_call(
        &mut self,
        now: Instant,
        caller: NodeId,
        call: Call,
        registered: Option<RegisterOptions>,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let request_id = call.request_id;
        if self.by_request.contains_key(&(caller, request_id)) {
            tracing::debug!(
                ?caller,
                request_id,
                "CALL reuses an open request id; ignored"
            );
            return;
        }
        if let Some((code, message)) = self.refusal(&caller, &call, registered) {
            self.stats.refused += 1;
            out.push(error(caller, request_id, code, message));
            return;
        }
        self.stats.handled += 1;
        let id = InboundId(self.next_id);
        self.next_id += 1;
        let deadline =
            (call.timeout_ms > 0).then(|| now + Duration::from_millis(u64::from(call.timeout_ms)));
        if let Some(at) = deadline {
            self.deadlines.insert((at, id));
        }
        self.inbound.insert(
            id,
            Inbound {
                caller,
                procedure: call.procedure.clone(),
                request_id,
                deadline,
            },
        );
        self.by_request.insert((caller, request_id), id);
        *self.per_caller.entry(caller).or_default() += 1;
        *self
            .per_procedure
            .entry(call.procedure.clone())
            .or_default() += 1;
        out.push(RpcOutput::Event(RpcEvent::Request {
            id,
            caller,
            procedure: call.procedure,
            payload: call.payload,
        }));
    }

    /// Why `call` from `caller` is refused, if it is (the checks in the
    /// module docs' order), counted by reason.
    fn refusal(
        &mut self,
        caller: &NodeId,
        call: &Call,
        registered: Option<RegisterOptions>,
    ) -> Option<(ErrorCode, String)> {
        let refusals = &mut self.stats.refusals;
        let size = call.payload.len();
        let running = self.per_procedure.get(&call.procedure).copied();
        let limit = registered.map(|options| options.max_concurrent);
        let (counter, code, message) = if registered.is_none() {
            let message = format!("no procedure {:?}", call.procedure);
            let counter = &mut refusals.unknown_procedure;
            (counter, ErrorCode::UnknownProcedure, message)
        } else if size > self.max_payload {
            let message = format!("{size} bytes; the limit is {}", self.max_payload);
            (&mut refusals.too_large, ErrorCode::TooLarge, message)
        } else if !self.callers.allows(caller, &call.procedure) {
            let message = "not authorized".to_string();
            (&mut refusals.unauthorized, ErrorCode::Unauthorized, message)
        } else if self.inbound.len() >= self.max_handlers {
            let message = format!("{} calls in progress", self.max_handlers);
            (&mut refusals.overloaded, ErrorCode::Overloaded, message)
        } else if self.per_caller.get(caller).copied().unwrap_or(0) >= self.max_per_caller {
            let message = format!("{} calls of this caller in progress", self.max_per_caller);
            (&mut refusals.caller_share, ErrorCode::Overloaded, message)
        } else if let Some(limit) = limit
            && running.unwrap_or(0) >= limit
        {
            let message = format!("{} already has {limit} calls in progress", call.procedure);
            (
                &mut refusals.procedure_limit,
                ErrorCode::Overloaded,
                message,
            )
        } else {
            return None;
        };
        *counter += 1;
        Some((code, message))
    }

    fn remove(&mut self, id: InboundId) -> Option<Inbound> {
        let inbound = self.inbound.remove(&id)?;
        self.by_request
            .remove(&(inbound.caller, inbound.request_id));
        release(&mut self.per_caller, &inbound.caller);
        release(&mut self.per_procedure, &inbound.procedure);
        if let Some(at) = inbound.deadline {
            self.deadlines.remove(&(at, id));
        }
        Some(inbound)
    }

    pub(crate) fn reply(
        &mut self,
        id: InboundId,
        result: Result<Bytes, HandlerError>,
        out: &mut OutputQueue<RpcOutput>,
    ) -> Result<(), RpcError> {
        let inbound = self.remove(id).ok_or(RpcError::UnknownCall(id.0))?;
        let (caller, request_id) = (inbound.caller, inbound.request_id);
        match result {
            Ok(payload) if payload.len() > self.max_payload => {
                let (size, max) = (payload.len(), self.max_payload);
                let detail = format!("reply of {size} bytes; the limit is {max}");
                out.push(error(caller, request_id, ErrorCode::TooLarge, detail));
                Err(RpcError::TooLarge { size, max })
            }
            Ok(payload) => {
                out.push(RpcOutput::Answer {
                    caller,
                    message: Message::Reply(Reply {
                        request_id,
                        payload,
                    }),
                });
                Ok(())
            }
            Err(HandlerError { code, message }) => {
                out.push(error(caller, request_id, code, message));
                Ok(())
            }
        }
    }

    pub(crate) fn handle_cancel(
        &mut self,
        caller: NodeId,
        request_id: u64,
        out: &mut OutputQueue<RpcOutput>,
    ) {
        let Some(&id) = self.by_request.get(&(caller, request_id)) else {
            return;
        };
        self.remove(id);
        out.push(RpcOutput::Event(RpcEvent::Cancelled {
            id,
            reason: CancelReason::Caller,
        }));
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut OutputQueue<RpcOutput>) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let Some(inbound) = self.remove(id) else {
                continue;
            };
            let detail = "the call's deadline passed".to_string();
            out.push(error(
                inbound.caller,
                inbound.request_id,
                ErrorCode::Timeout,
                detail,
            ));
            out.push(RpcOutput::Event(RpcEvent::Cancelled {
                id,
                reason: CancelReason::Deadline,
            }));
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }
}
