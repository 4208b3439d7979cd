//! The hex examples of docs/PROTOCOL.md are the codec's output, byte for byte.
//!
//! Each example in the spec is a line starting ``Example `NAME` `` (a frame)
//! or ``Value example `NAME` `` (a DHT record value or key, §8.5) followed by
//! a fenced `hex` block (pairs of hex digits, whitespace ignored, `#` starts a
//! comment). This test builds the same message in code, encodes it and
//! compares bytes, then decodes the hex back to the message. It fails when
//! the spec and the code drift apart, when a message type has no example,
//! and when an example names no message type.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use macula::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use macula::pubsub::{Pattern, decode_subscriber_value, encode_subscriber_value};
use macula::record::SignedRecord;
use macula::rpc::ProviderFlags;
use macula::wire::*;

const SPEC: &str = include_str!("../docs/PROTOCOL.md");

/// Example name → bytes, in spec order; panics on a malformed example.
fn spec_examples() -> BTreeMap<String, Vec<u8>> {
    let mut examples = BTreeMap::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line
            .strip_prefix("Example `")
            .or_else(|| line.strip_prefix("Value example `"))
        else {
            continue;
        };
        let name = rest.split('`').next().unwrap_or_default().to_string();
        let fence = lines.by_ref().find(|l| !l.trim().is_empty());
        assert_eq!(
            fence,
            Some("```hex"),
            "example {name}: a ```hex block must follow"
        );
        let mut hex_digits = String::new();
        for l in lines.by_ref().take_while(|l| *l != "```") {
            let data = l.split('#').next().unwrap_or_default();
            hex_digits.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
        let bytes = hex::decode(&hex_digits)
            .unwrap_or_else(|e| panic!("example {name}: bad hex ({e}): {hex_digits}"));
        assert!(
            examples.insert(name.clone(), bytes).is_none(),
            "example {name} appears twice"
        );
    }
    let hex_blocks = SPEC.lines().filter(|l| *l == "```hex").count();
    assert_eq!(
        hex_blocks,
        examples.len(),
        "every ```hex block must follow an ``Example `NAME` `` line"
    );
    examples
}

/// The record values and keys §8.5 shows, as the code makes them.
fn value_examples() -> BTreeMap<&'static str, Vec<u8>> {
    let realm = realm();
    let patterns: Vec<Pattern> = ["news.*.eu", "news.*"]
        .iter()
        .map(|p| Pattern::new(p).unwrap())
        .collect();
    let mut sorted = patterns.clone();
    sorted.sort();
    let literal = patterns[0].literal_prefix();
    BTreeMap::from([
        (
            "PROVIDER_VALUE",
            ProviderFlags { idempotent: true }.encode().to_vec(),
        ),
        (
            "PROVIDER_KEY",
            RecordKey::new(&realm, RecordKind::Rpc, "svc.echo")
                .as_bytes()
                .to_vec(),
        ),
        (
            "SUBSCRIBER_VALUE",
            encode_subscriber_value(&sorted).to_vec(),
        ),
        (
            "SUBSCRIBER_KEY",
            RecordKey::new(&realm, RecordKind::Topic, literal)
                .as_bytes()
                .to_vec(),
        ),
    ])
}

fn realm() -> Realm {
    Realm::new("io.macula").unwrap()
}

