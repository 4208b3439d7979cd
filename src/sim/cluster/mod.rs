//! The chaos cluster (`tests/cluster/`, issue 17) in the simulator: its [`plan`] (hosts
//! and each node's role) and its seeded fault [`schedule`], which the live run reads
//! too (through `examples/cluster_sim.rs`), and the [`scenario`] that plays both over
//! real [`Node`](crate::node::Node)s in a [`World`](crate::sim::World), writing the
//! live run's history format for the same checker (`tests/cluster/check.py`).

pub mod plan;
pub mod scenario;
pub mod schedule;
