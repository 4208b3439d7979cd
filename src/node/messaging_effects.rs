//! The executor of the [`Messaging`] child's outputs: leases and DHT
//! operations go to the pool and the DHT, events to the application, and
//! stream effects to the node's connections (named by pool id): open a
//! stream and write its first frame, write PUBLISH frames and report flushed
//! publish streams, answer a request and finish its stream, end or cancel
//! one of our calls' streams, reset a stream.
//!
//! A stream whose CALL is not all out yet (a streamed payload) is reset
//! rather than finished or cancelled: the provider has not started it.
//!
//! [`Messaging`]: crate::messaging::Messaging

use std::time::Instant;

use quinn_proto::{ConnectionHandle, StreamId};

use super::{Event, Node};
use crate::connection::Conn;
use crate::connection::STREAM_ABANDONED;
use crate::connection::STREAM_REFUSED;
use crate::contract::{Child, Output};
use crate::messaging::{MessagingOutput, Unopened};
use crate::pool::ConnId;
use crate::rpc::AnnounceFailure;
use crate::wire::{self, Cancel, Capabilities, Message, Publish};

impl Node {
    /// Carries out the child's outputs; true when there were any. PUBLISH
    /// frames in a row for one stream are written together
    /// ([`Publications`]).
    pub(super) fn drive_messaging(&mut self, now: Instant) -> bool {
        let mut busy = false;
        let mut publications = Publications::default();
        while let Some(output) = self.messaging.poll_output() {
            busy = true;
            self.carry_out(now, output, &mut publications);
        }
        if let Some(last) = publications.take() {
            // What the write frees (PublishWritten, the next publications)
            // is carried out on the settle loop's next round: `busy`.
            self.write_publications(now, last);
        }
        busy
    }

    fn carry_out(
        &mut self,
        now: Instant,
        output: MessagingOutput,
        publications: &mut Publications,
    ) {
        let gathered = matches!(
            output,
            MessagingOutput::Publish { .. } | MessagingOutput::PublishWritten { .. }
        );
        if !gathered && let Some(before) = publications.take() {
            self.write_publications(now, before);
        }
        match output {
            MessagingOutput::Connect { peer, errand } => self.reach(now, peer, errand),
            MessagingOutput::Open {
                lease,
                errand,
                frame,
            } => {
                let opened = if self.peer_announced(lease.conn(), errand.capability()) {
                    self.open_stream(lease.conn(), frame.as_ref())
                } else {
                    Err(Unopened::NotServed)
                };
                self.messaging.handle_opened(now, errand, lease, opened);
            }
            MessagingOutput::Publish {
                conn,
                stream,
                frame,
            } => {
                if let Some(written_first) = publications.add(conn, stream, frame) {
                    self.write_publications(now, written_first);
                }
            }
            MessagingOutput::Answer {
                conn,
                stream,
                frame,
            } => self.write_answer(conn, stream, &frame),
            MessagingOutput::Cancel {
                conn,
                stream,
                frame,
            } => self.cancel_stream(conn, stream, frame),
            MessagingOutput::Finish { conn, stream } => self.finish_call_stream(conn, stream),
            MessagingOutput::Reset { conn, stream } => self.reset_stream(conn, stream),
            MessagingOutput::Release(lease) => self.pool.release(now, lease),
            MessagingOutput::Lookup {
                key,
                timeout,
                owner,
            } => {
                let unix_ms = self.unix_ms(now);
                // The messaging layer caches what it finds (`cache_ttl`); the DHT's own
                // cache on top would keep a late provider or subscriber unseen for its
                // TTL more (issue 17: a subscriber missed for 60 s).
                self.dht.uncache(&key);
                let query = self.dht.query_with_response(now, unix_ms, key, timeout);
                self.messaging.handle_lookup_started(query, owner);
            }
            MessagingOutput::Announce { key, value } => {
                let (unix_ms, timeout) = (self.unix_ms(now), self.config.dht.query_timeout);
                let stored = self
                    .dht
                    .store_with_confirmation(now, unix_ms, key, value, timeout);
                if let Err(error) = stored {
                    let failure = AnnounceFailure::Rejected(error.to_string());
                    self.messaging.handle_announced(now, key, Err(failure));
                }
            }
            MessagingOutput::Withdraw { key } => self.dht.unpublish(&key),
            MessagingOutput::ProtocolError => self.counters.protocol_errors += 1,
            MessagingOutput::PublishWritten { message_id } => {
                self.instruments.publish_written(now, message_id)
            }
            MessagingOutput::Rpc(event) => self.out.push_back(Output::Event(Event::Rpc(event))),
            MessagingOutput::PubSub(event) => {
                self.out.push_back(Output::Event(Event::PubSub(event)))
            }
        }
    }

