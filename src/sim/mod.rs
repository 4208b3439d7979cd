//! The deterministic network simulator (feature `sim`).
//!
//! Runs any number of sans-IO [`Machine`](crate::Machine)s over a virtual
//! network with a virtual clock: a public internet, private networks behind
//! RFC 4787 NAT boxes that nest (a home NAT inside a carrier NAT), and links
//! with latency, jitter, loss, duplication, reordering, MTU and router hops.
//! Everything random comes from one seed, and every delivery, drop and event
//! goes into a [`Trace`] whose hash checks determinism.
//!
//! The labs run the crate's machines in it: [`punch_lab`] two punchers behind NATs of
//! every kind (measured against the oracle), [`node_lab`] the relay → direct upgrade of
//! real Nodes, [`dht_net`] many DHTs on a packet-free network model and [`dht_scale`] the
//! bootstrap/churn/lookup scenario graded on it, [`idle_lab`] a hub's idle connections,
//! direct and relayed, to count what idling costs, [`cluster`] the chaos cluster's
//! topology, workload and fault schedule.
//!
//! ```
//! # #[allow(clippy::disallowed_methods)] fn main() {
//! use std::time::{Duration, Instant};
//! use macula::sim::{Link, NatConfig, Probe, World};
//!
//! let start = Instant::now(); // the only clock read: the world is virtual
//! let mut world = World::new(7, start);
//! let internet = world.internet();
//! let wan = Link::with_latency(Duration::from_millis(20)).hops(3);
//! let (_nat, home) =
//!     world.add_nat(internet, "198.51.100.1".parse().unwrap(), wan, NatConfig::symmetric());
//! let reflector =
//!     world.add_host(internet, "203.0.113.1:3478".parse().unwrap(), wan, Probe::reflector());
//! let mut probe = Probe::new();
//! probe.send(start, world.host_addr(reflector), "hi");
//! let laptop = world.add_host(home, "192.168.1.2:5000".parse().unwrap(), Link::default(), probe);
//!
//! world.run_for(Duration::from_secs(1));
//! let answer = world.events().iter().find(|e| e.host == laptop).unwrap();
//! assert_eq!(answer.event.reflected(), Some("198.51.100.1:40000".parse().unwrap()));
//! # }
//! ```

pub mod cluster;
pub mod dht_net;
pub mod dht_scale;
mod fixture;
pub mod idle_lab;
pub mod ladder;
mod link;
mod nat;
pub mod node_lab;
mod probe;
pub mod punch_lab;
mod trace;
mod world;

pub use fixture::{
    CALL_TIMEOUT, Mesh, PORT, UNIX_MS, completion, echo, events_of, lan_addr, mirror, public_addr,
    realm, unix_ms_at,
};
pub use link::Link;
pub use nat::{Behavior, Binding, Nat, NatConfig, NatEvent, NatLogEntry, PortAllocation};
pub use probe::{Probe, ProbeEvent};
pub use trace::{DropReason, Outcome, Trace, TraceEntry};
pub use world::{DEFAULT_TTL, HostEvent, HostId, NatId, NetId, World};
