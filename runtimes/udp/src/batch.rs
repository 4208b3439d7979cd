//! Consecutive transmits to one destination, joined for one GSO send.
//!
//! A machine emits a burst to one peer as one transmit of several datagrams
//! with a segment size (handed to the OS as it is, no copy), or as several
//! transmits in a row, all of one size but the last. Joined into one buffer
//! with a segment size, they leave in one system call and the kernel (or the
//! NIC) cuts them apart. A transmit of more datagrams than the socket takes
//! at once is split first (one by one for a socket without GSO). A transmit
//! with its own TTL always travels alone.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;
use macula::Transmit;
use quinn_udp::EcnCodepoint;

/// Most bytes one GSO send may carry: the largest UDP payload of an IPv4
/// packet (65,535 less the 20-byte IP and 8-byte UDP headers; IPv6 allows 20
/// more). Linux refuses a larger send whole (`EMSGSIZE`), so a batch of 55
/// or more 1,200-byte datagrams, which `max_segments` (64) allowed, was lost
/// entirely: every one of its packets, to be found lost by QUIC.
pub const MAX_BATCH_BYTES: usize = 65_507;

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
    /// A batch of `transmit` alone (one datagram, or several of its segment
    /// size), its bytes not copied.
    pub fn new(transmit: Transmit) -> Self {
        Self {
            destination: transmit.destination,
            source: transmit.source,
            ttl: transmit.ttl,
            ecn: None,
            segment: transmit.segment_size.unwrap_or(transmit.payload.len()),
            count: transmit.datagram_count(),
            first: transmit.payload,
            joined: Vec::new(),
        }
    }

    /// Appends `transmit` if it can ride along (same destination and source,
    /// no TTL of its own, datagrams of the batch's segment size or one no
    /// longer, the batch not closed by a shorter one, no more than
    /// `max_segments` in all and no more than [`MAX_BATCH_BYTES`]); gives it
    /// back otherwise.
    pub fn push(&mut self, transmit: Transmit, max_segments: usize) -> Result<(), Transmit> {
        let len = transmit.payload.len();
        let stride = match transmit.segment_size {
            Some(size) => size == self.segment,
            None => len <= self.segment,
        };
        let fits = self.count + transmit.datagram_count() <= max_segments
            && self.contents().len() + len <= MAX_BATCH_BYTES
            && self.ttl.is_none()
            && transmit.ttl.is_none()
            && transmit.destination == self.destination
            && transmit.source == self.source
            && stride
            && self.open();
        if !fits {
            return Err(transmit);
        }
        if self.joined.is_empty() {
            self.joined.extend_from_slice(&self.first);
        }
        self.joined.extend_from_slice(&transmit.payload);
        self.count += transmit.datagram_count();
        Ok(())
    }

    /// No segment shorter than the others yet (only the last may be).
    fn open(&self) -> bool {
        self.contents().len() == self.segment * self.count
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
    /// Closed batches, to send now, oldest first.
    full: VecDeque<Batch>,
}

impl Batcher {
    /// Adds `transmit` to the open batch (of at most `max_segments`
    /// datagrams and [`MAX_BATCH_BYTES`]), or opens a new one with it,
    /// splitting it first when it holds more than that. The batches this closes wait in
    /// [`Batcher::next_full`].
    pub fn push(&mut self, transmit: Transmit, max_segments: usize) {
        let size = (transmit.segment_size).unwrap_or(transmit.payload.len());
        let max_segments = max_segments.min(MAX_BATCH_BYTES / size.max(1)).max(1);
        for part in transmit.split(max_segments) {
            let refused = match self.open.as_mut() {
                Some(open) => open.push(part, max_segments).err(),
                None => Some(part),
            };
            let closed = refused.and_then(|part| self.open.replace(Batch::new(part)));
            self.full.extend(closed);
        }
    }

    /// The oldest closed batch, to send now.
    pub fn next_full(&mut self) -> Option<Batch> {
        self.full.pop_front()
    }

    /// The closed batches and then the open one, to send once the machine
    /// has nothing more queued.
    pub fn finish(&mut self) -> Option<Batch> {
        self.full.pop_front().or_else(|| self.open.take())
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
            segment_size: None,
            ttl,
        }
    }

    /// `count` datagrams of `size` bytes (the last `last` bytes) in one transmit to `to`.
    fn segmented(to: u16, size: usize, count: usize, last: usize) -> Transmit {
        let mut payload = vec![size as u8; size * (count - 1)];
        payload.extend(vec![last as u8; last]);
        Transmit {
            segment_size: Some(size),
            payload: Bytes::from(payload),
            ..transmit(to, 0, None)
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
        batcher.push(transmit(1, 4, None), 2);
        batcher.push(transmit(1, 4, None), 2);
        assert!(batcher.next_full().is_none());
        batcher.push(transmit(1, 4, None), 2);
        let full = batcher.next_full().expect("two at most");
        assert_eq!((full.count(), full.segment_size()), (2, Some(4)));
        batcher.push(transmit(2, 4, None), 2);
        let other = batcher.next_full().expect("another peer");
        assert_eq!(other.count(), 1);
        let last = batcher.finish().expect("the open batch");
        assert_eq!(last.destination(), SocketAddr::from(([127, 0, 0, 1], 2)));
        assert!(batcher.finish().is_none());
    }

    #[test]
    fn a_segmented_transmit_goes_whole_and_uncopied_or_split_to_what_the_socket_takes() {
        let whole = segmented(1, 4, 3, 2);
        let bytes = whole.payload.as_ptr();
        let batch = Batch::new(whole.clone());
        assert_eq!((batch.count(), batch.segment_size()), (3, Some(4)));
        assert_eq!(
            batch.contents().as_ptr(),
            bytes,
            "sent from the machine's buffer"
        );

        let mut batcher = Batcher::default();
        batcher.push(whole.clone(), 1);
        let mut sizes = Vec::new();
        while let Some(batch) = batcher.finish() {
            sizes.push((batch.count(), batch.contents().len(), batch.segment_size()));
        }
        assert_eq!(
            sizes,
            [(1, 4, None), (1, 4, None), (1, 2, None)],
            "no GSO: one by one"
        );

        batcher.push(whole, 2);
        let first = batcher.next_full().expect("two fit, then one");
        assert_eq!((first.count(), first.segment_size()), (2, Some(4)));
        let rest = batcher.finish().expect("the last, short one");
        assert_eq!((rest.count(), rest.contents()), (1, &[2u8, 2][..]));
    }

    #[test]
    fn segments_join_a_batch_of_their_size_and_a_short_last_one_closes_it() {
        let mut batch = Batch::new(transmit(1, 4, None));
        assert!(
            batch.push(segmented(1, 3, 2, 3), 10).is_err(),
            "another stride"
        );
        assert!(batch.push(segmented(1, 4, 2, 4), 10).is_ok());
        assert!(
            batch.push(segmented(1, 4, 2, 1), 4).is_err(),
            "five at most four"
        );
        assert!(batch.push(segmented(1, 4, 2, 1), 10).is_ok());
        assert_eq!((batch.count(), batch.contents().len()), (5, 17));
        assert!(
            batch.push(transmit(1, 4, None), 10).is_err(),
            "closed by the short one"
        );
    }
}
