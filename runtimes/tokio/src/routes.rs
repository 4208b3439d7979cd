//! The node task's side of RPC and pub/sub: it carries out the handles'
//! messaging orders on the [`Node`] and routes the node's RPC and pub/sub
//! events to the call waiting for them, the registered handler or the
//! subscriptions the node names for a message. The rules (a procedure's
//! concurrency limit, one registration per procedure, subscribers of a
//! pattern sharing its subscription) are the node's; this keeps only what
//! ties them to tasks and channels.
//!
//! Two channels reach the task: the bounded command channel (orders from
//! the handles, which wait when it is full) and an unbounded notice channel
//! for what cannot wait: guards being dropped (unregister, unsubscribe,
//! cancel a call) and handlers' answers. Notices are bounded by what
//! produces them: one per guard and one per running handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use macula::id::NodeId;
use macula::node::Node;
use macula::pubsub::{Pattern, PubSubEvent, SubscriberId, Topic};
use macula::rpc::{self, CallId, HandlerError, InboundId, RpcEvent};
use macula::wire::ErrorCode;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::pubsub::{Publication, PublishError, SubscribeError};
use crate::rpc::{CallError, CallOptions, Handler, ProcedureOptions, RegisterError, Request};

/// A messaging order from a handle.
pub(crate) enum Order {
    /// Serve `procedure` with `handler`; answers the registration's id.
    Register {
        procedure: String,
        options: ProcedureOptions,
        handler: Handler,
        reply: oneshot::Sender<Result<u64, RegisterError>>,
    },
    /// Call `procedure`; `ticket` names the call for [`Notice::CancelCall`].
    Call {
        ticket: u64,
        procedure: String,
        payload: Bytes,
        options: CallOptions,
        reply: oneshot::Sender<Result<Bytes, CallError>>,
    },
    /// Deliver publications matching `pattern` to `sender`; answers the
    /// subscription's id.
    Subscribe {
        pattern: Pattern,
        sender: broadcast::Sender<Publication>,
        reply: oneshot::Sender<Result<SubscriberId, SubscribeError>>,
    },
    /// Publish `payload` on `topic`; answers the message id, unless
    /// unconfirmed (`None`: a refusal is counted in the node's metrics).
    Publish {
        topic: Topic,
        payload: Bytes,
        reply: Option<oneshot::Sender<Result<u64, PublishError>>>,
    },
    /// Publish each of `payloads` on `topic`, in order, unconfirmed.
    PublishBatch { topic: Topic, payloads: Vec<Bytes> },
}

/// What the task must hear about without waiting.
pub(crate) enum Notice {
    /// A handler finished (or its task ended without an answer).
    Answer {
        inbound: InboundId,
        result: Result<Bytes, HandlerError>,
    },
    /// A registration was dropped or unregistered; `done` hears when the
    /// node no longer serves it.
    Unregister {
        registration: u64,
        done: Option<oneshot::Sender<()>>,
    },
    /// A subscription was dropped.
    Unsubscribe { subscription: SubscriberId },
    /// A call's future was dropped before it ended.
    CancelCall { ticket: u64 },
}

/// A registered procedure's handler, and the registration it belongs to.
struct Served {
    registration: u64,
    handler: Handler,
}

/// What the task knows of RPC and pub/sub.
pub(crate) struct Routes {
    notices: mpsc::UnboundedSender<Notice>,
    next_registration: u64,
    /// Handlers by procedure.
    served: BTreeMap<String, Served>,
    /// Calls handled here and not yet answered or cancelled.
    handling: BTreeMap<InboundId, CancellationToken>,
    calls: BTreeMap<CallId, (u64, oneshot::Sender<Result<Bytes, CallError>>)>,
    tickets: BTreeMap<u64, CallId>,
    /// Where each of the node's local subscribers receives.
    subscriptions: BTreeMap<SubscriberId, broadcast::Sender<Publication>>,
}

