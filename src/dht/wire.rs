//! Translation between the DHT's requests and replies and wire frames.
//!
//! The DHT speaks transport-agnostic types ([`crate::dht::Request`],
//! [`crate::dht::Response`]); on a connection they travel as the DHT frames
//! of `docs/PROTOCOL.md` with the request id in every frame. A one-record
//! store goes out as STORE, a larger batch as STORE_BATCH; their acks come
//! back as one status list either way.

use smallvec::SmallVec;

use crate::dht::{self, RejectReason, RequestId};
use crate::wire::{self, Message};

/// A wire contact as the DHT sees it.
pub fn contact_from_wire(contact: wire::Contact) -> dht::Contact {
    dht::Contact {
        id: contact.node_id,
        addrs: SmallVec::from_vec(contact.addrs),
    }
}

/// A DHT contact as it goes on the wire.
pub fn contact_to_wire(contact: &dht::Contact) -> wire::Contact {
    wire::Contact {
        node_id: contact.id,
        addrs: contact.addrs.to_vec(),
    }
}

fn contacts_to_wire(contacts: &[dht::Contact]) -> Vec<wire::Contact> {
    contacts.iter().map(contact_to_wire).collect()
}

fn contacts_from_wire(contacts: Vec<wire::Contact>) -> Vec<dht::Contact> {
    contacts.into_iter().map(contact_from_wire).collect()
}

fn status_to_wire(status: dht::StoreStatus) -> wire::StoreStatus {
    match status {
        dht::StoreStatus::Stored => wire::StoreStatus::Stored,
        dht::StoreStatus::Rejected(RejectReason::BadSignature) => wire::StoreStatus::BadSignature,
        dht::StoreStatus::Rejected(RejectReason::Expired) => wire::StoreStatus::Expired,
        dht::StoreStatus::Rejected(RejectReason::Full) => wire::StoreStatus::Full,
        dht::StoreStatus::Rejected(RejectReason::Stale) => wire::StoreStatus::Stale,
        dht::StoreStatus::Rejected(RejectReason::Refused) => wire::StoreStatus::Refused,
        dht::StoreStatus::Rejected(RejectReason::TtlTooLong) => wire::StoreStatus::TtlTooLong,
        dht::StoreStatus::Rejected(RejectReason::IssuedInFuture) => {
            wire::StoreStatus::IssuedInFuture
        }
        dht::StoreStatus::Rejected(RejectReason::OverQuota) => wire::StoreStatus::OverQuota,
    }
}

fn status_from_wire(status: wire::StoreStatus) -> dht::StoreStatus {
    match status {
        wire::StoreStatus::Stored => dht::StoreStatus::Stored,
        wire::StoreStatus::BadSignature => dht::StoreStatus::Rejected(RejectReason::BadSignature),
        wire::StoreStatus::Expired => dht::StoreStatus::Rejected(RejectReason::Expired),
        wire::StoreStatus::Full => dht::StoreStatus::Rejected(RejectReason::Full),
        wire::StoreStatus::Stale => dht::StoreStatus::Rejected(RejectReason::Stale),
        wire::StoreStatus::TtlTooLong => dht::StoreStatus::Rejected(RejectReason::TtlTooLong),
        wire::StoreStatus::IssuedInFuture => {
            dht::StoreStatus::Rejected(RejectReason::IssuedInFuture)
        }
        wire::StoreStatus::OverQuota => dht::StoreStatus::Rejected(RejectReason::OverQuota),
        // Refused, and codes newer than this implementation.
        _ => dht::StoreStatus::Rejected(RejectReason::Refused),
    }
}

/// The frame carrying a DHT request.
pub fn request_to_wire(request_id: RequestId, request: dht::Request) -> Message {
    let request_id = request_id.0;
    match request {
        dht::Request::Ping => wire::Ping { request_id }.into(),
        dht::Request::FindNode { target } => wire::FindNode { request_id, target }.into(),
        dht::Request::FindValue { key } => wire::FindValue { request_id, key }.into(),
        dht::Request::Store { mut records } if records.len() == 1 => {
            let record = Box::new(records.remove(0));
            wire::Store { request_id, record }.into()
        }
        dht::Request::Store { records } => wire::StoreBatch {
            request_id,
            records,
        }
        .into(),
    }
}

