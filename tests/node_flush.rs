//! A NAT reboot under a node that only receives (the chaos cluster's
//! `nat_reboot`: conntrack flushed, masquerade keeps the ports). The
//! subscriber dialed the publisher, so their connection is a plain direct
//! one; after the flush the publisher's packets die at the subscriber's NAT
//! until the subscriber sends again, and a node that only receives sends
//! nothing until its QUIC keep-alive (15 s after it last heard anything),
//! while the publisher's retransmissions back off exponentially: every
//! publication of the next 15–30 s arrives late or not at all.
//!
//! Issue 17 ("deliveries lost ~25 s after a NAT reboot"), fixed: a node that
//! knows it is behind a NAT PINGs a connection once its peer's data falls
//! quiet (`connection/quiet.rs`), which re-opens the mapping. Before the fix
//! 0 of the 50 publications after the flush arrived; now all 50.
#![cfg(feature = "sim")]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use macula::node::Event;
use macula::pubsub::PubSubEvent;
use macula::relay::RelayMode;
use macula::sim::{HostId, Mesh, NatConfig, NatId, lan_addr, public_addr};

const NAT_IP: [u8; 4] = [198, 51, 100, 18];

/// Three public relays, a public publisher, and a subscriber of `t.x`
/// behind a masquerade NAT, joined and settled; the mesh, publisher,
/// subscriber and the NAT.
fn mesh(seed: u64) -> (Mesh, HostId, HostId, NatId) {
    let mut mesh = Mesh::new(seed, common::epoch());
    for i in 1..=3 {
        mesh.add_public(public_addr(i, 4433), |c| c.relay.mode = RelayMode::Always);
    }
    let publisher = mesh.add_public(public_addr(4, 4433), |_| {});
    let nat = [(IpAddr::from(NAT_IP), NatConfig::linux_masquerade())];
    let subscriber = mesh.add_behind(&nat, lan_addr(2), |_| {});
    let nat = (mesh.world.nats())
        .find(|n| n.external_ip() == IpAddr::from(NAT_IP))
        .map(|n| n.id())
        .expect("the NAT");
    assert!(mesh.bootstrap_all(), "bootstrap");
    mesh.subscribe(subscriber, "t.x");
    mesh.settle(Duration::from_secs(40));
    (mesh, publisher, subscriber, nat)
}

/// What `publish_for` saw.
#[derive(Debug, Default)]
struct Seen {
    received: u32,
    /// Connections between the two that closed.
    closed: u32,
}

/// `publisher` publishes on `t.x` every 200 ms for `secs` seconds.
fn publish_for(mesh: &mut Mesh, publisher: HostId, subscriber: HostId, secs: u32) -> Seen {
    let peer = mesh.id(subscriber);
    let mut seen = Seen::default();
    common::publishing::publish_for(mesh, publisher, secs, |event| match event.event {
        Event::PubSub(PubSubEvent::Message { .. }) if event.host == subscriber => {
            seen.received += 1
        }
        Event::Disconnected { peer: Some(p), .. } if event.host == publisher && p == peer => {
            seen.closed += 1
        }
        _ => {}
    });
    seen
}

#[test]
fn a_flushed_nat_under_a_receiving_node_loses_no_publication_and_keeps_the_connection() {
    let (mut mesh, publisher, subscriber, nat) = mesh(1);
    let before = publish_for(&mut mesh, publisher, subscriber, 4);
    assert_eq!(before.received, 20, "{before:?}");
    let direct = mesh.node(publisher).connection_kinds();
    mesh.world.reboot_nat(nat, None, false);
    let after = publish_for(&mut mesh, publisher, subscriber, 10);
    mesh.settle(Duration::from_secs(2));
    assert_eq!(direct, (4, 0), "the two met direct");
    assert_eq!(after.closed, 0, "the connection lived on");
    assert_eq!(after.received, 50, "{after:?}");
    assert!(
        mesh.node(subscriber).counters().quiet_pings > 0,
        "the subscriber's PING re-opened its NAT"
    );
}
