//! One QUIC connection as the node sees it: quinn's state plus the
//! protocol state on top (the CONNECT exchange, frame readers per stream,
//! writes waiting for flow control). Requests waiting for answers are the
//! exchanges' ([`crate::exchange`]), not the connection's.
//!
//! **Buffers.** Partial frames read and bytes written but not yet taken by
//! QUIC count against the connection's budget; over it, the node stops
//! reading the connection's streams and QUIC flow control stops the peer.
//! Streamed payloads ([`wire::Streamed`]) are written one chunk at a time,
//! the next when QUIC took the last, so a 16 MiB REPLY holds at most one
//! chunk in our buffers. Payloads being reassembled are bounded apart: each
//! reserves its declared length out of [`Bounds::payload_room`] when its
//! PAYLOAD_SIZE arrives (or is refused), and a stream with an admitted
//! payload is read on even while the connection is over its budget — its
//! bytes have room reserved — so two large payloads can never wait on each
//! other. A connection holds at most `budget + payload_room` bytes plus one
//! partial frame per stream.
//!
//! **The node-wide budget.** Both bounds are also capped by the
//! connection's share of the node's memory budget (the budget divided by
//! the connections open, docs of [`super::admission`]): with many
//! connections each may buffer and reassemble less, so all of them together
//! stay within the budget. The buffer bound never falls below one frame.
//!
//! A payload that finds no room is refused at once (`overloaded` for a
//! CALL, so the caller may try another provider; `too large` for a REPLY)
//! and its bytes are read and dropped, rather than left waiting for room:
//! unread bytes hold QUIC connection credit (10 MiB by default, 1.25 MiB
//! per stream), and a few waiting payloads could starve the admitted one
//! of the credit it needs to finish. Raising `max_buffered_per_connection`
//! above `rpc.max_payload` makes room for several large payloads at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{Connection, Dir, StreamId, VarInt};

use super::STREAM_ABANDONED;
use super::admission::Ticket;
use super::congestion::Flight;
use super::handover::Handover;
use super::phase::{Phase, PhaseEvent};
use super::probe::Probing;
use super::quiet::Quiet;
use super::silence::Silence;
use crate::collections::HashMap;
use crate::id::NodeId;
use crate::pool::{ConnId, Direction};
use crate::relay::TokenBucket;
use crate::wire::{self, FrameReader, Limits, Message, PayloadAssembler, Step, Streamed};

/// Bytes waiting for stream flow control.
#[derive(Debug)]
struct PendingWrite {
    data: Bytes,
    /// A streamed payload's chunks still to be made (after `data`).
    streamed: Option<Streamed>,
    /// Frames written after `data` (after a streamed payload's chunks).
    tail: Vec<u8>,
    finish: bool,
}

/// The bounds of one connection's buffers (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Frame and field limits.
    pub limits: Limits,
    /// Partial frames and unsent bytes before reading stops.
    pub budget: usize,
    /// The largest CALL or REPLY payload accepted.
    pub max_payload: u64,
    /// Declared bytes of payloads being reassembled at once.
    pub payload_room: u64,
    /// Frames of the peer read per second (bursts of as many); 0: no pace.
    pub frames_per_second: u32,
}

