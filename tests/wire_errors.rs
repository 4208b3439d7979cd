//! Every error path of the wire codec, one case each, with the values the
//! error reports and the reaction it calls for.

use std::net::SocketAddr;

use bytes::Bytes;
use macula::id::{Identity, NodeId, PublicKey, Realm, RecordKey};
use macula::record::SignedRecord;
use macula::wire::*;

fn limits() -> Limits {
    Limits::default()
}

/// A frame of type `ty` around `body`.
fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION, ty, 0, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    decode(bytes, &limits()).unwrap_err()
}

fn call(procedure: String, payload: Bytes) -> Message {
    Message::from(Call {
        request_id: 1,
        procedure,
        timeout_ms: 0,
        idempotent: false,
        payload,
    })
}

fn contact(addrs: usize) -> Contact {
    Contact {
        node_id: NodeId::from_bytes([1; 32]),
        addrs: vec![SocketAddr::from(([10, 0, 0, 1], 4433)); addrs],
    }
}

fn record() -> SignedRecord {
    let realm = Realm::new("io.macula").unwrap();
    let key = RecordKey::new(&realm, macula::id::RecordKind::Rpc, "echo");
    SignedRecord::sign(&Identity::from_seed([1; 32]), key, Bytes::new(), 0, 300)
}

#[test]
fn short_input_needs_the_header_then_the_body() {
    assert_eq!(decode(&[], &limits()), Ok(Decoded::NeedMore(8)));
    assert_eq!(decode(&[1, 3, 0], &limits()), Ok(Decoded::NeedMore(5)));
    let ping = frame(0x03, &[0; 8]);
    assert_eq!(decode(&ping[..10], &limits()), Ok(Decoded::NeedMore(6)));
}

#[test]
fn version_reserved_bits_and_unknown_type() {
    let mut bytes = frame(0x03, &[0; 8]);
    bytes[0] = 2;
    assert_eq!(
        decode_err(&bytes),
        DecodeError::UnsupportedVersion { version: 2 }
    );
    assert_eq!(
        decode_err(&bytes).reaction(),
        Reaction::Disconnect(DisconnectReason::UnsupportedVersion)
    );
    let mut bytes = frame(0x03, &[0; 8]);
    bytes[2] = 1;
    assert_eq!(
        decode_err(&bytes),
        DecodeError::ReservedBitsSet {
            flags: 1,
            reserved: 0
        }
    );
    assert_eq!(
        decode_err(&bytes).reaction(),
        Reaction::Disconnect(DisconnectReason::ProtocolError)
    );
    // Reported from the header alone, with the whole frame's length.
    let unknown = frame(0x05, &[0; 100]);
    let error = decode_err(&unknown[..8]);
    assert_eq!(
        error,
        DecodeError::UnknownType {
            ty: 0x05,
            frame_len: 108
        }
    );
    assert_eq!(error.reaction(), Reaction::SkipFrame { frame_len: 108 });
}

#[test]
fn an_oversized_frame_is_refused_from_its_header() {
    let small = Limits {
        max_frame_len: 100,
        ..limits()
    };
    let header = [1, 0x21, 0, 0, 0, 0, 0, 101];
    assert_eq!(
        decode(&header, &small),
        Err(DecodeError::OverLimit(OverLimit {
            what: "frame body",
            len: 101,
            max: 100
        }))
    );
    let message = Message::from(Reply {
        request_id: 1,
        payload: Bytes::from(vec![0; 100]),
    });
    assert_eq!(
        message.encoded_len(&small),
        Err(EncodeError::OverLimit(OverLimit {
            what: "frame body",
            len: 112,
            max: 100
        }))
    );
}

#[test]
fn truncated_and_trailing_bodies() {
    assert_eq!(
        decode_err(&frame(0x03, &[0; 7])),
        DecodeError::Truncated {
            what: "request_id",
            needed: 8,
            available: 7
        }
    );
    assert_eq!(
        decode_err(&frame(0x03, &[0; 9])),
        DecodeError::TrailingBytes {
            message: "PING",
            count: 1
        }
    );
    // A payload length beyond the body.
    let mut body = vec![0; 8];
    body.extend_from_slice(&[0, 0, 0, 5, 1, 2]);
    assert_eq!(
        decode_err(&frame(0x21, &body)),
        DecodeError::Truncated {
            what: "payload",
            needed: 5,
            available: 2
        }
    );
}

#[test]
fn strings_over_the_limit_or_not_utf8() {
    let long = "p".repeat(1025);
    assert_eq!(
        call(long.clone(), Bytes::new()).to_vec(&limits()),
        Err(EncodeError::OverLimit(OverLimit {
            what: "procedure",
            len: 1025,
            max: 1024
        }))
    );
    let roomy = Limits {
        max_string_len: 2000,
        ..limits()
    };
    let bytes = call(long, Bytes::new()).to_vec(&roomy).unwrap();
    assert_eq!(
        decode_err(&bytes),
        DecodeError::OverLimit(OverLimit {
            what: "procedure",
            len: 1025,
            max: 1024
        })
    );
    let mut bytes = call("echo".into(), Bytes::new()).to_vec(&limits()).unwrap();
    bytes[8 + 8 + 2 + 1] = 0xff;
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadUtf8 {
            what: "procedure",
            valid_up_to: 1
        }
    );
}