/// The DHT request a frame carries, or `None` when it is not a DHT request.
pub fn request_from_wire(message: Message) -> Option<(RequestId, dht::Request)> {
    let (id, request) = match message {
        Message::Ping(m) => (m.request_id, dht::Request::Ping),
        Message::FindNode(m) => (m.request_id, dht::Request::FindNode { target: m.target }),
        Message::FindValue(m) => (m.request_id, dht::Request::FindValue { key: m.key }),
        Message::Store(m) => (
            m.request_id,
            dht::Request::Store {
                records: vec![*m.record],
            },
        ),
        Message::StoreBatch(m) => (m.request_id, dht::Request::Store { records: m.records }),
        _ => return None,
    };
    Some((RequestId(id), request))
}

/// The frame answering a DHT request. `batch` says whether the request was
/// a STORE_BATCH (its ack is a list even for one record).
pub fn response_to_wire(request_id: RequestId, response: dht::Response, batch: bool) -> Message {
    let request_id = request_id.0;
    match response {
        dht::Response::Pong => wire::Pong { request_id }.into(),
        dht::Response::Nodes { closer } => wire::FindNodeReply {
            request_id,
            contacts: contacts_to_wire(&closer),
        }
        .into(),
        dht::Response::Value {
            records,
            omitted,
            closer,
        } => wire::FindValueReply {
            request_id,
            records,
            omitted: u16::try_from(omitted).unwrap_or(u16::MAX),
            closer: contacts_to_wire(&closer),
        }
        .into(),
        dht::Response::Stored { statuses } if !batch && statuses.len() == 1 => wire::StoreAck {
            request_id,
            status: status_to_wire(statuses[0]),
        }
        .into(),
        dht::Response::Stored { statuses } => wire::StoreBatchAck {
            request_id,
            statuses: statuses.into_iter().map(status_to_wire).collect(),
        }
        .into(),
        dht::Response::Error(code) => {
            let (code, message) = match code {
                dht::ErrorCode::Refused => (wire::ErrorCode::Refused, "refused"),
                dht::ErrorCode::Overloaded => (wire::ErrorCode::Overloaded, "overloaded"),
                dht::ErrorCode::TooLarge => (wire::ErrorCode::TooLarge, "too large"),
            };
            wire::ErrorReply {
                request_id,
                code,
                message: message.into(),
            }
            .into()
        }
    }
}