/// The node's state for one connection.
pub struct Conn {
    /// quinn's connection.
    pub quinn: Connection,
    /// The pool's id for it, once the pool knows it.
    pub pool_id: Option<ConnId>,
    /// The pool was told the connection is up (so its end is a close, not
    /// a failed connect).
    pub pooled: bool,
    /// The peer, known from the start for dials, after the handshake for
    /// accepted connections.
    pub peer: Option<NodeId>,
    /// Who dialed.
    pub direction: Direction,
    /// The peer's real address when the connection started.
    pub remote: SocketAddr,
    /// The address quinn sees for the peer.
    pub virtual_addr: SocketAddr,
    /// Where the connection is in its life.
    pub phase: Phase,
    /// The control stream (stream 0).
    pub control: Option<StreamId>,
    /// The peer's CONNECT, once accepted.
    pub hello: Option<wire::Connect>,
    /// The capabilities we last told the peer (in our CONNECT or a
    /// CAPABILITIES).
    pub told: Option<wire::Capabilities>,
    /// When the connection is closed if it is not ready by then: while
    /// handshaking, the handshake deadline (set when it starts); then the
    /// CONNECT deadline (set when the handshake ends). Cleared by
    /// [`Conn::step`] when the connection leaves "awaiting CONNECT".
    pub connect_deadline: Option<Instant>,
    readers: HashMap<StreamId, FrameReader>,
    /// Streamed payloads being reassembled, by stream.
    assemblers: HashMap<StreamId, PayloadAssembler>,
    writes: HashMap<StreamId, PendingWrite>,
    /// How many of the peer's bidirectional streams QUIC has handed over
    /// ([`Conn::accept_stream`]); they are handed over in order.
    accepted_from_peer: u64,
    /// Streams with data we did not read because the connection was over
    /// its buffer budget; QUIC flow control holds their bytes meanwhile.
    parked: VecDeque<StreamId>,
    bounds: Bounds,
    /// What this connection counts against in admission (inbound only).
    pub ticket: Ticket,
    /// Inbound only: its first packet came unsolicited from a stranger
    /// ([`crate::nat::reach::Reach::is_unsolicited`]), evidence that we are
    /// publicly reachable once its CONNECT is accepted.
    pub unsolicited: bool,
    /// PINGs answered and left unanswered, at most so many a second
    /// (made at the first PING).
    pings: Option<PingBudget>,
    /// Frames of the peer read, at most [`Bounds::frames_per_second`] a
    /// second (made at the first read).
    pace: Option<TokenBucket>,
    /// When the streams left unread for the frame rate may be read again.
    pub resume_at: Option<Instant>,
    /// Since when sent frames wait for an acknowledgement.
    pub silence: Silence,
    /// Since when the peer's data has been quiet, while a PING is owed.
    pub quiet: Quiet,
    /// PINGs owed after a path switch until the new path acknowledges one.
    pub handover: Handover,
    /// Signed probes: ours while a watched silence runs, the budget for
    /// answering the peer's.
    pub probing: Probing,
    /// Its congestion controllers' count of bytes in flight, handed to the
    /// controller quinn builds at a path switch
    /// ([`crate::connection::congestion`]); `None` when quinn's controller
    /// is not ours.
    pub flight: Option<Arc<Flight>>,
    /// A close waiting for the DISCONNECT written before it to be delivered
    /// ([`Conn::close_after_disconnect`]).
    lingering: Option<Lingering>,
}

/// How long a closing connection waits at most for its DISCONNECT to be
/// acknowledged before it closes anyway (docs/PROTOCOL.md §2, "Closing").
pub const DISCONNECT_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// A QUIC close held back until the DISCONNECT on the control stream is
/// acknowledged, or its deadline.
#[derive(Debug)]
struct Lingering {
    control: StreamId,
    code: VarInt,
    reason: Bytes,
    until: Instant,
}

/// Bytes read from one stream at a time, so that one busy stream leaves
/// room for the others (the rest is read at the next turn: [`StreamRead::more`]).
pub const READ_QUANTUM: usize = 64 << 10;

/// What one [`Conn::read`] took from a stream.
#[derive(Debug)]
pub struct StreamRead {
    /// The complete messages (reassembled payloads included).
    pub messages: Vec<Message>,
    /// The peer finished the stream.
    pub finished: bool,
    /// More has arrived than one read takes ([`READ_QUANTUM`]).
    pub more: bool,
    /// The peer finished the stream with a frame cut short, or after bytes
    /// that held no frame of a known type ([`FrameReader::ends_unserved`]).
    pub cut_short: bool,
}

