//! Three public relays (DHT servers) and two private nodes, A and B, behind symmetric
//! NATs, so A and B reach each other only through a relay; nobody bootstrapped yet.

use std::net::IpAddr;
use std::time::Duration;

use macula::dht::Mode;
use macula::sim::{HostId, Link, Mesh, NatConfig, PORT, lan_addr, public_addr};

/// The mesh, its relays, and A and B.
pub fn build(seed: u64) -> (Mesh, Vec<HostId>, HostId, HostId) {
    let mut mesh = Mesh::new(seed, super::epoch());
    mesh.set_link(Link::with_latency(Duration::from_millis(10)));
    let relays: Vec<HostId> = (1..=3)
        .map(|ip| mesh.add_public(public_addr(ip, PORT), |c| c.dht.mode = Mode::Server))
        .collect();
    let [a, b] = [1u8, 2].map(|side| {
        let nat = (IpAddr::from([203, 0, 113, side]), NatConfig::symmetric());
        mesh.add_behind(&[nat], lan_addr(side), |c| c.dht.mode = Mode::Client)
    });
    (mesh, relays, a, b)
}
