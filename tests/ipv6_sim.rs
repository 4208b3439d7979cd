//! IPv6 behind stateful firewalls in the simulator: the twin of the NAT lab's
//! `node-ipv6-firewalled` (tests/natlab/run). Two nodes, each the one host of a
//! site whose router filters routed IPv6 like a home router
//! (`NatConfig::stateful_firewall()`: nothing translated, only the endpoints a host
//! sent to get in), and a relay on the internet, all on IPv6. Each node learns from
//! discovery that no NAT stands in front of it; the connection starts relayed,
//! punches, and goes direct between the two global IPv6 addresses, with every call
//! answered and the relay carrying none of the pair's traffic afterwards. (The lab's
//! dual-stack variant has no twin: a simulated host has one address.)
#![cfg(feature = "sim")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use common::epoch;
use macula::dht::Mode;
use macula::node::{Event, PathChange, RelayEvent};
use macula::path::PathKind;
use macula::rpc::{CallId, RegisterOptions, RpcError, RpcEvent};
use macula::sim::{HostId, Mesh, NatConfig, PORT, echo, events_of};

/// A node at `ip`, the one host behind its own IPv6 firewall.
fn behind_firewall(mesh: &mut Mesh, ip: &str) -> HostId {
    let ip: IpAddr = ip.parse().expect("an IPv6 address");
    let firewall = [(ip, NatConfig::stateful_firewall())];
    mesh.add_behind(&firewall, SocketAddr::new(ip, PORT), |c| {
        c.dht.mode = Mode::Client;
    })
}

/// Where `host`'s connection went direct to, from its path changes.
fn direct_remote(changes: &[(HostId, PathKind, PathChange)], host: HostId) -> Option<SocketAddr> {
    changes.iter().find_map(|(h, path, reason)| match reason {
        PathChange::Punched { remote, .. } if *h == host && *path == PathKind::Direct => {
            Some(*remote)
        }
        _ => None,
    })
}

#[test]
fn two_nodes_behind_ipv6_firewalls_connect_relayed_then_go_direct_over_ipv6() {
    let mut mesh = Mesh::new(11, epoch());
    let relay = mesh.add_public("[2001:db8:ff::12]:4433".parse().unwrap(), |_| {});
    let a = behind_firewall(&mut mesh, "2001:db8:a::11");
    let b = behind_firewall(&mut mesh, "2001:db8:b::11");
    assert!(mesh.bootstrap(relay, &[a, b]));
    mesh.reserve(a, relay);
    mesh.reserve(b, relay);
    // Discovery (the relay reflects): each sees its own address, no NAT.
    let reported = mesh.run_until(
        |world| {
            [a, b].iter().all(|&h| {
                let granted = events_of(world, h)
                    .any(|e| matches!(e, Event::Relay(RelayEvent::ReservationGranted { .. })));
                granted && events_of(world, h).any(|e| matches!(e, Event::Nat(_)))
            })
        },
        Duration::from_secs(30),
    );
    assert!(reported, "reservations and NAT reports");
    for host in [a, b] {
        let own = mesh.world.host_addr(host);
        let report = (mesh.events_of(host))
            .find_map(|e| match e {
                Event::Nat(report) => Some(report.clone()),
                _ => None,
            })
            .expect("a report");
        assert_eq!(report.behind_nat, Some(false), "{report:?}");
        assert_eq!(report.reflexive, [own]);
    }
    mesh.register(b, "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));

    let (relay_contact, target) = (mesh.contact(relay), mesh.id(b));
    (mesh.world).with_machine(a, |n, now| n.dial_via_relay(now, relay_contact, target));
    let mut changes: Vec<(HostId, PathKind, PathChange)> = Vec::new();
    let mut connected = false;
    mesh.drive(Duration::from_secs(30), |world, host, event| {
        let _ = echo(world, host, &event);
        match event {
            Event::Connected {
                path: PathKind::Relayed,
                ..
            } if host == a => connected = true,
            Event::PathChanged { path, reason, .. } => changes.push((host, path, reason)),
            _ => {}
        }
        connected
    });
    assert!(connected, "the relayed connection came up");

    // Calls 20 ms apart until both ends are direct, then 100 more; the relay's count is
    // taken 10 calls after the switch, once what was in flight on the circuit is through.
    let mut calls: Vec<(CallId, Bytes)> = Vec::new();
    let mut answers: Vec<(CallId, Result<Bytes, RpcError>)> = Vec::new();
    let (mut after, mut at_switch) = (None::<u64>, None);
    let forwarded = |mesh: &Mesh| mesh.node(relay).relay_counters().packets_forwarded;
    let step = |mesh: &mut Mesh, within: Duration, changes: &mut Vec<_>, answers: &mut Vec<_>| {
        mesh.drive(within, |world, host, event| {
            let _ = echo(world, host, &event);
            match event {
                Event::PathChanged { path, reason, .. } => changes.push((host, path, reason)),
                Event::Rpc(RpcEvent::Completed { call, result }) => answers.push((call, result)),
                _ => {}
            }
            false
        });
    };
    while after.is_none_or(|n| n < 100) && calls.len() < 400 {
        let number = Bytes::from((calls.len() as u64).to_be_bytes().to_vec());
        calls.push((mesh.call(a, "svc.echo", number.clone()), number));
        step(
            &mut mesh,
            Duration::from_millis(20),
            &mut changes,
            &mut answers,
        );
        let both = direct_remote(&changes, a).is_some() && direct_remote(&changes, b).is_some();
        after = after.map(|n| n + 1).or(both.then_some(0));
        if after == Some(10) {
            at_switch = Some(forwarded(&mesh));
        }
    }
    step(
        &mut mesh,
        Duration::from_secs(2),
        &mut changes,
        &mut answers,
    );
    let answered = (calls.iter())
        .filter(|(call, number)| {
            let expected = Bytes::from([b"echo:".as_slice(), number].concat());
            (answers.iter()).any(|(c, r)| c == call && r.as_ref().is_ok_and(|p| *p == expected))
        })
        .count();
    let v6 = |host: HostId| mesh.world.host_addr(host);
    assert_eq!(direct_remote(&changes, a), Some(v6(b)), "{changes:?}");
    assert_eq!(direct_remote(&changes, b), Some(v6(a)), "{changes:?}");
    assert_eq!(
        answered,
        calls.len(),
        "every call answered with its own number"
    );
    assert!(
        after.is_some_and(|n| n >= 100),
        "100 calls after the switch"
    );
    let at_switch = at_switch.expect("both ends went direct");
    assert_eq!(
        forwarded(&mesh),
        at_switch,
        "the relay carried nothing after"
    );
    assert!(
        changes.iter().all(|(_, path, _)| *path == PathKind::Direct),
        "no fall back: {changes:?}"
    );
}