/// How far [`read_chunks`] read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drained {
    /// To its end: the peer finished it.
    Finished,
    /// To what has arrived.
    Blocked,
    /// A quantum's worth; more has arrived.
    Quantum,
}

/// What becomes of a peer's PING ([`Conn::ping_verdict`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingVerdict {
    /// Answer it with a PONG.
    Answer,
    /// Over the rate: leave it unanswered.
    Ignore,
    /// Far over the rate: the peer floods; close the connection.
    Flooding,
}

/// A connection's PING rates: answered, and left unanswered before the
/// peer counts as flooding.
#[derive(Clone, Debug)]
struct PingBudget {
    answered: TokenBucket,
    unanswered: TokenBucket,
}

/// What went wrong on a stream, for the caller to act on.
#[derive(Debug)]
pub enum StreamTrouble {
    /// The peer reset the stream, with this error code.
    Reset(VarInt),
    /// The bytes do not decode.
    Decode(wire::DecodeError),
    /// A streamed payload broke the rules.
    Assembly(wire::AssemblyError),
}

impl Conn {
    /// A connection that has just been dialed or accepted.
    pub fn new(
        quinn: Connection,
        direction: Direction,
        peer: Option<NodeId>,
        remote: SocketAddr,
        virtual_addr: SocketAddr,
        bounds: Bounds,
    ) -> Self {
        Self {
            quinn,
            pool_id: None,
            pooled: false,
            peer,
            direction,
            remote,
            virtual_addr,
            phase: Phase::Handshaking,
            control: None,
            hello: None,
            told: None,
            connect_deadline: None,
            readers: HashMap::default(),
            assemblers: HashMap::default(),
            writes: HashMap::default(),
            accepted_from_peer: 0,
            parked: VecDeque::new(),
            bounds,
            ticket: Ticket::default(),
            unsolicited: false,
            pings: None,
            pace: None,
            resume_at: None,
            silence: Silence::default(),
            quiet: Quiet::default(),
            handover: Handover::default(),
            probing: Probing::default(),
            flight: None,
            lingering: None,
        }
    }

    /// Closes the connection with application `code` and `reason`: at once
    /// when there is no control stream, else after writing `disconnect` on
    /// it and finishing it, once the peer acknowledged it
    /// ([`Conn::control_delivered`]) or [`DISCONNECT_LINGER`] after `now`
    /// ([`Conn::linger_over`]), whichever comes first. QUIC's close discards
    /// unsent stream data, which is why it waits.
    pub fn close_after_disconnect(
        &mut self,
        now: Instant,
        disconnect: &Message,
        code: VarInt,
        reason: Bytes,
    ) {
        let written = self
            .control
            .filter(|&control| self.send(control, disconnect, true).is_ok());
        match written {
            Some(control) => {
                self.lingering = Some(Lingering {
                    control,
                    code,
                    reason,
                    until: now + DISCONNECT_LINGER,
                });
            }
            None => self.quinn.close(now, code, reason),
        }
    }

    /// The peer acknowledged everything on `stream`: if it carried the
    /// DISCONNECT of a pending close, the connection closes now.
    pub fn control_delivered(&mut self, now: Instant, stream: StreamId) {
        if self.lingering.as_ref().is_some_and(|l| l.control == stream) {
            self.close_lingering(now);
        }
    }

    /// Closes a connection whose DISCONNECT waited past its bound at `now`.
    pub fn linger_over(&mut self, now: Instant) {
        if self.lingering.as_ref().is_some_and(|l| l.until <= now) {
            self.close_lingering(now);
        }
    }

