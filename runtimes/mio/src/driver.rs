//! The drive loop of one [`Machine`] on one UDP socket, for a `mio::Poll`
//! the application owns.
//!
//! A [`Driver`] registers its socket with the application's registry under
//! the application's token. After every poll the application hands the
//! driver the events ([`Driver::handle_events`], or the finer
//! `handle_readable` / `handle_writable` / `handle_timeout`); the driver feeds
//! the machine datagrams and timeouts stamped with the monotonic clock,
//! drains its outputs after each input (sending transmits, queueing events)
//! and tells the application how long its next poll may wait
//! ([`Driver::timeout`]). One call reads at most a budget of datagrams, so a
//! busy peer cannot starve the application's other sources or the machine's
//! timers. Extra sockets the machine asks for ([`macula::SocketRequest`]) are opened,
//! registered under the same token, read with the main one and closed when it
//! says.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::{Datagram, Input, Machine, Output};
use macula_udp::{Batch, Batcher, DATAGRAMS_PER_INPUT, handle_request};
use mio::event::Event;
use mio::{Events, Interest, Registry, Token};

use crate::clock;
use crate::error::DriverError;
use crate::extra::ExtraSockets;
use crate::socket::Socket;

/// Datagrams one call reads at most before the driver hands control back.
pub const DEFAULT_DATAGRAMS_PER_TURN: usize = 64;

/// Sends (one datagram, or several to one peer joined for GSO) kept while
/// the socket's send buffer is full; past it the newest are dropped (and
/// counted), as a congested link would drop them: the machines recover from
/// loss.
pub const DEFAULT_SEND_QUEUE: usize = 1024;

/// What a driver counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Datagrams handed to the machine (each GRO segment counts once).
    pub datagrams_received: u64,
    /// Datagrams the OS accepted.
    pub datagrams_sent: u64,
    /// Send system calls that completed; fewer than datagrams when GSO
    /// joined some.
    pub send_calls: u64,
    /// Datagrams the OS refused (unreachable, wrong family, too large, ...);
    /// each was logged and dropped.
    pub send_errors: u64,
    /// Datagrams dropped because the send queue was full.
    pub send_queue_drops: u64,
    /// Receive calls that failed with something other than "nothing waiting".
    pub receive_errors: u64,
    /// Times the machine was given [`Input::Timeout`].
    pub timeouts: u64,
}

/// A machine bound to a non-blocking UDP socket, driven from the
/// application's `mio` loop.
pub struct Driver<M: Machine> {
    socket: Socket,
    /// The extra sockets the machine asked for.
    extra: ExtraSockets,
    machine: M,
    token: Option<Token>,
    events: VecDeque<M::Event>,
    /// Sends waiting for the socket to become writable, oldest first.
    unsent: VecDeque<Batch>,
    send_queue: usize,
    datagrams_per_turn: usize,
    /// The last read stopped at its budget: more may be waiting, and mio
    /// (edge-triggered) will not say so again.
    read_pending: bool,
    /// The datagrams of one read, kept to reuse the allocation.
    received: Vec<Datagram>,
    send_queue_drops: u64,
    timeouts: u64,
}

impl<M: Machine> Driver<M> {
    /// Binds a UDP socket at `addr` for `machine` (dual-stack for an
    /// unspecified IPv6 address, where the OS allows it). Register it with
    /// [`Driver::register`] before polling.
    pub fn bind(addr: SocketAddr, machine: M) -> Result<Self, DriverError> {
        let socket = Socket::bind(addr).map_err(|source| DriverError::Bind { addr, source })?;
        Ok(Self::with_socket(socket, machine))
    }

    /// Drives `machine` on a bound socket.
    pub(crate) fn with_socket(socket: Socket, machine: M) -> Self {
        Self {
            socket,
            extra: ExtraSockets::default(),
            machine,
            token: None,
            events: VecDeque::new(),
            unsent: VecDeque::new(),
            send_queue: DEFAULT_SEND_QUEUE,
            datagrams_per_turn: DEFAULT_DATAGRAMS_PER_TURN,
            read_pending: false,
            received: Vec::new(),
            send_queue_drops: 0,
            timeouts: 0,
        }
    }

