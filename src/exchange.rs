//! Requests over leased streams: the one service DHT requests and RPC calls
//! share.
//!
//! An exchange is one request and its answer. Its owner starts it with the
//! frame to send ([`Exchanges::start`]), finds a connection to the peer (the
//! pool's business), and hands the lease over ([`Exchanges::handle_leased`]).
//! From there this machine does the rest: it asks for a stream and the
//! request written on it ([`ExchangeOutput::Send`]), or queues the request,
//! oldest first, while the peer allows no more streams; it learns the stream
//! the request went out on, matches the answer that comes back there, gives
//! the lease back, and ends the exchange without an answer when the stream
//! is reset or stopped, the connection is lost, or the answer is overdue.
//! A request answered on the connection's control stream (PING) is matched
//! by its request id instead of a stream ([`Lane::Control`]).
//!
//! What a stream is for after its answer (finished, forgotten, reset) is the
//! owner's to say: the outputs name the [`Slot`] an exchange used.

use std::collections::{BTreeSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use quinn_proto::StreamId;

use crate::collections::HashMap;
use crate::contract::{Child, OutputQueue};
use crate::id::NodeId;
use crate::pool::{ConnId, Lease};
use crate::wire::Message;

/// One stream of a pooled connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The connection.
    pub conn: ConnId,
    /// The stream.
    pub stream: StreamId,
}

/// A request by the peer it goes to (or came from) and its request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRequest {
    /// The peer.
    pub peer: NodeId,
    /// The request id.
    pub request_id: u64,
}

/// Where a request goes, and so where its answer comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A stream of its own, opened for it.
    OwnStream,
    /// The connection's control stream; the answer echoes `request_id`.
    Control {
        /// The request id the answer echoes.
        request_id: u64,
    },
}

/// Where an exchange's answer is awaited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// On the request's own stream.
    Stream(StreamKey),
    /// On the control stream of `conn`, by request id.
    Control {
        /// The connection.
        conn: ConnId,
        /// The request id the answer echoes.
        request_id: u64,
    },
}

impl Slot {
    /// The request's own stream, if it has one.
    pub fn stream(self) -> Option<StreamKey> {
        match self {
            Slot::Stream(at) => Some(at),
            Slot::Control { .. } => None,
        }
    }

    /// The connection the slot is on.
    pub fn conn(self) -> ConnId {
        match self {
            Slot::Stream(at) => at.conn,
            Slot::Control { conn, .. } => conn,
        }
    }
}

/// Why the owner could not send an [`ExchangeOutput::Send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unopened {
    /// The connection is gone (or has no control stream).
    Gone,
    /// The peer allows no more streams for now.
    Blocked,
    /// The frame did not encode (the stream was refused).
    NotEncoded,
    /// The peer did not announce the capability the request needs
    /// (docs/PROTOCOL.md §6): it was not sent.
    NotServed,
}

/// Why an exchange ended without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// The request never went out: no connection, or none before it went
    /// away.
    NotSent,
    /// The frame did not encode.
    Unsendable,
    /// The peer stopped or reset the stream with its "refused" code: it did
    /// not serve the request.
    Refused,
    /// The peer reset or stopped the stream after the request went out.
    Reset,
    /// The connection went away after the request went out.
    ConnectionLost,
    /// No answer by the deadline.
    TimedOut,
}

impl Unanswered {
    /// True when the peer may have acted on the request.
    pub fn maybe_delivered(self) -> bool {
        matches!(self, Self::Reset | Self::ConnectionLost | Self::TimedOut)
    }
}

