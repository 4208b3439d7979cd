//! The sans-IO contract every state machine of the crate follows.
//!
//! A machine never touches a socket or a clock. The driver (an event loop of
//! the user's, `macula-tokio`, `macula-mio` or the simulator) feeds it
//! [`Input`]s stamped with the current time, then drains [`Machine::poll_output`]
//! until it returns `None`, sends every [`Transmit`] and handles every event,
//! and finally sleeps until [`Machine::poll_timeout`] or the next datagram,
//! whichever comes first.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

/// A UDP datagram that arrived on the machine's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The local address it arrived on (the driver reads it from the socket;
    /// it matters on hosts with several addresses).
    pub local: SocketAddr,
    /// The address it came from.
    pub remote: SocketAddr,
    /// The bytes. A payload that is the only handle on its memory (made
    /// from a `Vec`, a `BytesMut` of its own, [`Bytes::copy_from_slice`];
    /// [`Bytes::is_unique`]) is handed on to QUIC as it is; one that shares
    /// its memory (a slice of a larger buffer, a clone kept elsewhere, a
    /// static) is copied first.
    pub payload: Bytes,
}

/// One UDP datagram the machine wants sent, or several to one destination
/// back to back ([`Transmit::segment_size`]), for one GSO send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from, when it matters (`None`: the socket's
    /// default).
    pub source: Option<SocketAddr>,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The bytes: one datagram, or several when [`Transmit::segment_size`]
    /// says so.
    pub payload: Bytes,
    /// `Some(n)`: the payload is several datagrams of `n` bytes each, the last
    /// one possibly shorter (a driver hands them to the OS in one GSO send, or
    /// sends them one by one: [`Transmit::split`]). `None`: one datagram.
    pub segment_size: Option<usize>,
    /// The IP TTL (hop limit) to send with, when it must differ from the
    /// socket's default: hole punching opens the local NAT mapping with probes
    /// that expire before reaching the peer's NAT. Drivers set it for this one
    /// datagram and restore the default after.
    pub ttl: Option<u8>,
}

impl Transmit {
    /// One datagram.
    pub fn single(source: Option<SocketAddr>, destination: SocketAddr, payload: Bytes) -> Self {
        Self {
            source,
            destination,
            payload,
            segment_size: None,
            ttl: None,
        }
    }

    /// How many datagrams it holds.
    pub fn datagram_count(&self) -> usize {
        match self.segment_size {
            Some(size) if size > 0 => self.payload.len().div_ceil(size),
            _ => 1,
        }
    }

    /// The same datagrams as transmits of at most `max_segments` datagrams
    /// each (at least one), for a socket that takes no more in one send (1:
    /// no GSO). The bytes are shared, not copied.
    pub fn split(self, max_segments: usize) -> impl Iterator<Item = Transmit> {
        let size = match self.segment_size {
            Some(size) if size > 0 => size,
            _ => self.payload.len().max(1),
        };
        let step = size.saturating_mul(max_segments.max(1));
        let len = self.payload.len();
        let mut offset = 0;
        let mut first = true;
        std::iter::from_fn(move || {
            if offset >= len && !(first && len == 0) {
                return None;
            }
            first = false;
            let end = len.min(offset.saturating_add(step));
            let payload = self.payload.slice(offset..end);
            offset = end;
            let segment_size = (payload.len() > size).then_some(size);
            Some(Transmit {
                payload,
                segment_size,
                ..self.clone()
            })
        })
    }
}

/// Something that happened to a machine from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram arrived.
    Datagram(Datagram),
    /// The time the machine asked for through [`Machine::poll_timeout`] has
    /// come. Delivering it early, late or twice is harmless: the machine acts
    /// on whatever deadlines have passed by `now`.
    Timeout,
    /// The driver opened the extra sockets a [`SocketRequest::Open`] asked for:
    /// their local addresses (fewer than asked when the host ran out). Datagrams
    /// arriving on them carry that address in [`Datagram::local`]; a
    /// [`Transmit::source`] naming one is sent from it.
    SocketsOpened(Vec<SocketAddr>),
    /// The socket's local address changed (a new network, a DHCP renewal).
    LocalAddressChanged {
        /// The address the machine used so far.
        old: SocketAddr,
        /// The address it has now.
        new: SocketAddr,
    },
}

