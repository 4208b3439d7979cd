//! Unit tests of the reachability machine, driven without a Node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{PeerConn, Reach, ReachConfig, ReachOutput, ReachSetup, ReachView};
use crate::contract::{Child, Datagram};
use crate::dht::{Mode, RoutingTable};
use crate::id::{NodeId, Realm};
use crate::nat::stun::{self, Class, TransactionId};
use crate::pool::ConnId;
use crate::wire::{
    DialBack, DialBackProbe, DialBackResult, DialBackStatus, Limits, Message, ProbeSource,
};

const LOCAL: NodeId = NodeId::from_bytes([1; 32]);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a test address")
}

fn machine(config: ReachConfig) -> Reach {
    let setup = ReachSetup {
        node: LOCAL,
        realm: Realm::new("test.example").expect("a valid realm"),
        listen_addrs: vec![addr("198.51.100.1:4433")],
        limits: Limits::default(),
        mode: Mode::Server,
    };
    Reach::new(&config, setup, 7)
}

fn drain(reach: &mut Reach) -> Vec<ReachOutput> {
    std::iter::from_fn(|| reach.poll_output()).collect()
}

/// Runs the machine's pending work against an empty node.
fn settle(reach: &mut Reach, now: Instant) -> Vec<ReachOutput> {
    let table = RoutingTable::new(LOCAL, 20);
    let view = ReachView {
        table: &table,
        wanted_relays: &[],
        reserved_relays: &[],
        avoided_relays: &[],
        unix_ms: 1_000,
    };
    reach.handle_timeout(now, &view);
    drain(reach)
}

/// A DHT server on its own IP, a fit helper for an `OtherIp` dial-back.
fn helper(conn: u64, ip: &str) -> PeerConn {
    PeerConn {
        conn: ConnId(conn),
        peer: Some(NodeId::from_bytes([conn as u8; 32])),
        remote: addr(ip),
        server: true,
        untranslated: true,
    }
}

fn ask(request_id: u64, asker: SocketAddr) -> DialBack {
    DialBack {
        request_id,
        nonce: [9; 12],
        source: ProbeSource::OtherIp,
        addrs: vec![asker],
    }
}

/// The status of the DIAL_BACK_RESULT among `outputs`, and whom probes went to.
fn result(outputs: &[ReachOutput]) -> (Option<DialBackStatus>, Vec<ConnId>) {
    let mut status = None;
    let mut probed = Vec::new();
    for output in outputs {
        match output {
            ReachOutput::Send {
                frame: Message::DialBackResult(r),
                ..
            } => status = Some(r.status),
            ReachOutput::Send {
                conn,
                frame: Message::DialBackProbe(_),
            } => probed.push(*conn),
            _ => {}
        }
    }
    (status, probed)
}

#[test]
fn dial_backs_beyond_the_per_asker_limit_are_refused() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let asker = addr("203.0.113.5:5000");
    let peers = [helper(2, "192.0.2.2:4433"), helper(3, "192.0.2.3:4433")];
    // The default allows bursts of 4 per asking IP.
    for request in 0..4 {
        reach.handle_dial_back(now, ConnId(1), None, asker, ask(request, asker), &peers);
        let (status, probed) = result(&drain(&mut reach));
        assert_eq!(status, Some(DialBackStatus::Forwarded));
        assert_eq!(probed, [ConnId(2), ConnId(3)]);
    }
    reach.handle_dial_back(now, ConnId(1), None, asker, ask(4, asker), &peers);
    let (status, probed) = result(&drain(&mut reach));
    assert_eq!(status, Some(DialBackStatus::Refused));
    assert!(probed.is_empty());
    let stats = reach.stats();
    assert_eq!(
        (stats.dial_backs_forwarded, stats.dial_backs_declined),
        (4, 1)
    );
}

