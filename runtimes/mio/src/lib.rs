//! # macula-mio: drive a macula machine from a `mio` poll loop
//!
//! For applications that own their event loop. A [`Driver`] holds one
//! non-blocking UDP socket on [`macula_udp`], the base it shares with
//! macula-tokio (`quinn-udp`: batched receives, GRO and GSO, the local address
//! of each packet, the source address of each send; dual-stack when bound to
//! `[::]`), and runs the drive loop of the
//! [`macula::Machine`] contract: feed datagrams and timeouts, drain outputs
//! after each (sending transmits with their per-datagram TTL), and let the
//! poll wait no longer than the machine's next deadline. One call reads at
//! most a budget of datagrams, so the loop's other sources are never starved.
//!
//! The driver registers with *your* `mio::Registry` under *your* `Token`:
//!
//! ```no_run
//! use std::time::Duration;
//! use macula::id::Realm;
//! use macula::node::NodeConfig;
//! use macula_mio::{Driver, random};
//! use mio::{Events, Poll, Token};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const NODE: Token = Token(0);
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(64);
//! let config = NodeConfig::new(Realm::new("io.macula.example")?);
//! // Keep the identity (`secret_seed`) to keep the node id across restarts.
//! let identity = random::identity()?;
//! let mut node = Driver::bind_node("127.0.0.1:0".parse()?, config, identity)?;
//! node.register(poll.registry(), NODE)?;
//! loop {
//!     // Wait no longer than the node's deadline (and your own, if any).
//!     poll.poll(&mut events, node.timeout())?;
//!     // Feed the node what concerns it; other tokens are yours.
//!     node.handle_events(&events);
//!     while let Some(event) = node.pop_event() {
//!         println!("{event:?}");
//!     }
//!     // Commands stamp the time and send what they queued:
//!     // node.command(|node, now| node.find_node(now, target));
//! #   break;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`PollLoop`] owns a poll instead, for programs without a loop of their
//! own. `examples/embed.rs` runs two nodes and a `mio::Waker` fed by another
//! thread in one loop.
//!
//! The driver reads the clocks (monotonic time at every input, wall-clock
//! time once to start a node, both in [`clock`]) and the OS random source
//! (a node's identity and its 256-bit secret, in [`random`]); nothing in the
//! core does.
//!
//! ## Modules
//!
//! - `socket`: the one UDP socket: a [`macula_udp::UdpBase`] on a `mio`
//!   socket.
//! - `driver`: the drive loop on the application's poll ([`Driver`]).
//! - `extra`: the extra sockets a machine asks for, registered under the
//!   driver's token.
//! - `poll_loop`: a driver with a poll of its own ([`PollLoop`]).
//! - `node`: starting a [`macula::node::Node`] on a driver.
//! - `error`: [`DriverError`].
//! - [`clock`]: the only place the crate reads time, and [`random`]: the
//!   only place it draws randomness (both re-exported from macula-udp).

pub use macula_udp::clock;
mod driver;
mod error;
mod extra;
mod node;
mod poll_loop;
pub use macula_udp::random;
mod socket;

pub use driver::{DEFAULT_DATAGRAMS_PER_TURN, DEFAULT_SEND_QUEUE, Driver, DriverCounters};
pub use error::DriverError;
pub use poll_loop::{DRIVER_TOKEN, PollLoop};
