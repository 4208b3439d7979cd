//! The connection table: every live connection by quinn's handle, which of
//! them have something to do, and when each next needs a timeout.
//!
//! Work per input grows with the connections it touches, not with all of
//! them. Touching a connection mutably ([`ConnTable::get_mut`],
//! [`ConnTable::insert`]) marks it dirty, so every path that changes a
//! connection's quinn state (a datagram for it, a stream written, a close)
//! gets it driven without remembering to; the Node drives only dirty
//! connections ([`ConnTable::next_dirty`]), gathers the transmits of the
//! driven ones and re-files their deadlines ([`ConnTable::poll_transmits`]).
//! Each connection's deadline (quinn's timer, its CONNECT deadline, the end
//! of its frame-rate pause or of a watched silence) sits in an ordered index: the table's deadline is its first
//! entry, and a timeout takes only the due entries ([`ConnTable::take_due`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::ConnectionHandle;

use super::probe::probe_key;
use super::{Conn, Wait};
use crate::collections::HashMap;

/// Datagrams quinn wrote in one go for one destination: one, or several of
/// `segment_size` bytes back to back (the last possibly shorter).
pub(crate) struct Segments {
    /// The bytes.
    pub payload: Bytes,
    /// `Some` when there are several.
    pub segment_size: Option<usize>,
}

/// The Node's connections, with the dirty set and the deadline index.
#[derive(Default)]
pub(crate) struct ConnTable {
    conns: HashMap<ConnectionHandle, Conn>,
    /// Touched since last driven.
    dirty: BTreeSet<ConnectionHandle>,
    /// Driven since their transmits were last gathered.
    driven: BTreeSet<ConnectionHandle>,
    /// Every connection's next deadline, earliest first.
    deadlines: BTreeSet<(Instant, ConnectionHandle)>,
    /// The entry of each connection in `deadlines`.
    deadline_of: HashMap<ConnectionHandle, Instant>,
}

impl ConnTable {
    /// The connection of `handle`, to read.
    pub(crate) fn get(&self, handle: &ConnectionHandle) -> Option<&Conn> {
        self.conns.get(handle)
    }

    /// The connection of `handle`, to change: it is marked dirty.
    pub(crate) fn get_mut(&mut self, handle: &ConnectionHandle) -> Option<&mut Conn> {
        let conn = self.conns.get_mut(handle)?;
        self.dirty.insert(*handle);
        Some(conn)
    }

    /// Adds a new connection, dirty.
    pub(crate) fn insert(&mut self, handle: ConnectionHandle, conn: Conn) {
        self.conns.insert(handle, conn);
        self.dirty.insert(handle);
    }

    /// Removes a connection from the table and every index.
    pub(crate) fn remove(&mut self, handle: &ConnectionHandle) -> Option<Conn> {
        self.dirty.remove(handle);
        self.driven.remove(handle);
        self.unfile(*handle);
        self.conns.remove(handle)
    }