/// What a machine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<E> {
    /// Send a datagram.
    Transmit(Transmit),
    /// Tell the application something.
    Event(E),
    /// Open or close extra UDP sockets (the birthday search for a peer behind
    /// a hard NAT, [`crate::nat::punch`]).
    Sockets(SocketRequest),
}

impl<E> Output<E> {
    /// The same output with its event turned into another type by `f` (a parent passing
    /// a child's outputs on).
    pub fn map_event<F>(self, f: impl FnOnce(E) -> F) -> Output<F> {
        match self {
            Output::Transmit(t) => Output::Transmit(t),
            Output::Event(e) => Output::Event(f(e)),
            Output::Sockets(r) => Output::Sockets(r),
        }
    }
}

/// Extra UDP sockets a machine asks its driver for, beside its main one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketRequest {
    /// Open `count` more UDP sockets, each bound to the main socket's IP and
    /// an ephemeral port, and report them with one [`Input::SocketsOpened`].
    /// A driver may open fewer (it reports what it got) and must cap how many
    /// it keeps open at once.
    Open {
        /// How many.
        count: u16,
    },
    /// Close these extra sockets (addresses a [`Input::SocketsOpened`]
    /// reported; others are ignored).
    Close(Vec<SocketAddr>),
}

/// A sans-IO state machine driven by datagrams and time.
///
/// After every [`handle_input`](Machine::handle_input) the driver drains
/// [`poll_output`](Machine::poll_output) to `None`, then reads
/// [`poll_timeout`](Machine::poll_timeout). [`drain`](Machine::drain) does both.
/// Same inputs at the same instants give the same outputs: machines take
/// their randomness from a seed at construction.
pub trait Machine {
    /// What the machine tells its application.
    type Event;

    /// Feeds one input at time `now`. `now` never goes backwards.
    fn handle_input(&mut self, now: Instant, input: Input);

    /// Feeds several inputs at time `now` as one (a driver's read of several
    /// datagrams at once): a machine may gather what they make it send, so
    /// the answers to a burst leave together. By default each is fed in
    /// turn; a [`Node`](crate::node::Node) settles once at the end
    /// ([`Node::batch`](crate::node::Node::batch)). Drain the outputs after.
    fn handle_inputs(&mut self, now: Instant, inputs: impl IntoIterator<Item = Input>)
    where
        Self: Sized,
    {
        for input in inputs {
            self.handle_input(now, input);
        }
    }

    /// The next thing to do, or `None` when drained.
    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// When the machine next needs [`Input::Timeout`]. While output is queued
    /// this is at or before the time of the last input. `None`: no deadline.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Drains every queued output into `sink` and returns the next deadline.
    fn drain(&mut self, mut sink: impl FnMut(Output<Self::Event>)) -> Option<Instant>
    where
        Self: Sized,
    {
        while let Some(output) = self.poll_output() {
            sink(output);
        }
        self.poll_timeout()
    }
}

/// A boxed machine is a machine, so a driver or the simulator can run
/// `Box<dyn Machine<Event = E>>` and mix roles.
impl<M: Machine + ?Sized> Machine for Box<M> {
    type Event = M::Event;

    fn handle_input(&mut self, now: Instant, input: Input) {
        (**self).handle_input(now, input);
    }

    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        (**self).poll_output()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
}

/// The queue a machine's outputs wait in until its parent (or driver) drains
/// them: one type for every child of the Node, so "queued output means due
/// now" is written once.
///
/// A child marks the time of each input with [`OutputQueue::mark`], pushes
/// what it wants done, and answers `poll_output` with [`OutputQueue::pop`]
/// and `poll_timeout` with [`OutputQueue::deadline`]. A child with helpers
/// hands them `&mut OutputQueue` (firezone's snownet model) instead of
/// growing its own queue.
#[derive(Debug)]
pub struct OutputQueue<T> {
    items: VecDeque<T>,
    last_now: Option<Instant>,
}

