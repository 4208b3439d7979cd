use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const GATEWAY: &str = "10.3.0.1";
const LOCAL: &str = "10.3.0.11:45300";
const EXTERNAL: &str = "198.51.101.18:45300";

fn config() -> PortMapConfig {
    PortMapConfig::new(GATEWAY.parse().unwrap())
}

fn mapper(t0: Instant) -> PortMapper {
    PortMapper::new(config(), LOCAL.parse().unwrap(), [7; 32], t0)
}

fn server() -> SocketAddr {
    SocketAddr::new(GATEWAY.parse().unwrap(), SERVER_PORT)
}

/// Drives a timeout and returns the transmits' payloads and the events.
fn tick(m: &mut PortMapper, now: Instant) -> (Vec<Vec<u8>>, Vec<MapEvent>) {
    m.handle_input(now, Input::Timeout);
    drain(m)
}

fn drain(m: &mut PortMapper) -> (Vec<Vec<u8>>, Vec<MapEvent>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(out) = m.poll_output() {
        match out {
            Output::Transmit(t) => {
                assert_eq!(t.destination, server());
                sent.push(t.payload.to_vec());
            }
            Output::Event(e) => events.push(e),
            Output::Sockets(r) => panic!("port mapping asked for sockets: {r:?}"),
        }
    }
    (sent, events)
}

fn deliver(m: &mut PortMapper, now: Instant, from: SocketAddr, payload: Vec<u8>) -> Vec<MapEvent> {
    let datagram = Datagram {
        local: LOCAL.parse().unwrap(),
        remote: from,
        payload: Bytes::from(payload),
    };
    m.handle_input(now, Input::Datagram(datagram));
    drain(m).1
}

/// A PCP MAP success answering `request`, as RFC 6887 §7.2 and §11.1 lay it out.
fn pcp_answer(request: &[u8], epoch: u32, lifetime: u32, external: SocketAddr) -> Vec<u8> {
    let mut r = vec![2, 0x81, 0, 0];
    r.extend_from_slice(&lifetime.to_be_bytes());
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&[0; 12]);
    r.extend_from_slice(&request[24..42]); // nonce, protocol, reserved, internal port
    r.extend_from_slice(&external.port().to_be_bytes());
    let IpAddr::V4(ip) = external.ip() else {
        unreachable!()
    };
    r.extend_from_slice(&ip.to_ipv6_mapped().octets());
    r
}

fn natpmp_external(epoch: u32, ip: [u8; 4]) -> Vec<u8> {
    let mut r = vec![0, 128, 0, 0];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&ip);
    r
}

fn natpmp_map(epoch: u32, internal: u16, external: u16, lifetime: u32) -> Vec<u8> {
    let mut r = vec![0, 129, 0, 0];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&internal.to_be_bytes());
    r.extend_from_slice(&external.to_be_bytes());
    r.extend_from_slice(&lifetime.to_be_bytes());
    r
}

/// A mapper that holds a PCP mapping granted at `t0` for `lifetime` seconds,
/// server epoch 100; returns the request it sent.
fn mapped(t0: Instant, lifetime: u32) -> (PortMapper, Vec<u8>) {
    let mut m = mapper(t0);
    let (sent, _) = tick(&mut m, t0);
    let request = sent[0].clone();
    let events = deliver(
        &mut m,
        t0,
        server(),
        pcp_answer(&request, 100, lifetime, EXTERNAL.parse().unwrap()),
    );
    assert!(
        matches!(events[..], [MapEvent::Mapped { .. }]),
        "{events:?}"
    );
    (m, request)
}