    /// Registers the socket with `registry` under `token`: events with that
    /// token belong to this driver (its extra sockets, opened when the machine
    /// asks, are registered under it too).
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<(), DriverError> {
        registry
            .register(
                self.socket.source(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(DriverError::Register)?;
        (self.extra)
            .register(registry, token)
            .map_err(DriverError::Register)?;
        self.token = Some(token);
        Ok(())
    }

    /// Removes the socket (and the extra ones) from `registry`.
    pub fn deregister(&mut self, registry: &Registry) -> Result<(), DriverError> {
        registry
            .deregister(self.socket.source())
            .map_err(DriverError::Register)?;
        self.extra.deregister().map_err(DriverError::Register)?;
        self.token = None;
        Ok(())
    }

    /// Sets how many datagrams one call reads at most (at least 1).
    pub fn set_datagrams_per_turn(&mut self, datagrams: usize) {
        self.datagrams_per_turn = datagrams.max(1);
    }

    /// Sets how many sends may wait for a full send buffer (at least 1).
    pub fn set_send_queue(&mut self, transmits: usize) {
        self.send_queue = transmits.max(1);
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The machine, to read its state.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, to give it commands by hand; call [`Driver::flush`]
    /// afterwards so what they queued goes out at once ([`Driver::command`]
    /// does both).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Runs `command` on the machine with the current time, then sends what
    /// it queued. Returns what `command` returned.
    pub fn command<R>(&mut self, command: impl FnOnce(&mut M, Instant) -> R) -> R {
        let result = command(&mut self.machine, clock::now());
        self.flush();
        result
    }

    /// What the driver counted so far.
    pub fn counters(&self) -> DriverCounters {
        let socket = self.socket.counts();
        DriverCounters {
            datagrams_received: socket.datagrams_received,
            datagrams_sent: socket.datagrams_sent,
            send_calls: socket.send_calls,
            send_errors: socket.send_errors,
            send_queue_drops: self.send_queue_drops,
            receive_errors: socket.receive_errors,
            timeouts: self.timeouts,
        }
    }

    /// The oldest event the machine reported, if any.
    pub fn pop_event(&mut self) -> Option<M::Event> {
        self.events.pop_front()
    }

    /// How long the application's next poll may wait at most: until the
    /// machine's deadline, zero when a read stopped at its budget or output
    /// is queued, `None` (forever, as far as this driver cares) without a
    /// deadline.
    pub fn timeout(&self) -> Option<Duration> {
        if self.read_pending {
            return Some(Duration::ZERO);
        }
        let deadline = self.machine.poll_timeout()?;
        Some(deadline.saturating_duration_since(clock::now()))
    }

    /// Handles everything a poll returned that concerns this driver, then
    /// its timer. Call it after every poll, whether or not an event came:
    /// it also fires the machine's deadline and resumes a read that stopped
    /// at its budget. Several events may carry its token (one per socket: the extra ones are
    /// registered under it too); the sockets are read once, within one budget.
    pub fn handle_events(&mut self, events: &Events) {
        self.handle_timeout();
        let (mut readable, mut writable) = (false, false);
        for event in events.iter().filter(|e| Some(e.token()) == self.token) {
            readable |= event.is_readable();
            writable |= event.is_writable();
        }
        if writable {
            self.handle_writable();
        }
        if readable || self.read_pending {
            self.handle_readable();
        }
    }

    /// Handles one event if it carries this driver's token (reading and/or
    /// retrying queued sends). Returns whether it was readable and ours.
    pub fn handle_event(&mut self, event: &Event) -> bool {
        if Some(event.token()) != self.token {
            return false;
        }
        if event.is_writable() {
            self.handle_writable();
        }
        if event.is_readable() {
            self.handle_readable();
        }
        event.is_readable()
    }

    /// Reads waiting datagrams, at most the per-turn budget (a GRO packet,
    /// read whole, may carry it a few datagrams past), from the main socket and
    /// then the extra ones, feeding each to the machine and draining its
    /// outputs after each. When the budget runs out first, [`Driver::timeout`]
    /// is zero until the next call.
    pub fn handle_readable(&mut self) {
        let mut handled = 0;
        let mut received = std::mem::take(&mut self.received);
        self.read_pending = false;
        while handled < self.datagrams_per_turn {
            let budget = self.datagrams_per_turn - handled;
            match self.socket.receive(budget, |d| received.push(d)) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // It concerns one read (an ICMP error reported on the
                    // socket, a signal; counted by the socket); it counts
                    // against the budget.
                    tracing::debug!(%error, "receive failed");
                    handled += 1;
                }
            }
            handled += received.len();
            self.deliver(&mut received);
        }
        let budget = self.datagrams_per_turn.saturating_sub(handled);
        let (extra, more) = self.extra.receive(budget, |d| received.push(d));
        self.socket.counters().received(extra as u64);
        self.deliver(&mut received);
        self.read_pending = more || handled >= self.datagrams_per_turn;
        self.received = received;
    }

    /// Feeds the machine `received`'s datagrams, at most
    /// [`DATAGRAMS_PER_INPUT`] as one input ([`Machine::handle_inputs`]: a
    /// Node answers them together), and sends what each input made.
    fn deliver(&mut self, received: &mut Vec<Datagram>) {
        let mut datagrams = received.drain(..).map(Input::Datagram).peekable();
        while datagrams.peek().is_some() {
            let input = datagrams.by_ref().take(DATAGRAMS_PER_INPUT);
            self.machine.handle_inputs(clock::now(), input);
            self.flush();
        }
    }

    /// Sends the transmits that waited for a full send buffer.
    pub fn handle_writable(&mut self) {
        while let Some(batch) = self.unsent.front() {
            match self.socket.send(batch) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                sent => {
                    log_refused(sent, batch);
                    self.unsent.pop_front();
                }
            }
        }
    }