    /// The connection's packets go over another path from `now`: quinn
    /// starts its congestion control and RTT estimate afresh, and the
    /// silence watch restarts (data the old path left unacknowledged has
    /// had no time yet on the new one).
    pub fn path_changed(&mut self, now: Instant) {
        if let Some(flight) = &self.flight {
            flight.hand_over();
        }
        self.quinn.path_changed(now);
        // Its acknowledgement tells, within a round trip of the new path,
        // which packets the old one lost, rather than the probe timeout;
        // repeated until one is acknowledged (`handover.rs`).
        self.quinn.ping();
        self.handover
            .switched(now, self.quinn.stats().frame_rx.acks);
        self.silence.restart(now);
    }

    /// When a pending close happens at the latest.
    pub fn linger_deadline(&self) -> Option<Instant> {
        self.lingering.as_ref().map(|l| l.until)
    }

    fn close_lingering(&mut self, now: Instant) {
        if let Some(lingering) = self.lingering.take() {
            self.quinn.close(now, lingering.code, lingering.reason);
        }
    }

    /// Opens a bidirectional stream, if the peer allows another (never
    /// once the connection is closing).
    pub fn open(&mut self) -> Option<StreamId> {
        if self.phase == Phase::Closing {
            return None;
        }
        self.quinn.streams().open(Dir::Bi)
    }

    /// Writes `frame` on `stream`, finishing the sending side after it if
    /// `finish`; a CALL or REPLY too large for one frame is streamed. What
    /// flow control holds back goes out on [`Conn::flush_stream`].
    pub fn send(
        &mut self,
        stream: StreamId,
        frame: &Message,
        finish: bool,
    ) -> Result<(), wire::EncodeError> {
        let limits = &self.bounds.limits;
        let (data, streamed) = match Streamed::split(frame, limits) {
            Some(streamed) => {
                let mut data = Message::from(streamed.size.clone()).to_vec(limits)?;
                data.extend(streamed.head.to_vec(limits)?);
                (data, Some(streamed))
            }
            None => (frame.to_vec(limits)?, None),
        };
        self.write(stream, Bytes::from(data), streamed, finish);
        Ok(())
    }

    /// Writes `frames` on `stream` as one write; a frame that does not
    /// encode is left out, and its error is in what comes back.
    ///
    /// QUIC keeps each write as one piece of its send buffer until the peer
    /// acknowledges it, and finds the bytes of every packet it sends by
    /// walking those pieces from the oldest (quinn-proto's `SendBuffer::get`):
    /// with thousands of small frames written one by one and in flight, every
    /// packet took thousands of steps (36 % of a publishing node's time).
    /// Frames made in one turn go as one piece.
    pub fn send_frames(
        &mut self,
        stream: StreamId,
        frames: impl IntoIterator<Item = Message>,
    ) -> Vec<wire::EncodeError> {
        let limits = self.bounds.limits;
        let mut data = Vec::new();
        let mut errors = Vec::new();
        for frame in frames {
            if let Err(error) = frame.encode(&limits, &mut data) {
                errors.push(error);
            }
        }
        if !data.is_empty() {
            self.write(stream, Bytes::from(data), None, false);
        }
        errors
    }

    /// Writes raw bytes (circuit frames) on `stream`, queued behind what
    /// waits for flow control.
    pub fn send_raw(&mut self, stream: StreamId, data: Bytes) {
        self.write(stream, data, None, false);
    }

    /// Bytes written on `stream` that wait for flow control.
    pub fn queued(&self, stream: StreamId) -> usize {
        self.writes
            .get(&stream)
            .map_or(0, |w| w.data.len() + w.tail.len())
    }

    fn write(&mut self, stream: StreamId, data: Bytes, streamed: Option<Streamed>, finish: bool) {
        if self.phase == Phase::Closing {
            // After DISCONNECT nothing more goes out (docs/PROTOCOL.md §2).
            return;
        }
        match self.writes.get_mut(&stream) {
            // Frames written while earlier ones wait for flow control queue
            // behind them (a publish stream carries many), behind a streamed
            // payload's chunks too; a streamed frame never joins a queue
            // (calls and answers come first on a stream). Appending costs
            // O(frame): what waits is never copied again.
            Some(pending) => {
                pending.tail.extend_from_slice(&data);
                pending.finish |= finish;
            }
            None => {
                let pending = PendingWrite {
                    data,
                    streamed,
                    tail: Vec::new(),
                    finish,
                };
                self.writes.insert(stream, pending);
            }
        }
        self.flush_stream(stream);
    }