#[test]
fn the_pcp_map_request_has_the_rfc_layout() {
    let t0 = crate::test_epoch();
    let mut m = mapper(t0);
    let (sent, events) = tick(&mut m, t0);
    assert!(events.is_empty());
    let r = &sent[..];
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r.len(), 60);
    assert_eq!(
        &r[..4],
        &[2, 1, 0, 0],
        "version 2, R=0 opcode MAP, reserved"
    );
    assert_eq!(&r[4..8], &7200u32.to_be_bytes(), "requested lifetime");
    assert_eq!(
        &r[8..24],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 3, 0, 11],
        "client IP, IPv4-mapped"
    );
    assert_eq!(&r[36..40], &[17, 0, 0, 0], "protocol UDP, reserved");
    assert_eq!(&r[40..42], &45300u16.to_be_bytes(), "internal port");
    assert_eq!(
        &r[42..44],
        &45300u16.to_be_bytes(),
        "suggested external port"
    );
    assert_eq!(
        &r[44..60],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0],
        "no IP suggested"
    );
    assert_ne!(&r[24..36], &[0; 12], "a nonce");
}

#[test]
fn retransmissions_double_up_to_the_cap_then_nat_pmp_then_a_typed_failure() {
    let t0 = crate::test_epoch();
    let mut m = mapper(t0);
    let mut now = t0;
    let mut gaps = Vec::new();
    let mut kinds = Vec::new();
    let mut events = Vec::new();
    let mut last = t0;
    for _ in 0..40 {
        let (sent, ev) = tick(&mut m, now);
        if !sent.is_empty() {
            gaps.push(now - last);
            last = now;
            kinds.push(sent.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>());
        }
        events.extend(ev);
        if !events.is_empty() {
            break;
        }
        now = m.poll_timeout().unwrap();
    }
    let ms = |n| Duration::from_millis(n);
    let schedule = [ms(0), ms(250), ms(500), ms(1000), ms(2000), ms(4000)];
    assert_eq!(gaps[..6], schedule, "PCP");
    assert_eq!(gaps[6], ms(4000), "NAT-PMP follows the last PCP wait");
    assert_eq!(gaps[7..12], schedule[1..], "NAT-PMP");
    assert!(kinds[..6].iter().all(|k| k == &[(2, 1)]));
    assert!(
        kinds[6..].iter().all(|k| k == &[(0, 0), (0, 1)]),
        "{kinds:?}"
    );
    assert_eq!(events, [MapEvent::Failed(PortMapError::Timeout)]);
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(300)));
    assert_eq!(m.stats().requests_sent, 6 + 12);
}

#[test]
fn a_pcp_grant_is_renewed_at_half_its_lifetime_with_the_same_nonce() {
    let t0 = crate::test_epoch();
    let (mut m, request) = mapped(t0, 600);
    assert_eq!(m.external(), Some(EXTERNAL.parse().unwrap()));
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    let t1 = t0 + Duration::from_secs(300);
    let (sent, _) = tick(&mut m, t1);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][24..36], request[24..36], "same nonce");
    assert_eq!(
        sent[0][42..44],
        45300u16.to_be_bytes(),
        "suggests the held port"
    );
    assert_eq!(sent[0][56..60], [198, 51, 101, 18], "and the held address");
    let events = deliver(
        &mut m,
        t1,
        server(),
        pcp_answer(&sent[0], 400, 600, EXTERNAL.parse().unwrap()),
    );
    assert!(
        events.is_empty(),
        "a renewal of the same address tells nothing: {events:?}"
    );
    assert_eq!(m.stats().renewed, 1);
    assert_eq!(m.poll_timeout(), Some(t1 + Duration::from_secs(300)));
}

#[test]
fn a_renewal_that_is_never_answered_loses_the_mapping_at_expiry() {
    let t0 = crate::test_epoch();
    let (mut m, _) = mapped(t0, 60);
    let mut now = t0;
    let mut events = Vec::new();
    while events.is_empty() {
        now = m.poll_timeout().unwrap();
        events = tick(&mut m, now).1;
    }
    assert_eq!(now, t0 + Duration::from_secs(60));
    assert_eq!(events, [MapEvent::Lost]);
    assert_eq!(m.external(), None);
}

