//! The STUN responder: what it answers, from where, within which size, and what it refuses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::nat::stun::{
    AMPLIFICATION_ALLOWANCE, Alternate, Attribute, BindingClient, Bucket, ChangeRequest, Class,
    ClientConfig, Message, Method, RateLimit, Responder, ResponderConfig, ResponderStats, StunText,
    TransactionId, decode, kind,
};
use macula::{Datagram, Input, Machine, Output, Transmit};
use proptest::prelude::*;

#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

const LOCAL: &str = "203.0.113.1:4433";
const REMOTE: &str = "198.51.100.7:50000";

/// A Binding request with SOFTWARE padding it to a size that leaves room for every attribute.
fn request(id: u8, attributes: Vec<Attribute>) -> Message {
    let mut m = Message::binding(Class::Request, TransactionId([id; 12]));
    m.attributes = attributes;
    m
}

fn padded_request(id: u8) -> Message {
    request(
        id,
        vec![Attribute::Software(StunText::new(&"x".repeat(64)).unwrap())],
    )
}

/// Feeds one datagram and returns every transmit.
fn exchange(responder: &mut Responder, now: Instant, from: &str, payload: Bytes) -> Vec<Transmit> {
    responder.handle_input(
        now,
        Input::Datagram(Datagram {
            local: addr(LOCAL),
            remote: addr(from),
            payload,
        }),
    );
    let mut sent = Vec::new();
    let while_queued = responder.poll_timeout();
    responder.drain(|output| match output {
        Output::Transmit(t) => sent.push(t),
        Output::Event(never) => match never {},
        Output::Sockets(r) => panic!("the responder asked for sockets: {r:?}"),
    });
    assert_eq!(responder.poll_timeout(), None, "drained: no deadline");
    let expected = (!sent.is_empty()).then_some(now);
    assert_eq!(while_queued, expected, "queued output asks for `now`");
    sent
}

fn answer(responder: &mut Responder, now: Instant, from: &str, m: &Message) -> Option<Message> {
    let sent = exchange(responder, now, from, m.encode().unwrap());
    assert!(sent.len() <= 1);
    sent.into_iter().next().map(|t| {
        assert_eq!(t.destination, addr(from));
        assert_eq!(t.ttl, None);
        decode(&t.payload).unwrap().message
    })
}

#[test]
fn a_binding_request_gets_its_reflexive_address_and_every_optional_attribute() {
    let mut responder = Responder::new(ResponderConfig::default());
    let m = padded_request(1);
    let sent = exchange(&mut responder, start(), REMOTE, m.encode().unwrap());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].source, Some(addr(LOCAL)));
    let response = decode(&sent[0].payload).unwrap().message;
    assert_eq!(
        (response.class, response.method),
        (Class::Success, Method::BINDING)
    );
    assert_eq!(response.transaction_id, m.transaction_id);
    assert_eq!(
        response.attributes,
        vec![
            Attribute::XorMappedAddress(addr(REMOTE)),
            Attribute::ResponseOrigin(addr(LOCAL)),
            Attribute::Software(StunText::new("macula").unwrap()),
        ]
    );
    assert!(response.fingerprint);
    assert_eq!(
        responder.stats(),
        ResponderStats {
            answered: 1,
            ..ResponderStats::default()
        }
    );
}

#[test]
fn an_ipv4_mapped_source_is_reported_as_ipv4() {
    let mut responder = Responder::new(ResponderConfig::default());
    let response = answer(
        &mut responder,
        start(),
        "[::ffff:198.51.100.7]:50000",
        &padded_request(1),
    );
    assert_eq!(response.unwrap().mapped_address(), Some(addr(REMOTE)));
}

#[test]
fn the_smallest_request_gets_the_mapped_address_within_the_allowance() {
    let mut responder = Responder::new(ResponderConfig::default());
    let mut bare = request(1, vec![]);
    bare.fingerprint = false;
    let from = "[2001:db8::7]:50000";
    let sent = exchange(&mut responder, start(), from, bare.encode().unwrap());
    assert_eq!(
        sent[0].payload.len(),
        20 + AMPLIFICATION_ALLOWANCE,
        "header, IPv6 XOR-MAPPED-ADDRESS (24) and FINGERPRINT (8): no room for the rest"
    );
    let response = decode(&sent[0].payload).unwrap().message;
    assert_eq!(
        response.attributes,
        vec![Attribute::XorMappedAddress(addr(from))]
    );
    assert!(response.fingerprint);
}

#[test]
fn unknown_required_attributes_get_a_420_listing_them() {
    let mut responder = Responder::new(ResponderConfig::default());
    // A request with two attributes macula does not know: 0x0024 (PRIORITY) and 0x7fff.
    let mut bytes = request(1, vec![]).encode().unwrap().to_vec();
    bytes.truncate(20);
    bytes.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4, 0x7f, 0xff, 0x00, 0x00]);
    bytes[3] = 12;
    let sent = exchange(&mut responder, start(), REMOTE, Bytes::from(bytes.clone()));
    let response = decode(&sent[0].payload).unwrap().message;
    assert_eq!(response.class, Class::Error);
    assert_eq!(response.error_code().map(|e| e.code()), Some(420));
    assert!(response.attributes.contains(&Attribute::UnknownAttributes(
        [0x0024, 0x7fff].into_iter().collect()
    )));
    assert!(sent[0].payload.len() <= bytes.len() + AMPLIFICATION_ALLOWANCE);
    assert_eq!(responder.stats().errors, 1);
}