    /// True when everything written on `stream` went into QUIC's buffers.
    pub fn is_flushed(&self, stream: StreamId) -> bool {
        !self.writes.contains_key(&stream)
    }

    /// Pushes a stream's pending bytes as far as flow control allows.
    pub fn flush_stream(&mut self, stream: StreamId) {
        let Some(pending) = self.writes.get_mut(&stream) else {
            return;
        };
        let limits = self.bounds.limits;
        let mut send = self.quinn.send_stream(stream);
        loop {
            if pending.data.is_empty() {
                // The next chunk is made only now that QUIC took the last.
                let chunk = pending
                    .streamed
                    .as_mut()
                    .and_then(|s| s.next_chunk(&limits));
                match chunk {
                    Some(chunk) => match Message::from(chunk).to_vec(&limits) {
                        Ok(data) => pending.data = Bytes::from(data),
                        Err(_) => unreachable!("a chunk is at most half a frame"),
                    },
                    None if !pending.tail.is_empty() => {
                        pending.streamed = None;
                        pending.data = Bytes::from(std::mem::take(&mut pending.tail));
                    }
                    None => break,
                }
            }
            match send.write(&pending.data) {
                Ok(0) => return,
                Ok(n) => {
                    let _ = pending.data.split_to(n);
                }
                Err(quinn_proto::WriteError::Blocked) => return,
                Err(quinn_proto::WriteError::Stopped(code)) => {
                    // Stopped before we accepted it: see `finish_or_reset`.
                    let _ = send.reset(code);
                    self.writes.remove(&stream);
                    return;
                }
                Err(_) => {
                    // Closed: nobody will read the rest.
                    self.writes.remove(&stream);
                    return;
                }
            }
        }
        if pending.finish {
            finish_or_reset(&mut send);
        }
        self.writes.remove(&stream);
    }

    /// Finishes our side of `stream` once what is written on it is out.
    pub fn finish(&mut self, stream: StreamId) {
        match self.writes.get_mut(&stream) {
            Some(pending) => pending.finish = true,
            None => {
                finish_or_reset(&mut self.quinn.send_stream(stream));
            }
        }
    }

    /// Abandons a stream both ways.
    pub fn abandon(&mut self, stream: StreamId, code: VarInt) {
        self.writes.remove(&stream);
        self.readers.remove(&stream);
        self.assemblers.remove(&stream);
        if self.phase != Phase::Closing {
            // A closing connection says nothing after its DISCONNECT.
            let _ = self.quinn.send_stream(stream).reset(code);
            let _ = self.quinn.recv_stream(stream).stop(code);
        }
    }