    /// The connection with pool id `conn`, if it is still there.
    pub(super) fn pooled_conn(&mut self, conn: ConnId) -> Option<(ConnectionHandle, &mut Conn)> {
        let handle = *self.by_pool_id.get(&conn)?;
        Some((handle, self.conns.get_mut(&handle)?))
    }

    /// Whether the peer of `conn` announced `capability` (in its CONNECT or
    /// a later CAPABILITIES); true for a connection that is gone (opening
    /// its stream says so).
    fn peer_announced(&self, conn: ConnId, capability: Capabilities) -> bool {
        let hello = (self.by_pool_id.get(&conn))
            .and_then(|handle| self.conns.get(handle))
            .and_then(|conn| conn.hello.as_ref());
        hello.is_none_or(|hello| hello.capabilities.contains(capability))
    }

    /// Opens a stream on `conn` and writes `frame` on it, if any (a frame
    /// that does not encode refuses the stream).
    pub(super) fn open_stream(
        &mut self,
        conn: ConnId,
        frame: Option<&Message>,
    ) -> Result<StreamId, Unopened> {
        let (_, conn) = self.pooled_conn(conn).ok_or(Unopened::Gone)?;
        let stream = conn.open().ok_or(Unopened::Blocked)?;
        if let Some(frame) = frame
            && let Err(error) = conn.send(stream, frame, false)
        {
            tracing::debug!(%error, "frame not encoded");
            conn.abandon(stream, STREAM_REFUSED);
            return Err(Unopened::NotEncoded);
        }
        Ok(stream)
    }

    /// Writes PUBLISH frames on their subscriber's stream, in one write,
    /// packed into PUBLISH_BATCH frames for a peer that takes them
    /// ([`wire::pack_publishes`]).
    fn write_publications(&mut self, now: Instant, publications: Batch) {
        let Batch {
            conn,
            stream,
            frames,
            ..
        } = publications;
        let packed = if self.peer_announced(conn, Capabilities::PUBLISH_BATCH) {
            wire::pack_publishes(frames, &self.config.limits)
        } else {
            frames.into_iter().map(Message::Publish).collect()
        };
        let Some((handle, quic)) = self.pooled_conn(conn) else {
            return;
        };
        for error in quic.send_frames(stream, packed) {
            // Payloads are bounded below the frame limit; should a frame not
            // encode, it is lost like one dropped from a full queue.
            tracing::warn!(%error, "PUBLISH not encoded");
            self.counters.protocol_errors += 1;
        }
        self.flushed(now, handle, stream);
    }

    /// `stream` may have taken more bytes: if everything written is out,
    /// messaging hears of it (a publish stream's frames are written).
    pub(super) fn publish_flushed(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        stream: StreamId,
    ) {
        self.flushed(now, handle, stream);
        self.drive_messaging(now);
    }

    fn flushed(&mut self, now: Instant, handle: ConnectionHandle, stream: StreamId) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        if let Some(id) = conn.pool_id
            && conn.is_flushed(stream)
        {
            self.messaging.handle_flushed(now, id, stream);
        }
    }

    /// Writes an answer on the stream its request came on, then finishes it.
    pub(super) fn write_answer(&mut self, conn: ConnId, stream: StreamId, frame: &Message) {
        let Some((_, conn)) = self.pooled_conn(conn) else {
            return;
        };
        conn.forget(stream);
        if conn.send(stream, frame, true).is_err() {
            conn.abandon(stream, STREAM_ABANDONED);
            self.counters.protocol_errors += 1;
        }
    }

    /// Gives one of our calls up on its stream: CANCEL, then finish.
    pub(super) fn cancel_stream(&mut self, conn: ConnId, stream: StreamId, frame: Cancel) {
        let Some((_, conn)) = self.pooled_conn(conn) else {
            return;
        };
        if !conn.is_flushed(stream) {
            conn.abandon(stream, STREAM_ABANDONED);
            return;
        }
        conn.forget(stream);
        let _ = conn.send(stream, &Message::Cancel(frame), true);
        let _ = conn.quinn.recv_stream(stream).stop(STREAM_ABANDONED);
    }

    /// One of our calls was answered: finish its stream.
    pub(super) fn finish_call_stream(&mut self, conn: ConnId, stream: StreamId) {
        let Some((_, conn)) = self.pooled_conn(conn) else {
            return;
        };
        if conn.is_flushed(stream) {
            conn.forget(stream);
            conn.finish(stream);
        } else {
            // Answered before our streamed payload was all out (the
            // provider refused it): the rest is not sent.
            conn.abandon(stream, STREAM_ABANDONED);
        }
    }

    /// Resets a stream given up after its request was read.
    pub(super) fn reset_stream(&mut self, conn: ConnId, stream: StreamId) {
        if let Some((_, conn)) = self.pooled_conn(conn) {
            conn.abandon(stream, STREAM_ABANDONED);
        }
    }
}