#[test]
fn change_request_without_an_alternate_address_is_an_unknown_attribute() {
    let mut responder = Responder::new(ResponderConfig::default());
    let change = Attribute::ChangeRequest(ChangeRequest {
        change_ip: true,
        change_port: false,
    });
    let response = answer(&mut responder, start(), REMOTE, &request(1, vec![change])).unwrap();
    assert_eq!(response.error_code().map(|e| e.code()), Some(420));
    assert!(response.attributes.contains(&Attribute::UnknownAttributes(
        [kind::CHANGE_REQUEST].into_iter().collect()
    )));
    // Asking for no change is no request at all.
    let no_change = Attribute::ChangeRequest(ChangeRequest::default());
    let response = answer(
        &mut responder,
        start(),
        REMOTE,
        &request(2, vec![no_change]),
    )
    .unwrap();
    assert_eq!(response.class, Class::Success);
}

#[test]
fn with_an_alternate_address_change_request_moves_the_source() {
    let config = ResponderConfig {
        alternate: Some(Alternate {
            ips: [
                "203.0.113.1".parse().unwrap(),
                "203.0.113.2".parse().unwrap(),
            ],
            ports: [4433, 4434],
        }),
        ..ResponderConfig::default()
    };
    let mut responder = Responder::new(config);
    let now = start();
    for (change_ip, change_port, source) in [
        (false, false, LOCAL),
        (true, false, "203.0.113.2:4433"),
        (false, true, "203.0.113.1:4434"),
        (true, true, "203.0.113.2:4434"),
    ] {
        let mut m = padded_request(1);
        m.attributes.push(Attribute::ChangeRequest(ChangeRequest {
            change_ip,
            change_port,
        }));
        let sent = exchange(&mut responder, now, REMOTE, m.encode().unwrap());
        assert_eq!(sent[0].source, Some(addr(source)));
        let response = decode(&sent[0].payload).unwrap().message;
        assert_eq!(response.response_origin(), Some(addr(source)));
        assert_eq!(response.other_address(), Some(addr("203.0.113.2:4434")));
        assert_eq!(response.mapped_address(), Some(addr(REMOTE)));
    }
}

#[test]
fn a_source_past_its_burst_is_refused_until_it_refills() {
    let config = ResponderConfig {
        rate_limit: RateLimit {
            per_source: Bucket {
                interval: Duration::from_millis(100),
                burst: 2,
            },
            ..RateLimit::default()
        },
        ..ResponderConfig::default()
    };
    let mut responder = Responder::new(config);
    let t0 = start();
    let m = padded_request(1);
    let answered_at =
        |responder: &mut Responder, at: Duration| answer(responder, t0 + at, REMOTE, &m).is_some();
    assert!(answered_at(&mut responder, Duration::ZERO));
    assert!(answered_at(&mut responder, Duration::ZERO));
    assert!(!answered_at(&mut responder, Duration::from_millis(50)));
    assert!(answered_at(&mut responder, Duration::from_millis(100)));
    // Another source is not affected.
    let later = t0 + Duration::from_millis(100);
    assert!(answer(&mut responder, later, "198.51.100.8:1", &m).is_some());
    assert_eq!(responder.stats().rate_limited, 1);
    assert_eq!(responder.stats().answered, 4);
}

#[test]
fn malformed_datagrams_and_non_requests_are_counted_and_unanswered() {
    let mut responder = Responder::new(ResponderConfig::default());
    let now = start();
    assert!(exchange(&mut responder, now, REMOTE, Bytes::from_static(&[0; 19])).is_empty());
    let mut response = padded_request(1);
    response.class = Class::Success;
    assert!(answer(&mut responder, now, REMOTE, &response).is_none());
    let mut other_method = padded_request(1);
    other_method.method = Method::new(0x003).unwrap();
    assert!(answer(&mut responder, now, REMOTE, &other_method).is_none());
    assert_eq!(
        responder.stats(),
        ResponderStats {
            malformed: 1,
            ignored: 2,
            ..ResponderStats::default()
        }
    );
}

fn request_attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        (any::<bool>(), any::<bool>()).prop_map(|(change_ip, change_port)| {
            Attribute::ChangeRequest(ChangeRequest {
                change_ip,
                change_port,
            })
        }),
        "[a-z]{0,40}".prop_map(|s| Attribute::Software(StunText::new(&s).unwrap())),
    ]
}