    /// Reads what has arrived on `stream`, at most [`READ_QUANTUM`] bytes,
    /// and returns the complete frames, whether the peer finished the
    /// stream and whether more waits to be read. Decoding stops after a
    /// frame that turns the stream into a circuit
    /// ([`Message::starts_circuit`]); the bytes after it are taken with
    /// [`Conn::take_unread`]. Payloads being reassembled may reserve at
    /// most `share` bytes in all (the connection's share of the node-wide
    /// budget), on top of its own payload room.
    pub fn read(&mut self, stream: StreamId, share: usize) -> Result<StreamRead, StreamTrouble> {
        let limits = self.bounds.limits;
        let reader = self
            .readers
            .entry(stream)
            .or_insert_with(|| FrameReader::new(limits));
        let push = |chunk: &[u8]| reader.push(chunk);
        let (finished, more) = match read_chunks(&mut self.quinn, stream, READ_QUANTUM, push) {
            Ok(Drained::Finished) => (true, false),
            Ok(Drained::Blocked) => (false, false),
            Ok(Drained::Quantum) => (false, true),
            Err(trouble) => {
                self.readers.remove(&stream);
                self.assemblers.remove(&stream);
                return Err(trouble);
            }
        };
        let mut frames = Vec::new();
        let mut circuit = false;
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    circuit = message.starts_circuit();
                    frames.push(message);
                    if circuit {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.readers.remove(&stream);
                    return Err(StreamTrouble::Decode(error));
                }
            }
        }
        let cut_short = finished && !circuit && reader.ends_unserved();
        if finished && !circuit {
            self.readers.remove(&stream);
        }
        let mut messages = Vec::new();
        for frame in frames {
            match self.assemble(stream, frame, share) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => {}
                Err(error) => {
                    self.readers.remove(&stream);
                    self.assemblers.remove(&stream);
                    return Err(StreamTrouble::Assembly(error));
                }
            }
        }
        let read = StreamRead {
            messages,
            finished,
            more,
            cut_short,
        };
        if circuit {
            return Ok(read);
        }
        if finished && self.assemblers.remove(&stream).is_some() {
            return Err(StreamTrouble::Assembly(wire::AssemblyError::Unexpected {
                found: "the end of the stream",
                expected: "PAYLOAD_CHUNK",
            }));
        }
        Ok(read)
    }

    /// Reads the raw bytes that have arrived on a circuit stream into
    /// `sink`; true when the peer finished the stream.
    pub fn read_raw(
        &mut self,
        stream: StreamId,
        sink: impl FnMut(&[u8]),
    ) -> Result<bool, StreamTrouble> {
        let drained = read_chunks(&mut self.quinn, stream, usize::MAX, sink)?;
        Ok(drained == Drained::Finished)
    }

    /// Forgets `stream`'s frame reader and returns the bytes it held past
    /// the last frame read (the first circuit bytes of a stream that just
    /// became a circuit).
    pub fn take_unread(&mut self, stream: StreamId) -> Bytes {
        self.readers
            .remove(&stream)
            .map(FrameReader::into_unread)
            .unwrap_or_default()
    }

    /// Puts a frame through its stream's payload assembly: the message to
    /// handle, if there is one now. A refused payload of a peer's request is
    /// answered here (ERROR, stream finished) and its rest dropped as it
    /// comes; a refused answer to one of our requests comes back as an
    /// ERROR `too large` for the request, and the stream is stopped.
    fn assemble(
        &mut self,
        stream: StreamId,
        frame: Message,
        share: usize,
    ) -> Result<Option<Message>, wire::AssemblyError> {
        if !self.assemblers.contains_key(&stream) && !matches!(frame, Message::PayloadSize(_)) {
            if let Message::PayloadChunk(_) = frame {
                return Err(wire::AssemblyError::Unexpected {
                    found: "PAYLOAD_CHUNK",
                    expected: "PAYLOAD_SIZE first",
                });
            }
            return Ok(Some(frame));
        }
        let reserved: u64 = self
            .assemblers
            .values()
            .map(PayloadAssembler::reserved)
            .sum();
        let share = u64::try_from(share).unwrap_or(u64::MAX);
        let room = self.bounds.payload_room.min(share).saturating_sub(reserved);
        let assembler = self.assemblers.entry(stream).or_default();
        let step = assembler.push(frame, self.bounds.max_payload, room)?;
        if !assembler.is_open() {
            self.assemblers.remove(&stream);
        }
        Ok(match step {
            Step::Pass(message) | Step::Complete(message) => Some(message),
            Step::Pending | Step::Dropped => None,
            Step::Refused {
                request_id,
                code,
                detail,
            } => {
                let ours = stream.initiator() == self.quinn.side();
                let code = if ours {
                    wire::ErrorCode::TooLarge
                } else {
                    code
                };
                let error = Message::from(wire::ErrorReply {
                    request_id,
                    code,
                    message: detail,
                });
                if ours {
                    // The answer to our request is refused: read no more of it.
                    self.assemblers.remove(&stream);
                    let _ = self.quinn.recv_stream(stream).stop(STREAM_ABANDONED);
                    return Ok(Some(error));
                }
                let _ = self.send(stream, &error, true);
                None
            }
        })
    }

    /// Bytes this connection holds in our buffers: partial frames read and
    /// answers waiting for the peer to read.
    pub fn buffered(&self) -> usize {
        let reading: usize = self.readers.values().map(FrameReader::buffered_len).sum();
        let writing: usize = self
            .writes
            .values()
            .map(|w| w.data.len() + w.tail.len())
            .sum();
        reading + writing
    }

    /// Payload bytes held by streamed payloads being reassembled.
    pub fn assembling(&self) -> usize {
        self.assemblers
            .values()
            .map(PayloadAssembler::buffered_len)
            .sum()
    }

    /// True when reading more would take the connection past its budget,
    /// or past `share`, its share of the node-wide budget (never below one
    /// whole frame, so a frame can always complete).
    pub fn over_budget(&self, share: usize) -> bool {
        let frame = usize::try_from(self.bounds.limits.max_frame_len).unwrap_or(usize::MAX);
        let budget = self.bounds.budget.min(share.max(frame));
        self.buffered() >= budget
    }

    /// True when `stream` may be read now: the connection is under its
    /// budget (`share`: see [`Conn::over_budget`]), or the stream has an
    /// admitted payload (its room is reserved, module docs).
    pub fn may_read(&self, stream: StreamId, share: usize) -> bool {
        !self.over_budget(share)
            || self
                .assemblers
                .get(&stream)
                .is_some_and(|a| a.reserved() > 0)
    }

    /// What to do at `now` with the peer's PING: answer at most
    /// `limits.0` a second (bursts of as many); leave unanswered at most
    /// `limits.1` more a second; past both, the peer is flooding.
    pub fn ping_verdict(&mut self, now: Instant, limits: (u32, u32)) -> PingVerdict {
        let budget = self.pings.get_or_insert_with(|| PingBudget {
            answered: TokenBucket::new(u64::from(limits.0), now),
            unanswered: TokenBucket::new(u64::from(limits.1), now),
        });
        if budget.answered.take(now, 1) {
            PingVerdict::Answer
        } else if budget.unanswered.take(now, 1) {
            PingVerdict::Ignore
        } else {
            PingVerdict::Flooding
        }
    }

    /// The frame-rate bucket at `now`; `None` when reading is not paced.
    fn pace(&mut self, now: Instant) -> Option<&mut TokenBucket> {
        let rate = u64::from(self.bounds.frames_per_second);
        (rate > 0).then(|| self.pace.get_or_insert_with(|| TokenBucket::new(rate, now)))
    }

    /// Whether the peer has had its frame rate's worth read by `now`: its
    /// streams then wait, unread, until [`Conn::resume_at`], and QUIC's flow
    /// control slows the peer down (nothing is dropped).
    pub fn paced(&mut self, now: Instant) -> bool {
        self.resume_at = self.pace(now).and_then(|bucket| bucket.ready_at(now));
        self.resume_at.is_some()
    }

    /// Counts `frames` of the peer read at `now` against its frame rate.
    pub fn count_frames(&mut self, now: Instant, frames: usize) {
        if let Some(bucket) = self.pace(now) {
            bucket.charge(now, frames as u64);
        }
    }

    /// How many streams are parked.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// The next bidirectional stream the peer opened, if QUIC has one to
    /// hand over.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        let stream = self.quinn.streams().accept(Dir::Bi)?;
        self.accepted_from_peer = stream.index() + 1;
        Some(stream)
    }

    /// Whether `stream` is ours to read, answer, reset or stop: one we
    /// opened, or one of the peer's that QUIC handed over
    /// ([`Conn::accept_stream`]). quinn counts a peer's stream when it is
    /// handed over and uncounts it when its sending half is freed; a stream
    /// answered or reset before that is uncounted without having been
    /// counted, which panics in a build with overflow checks. QUIC reports a
    /// peer's stream readable (or stopped) before it is handed over when
    /// the peer wrote on it (or stopped it) again after opening it.
    pub fn is_accepted(&self, stream: StreamId) -> bool {
        stream.initiator() == self.quinn.side()
            || (stream.dir() == Dir::Bi && stream.index() < self.accepted_from_peer)
    }

    /// Leaves `stream` unread until the connection is under budget again.
    pub fn park(&mut self, stream: StreamId) {
        if !self.parked.contains(&stream) {
            self.parked.push_back(stream);
        }
    }

    /// The next parked stream to read, once the connection is ready, under
    /// budget (`share`: see [`Conn::over_budget`]) and not paced at `now`.
    pub fn unpark(&mut self, now: Instant, share: usize) -> Option<StreamId> {
        if self.phase != Phase::Ready || self.over_budget(share) || self.paced(now) {
            None
        } else {
            self.parked.pop_front()
        }
    }

    /// Forgets a stream's reader (its request is answered).
    pub fn forget(&mut self, stream: StreamId) {
        self.readers.remove(&stream);
        self.assemblers.remove(&stream);
    }

    /// Moves the connection to its next phase on `event` (an event its phase
    /// does not take is ignored); past "awaiting CONNECT" the connection has
    /// no deadline left.
    pub fn step(&mut self, event: PhaseEvent) {
        if let Some(next) = self.phase.after(event) {
            self.phase = next;
        }
        if !matches!(self.phase, Phase::Handshaking | Phase::AwaitingConnect) {
            self.connect_deadline = None;
        }
    }

    /// Whether the connection's handshake or CONNECT deadline has passed at
    /// `now` (the deadline exists only until the connection is ready).
    pub fn connect_overdue(&self, now: Instant) -> bool {
        self.connect_deadline.is_some_and(|at| at <= now)
    }
}

