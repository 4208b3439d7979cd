//! One QUIC connection as the node sees it: quinn's state plus the
//! protocol state on top (the CONNECT exchange, frame readers per stream,
//! writes waiting for flow control, requests waiting for answers).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{Connection, Dir, StreamId, VarInt};

use crate::collections::HashMap;
use crate::dht::RequestId;
use crate::id::NodeId;
use crate::pool::{ConnId, Direction, Lease};
use crate::wire::{self, FrameReader, Limits, Message};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The QUIC handshake is running.
    Handshaking,
    /// QUIC is up; the peer's CONNECT has not been accepted yet.
    AwaitingConnect,
    /// Both CONNECTs are through: requests flow.
    Ready,
    /// Closing or closed.
    Closing,
}

/// A request we sent, waiting for its answer.
#[derive(Debug)]
pub struct Ask {
    /// The id the answer echoes.
    pub request_id: RequestId,
    /// The pool lease the request holds.
    pub lease: Lease,
    /// When the stream is given up.
    pub deadline: Instant,
}

/// A request that waits for a stream (the peer's stream limit is reached).
#[derive(Debug)]
pub struct Blocked {
    /// The frame to send.
    pub frame: Message,
    /// The request.
    pub request_id: RequestId,
    /// Its lease.
    pub lease: Lease,
}

/// Bytes waiting for stream flow control.
#[derive(Debug)]
struct PendingWrite {
    data: Bytes,
    finish: bool,
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
    /// Requests we sent on streams of their own.
    pub asks: HashMap<StreamId, Ask>,
    /// PINGs we sent on the control stream, by request id.
    pub pings: HashMap<u64, Ask>,
    /// Requests waiting for the peer to allow another stream.
    pub blocked: VecDeque<Blocked>,
    readers: HashMap<StreamId, FrameReader>,
    writes: HashMap<StreamId, PendingWrite>,
    /// Streams with data we did not read because the connection was over
    /// its buffer budget; QUIC flow control holds their bytes meanwhile.
    parked: VecDeque<StreamId>,
    budget: usize,
    limits: Limits,
}

/// What went wrong on a stream, for the caller to act on.
#[derive(Debug)]
pub enum StreamTrouble {
    /// The peer reset the stream, with this error code.
    Reset(VarInt),
    /// The bytes do not decode.
    Decode(wire::DecodeError),
}

