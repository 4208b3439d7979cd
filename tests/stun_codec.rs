//! The STUN codec against the RFC 5769 test vectors, round-trip and totality proptests, and
//! one test per decode error.

use std::net::SocketAddr;

use macula::nat::stun::{
    Attribute, ChangeRequest, Class, DecodeError, ErrorCode, MAX_ATTRIBUTES, Message, Method,
    StunText, TransactionId, decode, kind,
};
use proptest::prelude::*;

/// Hex as the RFC prints it (spaces and line breaks) to bytes.
fn hex(text: &str) -> Vec<u8> {
    let digits: String = text.split_whitespace().collect();
    hex::decode(digits).expect("test vector is hex")
}

// RFC 5769 §2.1–§2.3, typed in from the RFC. Their MESSAGE-INTEGRITY and the ICE attributes
// of §2.1 are comprehension-required types macula does not know; the decoder lists them.

/// §2.1 Sample Request: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY,
/// FINGERPRINT.
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// §2.2 Sample IPv4 Response: XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// §2.3 Sample IPv6 Response: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

const RFC_TRANSACTION: TransactionId = TransactionId([
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
]);

/// The MESSAGE-INTEGRITY type (RFC 8489 §14.5), which macula does not implement.
const MESSAGE_INTEGRITY: u16 = 0x0008;

#[test]
fn rfc5769_sample_request_decodes_and_its_fingerprint_checks() {
    let decoded = decode(&hex(SAMPLE_REQUEST)).expect("the sample request decodes");
    let m = &decoded.message;
    assert_eq!((m.class, m.method), (Class::Request, Method::BINDING));
    assert_eq!(m.transaction_id, RFC_TRANSACTION);
    assert!(m.fingerprint);
    assert_eq!(
        m.attributes,
        vec![Attribute::Software(
            StunText::new("STUN test client").unwrap()
        )]
    );
    // PRIORITY, USERNAME, MESSAGE-INTEGRITY; ICE-CONTROLLED (0x8029) is optional, so skipped.
    assert_eq!(
        decoded.unknown_required.as_slice(),
        &[0x0024, 0x0006, MESSAGE_INTEGRITY]
    );
}

#[test]
fn rfc5769_sample_responses_decode_to_the_documented_addresses() {
    for (vector, mapped) in [
        (SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853"),
        (
            SAMPLE_IPV6_RESPONSE,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let decoded = decode(&hex(vector)).expect("the sample response decodes");
        let m = &decoded.message;
        assert_eq!((m.class, m.method), (Class::Success, Method::BINDING));
        assert_eq!(m.transaction_id, RFC_TRANSACTION);
        assert!(m.fingerprint, "{mapped}");
        assert_eq!(m.mapped_address(), Some(mapped.parse().unwrap()));
        assert_eq!(
            m.attributes[0],
            // The RFC pads "test vector" with a space; padding is not part of the value.
            Attribute::Software(StunText::new("test vector").unwrap())
        );
        assert_eq!(decoded.unknown_required.as_slice(), &[MESSAGE_INTEGRITY]);
    }
}

/// Without MESSAGE-INTEGRITY (which we cannot produce), the encoder still writes the RFC's
/// bytes for the header, SOFTWARE and the XOR-ed address of both responses.
#[test]
fn the_encoder_writes_the_rfc5769_address_bytes() {
    for (vector, mapped, address_len) in [
        (SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853", 12),
        (
            SAMPLE_IPV6_RESPONSE,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            24,
        ),
    ] {
        let want = hex(vector);
        let mut m = Message::binding(Class::Success, RFC_TRANSACTION);
        m.fingerprint = false;
        m.attributes = vec![Attribute::XorMappedAddress(mapped.parse().unwrap())];
        let got = m.encode().unwrap();
        let address = &want[HEADER_AND_SOFTWARE..HEADER_AND_SOFTWARE + address_len];
        assert_eq!(&got[20..], address, "{mapped}");
        assert_eq!(&got[4..20], &want[4..20], "cookie and transaction id");
    }
}

/// The header (20) and the SOFTWARE attribute "test vector" (4 + 12) of the responses.
const HEADER_AND_SOFTWARE: usize = 36;

#[test]
fn a_changed_byte_breaks_the_fingerprint() {
    let mut bytes = hex(SAMPLE_REQUEST);
    bytes[30] ^= 0x01;
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::BadFingerprint { .. })
    ));
}

#[test]
fn each_malformation_has_its_own_error() {
    let request = hex(SAMPLE_IPV4_RESPONSE);
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (request[..19].to_vec(), DecodeError::Truncated { got: 19 }),
        (
            {
                let mut b = request.clone();
                b[0] = 0x40;
                b
            },
            DecodeError::NotStun(0x40),
        ),
        (
            {
                let mut b = request.clone();
                b[7] = 0x43;
                b
            },
            DecodeError::BadCookie(0x2112_a443),
        ),
        (
            request[..request.len() - 4].to_vec(),
            DecodeError::BadLength {
                header: 0x3c,
                body: 0x38,
            },
        ),
        (
            {
                let mut b = request.clone();
                b[3] = 0x3d;
                b.push(0);
                b
            },
            DecodeError::BadLength {
                header: 0x3d,
                body: 0x3d,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode(&bytes), Err(want));
    }
}

/// Builds a Binding request of the given attribute bytes (header length set to fit).
fn with_attributes(attributes: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x00, 0x01];
    bytes.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    bytes.extend_from_slice(&[7; 12]);
    bytes.extend_from_slice(attributes);
    bytes
}