/// The DHT reply a frame carries, or `None` when it is not one.
pub fn response_from_wire(message: Message) -> Option<(RequestId, dht::Response)> {
    let (id, response) = match message {
        Message::Pong(m) => (m.request_id, dht::Response::Pong),
        Message::FindNodeReply(m) => (
            m.request_id,
            dht::Response::Nodes {
                closer: contacts_from_wire(m.contacts),
            },
        ),
        Message::FindValueReply(m) => (
            m.request_id,
            dht::Response::Value {
                records: m.records,
                omitted: usize::from(m.omitted),
                closer: contacts_from_wire(m.closer),
            },
        ),
        Message::StoreAck(m) => (
            m.request_id,
            dht::Response::Stored {
                statuses: vec![status_from_wire(m.status)],
            },
        ),
        Message::StoreBatchAck(m) => (
            m.request_id,
            dht::Response::Stored {
                statuses: m.statuses.into_iter().map(status_from_wire).collect(),
            },
        ),
        Message::ErrorReply(m) => {
            let code = match m.code {
                wire::ErrorCode::Overloaded => dht::ErrorCode::Overloaded,
                wire::ErrorCode::TooLarge => dht::ErrorCode::TooLarge,
                _ => dht::ErrorCode::Refused,
            };
            (m.request_id, dht::Response::Error(code))
        }
        _ => return None,
    };
    Some((RequestId(id), response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Identity, NodeId, RecordKey};
    use crate::record::SignedRecord;
    use bytes::Bytes;

    fn record(seed: u8) -> SignedRecord {
        let key = RecordKey::from_bytes([seed; 32]);
        SignedRecord::sign(
            &Identity::from_seed([seed; 32]),
            key,
            Bytes::from_static(b"v"),
            1,
            300,
        )
    }

    #[test]
    fn requests_survive_the_trip_through_frames() {
        let requests = [
            dht::Request::Ping,
            dht::Request::FindNode {
                target: NodeId::from_bytes([1; 32]),
            },
            dht::Request::FindValue {
                key: RecordKey::from_bytes([2; 32]),
            },
            dht::Request::Store {
                records: vec![record(3)],
            },
            dht::Request::Store {
                records: vec![record(4), record(5)],
            },
        ];
        for (i, request) in requests.into_iter().enumerate() {
            let id = RequestId(i as u64 + 10);
            let frame = request_to_wire(id, request.clone());
            assert_eq!(request_from_wire(frame), Some((id, request)));
        }
        assert_eq!(request_from_wire(wire::Pong { request_id: 1 }.into()), None);
    }

    #[test]
    fn responses_survive_the_trip_through_frames() {
        let contact = dht::Contact::new(
            NodeId::from_bytes([7; 32]),
            "192.0.2.1:4433".parse().unwrap(),
        );
        let stored = |n: usize| dht::Response::Stored {
            statuses: vec![dht::StoreStatus::Rejected(RejectReason::Stale); n],
        };
        let cases = [
            (dht::Response::Pong, false),
            (
                dht::Response::Nodes {
                    closer: vec![contact.clone()],
                },
                false,
            ),
            (
                dht::Response::Value {
                    records: vec![record(1)],
                    omitted: 3,
                    closer: vec![contact],
                },
                false,
            ),
            (stored(1), false),
            (stored(1), true),
            (stored(3), true),
            (dht::Response::Error(dht::ErrorCode::Overloaded), false),
        ];
        for (response, batch) in cases {
            let frame = response_to_wire(RequestId(9), response.clone(), batch);
            assert_eq!(
                matches!(frame, Message::StoreBatchAck(_)),
                batch,
                "a batch is acked with a list, a single store with one status"
            );
            assert_eq!(response_from_wire(frame), Some((RequestId(9), response)));
        }
    }

    /// The DHT's size arithmetic (`dht::fit`) agrees with the encoder: a
    /// reply cut for a budget encodes to at most that many body bytes, and
    /// to exactly as many as predicted.
    #[test]
    fn replies_cut_by_the_dht_fit_the_frame() {
        let v4 = "192.0.2.1:4433".parse().unwrap();
        let v6 = "[2001:db8::1]:4433".parse().unwrap();
        let closer: Vec<dht::Contact> = (0..20u8)
            .map(|n| dht::Contact {
                id: NodeId::from_bytes([n; 32]),
                addrs: SmallVec::from_vec(vec![v4, v6][..usize::from(n % 3).min(2)].to_vec()),
            })
            .collect();
        let records: Vec<SignedRecord> = (1..=12u8)
            .map(|n| {
                let value = Bytes::from(vec![n; usize::from(n) * 100]);
                let key = RecordKey::from_bytes([1; 32]);
                SignedRecord::sign(&Identity::from_seed([n; 32]), key, value, 1, 300)
            })
            .collect();
        let limits = wire::Limits::default();
        for max in [0, 100, 1_000, 3_000, 7_777, 12_000, 1 << 20] {
            let mut nodes = closer.clone();
            dht::fit::fit_nodes(&mut nodes, max);
            let predicted: usize = 10 + nodes.iter().map(dht::fit::contact_len).sum::<usize>();
            let frame =
                response_to_wire(RequestId(1), dht::Response::Nodes { closer: nodes }, false);
            let body = frame.encoded_len(&limits).unwrap() - wire::HEADER_LEN;
            assert_eq!(body, predicted);
            assert!(body <= max.max(10), "{body} > {max}");

            let mut near = closer.clone();
            let (kept, omitted) = dht::fit::fit_value(records.clone(), &mut near, max);
            assert_eq!(kept.len() + omitted, records.len());
            let predicted = 14
                + near.iter().map(dht::fit::contact_len).sum::<usize>()
                + kept.iter().map(dht::fit::record_len).sum::<usize>();
            let response = dht::Response::Value {
                records: kept,
                omitted,
                closer: near,
            };
            let frame = response_to_wire(RequestId(1), response, false);
            let body = frame.encoded_len(&limits).unwrap() - wire::HEADER_LEN;
            assert_eq!(body, predicted);
            assert!(body <= max.max(14), "{body} > {max}");
        }
    }
}
