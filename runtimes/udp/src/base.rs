//! One non-blocking UDP socket read and written through `quinn-udp`, as the
//! macula contract wants it: datagrams in with their destination address
//! and ECN, IPv4 peers as plain IPv4, batches out with their source address,
//! GSO segments and per-datagram TTL, everything counted.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use macula::Datagram;
use quinn_udp::{EcnCodepoint, RecvMeta, UdpSockRef, UdpSocketState};
use socket2::SockRef;

use crate::address::{canonical, for_socket};
use crate::batch::Batch;
use crate::counters::SocketCounters;
use crate::ttl::DefaultTtl;

/// A socket type the base can drive: anything with an OS socket behind it
/// (`std`, tokio and mio UDP sockets all are).
#[cfg(unix)]
pub trait OsSocket: std::os::fd::AsFd {}
#[cfg(unix)]
impl<T: std::os::fd::AsFd> OsSocket for T {}

/// A socket type the base can drive: anything with an OS socket behind it
/// (`std`, tokio and mio UDP sockets all are).
#[cfg(windows)]
pub trait OsSocket: std::os::windows::io::AsSocket {}
#[cfg(windows)]
impl<T: std::os::windows::io::AsSocket> OsSocket for T {}

/// Bytes of one receive slot. Larger than any UDP payload (65,527 bytes) and
/// than any GRO super-datagram (the kernel caps one at 64 KiB), so the kernel
/// never truncates a datagram into it.
const SLOT: usize = 64 * 1024;

/// The memory one batched receive reads into: `quinn_udp::BATCH_SIZE` slots
/// of 64 KiB and their metadata. Kept apart from [`UdpBase`] so a driver can
/// lend the base to its readiness mechanism while the buffers are written.
pub struct RecvBuffers {
    slots: Box<[u8]>,
    metas: Box<[RecvMeta]>,
}

impl Default for RecvBuffers {
    fn default() -> Self {
        Self {
            slots: vec![0; SLOT * quinn_udp::BATCH_SIZE].into_boxed_slice(),
            metas: vec![RecvMeta::default(); quinn_udp::BATCH_SIZE].into_boxed_slice(),
        }
    }
}

impl std::fmt::Debug for RecvBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBuffers")
            .field("slots", &self.metas.len())
            .finish()
    }
}

/// A driver's UDP socket `S`, read and written through `quinn-udp`.
#[derive(Debug)]
pub struct UdpBase<S> {
    io: S,
    state: UdpSocketState,
    local: SocketAddr,
    /// An IPv6 socket: IPv4 peers are addressed as IPv4-mapped IPv6.
    v6: bool,
    default_ttl: DefaultTtl,
    counters: Arc<SocketCounters>,
}

