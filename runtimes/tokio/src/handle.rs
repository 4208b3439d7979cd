//! The application's side of a node: [`MaculaNode`], a cloneable handle to
//! the driver task, whose async commands resolve when their DHT operation
//! finishes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use macula::dht::{Contact, DhtEvent, QueryStats};
use macula::id::{NodeId, RecordKey};
use macula::metrics::Metrics;
use macula::node::{Event, Health, Node, NodeStats};
use macula::record::SignedRecord;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::Instrument;

use crate::clock;
use crate::config::MaculaConfig;
use crate::counters::{Counters, DriverCounters};
use crate::driver::Driver;
use crate::error::{BindError, CommandError};
use crate::events::Events;
use crate::metrics_http::MetricsServer;
use crate::random;
use crate::routes::{Notice, Order, Routes};
use crate::socket::Socket;
use crate::task::{self, Command, Operation};

/// A running macula node: a handle to its driver task. Clones share the
/// node; it shuts down on [`MaculaNode::shutdown`] or when the last clone is
/// dropped.
#[derive(Clone)]
pub struct MaculaNode {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// What every handle of one node knows without asking the task.
struct Shared {
    node_id: NodeId,
    local_addr: SocketAddr,
    contact: Contact,
    counters: Arc<Counters>,
    /// Never read: new subscriptions are cloned from it.
    events: broadcast::Receiver<Event>,
    /// The subscription made at bind, before the node ran, until
    /// [`MaculaNode::events_since_bind`] takes it.
    since_bind: Mutex<Option<broadcast::Receiver<Event>>>,
    /// The `/metrics` and `/health` server, if one was asked for.
    metrics_server: Option<MetricsServer>,
    /// What guards and handlers tell the task without waiting.
    notices: mpsc::UnboundedSender<Notice>,
    /// The next call's ticket.
    next_ticket: AtomicU64,
}

/// The answer to [`MaculaNode::find_node`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundNodes {
    /// The closest nodes that answered, closest first (at most k).
    pub closest: Vec<Contact>,
    /// How the lookup went.
    pub stats: QueryStats,
}

/// The answer to [`MaculaNode::query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundValues {
    /// Verified, live records, one per provider.
    pub records: Vec<SignedRecord>,
    /// The nodes that answered.
    pub answered: Vec<NodeId>,
    /// Served from the local cache without a network query.
    pub from_cache: bool,
    /// How the lookup went.
    pub stats: QueryStats,
}

/// The answer to [`MaculaNode::store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreReceipt {
    /// The nodes that acknowledged the record.
    pub acked: Vec<NodeId>,
    /// Acknowledgements that were needed.
    pub quorum: usize,
    /// `acked.len() >= quorum`.
    pub success: bool,
}