/// What [`Exchanges`] asks its owner to do or tells it.
#[derive(Debug)]
pub enum ExchangeOutput<K> {
    /// Write `frame` on the lease's connection: on a new stream for
    /// [`Lane::OwnStream`], on the control stream for [`Lane::Control`]; then
    /// answer with [`Exchanges::handle_opened`], handing the lease back.
    Send {
        /// The exchange.
        key: K,
        /// The lease the request goes on.
        lease: Lease,
        /// Where it goes.
        lane: Lane,
        /// The request.
        frame: Message,
    },
    /// The request went out; its answer is awaited at `slot`.
    Sent {
        /// The exchange.
        key: K,
        /// Where the answer is awaited.
        slot: Slot,
    },
    /// A stream opened for an exchange that ended meanwhile: reset it.
    Abandon(StreamKey),
    /// Give a lease back to the pool.
    Release(Lease),
    /// The answer came (the lease is released).
    Answered {
        /// The exchange.
        key: K,
        /// Where it came.
        slot: Slot,
        /// The answer.
        message: Message,
    },
    /// The exchange ended without an answer (the lease is released).
    Failed {
        /// The exchange.
        key: K,
        /// Where the request went, if it went out.
        slot: Option<Slot>,
        /// Why.
        why: Unanswered,
    },
}

/// Where one exchange is.
#[derive(Debug)]
enum State {
    /// Waiting for a lease, or for the owner to send on the one it has.
    Reaching,
    /// Waiting for the peer to allow another stream.
    Blocked(Lease),
    /// Sent; waiting for the answer.
    Open {
        slot: Slot,
        lease: Lease,
        deadline: Option<Instant>,
    },
}

#[derive(Debug)]
struct Entry {
    frame: Message,
    lane: Lane,
    state: State,
}

/// The exchanges of one owner, keyed by the owner's `K` (see the module
/// docs).
#[derive(Debug)]
pub struct Exchanges<K> {
    entries: HashMap<K, Entry>,
    by_slot: HashMap<Slot, K>,
    /// Exchanges waiting for a stream on each connection, oldest first.
    blocked: HashMap<ConnId, VecDeque<K>>,
    deadlines: BTreeSet<(Instant, K)>,
    answer_timeout: Option<Duration>,
    out: OutputQueue<ExchangeOutput<K>>,
}

impl<K: Copy + Eq + Hash + Ord> Exchanges<K> {
    /// No exchanges; an answer is awaited at most `answer_timeout` after its
    /// request went out (`None`: the owner keeps its own time).
    pub fn new(answer_timeout: Option<Duration>) -> Self {
        Self {
            entries: HashMap::default(),
            by_slot: HashMap::default(),
            blocked: HashMap::default(),
            deadlines: BTreeSet::new(),
            answer_timeout,
            out: OutputQueue::new(),
        }
    }

    /// Exchanges under way.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts exchange `key` with `frame` going on `lane` (the owner finds
    /// the connection). A key already under way is left alone: false.
    pub fn start(&mut self, key: K, frame: Message, lane: Lane) -> bool {
        if self.entries.contains_key(&key) {
            return false;
        }
        let state = State::Reaching;
        self.entries.insert(key, Entry { frame, lane, state });
        true
    }

    /// The owner has a lease for `key`: the request is sent on it (the lease
    /// goes back when the exchange ended meanwhile).
    pub fn handle_leased(&mut self, key: K, lease: Lease) {
        match self.entries.get(&key) {
            Some(entry) => self.out.push(send(key, entry, lease)),
            None => self.out.push(ExchangeOutput::Release(lease)),
        }
    }

    /// The owner found no connection for `key`.
    pub fn handle_unreachable(&mut self, key: K) {
        self.fail(key, Unanswered::NotSent);
    }

