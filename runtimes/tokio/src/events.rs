//! The node's events as a [`Stream`]: every subscriber gets each event from
//! the moment it subscribed; one that falls more than the configured
//! capacity behind skips the oldest (logged and counted) rather than making
//! the node buffer without bound.

use std::pin::Pin;
use std::task::{Context, Poll};

use macula::node::Event;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// A subscription to a node's events; ends when the node shuts down.
pub struct Events {
    inner: BroadcastStream<Event>,
    skipped: u64,
}

impl Events {
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Self {
            inner: BroadcastStream::new(receiver),
            skipped: 0,
        }
    }

    /// The next event; `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Events this subscriber missed by falling behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        poll_skipping(&mut this.inner, cx, &mut this.skipped)
    }
}

/// The next item of a broadcast subscription, counting in `skipped` (and
/// logging) what it missed by falling behind.
pub(crate) fn poll_skipping<T: Clone + Send + 'static>(
    inner: &mut BroadcastStream<T>,
    cx: &mut Context<'_>,
    skipped: &mut u64,
) -> Poll<Option<T>> {
    loop {
        match Pin::new(&mut *inner).poll_next(cx) {
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                tracing::warn!(missed, "a subscriber fell behind; skipping the oldest");
                *skipped += missed;
            }
            Poll::Ready(Some(Ok(item))) => return Poll::Ready(Some(item)),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        }
    }
}