/// PUBLISH frames for one subscriber's stream, gathered while the messaging
/// child's outputs are carried out, to be written as one
/// ([`Conn::send_frames`]).
#[derive(Default)]
struct Publications {
    batch: Option<Batch>,
}

/// The frames gathered for one stream.
struct Batch {
    conn: ConnId,
    stream: StreamId,
    frames: Vec<Publish>,
    /// Their payloads' bytes.
    bytes: usize,
}

/// Payload bytes past which gathered frames are written: a batch is a copy
/// of its frames.
const BATCH_BYTES: usize = 64 << 10;

impl Publications {
    /// Adds `frame` for `stream` of `conn`; returns the frames to write
    /// first: those for another stream, or a full batch.
    fn add(&mut self, conn: ConnId, stream: StreamId, frame: Publish) -> Option<Batch> {
        let other = self
            .batch
            .take_if(|b| b.conn != conn || b.stream != stream || b.bytes >= BATCH_BYTES);
        let batch = self.batch.get_or_insert_with(|| Batch {
            conn,
            stream,
            frames: Vec::new(),
            bytes: 0,
        });
        batch.bytes += frame.payload.len();
        batch.frames.push(frame);
        other
    }

    /// The frames gathered, if any.
    fn take(&mut self) -> Option<Batch> {
        self.batch.take()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use quinn_proto::{Dir, Side};

    use super::*;

    fn stream(index: u64) -> StreamId {
        StreamId::new(Side::Client, Dir::Bi, index)
    }

    fn publish(sequence: u64, payload: usize) -> Publish {
        Publish {
            message_id: sequence,
            epoch: 1,
            sequence,
            topic: "a.b".into(),
            payload: Bytes::from(vec![0; payload]),
        }
    }

    fn sequences(batch: &Batch) -> Vec<u64> {
        batch.frames.iter().map(|f| f.sequence).collect()
    }

    #[test]
    fn publications_in_a_row_for_one_stream_are_gathered_and_another_stream_writes_them() {
        let mut publications = Publications::default();
        assert!(
            publications
                .add(ConnId(1), stream(0), publish(1, 8))
                .is_none()
        );
        assert!(
            publications
                .add(ConnId(1), stream(0), publish(2, 8))
                .is_none()
        );
        let first = (publications.add(ConnId(1), stream(1), publish(3, 8)))
            .expect("another stream writes the gathered ones first");
        assert_eq!((first.conn, first.stream), (ConnId(1), stream(0)));
        assert_eq!(sequences(&first), [1, 2]);
        assert_eq!(first.bytes, 16);
        let first = (publications.add(ConnId(2), stream(1), publish(4, 8)))
            .expect("the same stream number on another connection is another stream");
        assert_eq!(sequences(&first), [3]);
        let last = publications.take().expect("the last gathered");
        assert_eq!(sequences(&last), [4]);
        assert!(publications.take().is_none());
    }

    #[test]
    fn a_batch_past_its_bytes_is_written_before_the_next_frame_joins() {
        let mut publications = Publications::default();
        let half = BATCH_BYTES / 2;
        assert!(
            publications
                .add(ConnId(1), stream(0), publish(1, half))
                .is_none()
        );
        assert!(
            publications
                .add(ConnId(1), stream(0), publish(2, half))
                .is_none()
        );
        let full = (publications.add(ConnId(1), stream(0), publish(3, 1)))
            .expect("a full batch is written");
        assert_eq!(sequences(&full), [1, 2]);
        assert_eq!(sequences(&publications.take().expect("the next")), [3]);
    }
}