proptest! {
    /// No request, with or without an alternate address, from IPv4 or IPv6, draws a response
    /// longer than itself plus the allowance; every success carries the mapped address.
    #[test]
    fn no_response_exceeds_its_request_plus_the_allowance(
        attributes in proptest::collection::vec(request_attribute(), 0..4),
        // Above every comprehension-required type macula knows (the highest is 0x0020).
        unknown in proptest::collection::vec(0x0021u16..0x8000, 0..6),
        fingerprint in any::<bool>(),
        alternate in any::<bool>(),
        ipv6 in any::<bool>(),
    ) {
        let config = ResponderConfig {
            alternate: alternate.then(|| Alternate {
                ips: ["2001:db8::1".parse().unwrap(), "203.0.113.2".parse().unwrap()],
                ports: [4433, 4434],
            }),
            ..ResponderConfig::default()
        };
        let mut responder = Responder::new(config);
        let mut m = request(9, attributes);
        m.fingerprint = fingerprint;
        let mut bytes = m.encode().unwrap().to_vec();
        // Zero-length unknown attributes, inserted before any FINGERPRINT would have to be
        // recomputed, so append them to a message without one.
        if !fingerprint {
            for kind in &unknown {
                bytes.extend_from_slice(&kind.to_be_bytes());
                bytes.extend_from_slice(&[0, 0]);
            }
            let body = (bytes.len() - 20) as u16;
            bytes[2..4].copy_from_slice(&body.to_be_bytes());
        }
        let from = if ipv6 { "[2001:db8::9]:1" } else { REMOTE };
        let sent = exchange(&mut responder, start(), from, Bytes::from(bytes.clone()));
        prop_assert_eq!(sent.len(), 1);
        prop_assert!(sent[0].payload.len() <= bytes.len() + AMPLIFICATION_ALLOWANCE);
        let response = decode(&sent[0].payload).unwrap().message;
        if response.class == Class::Success {
            prop_assert_eq!(response.mapped_address(), Some(addr(from)));
        }
    }
}

/// The bytes of docs/PROTOCOL.md §10.5 example `name`: the ```stun block after the line
/// starting ``STUN example `name` `` (`#` starts a comment).
fn spec_example(name: &str) -> Vec<u8> {
    let spec = include_str!("../docs/PROTOCOL.md");
    let mut lines = spec
        .lines()
        .skip_while(|l| !l.starts_with(&format!("STUN example `{name}`")));
    assert!(lines.next().is_some(), "no STUN example `{name}`");
    let mut lines = lines.skip_while(|l| *l != "```stun").skip(1);
    let digits: String = lines
        .by_ref()
        .take_while(|l| *l != "```")
        .flat_map(|l| l.split('#').next().unwrap_or_default().split_whitespace())
        .collect();
    hex::decode(digits).expect("example is hex")
}

#[test]
fn the_protocol_examples_are_what_the_code_sends() {
    // What the client sends, with the example's transaction id in place of its random one.
    let mut client = BindingClient::new(ClientConfig::default(), [0; 32]);
    client.start(start(), addr(LOCAL), ChangeRequest::default());
    let Some(Output::Transmit(sent)) = client.poll_output() else {
        panic!("the client sends its request at once")
    };
    let mut request = decode(&sent.payload).unwrap().message;
    request.transaction_id = TransactionId(*b"macula-stun1");
    let request = request.encode().unwrap();
    assert_eq!(request.as_ref(), spec_example("request").as_slice());

    let mut responder = Responder::new(ResponderConfig::default());
    let sent = exchange(&mut responder, start(), "192.0.2.1:32853", request);
    assert_eq!(
        sent[0].payload.as_ref(),
        spec_example("response").as_slice()
    );
}

#[test]
fn the_punch_probe_example_is_what_the_puncher_sends() {
    use macula::nat::punch::{
        Candidate, CandidateKind, NatClass, Plan, PunchConfig, Puncher, Role, SessionTag,
    };
    use macula::nat::stun::IntegrityKey;
    let key = IntegrityKey(*b"macpunch-integrity-key-32-bytes!");
    let plan = Plan {
        tag: SessionTag(*b"macpunch"),
        key: key.clone(),
        remote: vec![Candidate::new(
            CandidateKind::Reflexive,
            addr("198.51.100.2:4433"),
        )],
        rtt: Duration::from_millis(40),
        role: Role::Opener,
        start: start(),
        local_nat: NatClass::UNKNOWN,
        remote_nat: NatClass::UNKNOWN,
        same_public_ip: false,
        hops: None,
        both_ipv6: false,
        search: false,
        seed: 0,
        search_ip: None,
        socket: None,
    };
    let mut puncher = Puncher::new(PunchConfig::default(), plan, start());
    puncher.handle_input(start(), Input::Timeout);
    let first = std::iter::from_fn(|| puncher.poll_output())
        .find_map(|o| match o {
            Output::Transmit(t) => Some(t),
            _ => None,
        })
        .expect("the opener's burst starts at once");
    assert_eq!(
        first.payload.as_ref(),
        spec_example("punch probe").as_slice()
    );
    assert!(key.verifies(&first.payload));
    assert!(!IntegrityKey([0; 32]).verifies(&first.payload));
}
