//! Port mapping inside the Node: off by default; with a gateway the node asks it (PCP)
//! at start, reads only the gateway's answers, reports the mapping, and deletes it at
//! shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::nat::portmap::{MapEvent, PortMapConfig, Protocol, SERVER_PORT};
use macula::node::{Event, Node, NodeConfig};
use macula::{Datagram, Input, Machine, Output};

mod common;
use common::raw_peer::{NODE, config, node};

const GATEWAY: &str = "198.51.100.254";

fn gateway() -> SocketAddr {
    SocketAddr::new(GATEWAY.parse().unwrap(), SERVER_PORT)
}

/// Drains the node: its transmits to the gateway and its port-mapping events.
fn drain(node: &mut Node) -> (Vec<Bytes>, Vec<MapEvent>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(output) = node.poll_output() {
        match output {
            Output::Transmit(t) if t.destination == gateway() => sent.push(t.payload),
            Output::Event(Event::PortMapping(e)) => events.push(e),
            _ => {}
        }
    }
    (sent, events)
}

fn mapping_node(now: Instant) -> Node {
    let mut config: NodeConfig = config();
    config.port_mapping = Some(PortMapConfig::new(GATEWAY.parse().unwrap()));
    node(config, now)
}

/// A PCP MAP success for `request`, granting `external` for 600 s.
fn answer(request: &[u8], external: SocketAddr) -> Bytes {
    let mut r = vec![2, 0x81, 0, 0, 0, 0, 2, 0x58, 0, 0, 0, 9];
    r.extend_from_slice(&[0; 12]);
    r.extend_from_slice(&request[24..42]);
    r.extend_from_slice(&external.port().to_be_bytes());
    let SocketAddr::V4(v4) = external else {
        unreachable!()
    };
    r.extend_from_slice(&v4.ip().to_ipv6_mapped().octets());
    Bytes::from(r)
}

#[test]
fn a_fresh_node_asks_the_gateway_at_its_first_timer_before_any_input() {
    // A node alone (no seeds, no commands) gets no input but its timers: the
    // port mapper's first request must show in `poll_timeout` from the start.
    let now = common::epoch();
    let mut node = mapping_node(now);
    assert_eq!(node.poll_timeout(), Some(now));
    node.handle_input(now, Input::Timeout);
    assert_eq!(drain(&mut node).0.len(), 1, "the PCP request");
}

#[test]
fn without_a_gateway_nothing_is_asked() {
    let now = common::epoch();
    let mut node = node(config(), now);
    node.handle_input(now, Input::Timeout);
    assert!(drain(&mut node).0.is_empty());
    assert_eq!(node.port_mapping_stats(), None);
}

#[test]
fn the_gateway_is_asked_its_answer_maps_us_and_shutdown_deletes_it() {
    let now = common::epoch();
    let mut node = mapping_node(now);
    node.handle_input(now, Input::Timeout);
    let (sent, _) = drain(&mut node);
    assert_eq!(sent.len(), 1, "one PCP MAP request");
    assert_eq!(&sent[0][..2], &[2, 1]);
    assert_eq!(
        sent[0][40..42],
        4433u16.to_be_bytes(),
        "for the node's port"
    );
    let external: SocketAddr = "203.0.113.50:4433".parse().unwrap();
    let good = answer(&sent[0], external);
    // The same bytes from anyone but the gateway's server port are not the port mapper's.
    for from in ["198.51.100.254:5350", "203.0.113.9:5351"] {
        let datagram = Datagram {
            local: NODE.parse().unwrap(),
            remote: from.parse().unwrap(),
            payload: good.clone(),
        };
        node.handle_input(now, Input::Datagram(datagram));
        assert!(drain(&mut node).1.is_empty());
    }
    let t1 = now + Duration::from_millis(10);
    let datagram = Datagram {
        local: NODE.parse().unwrap(),
        remote: gateway(),
        payload: good,
    };
    node.handle_input(t1, Input::Datagram(datagram));
    let (_, events) = drain(&mut node);
    assert_eq!(
        events,
        [MapEvent::Mapped {
            external,
            lifetime: Duration::from_secs(600),
            protocol: Protocol::Pcp,
        }]
    );
    node.shutdown(t1);
    let (sent, _) = drain(&mut node);
    assert_eq!(sent.len(), 1, "the deletion");
    assert_eq!(&sent[0][4..8], &[0, 0, 0, 0], "lifetime 0");
    let stats = node.port_mapping_stats().expect("on");
    assert_eq!((stats.mapped, stats.deleted, stats.wrong_source), (1, 1, 0));
}

#[test]
fn what_the_port_mapper_counts_reaches_the_metrics() {
    use macula::metrics::{PortMapChange, PortMapDrop};
    let now = common::epoch();
    let mut node = mapping_node(now);
    node.handle_input(now, Input::Timeout);
    let (sent, _) = drain(&mut node);
    let from_gateway = |payload: Bytes| {
        Input::Datagram(Datagram {
            local: NODE.parse().unwrap(),
            remote: gateway(),
            payload,
        })
    };
    // A stranger's bytes from the gateway's port: too short to be an answer.
    node.handle_input(now, from_gateway(Bytes::from_static(&[2, 0x81])));
    let external: SocketAddr = "203.0.113.50:4433".parse().unwrap();
    node.handle_input(now, from_gateway(answer(&sent[0], external)));
    drain(&mut node);
    let metrics = node.metrics();
    let events = &metrics.nat_port_mapping;
    assert_eq!(*events.get(PortMapChange::Requested), 1);
    assert_eq!(*events.get(PortMapChange::Mapped), 1);
    assert_eq!(*events.get(PortMapChange::Deleted), 0);
    assert_eq!(
        *metrics.nat_port_mapping_dropped.get(PortMapDrop::Malformed),
        1
    );
    node.shutdown(now);
    node.handle_input(now, Input::Timeout);
    drain(&mut node);
    let events = &node.metrics().nat_port_mapping;
    assert_eq!(*events.get(PortMapChange::Deleted), 1);
    assert_eq!(
        *events.get(PortMapChange::Requested),
        2,
        "the deletion is a request"
    );
}