    /// The outcome of an [`ExchangeOutput::Send`], with its lease back:
    /// the slot the request went out on (its new stream, or the control
    /// stream), or why it did not.
    pub fn handle_opened(
        &mut self,
        now: Instant,
        key: K,
        lease: Lease,
        opened: Result<Slot, Unopened>,
    ) {
        let conn = lease.conn();
        let queued = self.blocked.get(&conn).and_then(VecDeque::front) == Some(&key);
        let Some(entry) = self.entries.get_mut(&key) else {
            // Ended meanwhile.
            if let Some(at) = opened.ok().and_then(Slot::stream) {
                self.out.push(ExchangeOutput::Abandon(at));
            }
            self.out.push(ExchangeOutput::Release(lease));
            return;
        };
        match opened {
            Ok(slot) => {
                let deadline = self.answer_timeout.map(|t| now + t);
                entry.state = State::Open {
                    slot,
                    lease,
                    deadline,
                };
                self.by_slot.insert(slot, key);
                if let Some(at) = deadline {
                    self.deadlines.insert((at, key));
                }
                self.out.push(ExchangeOutput::Sent { key, slot });
            }
            Err(Unopened::Blocked) => {
                entry.state = State::Blocked(lease);
                if !queued {
                    self.blocked.entry(conn).or_default().push_back(key);
                }
                return;
            }
            Err(unopened) => {
                self.out.push(ExchangeOutput::Release(lease));
                self.entries.remove(&key);
                let why = match unopened {
                    Unopened::NotEncoded => Unanswered::Unsendable,
                    Unopened::NotServed => Unanswered::Refused,
                    Unopened::Gone | Unopened::Blocked => Unanswered::NotSent,
                };
                let slot = None;
                self.out.push(ExchangeOutput::Failed { key, slot, why });
            }
        }
        if queued {
            if let Some(queue) = self.blocked.get_mut(&conn) {
                queue.pop_front();
            }
            self.handle_streams_available(conn);
        }
    }

    /// `conn` allows more streams: the oldest exchange waiting on it goes
    /// (the next ones follow once its stream is open).
    pub fn handle_streams_available(&mut self, conn: ConnId) {
        loop {
            let Some(queue) = self.blocked.get_mut(&conn) else {
                return;
            };
            let Some(&key) = queue.front() else {
                self.blocked.remove(&conn);
                return;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                queue.pop_front(); // ended meanwhile
                continue;
            };
            match std::mem::replace(&mut entry.state, State::Reaching) {
                State::Blocked(lease) => {
                    self.out.push(send(key, entry, lease));
                    return;
                }
                other => {
                    entry.state = other;
                    queue.pop_front();
                }
            }
        }
    }

