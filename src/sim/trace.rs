//! The trace: what happened to every packet and which events hosts reported.
//!
//! Each delivery, drop and host event is one [`TraceEntry`] (time since the
//! world started, source, destination, size, outcome). The trace keeps a
//! running SHA-256 of its entries, so two runs can be compared with one
//! number: same seed and same inputs must give the same [`Trace::hash`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::world::{HostId, NatId};

/// Why a packet did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The link lost it.
    Lost,
    /// It was larger than a link's MTU.
    TooBig,
    /// Its TTL ran out at a router or NAT.
    TtlExpired,
    /// No host or NAT owns the destination address.
    NoRoute,
    /// A NAT had no mapping for the destination port, or its filter refused
    /// the source.
    Filtered(NatId),
    /// A NAT without hairpinning got a packet for its own external address
    /// from inside.
    HairpinRefused(NatId),
    /// A NAT had no free external port.
    PortsExhausted(NatId),
    /// The destination host is offline.
    HostOffline,
    /// The destination host does not listen on that address (wrong port, or
    /// its address changed while the packet was in flight).
    NoListener,
    /// The sender asked for a source address it does not have.
    BadSource,
    /// The route between the two addresses is cut ([`World::cut`](super::World::cut)).
    Cut,
}

/// What became of a packet, or what a host reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered to this host.
    Delivered(HostId),
    /// Dropped.
    Dropped(DropReason),
    /// The host reported an event (its `Debug` text).
    Event(HostId, String),
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Time since the world started.
    pub elapsed: Duration,
    /// The packet's source as seen where it ended (after NAT translation);
    /// for an event, the host's address.
    pub source: SocketAddr,
    /// The packet's destination as seen where it ended; for an event, the
    /// host's address.
    pub destination: SocketAddr,
    /// The UDP payload size (0 for an event).
    pub size: usize,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>10.3?} {} -> {} {}B {:?}",
            self.elapsed, self.source, self.destination, self.size, self.outcome
        )
    }
}

/// Every entry so far, and their running hash.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    entries: Vec<TraceEntry>,
    hasher: Sha256,
}

impl Trace {
    /// Appends an entry.
    pub(crate) fn record(&mut self, entry: TraceEntry) {
        self.hasher.update(format!("{entry:?}\n").as_bytes());
        self.entries.push(entry);
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }

    /// How many packets were dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> usize {
        self.entries
            .iter()
            .filter(|e| e.outcome == Outcome::Dropped(reason))
            .count()
    }

    /// The first 8 bytes of the SHA-256 of every entry so far: equal for two
    /// runs exactly when their traces are (barring collisions).
    pub fn hash(&self) -> u64 {
        let digest = self.hasher.clone().finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}
