//! Unit tests of the reachability machine, driven without a Node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{PeerConn, ProbeRefusal, Reach, ReachConfig, ReachOutput, ReachSetup, ReachView};
use crate::contract::{Child, Datagram};
use crate::dht::{Mode, RoutingTable};
use crate::id::{NodeId, Realm};
use crate::nat::punch::NatClass;
use crate::nat::stun::{self, Class, TransactionId};
use crate::peer_record::Reachability;
use crate::pool::ConnId;
use crate::secret::Secret;
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
    Reach::new(&config, setup, &Secret::deterministic(7))
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
        silent_relays: &[],
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

/// A plain peer: no DHT server, behind a NAT.
fn plain(conn: u64, ip: &str) -> PeerConn {
    PeerConn {
        server: false,
        untranslated: false,
        ..helper(conn, ip)
    }
}

/// Where the machine's transmits go.
fn destinations(reach: &mut Reach) -> Vec<SocketAddr> {
    (drain(reach).into_iter())
        .filter_map(|o| match o {
            ReachOutput::Transmit(t) => Some(t.destination),
            _ => None,
        })
        .collect()
}

fn probe(addrs: &[&str]) -> DialBackProbe {
    DialBackProbe {
        nonce: [3; 12],
        addrs: addrs.iter().map(|a| addr(a)).collect(),
    }
}

#[test]
fn probes_beyond_the_per_target_limit_are_not_sent() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let target = addr("203.0.113.5:5000");
    let x = helper(1, "192.0.2.2:4433");
    // The default allows bursts of 8 per target IP, each probe sent twice.
    let answers: Vec<_> = (0..9)
        .map(|_| reach.handle_probe_request(now, &x, probe(&["203.0.113.5:5000"])))
        .collect();
    assert_eq!(answers[..8], [Ok(1); 8]);
    assert_eq!(answers[8], Err(ProbeRefusal::NoTarget));
    let sent = destinations(&mut reach);
    assert_eq!(sent, vec![target; 8 * super::PROBE_COPIES]);
    let stats = reach.stats();
    assert_eq!((stats.probes_sent, stats.probes_rate_limited), (16, 1));
}

#[test]
fn a_plain_peer_makes_us_probe_only_its_own_ip() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let peer = plain(1, "203.0.113.9:6000");
    let victims = [
        "192.0.2.50:53",
        "192.0.2.51:53",
        "198.51.100.9:80",
        "8.8.8.8:53",
    ];
    assert_eq!(
        reach.handle_probe_request(now, &peer, probe(&victims)),
        Err(ProbeRefusal::NoTarget)
    );
    assert!(destinations(&mut reach).is_empty());
    // Its own observed IP, any port: the probe can only reach itself.
    let own = probe(&["203.0.113.9:7000", "192.0.2.50:53"]);
    assert_eq!(reach.handle_probe_request(now, &peer, own), Ok(1));
    assert_eq!(
        destinations(&mut reach),
        vec![addr("203.0.113.9:7000"); super::PROBE_COPIES]
    );
    let stats = reach.stats();
    assert_eq!(
        (stats.probe_requests_refused, stats.probe_targets_refused),
        (1, 5)
    );
}

