//! Property tests of the wire codec: every message round-trips, arbitrary
//! bytes never panic the decoder, prefixes of a frame ask for more, a
//! stream cut anywhere reassembles the same messages, and a CALL or REPLY
//! too large for a frame streams in frames that fit and comes back whole.

use std::net::SocketAddr;

use bytes::Bytes;
use macula::id::{Identity, NodeId, Realm, RecordKey};
use macula::record::SignedRecord;
use macula::wire::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

fn realm() -> impl Strategy<Value = Realm> {
    "[a-z][a-z0-9-]{0,6}[a-z0-9](\\.[a-z0-9]{1,8}){1,3}".prop_map(|s| Realm::new(&s).unwrap())
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn contact() -> impl Strategy<Value = Contact> {
    (node_id(), vec(addr(), 0..4)).prop_map(|(node_id, addrs)| Contact { node_id, addrs })
}

fn record() -> impl Strategy<Value = SignedRecord> {
    (
        any::<[u8; 32]>(),
        0u8..4,
        payload(),
        any::<u64>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(key, seed, value, issued_at_ms, ttl_secs, s1, s2)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&s1);
            signature[32..].copy_from_slice(&s2);
            SignedRecord {
                key: RecordKey::from_bytes(key),
                publisher: *Identity::from_seed([seed; 32]).public_key(),
                value,
                issued_at_ms,
                ttl_secs,
                signature,
            }
        })
}