#[test]
fn attribute_errors_name_the_attribute() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (
            hex("00 20 00 10 00 01 00 00"),
            DecodeError::AttributeOverrun {
                kind: 0x0020,
                len: 16,
                offset: 20,
            },
        ),
        (
            hex("00 20 00 08 00 03 00 00 00 00 00 00"),
            DecodeError::BadAddressFamily {
                kind: 0x0020,
                family: 3,
            },
        ),
        (
            hex("00 20 00 0c 00 01 00 00 00 00 00 00 00 00 00 00"),
            DecodeError::BadAttributeLength {
                kind: 0x0020,
                len: 12,
            },
        ),
        (
            hex("00 03 00 02 00 00 00 00"),
            DecodeError::BadAttributeLength {
                kind: 0x0003,
                len: 2,
            },
        ),
        (
            hex("80 22 00 02 ff fe 00 00"),
            DecodeError::BadUtf8 { kind: 0x8022 },
        ),
        (
            hex("00 09 00 04 00 00 07 00"),
            DecodeError::BadErrorCode {
                class: 7,
                number: 0,
            },
        ),
        (
            hex("00 09 00 04 00 00 04 64"),
            DecodeError::BadErrorCode {
                class: 4,
                number: 100,
            },
        ),
        (
            hex("00 0a 00 03 00 01 02 00"),
            DecodeError::BadAttributeLength {
                kind: 0x000a,
                len: 3,
            },
        ),
        (
            hex("80 28 00 04 00 00 00 00 80 22 00 00"),
            DecodeError::FingerprintNotLast,
        ),
    ];
    for (attributes, want) in cases {
        assert_eq!(
            decode(&with_attributes(&attributes)),
            Err(want.clone()),
            "{want}"
        );
    }
}

#[test]
fn unknown_optional_attributes_are_skipped_and_required_ones_listed() {
    let decoded = decode(&with_attributes(&hex(
        "ff ff 00 01 aa 00 00 00  00 26 00 00  00 03 00 04 00 00 00 06",
    )))
    .unwrap();
    assert_eq!(decoded.unknown_required.as_slice(), &[0x0026]);
    assert_eq!(
        decoded.message.attributes,
        vec![Attribute::ChangeRequest(ChangeRequest {
            change_ip: true,
            change_port: true
        })]
    );
}

#[test]
fn more_than_the_attribute_bound_is_refused() {
    let zero_length_software = hex("80 22 00 00");
    let at_bound = zero_length_software.repeat(MAX_ATTRIBUTES);
    assert!(decode(&with_attributes(&at_bound)).is_ok());
    let past = zero_length_software.repeat(MAX_ATTRIBUTES + 1);
    assert_eq!(
        decode(&with_attributes(&past)),
        Err(DecodeError::TooManyAttributes)
    );
}

fn address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn text() -> impl Strategy<Value = StunText> {
    "\\PC{0,127}".prop_map(|s| StunText::new(&s).expect("127 characters fit"))
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        address().prop_map(Attribute::MappedAddress),
        address().prop_map(Attribute::XorMappedAddress),
        address().prop_map(Attribute::ResponseOrigin),
        address().prop_map(Attribute::OtherAddress),
        (any::<bool>(), any::<bool>()).prop_map(|(change_ip, change_port)| {
            Attribute::ChangeRequest(ChangeRequest {
                change_ip,
                change_port,
            })
        }),
        text().prop_map(Attribute::Software),
        (300u16..700, text())
            .prop_map(|(code, reason)| Attribute::ErrorCode(ErrorCode::new(code, reason).unwrap())),
        proptest::collection::vec(any::<u16>(), 0..8)
            .prop_map(|kinds| Attribute::UnknownAttributes(kinds.into_iter().collect())),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let class = prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ];
    (
        class,
        0u16..0x1000,
        any::<[u8; 12]>(),
        proptest::collection::vec(attribute(), 0..MAX_ATTRIBUTES),
        any::<bool>(),
    )
        .prop_map(|(class, method, id, attributes, fingerprint)| Message {
            class,
            method: Method::new(method).unwrap(),
            transaction_id: TransactionId(id),
            attributes,
            fingerprint,
        })
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = m.encode().unwrap();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let decoded = decode(&bytes).unwrap();
        prop_assert!(decoded.unknown_required.is_empty());
        prop_assert_eq!(decoded.message, m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
    }

    /// Bytes behind a valid header reach the attribute parser, where most bugs would live.
    #[test]
    fn arbitrary_attributes_never_panic(attributes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&with_attributes(&attributes));
    }

    /// A single flipped bit in a fingerprinted message is always caught.
    #[test]
    fn a_flipped_bit_never_decodes_to_the_same_message(m in message(), bit in any::<prop::sample::Index>()) {
        let mut m = m;
        m.fingerprint = true;
        let mut bytes = m.encode().unwrap().to_vec();
        let at = bit.index(bytes.len() * 8);
        bytes[at / 8] ^= 1 << (at % 8);
        prop_assert_ne!(decode(&bytes).ok().map(|d| d.message), Some(m));
    }
}

#[test]
fn attribute_kinds_are_the_registered_numbers() {
    let any_addr: SocketAddr = "192.0.2.1:1".parse().unwrap();
    for (attribute, number) in [
        (Attribute::MappedAddress(any_addr), 0x0001),
        (Attribute::ChangeRequest(ChangeRequest::default()), 0x0003),
        (Attribute::XorMappedAddress(any_addr), 0x0020),
        (Attribute::ResponseOrigin(any_addr), 0x802b),
        (Attribute::OtherAddress(any_addr), 0x802c),
    ] {
        assert_eq!(attribute.kind(), number);
    }
    assert!(kind::comprehension_required(0x7fff));
    assert!(!kind::comprehension_required(kind::FINGERPRINT));
}
