//! One QUIC connection as the Node keeps it, and the table of them.
//!
//! Like quinn-proto's `Connection` beside its `Endpoint`, the per-connection
//! logic lives here, apart from the Node that owns the endpoint: [`Conn`]
//! (quinn's state plus framing, buffers and the connection's phase), the
//! phase machine every connection follows ([`Phase`]: handshaking →
//! awaiting CONNECT → ready → closing, with its snapshot-tested transition
//! table), the frame router ([`route`]: which child owns a message type and
//! on which kind of stream it may arrive) and the connection table
//! ([`ConnTable`]: dirty set and deadline index, so an input drives only the
//! connections it touches), and admission ([`admission`]: what strangers may
//! start, and how much), and the silence watch (`silence`: data left
//! unacknowledged for a few probe timeouts) with its signed probes (`probe`:
//! a silent relay asked whether it still answers), and the quiet watch
//! (`quiet`: the PING a node behind a NAT owes when the peer's data stops),
//! and the handover watch (`handover`: PINGs after a path switch until the
//! new path acknowledges one), and the beat (`beat`: the one instant each
//! keep-alive period at which the connections we dialed over relay circuits
//! PING together).
//! Nothing here knows the Node or its children.

pub mod admission;
mod beat;
pub mod congestion;
mod conn;
mod handover;
pub mod phase;
pub(crate) mod probe;
mod quiet;
pub mod router;
mod silence;
mod table;

use quinn_proto::VarInt;

pub(crate) use beat::Beat;
pub use conn::{Bounds, Conn, PingVerdict, StreamRead, StreamTrouble};
pub use phase::Phase;
pub use silence::{SilenceLimit, Wait};
pub(crate) use silence::{answer_wait, frames_received};
pub(crate) use table::{ConnTable, Segments};

/// Stream code: a request whose answer did not come in time.
pub const STREAM_TIMED_OUT: VarInt = VarInt::from_u32(0x100);
/// Stream code: a request this node did not serve (docs/PROTOCOL.md §7).
pub const STREAM_REFUSED: VarInt = VarInt::from_u32(0x101);
/// Stream code: a stream given up after its request was read (the call was
/// cancelled, or its answer could not be sent).
pub const STREAM_ABANDONED: VarInt = VarInt::from_u32(0x102);