#[test]
fn a_dial_back_server_is_held_to_the_address_policy_and_its_rate() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let x = helper(1, "192.0.2.2:4433");
    let bogus = [
        "0.0.0.0:4433",
        "224.0.0.1:9",
        "127.0.0.1:6499",
        "[fd6d:6163:756c:6100::1]:1",
    ];
    assert_eq!(
        reach.handle_probe_request(now, &x, probe(&bogus)),
        Err(ProbeRefusal::NoTarget)
    );
    assert!(destinations(&mut reach).is_empty());
    assert_eq!(reach.stats().probe_targets_refused, 4);
    // 10 requests a second per sending IP, bursts of 64 (one spent above).
    let answers: Vec<_> = (0..64)
        .map(|i| {
            let target = format!("203.0.{}.{}:5000", 1 + i / 8, 10 + i % 8);
            reach.handle_probe_request(now, &x, probe(&[&target]))
        })
        .collect();
    assert_eq!(answers[..63], [Ok(1); 63]);
    assert_eq!(answers[63], Err(ProbeRefusal::RateLimited));
    assert_eq!(destinations(&mut reach).len(), 63 * super::PROBE_COPIES);
    assert_eq!(reach.stats().probe_requests_refused, 2);
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
    // One binding, then the hop count: the same request with TTL 1 to 8.
    let sent: Vec<(SocketAddr, Option<u8>)> = (outputs.iter())
        .map(|o| match o {
            ReachOutput::Transmit(t) => (t.destination, t.ttl),
            other => panic!("only transmits, got {other:?}"),
        })
        .collect();
    let mut expected = vec![(server, None)];
    expected.extend((1..=8).map(|ttl| (server, Some(ttl))));
    assert_eq!(sent, expected);
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