    /// The exchanges whose requests went out on `conn` and await their
    /// answers.
    pub fn sent_on(&self, conn: ConnId) -> impl Iterator<Item = K> + '_ {
        (self.by_slot.iter())
            .filter(move |(slot, _)| slot.conn() == conn)
            .map(|(_, &key)| key)
    }

    /// True when an answer is awaited at `slot`.
    pub fn awaits(&self, slot: Slot) -> bool {
        self.by_slot.contains_key(&slot)
    }

    /// A frame at `slot`: the answer of the exchange awaiting there (it
    /// ends), else the frame comes back.
    pub fn handle_answer(&mut self, slot: Slot, message: Message) -> Option<Message> {
        let Some(&key) = self.by_slot.get(&slot) else {
            return Some(message);
        };
        self.take(key);
        self.out
            .push(ExchangeOutput::Answered { key, slot, message });
        None
    }

    /// The peer reset or stopped `at` (`refused`: with the node's "refused"
    /// code): the exchange on it fails.
    pub fn handle_stream_gone(&mut self, at: StreamKey, refused: bool) {
        if let Some(&key) = self.by_slot.get(&Slot::Stream(at)) {
            let why = if refused {
                Unanswered::Refused
            } else {
                Unanswered::Reset
            };
            self.fail(key, why);
        }
    }

    /// `conn` is going away: its exchanges fail (a sent request was lost, a
    /// blocked one was never sent).
    pub fn handle_conn_gone(&mut self, conn: ConnId) {
        self.blocked.remove(&conn);
        let failed: Vec<(K, Unanswered)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match &entry.state {
                State::Open { slot, .. } if slot.conn() == conn => {
                    Some((*key, Unanswered::ConnectionLost))
                }
                State::Blocked(lease) if lease.conn() == conn => Some((*key, Unanswered::NotSent)),
                _ => None,
            })
            .collect();
        for (key, why) in failed {
            self.fail(key, why);
        }
    }

    /// The owner gives `key` up: its lease goes back; the slot its request
    /// went on, if it went out (for the owner to cancel there).
    pub fn cancel(&mut self, key: K) -> Option<Slot> {
        self.take(key).flatten()
    }

    /// Ends every exchange whose answer is overdue at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.deadlines.first()
            && at <= now
        {
            self.deadlines.pop_first();
            self.fail(key, Unanswered::TimedOut);
        }
    }

    /// Ends `key` without an answer, if it is under way.
    fn fail(&mut self, key: K, why: Unanswered) {
        if let Some(slot) = self.take(key) {
            self.out.push(ExchangeOutput::Failed { key, slot, why });
        }
    }

    /// Forgets `key` and gives its lease back; `None` when there is no such
    /// exchange, else the slot it was sent on, if it was.
    fn take(&mut self, key: K) -> Option<Option<Slot>> {
        let entry = self.entries.remove(&key)?;
        Some(match entry.state {
            State::Open {
                slot,
                lease,
                deadline,
            } => {
                self.by_slot.remove(&slot);
                if let Some(at) = deadline {
                    self.deadlines.remove(&(at, key));
                }
                self.out.push(ExchangeOutput::Release(lease));
                Some(slot)
            }
            State::Blocked(lease) => {
                self.out.push(ExchangeOutput::Release(lease));
                None
            }
            State::Reaching => None,
        })
    }
}

/// Send `entry`'s request on `lease`.
fn send<K>(key: K, entry: &Entry, lease: Lease) -> ExchangeOutput<K> {
    ExchangeOutput::Send {
        key,
        lease,
        lane: entry.lane,
        frame: entry.frame.clone(),
    }
}

impl<K: Copy + Eq + Hash + Ord> Child for Exchanges<K> {
    type Output = ExchangeOutput<K>;

    fn poll_output(&mut self) -> Option<ExchangeOutput<K>> {
        self.out.pop()
    }

    /// The earliest answer deadline.
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use quinn_proto::{Dir, Side};

    use super::*;
    use crate::wire::Ping;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn lease(conn: u64) -> Lease {
        Lease {
            conn: ConnId(conn),
            slot: 0,
        }
    }

    fn stream(conn: u64, n: u64) -> Slot {
        Slot::Stream(StreamKey {
            conn: ConnId(conn),
            stream: StreamId::new(Side::Client, Dir::Bi, n),
        })
    }

    fn ping(id: u64) -> Message {
        Message::from(Ping { request_id: id })
    }

    fn drain(x: &mut Exchanges<u64>) -> Vec<ExchangeOutput<u64>> {
        std::iter::from_fn(|| x.poll_output()).collect()
    }

    /// Starts `key` and hands it a lease on `conn`: the Send it asks for.
    fn sent(x: &mut Exchanges<u64>, key: u64, conn: u64) -> Lease {
        assert!(x.start(key, ping(key), Lane::OwnStream));
        x.handle_leased(key, lease(conn));
        match drain(x).pop() {
            Some(ExchangeOutput::Send { key: k, lease, .. }) if k == key => lease,
            other => panic!("expected Send, got {other:?}"),
        }
    }

    fn released(outputs: &[ExchangeOutput<u64>]) -> usize {
        let is_release = |o: &&ExchangeOutput<u64>| matches!(o, ExchangeOutput::Release(_));
        outputs.iter().filter(is_release).count()
    }