    /// Feeds the machine [`Input::Timeout`] if its deadline has come, then
    /// drains its outputs. Early calls do nothing.
    pub fn handle_timeout(&mut self) {
        let now = clock::now();
        if self.machine.poll_timeout().is_some_and(|at| at <= now) {
            self.timeouts += 1;
            self.machine.handle_input(now, Input::Timeout);
        }
        self.flush();
    }

    /// Sends everything the machine has queued (or queues it while the send
    /// buffer is full) and keeps its events for [`Driver::pop_event`].
    /// Consecutive datagrams to one peer leave in one GSO send where the OS
    /// offers it.
    pub fn flush(&mut self) {
        let mut batcher = Batcher::default();
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Event(event) => self.events.push_back(event),
                Output::Transmit(transmit) if self.extra.owns(transmit.source) => {
                    self.send_extra(&transmit);
                }
                Output::Transmit(transmit) => {
                    batcher.push(transmit, self.socket.max_segments());
                    while let Some(full) = batcher.next_full() {
                        self.send(full);
                    }
                }
                Output::Sockets(request) => {
                    let near = self.socket.local_addr();
                    handle_request(&mut self.extra, near, request, &mut self.machine);
                }
            }
        }
        while let Some(last) = batcher.finish() {
            self.send(last);
        }
    }

    /// Sends one datagram from an extra socket at once (a full send buffer drops
    /// it: probes are retried, QUIC recovers) and counts how it went.
    fn send_extra(&self, transmit: &macula::Transmit) {
        let sent = self.extra.send(transmit);
        self.socket.counters().sent(1, sent.is_ok());
        if let Err(error) = sent {
            let destination = transmit.destination;
            tracing::debug!(%error, %destination, "send on an extra socket failed");
        }
    }

    /// Sends `batch` now, or queues it behind earlier ones.
    fn send(&mut self, batch: Batch) {
        if self.unsent.is_empty() {
            match self.socket.send(&batch) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                sent => return log_refused(sent, &batch),
            }
        }
        if self.unsent.len() < self.send_queue {
            self.unsent.push_back(batch);
        } else {
            self.send_queue_drops += batch.count() as u64;
        }
    }
}

/// Logs a send the OS refused (the socket counted it): it concerns one
/// destination, not the driver.
fn log_refused(sent: io::Result<()>, batch: &Batch) {
    if let Err(error) = sent {
        let (destination, datagrams) = (batch.destination(), batch.count());
        tracing::debug!(%error, %destination, datagrams, "send failed");
    }
}
