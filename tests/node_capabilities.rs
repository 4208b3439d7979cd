//! The capability bits tell the truth (docs/PROTOCOL.md §6): a node
//! announces RPC while it serves a procedure and PUBSUB while it holds a
//! subscription, in CONNECT and, when that changes, in CAPABILITIES; and a
//! node sends no CALL to a peer that did not announce RPC.
#![cfg(feature = "sim")]

use std::time::Duration;

use bytes::Bytes;
use macula::pubsub::Pattern;
use macula::rpc::{RegisterOptions, RpcEvent};
use macula::sim::{Link, Mesh, echo};
use macula::wire::{Capabilities, CapabilitiesUpdate, Message};
use macula::{Input, Machine};

mod common;
use common::raw_peer::{RawPeer, config, frames, node, pump};

/// The capabilities the node announced last on the control stream: its
/// CONNECT, then each CAPABILITIES.
fn announced(data: &[u8], last: &mut Option<Capabilities>) {
    for frame in frames(data) {
        match frame {
            Message::Connect(hello) => *last = Some(hello.capabilities),
            Message::CapabilitiesUpdate(update) => *last = Some(update.capabilities),
            other => panic!("unexpected on the control stream: {other:?}"),
        }
    }
}

#[test]
fn rpc_and_pubsub_are_announced_exactly_while_served() {
    let mut now = common::epoch();
    let mut node = node(config(), now);
    let mut peer = RawPeer::dial(&node, now, 50, "198.51.100.2:5000".parse().unwrap());
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let control = peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    let mut last = None;
    announced(&peer.read_available(control), &mut last);
    let hello = last.expect("the node's CONNECT");
    assert!(!hello.contains(Capabilities::RPC), "{hello:?}");
    assert!(!hello.contains(Capabilities::PUBSUB), "{hello:?}");

    let mut step = |node: &mut macula::node::Node, now: &mut std::time::Instant| {
        node.handle_input(*now, Input::Timeout);
        pump(node, &mut [&mut peer], now, 20);
        announced(&peer.read_available(control), &mut last);
        last.unwrap()
    };
    node.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    let caps = step(&mut node, &mut now);
    assert!(caps.contains(Capabilities::RPC), "{caps:?}");
    assert!(!caps.contains(Capabilities::PUBSUB), "{caps:?}");
    node.subscribe(now, Pattern::new("news.*").unwrap())
        .unwrap();
    let caps = step(&mut node, &mut now);
    assert!(caps.contains(Capabilities::RPC.with(Capabilities::PUBSUB)));
    assert!(node.unregister(now, "svc.echo"));
    let caps = step(&mut node, &mut now);
    assert!(!caps.contains(Capabilities::RPC), "{caps:?}");
    assert!(caps.contains(Capabilities::PUBSUB), "{caps:?}");
    assert!(peer.lost.is_none());
}

#[test]
fn no_call_goes_to_a_provider_that_does_not_announce_rpc() {
    let link = Link::with_latency(Duration::from_millis(5));
    let mut mesh = Mesh::public(3, 1, common::epoch(), link, |_, _| {});
    assert!(mesh.bootstrap_all(), "bootstrap");
    let (provider, caller) = (mesh.hosts[1], mesh.hosts[2]);
    mesh.register(provider, "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));

    // The provider tells the caller what it serves (by hand, so that the
    // claim can differ from its registry).
    let tell = |mesh: &mut Mesh, capabilities: Capabilities| {
        let to = mesh.id(caller);
        let frame = Message::from(CapabilitiesUpdate { capabilities });
        let sent =
            (mesh.world).with_machine(provider, |node, now| node.send_raw_frame(now, to, &frame));
        assert!(sent, "a connection from provider to caller");
        mesh.settle(Duration::from_millis(100));
    };
    let served = |mesh: &mut Mesh| {
        let call = mesh.call(caller, "svc.echo", Bytes::from_static(b"hi"));
        let mut requests = 0;
        let result = mesh.await_call(call, |world, host, event| {
            echo(world, host, event).unwrap();
            if matches!(event, macula::node::Event::Rpc(RpcEvent::Request { .. })) {
                requests += 1;
            }
        });
        (requests, result)
    };
    // Announced: served.
    tell(&mut mesh, Capabilities::DHT_SERVER.with(Capabilities::RPC));
    let (requests, result) = served(&mut mesh);
    assert_eq!((requests, result), (1, Ok(Bytes::from_static(b"echo:hi"))));

    // Withdrawn: the caller, which knows the provider, does not call it.
    tell(&mut mesh, Capabilities::DHT_SERVER);
    let (requests, result) = served(&mut mesh);
    assert_eq!(requests, 0, "the handler never ran");
    assert!(result.is_err(), "{result:?}");
}