impl<T> Default for OutputQueue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            last_now: None,
        }
    }
}

impl<T> OutputQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the time of the input being handled: queued output is due
    /// then.
    pub fn mark(&mut self, now: Instant) {
        self.last_now = Some(self.last_now.map_or(now, |last| last.max(now)));
    }

    /// The time of the latest input, if any came.
    pub fn last_now(&self) -> Option<Instant> {
        self.last_now
    }

    /// Queues one output.
    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// The oldest queued output, or `None` when drained.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many outputs are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The queued outputs, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// Drops every queued output.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The machine's next deadline: the latest input's time while output is
    /// queued, else the earliest of `deadlines`.
    pub fn deadline(
        &self,
        deadlines: impl IntoIterator<Item = Option<Instant>>,
    ) -> Option<Instant> {
        if !self.items.is_empty() {
            return self.last_now;
        }
        deadlines.into_iter().flatten().min()
    }
}

impl<T> Extend<T> for OutputQueue<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        self.items.extend(iter);
    }
}

/// The contract of a child machine: a state machine driven by its parent
/// rather than by a driver.
///
/// Inputs are the child's own `handle_*(now, ...)` methods (each names what
/// happened); effects leave through [`Child::poll_output`] as the child's own
/// output enum, which the parent executes (open or write a stream, send a
/// datagram, take a lease, tell the application). A child never sees its
/// parent. The parent drains every child it fed before returning from its
/// own input, then folds [`Child::poll_timeout`] into its own deadline.
pub trait Child {
    /// What the child asks its parent to do.
    type Output;

    /// The next thing to do, or `None` when drained.
    fn poll_output(&mut self) -> Option<Self::Output>;

    /// When the child next needs its timeout handled (the latest input's
    /// time while output is queued). `None`: no deadline.
    fn poll_timeout(&self) -> Option<Instant>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segmented(size: usize, len: usize) -> Transmit {
        let payload = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
        let mut transmit = Transmit::single(None, SocketAddr::from(([192, 0, 2, 1], 9)), payload);
        transmit.segment_size = Some(size);
        transmit
    }

    #[test]
    fn a_split_keeps_every_byte_in_order_in_parts_of_at_most_the_segments_asked() {
        let whole = segmented(4, 10);
        assert_eq!(whole.datagram_count(), 3);
        let parts: Vec<Transmit> = whole.clone().split(2).collect();
        let shapes: Vec<_> = parts
            .iter()
            .map(|t| (t.payload.len(), t.segment_size))
            .collect();
        assert_eq!(shapes, [(8, Some(4)), (2, None)]);
        let ones: Vec<Transmit> = whole.clone().split(1).collect();
        let lens: Vec<usize> = ones.iter().map(|t| t.payload.len()).collect();
        assert_eq!(lens, [4, 4, 2]);
        let joined: Vec<u8> = ones.iter().flat_map(|t| t.payload.to_vec()).collect();
        assert_eq!(joined, whole.payload.to_vec());
        assert!(ones.iter().all(|t| t.destination == whole.destination));
        assert_eq!(whole.clone().split(0).count(), 3, "0 reads as 1");
        assert_eq!(whole.split(64).count(), 1);
    }

    #[test]
    fn a_single_datagram_or_a_degenerate_segment_size_stays_one_datagram() {
        let one = Transmit::single(None, SocketAddr::from(([192, 0, 2, 1], 9)), Bytes::new());
        assert_eq!(one.datagram_count(), 1);
        assert_eq!(
            one.clone().split(1).count(),
            1,
            "an empty datagram is still sent"
        );
        let zero = segmented(0, 5);
        assert_eq!(zero.datagram_count(), 1);
        let parts: Vec<Transmit> = zero.split(1).collect();
        assert_eq!((parts.len(), parts[0].payload.len()), (1, 5));
    }
}