#[test]
fn answers_with_another_nonce_or_port_or_from_elsewhere_are_dropped_and_counted() {
    let t0 = crate::test_epoch();
    let mut m = mapper(t0);
    let (sent, _) = tick(&mut m, t0);
    let good = pcp_answer(&sent[0], 1, 600, EXTERNAL.parse().unwrap());
    let mut other_nonce = good.clone();
    other_nonce[30] ^= 1;
    assert!(deliver(&mut m, t0, server(), other_nonce).is_empty());
    let mut other_port = good.clone();
    other_port[40..42].copy_from_slice(&1234u16.to_be_bytes());
    assert!(deliver(&mut m, t0, server(), other_port).is_empty());
    let elsewhere = ["10.3.0.1:5350", "10.3.0.2:5351", "203.0.113.10:5351"];
    for from in elsewhere {
        assert!(deliver(&mut m, t0, from.parse().unwrap(), good.clone()).is_empty());
    }
    let stats = m.stats();
    assert_eq!((stats.mismatched, stats.wrong_source), (2, 3));
    assert_eq!(m.external(), None);
    // The real answer still counts.
    assert!(matches!(
        deliver(&mut m, t0, server(), good)[..],
        [MapEvent::Mapped { .. }]
    ));
}

#[test]
fn malformed_short_and_oversized_answers_are_typed_errors() {
    let t0 = crate::test_epoch();
    let mut m = mapper(t0);
    let (sent, _) = tick(&mut m, t0);
    let good = pcp_answer(&sent[0], 1, 600, EXTERNAL.parse().unwrap());
    assert_eq!(pcp::decode(&[]), Err(WireError::Truncated));
    assert_eq!(pcp::decode(&good[..20]), Err(WireError::Truncated));
    assert_eq!(pcp::decode(&good[..40]), Err(WireError::Truncated));
    assert_eq!(pcp::decode(&good[..58]), Err(WireError::Malformed));
    assert_eq!(pcp::decode(&[2; 1104]), Err(WireError::Oversized));
    assert_eq!(pcp::decode(&sent[0]), Err(WireError::NotAResponse));
    let mut opcode = good.clone();
    opcode[1] = 0x82;
    assert_eq!(pcp::decode(&opcode), Err(WireError::UnexpectedOpcode(2)));
    assert_eq!(pcp::decode(&[9; 60]), Err(WireError::UnsupportedVersion(9)));
    let mut tcp = good.clone();
    tcp[36] = 6;
    assert_eq!(pcp::decode(&tcp), Err(WireError::Malformed));
    assert_eq!(natpmp::decode(&[0, 128, 0]), Err(WireError::Truncated));
    assert_eq!(
        natpmp::decode(&natpmp_external(1, [1, 2, 3, 4])[..10]),
        Err(WireError::Truncated)
    );
    assert_eq!(natpmp::decode(&[0; 17]), Err(WireError::Oversized));
    assert_eq!(
        natpmp::decode(&natpmp::map_request(1, 1, 1)),
        Err(WireError::NotAResponse)
    );
    for bad in [
        vec![],
        good[..20].to_vec(),
        vec![2; 2000],
        opcode,
        tcp,
        vec![0, 131, 0, 0, 0, 0, 0, 0],
    ] {
        assert!(deliver(&mut m, t0, server(), bad).is_empty());
    }
    assert_eq!(m.stats().malformed, 6);
    assert_eq!(m.external(), None);
}

#[test]
fn an_answer_nobody_asked_for_is_unexpected() {
    let t0 = crate::test_epoch();
    let (mut m, request) = mapped(t0, 600);
    let again = pcp_answer(&request, 101, 600, EXTERNAL.parse().unwrap());
    assert!(deliver(&mut m, t0 + Duration::from_secs(1), server(), again).is_empty());
    assert_eq!(m.stats().unexpected, 1);
}

#[test]
fn a_server_epoch_that_goes_back_remaps_at_once() {
    let t0 = crate::test_epoch();
    let (mut m, _) = mapped(t0, 7200);
    let t1 = t0 + Duration::from_secs(60);
    let mut announce = vec![2, 0x80, 0, 0, 0, 0, 0, 0];
    announce.extend_from_slice(&160u32.to_be_bytes());
    announce.extend_from_slice(&[0; 12]);
    // On time (100 + 60): nothing to do.
    assert!(deliver(&mut m, t1, server(), announce.clone()).is_empty());
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
    // The server restarted: epoch 3 a minute later.
    let t2 = t1 + Duration::from_secs(60);
    announce[8..12].copy_from_slice(&3u32.to_be_bytes());
    assert!(deliver(&mut m, t2, server(), announce).is_empty());
    assert_eq!(m.stats().epoch_resets, 1);
    assert_eq!(m.poll_timeout(), Some(t2));
    let (sent, _) = tick(&mut m, t2);
    assert_eq!(sent.len(), 1, "a new MAP request at once");
    assert_eq!(&sent[0][..2], &[2, 1]);
}

