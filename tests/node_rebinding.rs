//! Paths follow their peer (docs/ARCHITECTURE.md, "a datagram's path"): a
//! NAT that reboots gives a node's packets a new source address (a new
//! public IP, or the same IP with new ports); the node at the other end
//! moves the connection's virtual address onto the new address on the first
//! authentic packet from it, so calls in flight and after complete. A forged
//! or replayed packet from a new address moves nothing.
#![cfg(feature = "sim")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use macula::node::{Event, Node};
use macula::rpc::{RegisterOptions, RpcEvent};
use macula::sim::{HostId, Mesh, NatConfig, NatId, echo, lan_addr, public_addr};
use macula::wire::{self, Message};
use macula::{Datagram, Input, Machine};
use quinn_proto::Dir;

mod common;
use common::raw_peer::{NODE, RawPeer, config, encode, pump, write_some};

const HOME_IP: [u8; 4] = [203, 0, 113, 7];

/// A public seed, a public provider of `svc.echo` and a caller behind a
/// masquerade NAT, bootstrapped through the seed; returns the mesh,
/// provider, caller and the caller's NAT.
fn provider_and_caller(seed: u64) -> (Mesh, HostId, HostId, NatId) {
    let mut mesh = Mesh::new(seed, common::epoch());
    mesh.add_public(public_addr(1, 4433), |_| {});
    let provider = mesh.add_public(public_addr(2, 4433), |_| {});
    let home = IpAddr::from(HOME_IP);
    let nat = [(home, NatConfig::linux_masquerade())];
    let caller = mesh.add_behind(&nat, lan_addr(2), |c| c.reach.auto_discover = false);
    let nat = (mesh.world.nats())
        .find(|n| n.external_ip() == home)
        .map(|n| n.id())
        .expect("the caller's NAT");
    assert!(mesh.bootstrap_all(), "bootstrap");
    mesh.register(provider, "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    (mesh, provider, caller, nat)
}

/// `caller` calls `svc.echo` and waits for the answer.
fn echo_call(mesh: &mut Mesh, caller: HostId, payload: &'static [u8]) -> Result<Bytes, String> {
    let call = mesh.call(caller, "svc.echo", payload);
    mesh.await_call(call, |world, host, event| echo(world, host, event).unwrap())
        .map_err(|e| e.to_string())
}

fn rebindings(mesh: &Mesh, host: HostId) -> u64 {
    mesh.node(host).counters().rebindings
}

#[test]
fn a_connection_follows_its_peer_when_the_nat_reboots_with_a_new_ip() {
    let (mut mesh, provider, caller, nat) = provider_and_caller(1);
    assert_eq!(
        echo_call(&mut mesh, caller, b"before").unwrap(),
        "echo:before"
    );
    assert_eq!(rebindings(&mesh, provider), 0);
    let connections = mesh.node(provider).connection_count();
    let new_ip = IpAddr::from([203, 0, 113, 99]);
    mesh.world.reboot_nat(nat, Some(new_ip), false);
    assert_eq!(
        echo_call(&mut mesh, caller, b"after").unwrap(),
        "echo:after"
    );
    assert_eq!(rebindings(&mesh, provider), 1);
    let after = mesh.node(provider).connection_count();
    assert_eq!(after, connections, "the same connection");
}

#[test]
fn a_connection_follows_its_peer_to_new_ports_and_a_call_in_flight_completes() {
    let (mut mesh, provider, caller, nat) = provider_and_caller(2);
    assert_eq!(echo_call(&mut mesh, caller, b"warm").unwrap(), "echo:warm");
    // A call leaves; the NAT reboots before its answer is back.
    let call = mesh.call(caller, "svc.echo", &b"in flight"[..]);
    let mut answered = None;
    let mut rebooted = false;
    let done = mesh.drive(Duration::from_secs(30), |world, host, event| {
        if let Event::Rpc(RpcEvent::Request { .. }) = &event {
            echo(world, host, &event).unwrap();
            if !rebooted {
                world.reboot_nat(nat, None, true);
                rebooted = true;
            }
        }
        if let Some(result) = macula::sim::completion(&event, call) {
            answered = Some(result);
        }
        answered.is_some()
    });
    assert!(done && rebooted, "the call completed");
    assert_eq!(answered.unwrap().unwrap(), "echo:in flight");
    assert_eq!(rebindings(&mesh, provider), 1);
    assert_eq!(echo_call(&mut mesh, caller, b"next").unwrap(), "echo:next");
}

#[test]
fn a_flush_that_keeps_the_address_needs_no_following() {
    let (mut mesh, provider, caller, nat) = provider_and_caller(3);
    assert_eq!(echo_call(&mut mesh, caller, b"1").unwrap(), "echo:1");
    // Masquerade preserves ports: the flow gets its old address back.
    mesh.world.reboot_nat(nat, None, false);
    assert_eq!(echo_call(&mut mesh, caller, b"2").unwrap(), "echo:2");
    assert_eq!(rebindings(&mesh, provider), 0);
}

fn node() -> Node {
    common::raw_peer::node(config(), common::epoch())
}

/// A FIND_NODE on a new stream of `peer`; true when it was answered.
fn ask(node: &mut Node, peer: &mut RawPeer, now: &mut std::time::Instant) -> bool {
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    let find = encode(&Message::from(wire::FindNode {
        request_id: 1,
        target: node.node_id(),
    }));
    assert_eq!(write_some(&mut peer.conn, stream, &find), find.len());
    pump(node, &mut [&mut *peer], now, 30);
    !peer.read_available(stream).is_empty()
}

#[test]
fn forged_and_replayed_packets_from_a_new_address_move_nothing() {
    let mut node = node();
    let mut now = common::epoch();
    let mut peer = RawPeer::dial(&node, now, 60, SocketAddr::from(([203, 0, 113, 60], 5000)));
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    peer.hello();
    pump(&mut node, &mut [&mut peer], &mut now, 20);
    assert!(ask(&mut node, &mut peer, &mut now));
    let paths = node.path_count();
    // A packet of the peer, delivered once from its own address and then
    // replayed from elsewhere, and a forged copy (one bit flipped).
    let stream = peer.conn.streams().open(Dir::Bi).unwrap();
    let ping = encode(&Message::from(wire::FindNode {
        request_id: 2,
        target: node.node_id(),
    }));
    write_some(&mut peer.conn, stream, &ping);
    now += Duration::from_millis(2);
    let packets = peer.transmits(now);
    assert!(!packets.is_empty());
    let local: SocketAddr = NODE.parse().unwrap();
    for packet in &packets {
        node.handle_input(
            now,
            Input::Datagram(datagram(local, peer.addr, packet.clone())),
        );
    }
    let elsewhere = SocketAddr::from(([198, 18, 0, 66], 6666));
    for packet in &packets {
        node.handle_input(
            now,
            Input::Datagram(datagram(local, elsewhere, packet.clone())),
        );
        let mut forged = packet.to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = Bytes::from(forged);
        node.handle_input(now, Input::Datagram(datagram(local, elsewhere, forged)));
    }
    let mut to_elsewhere = 0;
    while let Some(output) = node.poll_output() {
        if let macula::Output::Transmit(t) = output {
            to_elsewhere += usize::from(t.destination == elsewhere);
        }
    }
    assert_eq!(
        to_elsewhere, 0,
        "nothing was sent to the stranger's address"
    );
    assert_eq!(node.counters().rebindings, 0);
    assert_eq!(
        node.path_count(),
        paths,
        "no path was kept for the stranger"
    );
    // The peer itself moves: the node follows it.
    peer.addr = SocketAddr::from(([203, 0, 113, 61], 7000));
    assert!(
        ask(&mut node, &mut peer, &mut now),
        "answered at the new address"
    );
    assert_eq!(node.counters().rebindings, 1);
    assert_eq!(node.connection_count(), 1);
}

fn datagram(local: SocketAddr, remote: SocketAddr, payload: Bytes) -> Datagram {
    Datagram {
        local,
        remote,
        payload,
    }
}