impl Routes {
    /// Routes of a task whose handlers answer through `notices`.
    pub(crate) fn new(notices: mpsc::UnboundedSender<Notice>) -> Self {
        Self {
            notices,
            next_registration: 0,
            served: BTreeMap::new(),
            handling: BTreeMap::new(),
            calls: BTreeMap::new(),
            tickets: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
        }
    }

    /// Calls waiting for their outcome and handlers running, for the log.
    pub(crate) fn open(&self) -> (usize, usize) {
        (self.calls.len(), self.handling.len())
    }

    /// Carries out an order.
    pub(crate) fn order(&mut self, node: &mut Node, order: Order) {
        match order {
            Order::Register {
                procedure,
                options,
                handler,
                reply,
            } => {
                let registered = self.register(node, procedure, options, handler);
                let _ = reply.send(registered);
            }
            Order::Call {
                ticket,
                procedure,
                payload,
                options,
                reply,
            } => self.call(node, ticket, &procedure, payload, options, reply),
            Order::Subscribe {
                pattern,
                sender,
                reply,
            } => {
                let subscribed = self.subscribe(node, pattern, sender);
                let _ = reply.send(subscribed);
            }
            Order::Publish {
                topic,
                payload,
                reply,
            } => {
                let published = node.publish(clock::now(), topic, payload);
                if let Some(reply) = reply {
                    let _ = reply.send(published.map_err(PublishError::from));
                }
            }
            Order::PublishBatch { topic, payloads } => {
                // Refusals are counted by the node.
                let _ = node.publish_batch(clock::now(), &topic, payloads);
            }
        }
    }

    fn register(
        &mut self,
        node: &mut Node,
        procedure: String,
        options: ProcedureOptions,
        handler: Handler,
    ) -> Result<u64, RegisterError> {
        node.register(clock::now(), &procedure, options)?;
        self.next_registration += 1;
        let registration = self.next_registration;
        let served = Served {
            registration,
            handler,
        };
        self.served.insert(procedure, served);
        Ok(registration)
    }

