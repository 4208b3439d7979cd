//! # macula-udp: the UDP socket base of macula's drivers
//!
//! Both drivers ([macula-tokio](https://docs.rs/macula-tokio) and
//! [macula-mio](https://docs.rs/macula-mio)) read and write their sockets
//! through this crate, so a datagram is treated the same whichever loop runs
//! the machine. [`UdpBase`] wraps a non-blocking socket of the driver's own
//! type (a tokio or mio socket, or a plain `std` one) and uses `quinn-udp` for
//! the system calls: batched receives (`recvmmsg`), GRO super-datagrams split
//! by their stride, the ECN codepoint and the destination (local) address of
//! each received datagram, the source address and GSO segments of each send.
//! On top it adds what the macula contract needs:
//!
//! - [`open`]: a socket bound at an address, dual-stack for `[::]` where the
//!   OS allows it and on the unspecified IPv4 address where the host has no
//!   IPv6 at all;
//! - IPv4 peers seen as plain IPv4 on an IPv6 socket ([`canonical`] in,
//!   IPv4-mapped IPv6 out);
//! - a per-datagram IP TTL (IPv6 hop limit), set for one send and restored
//!   after it;
//! - [`Batch`] and [`Batcher`]: consecutive transmits to one peer joined for
//!   one GSO send;
//! - [`SocketCounters`]: what both drivers count;
//! - [`ExtraSockets`]: the extra sockets a machine asks for (`macula::SocketRequest`),
//!   over the driver's own socket type.
//!
//! Nothing here waits: "nothing to read" and "send buffer full" come back as
//! `WouldBlock`, for the driver's own readiness (tokio's reactor, a mio poll).
//!
//! The drivers' [`clock`] and OS [`random`] source live here too: they are the
//! same for both.
//!
//! ## Modules
//!
//! - `open`: binding a socket ([`open`], [`open_exactly`]).
//! - `base`: reading and writing it ([`UdpBase`], [`RecvBuffers`]).
//! - `address`: IPv4-mapped addresses ([`canonical`]).
//! - `ttl`: a send's own TTL, and the default restored after it.
//! - `batch`: GSO batches ([`Batch`], [`Batcher`]).
//! - `counters`: [`SocketCounters`], [`SocketCounts`].
//! - `extra`: extra sockets ([`ExtraSockets`]).
//! - [`clock`], [`random`]: the only places a driver reads time and draws
//!   randomness.

mod address;
mod base;
mod batch;
pub mod clock;
mod counters;
mod extra;
mod open;
pub mod random;
mod ttl;

pub use address::canonical;
pub use base::{OsSocket, RecvBuffers, UdpBase};
pub use batch::{Batch, Batcher, MAX_BATCH_BYTES};
pub use counters::{SocketCounters, SocketCounts};
pub use extra::{
    ExtraSet, ExtraSockets, MAX_EXTRA_DATAGRAM, MAX_EXTRA_SOCKETS, handle_request, read_extra,
};
pub use open::{open, open_exactly};
/// The ECN codepoint of a datagram (RFC 3168), as `quinn-udp` reads and writes it.
pub use quinn_udp::EcnCodepoint;

/// Most datagrams a driver feeds its machine as one input
/// (`Machine::handle_inputs`) before it sends what they made. A Node answers
/// the datagrams of one input together, so the answers to a burst share
/// packets, and it acknowledges them together. One read of a busy socket
/// holds up to thousands (64 reads of GRO packets of up to 64 KiB).
///
/// Measured on loopback (issue 16, the messaging bench, `bulk_vs_quinn`,
/// with `TransportSettings::immediate_acks` on): 32 gave 1.15–1.25 of plain
/// quinn's rate for a 64 MiB RPC request, 16 gave 0.81–1.07, 4 gave
/// 0.87–0.91 and 256 gave 0.79–0.84, with calls/s alike (0.85–0.94 of
/// quinn's) at every size; with the defaults, 32 gives 0.99–1.19. Session 16 had found
/// anything above six "falling off a cliff" (0.08–0.11); the cause was
/// [`MAX_BATCH_BYTES`]: a larger input made bursts of more than 54 full
/// datagrams to one peer, and the OS refused each such GSO send whole.
pub const DATAGRAMS_PER_INPUT: usize = 32;