/// Arbitrary messages of type `ty` (an exhaustive match: a new message type
/// does not compile without its strategy).
fn message_of(ty: MessageType) -> BoxedStrategy<Message> {
    let id = any::<u64>;
    match ty {
        MessageType::Connect => (node_id(), realm(), any::<u64>(), vec(addr(), 0..5))
            .prop_map(|(node_id, realm, caps, listen_addrs)| {
                Message::from(Connect {
                    node_id,
                    realm,
                    capabilities: Capabilities(caps),
                    listen_addrs,
                })
            })
            .boxed(),
        MessageType::Disconnect => (any::<u8>(), text())
            .prop_map(|(reason, message)| {
                Message::from(Disconnect {
                    reason: DisconnectReason::from_code(reason),
                    message,
                })
            })
            .boxed(),
        MessageType::Ping => id()
            .prop_map(|request_id| Message::from(Ping { request_id }))
            .boxed(),
        MessageType::Pong => id()
            .prop_map(|request_id| Message::from(Pong { request_id }))
            .boxed(),
        MessageType::Publish => (id(), id(), id(), text(), payload())
            .prop_map(|(message_id, epoch, sequence, topic, payload)| {
                Message::from(Publish {
                    message_id,
                    epoch,
                    sequence,
                    topic: topic.into(),
                    payload,
                })
            })
            .boxed(),
        MessageType::PublishBatch => (id(), id(), text(), vec((id(), payload()), 0..5))
            .prop_map(|(epoch, first_sequence, topic, entries)| {
                let entries = (entries.into_iter())
                    .map(|(message_id, payload)| Published {
                        message_id,
                        payload,
                    })
                    .collect();
                Message::from(PublishBatch {
                    epoch,
                    first_sequence,
                    topic: topic.into(),
                    entries,
                })
            })
            .boxed(),
        MessageType::Subscribe => (id(), text())
            .prop_map(|(request_id, pattern)| {
                Message::from(Subscribe {
                    request_id,
                    pattern,
                })
            })
            .boxed(),
        MessageType::Unsubscribe => (id(), text())
            .prop_map(|(request_id, pattern)| {
                Message::from(Unsubscribe {
                    request_id,
                    pattern,
                })
            })
            .boxed(),
        MessageType::Call => (id(), text(), any::<u32>(), any::<bool>(), payload())
            .prop_map(|(request_id, procedure, timeout_ms, idempotent, payload)| {
                Message::from(Call {
                    request_id,
                    procedure,
                    timeout_ms,
                    idempotent,
                    payload,
                })
            })
            .boxed(),
        MessageType::Reply => (id(), payload())
            .prop_map(|(request_id, payload)| {
                Message::from(Reply {
                    request_id,
                    payload,
                })
            })
            .boxed(),
        MessageType::ErrorReply => (id(), any::<u16>(), text())
            .prop_map(|(request_id, code, message)| {
                Message::from(ErrorReply {
                    request_id,
                    code: ErrorCode::from_code(code),
                    message,
                })
            })
            .boxed(),
        MessageType::Cancel => id()
            .prop_map(|request_id| Message::from(Cancel { request_id }))
            .boxed(),
        MessageType::PayloadSize => (id(), id())
            .prop_map(|(request_id, total_len)| {
                Message::from(PayloadSize {
                    request_id,
                    total_len,
                })
            })
            .boxed(),
        MessageType::PayloadChunk => (id(), payload())
            .prop_map(|(request_id, data)| Message::from(PayloadChunk { request_id, data }))
            .boxed(),
        MessageType::FindNode => (id(), node_id())
            .prop_map(|(request_id, target)| Message::from(FindNode { request_id, target }))
            .boxed(),
        MessageType::FindNodeReply => (id(), vec(contact(), 0..6))
            .prop_map(|(request_id, contacts)| {
                Message::from(FindNodeReply {
                    request_id,
                    contacts,
                })
            })
            .boxed(),
        MessageType::FindValue => (id(), any::<[u8; 32]>())
            .prop_map(|(request_id, key)| {
                Message::from(FindValue {
                    request_id,
                    key: RecordKey::from_bytes(key),
                })
            })
            .boxed(),
        MessageType::FindValueReply => (
            id(),
            vec(record(), 0..3),
            any::<u16>(),
            vec(contact(), 0..4),
        )
            .prop_map(|(request_id, records, omitted, closer)| {
                Message::from(FindValueReply {
                    request_id,
                    records,
                    omitted,
                    closer,
                })
            })
            .boxed(),
        MessageType::Store => (id(), record())
            .prop_map(|(request_id, record)| {
                Message::from(Store {
                    request_id,
                    record: Box::new(record),
                })
            })
            .boxed(),
        MessageType::StoreAck => (id(), any::<u8>())
            .prop_map(|(request_id, status)| {
                Message::from(StoreAck {
                    request_id,
                    status: StoreStatus::from_code(status),
                })
            })
            .boxed(),
        MessageType::StoreBatch => (id(), vec(record(), 0..4))
            .prop_map(|(request_id, records)| {
                Message::from(StoreBatch {
                    request_id,
                    records,
                })
            })
            .boxed(),
        MessageType::StoreBatchAck => (id(), vec(any::<u8>(), 0..10))
            .prop_map(|(request_id, statuses)| {
                Message::from(StoreBatchAck {
                    request_id,
                    statuses: statuses.into_iter().map(StoreStatus::from_code).collect(),
                })
            })
            .boxed(),
        MessageType::RelayReserve => id()
            .prop_map(|request_id| Message::from(RelayReserve { request_id }))
            .boxed(),
        MessageType::RelayReserveStatus => (id(), any::<u8>(), any::<u32>())
            .prop_map(|(request_id, status, ttl_secs)| {
                Message::from(RelayReserveStatus {
                    request_id,
                    status: RelayStatus::from_code(status),
                    ttl_secs,
                })
            })
            .boxed(),
        MessageType::RelayRelease => id()
            .prop_map(|request_id| Message::from(RelayRelease { request_id }))
            .boxed(),
        MessageType::CircuitOpen => (id(), node_id())
            .prop_map(|(request_id, target)| Message::from(CircuitOpen { request_id, target }))
            .boxed(),
        MessageType::CircuitStatus => (id(), any::<u8>(), any::<u64>())
            .prop_map(|(request_id, status, circuit)| {
                Message::from(CircuitStatus {
                    request_id,
                    status: RelayStatus::from_code(status),
                    circuit,
                })
            })
            .boxed(),
        MessageType::CircuitIncoming => (any::<u64>(), node_id())
            .prop_map(|(circuit, source)| Message::from(CircuitIncoming { circuit, source }))
            .boxed(),
        MessageType::CircuitPeer => (any::<u64>(), addr())
            .prop_map(|(circuit, peer)| Message::from(CircuitPeer { circuit, peer }))
            .boxed(),
        MessageType::DialBack => (id(), any::<[u8; 12]>(), any::<u8>(), vec(addr(), 0..4))
            .prop_map(|(request_id, nonce, source, addrs)| {
                Message::from(DialBack {
                    request_id,
                    nonce,
                    source: ProbeSource::from_code(source),
                    addrs,
                })
            })
            .boxed(),
        MessageType::DialBackResult => (id(), any::<u8>(), vec(addr(), 0..4))
            .prop_map(|(request_id, status, helpers)| {
                Message::from(DialBackResult {
                    request_id,
                    status: DialBackStatus::from_code(status),
                    helpers,
                })
            })
            .boxed(),
        MessageType::DialBackProbe => (any::<[u8; 12]>(), vec(addr(), 0..4))
            .prop_map(|(nonce, addrs)| Message::from(DialBackProbe { nonce, addrs }))
            .boxed(),
        MessageType::CapabilitiesUpdate => any::<u64>()
            .prop_map(|bits| {
                Message::from(CapabilitiesUpdate {
                    capabilities: Capabilities(bits),
                })
            })
            .boxed(),
        MessageType::PunchOffer => (
            id(),
            any::<[u8; 8]>(),
            any::<[u8; 32]>(),
            nat_info(),
            candidates(),
        )
            .prop_map(|(request_id, tag, key, nat, candidates)| {
                Message::from(PunchOffer {
                    request_id,
                    tag,
                    key,
                    nat,
                    candidates,
                })
            })
            .boxed(),
        MessageType::PunchAnswer => (id(), nat_info(), candidates())
            .prop_map(|(request_id, nat, candidates)| {
                Message::from(PunchAnswer {
                    request_id,
                    nat,
                    candidates,
                })
            })
            .boxed(),
        MessageType::PunchSync => (id(), any::<u32>())
            .prop_map(|(request_id, start_in_ms)| {
                Message::from(PunchSync {
                    request_id,
                    start_in_ms,
                })
            })
            .boxed(),
        MessageType::PunchResult => (id(), any::<u8>(), any::<u8>(), vec(addr(), 0..2))
            .prop_map(|(request_id, outcome, attempts, remote)| {
                Message::from(PunchResult {
                    request_id,
                    outcome: PunchOutcome::from_code(outcome),
                    attempts,
                    remote,
                })
            })
            .boxed(),
    }
}

