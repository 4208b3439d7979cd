//! Consecutive transmits to one destination, joined for one GSO send.
//!
//! The machine emits datagrams one at a time; a connection sending a burst
//! emits several in a row to the same peer, all of one size but the last.
//! Joined into one buffer with a segment size, they leave in one system call
//! and the kernel (or the NIC) cuts them apart. A transmit with its own TTL
//! always travels alone.

use std::net::SocketAddr;

use bytes::Bytes;
use macula::Transmit;
use quinn_udp::EcnCodepoint;

/// One or more datagrams for one destination, sent in one call.
#[derive(Clone, Debug)]
pub struct Batch {
    destination: SocketAddr,
    source: Option<SocketAddr>,
    ttl: Option<u8>,
    ecn: Option<EcnCodepoint>,
    first: Bytes,
    /// Every segment back to back, once there are two.
    joined: Vec<u8>,
    segment: usize,
    count: usize,
}

impl Batch {
    /// A batch of `transmit` alone.
    pub fn new(transmit: Transmit) -> Self {
        Self {
            destination: transmit.destination,
            source: transmit.source,
            ttl: transmit.ttl,
            ecn: None,
            segment: transmit.payload.len(),
            first: transmit.payload,
            joined: Vec::new(),
            count: 1,
        }
    }

    /// Appends `transmit` if it can ride along (same destination and source,
    /// no TTL of its own, no longer than the first, the batch not closed by a
    /// shorter one and under `max_segments`); gives it back otherwise.
    pub fn push(&mut self, transmit: Transmit, max_segments: usize) -> Result<(), Transmit> {
        let len = transmit.payload.len();
        let fits = self.count < max_segments
            && self.ttl.is_none()
            && transmit.ttl.is_none()
            && transmit.destination == self.destination
            && transmit.source == self.source
            && len <= self.segment
            && self.open();
        if !fits {
            return Err(transmit);
        }
        if self.joined.is_empty() {
            self.joined.extend_from_slice(&self.first);
        }
        self.joined.extend_from_slice(&transmit.payload);
        self.count += 1;
        Ok(())
    }

    /// No segment shorter than the first was appended yet (only the last may be).
    fn open(&self) -> bool {
        self.joined.is_empty() || self.joined.len() == self.segment * self.count
    }

    /// The bytes to send.
    pub fn contents(&self) -> &[u8] {
        if self.joined.is_empty() {
            &self.first
        } else {
            &self.joined
        }
    }

    /// The segment size to ask the OS for, when there are several.
    pub fn segment_size(&self) -> Option<usize> {
        (self.count > 1).then_some(self.segment)
    }

    /// How many datagrams it holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Where it goes.
    pub fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// The local address to send from (`None`: the socket's default).
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// Its own IP TTL (hop limit), if it has one.
    pub fn ttl(&self) -> Option<u8> {
        self.ttl
    }

    /// The ECN codepoint its packets carry (`None`: not ECN-capable).
    pub fn ecn(&self) -> Option<EcnCodepoint> {
        self.ecn
    }

    /// Marks its packets with `ecn`.
    pub fn set_ecn(&mut self, ecn: Option<EcnCodepoint>) {
        self.ecn = ecn;
    }
}

/// Joins a machine's transmits, as they come, into [`Batch`]es.
#[derive(Debug, Default)]
pub struct Batcher {
    open: Option<Batch>,
}

impl Batcher {
    /// Adds `transmit` to the open batch (of at most `max_segments`), or
    /// opens a new one with it. Returns the batch it closed, to send now.
    pub fn push(&mut self, transmit: Transmit, max_segments: usize) -> Option<Batch> {
        let refused = match self.open.as_mut() {
            Some(open) => open.push(transmit, max_segments).err(),
            None => Some(transmit),
        };
        refused.and_then(|transmit| self.open.replace(Batch::new(transmit)))
    }

    /// The open batch, to send once the machine has nothing more queued.
    pub fn finish(&mut self) -> Option<Batch> {
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(to: u16, len: usize, ttl: Option<u8>) -> Transmit {
        Transmit {
            source: None,
            destination: SocketAddr::from(([127, 0, 0, 1], to)),
            payload: Bytes::from(vec![len as u8; len]),
            ttl,
        }
    }

    #[test]
    fn equal_sizes_join_until_a_shorter_one_closes_the_batch() {
        let mut batch = Batch::new(transmit(1, 4, None));
        assert_eq!(batch.segment_size(), None);
        assert!(batch.push(transmit(1, 4, None), 10).is_ok());
        assert!(batch.push(transmit(1, 2, None), 10).is_ok());
        assert!(
            batch.push(transmit(1, 2, None), 10).is_err(),
            "closed by the shorter one"
        );
        assert_eq!(batch.count(), 3);
        assert_eq!(batch.segment_size(), Some(4));
        assert_eq!(batch.contents(), &[4, 4, 4, 4, 4, 4, 4, 4, 2, 2]);
    }

    #[test]
    fn another_destination_a_longer_datagram_a_ttl_or_a_full_batch_start_anew() {
        let mut batch = Batch::new(transmit(1, 4, None));
        assert!(batch.push(transmit(2, 4, None), 10).is_err());
        assert!(batch.push(transmit(1, 5, None), 10).is_err());
        assert!(batch.push(transmit(1, 4, Some(1)), 10).is_err());
        assert!(batch.push(transmit(1, 4, None), 2).is_ok());
        assert!(
            batch.push(transmit(1, 4, None), 2).is_err(),
            "two segments at most"
        );
        let mut alone = Batch::new(transmit(1, 4, Some(1)));
        assert!(alone.push(transmit(1, 4, None), 10).is_err());
        assert_eq!(alone.contents(), &[4, 4, 4, 4]);
    }

    #[test]
    fn a_batcher_hands_back_each_batch_as_the_next_one_opens() {
        let mut batcher = Batcher::default();
        assert!(batcher.push(transmit(1, 4, None), 2).is_none());
        assert!(batcher.push(transmit(1, 4, None), 2).is_none());
        let full = batcher.push(transmit(1, 4, None), 2).expect("two at most");
        assert_eq!((full.count(), full.segment_size()), (2, Some(4)));
        let other = batcher.push(transmit(2, 4, None), 2).expect("another peer");
        assert_eq!(other.count(), 1);
        let last = batcher.finish().expect("the open batch");
        assert_eq!(last.destination(), SocketAddr::from(([127, 0, 0, 1], 2)));
        assert!(batcher.finish().is_none());
    }
}