#[test]
fn a_nat_pmp_gateway_is_asked_after_its_unsupported_version_answer() {
    let t0 = crate::test_epoch();
    let mut m = mapper(t0);
    tick(&mut m, t0);
    // RFC 6887 §9: a NAT-PMP server answers version 2 with version 0, result 1.
    let unsupported = vec![0, 129, 0, 1, 0, 0, 0, 5];
    assert!(deliver(&mut m, t0, server(), unsupported).is_empty());
    let (sent, _) = tick(&mut m, t0);
    assert_eq!(sent, [vec![0, 0], natpmp::map_request(45300, 45300, 7200)]);
    assert_eq!(
        sent[1],
        [0, 1, 0, 0, 0xb0, 0xf4, 0xb0, 0xf4, 0, 0, 0x1c, 0x20]
    );
    assert!(deliver(&mut m, t0, server(), natpmp_map(6, 45300, 45301, 3600)).is_empty());
    let events = deliver(&mut m, t0, server(), natpmp_external(6, [198, 51, 101, 18]));
    assert_eq!(
        events,
        [MapEvent::Mapped {
            external: "198.51.101.18:45301".parse().unwrap(),
            lifetime: Duration::from_secs(3600),
            protocol: Protocol::NatPmp,
        }]
    );
    // Deletion at shutdown: lifetime 0, suggested port 0.
    m.shutdown(t0 + Duration::from_secs(1));
    let (sent, events) = drain(&mut m);
    assert!(events.is_empty());
    assert_eq!(sent[1], natpmp::map_request(45300, 0, 0));
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.stats().deleted, 1);
}

#[test]
fn shutdown_deletes_a_pcp_mapping_with_its_nonce_and_stops() {
    let t0 = crate::test_epoch();
    let (mut m, request) = mapped(t0, 600);
    m.shutdown(t0 + Duration::from_secs(5));
    let (sent, _) = drain(&mut m);
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0][4..8], &[0, 0, 0, 0], "lifetime 0");
    assert_eq!(sent[0][24..42], request[24..42], "the same nonce and port");
    assert_eq!(m.external(), None);
    assert_eq!(m.poll_timeout(), None);
    let (sent, events) = tick(&mut m, t0 + Duration::from_secs(400));
    assert!(sent.is_empty() && events.is_empty());
}

#[test]
fn a_refusal_is_a_typed_failure_and_a_retry_later() {
    let t0 = crate::test_epoch();
    let mut m = mapper(t0);
    let (sent, _) = tick(&mut m, t0);
    let mut refused = pcp_answer(&sent[0], 1, 0, EXTERNAL.parse().unwrap());
    refused[3] = 2; // NOT_AUTHORIZED
    let events = deliver(&mut m, t0, server(), refused);
    let error = PortMapError::Wire {
        protocol: Protocol::Pcp,
        error: WireError::Refused(2),
    };
    assert_eq!(events, [MapEvent::Failed(error)]);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(300)));
}

#[test]
fn no_request_without_a_usable_local_address_until_it_changes() {
    let t0 = crate::test_epoch();
    let mut m = PortMapper::new(config(), "0.0.0.0:45300".parse().unwrap(), [1; 32], t0);
    let (sent, events) = tick(&mut m, t0);
    assert!(sent.is_empty());
    assert_eq!(events, [MapEvent::Failed(PortMapError::NoLocalAddress)]);
    assert_eq!(m.poll_timeout(), None);
    m.handle_input(
        t0,
        Input::LocalAddressChanged {
            old: "0.0.0.0:45300".parse().unwrap(),
            new: LOCAL.parse().unwrap(),
        },
    );
    assert_eq!(drain(&mut m).0.len(), 1);
}
