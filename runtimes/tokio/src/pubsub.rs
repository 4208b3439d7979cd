//! Pub/sub on a [`MaculaNode`]: [`MaculaNode::subscribe`] to a pattern and
//! receive matching publications from a [`Subscription`];
//! [`MaculaNode::publish`] on a topic.
//!
//! **Slow subscriptions.** Each [`Subscription`] keeps up to its capacity
//! of publications (default [`DEFAULT_SUBSCRIPTION_CAPACITY`]) that the
//! application has not taken yet. When it falls further behind, the
//! **oldest** are dropped and counted ([`Subscription::dropped`]): the node
//! never waits for a slow application, as the core never waits for a slow
//! remote subscriber (whose queue drops the oldest too).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use macula::id::NodeId;
use macula::pubsub::{Pattern, PubSubError, SubscriberId, Topic, TopicError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;

use crate::events::poll_skipping;
use crate::handle::MaculaNode;
use crate::routes::{Notice, Order};

/// Publications a [`Subscription`] keeps for the application unless
/// [`MaculaNode::subscribe_with_capacity`] says otherwise.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;

/// One message on a topic a subscription matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The topic it was published on.
    pub topic: Topic,
    /// The payload.
    pub payload: Bytes,
    /// Who published it (this node for its own publications).
    pub publisher: NodeId,
    /// The publisher's id of the message (increasing per publisher).
    pub message_id: u64,
}

/// Why [`MaculaNode::subscribe`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern is not valid.
    #[error("bad pattern: {0}")]
    BadPattern(TopicError),
    /// The node refused (it has its maximum of subscriptions).
    #[error(transparent)]
    PubSub(#[from] PubSubError),
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
}

/// Why [`MaculaNode::publish`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is not valid (no wildcards in a topic).
    #[error("bad topic: {0}")]
    BadTopic(TopicError),
    /// The node refused: the payload is over the limit, or too many
    /// publications wait for subscriber lookups.
    #[error(transparent)]
    PubSub(#[from] PubSubError),
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
}

/// The publications matching one pattern, from the moment
/// [`MaculaNode::subscribe`] resolved. Receive them with
/// [`Subscription::recv`] or as a [`Stream`]; both end when the node shuts
/// down. Dropping it unsubscribes: it is one of the core node's local
/// subscribers (`macula::node::Node::subscribe`), which share one
/// subscription per pattern, withdrawn when the last of them goes.
#[must_use = "dropping a Subscription unsubscribes"]
pub struct Subscription {
    pattern: Pattern,
    id: SubscriberId,
    inner: BroadcastStream<Publication>,
    notices: mpsc::UnboundedSender<Notice>,
    dropped: u64,
}

impl Subscription {
    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The next publication; `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Publication> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Publications dropped because this subscription fell more than its
    /// capacity behind (the oldest go first).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Stream for Subscription {
    type Item = Publication;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Publication>> {
        let this = &mut *self;
        poll_skipping(&mut this.inner, cx, &mut this.dropped)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Fails only when the node has stopped.
        let _ = self.notices.send(Notice::Unsubscribe {
            subscription: self.id,
        });
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl MaculaNode {
    /// Subscribes to `pattern` (`*` matches one segment, `#` the rest) with
    /// the default capacity ([`DEFAULT_SUBSCRIPTION_CAPACITY`]). The node
    /// announces a subscriber record in the DHT; publishers that looked the
    /// topic up before it arrived deliver here once their cache expires.
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use macula_tokio::MaculaNode;
    ///
    /// # async fn demo(subscriber: MaculaNode, publisher: MaculaNode) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut sensors = subscriber.subscribe("sensors.*.temperature").await?;
    /// publisher.publish("sensors.kitchen.temperature", Bytes::from_static(b"21.5")).await?;
    /// if let Some(publication) = sensors.recv().await {
    ///     println!("{} from {:?}: {:?}", publication.topic, publication.publisher, publication.payload);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, SubscribeError> {
        self.subscribe_with_capacity(pattern, DEFAULT_SUBSCRIPTION_CAPACITY)
            .await
    }

    /// [`MaculaNode::subscribe`] keeping up to `capacity` (at least 1)
    /// publications for a slow application.
    pub async fn subscribe_with_capacity(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<Subscription, SubscribeError> {
        let pattern = Pattern::new(pattern).map_err(SubscribeError::BadPattern)?;
        let (sender, receiver) = broadcast::channel(capacity.max(1));
        let order = |reply| Order::Subscribe {
            pattern: pattern.clone(),
            sender,
            reply,
        };
        let id = self.ask(order).await.ok_or(SubscribeError::Stopped)??;
        Ok(Subscription {
            pattern,
            id,
            inner: BroadcastStream::new(receiver),
            notices: self.notices().clone(),
            dropped: 0,
        })
    }

    /// Publishes `payload` on `topic` to every subscriber whose pattern
    /// matches, this node's own subscriptions included. Resolves with the
    /// message id once the node has taken the publication (delivery goes on
    /// in the background: in order per publisher, no duplicates).
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<u64, PublishError> {
        let topic = Topic::new(topic).map_err(PublishError::BadTopic)?;
        let order = |reply| Order::Publish {
            topic,
            payload,
            reply: Some(reply),
        };
        self.ask(order).await.ok_or(PublishError::Stopped)?
    }

    /// Publishes as [`MaculaNode::publish`] does, but resolves as soon as the
    /// publication is queued for the node, without waiting for it to be
    /// taken: a publisher that does not need the message id is not held to
    /// one round trip to the node task per publication (a burst of them is
    /// taken in one turn). The queue is bounded, so a node that falls behind
    /// slows the publisher down. Ordering and delivery are those of
    /// [`MaculaNode::publish`]; a publication the node refuses (payload over
    /// the limit, too many waiting for subscriber lookups) is dropped and
    /// counted in `pubsub_publish_refused_total` of its metrics.
    pub async fn publish_unconfirmed(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> Result<(), PublishError> {
        let topic = Topic::new(topic).map_err(PublishError::BadTopic)?;
        let order = Order::Publish {
            topic,
            payload,
            reply: None,
        };
        self.tell(order).await.ok_or(PublishError::Stopped)
    }

    /// Publishes every payload of `payloads` on `topic`, in their order, as
    /// [`MaculaNode::publish_unconfirmed`] would one by one, in one order to
    /// the node task: a publisher with a burst at hand wakes the task once
    /// for all of it rather than once per publication (the node encodes and
    /// sends them in the same turn). Resolves once the batch is queued for
    /// the node; refusals are counted as for
    /// [`MaculaNode::publish_unconfirmed`]. An empty batch does nothing.
    pub async fn publish_batch(
        &self,
        topic: &str,
        payloads: Vec<Bytes>,
    ) -> Result<(), PublishError> {
        let topic = Topic::new(topic).map_err(PublishError::BadTopic)?;
        if payloads.is_empty() {
            return Ok(());
        }
        let order = Order::PublishBatch { topic, payloads };
        self.tell(order).await.ok_or(PublishError::Stopped)
    }
}