impl<S: OsSocket> UdpBase<S> {
    /// Takes over `io`, a bound socket (see [`crate::open`]), and makes it
    /// non-blocking with `quinn-udp`'s options (GRO, packet info, ECN).
    pub fn new(io: S) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        let sock = SockRef::from(&io);
        let local = sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
        let v6 = local.is_ipv6();
        let default_ttl = DefaultTtl::read(&sock, v6);
        Ok(Self {
            io,
            state,
            local,
            v6,
            default_ttl,
            counters: Arc::default(),
        })
    }

    /// The socket, for the driver's readiness mechanism.
    pub fn io(&self) -> &S {
        &self.io
    }

    /// The socket, to register it with a poll.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Most datagrams one send may carry (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// The live counters, to share with whoever reports them.
    pub fn counters(&self) -> &Arc<SocketCounters> {
        &self.counters
    }

    /// One batched read into `buffers` of at most `max_reads` packets (and
    /// `quinn_udp::BATCH_SIZE`; a GRO packet holds several datagrams): each
    /// datagram is handed to `deliver` with its ECN codepoint, its remote
    /// address canonical and its local address the one it was sent to.
    /// Returns how many it delivered; `WouldBlock` when nothing was waiting.
    /// Any other error is counted (it concerns one read: an ICMP error
    /// reported on the socket, a signal) and returned.
    pub fn try_receive(
        &self,
        buffers: &mut RecvBuffers,
        max_reads: usize,
        mut deliver: impl FnMut(Datagram, Option<EcnCodepoint>),
    ) -> io::Result<usize> {
        let reads = max_reads.clamp(1, buffers.metas.len());
        let mut bufs: Vec<IoSliceMut<'_>> = buffers
            .slots
            .chunks_mut(SLOT)
            .take(reads)
            .map(IoSliceMut::new)
            .collect();
        let metas = &mut buffers.metas[..reads];
        let done = match self
            .state
            .recv(UdpSockRef::from(&self.io), &mut bufs, metas)
        {
            Ok(done) => done,
            Err(error) => {
                if error.kind() != io::ErrorKind::WouldBlock {
                    self.counters.receive_error();
                }
                return Err(error);
            }
        };
        let mut delivered = 0;
        for (meta, buf) in buffers.metas.iter().zip(&bufs).take(done) {
            let remote = canonical(meta.addr);
            let local = SocketAddr::new(
                meta.dst_ip.map_or(self.local.ip(), |ip| ip.to_canonical()),
                self.local.port(),
            );
            for segment in segments(buf, meta) {
                // A buffer of its own (the slots are read into again), which the
                // node hands to QUIC as it is.
                let payload = Bytes::copy_from_slice(segment);
                deliver(
                    Datagram {
                        local,
                        remote,
                        payload,
                    },
                    meta.ecn,
                );
                delivered += 1;
            }
        }
        self.counters.received(delivered as u64);
        Ok(delivered)
    }

    /// Sends `batch` in one call: from its source address (when given and
    /// not unspecified), with its ECN codepoint, its GSO segment size when it
    /// holds several datagrams, and its own TTL (when given, restored after).
    /// `WouldBlock` when the send buffer is full (not counted: send it again
    /// once writable); any other error is counted against the batch's
    /// datagrams and returned: it concerns this batch only.
    pub fn try_send(&self, batch: &Batch) -> io::Result<()> {
        let destination = for_socket(batch.destination(), self.v6);
        let datagrams = quinn_udp::Transmit {
            destination,
            ecn: batch.ecn(),
            contents: batch.contents(),
            segment_size: batch.segment_size(),
            src_ip: batch
                .source()
                .map(|source| source.ip())
                .filter(|ip| !ip.is_unspecified()),
        };
        let send = || self.state.try_send(UdpSockRef::from(&self.io), &datagrams);
        let sent = match batch.ttl() {
            None => send(),
            Some(ttl) => {
                let to_v4 = canonical(destination).is_ipv4();
                let sock = SockRef::from(&self.io);
                self.default_ttl.with_ttl(&sock, ttl, to_v4, send)
            }
        };
        match &sent {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            outcome => self.counters.sent(batch.count() as u64, outcome.is_ok()),
        }
        sent
    }
}

/// The datagrams of one read: a GRO packet holds several of `stride` bytes
/// (the last may be shorter), any other read one. An empty datagram yields
/// nothing: no machine has a use for it.
fn segments<'a>(buf: &'a [u8], meta: &RecvMeta) -> impl Iterator<Item = &'a [u8]> {
    buf[..meta.len].chunks(meta.stride.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gro_read_splits_at_its_stride_and_the_last_segment_may_be_short() {
        let buf: Vec<u8> = (0..10).collect();
        let meta = |len, stride| RecvMeta {
            len,
            stride,
            ..RecvMeta::default()
        };
        let split: Vec<&[u8]> = segments(&buf, &meta(10, 4)).collect();
        assert_eq!(split, [&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        let whole: Vec<&[u8]> = segments(&buf, &meta(7, 7)).collect();
        assert_eq!(whole, [&[0, 1, 2, 3, 4, 5, 6][..]]);
        assert_eq!(segments(&buf, &meta(0, 0)).count(), 0);
    }
}
