//! The drive loop of one [`Machine`] on one UDP socket.
//!
//! A [`Driver`] feeds the machine datagrams and timeouts stamped with the
//! monotonic clock, drains its outputs after every input (sending transmits,
//! queueing events) and sleeps until the next datagram or deadline. It keeps
//! one timer, reset only when the machine's deadline changes, and bounds the
//! work of one wake-up so a busy peer cannot starve the timer or the
//! application's commands. [`MaculaNode`](crate::MaculaNode) runs a
//! `Driver<Node>` in a task; any other machine can be driven the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use macula::{Datagram, Input, Machine, Output};
use tokio::time::Sleep;

use macula_udp::{Batch, Batcher, DATAGRAMS_PER_INPUT, handle_request};

use crate::clock;
use crate::counters::{Counters, DriverCounters};
use crate::extra::ExtraSockets;
use crate::socket::Socket;

/// Datagrams one wake-up handles before the driver looks at its timer and
/// commands again. It bounds socket reads; a read may carry several GRO
/// segments, so one wake-up can take a few more.
pub const DEFAULT_DATAGRAMS_PER_TURN: usize = 64;

/// A machine bound to a UDP socket.
pub struct Driver<M: Machine> {
    socket: Socket,
    /// The extra sockets the machine asked for (`macula::SocketRequest`).
    extra: ExtraSockets,
    machine: M,
    events: VecDeque<M::Event>,
    timer: Pin<Box<Sleep>>,
    /// The deadline the timer is set to.
    armed: Option<Instant>,
    datagrams_per_turn: usize,
    received: Vec<Datagram>,
    counters: Arc<Counters>,
}

/// What woke the driver up.
enum Wake<T> {
    Deadline,
    Readable(io::Result<()>),
    /// The extra socket of this index may have datagrams.
    ExtraReadable(usize),
    Other(T),
}

impl<M: Machine> Driver<M> {
    /// Binds a UDP socket at `addr` (dual-stack for an unspecified IPv6
    /// address, where the OS allows it) for `machine`.
    pub async fn bind(addr: SocketAddr, machine: M) -> io::Result<Self> {
        Ok(Self::with_socket(Socket::bind(addr)?, machine))
    }

    /// Drives `machine` on an already bound `socket`.
    pub(crate) fn with_socket(socket: Socket, machine: M) -> Self {
        Self {
            counters: Arc::new(Counters::new(socket.counters())),
            socket,
            extra: ExtraSockets::default(),
            machine,
            events: VecDeque::new(),
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
            datagrams_per_turn: DEFAULT_DATAGRAMS_PER_TURN,
            received: Vec::new(),
        }
    }

