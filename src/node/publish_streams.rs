//! Pub/sub on streams: the PUBLISH frames for one subscriber travel in
//! order on one long-lived stream the publisher opens on a pooled
//! connection (docs/PROTOCOL.md §2). The stream holds its lease for its life,
//! so the pool does not close a connection a subscriber is fed on. A frame
//! counts as written for the [`PubSub`] machine's send window once QUIC took
//! all of it; when the connection or the stream goes, the machine hears
//! that the subscriber disconnected.
//!
//! [`PubSub`]: crate::pubsub::PubSub

use std::time::Instant;

use quinn_proto::{ConnectionHandle, StreamId};

use super::Node;
use super::messaging::Errand;
use crate::id::NodeId;
use crate::pool::Lease;
use crate::wire::{Message, Publish};

/// The publish stream to one subscriber.
pub(super) enum Outlet {
    /// Waiting for the subscriber's address or a connection, with the
    /// frames to write once there.
    Reaching(Vec<Publish>),
    /// Open.
    Open {
        handle: ConnectionHandle,
        stream: StreamId,
        lease: Lease,
        /// The epochs and message ids of the frames QUIC has not taken in
        /// full yet.
        unwritten: Vec<(u64, u64)>,
    },
}

impl Outlet {
    fn is_on(&self, at: ConnectionHandle, on: StreamId) -> bool {
        matches!(self, Outlet::Open { handle, stream, .. } if *handle == at && *stream == on)
    }
}

impl Node {
    /// The machine hands a PUBLISH frame for `subscriber`.
    pub(super) fn publish_to(&mut self, now: Instant, subscriber: NodeId, message: Publish) {
        match self.messaging.outlets.get_mut(&subscriber) {
            Some(Outlet::Reaching(frames)) => frames.push(message),
            Some(Outlet::Open { .. }) => self.write_publish(now, subscriber, message),
            None => {
                let outlet = Outlet::Reaching(vec![message]);
                self.messaging.outlets.insert(subscriber, outlet);
                self.reach(now, subscriber, Errand::Publish(subscriber));
            }
        }
    }

    /// A connection to a subscriber: open its stream and write what waited.
    pub(super) fn open_outlet(&mut self, now: Instant, subscriber: NodeId, lease: Lease) {
        let Some(Outlet::Reaching(frames)) = self.messaging.outlets.get_mut(&subscriber) else {
            self.pool.release(now, lease);
            return;
        };
        let frames = std::mem::take(frames);
        let opened = self.by_pool_id.get(&lease.conn()).and_then(|&handle| {
            let stream = self.conns.get_mut(&handle)?.open()?;
            Some((handle, stream))
        });
        let Some((handle, stream)) = opened else {
            self.pool.release(now, lease);
            self.messaging.outlets.remove(&subscriber);
            self.pubsub.handle_unreachable(now, subscriber);
            return;
        };
        let outlet = Outlet::Open {
            handle,
            stream,
            lease,
            unwritten: Vec::new(),
        };
        self.messaging.outlets.insert(subscriber, outlet);
        for frame in frames {
            self.write_publish(now, subscriber, frame);
        }
    }

    fn write_publish(&mut self, now: Instant, subscriber: NodeId, message: Publish) {
        let Some(Outlet::Open {
            handle,
            stream,
            unwritten,
            ..
        }) = self.messaging.outlets.get_mut(&subscriber)
        else {
            return;
        };
        let Some(conn) = self.conns.get_mut(handle) else {
            return;
        };
        unwritten.push((message.epoch, message.message_id));
        if let Err(error) = conn.send(*stream, &Message::Publish(message), false) {
            // Payloads are bounded below the frame limit; should a frame not
            // encode, it is lost like one dropped from a full queue.
            tracing::warn!(%error, "PUBLISH not encoded");
            self.counters.protocol_errors += 1;
        }
        let (handle, stream) = (*handle, *stream);
        self.publish_flushed(now, handle, stream);
    }

    /// `stream` may have taken more bytes: if it is a publish stream and
    /// everything written is out, the machine hears of each frame.
    pub(super) fn publish_flushed(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
    ) {
        if !self
            .conns
            .get(&handle)
            .is_some_and(|conn| conn.is_flushed(stream))
        {
            return;
        }
        let outlet = self
            .messaging
            .outlets
            .iter_mut()
            .find(|(_, outlet)| outlet.is_on(handle, stream));
        let Some((&subscriber, Outlet::Open { unwritten, .. })) = outlet else {
            return;
        };
        for (epoch, message_id) in std::mem::take(unwritten) {
            self.instruments.publish_written(now, message_id);
            self.pubsub.handle_written(now, subscriber, epoch);
        }
    }

    /// The peer reset or stopped a stream: if it is a publish stream, its
    /// subscriber is disconnected.
    pub(super) fn outlet_gone(&mut self, now: Instant, handle: ConnectionHandle, stream: StreamId) {
        let gone = self
            .messaging
            .outlets
            .iter()
            .find(|(_, outlet)| outlet.is_on(handle, stream))
            .map(|(subscriber, _)| *subscriber);
        if let Some(subscriber) = gone {
            self.close_outlet(now, subscriber);
        }
    }

    /// A connection is going away: the subscriber fed on it, if any, is
    /// disconnected; returns it.
    pub(super) fn release_outlet(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
    ) -> Option<NodeId> {
        let gone = self
            .messaging
            .outlets
            .iter()
            .find(|(_, outlet)| matches!(outlet, Outlet::Open { handle: h, .. } if *h == handle))
            .map(|(subscriber, _)| *subscriber)?;
        self.close_outlet(now, gone);
        Some(gone)
    }

    fn close_outlet(&mut self, now: Instant, subscriber: NodeId) {
        if let Some(Outlet::Open { lease, .. }) = self.messaging.outlets.remove(&subscriber) {
            self.pool.release(now, lease);
        }
        self.pubsub.handle_disconnected(now, subscriber);
    }
}
