//! Publish streams ("outlets"): the PUBLISH frames for one subscriber travel
//! in order on one long-lived stream the publisher opens on a pooled
//! connection (docs/PROTOCOL.md §2). The stream holds its lease for its life,
//! so the pool does not close a connection a subscriber is fed on. A frame
//! counts as written for the [`PubSub`] machine's send window once QUIC took
//! all of it.
//!
//! **Policy when an outlet goes.** Frames handed over while the subscriber
//! is being reached wait in the outlet and go once its stream is open. When
//! no connection or no stream can be had, those frames are dropped and the
//! machine hears that the subscriber is unreachable (it then drops, and
//! counts, messages for it for a while). When the stream or its connection
//! goes, the lease is released and the machine hears that the subscriber
//! disconnected (it drops the subscriber's queue and counts it). Nothing is
//! re-queued here: the next frame for that subscriber opens a new outlet.

use std::time::Instant;

use quinn_proto::StreamId;

use super::{Errand, MessagingOutput, Unopened, give_back};
use crate::collections::HashMap;
use crate::contract::OutputQueue;
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::pubsub::PubSub;
use crate::wire::Publish;

/// The publish stream to one subscriber.
#[derive(Debug)]
enum Outlet {
    /// Waiting for the subscriber's address, a connection or its stream,
    /// with the frames to write once there.
    Reaching(Vec<Publish>),
    /// Open.
    Open {
        stream: StreamId,
        lease: Lease,
        /// The epochs and message ids of the frames QUIC has not taken in
        /// full yet.
        unwritten: Vec<(u64, u64)>,
    },
}

impl Outlet {
    fn is_on(&self, conn: ConnId, on: StreamId) -> bool {
        matches!(self, Outlet::Open { stream, lease, .. } if lease.conn() == conn && *stream == on)
    }
}

/// The publish stream to each subscriber.
#[derive(Debug, Default)]
pub(super) struct Outlets {
    outlets: HashMap<NodeId, Outlet>,
}

type Out = OutputQueue<MessagingOutput>;

impl Outlets {
    /// The machine hands a PUBLISH frame for `subscriber`.
    pub(super) fn publish(&mut self, out: &mut Out, subscriber: NodeId, frame: Publish) {
        match self.outlets.get_mut(&subscriber) {
            Some(Outlet::Reaching(frames)) => frames.push(frame),
            Some(Outlet::Open {
                stream,
                lease,
                unwritten,
            }) => write(out, lease.conn(), *stream, unwritten, frame),
            None => {
                self.outlets
                    .insert(subscriber, Outlet::Reaching(vec![frame]));
                let errand = Errand::Publish(subscriber);
                out.push(MessagingOutput::Connect {
                    peer: subscriber,
                    errand,
                });
            }
        }
    }

    /// A connection to a subscriber: open its stream (the lease goes back
    /// when nothing waits for it any more).
    pub(super) fn connected(&mut self, out: &mut Out, subscriber: NodeId, lease: Lease) {
        out.push(match self.outlets.get(&subscriber) {
            Some(Outlet::Reaching(_)) => MessagingOutput::Open {
                lease,
                errand: Errand::Publish(subscriber),
                frame: None,
            },
            _ => MessagingOutput::Release(lease),
        });
    }

    /// The outcome of opening a subscriber's stream: write what waited, or
    /// give the subscriber up as unreachable.
    pub(super) fn opened(
        &mut self,
        out: &mut Out,
        pubsub: &mut PubSub,
        now: Instant,
        subscriber: NodeId,
        lease: Lease,
        opened: Result<StreamId, Unopened>,
    ) {
        let conn = lease.conn();
        let Some(Outlet::Reaching(frames)) = self.outlets.get_mut(&subscriber) else {
            give_back(out, lease, opened); // closed meanwhile
            return;
        };
        let Ok(stream) = opened else {
            out.push(MessagingOutput::Release(lease));
            self.unreachable(pubsub, now, subscriber);
            return;
        };
        let frames = std::mem::take(frames);
        let mut unwritten = Vec::new();
        for frame in frames {
            write(out, conn, stream, &mut unwritten, frame);
        }
        let outlet = Outlet::Open {
            stream,
            lease,
            unwritten,
        };
        self.outlets.insert(subscriber, outlet);
    }

    /// No connection or stream for `subscriber`: its waiting frames are
    /// dropped and the machine hears it is unreachable.
    pub(super) fn unreachable(&mut self, pubsub: &mut PubSub, now: Instant, subscriber: NodeId) {
        self.outlets.remove(&subscriber);
        pubsub.handle_unreachable(now, subscriber);
    }

    /// Everything written on `stream` is out: if it is a publish stream, the
    /// machine hears of each frame.
    pub(super) fn flushed(
        &mut self,
        out: &mut Out,
        pubsub: &mut PubSub,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
    ) {
        let outlet = self
            .outlets
            .iter_mut()
            .find(|(_, outlet)| outlet.is_on(conn, stream));
        let Some((&subscriber, Outlet::Open { unwritten, .. })) = outlet else {
            return;
        };
        for (epoch, message_id) in std::mem::take(unwritten) {
            out.push(MessagingOutput::PublishWritten { message_id });
            pubsub.handle_written(now, subscriber, epoch);
        }
    }

    /// The peer reset or stopped `stream`: if it is a publish stream, its
    /// subscriber is disconnected.
    pub(super) fn stream_gone(
        &mut self,
        out: &mut Out,
        pubsub: &mut PubSub,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
    ) {
        if let Some(subscriber) = self.find(|outlet| outlet.is_on(conn, stream)) {
            self.close(out, pubsub, now, subscriber);
        }
    }

    /// `conn` is going away: the subscriber fed on it, if any, is
    /// disconnected; returns it.
    pub(super) fn released(
        &mut self,
        out: &mut Out,
        pubsub: &mut PubSub,
        now: Instant,
        conn: ConnId,
    ) -> Option<NodeId> {
        let on_conn =
            |outlet: &Outlet| matches!(outlet, Outlet::Open { lease, .. } if lease.conn() == conn);
        let subscriber = self.find(on_conn)?;
        self.close(out, pubsub, now, subscriber);
        Some(subscriber)
    }

    fn find(&self, which: impl Fn(&Outlet) -> bool) -> Option<NodeId> {
        let mut outlets = self.outlets.iter();
        outlets
            .find(|(_, outlet)| which(outlet))
            .map(|(subscriber, _)| *subscriber)
    }

    fn close(&mut self, out: &mut Out, pubsub: &mut PubSub, now: Instant, subscriber: NodeId) {
        if let Some(Outlet::Open { lease, .. }) = self.outlets.remove(&subscriber) {
            out.push(MessagingOutput::Release(lease));
        }
        pubsub.handle_disconnected(now, subscriber);
    }
}

/// Writes one frame on an open outlet; it counts as unwritten until the
/// Node reports the stream flushed.
fn write(
    out: &mut Out,
    conn: ConnId,
    stream: StreamId,
    unwritten: &mut Vec<(u64, u64)>,
    frame: Publish,
) {
    unwritten.push((frame.epoch, frame.message_id));
    out.push(MessagingOutput::Publish {
        conn,
        stream,
        frame,
    });
}