/// The record every DHT example carries.
fn record() -> SignedRecord {
    SignedRecord::sign(
        &Identity::from_seed([1; 32]),
        RecordKey::new(&realm(), RecordKind::Rpc, "echo"),
        Bytes::from_static(b"v1"),
        1_700_000_000_000,
        300,
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The message each example shows (an exhaustive match: a new message type
/// does not compile without its example).
fn example(ty: MessageType) -> Message {
    match ty {
        MessageType::Connect => Connect {
            node_id: NodeId::from_bytes([0x11; 32]),
            realm: realm(),
            capabilities: Capabilities::DHT_SERVER
                .with(Capabilities::RPC)
                .with(Capabilities::PUBSUB)
                .with(Capabilities::STORE_BATCH),
            listen_addrs: vec![addr("203.0.113.7:4433"), addr("[2001:db8::7]:4433")],
        }
        .into(),
        MessageType::Disconnect => Disconnect {
            reason: DisconnectReason::RealmMismatch,
            message: "realm io.other".into(),
        }
        .into(),
        MessageType::Ping => Ping { request_id: 42 }.into(),
        MessageType::Pong => Pong { request_id: 42 }.into(),
        MessageType::Publish => Publish {
            message_id: 7,
            epoch: 1_700_000_000_000_000,
            sequence: 3,
            topic: "sensors.t1".into(),
            payload: Bytes::from_static(b"21.5"),
        }
        .into(),
        MessageType::PublishBatch => PublishBatch {
            epoch: 1_700_000_000_000_000,
            first_sequence: 4,
            topic: "sensors.t1".into(),
            entries: vec![
                Published {
                    message_id: 8,
                    payload: Bytes::from_static(b"21.6"),
                },
                Published {
                    message_id: 9,
                    payload: Bytes::from_static(b"21.8"),
                },
            ],
        }
        .into(),
        MessageType::Subscribe => Subscribe {
            request_id: 5,
            pattern: "sensors.*".into(),
        }
        .into(),
        MessageType::Unsubscribe => Unsubscribe {
            request_id: 6,
            pattern: "sensors.*".into(),
        }
        .into(),
        MessageType::Call => Call {
            request_id: 1,
            procedure: "echo".into(),
            timeout_ms: 5_000,
            idempotent: true,
            payload: Bytes::from_static(b"hi"),
        }
        .into(),
        MessageType::Reply => Reply {
            request_id: 1,
            payload: Bytes::from_static(b"hi"),
        }
        .into(),
        MessageType::ErrorReply => ErrorReply {
            request_id: 1,
            code: ErrorCode::UnknownProcedure,
            message: "no such procedure".into(),
        }
        .into(),
        MessageType::Cancel => Cancel { request_id: 1 }.into(),
        MessageType::PayloadSize => PayloadSize {
            request_id: 1,
            total_len: 5 << 20,
        }
        .into(),
        MessageType::PayloadChunk => PayloadChunk {
            request_id: 1,
            data: Bytes::from_static(b"hi"),
        }
        .into(),
        MessageType::FindNode => FindNode {
            request_id: 9,
            target: NodeId::from_bytes([0xab; 32]),
        }
        .into(),
        MessageType::FindNodeReply => FindNodeReply {
            request_id: 9,
            contacts: vec![Contact {
                node_id: NodeId::from_bytes([0x22; 32]),
                addrs: vec![addr("198.51.100.2:4433")],
            }],
        }
        .into(),
        MessageType::FindValue => FindValue {
            request_id: 10,
            key: record().key,
        }
        .into(),
        MessageType::FindValueReply => FindValueReply {
            request_id: 10,
            records: vec![record()],
            omitted: 2,
            closer: vec![Contact {
                node_id: NodeId::from_bytes([0x33; 32]),
                addrs: vec![],
            }],
        }
        .into(),
        MessageType::Store => Store {
            request_id: 11,
            record: Box::new(record()),
        }
        .into(),
        MessageType::StoreAck => StoreAck {
            request_id: 11,
            status: StoreStatus::Stored,
        }
        .into(),
        MessageType::StoreBatch => StoreBatch {
            request_id: 12,
            records: vec![record()],
        }
        .into(),
        MessageType::StoreBatchAck => StoreBatchAck {
            request_id: 12,
            statuses: vec![StoreStatus::Stored, StoreStatus::BadSignature],
        }
        .into(),
        MessageType::RelayReserve => RelayReserve { request_id: 20 }.into(),
        MessageType::RelayReserveStatus => RelayReserveStatus {
            request_id: 20,
            status: RelayStatus::Ok,
            ttl_secs: 300,
        }
        .into(),
        MessageType::RelayRelease => RelayRelease { request_id: 21 }.into(),
        MessageType::CircuitOpen => CircuitOpen {
            request_id: 22,
            target: NodeId::from_bytes([0x44; 32]),
        }
        .into(),
        MessageType::CircuitStatus => CircuitStatus {
            request_id: 22,
            status: RelayStatus::Ok,
            circuit: 7,
        }
        .into(),
        MessageType::CircuitIncoming => CircuitIncoming {
            circuit: 7,
            source: NodeId::from_bytes([0x55; 32]),
        }
        .into(),
        MessageType::CircuitPeer => CircuitPeer {
            circuit: 7,
            peer: addr("203.0.113.7:4433"),
        }
        .into(),
        MessageType::DialBack => DialBack {
            request_id: 13,
            nonce: [0xa5; 12],
            source: ProbeSource::OtherIp,
            addrs: vec![addr("203.0.113.7:4433")],
        }
        .into(),
        MessageType::DialBackResult => DialBackResult {
            request_id: 13,
            status: DialBackStatus::Forwarded,
            helpers: vec![addr("198.51.100.2:4433")],
        }
        .into(),
        MessageType::DialBackProbe => DialBackProbe {
            nonce: [0xa5; 12],
            addrs: vec![addr("203.0.113.7:4433")],
        }
        .into(),
        MessageType::CapabilitiesUpdate => CapabilitiesUpdate {
            capabilities: Capabilities::RPC
                .with(Capabilities::PUBSUB)
                .with(Capabilities::STORE_BATCH),
        }
        .into(),
        MessageType::PunchOffer => PunchOffer {
            request_id: 13,
            tag: *b"macpunch",
            key: *b"macpunch-integrity-key-32-bytes!",
            nat: NatInfo {
                mapping: MappingCode::EndpointIndependent,
                filtering: FilteringCode::AddressAndPortDependent,
                allocation: AllocationCode::Preserving,
                port_step: 0,
            },
            candidates: vec![
                WireCandidate {
                    kind: CandidateType::Reflexive,
                    addr: addr("198.51.100.2:4433"),
                },
                WireCandidate {
                    kind: CandidateType::Lan,
                    addr: addr("10.1.0.11:4433"),
                },
            ],
        }
        .into(),
        MessageType::PunchAnswer => PunchAnswer {
            request_id: 13,
            nat: NatInfo {
                mapping: MappingCode::AddressAndPortDependent,
                filtering: FilteringCode::AddressAndPortDependent,
                allocation: AllocationCode::Sequential,
                port_step: 1,
            },
            candidates: vec![WireCandidate {
                kind: CandidateType::Predicted,
                addr: addr("198.51.100.18:40003"),
            }],
        }
        .into(),
        MessageType::PunchSync => PunchSync {
            request_id: 13,
            start_in_ms: 10,
        }
        .into(),
        MessageType::PunchResult => PunchResult {
            request_id: 13,
            outcome: PunchOutcome::Succeeded,
            attempts: 1,
            remote: vec![addr("198.51.100.18:40003")],
        }
        .into(),
    }
}

/// The bytes as a ```hex block (header line, then 16 bytes a line), to paste
/// into the spec when a message changes on purpose.
fn hex_block(bytes: &[u8]) -> String {
    let (header, body) = bytes.split_at(HEADER_LEN.min(bytes.len()));
    let line = |chunk: &[u8]| {
        chunk
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!("```hex\n{}  # header\n", line(header));
    for chunk in body.chunks(16) {
        out += &line(chunk);
        out.push('\n');
    }
    out + "```"
}

#[test]
fn every_message_type_has_one_matching_example() {
    let mut examples = spec_examples();
    let limits = Limits::default();
    for name in value_examples().keys() {
        examples.remove(*name);
    }
    for &ty in MessageType::ALL {
        let message = example(ty);
        let encoded = message.to_vec(&limits).unwrap();
        let Some(spec) = examples.remove(ty.name()) else {
            panic!(
                "docs/PROTOCOL.md has no example for {}; add:\n\nExample `{}`:\n\n{}\n",
                ty.name(),
                ty.name(),
                hex_block(&encoded)
            );
        };
        assert!(
            spec == encoded,
            "docs/PROTOCOL.md example {} differs from the encoder; the encoder says:\n\n{}\n",
            ty.name(),
            hex_block(&encoded)
        );
        assert_eq!(
            decode(&spec, &limits),
            Ok(Decoded::Complete(message, spec.len())),
            "example {}",
            ty.name()
        );
    }
    assert!(
        examples.is_empty(),
        "examples naming no message type: {:?}",
        examples.keys().collect::<Vec<_>>()
    );
}

#[test]
fn every_record_value_example_matches_the_codecs() {
    let mut examples = spec_examples();
    for (name, encoded) in value_examples() {
        let spec = examples.remove(name);
        assert_eq!(
            spec.as_deref(),
            Some(&encoded[..]),
            "docs/PROTOCOL.md §8.5 value example {name}; the code says {}",
            hex::encode(&encoded)
        );
    }
    // And back: the values read as what they were made from.
    let values = value_examples();
    assert!(ProviderFlags::decode(&values["PROVIDER_VALUE"]).idempotent);
    assert!(!ProviderFlags::decode(&[]).idempotent, "empty: no flag");
    assert!(!ProviderFlags::decode(&[0xfe]).idempotent, "reserved bits");
    let patterns: Vec<String> = decode_subscriber_value(&values["SUBSCRIBER_VALUE"])
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    assert_eq!(patterns, ["news.*", "news.*.eu"]);
    let lenient = decode_subscriber_value(b"news.*\nnot a pattern\n\nnews.#");
    assert_eq!(lenient.len(), 2, "invalid lines are skipped");
    assert!(
        decode_subscriber_value(&[0xff, 0x0a]).is_empty(),
        "not UTF-8"
    );
}

#[test]
fn the_spec_states_the_codec_constants() {
    let must_say = [
        format!("version `{VERSION}`"),
        format!("ALPN `{}`", String::from_utf8_lossy(ALPN)),
        format!("server name `{SERVER_NAME}`"),
        format!("max_frame_len | {}", Limits::DEFAULT.max_frame_len),
        format!("max_string_len | {}", Limits::DEFAULT.max_string_len),
        format!("max_list_len | {}", Limits::DEFAULT.max_list_len),
        format!("max_contacts | {}", Limits::DEFAULT.max_contacts),
        format!("max_addrs | {}", Limits::DEFAULT.max_addrs),
    ];
    for phrase in must_say {
        assert!(
            SPEC.contains(&phrase),
            "docs/PROTOCOL.md must say {phrase:?}"
        );
    }
    for &ty in MessageType::ALL {
        let row = format!("| `{:#04x}` | {} |", ty.code(), ty.name());
        assert!(
            SPEC.contains(&row),
            "docs/PROTOCOL.md type table needs {row:?}"
        );
    }
    let code_rows = (DisconnectReason::KNOWN.iter())
        .map(|c| format!("| {} | {c:?} |", c.code()))
        .chain(
            ErrorCode::KNOWN
                .iter()
                .map(|c| format!("| {} | {c:?} |", c.code())),
        )
        .chain(
            StoreStatus::KNOWN
                .iter()
                .map(|c| format!("| {} | {c:?} |", c.code())),
        );
    for row in code_rows {
        assert!(
            SPEC.contains(&row),
            "docs/PROTOCOL.md code tables need {row:?}"
        );
    }
}
