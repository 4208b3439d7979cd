//! Unit tests of the upgrade machine, driven without a Node: two machines
//! exchange their frames and datagrams directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{PathChange, PunchLink, UpgradeConfig, UpgradeOutput, Upgrades};
use crate::contract::Child;
use crate::contract::{Datagram, SocketRequest, Transmit};
use crate::id::NodeId;
use crate::nat::punch::{Candidate, CandidateKind, NatClass};
use crate::nat::stun::{Attribute, Class, IntegrityKey, Message as StunMessage, decode};
use crate::path::{PathKind, RealPath};
use crate::pool::ConnId;
use crate::scope::AddressPolicy;
use crate::wire::{CandidateType, Message, PunchAnswer, PunchOffer, PunchSync, WireCandidate};
use bytes::Bytes;

const A: NodeId = NodeId::from_bytes([1; 32]);
const B: NodeId = NodeId::from_bytes([2; 32]);
const CIRCUIT: RealPath = RealPath::Relay {
    relay: NodeId::from_bytes([3; 32]),
    circuit: 1,
};

/// The dead window of a direct path punched with a round trip under 50 ms: the default
/// 100 ms gap between liveness probes, once per allowed miss (4) and once more.
const DEAD_WINDOW: Duration = Duration::from_millis(500);

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
    let policy = AddressPolicy {
        allow_loopback: false,
    };
    let mut machine = Upgrades::new(UpgradeConfig::default(), policy, [seed; 32]);
    let addr = addr(me);
    let candidates = vec![Candidate::new(CandidateKind::Lan, addr)];
    machine.handle_local_candidates(candidates, NatClass::OPEN);
    let link = PunchLink {
        conn: ConnId(conn),
        peer,
        path: CIRCUIT,
        rtt: Duration::from_millis(20),
        vouched: None,
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

/// A datagram from `remote` that arrived at `local`.
fn datagram(local: SocketAddr, remote: SocketAddr, payload: &[u8]) -> Datagram {
    Datagram {
        local,
        remote,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// Delivers `from`'s outputs to `to` (frames and datagrams arrive at once);
/// returns what the Node would have to do besides.
fn deliver(now: Instant, from: &mut Side, to: &mut Side) -> Vec<UpgradeOutput> {
    let mut rest = Vec::new();
    for output in drain(&mut from.machine) {
        match output {
            UpgradeOutput::Send { frame, .. } => to.machine.handle_frame(now, to.link, frame),
            UpgradeOutput::Transmit(t) if t.destination == to.addr => {
                to.machine
                    .handle_datagram(now, &datagram(to.addr, from.addr, &t.payload));
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
        let outputs = deliver(now, a, b);
        let asked = outputs.iter().find_map(|o| match o {
            UpgradeOutput::SwitchDirect { conn, remote, .. } => Some((*conn, *remote)),
            _ => None,
        });
        if switch_if_asked(now, outputs, a) {
            assert_eq!(asked, Some((a.link.conn, b.addr)));
            return now;
        }
        deliver(now, b, a);
        now += Duration::from_millis(5);
        a.machine.handle_timeout(now);
        b.machine.handle_timeout(now);
    }
    panic!("the punch never succeeded");
}

/// A (the opener) and B after A switched to the direct path, A's outputs drained; when.
fn switched_pair() -> (Side, Side, Instant) {
    let start = crate::test_epoch();
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    a.machine.handle_ready(start, a.link, true);
    let switched = punch(start, &mut a, &mut b);
    drain(&mut a.machine);
    (a, b, switched)
}

/// What a side that falls back to its circuit says, in order.
fn fell_back_to_circuit(conn: ConnId) -> [UpgradeOutput; 2] {
    [
        UpgradeOutput::FallBack {
            conn,
            path: CIRCUIT,
            grace: DEAD_WINDOW,
        },
        UpgradeOutput::PathChanged {
            peer: B,
            path: PathKind::Relayed,
            reason: PathChange::DirectPathDead,
        },
    ]
}

#[test]
fn a_relayed_packet_moves_a_direct_path_in_doubt_back_to_the_relay_only() {
    let (mut a, b, switched) = switched_pair();
    // Right after the switch the path answers: a packet the peer sent over the circuit
    // before its own switch changes nothing.
    assert!(!a.machine.handle_heard_relayed(switched, a.link.conn));
    assert!(drain(&mut a.machine).is_empty());
    // An unknown connection: nothing.
    assert!(!a.machine.handle_heard_relayed(switched, ConnId(99)));
    // What A sends on the direct path goes unanswered: once it waited two probe
    // intervals the path is in doubt, and the peer's next relayed packet means it fell
    // back: A follows at once, long before its own watch would give up.
    let mut now = switched;
    a.machine.handle_sent(now, b.addr);
    let mut followed = false;
    while !followed && now < switched + Duration::from_secs(5) {
        now += Duration::from_millis(10);
        a.machine.handle_timeout(now);
        drain(&mut a.machine);
        followed = a.machine.handle_heard_relayed(now, a.link.conn);
    }
    assert!(followed, "never followed");
    let outputs: Vec<UpgradeOutput> = (drain(&mut a.machine).into_iter())
        .filter(|o| !matches!(o, UpgradeOutput::Transmit(_)))
        .collect();
    assert_eq!(outputs, fell_back_to_circuit(a.link.conn));
    assert_eq!(a.machine.counters().fallbacks, 1);
    // Already relayed: a second relayed packet changes nothing.
    assert!(!a.machine.handle_heard_relayed(now, a.link.conn));
}

/// B goes silent from `switched` on: A's liveness probes go unanswered until it falls
/// back. When, and what A said then besides its probes.
fn silence(a: &mut Side, b: SocketAddr, switched: Instant) -> (Instant, Vec<UpgradeOutput>) {
    let mut now = switched;
    let mut fell_back = Vec::new();
    while fell_back.is_empty() && now < switched + Duration::from_secs(5) {
        now += Duration::from_millis(50);
        // A's QUIC packets go on leaving on the direct path.
        a.machine.handle_sent(now, b);
        a.machine.handle_timeout(now);
        fell_back = (drain(&mut a.machine).into_iter())
            .filter(|o| !matches!(o, UpgradeOutput::Transmit(_)))
            .collect();
    }
    (now, fell_back)
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
    let (now, fell_back) = silence(&mut a, b.addr, switched);
    assert_eq!(fell_back, fell_back_to_circuit(a.link.conn));
    assert_eq!(a.machine.counters().fallbacks, 1);
    // The opener punches again after `repunch_after`, not before.
    let retry = now + UpgradeConfig::default().repunch_after;
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

#[test]
fn an_answer_delayed_by_a_resend_does_not_push_the_openers_start_back() {
    let start = crate::test_epoch();
    let ms = Duration::from_millis;
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    a.machine.handle_ready(start, a.link, true);
    deliver(start, &mut a, &mut b);
    // The ANSWER reaches A two seconds after the OFFER left (a resend), while the
    // connection's own estimate is 20 ms: A starts half of that after sending PUNCH_SYNC,
    // about when B receives it, not a second later.
    let answered = start + ms(2000);
    deliver(answered, &mut b, &mut a);
    let opening = |outputs: &[UpgradeOutput]| {
        (outputs.iter()).any(|o| matches!(o, UpgradeOutput::Transmit(t) if t.destination == b.addr))
    };
    assert!(!opening(&drain(&mut a.machine)));
    a.machine.handle_timeout(answered + ms(10));
    assert!(
        opening(&drain(&mut a.machine)),
        "the burst leaves at the start"
    );
}

/// A PUNCH_OFFER from the peer of `link`, naming `candidates` and keyed with `key`.
fn offer(request_id: u64, candidates: &[&str], key: [u8; 32]) -> Message {
    Message::from(PunchOffer {
        request_id,
        tag: *b"flooder!",
        key,
        nat: NatClass::OPEN.into(),
        candidates: (candidates.iter())
            .map(|a| WireCandidate {
                kind: CandidateType::Reflexive,
                addr: addr(a),
            })
            .collect(),
    })
}

/// Where `outputs` send datagrams.
fn destinations(outputs: &[UpgradeOutput]) -> Vec<SocketAddr> {
    (outputs.iter())
        .filter_map(|o| match o {
            UpgradeOutput::Transmit(t) => Some(t.destination),
            _ => None,
        })
        .collect()
}

#[test]
fn an_offer_flood_with_bogus_candidates_probes_none_of_them_and_stays_within_the_caps() {
    let start = crate::test_epoch();
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    let bogus = [
        "0.0.0.0:4433",
        "224.0.0.1:4433",
        "255.255.255.255:4433",
        "127.0.0.1:6499",
        "[fd6d:6163:756c:6100::1]:1",
        "203.0.113.9:0",
    ];
    // 16 permitted addresses of one victim, after the bogus ones; the cap keeps 16 in all.
    let victim: Vec<String> = (0..20)
        .map(|p| format!("198.51.100.77:{}", 1000 + p))
        .collect();
    let mut named: Vec<&str> = bogus.to_vec();
    named.extend(victim.iter().map(String::as_str));
    let mut outputs = Vec::new();
    let mut now = start;
    // An offer and a sync every 10 ms for 10 s.
    for i in 0..1000u64 {
        b.machine
            .handle_frame(now, b.link, offer(i, &named, [9; 32]));
        let sync = PunchSync {
            request_id: i,
            start_in_ms: 0,
        };
        b.machine.handle_frame(now, b.link, Message::from(sync));
        b.machine.handle_timeout(now);
        outputs.extend(drain(&mut b.machine));
        now += Duration::from_millis(10);
    }
    let sent = destinations(&outputs);
    for addr_text in bogus {
        assert!(!sent.contains(&addr(addr_text)), "{addr_text} was probed");
    }
    let answers = (outputs.iter())
        .filter(|o| {
            matches!(
                o,
                UpgradeOutput::Send {
                    frame: Message::PunchAnswer(_),
                    ..
                }
            )
        })
        .count();
    // Bursts of 4 frames, one more per 10 s: offer+sync pairs, so 2 punches, then the
    // refill (one frame at 10 s) at most.
    assert!(answers <= 3, "{answers} offers answered");
    let counters = b.machine.counters();
    assert!(counters.frames_rate_limited >= 1990, "{counters:?}");
    // Every taken offer refused the 6 bogus and the 4 over the cap of 16.
    assert_eq!(counters.candidates_refused, answers as u64 * 10);
    let checks = UpgradeConfig::default().punch.max_checks_per_attempt as usize;
    assert!(sent.len() <= answers * checks, "{} probes", sent.len());
    assert!(sent.iter().all(|a| a.ip() == addr("198.51.100.77:1").ip()));
}

/// Runs both sides in 5 ms steps for `span`, delivering frames but letting
/// `mangle` stand between them for datagrams; returns what the Node would do.
fn run_spoofed(
    start: Instant,
    span: Duration,
    a: &mut Side,
    b: &mut Side,
    mut mangle: impl FnMut(&Transmit) -> Option<Bytes>,
) -> Vec<UpgradeOutput> {
    let mut rest = Vec::new();
    let mut now = start;
    let mut step = |now: Instant, from: &mut Side, to: &mut Side, rest: &mut Vec<_>| {
        for output in drain(&mut from.machine) {
            match output {
                UpgradeOutput::Send { frame, .. } => to.machine.handle_frame(now, to.link, frame),
                UpgradeOutput::Transmit(t) => {
                    if let Some(forged) = mangle(&t) {
                        from.machine
                            .handle_datagram(now, &datagram(from.addr, t.destination, &forged));
                    }
                }
                other => rest.push(other),
            }
        }
    };
    while now < start + span {
        step(now, a, b, &mut rest);
        step(now, b, a, &mut rest);
        now += Duration::from_millis(5);
        a.machine.handle_timeout(now);
        b.machine.handle_timeout(now);
    }
    rest
}

/// An on-path spoofer's answer to probe `t`, from its destination, with no integrity or
/// under a wrong key.
fn forged_answer(t: &Transmit, key: Option<&IntegrityKey>) -> Option<Bytes> {
    let request = decode(&t.payload).ok()?.message;
    if request.class != Class::Request {
        return None;
    }
    let mut answer = StunMessage::binding(Class::Success, request.transaction_id);
    answer
        .attributes
        .push(Attribute::XorMappedAddress(t.destination));
    match key {
        Some(key) => answer.encode_with_integrity(key).ok(),
        None => answer.encode().ok(),
    }
}

#[test]
fn spoofed_probe_answers_without_a_valid_integrity_make_no_winner() {
    let start = crate::test_epoch();
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    a.machine.handle_ready(start, a.link, true);
    // Real probes never arrive; the spoofer answers every one, unsigned and mis-signed.
    let wrong = IntegrityKey([1; 32]);
    let mut flip = false;
    let rest = run_spoofed(start, Duration::from_secs(3), &mut a, &mut b, |t| {
        flip = !flip;
        forged_answer(t, flip.then_some(&wrong))
    });
    assert!(
        !rest
            .iter()
            .any(|o| matches!(o, UpgradeOutput::SwitchDirect { .. })),
        "{rest:?}"
    );
    // Every probe of both sides was answered by the spoofer, none counts.
    assert!(a.machine.counters().unauthenticated > 5);
    assert!(b.machine.counters().unauthenticated > 5);
    assert_eq!(a.machine.counters().upgrades, 0);
}

#[test]
fn spoofed_liveness_answers_keep_no_dead_path_alive() {
    let (mut a, b, switched) = switched_pair();
    // B is gone; the spoofer answers A's liveness probes from B's address.
    let mut dead = Vec::new();
    let mut now = switched;
    while now < switched + Duration::from_secs(3) {
        now += Duration::from_millis(50);
        a.machine.handle_sent(now, b.addr);
        a.machine.handle_timeout(now);
        for output in drain(&mut a.machine) {
            match output {
                UpgradeOutput::Transmit(t) => {
                    // (The last probe may go out just as the path is declared dead.)
                    if let Some(forged) = forged_answer(&t, None) {
                        a.machine
                            .handle_datagram(now, &datagram(a.addr, t.destination, &forged));
                    }
                }
                other => dead.push(other),
            }
        }
    }
    assert!(
        dead.iter()
            .any(|o| matches!(o, UpgradeOutput::FallBack { .. })),
        "{dead:?}"
    );
    assert_eq!(a.machine.counters().fallbacks, 1);
    assert!(a.machine.counters().unauthenticated > 0);
}

/// Makes the switch `outputs` ask `side` for; true when there was one.
fn switch_if_asked(now: Instant, outputs: Vec<UpgradeOutput>, side: &mut Side) -> bool {
    let mut switched = false;
    for output in outputs {
        if let UpgradeOutput::SwitchDirect {
            conn,
            remote,
            rtt,
            elapsed,
            local: None,
        } = output
        {
            side.machine
                .handle_switched(now, conn, remote, rtt, elapsed);
            switched = true;
        }
    }
    switched
}

/// Runs both sides in 5 ms steps until both switched to the direct path.
fn punch_both(start: Instant, a: &mut Side, b: &mut Side) -> Instant {
    let mut now = start;
    let (mut a_direct, mut b_direct) = (false, false);
    for _ in 0..400 {
        a_direct |= switch_if_asked(now, deliver(now, a, b), a);
        b_direct |= switch_if_asked(now, deliver(now, b, a), b);
        if a_direct && b_direct {
            return now;
        }
        now += Duration::from_millis(5);
        a.machine.handle_timeout(now);
        b.machine.handle_timeout(now);
    }
    panic!("the punch never succeeded on both sides");
}

#[test]
fn a_peer_whose_probes_come_from_a_new_address_while_ours_go_unanswered_has_moved() {
    let start = crate::test_epoch();
    let mut a = side(1, "192.0.2.1:4000", 10, B);
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    a.machine.handle_ready(start, a.link, true);
    let mut now = punch_both(start, &mut a, &mut b);
    drain(&mut a.machine);
    drain(&mut b.machine);
    // Healthy: a probe of B that comes from elsewhere (a late one of the
    // punch, say) moves nothing.
    let moved_to = addr("198.51.100.9:7000");
    let mut outputs = Vec::new();
    let mut probes_to = Vec::new();
    for round in 0..40 {
        now += Duration::from_millis(25);
        // Both send QUIC packets all along (A to where it thinks B is).
        let b_at = (a.machine.sessions.get(&a.link.conn))
            .and_then(|s| match &s.stage {
                super::session::Stage::Direct(_, live) => Some(live.remote()),
                _ => None,
            })
            .unwrap_or(b.addr);
        a.machine.handle_sent(now, b_at);
        b.machine.handle_sent(now, a.addr);
        a.machine.handle_timeout(now);
        b.machine.handle_timeout(now);
        // B's NAT reboots after 200 ms: A's probes to B's old address are
        // lost from then on, B's now come from `moved_to`.
        let rebooted = round >= 8;
        for output in drain(&mut b.machine) {
            if let UpgradeOutput::Transmit(t) = output {
                let from = if rebooted || round == 2 {
                    moved_to
                } else {
                    b.addr
                };
                a.machine
                    .handle_datagram(now, &datagram(a.addr, from, &t.payload));
            }
        }
        for output in drain(&mut a.machine) {
            match output {
                UpgradeOutput::Transmit(t) => {
                    probes_to.push((round, t.destination));
                    // B's NAT lets through what goes to B's address of the moment.
                    let current = if rebooted { moved_to } else { b.addr };
                    if t.destination == current {
                        b.machine
                            .handle_datagram(now, &datagram(b.addr, a.addr, &t.payload));
                    }
                }
                // What the Node does: move the path, then the watch.
                UpgradeOutput::PeerMoved { conn, remote } => {
                    a.machine.handle_rebound(now, conn, remote);
                    outputs.push((round, UpgradeOutput::PeerMoved { conn, remote }));
                }
                other => outputs.push((round, other)),
            }
        }
    }
    let moves: Vec<_> = (outputs.iter())
        .filter(|(_, o)| matches!(o, UpgradeOutput::PeerMoved { .. }))
        .collect();
    assert_eq!(moves.len(), 1, "{outputs:?}");
    let (round, moved) = moves[0];
    assert!(*round > 8, "only once ours went unanswered");
    assert_eq!(
        *moved,
        UpgradeOutput::PeerMoved {
            conn: a.link.conn,
            remote: moved_to
        }
    );
    assert!(
        (probes_to.iter()).all(|&(r, to)| r <= *round || to == moved_to),
        "A's probes follow B: {probes_to:?}"
    );
    assert_eq!(a.machine.counters().fallbacks, 0, "{outputs:?}");
}

/// A behind a port-preserving NAT (its reflexive candidate kept its LAN port), direct with
/// B; then B falls silent and A falls back. When, and what A said besides its probes.
fn preserving_pair_fallen_back() -> (Side, Side, Instant, Vec<UpgradeOutput>) {
    let start = crate::test_epoch();
    let mut a = side(1, "10.0.0.1:4000", 10, B);
    let candidates = vec![
        Candidate::new(CandidateKind::Lan, addr("10.0.0.1:4000")),
        Candidate::new(CandidateKind::Reflexive, addr("192.0.2.1:4000")),
        Candidate::new(CandidateKind::Lan, addr("[2001:db8::1]:4000")),
    ];
    a.machine
        .handle_local_candidates(candidates, NatClass::UNKNOWN);
    let mut b = side(2, "192.0.2.2:5000", 20, A);
    a.machine.handle_ready(start, a.link, true);
    let switched = punch(start, &mut a, &mut b);
    drain(&mut a.machine);
    let (now, fell_back) = silence(&mut a, b.addr, switched);
    (a, b, now, fell_back)
}

fn sorted(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.sort();
    addrs
}

/// The candidates of the PUNCH_OFFER among `outputs`.
fn offered(outputs: &[UpgradeOutput]) -> Vec<SocketAddr> {
    let offer = outputs.iter().find_map(|o| match o {
        UpgradeOutput::Send {
            frame: Message::PunchOffer(offer),
            ..
        } => Some(offer),
        _ => None,
    });
    let candidates = offer.expect("an offer").candidates.iter();
    candidates
        .filter_map(WireCandidate::candidate)
        .map(|c| c.addr)
        .collect()
}

#[test]
fn the_punch_after_a_dead_direct_path_goes_from_a_fresh_port() {
    let (mut a, mut b, fell, said) = preserving_pair_fallen_back();
    let conn = a.link.conn;
    let mut expected = fell_back_to_circuit(conn).to_vec();
    expected.insert(0, UpgradeOutput::Sockets(SocketRequest::Open { count: 1 }));
    assert_eq!(said, expected);
    // The driver opened more than asked: the surplus goes back.
    let (fresh, surplus) = (addr("10.0.0.1:40000"), addr("10.0.0.1:40001"));
    a.machine.handle_sockets_opened(fell, vec![fresh, surplus]);
    assert_eq!(
        drain(&mut a.machine),
        [UpgradeOutput::Sockets(SocketRequest::Close(vec![surplus]))]
    );
    // The re-punch offers the fresh port behind our NAT, and our IPv6 address as it was.
    let retry = fell + UpgradeConfig::default().repunch_after;
    a.machine.handle_timeout(retry);
    let outputs = drain(&mut a.machine);
    let want = ["192.0.2.1:40000", "10.0.0.1:40000", "[2001:db8::1]:4000"];
    assert_eq!(sorted(offered(&outputs)), sorted(want.map(addr).to_vec()));
    for output in outputs {
        if let UpgradeOutput::Send { frame, .. } = output {
            b.machine.handle_frame(retry, b.link, frame);
        }
    }
    // Every probe toward B leaves from the fresh socket.
    let mut sources = Vec::new();
    let mut now = retry;
    while now < retry + Duration::from_secs(1) {
        deliver(now, &mut b, &mut a);
        for output in drain(&mut a.machine) {
            match output {
                UpgradeOutput::Send { frame, .. } => b.machine.handle_frame(now, b.link, frame),
                UpgradeOutput::Transmit(t) if t.destination.is_ipv4() => sources.push(t.source),
                _ => {}
            }
        }
        now += Duration::from_millis(5);
        a.machine.handle_timeout(now);
        b.machine.handle_timeout(now);
    }
    assert!(!sources.is_empty());
    assert!(sources.iter().all(|s| *s == Some(fresh)), "{sources:?}");
    // The connection goes: so does the fresh socket.
    a.machine.handle_closed(conn);
    assert_eq!(
        drain(&mut a.machine),
        [UpgradeOutput::Sockets(SocketRequest::Close(vec![fresh]))]
    );
}

#[test]
fn without_a_fresh_socket_the_re_punch_offers_the_main_one() {
    let (mut a, _, fell, said) = preserving_pair_fallen_back();
    assert!(said.contains(&UpgradeOutput::Sockets(SocketRequest::Open { count: 1 })));
    // The driver opened none (it cannot, or ran out).
    a.machine.handle_sockets_opened(fell, Vec::new());
    assert!(drain(&mut a.machine).is_empty());
    let retry = fell + UpgradeConfig::default().repunch_after;
    a.machine.handle_timeout(retry);
    let want = ["192.0.2.1:4000", "10.0.0.1:4000", "[2001:db8::1]:4000"];
    let candidates = offered(&drain(&mut a.machine));
    assert_eq!(sorted(candidates), sorted(want.map(addr).to_vec()));
}

#[test]
fn a_socket_opened_after_the_re_punch_was_offered_is_closed_again() {
    let (mut a, _, fell, _) = preserving_pair_fallen_back();
    let retry = fell + UpgradeConfig::default().repunch_after;
    a.machine.handle_timeout(retry);
    assert_eq!(offered(&drain(&mut a.machine)).len(), 3);
    let late = addr("10.0.0.1:40000");
    a.machine.handle_sockets_opened(retry, vec![late]);
    assert_eq!(
        drain(&mut a.machine),
        [UpgradeOutput::Sockets(SocketRequest::Close(vec![late]))]
    );
}