/// Finishes our side of a stream, or resets it with the peer's code if the
/// peer stopped it. A stream stopped before we accepted it
/// ([`Conn::is_accepted`]) had its `Stopped` event left alone; its answer
/// meets the stop here, and the reset frees its credit as for any stopped
/// stream (RFC 9000 §3.5).
fn finish_or_reset(send: &mut quinn_proto::SendStream<'_>) {
    if let Err(quinn_proto::FinishError::Stopped(code)) = send.finish() {
        let _ = send.reset(code);
    }
}

/// Feeds the chunks that have arrived on `stream` to `sink`, at most
/// `quantum` bytes, and says how far that went (finished also when the
/// stream is not ours to read any more).
fn read_chunks(
    quinn: &mut Connection,
    stream: StreamId,
    quantum: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<Drained, StreamTrouble> {
    let mut recv = quinn.recv_stream(stream);
    let Ok(mut chunks) = recv.read(true) else {
        // Already finished and read, or never ours to read.
        return Ok(Drained::Finished);
    };
    let mut left = quantum;
    let drained = loop {
        if left == 0 {
            break Drained::Quantum;
        }
        match chunks.next(left) {
            Ok(Some(chunk)) => {
                left -= chunk.bytes.len();
                sink(&chunk.bytes);
            }
            Ok(None) => break Drained::Finished,
            Err(quinn_proto::ReadError::Blocked) => break Drained::Blocked,
            Err(quinn_proto::ReadError::Reset(code)) => {
                let _ = chunks.finalize();
                return Err(StreamTrouble::Reset(code));
            }
        }
    };
    let _ = chunks.finalize();
    Ok(drained)
}