    /// Number of connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Every connection's handle.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &ConnectionHandle> + '_ {
        self.conns.keys()
    }

    /// Every connection, to read.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Conn> + '_ {
        self.conns.values()
    }

    /// Every connection with its handle, to read.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ConnectionHandle, &Conn)> + '_ {
        self.conns.iter()
    }

    /// Whether any connection waits to be driven.
    pub(crate) fn any_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The next dirty connection to drive, lowest handle first. It stays
    /// dirty while it is driven (the driver touches it), until
    /// [`ConnTable::driven`]; its transmits are gathered at the next
    /// [`ConnTable::poll_transmits`].
    pub(crate) fn next_dirty(&mut self) -> Option<ConnectionHandle> {
        let handle = *self.dirty.first()?;
        self.driven.insert(handle);
        Some(handle)
    }

    /// `handle` has been driven until quinn had nothing more to tell: its
    /// own touches meanwhile need no other turn.
    pub(crate) fn driven(&mut self, handle: ConnectionHandle) {
        self.dirty.remove(&handle);
    }

    /// Hands every transmit of the connections driven since the last call
    /// to `send` (with quinn's destination, the path's virtual address, the
    /// datagrams, up to `max_segments` back to back with their segment size
    /// when there are several, the local IP quinn sends them from, when it
    /// knows one, and whether the connection now awaits an acknowledgement
    /// of ack-eliciting frames: its silence watch runs), brings their
    /// silence watch up to date, then files their deadlines anew: quinn's
    /// timer, the CONNECT deadline, and for a connection that `watch` gives
    /// a silence limit, the end of that silence (and its next probe, when
    /// the wait probes: [`super::probe`]), and with `quiet_ping` (a
    /// node behind a NAT) when the PING owed for the peer's quiet data is
    /// due ([`super::quiet`]). A transmit of several
    /// datagrams is handed on in quinn's buffer, not copied. Returns how
    /// many connections that was.
    pub(crate) fn poll_transmits(
        &mut self,
        now: Instant,
        max_segments: usize,
        mut send: impl FnMut(SocketAddr, Segments, Option<IpAddr>, bool),
        watch: impl Fn(&Conn) -> Option<Wait>,
        quiet_ping: Option<Duration>,
    ) -> usize {
        let max_segments = max_segments.max(1);
        let mut buf = Vec::new();
        let mut polled = Vec::new();
        let driven = std::mem::take(&mut self.driven);
        let count = driven.len();
        for handle in driven {
            let Some(conn) = self.conns.get_mut(&handle) else {
                continue;
            };
            loop {
                buf.clear();
                let Some(transmit) = conn.quinn.poll_transmit(now, max_segments, &mut buf) else {
                    break;
                };
                buf.truncate(transmit.size);
                let payload = match transmit.segment_size {
                    // Several datagrams: quinn's buffer is handed on whole.
                    Some(_) => Bytes::from(std::mem::take(&mut buf)),
                    // One (a request, an ACK): a copy the packet's size
                    // frees the buffer, which quinn sized for `max_segments`,
                    // for the next poll.
                    None => Bytes::copy_from_slice(&buf),
                };
                let segments = Segments {
                    payload,
                    segment_size: transmit.segment_size,
                };
                polled.push((transmit.destination, segments, transmit.src_ip));
            }
            let stats = conn.quinn.stats();
            conn.silence.observe(now, &stats);
            conn.quiet.observe(now, &stats);
            conn.handover.observe(stats.frame_rx.acks);
            let awaiting = conn.silence.running();
            for (destination, packet, src_ip) in polled.drain(..) {
                send(destination, packet, src_ip, awaiting);
            }
            let wait = watch(conn);
            let key = || probe_key(conn.quinn.crypto_session());
            (conn.probing).steer(key, conn.remote, wait, conn.silence.since());
            let silent = wait.and_then(|wait| conn.silence.deadline(wait));
            let quiet = quiet_ping.and_then(|after| conn.quiet.deadline(after));
            let deadline = [
                conn.quinn.poll_timeout(),
                conn.connect_deadline,
                conn.resume_at,
                silent,
                quiet,
                conn.handover.deadline(),
                conn.linger_deadline(),
                conn.probing.poll_timeout(),
            ];
            let deadline = deadline.into_iter().flatten().min();
            self.unfile(handle);
            if let Some(at) = deadline {
                self.deadlines.insert((at, handle));
                self.deadline_of.insert(handle, at);
            }
        }
        count
    }

    /// The earliest deadline of any connection.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// The connections whose deadline is `now` or earlier, taken out of the
    /// index (driving them files them again).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<ConnectionHandle> {
        let mut due = Vec::new();
        while let Some(&(at, handle)) = self.deadlines.first()
            && at <= now
        {
            self.unfile(handle);
            due.push(handle);
        }
        due
    }

    /// Takes `handle` out of the deadline index.
    fn unfile(&mut self, handle: ConnectionHandle) {
        if let Some(at) = self.deadline_of.remove(&handle) {
            self.deadlines.remove(&(at, handle));
        }
    }
}