    fn call(
        &mut self,
        node: &mut Node,
        ticket: u64,
        procedure: &str,
        payload: Bytes,
        options: CallOptions,
        reply: oneshot::Sender<Result<Bytes, CallError>>,
    ) {
        // The caller gave up while the order waited in the channel.
        if reply.is_closed() {
            return;
        }
        let core = rpc::CallOptions {
            at_most_once: options.at_most_once,
            attempt_timeout: options.attempt_timeout,
        };
        match node.call(clock::now(), procedure, payload, options.timeout, core) {
            Ok(call) => {
                self.tickets.insert(ticket, call);
                self.calls.insert(call, (ticket, reply));
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    fn subscribe(
        &mut self,
        node: &mut Node,
        pattern: Pattern,
        sender: broadcast::Sender<Publication>,
    ) -> Result<SubscriberId, SubscribeError> {
        let id = node.subscribe(clock::now(), pattern)?;
        self.subscriptions.insert(id, sender);
        Ok(id)
    }

    /// Acts on a notice.
    pub(crate) fn notice(&mut self, node: &mut Node, notice: Notice) {
        let now = clock::now();
        match notice {
            Notice::Answer { inbound, result } => {
                if self.handling.remove(&inbound).is_some()
                    && let Err(error) = node.reply(now, inbound, result)
                {
                    tracing::debug!(%error, "an answer was not sent");
                }
            }
            Notice::Unregister { registration, done } => {
                let procedure = (self.served.iter())
                    .find(|(_, served)| served.registration == registration)
                    .map(|(procedure, _)| procedure.clone());
                if let Some(procedure) = procedure {
                    self.served.remove(&procedure);
                    node.unregister(now, &procedure);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Notice::Unsubscribe { subscription } => {
                if self.subscriptions.remove(&subscription).is_some() {
                    node.unsubscribe(now, subscription);
                }
            }
            Notice::CancelCall { ticket } => {
                if let Some(call) = self.tickets.remove(&ticket) {
                    self.calls.remove(&call);
                    // Fails only when the call ended meanwhile.
                    let _ = node.cancel_call(now, call);
                }
            }
        }
    }

    /// Routes an RPC event: a call's outcome to its waiter, a request to its
    /// handler, a cancellation to the handler's token.
    pub(crate) fn rpc_event(&mut self, node: &mut Node, event: &RpcEvent) {
        match event {
            RpcEvent::Completed { call, result } => {
                if let Some((ticket, reply)) = self.calls.remove(call) {
                    self.tickets.remove(&ticket);
                    let _ = reply.send(result.clone().map_err(CallError::Rpc));
                }
            }
            RpcEvent::Request {
                id,
                caller,
                procedure,
                payload,
            } => {
                if let Err(refusal) = self.handle(*id, *caller, procedure, payload) {
                    let _ = node.reply(clock::now(), *id, Err(refusal));
                }
            }
            RpcEvent::Cancelled { id, .. } => {
                if let Some(cancel) = self.handling.remove(id) {
                    cancel.cancel();
                }
            }
            // The core announces again with backoff; the application hears
            // of it on `MaculaNode::events`.
            RpcEvent::RegistrationFailed { .. } => {}
        }
    }

    /// Starts the handler of `procedure` for a request the node let through
    /// (its limits are the node's), or says why not: the procedure was
    /// unregistered while the request waited (`unknown procedure`, so the
    /// caller may go elsewhere).
    fn handle(
        &mut self,
        inbound: InboundId,
        caller: NodeId,
        procedure: &str,
        payload: &Bytes,
    ) -> Result<(), HandlerError> {
        let Some(served) = self.served.get(procedure) else {
            let message = format!("{procedure} is no longer served here");
            let code = ErrorCode::UnknownProcedure;
            return Err(HandlerError { code, message });
        };
        let cancel = CancellationToken::new();
        let request = Request {
            caller,
            procedure: procedure.to_owned(),
            payload: payload.clone(),
            cancellation: cancel.clone(),
        };
        let answer = Answer {
            inbound,
            notices: Some(self.notices.clone()),
        };
        let handler = Arc::clone(&served.handler);
        self.handling.insert(inbound, cancel);
        tokio::spawn(async move {
            let result = handler(request).await;
            answer.send(result);
        });
        Ok(())
    }

    /// Hands a pub/sub event to every subscription the node names for it.
    pub(crate) fn pubsub_event(&self, node: &Node, event: &PubSubEvent) {
        // A failed announcement is retried by the core and reaches the
        // application on `MaculaNode::events`; only messages are routed.
        let PubSubEvent::Message {
            publisher,
            message_id,
            topic,
            payload,
        } = event
        else {
            return;
        };
        let publication = Publication {
            topic: topic.clone(),
            payload: payload.clone(),
            publisher: *publisher,
            message_id: *message_id,
        };
        for subscriber in node.subscribers_of(topic) {
            if let Some(sender) = self.subscriptions.get(&subscriber) {
                // Fails only when the subscription is being dropped.
                let _ = sender.send(publication.clone());
            }
        }
    }
}

/// A handler's way back to the task: it sends the handler's result, or, if
/// the handler's task ends without one (a panic, a runtime shutting down),
/// an error for the caller, so the call and the concurrency slot never leak.
struct Answer {
    inbound: InboundId,
    notices: Option<mpsc::UnboundedSender<Notice>>,
}

impl Answer {
    fn send(mut self, result: Result<Bytes, HandlerError>) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: Result<Bytes, HandlerError>) {
        if let Some(notices) = self.notices.take() {
            // Fails only when the node has stopped.
            let _ = notices.send(Notice::Answer {
                inbound: self.inbound,
                result,
            });
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.deliver(Err(HandlerError::failed(
            "the handler ended without an answer",
        )));
    }
}