#[test]
fn lists_over_their_bounds() {
    let reply = Message::from(FindNodeReply {
        request_id: 1,
        contacts: vec![contact(1); 65],
    });
    assert_eq!(
        reply.to_vec(&limits()),
        Err(EncodeError::OverLimit(OverLimit {
            what: "contacts",
            len: 65,
            max: 64
        }))
    );
    let roomy = Limits {
        max_contacts: 100,
        ..limits()
    };
    assert_eq!(
        decode_err(&reply.to_vec(&roomy).unwrap()),
        DecodeError::OverLimit(OverLimit {
            what: "contacts",
            len: 65,
            max: 64
        })
    );
    let reply = Message::from(FindNodeReply {
        request_id: 1,
        contacts: vec![contact(17)],
    });
    assert_eq!(
        reply.to_vec(&limits()),
        Err(EncodeError::OverLimit(OverLimit {
            what: "addrs",
            len: 17,
            max: 16
        }))
    );
    let acks = Message::from(StoreBatchAck {
        request_id: 1,
        statuses: vec![StoreStatus::Stored; 257],
    });
    assert_eq!(
        acks.to_vec(&limits()),
        Err(EncodeError::OverLimit(OverLimit {
            what: "statuses",
            len: 257,
            max: 256
        }))
    );
}

#[test]
fn a_count_larger_than_the_body_allocates_nothing() {
    // 64 contacts announced (within the limit), 2 bytes of body left.
    let mut body = vec![0; 8];
    body.extend_from_slice(&[0, 64, 0, 0]);
    assert_eq!(
        decode_err(&frame(0x41, &body)),
        DecodeError::Truncated {
            what: "contacts",
            needed: 64 * 34,
            available: 2
        }
    );
}

#[test]
fn bad_address_family() {
    let connect = Message::from(Connect {
        node_id: NodeId::from_bytes([0; 32]),
        realm: Realm::new("io.macula").unwrap(),
        capabilities: Capabilities::NONE,
        listen_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 1))],
    });
    let mut bytes = connect.to_vec(&limits()).unwrap();
    let family = 8 + 32 + 2 + 9 + 8 + 2;
    assert_eq!(bytes[family], 4);
    bytes[family] = 5;
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadAddressFamily {
            what: "listen_addrs",
            family: 5
        }
    );
}

#[test]
fn bad_realm_and_bad_boolean() {
    let mut body = vec![0; 32];
    body.extend_from_slice(&[0, 6]);
    body.extend_from_slice(b"MACULA");
    body.extend_from_slice(&[0; 10]);
    assert!(matches!(
        decode_err(&frame(0x01, &body)),
        DecodeError::BadRealm { what: "realm", .. }
    ));
    let mut bytes = call("echo".into(), Bytes::new()).to_vec(&limits()).unwrap();
    let flag = 8 + 8 + 2 + 4 + 4;
    bytes[flag] = 2;
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadEnumValue {
            what: "idempotent",
            value: 2
        }
    );
}

#[test]
fn an_invalid_publisher_key_is_refused() {
    let not_a_point = (0u8..=255)
        .map(|b| [b; 32])
        .find(|bytes| PublicKey::from_bytes(bytes).is_err())
        .expect("some 32-byte pattern is not a curve point");
    let store = Message::from(Store {
        request_id: 1,
        record: Box::new(record()),
    });
    let mut bytes = store.to_vec(&limits()).unwrap();
    let publisher = 8 + 8 + 32;
    bytes[publisher..publisher + 32].copy_from_slice(&not_a_point);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::InvalidPublicKey { what: "record" }
    );
}

#[test]
fn a_bad_signature_still_decodes() {
    let mut bad = record();
    bad.signature[0] ^= 1;
    let store = Message::from(Store {
        request_id: 1,
        record: Box::new(bad),
    });
    let bytes = store.to_vec(&limits()).unwrap();
    assert_eq!(
        decode(&bytes, &limits()),
        Ok(Decoded::Complete(store, bytes.len()))
    );
}

#[test]
fn encoding_into_a_small_buffer_writes_nothing() {
    let mut buf = [0u8; 10];
    let mut out = &mut buf[..];
    assert_eq!(
        Message::from(Ping { request_id: 1 }).encode(&limits(), &mut out),
        Err(EncodeError::BufferTooSmall {
            needed: 16,
            available: 10
        })
    );
    assert_eq!(buf, [0; 10]);
}

#[test]
fn unknown_codes_and_capabilities_are_kept() {
    let disconnect = Message::from(Disconnect {
        reason: DisconnectReason::from_code(200),
        message: String::new(),
    });
    let bytes = disconnect.to_vec(&limits()).unwrap();
    match decode(&bytes, &limits()) {
        Ok(Decoded::Complete(Message::Disconnect(d), _)) => {
            assert!(matches!(d.reason, DisconnectReason::Unknown(200)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        DisconnectReason::Unknown(2),
        DisconnectReason::ProtocolError
    );
    assert_eq!(ErrorCode::from_code(7), ErrorCode::UnknownProcedure);
    let caps = Capabilities::DHT_SERVER.with(Capabilities(1 << 63));
    assert!(caps.contains(Capabilities::DHT_SERVER));
    assert!(!caps.contains(Capabilities::RELAY));
    assert_eq!(caps.0 >> 63, 1);
}
