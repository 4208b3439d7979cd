//! Streamed payloads (docs/PROTOCOL.md §8.3, "Streamed payloads"): a CALL
//! or REPLY whose frame would be over [`Limits::max_frame_len`] goes on its
//! stream as PAYLOAD_SIZE (the whole payload's length), then the CALL or
//! REPLY carrying the first [`part_len`] bytes of the payload, then
//! PAYLOAD_CHUNK frames with the rest, in order, each at most [`part_len`]
//! bytes. Flow control is QUIC's: the sender produces the next chunk only
//! when the stream took the previous one.
//!
//! The receiver puts a stream's frames through a [`PayloadAssembler`]. It
//! checks the declared length before buffering anything: over the
//! receiver's payload limit the payload is refused `too large`, over the
//! room its connection has left for payloads being assembled it is refused
//! `overloaded`; a refused payload's remaining frames are counted and
//! dropped, never buffered. An admitted payload grows as its chunks arrive,
//! never past its declared length.

use bytes::Bytes;

use super::{Call, ErrorCode, Limits, Message, PayloadChunk, PayloadSize, Reply};

/// The most payload bytes one part (the head's share, or one chunk)
/// carries: half the frame limit, which leaves the head's other fields
/// (a procedure name is at most `max_string_len` bytes) ample room.
pub fn part_len(limits: &Limits) -> usize {
    (limits.max_frame_len / 2).max(1) as usize
}

/// A CALL or REPLY too large for one frame, cut for streaming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// The frame that announces the length.
    pub size: PayloadSize,
    /// The CALL or REPLY with the payload's first part.
    pub head: Message,
    /// The payload bytes still to go, as PAYLOAD_CHUNKs ([`Streamed::next_chunk`]).
    pub rest: Bytes,
}

impl Streamed {
    /// Cuts `message` for streaming when it is a CALL or REPLY whose frame
    /// is over the frame limit; `None` for every other message.
    pub fn split(message: &Message, limits: &Limits) -> Option<Streamed> {
        let (request_id, payload) = match message {
            Message::Call(Call {
                request_id,
                payload,
                ..
            })
            | Message::Reply(Reply {
                request_id,
                payload,
            }) => (*request_id, payload),
            _ => return None,
        };
        if message.encoded_len(limits).is_ok() {
            return None;
        }
        let first = payload.slice(..part_len(limits).min(payload.len()));
        let rest = payload.slice(first.len()..);
        let mut head = message.clone();
        match &mut head {
            Message::Call(call) => call.payload = first,
            Message::Reply(reply) => reply.payload = first,
            _ => unreachable!("matched above"),
        }
        let size = PayloadSize {
            request_id,
            total_len: payload.len() as u64,
        };
        Some(Streamed { size, head, rest })
    }

    /// The next PAYLOAD_CHUNK, taken off [`Streamed::rest`]; `None` when
    /// everything is sent.
    pub fn next_chunk(&mut self, limits: &Limits) -> Option<PayloadChunk> {
        if self.rest.is_empty() {
            return None;
        }
        let data = self.rest.split_to(part_len(limits).min(self.rest.len()));
        Some(PayloadChunk {
            request_id: self.size.request_id,
            data,
        })
    }
}

/// A stream broke the streamed-payload rules (a protocol error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// A frame that does not belong where it came.
    #[error("{found} where {expected} was expected")]
    Unexpected {
        /// The frame's type name.
        found: &'static str,
        /// What the stream needed.
        expected: &'static str,
    },
    /// A part of another request's payload.
    #[error("a part of request {found} in the payload of request {expected}")]
    WrongRequest {
        /// The request whose payload is open.
        expected: u64,
        /// The request the part names.
        found: u64,
    },
    /// More bytes than PAYLOAD_SIZE declared.
    #[error("{received} payload bytes where {declared} were declared")]
    Overflow {
        /// The declared length.
        declared: u64,
        /// The bytes received so far.
        received: u64,
    },
}

/// What one frame did to its stream's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not part of a streamed payload: handle it as it is.
    Pass(Message),
    /// A streamed CALL or REPLY is complete: handle it as if it had come in
    /// one frame.
    Complete(Message),
    /// A part was taken; more are to come.
    Pending,
    /// The declared payload is refused: answer `code` (for a CALL) or fail
    /// the request (for a REPLY). Its remaining frames are dropped.
    Refused {
        /// The request.
        request_id: u64,
        /// `too large` or `overloaded`.
        code: ErrorCode,
        /// The detail for the ERROR.
        detail: String,
    },
    /// A part of a refused payload was dropped.
    Dropped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    AwaitingHead {
        request_id: u64,
        total: u64,
    },
    Filling {
        head: Message,
        payload: Vec<u8>,
        total: u64,
    },
    Dropping {
        request_id: u64,
        head_seen: bool,
        remaining: u64,
    },
}

/// One stream's streamed payload, if one is open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayloadAssembler {
    state: Option<State>,
}

impl PayloadAssembler {
    /// True while a payload is open on the stream.
    pub fn is_open(&self) -> bool {
        self.state.is_some()
    }

