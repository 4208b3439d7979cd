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

/// One or more datagrams for one destination, sent in one call.
pub(crate) struct Batch {
    pub(crate) destination: SocketAddr,
    pub(crate) source: Option<SocketAddr>,
    pub(crate) ttl: Option<u8>,
    first: Bytes,
    /// Every segment back to back, once there are two.
    joined: Vec<u8>,
    segment: usize,
    count: usize,
}

impl Batch {
    /// A batch of `transmit` alone.
    pub(crate) fn new(transmit: Transmit) -> Self {
        Self {
            destination: transmit.destination,
            source: transmit.source,
            ttl: transmit.ttl,
            segment: transmit.payload.len(),
            first: transmit.payload,
            joined: Vec::new(),
            count: 1,
        }
    }

    /// Appends `transmit` if it can ride along (same destination and source,
    /// no TTL of its own, no longer than the first, the batch not closed by a
    /// shorter one and under `max_segments`); gives it back otherwise.
    pub(crate) fn push(&mut self, transmit: Transmit, max_segments: usize) -> Result<(), Transmit> {
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
    pub(crate) fn contents(&self) -> &[u8] {
        if self.joined.is_empty() {
            &self.first
        } else {
            &self.joined
        }
    }

    /// The segment size to ask the OS for, when there are several.
    pub(crate) fn segment_size(&self) -> Option<usize> {
        (self.count > 1).then_some(self.segment)
    }

    /// How many datagrams it holds.
    pub(crate) fn count(&self) -> usize {
        self.count
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
}