    #[test]
    fn an_answer_at_the_slot_ends_the_exchange_and_releases_the_lease() {
        let now = crate::test_epoch();
        let mut x = Exchanges::new(Some(TIMEOUT));
        let lease = sent(&mut x, 1, 7);
        x.handle_opened(now, 1, lease, Ok(stream(7, 1)));
        assert!(matches!(
            drain(&mut x)[..],
            [ExchangeOutput::Sent { key: 1, .. }]
        ));
        assert_eq!(x.poll_timeout(), Some(now + TIMEOUT));
        assert!(x.awaits(stream(7, 1)));
        // A frame elsewhere is not its answer.
        assert!(x.handle_answer(stream(7, 2), ping(9)).is_some());
        assert!(x.handle_answer(stream(7, 1), ping(1)).is_none());
        let outputs = drain(&mut x);
        assert_eq!(released(&outputs), 1);
        assert!(matches!(
            outputs[1],
            ExchangeOutput::Answered { key: 1, .. }
        ));
        assert!(x.is_empty() && x.poll_timeout().is_none());
    }

    #[test]
    fn blocked_requests_go_oldest_first_when_streams_free_up() {
        let now = crate::test_epoch();
        let mut x = Exchanges::new(None);
        for key in [1, 2] {
            let lease = sent(&mut x, key, 7);
            x.handle_opened(now, key, lease, Err(Unopened::Blocked));
        }
        assert!(drain(&mut x).is_empty());
        x.handle_streams_available(ConnId(7));
        let Some(ExchangeOutput::Send { key: 1, lease, .. }) = x.poll_output() else {
            panic!("the oldest goes first");
        };
        assert!(x.poll_output().is_none(), "one at a time");
        x.handle_opened(now, 1, lease, Ok(stream(7, 1)));
        let outputs = drain(&mut x);
        assert!(matches!(outputs[0], ExchangeOutput::Sent { key: 1, .. }));
        assert!(matches!(outputs[1], ExchangeOutput::Send { key: 2, .. }));
    }

    /// Exchange 1 sent on connection 7, 2 blocked there, 3 sent on 8.
    fn two_connections(now: Instant) -> Exchanges<u64> {
        let mut x = Exchanges::new(None);
        let lease = sent(&mut x, 1, 7);
        x.handle_opened(now, 1, lease, Ok(stream(7, 1)));
        let lease = sent(&mut x, 2, 7);
        x.handle_opened(now, 2, lease, Err(Unopened::Blocked));
        let lease = sent(&mut x, 3, 8);
        x.handle_opened(now, 3, lease, Ok(stream(8, 1)));
        drain(&mut x);
        x
    }

    #[test]
    fn a_lost_connection_fails_sent_and_blocked_exchanges_differently() {
        let now = crate::test_epoch();
        let mut x = two_connections(now);
        x.handle_conn_gone(ConnId(7));
        let outputs = drain(&mut x);
        assert_eq!(released(&outputs), 2);
        let mut whys: Vec<(u64, Unanswered)> = outputs
            .iter()
            .filter_map(|o| match o {
                ExchangeOutput::Failed { key, why, .. } => Some((*key, *why)),
                _ => None,
            })
            .collect();
        whys.sort_by_key(|(key, _)| *key);
        assert_eq!(
            whys,
            [(1, Unanswered::ConnectionLost), (2, Unanswered::NotSent)]
        );
        assert_eq!(x.len(), 1, "the other connection's exchange stays");
    }

    #[test]
    fn the_exchanges_sent_on_a_connection_are_those_awaiting_answers_there() {
        let now = crate::test_epoch();
        let mut x = two_connections(now);
        let lease = sent(&mut x, 4, 7);
        let control = Slot::Control {
            conn: ConnId(7),
            request_id: 4,
        };
        x.handle_opened(now, 4, lease, Ok(control));
        let lease = sent(&mut x, 5, 7);
        x.handle_opened(now, 5, lease, Ok(stream(7, 5)));
        assert!(x.handle_answer(stream(7, 5), ping(5)).is_none());
        let mut on_7: Vec<u64> = x.sent_on(ConnId(7)).collect();
        on_7.sort_unstable();
        assert_eq!(on_7, [1, 4], "not the blocked one, nor the answered one");
        assert_eq!(x.sent_on(ConnId(8)).collect::<Vec<_>>(), [3]);
        assert_eq!(x.sent_on(ConnId(9)).count(), 0);
    }