    /// The bytes reserved for the open payload (its declared length while
    /// it is admitted; 0 when none is, or it is being dropped).
    pub fn reserved(&self) -> u64 {
        match &self.state {
            Some(State::AwaitingHead { total, .. } | State::Filling { total, .. }) => *total,
            _ => 0,
        }
    }

    /// Payload bytes held so far.
    pub fn buffered_len(&self) -> usize {
        match &self.state {
            Some(State::Filling { payload, .. }) => payload.len(),
            _ => 0,
        }
    }

    /// Takes the stream's next frame. A PAYLOAD_SIZE is admitted when its
    /// length is at most `max_payload` and at most `room` (what the
    /// connection has left for payloads being assembled).
    pub fn push(
        &mut self,
        frame: Message,
        max_payload: u64,
        room: u64,
    ) -> Result<Step, AssemblyError> {
        match self.state.take() {
            None => Ok(self.start(frame, max_payload, room)?),
            Some(State::AwaitingHead { request_id, total }) => {
                let part = head_part(&frame, request_id, "the CALL or REPLY")?;
                self.fill(frame.clone(), Vec::new(), total, part)
            }
            Some(State::Filling {
                head,
                payload,
                total,
            }) => {
                let request_id = head.request_id().unwrap_or_default();
                let data = chunk_part(frame, request_id)?;
                self.fill(head, payload, total, data)
            }
            Some(State::Dropping {
                request_id,
                head_seen,
                remaining,
            }) => {
                let len = if head_seen {
                    chunk_part(frame, request_id)?.len()
                } else {
                    head_part(&frame, request_id, "the refused CALL or REPLY")?.len()
                } as u64;
                let remaining = remaining.checked_sub(len).ok_or(AssemblyError::Overflow {
                    declared: remaining,
                    received: len,
                })?;
                if remaining > 0 {
                    self.state = Some(State::Dropping {
                        request_id,
                        head_seen: true,
                        remaining,
                    });
                }
                Ok(Step::Dropped)
            }
        }
    }

    fn start(
        &mut self,
        frame: Message,
        max_payload: u64,
        room: u64,
    ) -> Result<Step, AssemblyError> {
        let size = match frame {
            Message::PayloadSize(size) => size,
            Message::PayloadChunk(_) => {
                return Err(AssemblyError::Unexpected {
                    found: "PAYLOAD_CHUNK",
                    expected: "PAYLOAD_SIZE first",
                });
            }
            other => return Ok(Step::Pass(other)),
        };
        let (request_id, total) = (size.request_id, size.total_len);
        let refusal = if total > max_payload {
            Some((
                ErrorCode::TooLarge,
                format!("payload of {total} bytes; the limit is {max_payload}"),
            ))
        } else if total > room {
            Some((
                ErrorCode::Overloaded,
                format!("payload of {total} bytes; {room} bytes free for payloads"),
            ))
        } else {
            None
        };
        let Some((code, detail)) = refusal else {
            self.state = Some(State::AwaitingHead { request_id, total });
            return Ok(Step::Pending);
        };
        self.state = Some(State::Dropping {
            request_id,
            head_seen: false,
            remaining: total,
        });
        Ok(Step::Refused {
            request_id,
            code,
            detail,
        })
    }

    fn fill(
        &mut self,
        head: Message,
        mut payload: Vec<u8>,
        total: u64,
        part: Bytes,
    ) -> Result<Step, AssemblyError> {
        let received = (payload.len() + part.len()) as u64;
        if received > total {
            return Err(AssemblyError::Overflow {
                declared: total,
                received,
            });
        }
        payload.extend_from_slice(&part);
        if received < total {
            self.state = Some(State::Filling {
                head,
                payload,
                total,
            });
            return Ok(Step::Pending);
        }
        let mut whole = head;
        match &mut whole {
            Message::Call(call) => call.payload = Bytes::from(payload),
            Message::Reply(reply) => reply.payload = Bytes::from(payload),
            _ => unreachable!("heads are CALL or REPLY"),
        }
        Ok(Step::Complete(whole))
    }
}

/// The payload part of a streamed payload's head (a CALL or REPLY of
/// `request_id`).
fn head_part(
    frame: &Message,
    request_id: u64,
    expected: &'static str,
) -> Result<Bytes, AssemblyError> {
    let (found, payload) = match frame {
        Message::Call(call) => (call.request_id, &call.payload),
        Message::Reply(reply) => (reply.request_id, &reply.payload),
        other => {
            return Err(AssemblyError::Unexpected {
                found: other.message_type().name(),
                expected,
            });
        }
    };
    if found != request_id {
        return Err(AssemblyError::WrongRequest {
            expected: request_id,
            found,
        });
    }
    Ok(payload.clone())
}

