//! Unit tests of the upgrade machine, driven without a Node: two machines
//! exchange their frames and datagrams directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{PathChange, PunchLink, UpgradeConfig, UpgradeOutput, Upgrades};
use crate::contract::Child;
use crate::id::NodeId;
use crate::nat::punch::{Candidate, CandidateKind, NatClass};
use crate::path::{PathKind, RealPath};
use crate::pool::ConnId;
use crate::wire::{Message, PunchAnswer};

const A: NodeId = NodeId::from_bytes([1; 32]);
const B: NodeId = NodeId::from_bytes([2; 32]);
const CIRCUIT: RealPath = RealPath::Relay {
    relay: NodeId::from_bytes([3; 32]),
    circuit: 1,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a test address")
}

/// One side: its machine, its address, its connection to the other.
struct Side {
    machine: Upgrades,
    addr: SocketAddr,
    link: PunchLink,
}

fn side(seed: u8, me: &str, conn: u64, peer: NodeId) -> Side {
    let mut machine = Upgrades::new(UpgradeConfig::default(), [seed; 32]);
    let addr = addr(me);
    let candidates = vec![Candidate::new(CandidateKind::Lan, addr)];
    machine.handle_local_candidates(candidates, NatClass::OPEN);
    let link = PunchLink {
        conn: ConnId(conn),
        peer,
        path: CIRCUIT,
        rtt: Duration::from_millis(20),
    };
    Side {
        machine,
        addr,
        link,
    }
}

fn drain(machine: &mut Upgrades) -> Vec<UpgradeOutput> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}

/// Delivers `from`'s outputs to `to` (frames and datagrams arrive at once);
/// returns what the Node would have to do besides.
fn deliver(now: Instant, from: &mut Side, to: &mut Side) -> Vec<UpgradeOutput> {
    let mut rest = Vec::new();
    for output in drain(&mut from.machine) {
        match output {
            UpgradeOutput::Send { frame, .. } => to.machine.handle_frame(now, to.link, frame),
            UpgradeOutput::Transmit(t) if t.destination == to.addr => {
                to.machine.handle_datagram(now, from.addr, &t.payload);
            }
            other => rest.push(other),
        }
    }
    rest
}

/// Runs both sides in 5 ms steps until the opener asks to switch to the
/// direct path; the switch is then made.
fn punch(start: Instant, a: &mut Side, b: &mut Side) -> Instant {
    let mut now = start;
    for _ in 0..400 {
        for output in deliver(now, a, b) {
            if let UpgradeOutput::SwitchDirect {
                conn,
                remote,
                rtt,
                elapsed,
            } = output
            {
                assert_eq!((conn, remote), (a.link.conn, b.addr));
                a.machine.handle_switched(now, conn, remote, rtt, elapsed);
                return now;
            }
        }
        deliver(now, b, a);
        now += Duration::from_millis(5);
        a.machine.handle_timeout(now);
        b.machine.handle_timeout(now);
    }
    panic!("the punch never succeeded");
}

#[test]
fn the_direct_path_is_left_for_the_relay_when_it_stops_answering() {
    let start = crate::test_epoch();
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    a.machine.handle_ready(start, a.link, true);
    let switched = punch(start, &mut a, &mut b);
    assert_eq!(a.machine.counters().upgrades, 1);
    let event = drain(&mut a.machine);
    assert!(
        event.iter().any(|o| matches!(
            o,
            UpgradeOutput::PathChanged {
                peer: B,
                path: PathKind::Direct,
                reason: PathChange::Punched { .. }
            }
        )),
        "{event:?}"
    );
    // B goes silent: A's liveness probes go unanswered until it falls back.
    let mut now = switched;
    let mut fell_back = Vec::new();
    while fell_back.is_empty() && now < switched + Duration::from_secs(5) {
        now += Duration::from_millis(50);
        a.machine.handle_timeout(now);
        fell_back = (drain(&mut a.machine).into_iter())
            .filter(|o| !matches!(o, UpgradeOutput::Transmit(_)))
            .collect();
    }
    assert_eq!(
        fell_back,
        [
            UpgradeOutput::FallBack {
                conn: a.link.conn,
                path: CIRCUIT
            },
            UpgradeOutput::PathChanged {
                peer: B,
                path: PathKind::Relayed,
                reason: PathChange::DirectPathDead
            },
        ]
    );
    assert_eq!(a.machine.counters().fallbacks, 1);
    // The opener punches again after `retry_after`, not before.
    let retry = now + UpgradeConfig::default().retry_after;
    a.machine.handle_timeout(retry - Duration::from_millis(1));
    assert!(drain(&mut a.machine).is_empty());
    a.machine.handle_timeout(retry);
    let offer = drain(&mut a.machine);
    assert!(
        matches!(
            offer.as_slice(),
            [UpgradeOutput::Send {
                frame: Message::PunchOffer(_),
                ..
            }]
        ),
        "{offer:?}"
    );
}

#[test]
fn frames_for_unknown_or_direct_connections_are_ignored() {
    let now = crate::test_epoch();
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    let answer = Message::from(PunchAnswer {
        request_id: 1,
        nat: NatClass::OPEN.into(),
        candidates: Vec::new(),
    });
    a.machine.handle_frame(now, a.link, answer);
    assert!(drain(&mut a.machine).is_empty());
    assert_eq!(a.machine.poll_timeout(), None);
    // An offer on a connection that is already direct gets no answer, and no
    // punch starts on it.
    let direct = PunchLink {
        path: RealPath::Direct(addr("192.0.2.2:5000")),
        ..a.link
    };
    assert!(!a.machine.handle_upgrade(now, direct));
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    b.machine.handle_upgrade(now, b.link);
    for output in drain(&mut b.machine) {
        if let UpgradeOutput::Send { frame, .. } = output {
            a.machine.handle_frame(now, direct, frame);
        }
    }
    assert!(drain(&mut a.machine).is_empty());
}

#[test]
fn an_unanswered_offer_gives_up_and_early_timeouts_are_no_ops() {
    let start = crate::test_epoch();
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    a.machine.handle_ready(start, a.link, false);
    assert!(
        drain(&mut a.machine).is_empty(),
        "the acceptor does not offer"
    );
    assert!(a.machine.handle_upgrade(start, a.link));
    assert!(
        !a.machine.handle_upgrade(start, a.link),
        "one punch at a time"
    );
    assert_eq!(drain(&mut a.machine).len(), 1);
    let given_up = start + super::OFFER_TIMEOUT;
    assert_eq!(a.machine.poll_timeout(), Some(given_up));
    a.machine
        .handle_timeout(given_up - Duration::from_millis(1));
    a.machine.handle_timeout(given_up);
    assert!(drain(&mut a.machine).is_empty());
    let retry = given_up + UpgradeConfig::default().retry_after;
    assert_eq!(a.machine.poll_timeout(), Some(retry));
    // A closed connection's upgrade is forgotten.
    a.machine.handle_closed(a.link.conn);
    assert_eq!(a.machine.poll_timeout(), None);
}
