//! The task that owns a [`Node`] and its [`Driver`]: it applies the
//! handles' commands, answers each when the DHT reports the operation it
//! started (matched by [`QueryId`]), hands messaging orders, notices and
//! events to its [`Routes`], and publishes every event.

use std::collections::BTreeMap;
use std::task::{Context, Poll, Waker};
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
    /// Commands taken off the channel in one go and not yet acted on, last
    /// first; empty between turns ([`Inbox::ready`] takes no more than a
    /// turn has room for, and acts on these before anything else).
    pub(crate) taken: Vec<Command>,
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
        debug_assert!(
            self.taken.is_empty(),
            "a turn acts on every command it took"
        );
        tokio::select! {
            biased;
            Some(notice) = self.notices.recv() => Mail::Notice(notice),
            command = self.commands.recv() => Mail::Command(command),
        }
    }

    /// A notice or command that is already waiting, if any, the turn having
    /// room for `room` more mails (at least 1).
    ///
    /// Commands leave the channel as many at a time as are waiting (up to
    /// `room`): the channel then frees their slots at once, so a sender
    /// waiting on the full channel is woken once for all of them rather
    /// than once per command (a publisher faster than the node parked and
    /// was woken for every single slot).
    fn ready(&mut self, room: usize) -> Option<Mail> {
        if let Some(command) = self.taken.pop() {
            // Taken commands first, so none is left over at the turn's end.
            return Some(Mail::Command(Some(command)));
        }
        if let Ok(notice) = self.notices.try_recv() {
            return Some(Mail::Notice(notice));
        }
        let mut context = Context::from_waker(Waker::noop());
        match (self.commands).poll_recv_many(&mut context, &mut self.taken, room) {
            Poll::Pending => return None,
            Poll::Ready(0) => return Some(Mail::Command(None)),
            Poll::Ready(_) => self.taken.reverse(),
        }
        self.taken.pop().map(|command| Mail::Command(Some(command)))
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
            for room in (1..=MAILS_PER_TURN).rev() {
                let next = mail.take().or_else(|| inbox.ready(room))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn find(i: u8) -> Command {
        let (reply, _) = oneshot::channel();
        let operation = Operation::FindNode(NodeId::from_bytes([i; 32]));
        Command::Dht { operation, reply }
    }

    fn target(mail: Mail) -> Option<u8> {
        match mail {
            Mail::Command(Some(Command::Dht {
                operation: Operation::FindNode(id),
                ..
            })) => Some(id.as_bytes()[0]),
            _ => None,
        }
    }

    fn inbox(capacity: usize) -> (mpsc::Sender<Command>, mpsc::UnboundedSender<Notice>, Inbox) {
        let (commands, receiver) = mpsc::channel(capacity);
        let (notices, notices_receiver) = mpsc::unbounded_channel();
        let inbox = Inbox {
            commands: receiver,
            notices: notices_receiver,
            taken: Vec::new(),
        };
        (commands, notices, inbox)
    }

    #[tokio::test]
    async fn waiting_commands_leave_the_channel_at_once_in_order_and_none_outlives_its_turn() {
        let (commands, _notices, mut inbox) = inbox(8);
        for i in 0..5 {
            commands.send(find(i)).await.unwrap();
        }
        assert_eq!(commands.capacity(), 3);
        // A turn with room for three: the first `ready` takes all three off
        // the channel (their slots free at once), the rest come from them.
        let first = inbox.ready(3).and_then(target);
        assert_eq!(first, Some(0));
        assert_eq!(commands.capacity(), 6, "three slots freed by one take");
        let rest: Vec<_> = [2, 1].map(|room| inbox.ready(room).and_then(target)).into();
        assert_eq!(rest, [Some(1), Some(2)]);
        assert!(inbox.taken.is_empty(), "nothing left for after the turn");
        // The next turn goes on where this one stopped; then nothing waits.
        let next: Vec<_> = [64, 63]
            .map(|room| inbox.ready(room).and_then(target))
            .into();
        assert_eq!(next, [Some(3), Some(4)]);
        assert!(inbox.ready(62).is_none());
        // Every handle gone: the task hears it.
        drop(commands);
        assert!(matches!(inbox.ready(64), Some(Mail::Command(None))));
    }

    #[tokio::test]
    async fn commands_taken_come_before_a_notice_that_arrived_meanwhile() {
        let (commands, notices, mut inbox) = inbox(8);
        for i in 0..2 {
            commands.send(find(i)).await.unwrap();
        }
        assert_eq!(inbox.ready(2).and_then(target), Some(0));
        notices
            .send(Notice::CancelCall { ticket: 7 })
            .expect("the inbox is there");
        assert_eq!(inbox.ready(1).and_then(target), Some(1));
        assert!(matches!(
            inbox.ready(64),
            Some(Mail::Notice(Notice::CancelCall { ticket: 7 }))
        ));
    }
}