/// A NAT description with arbitrary (also unknown) codes.
fn nat_info() -> impl Strategy<Value = NatInfo> {
    any::<(u8, u8, u8, u16)>().prop_map(|(m, f, a, port_step)| NatInfo {
        mapping: MappingCode::from_code(m),
        filtering: FilteringCode::from_code(f),
        allocation: AllocationCode::from_code(a),
        port_step,
    })
}

/// Up to 16 candidates (the default address bound) of arbitrary type.
fn candidates() -> impl Strategy<Value = Vec<WireCandidate>> {
    let candidate = (any::<u8>(), addr()).prop_map(|(kind, addr)| WireCandidate {
        kind: CandidateType::from_code(kind),
        addr,
    });
    vec(candidate, 0..=16)
}

/// Every message type, with arbitrary field values.
fn message() -> impl Strategy<Value = Message> {
    proptest::sample::select(MessageType::ALL).prop_flat_map(message_of)
}

fn encode(message: &Message) -> Vec<u8> {
    message.to_vec(&Limits::default()).unwrap()
}

/// A header of a known type and a plausible length, then arbitrary bytes:
/// gets past the header checks into the body decoders.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(MessageType::ALL),
        vec(any::<u8>(), 0..400),
    )
        .prop_map(|(ty, body)| {
            let mut frame = vec![VERSION, ty.code(), 0, 0];
            frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
            frame.extend(body);
            frame
        })
}

/// Limits small enough that generated messages often break one.
fn tight_limits() -> impl Strategy<Value = Limits> {
    (0u32..700, 0usize..60, 0usize..5, 0usize..5, 0usize..4).prop_map(
        |(max_frame_len, max_string_len, max_list_len, max_contacts, max_addrs)| Limits {
            max_frame_len,
            max_string_len,
            max_list_len,
            max_contacts,
            max_addrs,
        },
    )
}

/// Limits nothing generated here reaches.
const ROOMY: Limits = Limits {
    max_frame_len: u32::MAX,
    max_string_len: usize::MAX,
    max_list_len: usize::MAX,
    max_contacts: usize::MAX,
    max_addrs: usize::MAX,
};