#[test]
fn a_dial_back_without_a_fit_helper_or_for_another_ip_gets_no_probe() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let asker = addr("203.0.113.5:5000");
    // The only peer is the asker itself: no helper.
    let alone = [helper(1, "203.0.113.5:5000")];
    reach.handle_dial_back(now, ConnId(1), None, asker, ask(0, asker), &alone);
    assert_eq!(result(&drain(&mut reach)).0, Some(DialBackStatus::NoHelper));
    // Addresses on another IP than the asker's are never probed.
    let peers = [helper(2, "192.0.2.2:4433")];
    let elsewhere = ask(1, addr("198.51.100.77:5000"));
    reach.handle_dial_back(now, ConnId(1), None, asker, elsewhere, &peers);
    assert_eq!(
        result(&drain(&mut reach)),
        (Some(DialBackStatus::Refused), Vec::new())
    );
}

#[test]
fn probes_beyond_the_per_target_limit_are_not_sent() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let target = addr("203.0.113.5:5000");
    // The default allows bursts of 8 per target IP, each probe sent twice.
    for _ in 0..9 {
        let probe = DialBackProbe {
            nonce: [3; 12],
            addrs: vec![target],
        };
        reach.handle_probe_request(now, probe);
    }
    let sent = drain(&mut reach)
        .into_iter()
        .filter(|o| matches!(o, ReachOutput::Transmit(t) if t.destination == target))
        .count();
    assert_eq!(sent, 8 * super::PROBE_COPIES);
    let stats = reach.stats();
    assert_eq!((stats.probes_sent, stats.probes_rate_limited), (16, 1));
}

#[test]
fn an_early_timeout_is_a_no_op() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    assert_eq!(reach.poll_timeout(), None);
    assert!(settle(&mut reach, now).is_empty());
    assert!(settle(&mut reach, now + Duration::from_secs(3600)).is_empty());
    assert_eq!(reach.stats().discovery.runs, 0);
}

#[test]
fn a_run_without_reflectors_asks_for_a_dial_back_and_takes_no_helper_as_an_answer() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    reach.handle_discover(now);
    assert_eq!(reach.poll_timeout(), Some(now), "work waits");
    let asks: Vec<u64> = (settle(&mut reach, now).iter())
        .map(|o| match o {
            ReachOutput::AskDialBack(ask) => ask.request_id,
            other => panic!("only dial-backs asked for, got {other:?}"),
        })
        .collect();
    assert!(!asks.is_empty());
    for &request_id in &asks {
        reach.handle_no_helper(now, request_id);
    }
    settle(&mut reach, now);
    // A late answer to the same request is ignored.
    let late = DialBackResult {
        request_id: asks[0],
        status: DialBackStatus::Forwarded,
        helpers: Vec::new(),
    };
    reach.handle_dial_back_result(now, late);
    assert!(settle(&mut reach, now).is_empty());
    assert_eq!(reach.stats().discovery.runs, 1);
}

#[test]
fn a_configured_stun_server_is_asked_first_and_indications_are_dropped() {
    let now = crate::test_epoch();
    let server = addr("192.0.2.100:3478");
    let config = ReachConfig {
        stun_servers: vec![server],
        ..ReachConfig::default()
    };
    let mut reach = machine(config);
    reach.handle_discover(now);
    let outputs = settle(&mut reach, now);
    assert!(
        matches!(outputs.as_slice(), [ReachOutput::Transmit(t)] if t.destination == server),
        "{outputs:?}"
    );
    let indication = stun::Message::binding(Class::Indication, TransactionId([5; 12]));
    let datagram = Datagram {
        local: addr("198.51.100.1:4433"),
        remote: server,
        payload: indication.encode().expect("encodes"),
    };
    assert!(!reach.handle_stun(now, datagram));
    let garbage = Datagram {
        local: addr("198.51.100.1:4433"),
        remote: server,
        payload: Bytes::from_static(&[0u8; 4]),
    };
    assert!(!reach.handle_stun(now, garbage));
}