    /// Sets how many datagrams one wake-up handles (at least 1; see
    /// [`DEFAULT_DATAGRAMS_PER_TURN`]).
    pub fn set_datagrams_per_turn(&mut self, datagrams: usize) {
        self.datagrams_per_turn = datagrams.max(1);
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The machine, to read its state.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, to give it commands. Call [`Driver::flush`] afterwards so
    /// what the command queued goes out at once.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// What the driver counted so far.
    pub fn counters(&self) -> DriverCounters {
        self.counters.snapshot()
    }

    /// The live counters, for handles that outlive a borrow of the driver.
    pub(crate) fn shared_counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Sends everything the machine has queued and keeps its events for
    /// [`Driver::pop_event`]. Consecutive datagrams to one peer leave in one
    /// GSO send where the OS offers it. A send the OS refuses is logged,
    /// counted and dropped: it concerns one destination, not the node.
    pub async fn flush(&mut self) {
        let mut batcher = Batcher::default();
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Transmit(transmit) if self.extra.owns(transmit.source) => {
                    self.send_extra(&transmit);
                }
                Output::Transmit(transmit) => {
                    batcher.push(transmit, self.socket.max_segments());
                    while let Some(full) = batcher.next_full() {
                        self.send(&full).await;
                    }
                }
                Output::Event(event) => self.events.push_back(event),
                Output::Sockets(request) => {
                    let near = self.socket.local_addr();
                    handle_request(&mut self.extra, near, request, &mut self.machine);
                }
            }
        }
        while let Some(last) = batcher.finish() {
            self.send(&last).await;
        }
    }

    /// Sends one batch (the socket counts how it went) and logs a refusal.
    async fn send(&self, batch: &Batch) {
        if let Err(error) = self.socket.send(batch).await {
            let (destination, datagrams) = (batch.destination(), batch.count());
            tracing::debug!(%error, %destination, datagrams, "send failed");
        }
    }

    /// Sends one datagram from an extra socket and counts how it went.
    fn send_extra(&self, transmit: &macula::Transmit) {
        let sent = self.extra.send(transmit);
        self.counters.extra_sent(sent.is_ok());
        if let Err(error) = sent {
            let destination = transmit.destination;
            tracing::debug!(%error, %destination, "send on an extra socket failed");
        }
    }

    /// The oldest event the machine reported, if any.
    pub fn pop_event(&mut self) -> Option<M::Event> {
        self.events.pop_front()
    }

    /// Drives the machine until it reports an event, and returns it.
    pub async fn next_event(&mut self) -> M::Event {
        loop {
            self.flush().await;
            if let Some(event) = self.pop_event() {
                return event;
            }
            self.turn(std::future::pending::<()>()).await;
        }
    }

    /// One wake-up: waits for the machine's deadline, a datagram or `other`,
    /// whichever comes first, in that order of priority. A deadline or
    /// datagrams (at most the per-turn budget) are fed to the machine and
    /// its outputs drained after each; `other`'s output is returned for the
    /// caller to act on (then call [`Driver::flush`]).
    pub async fn turn<T>(&mut self, other: impl Future<Output = T>) -> Option<T> {
        self.arm();
        // tokio's timer wheel advances only when the runtime parks or every
        // few dozen tasks; a socket that is always readable would keep it
        // from ever seeing a due deadline. So look at the clock first.
        let due = self.armed.is_some_and(|at| at <= clock::now());
        let wake = if due {
            Wake::Deadline
        } else {
            tokio::select! {
                biased;
                () = &mut self.timer, if self.armed.is_some() => Wake::Deadline,
                out = other => Wake::Other(out),
                ready = self.socket.readable() => Wake::Readable(ready),
                i = std::future::poll_fn(|cx| self.extra.poll_readable(cx)),
                    if !self.extra.is_empty() => Wake::ExtraReadable(i),
            }
        };
        self.counters.wakeup();
        match wake {
            Wake::Deadline => {
                self.machine.handle_input(clock::now(), Input::Timeout);
                self.flush().await;
                None
            }
            Wake::Readable(Ok(())) => {
                self.receive().await;
                None
            }
            Wake::ExtraReadable(index) => {
                self.receive_extra(index).await;
                None
            }
            Wake::Readable(Err(error)) => {
                self.counters.receive_error();
                tracing::warn!(%error, "waiting for the socket failed");
                None
            }
            Wake::Other(out) => Some(out),
        }
    }

    /// Sets the timer to the machine's deadline, if it changed.
    fn arm(&mut self) {
        let deadline = self.machine.poll_timeout();
        if deadline != self.armed {
            if let Some(at) = deadline {
                self.timer.as_mut().reset(at.into());
            }
            self.armed = deadline;
        }
    }

    /// Feeds the machine what extra socket `index` holds, up to the per-turn budget.
    async fn receive_extra(&mut self, index: usize) {
        let mut received = std::mem::take(&mut self.received);
        let budget = self.datagrams_per_turn;
        let count = self.extra.receive(index, budget, |d| received.push(d));
        self.counters.extra_received(count as u64);
        self.deliver(&mut received).await;
        self.received = received;
    }

    /// Feeds the machine `received`'s datagrams, at most
    /// [`DATAGRAMS_PER_INPUT`] as one input ([`Machine::handle_inputs`]: a
    /// Node answers them together), and sends what each input made.
    async fn deliver(&mut self, received: &mut Vec<Datagram>) {
        let mut datagrams = received.drain(..).map(Input::Datagram).peekable();
        while datagrams.peek().is_some() {
            let input = datagrams.by_ref().take(DATAGRAMS_PER_INPUT);
            self.machine.handle_inputs(clock::now(), input);
            self.flush().await;
        }
    }

    /// Feeds the machine what the socket holds, up to the per-turn budget,
    /// one read's datagrams at a time.
    async fn receive(&mut self) {
        let mut received = std::mem::take(&mut self.received);
        let mut handled = 0;
        while handled < self.datagrams_per_turn {
            let reads = self.datagrams_per_turn - handled;
            match self.socket.try_receive(reads, |d| received.push(d)) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // Counted by the socket.
                    tracing::debug!(%error, "receive failed");
                    break;
                }
            }
            handled += received.len();
            self.deliver(&mut received).await;
        }
        self.received = received;
    }
}