impl MaculaNode {
    /// Binds the node's UDP socket, starts the node and spawns its driver
    /// task on the current tokio runtime.
    pub async fn bind(config: MaculaConfig) -> Result<Self, BindError> {
        let socket = Socket::bind(config.bind).map_err(|source| BindError::Socket {
            addr: config.bind,
            source,
        })?;
        let local_addr = socket.local_addr();
        let mut node_config = config.node;
        if node_config.listen_addrs.is_empty() {
            if local_addr.ip().is_unspecified() {
                tracing::warn!(%local_addr, "bound an unspecified address and no listen_addrs: peers cannot dial back");
            } else {
                node_config.listen_addrs = vec![local_addr];
            }
        }
        let identity = match config.identity {
            Some(identity) => identity,
            None => random::identity().map_err(BindError::Random)?,
        };
        let secret = match config.secret {
            Some(secret) => secret,
            None => random::secret().map_err(BindError::Random)?,
        };
        let node = Node::new(
            node_config,
            identity,
            secret,
            clock::now(),
            clock::unix_ms(),
        )?;
        let node_id = node.node_id();
        let contact = node.contact();
        let mut driver = Driver::with_socket(socket, node);
        driver.set_datagrams_per_turn(config.datagrams_per_turn);
        let counters = driver.shared_counters();
        let (commands, receiver) = mpsc::channel(config.command_capacity.max(1));
        let metrics_server = match config.metrics_addr {
            Some(addr) => Some(
                MetricsServer::start(addr, commands.downgrade())
                    .await
                    .map_err(|source| BindError::Metrics { addr, source })?,
            ),
            None => None,
        };
        let (events_sender, events) = broadcast::channel(config.event_capacity.max(1));
        let since_bind = Mutex::new(Some(events.resubscribe()));
        let (notices, notices_receiver) = mpsc::unbounded_channel();
        let routes = Routes::new(notices.clone());
        let span = tracing::info_span!("macula_node", node = ?node_id, local = %local_addr);
        let inbox = task::Inbox {
            commands: receiver,
            notices: notices_receiver,
            taken: Vec::new(),
        };
        tokio::spawn(task::run(driver, inbox, routes, events_sender).instrument(span));
        Ok(Self {
            commands,
            shared: Arc::new(Shared {
                node_id,
                local_addr,
                contact,
                counters,
                events,
                since_bind,
                metrics_server,
                notices,
                next_ticket: AtomicU64::new(0),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The contact others bootstrap from: the node id and its announced
    /// addresses.
    pub fn contact(&self) -> Contact {
        self.shared.contact.clone()
    }

    /// What the driver counted so far.
    pub fn counters(&self) -> DriverCounters {
        self.shared.counters.snapshot()
    }

    /// The node's counters, connections, routing-table size and metrics now
    /// ([`Node::stats`]).
    pub async fn stats(&self) -> Result<NodeStats, CommandError> {
        let (reply, answer) = oneshot::channel();
        let asked = self.commands.send(Command::Inspect { reply }).await;
        asked.map_err(|_| CommandError::Stopped)?;
        answer.await.map_err(|_| CommandError::Stopped)
    }

    /// The node's health now, by the core's rules ([`Health::assess`] of
    /// [`MaculaNode::stats`] at this moment); [`Health::stopped`] once the
    /// node has shut down. `/health` answers the same.
    pub async fn health(&self) -> Health {
        match self.stats().await {
            Ok(stats) => Health::assess(&stats, clock::now()),
            Err(_stopped) => Health::stopped(),
        }
    }

    /// The node's metrics now (a snapshot).
    pub async fn metrics(&self) -> Result<Metrics, CommandError> {
        Ok(self.stats().await?.metrics)
    }

    /// Where `/metrics` and `/health` are served (the bound address, when
    /// [`MaculaConfig::metrics_addr`] asked for one).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shared.metrics_server.as_ref().map(MetricsServer::addr)
    }

    /// A subscription to every event from now on.
    pub fn events(&self) -> Events {
        Events::new(self.shared.events.resubscribe())
    }

    /// The subscription made when the node was bound, holding every event
    /// since (the port mapping granted at start, the first connections),
    /// for the first caller only; `None` afterwards. Events past
    /// [`MaculaConfig::event_capacity`] unread are dropped oldest first
    /// (counted in [`Events::skipped`], as with [`MaculaNode::events`]).
    pub fn events_since_bind(&self) -> Option<Events> {
        let mut slot = match self.shared.since_bind.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        slot.take().map(Events::new)
    }

    /// Joins the DHT through `seeds`; resolves with the routing-table size
    /// once the self-lookup finished (bucket refreshes continue).
    pub async fn bootstrap(&self, seeds: Vec<Contact>) -> Result<usize, CommandError> {
        match self.run(Operation::Bootstrap(seeds)).await? {
            DhtEvent::Bootstrapped { table_size, .. } => Ok(table_size),
            other => Err(unexpected(other)),
        }
    }

    /// Looks up the nodes closest to `target`.
    pub async fn find_node(&self, target: NodeId) -> Result<FoundNodes, CommandError> {
        match self.run(Operation::FindNode(target)).await? {
            DhtEvent::NodesFound { closest, stats, .. } => Ok(FoundNodes { closest, stats }),
            other => Err(unexpected(other)),
        }
    }

    /// Looks up the records under `key`, waiting at most `timeout`.
    pub async fn query(
        &self,
        key: RecordKey,
        timeout: Duration,
    ) -> Result<FoundValues, CommandError> {
        match self.run(Operation::Query { key, timeout }).await? {
            DhtEvent::ValuesFound {
                records,
                answered,
                from_cache,
                stats,
                ..
            } => Ok(FoundValues {
                records,
                answered,
                from_cache,
                stats,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes a record of `value` under `key`, signed by this node, and
    /// resolves with the nodes that acknowledged it within `timeout`.
    pub async fn store(
        &self,
        key: RecordKey,
        value: Bytes,
        timeout: Duration,
    ) -> Result<StoreReceipt, CommandError> {
        match self
            .run(Operation::Store {
                key,
                value,
                timeout,
            })
            .await?
        {
            DhtEvent::StoreConfirmed {
                acked,
                quorum,
                success,
                ..
            } => Ok(StoreReceipt {
                acked,
                quorum,
                success,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Stops the node and waits until its task has ended. Commands still
    /// waiting fail with [`CommandError::Stopped`]; event streams end.
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            // An error means the task already ended: stopped either way.
            let _ = stopped.await;
        }
    }

    /// Sends the messaging order `order` makes around its reply channel to
    /// the task and waits for the answer; `None` when the node stopped first.
    pub(crate) async fn ask<T>(
        &self,
        order: impl FnOnce(oneshot::Sender<T>) -> Order,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Messaging(order(reply));
        self.commands.send(command).await.ok()?;
        answer.await.ok()
    }

    /// Queues `order` for the task without waiting for an answer; `None`
    /// when the node has stopped.
    pub(crate) async fn tell(&self, order: Order) -> Option<()> {
        self.commands.send(Command::Messaging(order)).await.ok()
    }

    /// The channel guards and handlers reach the task on.
    pub(crate) fn notices(&self) -> &mpsc::UnboundedSender<Notice> {
        &self.shared.notices
    }

    /// A fresh ticket naming a call.
    pub(crate) fn next_ticket(&self) -> u64 {
        self.shared.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `operation` to the task and waits for the event that ends it.
    async fn run(&self, operation: Operation) -> Result<DhtEvent, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Dht { operation, reply })
            .await
            .map_err(|_| CommandError::Stopped)?;
        Ok(answer.await.map_err(|_| CommandError::Stopped)??)
    }
}

fn unexpected(event: DhtEvent) -> CommandError {
    CommandError::UnexpectedEvent(format!("{event:?}"))
}