    #[test]
    fn overdue_answers_time_out_and_reset_or_refused_streams_fail() {
        let now = crate::test_epoch();
        let mut x = Exchanges::new(Some(TIMEOUT));
        for key in [1, 2, 3] {
            let lease = sent(&mut x, key, 7);
            x.handle_opened(now, key, lease, Ok(stream(7, key)));
        }
        drain(&mut x);
        let at = |slot: Slot| slot.stream().expect("a stream slot");
        x.handle_stream_gone(at(stream(7, 1)), true);
        x.handle_stream_gone(at(stream(7, 2)), false);
        x.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
        x.handle_timeout(now + TIMEOUT);
        let whys: Vec<Unanswered> = drain(&mut x)
            .into_iter()
            .filter_map(|o| match o {
                ExchangeOutput::Failed { why, .. } => Some(why),
                _ => None,
            })
            .collect();
        assert_eq!(
            whys,
            [Unanswered::Refused, Unanswered::Reset, Unanswered::TimedOut]
        );
        assert!(!Unanswered::Refused.maybe_delivered());
        assert!(Unanswered::TimedOut.maybe_delivered());
        assert!(x.is_empty() && x.poll_timeout().is_none());
    }

    #[test]
    fn a_stream_opened_for_a_cancelled_exchange_is_abandoned() {
        let now = crate::test_epoch();
        let mut x = Exchanges::new(None);
        let taken = sent(&mut x, 1, 7);
        assert_eq!(x.cancel(1), None, "not sent yet");
        x.handle_opened(now, 1, taken, Ok(stream(7, 1)));
        let outputs = drain(&mut x);
        assert!(matches!(
            outputs[..],
            [ExchangeOutput::Abandon(_), ExchangeOutput::Release(_)]
        ));
        // A lease for an exchange that is gone goes straight back.
        x.handle_leased(5, lease(9));
        assert!(matches!(drain(&mut x)[..], [ExchangeOutput::Release(_)]));
    }

    #[test]
    fn control_lane_answers_match_by_request_id_and_failures_need_no_stream() {
        let now = crate::test_epoch();
        let mut x = Exchanges::new(Some(TIMEOUT));
        assert!(x.start(4, ping(40), Lane::Control { request_id: 40 }));
        assert!(!x.start(4, ping(40), Lane::OwnStream), "a key runs once");
        x.handle_leased(4, lease(7));
        let Some(ExchangeOutput::Send { lease, lane, .. }) = x.poll_output() else {
            panic!("expected Send");
        };
        assert_eq!(lane, Lane::Control { request_id: 40 });
        let slot = Slot::Control {
            conn: ConnId(7),
            request_id: 40,
        };
        x.handle_opened(now, 4, lease, Ok(slot));
        drain(&mut x);
        assert_eq!(x.cancel(4), Some(slot));
        // Unsendable and unreachable exchanges fail at once.
        let lease = sent(&mut x, 5, 7);
        x.handle_opened(now, 5, lease, Err(Unopened::NotEncoded));
        assert!(x.start(6, ping(6), Lane::OwnStream));
        x.handle_unreachable(6);
        let whys: Vec<Unanswered> = drain(&mut x)
            .into_iter()
            .filter_map(|o| match o {
                ExchangeOutput::Failed {
                    why, slot: None, ..
                } => Some(why),
                _ => None,
            })
            .collect();
        assert_eq!(whys, [Unanswered::Unsendable, Unanswered::NotSent]);
    }
}
