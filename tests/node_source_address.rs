//! A node whose socket is bound to a wildcard address (a dual-stack `[::]`,
//! say) on a host with several addresses answers an inbound connection from
//! the address its peer dialed: the kernel would otherwise pick a source of
//! its own (the host's first address), which the peer's NAT or firewall
//! drops as a stranger (the NAT lab's `node-ipv6-dual-stack` found this with
//! a relay on `[::]` and peers dialing its third IPv4 address).
#![cfg(feature = "sim")]

use std::net::SocketAddr;
use std::time::Duration;

use macula::{Datagram, Input, Machine, Output};

mod common;
use common::raw_peer::{NODE, RawPeer, config};

#[test]
fn an_accepted_connection_is_answered_from_the_address_it_was_dialed_at() {
    let mut config = config();
    config.listen_addrs = vec!["[::]:4433".parse().unwrap()];
    let mut node = common::raw_peer::node(config, common::epoch());
    let mut now = common::epoch();
    let dialed: SocketAddr = NODE.parse().unwrap();
    let mut peer = RawPeer::dial(&node, now, 61, SocketAddr::from(([203, 0, 113, 61], 5000)));
    let mut sources = Vec::new();
    for round in 0..30 {
        now += Duration::from_millis(2);
        for payload in peer.transmits(now) {
            let datagram = Datagram {
                local: dialed,
                remote: peer.addr,
                payload,
            };
            node.handle_input(now, Input::Datagram(datagram));
        }
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_input(now, Input::Timeout);
        }
        while let Some(output) = node.poll_output() {
            if let Output::Transmit(t) = output
                && t.destination == peer.addr
            {
                sources.push(t.source);
                for datagram in t.split(1) {
                    peer.receive(now, &datagram.payload);
                }
            }
        }
        if round == 5 {
            peer.hello();
        }
    }
    assert!(!peer.conn.is_handshaking(), "the handshake completed");
    assert!(sources.len() > 2, "{sources:?}");
    assert!(sources.iter().all(|s| *s == Some(dialed)), "{sources:?}");
}