/// The datagrams among `outputs`.
fn transmits(outputs: &[ReachOutput]) -> Vec<crate::contract::Transmit> {
    (outputs.iter())
        .filter_map(|o| match o {
            ReachOutput::Transmit(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn datagram(from: SocketAddr, to: SocketAddr, payload: Bytes) -> Datagram {
    Datagram {
        local: to,
        remote: from,
        payload,
    }
}

#[test]
fn a_claim_check_is_answered_only_under_the_connections_key_and_verifies_only_from_the_claim() {
    let now = crate::test_epoch();
    let (checker_addr, claim) = (addr("198.51.100.1:4433"), addr("203.0.113.9:4434"));
    let claimant_peer = NodeId::from_bytes([2; 32]);
    let mut checker = machine(ReachConfig::default());
    let mut claimant = machine(ReachConfig::default());
    let material = [5u8; super::CLAIM_MATERIAL_LEN];
    checker.handle_peer_ready(ConnId(1), claimant_peer, &material);
    claimant.handle_peer_ready(ConnId(7), LOCAL, &material);
    let source = addr("192.168.7.2:4434");
    checker.check_claims(now, ConnId(1), &[claim, source], source);
    let probes = transmits(&drain(&mut checker));
    assert_eq!(probes.len(), 1, "only the claim that is not the source");
    let probe = &probes[0];
    assert_eq!(probe.destination, claim);
    // Asked again at once: nothing more goes out.
    checker.check_claims(now, ConnId(1), &[claim], source);
    assert!(transmits(&drain(&mut checker)).is_empty());

    // A node with another key (a victim running macula, or anyone) does not
    // answer under ours; its plain STUN answer verifies nothing.
    let mut stranger = machine(ReachConfig::default());
    stranger.handle_peer_ready(ConnId(3), LOCAL, &[6u8; super::CLAIM_MATERIAL_LEN]);
    assert!(stranger.handle_stun(now, datagram(checker_addr, claim, probe.payload.clone())));
    let plain = transmits(&drain(&mut stranger));
    assert_eq!(plain.len(), 1, "the plain responder answers");
    assert!(checker.handle_stun(now, datagram(claim, checker_addr, plain[0].payload.clone())));
    assert!(
        drain(&mut checker)
            .iter()
            .all(|o| !matches!(o, ReachOutput::ClaimVerified { .. }))
    );
    assert_eq!(checker.stats().claim_checks.ignored, 1);

    // A forged request (our tag, another key) is not answered.
    let mut forged = stun::decode(&probe.payload).expect("decodes").message;
    forged.transaction_id.0[11] ^= 1;
    let forged = forged
        .encode_with_integrity(&stun::IntegrityKey([6; 32]))
        .expect("encodes");
    claimant.handle_stun(now, datagram(checker_addr, claim, forged));
    assert!(transmits(&drain(&mut claimant)).is_empty());
    assert_eq!(claimant.stats().claim_checks.ignored, 1);

    // The claimant answers, no larger than the request; from elsewhere the
    // answer proves nothing, from the claim it verifies.
    claimant.handle_stun(now, datagram(checker_addr, claim, probe.payload.clone()));
    let answers = transmits(&drain(&mut claimant));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].destination, checker_addr);
    assert!(answers[0].payload.len() <= probe.payload.len());
    let elsewhere = addr("203.0.113.10:4434");
    checker.handle_stun(
        now,
        datagram(elsewhere, checker_addr, answers[0].payload.clone()),
    );
    assert_eq!(checker.proven_addrs(&claimant_peer), &[] as &[SocketAddr]);
    checker.handle_stun(
        now,
        datagram(claim, checker_addr, answers[0].payload.clone()),
    );
    let verified = drain(&mut checker);
    assert!(verified.contains(&ReachOutput::ClaimVerified {
        conn: ConnId(1),
        peer: claimant_peer,
    }));
    assert_eq!(checker.proven_addrs(&claimant_peer), &[claim]);
    let stats = checker.stats().claim_checks;
    assert_eq!((stats.probed, stats.verified, stats.ignored), (1, 1, 2));
}

#[test]
fn a_claim_check_goes_nowhere_the_policy_refuses_and_fails_when_unanswered() {
    let now = crate::test_epoch();
    let peer = NodeId::from_bytes([2; 32]);
    let mut checker = machine(ReachConfig::default());
    checker.handle_peer_ready(ConnId(1), peer, &[5u8; super::CLAIM_MATERIAL_LEN]);
    let refused = [
        addr("127.0.0.1:1"),
        addr("0.0.0.0:4433"),
        addr("224.0.0.1:9"),
    ];
    let source = addr("198.51.100.2:4433");
    checker.check_claims(now, ConnId(1), &refused, source);
    assert!(transmits(&drain(&mut checker)).is_empty());
    assert_eq!(checker.stats().claim_checks.refused, 3);
    checker.check_claims(now, ConnId(1), &[addr("192.0.2.1:4433")], source);
    assert_eq!(transmits(&drain(&mut checker)).len(), 1);
    assert_eq!(checker.poll_timeout(), Some(now));
    let later = now + Duration::from_secs(6);
    settle(&mut checker, later);
    assert_eq!(checker.stats().claim_checks.failed, 1);
    // Within the interval the address is not probed again; after it, once.
    checker.check_claims(later, ConnId(1), &[addr("192.0.2.1:4433")], source);
    assert!(transmits(&drain(&mut checker)).is_empty());
    let next = now + Duration::from_secs(601);
    settle(&mut checker, next);
    checker.check_claims(next, ConnId(1), &[addr("192.0.2.1:4433")], source);
    assert_eq!(transmits(&drain(&mut checker)).len(), 1);
}

#[test]
fn only_an_unsolicited_inbound_connection_between_global_addresses_counts_as_reachability() {
    let now = crate::test_epoch();
    let mut reach = machine(ReachConfig::default());
    let (local, stranger) = (addr("198.51.100.1:4433"), addr("203.0.113.5:50000"));
    assert!(reach.is_unsolicited(now, local, stranger));
    // Behind a NAT (our address is private), or from a private address.
    assert!(!reach.is_unsolicited(now, addr("192.168.1.2:4433"), stranger));
    assert!(!reach.is_unsolicited(now, local, addr("10.0.0.5:4433")));
    assert!(!reach.is_unsolicited(now, addr("127.0.0.1:4433"), addr("127.0.0.1:5000")));
    // From an IP we sent to: a mapping of ours may have let it in.
    reach.handle_sent(now, addr("203.0.113.5:3478"));
    assert!(!reach.is_unsolicited(now, local, stranger));
    assert_eq!(reach.reachability(), Reachability::Undetermined);
    reach.handle_unsolicited_inbound(now);
    assert_eq!(reach.reachability(), Reachability::Public);
    // The socket moved: void.
    reach.handle_address_changed(now, addr("198.51.100.7:4433"));
    assert_eq!(reach.reachability(), Reachability::Undetermined);
}

#[test]
fn the_first_run_waits_for_the_bootstrap_or_for_someone_to_ask() {
    let now = crate::test_epoch();
    let runs = |reach: &Reach| reach.stats().discovery.runs;
    // A bootstrapping node: contacts arriving during the bootstrap start
    // nothing; its end does.
    let mut reach = machine(ReachConfig::default());
    reach.handle_bootstrap_started(now);
    reach.handle_contacts(now, 3);
    settle(&mut reach, now);
    assert_eq!(runs(&reach), 0);
    reach.handle_bootstrapped(now);
    settle(&mut reach, now);
    assert_eq!(runs(&reach), 1);
    // Later contacts and bootstraps do not start another.
    reach.handle_contacts(now, 5);
    reach.handle_bootstrapped(now);
    settle(&mut reach, now);
    assert_eq!(runs(&reach), 1);

    // A seed (never bootstraps): an empty table starts nothing, the first
    // peer that joined does.
    let mut seed = machine(ReachConfig::default());
    seed.handle_contacts(now, 0);
    settle(&mut seed, now);
    assert_eq!(runs(&seed), 0);
    seed.handle_contacts(now, 1);
    settle(&mut seed, now);
    assert_eq!(runs(&seed), 1);

    // Without automatic discovery, only an explicit request runs it.
    let manual = ReachConfig {
        auto_discover: false,
        ..ReachConfig::default()
    };
    let mut manual = machine(manual);
    manual.handle_contacts(now, 1);
    manual.handle_bootstrapped(now);
    settle(&mut manual, now);
    assert_eq!(runs(&manual), 0);
}

/// A machine listening on `listen` that asks the STUN servers at `servers`,
/// each of which sees it as `answer` says (the local address the answer
/// arrives on, the mapped address it reports), and gets no dial-back helper:
/// its punch candidates after the report.
fn discovered_candidates(
    listen: Vec<SocketAddr>,
    servers: Vec<SocketAddr>,
    answer: impl Fn(SocketAddr) -> (SocketAddr, SocketAddr),
) -> Vec<crate::nat::punch::Candidate> {
    let now = crate::test_epoch();
    let setup = ReachSetup {
        node: LOCAL,
        realm: Realm::new("test.example").expect("a valid realm"),
        listen_addrs: listen,
        limits: Limits::default(),
        mode: Mode::Client,
    };
    let config = ReachConfig {
        stun_servers: servers,
        ..ReachConfig::default()
    };
    let mut reach = Reach::new(&config, setup, &Secret::deterministic(7));
    reach.handle_discover(now);
    for t in transmits(&settle(&mut reach, now)) {
        let id = (stun::decode(&t.payload).expect("a request").message).transaction_id;
        let (local, mapped) = answer(t.destination);
        let mut response = stun::Message::binding(Class::Success, id);
        (response.attributes).push(stun::Attribute::XorMappedAddress(mapped));
        let payload = response.encode().expect("encodes");
        assert!(reach.handle_stun(now, datagram(t.destination, local, payload)));
    }
    // No helper for the dial-backs: the report follows at once.
    for output in settle(&mut reach, now) {
        if let ReachOutput::AskDialBack(ask) = output {
            reach.handle_no_helper(now, ask.request_id);
        }
    }
    (settle(&mut reach, now).into_iter())
        .find_map(|o| match o {
            ReachOutput::PunchCandidates { candidates, .. } => Some(candidates),
            _ => None,
        })
        .expect("candidates after the report")
}

/// The STUN servers of the dual-stack tests, an IPv4 one and an IPv6 one.
const V4_SERVER: &str = "192.0.2.100:3478";
const V6_SERVER: &str = "[2001:db8:ff::10]:3478";
/// The dual-stack node's addresses: on its LAN (behind a NAT that maps it to
/// `NATTED`), and its global IPv6 one.
const LAN: &str = "10.0.0.2:4433";
const NATTED: &str = "198.51.100.7:4433";
const V6: &str = "[2001:db8:a::11]:4433";

/// How each reflector sees the dual-stack node: through a NAT over IPv4, as
/// it is over IPv6.
fn dual_stack_answer(server: SocketAddr) -> (SocketAddr, SocketAddr) {
    if server == addr(V4_SERVER) {
        (addr(LAN), addr(NATTED))
    } else {
        (addr(V6), addr(V6))
    }
}

#[test]
fn a_global_ipv6_listen_address_is_a_candidate_and_a_link_local_one_is_not() {
    let link_local = addr("[fe80::11]:4433");
    let candidates = discovered_candidates(
        vec![addr(LAN), addr(V6), link_local],
        vec![addr(V4_SERVER), addr(V6_SERVER)],
        dual_stack_answer,
    );
    let addrs: Vec<SocketAddr> = candidates.iter().map(|c| c.addr).collect();
    for wanted in [LAN, V6, NATTED] {
        assert!(addrs.contains(&addr(wanted)), "{wanted}: {addrs:?}");
    }
    assert!(!addrs.contains(&link_local), "{addrs:?}");
    // The peer probes our IPv6 address first.
    assert_eq!(
        crate::nat::punch::ordered(&candidates, 16)[0].addr,
        addr(V6)
    );
}

#[test]
fn a_dual_stack_socket_without_listen_addresses_offers_the_addresses_datagrams_arrive_on() {
    let candidates = discovered_candidates(
        vec![addr("[::]:4433")],
        vec![addr(V4_SERVER), addr(V6_SERVER)],
        dual_stack_answer,
    );
    let lans: Vec<SocketAddr> = (candidates.iter())
        .filter(|c| c.kind == crate::nat::punch::CandidateKind::Lan)
        .map(|c| c.addr)
        .collect();
    assert_eq!(
        lans,
        [addr(LAN), addr(V6)],
        "one address of each family, none unspecified"
    );
}

/// The puncher's candidates and NAT class among `outputs`, the last ones given.
fn punch_candidates(outputs: &[ReachOutput]) -> Option<(Vec<SocketAddr>, NatClass)> {
    outputs.iter().rev().find_map(|o| match o {
        ReachOutput::PunchCandidates {
            candidates, nat, ..
        } => Some((candidates.iter().map(|c| c.addr).collect(), *nat)),
        _ => None,
    })
}

#[test]
fn a_port_mapping_is_the_first_candidate_and_record_address_with_an_open_class_until_lost() {
    let now = crate::test_epoch();
    let mapped = addr("198.51.101.18:4433");
    let mut reach = machine(ReachConfig::default());
    // Before any report: the mapping and the LAN address, open.
    reach.handle_mapped(now, Some(mapped));
    let (candidates, nat) = punch_candidates(&settle(&mut reach, now)).expect("candidates");
    assert_eq!(candidates, [mapped, addr("198.51.100.1:4433")]);
    assert_eq!(nat, NatClass::OPEN);
    // A report (no reflector, no helper: undetermined) keeps it first; the record leads with it.
    reach.handle_discover(now);
    for output in settle(&mut reach, now) {
        if let ReachOutput::AskDialBack(ask) = output {
            reach.handle_no_helper(now, ask.request_id);
        }
    }
    let outputs = settle(&mut reach, now);
    let (candidates, nat) = punch_candidates(&outputs).expect("candidates after the report");
    assert_eq!(candidates[0], mapped);
    assert_eq!(nat, NatClass::OPEN);
    let record = outputs.iter().find_map(|o| match o {
        ReachOutput::StoreRecord { record, .. } => Some(record.clone()),
        _ => None,
    });
    assert_eq!(record.expect("a record").observed.first(), Some(&mapped));
    // Lost: out of the candidates, and the class is the report's again.
    reach.handle_mapped(now, None);
    let (candidates, nat) = punch_candidates(&settle(&mut reach, now)).expect("candidates");
    assert!(!candidates.contains(&mapped));
    assert_ne!(nat, NatClass::OPEN);
    assert_eq!(reach.mapped(), None);
}
