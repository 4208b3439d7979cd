//! The task that owns a [`Node`] and its [`Driver`]: it applies the
//! handles' commands, answers each when the DHT reports the operation it
//! started (matched by [`QueryId`]), hands messaging orders, notices and
//! events to its [`Routes`], and publishes every event.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use macula::dht::{Contact, DhtError, DhtEvent, QueryId};
use macula::id::{NodeId, RecordKey};
use macula::node::{Event, Node, NodeStats};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock;
use crate::driver::Driver;
use crate::routes::{Notice, Order, Routes};

/// Where the outcome of a DHT operation goes.
pub(crate) type Reply = oneshot::Sender<Result<DhtEvent, DhtError>>;

/// What a handle asks the task to do.
pub(crate) enum Command {
    /// Start a DHT operation and answer `reply` when it finishes.
    Dht { operation: Operation, reply: Reply },
    /// An RPC or pub/sub order.
    Messaging(Order),
    /// Report the node's state now.
    Inspect { reply: oneshot::Sender<NodeStats> },
    /// Stop; `done` is answered once the node no longer runs.
    Shutdown { done: oneshot::Sender<()> },
}

/// A DHT operation, as the node's commands take it.
pub(crate) enum Operation {
    Bootstrap(Vec<Contact>),
    FindNode(NodeId),
    Query {
        key: RecordKey,
        timeout: Duration,
    },
    Store {
        key: RecordKey,
        value: Bytes,
        timeout: Duration,
    },
}

/// What reaches the task: the handles' commands (bounded) and notices
/// (see [`crate::routes`]).
pub(crate) struct Inbox {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) notices: mpsc::UnboundedReceiver<Notice>,
}

/// What woke the task besides the socket and the timer.
enum Mail {
    Command(Option<Command>),
    Notice(Notice),
}

/// Mails (commands and notices) one wake-up takes at most before the
/// node's outputs go out, so calls made at once leave in one batch.
const MAILS_PER_TURN: usize = 64;

impl Inbox {
    /// The next notice or command, notices first (they free resources).
    async fn next(&mut self) -> Mail {
        tokio::select! {
            biased;
            Some(notice) = self.notices.recv() => Mail::Notice(notice),
            command = self.commands.recv() => Mail::Command(command),
        }
    }

    /// A notice or command that is already waiting, if any.
    fn ready(&mut self) -> Option<Mail> {
        if let Ok(notice) = self.notices.try_recv() {
            return Some(Mail::Notice(notice));
        }
        match self.commands.try_recv() {
            Ok(command) => Some(Mail::Command(Some(command))),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Mail::Command(None)),
        }
    }
}

/// The node task's state besides the driver.
struct Desk {
    routes: Routes,
    pending: BTreeMap<QueryId, Reply>,
}

/// Why the task stops: a handle's shutdown (answered on the sender) or
/// every handle gone.
type Stop = Option<oneshot::Sender<()>>;

impl Desk {
    /// Acts on one mail; `Some` when the task must stop.
    fn take(&mut self, node: &mut Node, mail: Mail) -> Option<Stop> {
        let command = match mail {
            Mail::Notice(notice) => {
                self.routes.notice(node, notice);
                return None;
            }
            Mail::Command(command) => command,
        };
        match command {
            Some(Command::Shutdown { done }) => return Some(Some(done)),
            Some(Command::Inspect { reply }) => {
                // The caller may have stopped waiting.
                let _ = reply.send(node.stats());
            }
            Some(Command::Dht { operation, reply }) => {
                start(node, &mut self.pending, operation, reply);
            }
            Some(Command::Messaging(order)) => self.routes.order(node, order),
            None => return Some(None),
        }
        None
    }
}

/// Runs the node until a handle says [`Command::Shutdown`] or every handle
/// is gone.
pub(crate) async fn run(
    mut driver: Driver<Node>,
    mut inbox: Inbox,
    routes: Routes,
    events: broadcast::Sender<Event>,
) {
    let mut desk = Desk {
        routes,
        pending: BTreeMap::new(),
    };
    let done = 'run: loop {
        driver.flush().await;
        while let Some(event) = driver.pop_event() {
            route(driver.machine_mut(), &mut desk.routes, &event);
            publish(&mut desk.pending, &events, event);
        }
        let Some(first) = driver.turn(inbox.next()).await else {
            continue;
        };
        // The mails of one turn are one input of the node: what they make
        // it send leaves together (calls made at once share packets).
        let stop = driver.machine_mut().batch(clock::now(), |node| {
            let mut mail = Some(first);
            for _ in 0..MAILS_PER_TURN {
                let next = mail.take().or_else(|| inbox.ready())?;
                if let Some(stop) = desk.take(node, next) {
                    return Some(stop);
                }
            }
            None
        });
        if let Some(stop) = stop {
            break 'run stop;
        }
    };
    let (calls, handlers) = desk.routes.open();
    tracing::debug!(
        waiting = desk.pending.len(),
        calls,
        handlers,
        "node stopped"
    );
    if done.is_some() {
        // Asked to stop: delete the port mapping and tell every peer
        // (DISCONNECT and CONNECTION_CLOSE) rather than leaving them to
        // find out by idle timeout.
        driver.machine_mut().shutdown(clock::now());
        driver.flush().await;
    }
    drop(driver);
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// Starts `operation` and remembers to answer `reply` when it finishes.
fn start(
    node: &mut Node,
    pending: &mut BTreeMap<QueryId, Reply>,
    operation: Operation,
    reply: Reply,
) {
    let now = clock::now();
    let started = match operation {
        Operation::Bootstrap(seeds) => Ok(node.bootstrap(now, seeds)),
        Operation::FindNode(target) => Ok(node.find_node(now, target)),
        Operation::Query { key, timeout } => Ok(node.query(now, key, timeout)),
        Operation::Store {
            key,
            value,
            timeout,
        } => node.store(now, key, value, timeout),
    };
    match started {
        Ok(query) => {
            pending.insert(query, reply);
        }
        Err(error) => {
            let _ = reply.send(Err(error));
        }
    }
}

/// Hands an RPC or pub/sub event to the routes.
fn route(node: &mut Node, routes: &mut Routes, event: &Event) {
    match event {
        Event::Rpc(rpc) => routes.rpc_event(node, rpc),
        Event::PubSub(pubsub) => routes.pubsub_event(node, pubsub),
        _ => {}
    }
}

/// Answers the command that started the operation `event` reports, if one
/// did, and hands the event to every subscriber.
fn publish(
    pending: &mut BTreeMap<QueryId, Reply>,
    events: &broadcast::Sender<Event>,
    event: Event,
) {
    if let Event::Dht(dht) = &event
        && let Some(reply) = pending.remove(&query_of(dht))
    {
        // The caller may have stopped waiting; that is its business.
        let _ = reply.send(Ok(dht.clone()));
    }
    // Fails only when nobody subscribed.
    let _ = events.send(event);
}

/// The operation a DHT event reports on.
fn query_of(event: &DhtEvent) -> QueryId {
    match event {
        DhtEvent::NodesFound { query, .. }
        | DhtEvent::ValuesFound { query, .. }
        | DhtEvent::StoreConfirmed { query, .. }
        | DhtEvent::Bootstrapped { query, .. } => *query,
    }
}