impl Conn {
    /// A connection that has just been dialed or accepted.
    pub fn new(
        quinn: Connection,
        direction: Direction,
        peer: Option<NodeId>,
        remote: SocketAddr,
        virtual_addr: SocketAddr,
        limits: Limits,
        budget: usize,
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
            asks: HashMap::default(),
            pings: HashMap::default(),
            blocked: VecDeque::new(),
            readers: HashMap::default(),
            writes: HashMap::default(),
            parked: VecDeque::new(),
            budget,
            limits,
        }
    }

    /// Opens a bidirectional stream, if the peer allows another.
    pub fn open(&mut self) -> Option<StreamId> {
        self.quinn.streams().open(Dir::Bi)
    }

    /// Writes `frame` on `stream`, finishing the sending side after it if
    /// `finish`. What flow control holds back goes out on
    /// [`Conn::flush_stream`].
    pub fn send(
        &mut self,
        stream: StreamId,
        frame: &Message,
        finish: bool,
    ) -> Result<(), wire::EncodeError> {
        let data = frame.to_vec(&self.limits)?;
        self.write(stream, Bytes::from(data), finish);
        Ok(())
    }

    /// Writes raw bytes (circuit frames) on `stream`, queued behind what
    /// waits for flow control.
    pub fn send_raw(&mut self, stream: StreamId, data: Bytes) {
        self.write(stream, data, false);
    }

    /// Bytes written on `stream` that wait for flow control.
    pub fn queued(&self, stream: StreamId) -> usize {
        self.writes.get(&stream).map_or(0, |w| w.data.len())
    }

    fn write(&mut self, stream: StreamId, data: Bytes, finish: bool) {
        match self.writes.get_mut(&stream) {
            // Frames written while earlier ones wait for flow control queue
            // behind them (a publish stream carries many).
            Some(pending) => {
                let mut joined = Vec::with_capacity(pending.data.len() + data.len());
                joined.extend_from_slice(&pending.data);
                joined.extend_from_slice(&data);
                pending.data = Bytes::from(joined);
                pending.finish |= finish;
            }
            None => {
                self.writes.insert(stream, PendingWrite { data, finish });
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
        let mut send = self.quinn.send_stream(stream);
        while !pending.data.is_empty() {
            match send.write(&pending.data) {
                Ok(0) => return,
                Ok(n) => {
                    let _ = pending.data.split_to(n);
                }
                Err(quinn_proto::WriteError::Blocked) => return,
                Err(_) => {
                    // Stopped or closed: nobody will read the rest.
                    self.writes.remove(&stream);
                    return;
                }
            }
        }
        if pending.finish {
            let _ = send.finish();
        }
        self.writes.remove(&stream);
    }

    /// Finishes our side of `stream` once what is written on it is out.
    pub fn finish(&mut self, stream: StreamId) {
        match self.writes.get_mut(&stream) {
            Some(pending) => pending.finish = true,
            None => {
                let _ = self.quinn.send_stream(stream).finish();
            }
        }
    }

    /// Abandons a stream both ways.
    pub fn abandon(&mut self, stream: StreamId, code: VarInt) {
        self.writes.remove(&stream);
        self.readers.remove(&stream);
        let _ = self.quinn.send_stream(stream).reset(code);
        let _ = self.quinn.recv_stream(stream).stop(code);
    }

    /// Reads what has arrived on `stream` and returns the complete frames,
    /// plus whether the peer finished the stream. Decoding stops after a
    /// frame that turns the stream into a circuit
    /// ([`Message::starts_circuit`]); the bytes after it are taken with
    /// [`Conn::take_unread`].
    pub fn read(&mut self, stream: StreamId) -> Result<(Vec<Message>, bool), StreamTrouble> {
        let limits = self.limits;
        let reader = self
            .readers
            .entry(stream)
            .or_insert_with(|| FrameReader::new(limits));
        let finished = match read_chunks(&mut self.quinn, stream, |chunk| reader.push(chunk)) {
            Ok(finished) => finished,
            Err(trouble) => {
                self.readers.remove(&stream);
                return Err(trouble);
            }
        };
        let mut messages = Vec::new();
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    let switches = message.starts_circuit();
                    messages.push(message);
                    if switches {
                        return Ok((messages, finished));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.readers.remove(&stream);
                    return Err(StreamTrouble::Decode(error));
                }
            }
        }
        if finished {
            self.readers.remove(&stream);
        }
        Ok((messages, finished))
    }

    /// Reads the raw bytes that have arrived on a circuit stream into
    /// `sink`; true when the peer finished the stream.
    pub fn read_raw(
        &mut self,
        stream: StreamId,
        sink: impl FnMut(&[u8]),
    ) -> Result<bool, StreamTrouble> {
        read_chunks(&mut self.quinn, stream, sink)
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

    /// Bytes this connection holds in our buffers: partial frames read and
    /// answers waiting for the peer to read.
    pub fn buffered(&self) -> usize {
        let reading: usize = self.readers.values().map(FrameReader::buffered_len).sum();
        let writing: usize = self.writes.values().map(|w| w.data.len()).sum();
        reading + writing
    }

    /// True when reading more would take the connection past its budget.
    pub fn over_budget(&self) -> bool {
        self.buffered() >= self.budget
    }

    /// Leaves `stream` unread until the connection is under budget again.
    pub fn park(&mut self, stream: StreamId) {
        if !self.parked.contains(&stream) {
            self.parked.push_back(stream);
        }
    }

    /// The next parked stream to read, once the connection is under budget.
    pub fn unpark(&mut self) -> Option<StreamId> {
        if self.over_budget() {
            None
        } else {
            self.parked.pop_front()
        }
    }

    /// Forgets a stream's reader (its request is answered).
    pub fn forget(&mut self, stream: StreamId) {
        self.readers.remove(&stream);
    }

    /// Every lease this connection's requests hold, with their request ids,
    /// taken out of the connection (it is going away).
    pub fn take_requests(&mut self) -> Vec<(RequestId, Lease)> {
        let asks = self.asks.drain().map(|(_, ask)| ask);
        let pings = self.pings.drain().map(|(_, ask)| ask);
        let mut taken: Vec<_> = asks
            .chain(pings)
            .map(|ask| (ask.request_id, ask.lease))
            .collect();
        taken.extend(self.blocked.drain(..).map(|b| (b.request_id, b.lease)));
        taken
    }

    /// The earliest request deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.asks
            .values()
            .chain(self.pings.values())
            .map(|ask| ask.deadline)
            .min()
    }
}

/// Feeds every chunk that has arrived on `stream` to `sink`; true when the
/// peer finished the stream (or it is not ours to read any more).
fn read_chunks(
    quinn: &mut Connection,
    stream: StreamId,
    mut sink: impl FnMut(&[u8]),
) -> Result<bool, StreamTrouble> {
    let mut recv = quinn.recv_stream(stream);
    let Ok(mut chunks) = recv.read(true) else {
        // Already finished and read, or never ours to read.
        return Ok(true);
    };
    let mut finished = false;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => sink(&chunk.bytes),
            Ok(None) => {
                finished = true;
                break;
            }
            Err(quinn_proto::ReadError::Blocked) => break,
            Err(quinn_proto::ReadError::Reset(code)) => {
                let _ = chunks.finalize();
                return Err(StreamTrouble::Reset(code));
            }
        }
    }
    let _ = chunks.finalize();
    Ok(finished)
}