fn check_total(bytes: &[u8]) {
    let result = decode(bytes, &Limits::default());
    let shared = Bytes::copy_from_slice(bytes);
    assert_eq!(decode_shared(&shared, &Limits::default()), result);
    match result {
        Ok(Decoded::Complete(message, used)) => {
            assert!(used <= bytes.len());
            // Whatever decodes re-encodes to the same frame.
            assert_eq!(encode(&message), &bytes[..used]);
        }
        Ok(Decoded::NeedMore(n)) => assert!(n > 0),
        Err(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn each_type_generates_its_own_messages(ty in proptest::sample::select(MessageType::ALL), seed in any::<u64>()) {
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &[seed.to_le_bytes(); 4].concat(),
            ),
        );
        let message = message_of(ty).new_tree(&mut runner).unwrap().current();
        prop_assert_eq!(message.message_type(), ty);
    }

    #[test]
    fn messages_round_trip(message in message()) {
        let bytes = encode(&message);
        prop_assert_eq!(message.encoded_len(&Limits::default()).unwrap(), bytes.len());
        let expected = Decoded::Complete(message, bytes.len());
        prop_assert_eq!(decode(&bytes, &Limits::default()).unwrap(), expected.clone());
        let shared = Bytes::from(bytes);
        prop_assert_eq!(decode_shared(&shared, &Limits::default()).unwrap(), expected);
    }

    #[test]
    fn the_encoder_refuses_exactly_what_the_decoder_would(message in message(), limits in tight_limits()) {
        let bytes = message.to_vec(&ROOMY).unwrap();
        let encoded = message.to_vec(&limits);
        match decode(&bytes, &limits) {
            Ok(decoded) => {
                prop_assert_eq!(decoded, Decoded::Complete(message, bytes.len()));
                prop_assert_eq!(encoded, Ok(bytes));
            }
            Err(DecodeError::OverLimit(_)) => {
                prop_assert!(matches!(encoded, Err(EncodeError::OverLimit(_))), "{:?}", encoded);
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        check_total(&bytes);
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in framed_garbage()) {
        check_total(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(message in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode(&message);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        check_total(&bytes);
    }

    #[test]
    fn every_strict_prefix_needs_more(message in message()) {
        let bytes = encode(&message);
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut], &Limits::default()) {
                Ok(Decoded::NeedMore(n)) => prop_assert!(n >= 1 && cut + n <= bytes.len()),
                other => prop_assert!(false, "prefix of {} bytes gave {:?}", cut, other),
            }
        }
    }

    #[test]
    fn a_stream_cut_anywhere_reassembles(
        messages in vec(message(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = messages.iter().flat_map(encode).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut reader = FrameReader::new(Limits::default());
        let mut got = Vec::new();
        for pair in cuts.windows(2) {
            reader.push(&stream[pair[0]..pair[1]]);
            while let Some(message) = reader.next_message().unwrap() {
                got.push(message);
            }
        }
        prop_assert_eq!(got, messages);
        prop_assert_eq!(reader.buffered_len(), 0);
    }

    #[test]
    fn a_payload_over_the_frame_limit_streams_in_frames_that_fit(
        len in 0usize..3000,
        frame in 64u32..1024,
        reply in any::<bool>(),
    ) {
        let limits = Limits { max_frame_len: frame, ..Limits::default() };
        let payload = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let message = if reply {
            Message::from(Reply { request_id: 3, payload })
        } else {
            Message::from(Call {
                request_id: 3,
                procedure: "svc.big".into(),
                timeout_ms: 0,
                idempotent: true,
                payload,
            })
        };
        let mut frames = Vec::new();
        match Streamed::split(&message, &limits) {
            None => frames.push(message.clone()),
            Some(mut streamed) => {
                prop_assert!(message.to_vec(&limits).is_err(), "only what does not fit streams");
                frames.push(Message::from(streamed.size.clone()));
                frames.push(streamed.head.clone());
                while let Some(chunk) = streamed.next_chunk(&limits) {
                    frames.push(Message::from(chunk));
                }
            }
        }
        let mut assembler = PayloadAssembler::default();
        let mut got = Vec::new();
        for frame in frames {
            let bytes = frame.to_vec(&limits).expect("every frame fits");
            let decoded = decode(&bytes, &limits).unwrap();
            prop_assert_eq!(decoded, Decoded::Complete(frame.clone(), bytes.len()));
            match assembler.push(frame, len as u64, len as u64).unwrap() {
                Step::Pass(m) | Step::Complete(m) => got.push(m),
                Step::Pending => {}
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(got, vec![message]);
        prop_assert!(!assembler.is_open());
    }
}