/// The data of a PAYLOAD_CHUNK of `request_id`.
fn chunk_part(frame: Message, request_id: u64) -> Result<Bytes, AssemblyError> {
    match frame {
        Message::PayloadChunk(chunk) if chunk.request_id == request_id => Ok(chunk.data),
        Message::PayloadChunk(chunk) => Err(AssemblyError::WrongRequest {
            expected: request_id,
            found: chunk.request_id,
        }),
        other => Err(AssemblyError::Unexpected {
            found: other.message_type().name(),
            expected: "PAYLOAD_CHUNK",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits {
            max_frame_len: 64,
            ..Limits::default()
        }
    }

    fn call(payload: Vec<u8>) -> Message {
        Message::Call(Call {
            request_id: 7,
            procedure: "svc.big".into(),
            timeout_ms: 1000,
            idempotent: false,
            payload: Bytes::from(payload),
        })
    }

    /// Every frame `message` goes out as.
    fn frames(message: &Message) -> Vec<Message> {
        let Some(mut streamed) = Streamed::split(message, &limits()) else {
            return vec![message.clone()];
        };
        let mut out = vec![
            Message::PayloadSize(streamed.size.clone()),
            streamed.head.clone(),
        ];
        while let Some(chunk) = streamed.next_chunk(&limits()) {
            assert!(chunk.data.len() <= part_len(&limits()));
            out.push(Message::PayloadChunk(chunk));
        }
        out
    }

    #[test]
    fn a_large_call_is_cut_into_frames_that_fit_and_put_back_together() {
        for len in [0, 10, 31, 32, 33, 100, 1000] {
            let message = call((0..len).map(|i| i as u8).collect());
            let frames = frames(&message);
            let limits = limits();
            for frame in &frames {
                assert!(frame.to_vec(&limits).is_ok(), "{len}: {frame:?} fits");
            }
            let mut assembler = PayloadAssembler::default();
            let mut whole = None;
            for frame in frames {
                match assembler.push(frame, u64::MAX, u64::MAX).unwrap() {
                    Step::Pass(m) | Step::Complete(m) => whole = Some(m),
                    Step::Pending => assert!(whole.is_none()),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(whole, Some(message), "{len}");
            assert!(!assembler.is_open());
        }
    }

    #[test]
    fn a_giant_declared_payload_is_refused_and_dropped_without_buffering() {
        let mut assembler = PayloadAssembler::default();
        let size = PayloadSize {
            request_id: 7,
            total_len: u64::MAX,
        };
        let step = assembler.push(Message::PayloadSize(size), 16 * MIB, 16 * MIB);
        assert!(matches!(
            step,
            Ok(Step::Refused {
                request_id: 7,
                code: ErrorCode::TooLarge,
                ..
            })
        ));
        assert_eq!((assembler.reserved(), assembler.buffered_len()), (0, 0));
        assert_eq!(
            assembler.push(call(vec![1; 32]), 16 * MIB, 16 * MIB),
            Ok(Step::Dropped)
        );
        for _ in 0..100 {
            let chunk = PayloadChunk {
                request_id: 7,
                data: Bytes::from(vec![0; 32]),
            };
            let step = assembler.push(Message::PayloadChunk(chunk), 16 * MIB, 16 * MIB);
            assert_eq!(step, Ok(Step::Dropped));
            assert_eq!(assembler.buffered_len(), 0);
        }
    }

    #[test]
    fn no_room_is_overloaded_and_the_refused_frames_are_dropped_to_the_end() {
        let frames = frames(&call(vec![9; 100]));
        let mut assembler = PayloadAssembler::default();
        let mut steps = frames
            .into_iter()
            .map(|f| assembler.push(f, MIB, 99).unwrap());
        assert!(matches!(
            steps.next(),
            Some(Step::Refused {
                code: ErrorCode::Overloaded,
                ..
            })
        ));
        assert!(steps.all(|s| s == Step::Dropped));
        assert!(!assembler.is_open(), "the next payload may start");
    }

    #[test]
    fn broken_sequences_are_protocol_errors() {
        let limits = limits();
        let frames = frames(&call(vec![1; 100]));
        let push_all = |frames: Vec<Message>| {
            let mut assembler = PayloadAssembler::default();
            frames
                .into_iter()
                .try_for_each(|f| assembler.push(f, MIB, MIB).map(drop))
        };
        // A chunk with no PAYLOAD_SIZE, a missing head, a foreign request,
        // more bytes than declared.
        assert!(push_all(frames[2..].to_vec()).is_err());
        let mut no_head = frames.clone();
        no_head.remove(1);
        assert!(push_all(no_head).is_err());
        let mut foreign = frames.clone();
        if let Message::PayloadChunk(chunk) = &mut foreign[2] {
            chunk.request_id = 8;
        }
        assert!(push_all(foreign).is_err());
        let mut extra = frames.clone();
        extra.push(Message::PayloadChunk(PayloadChunk {
            request_id: 7,
            data: Bytes::from_static(b"x"),
        }));
        assert!(push_all(extra).is_err());
        let mut short = Streamed::split(&call(vec![1; 100]), &limits).unwrap();
        short.size.total_len = 10;
        assert!(push_all(vec![Message::PayloadSize(short.size), short.head]).is_err());
    }
}
