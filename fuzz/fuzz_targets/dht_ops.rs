//! Arbitrary sequences of DHT inputs: requests from strangers (forged,
//! expired and oversized records, our own id), replies to ids real and
//! invented, from the right and the wrong peers, of the right and the wrong
//! kinds, failures, RTT samples, operations and time passing. The machine
//! must never panic, must drain, and must keep its bounds.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use macula::Child;
use macula::dht::{
    Contact, Dht, DhtConfig, DhtOutput, ErrorCode, Failure, Inbound, RejectReason, Request,
    RequestId, Response, StoreStatus,
};
use macula::id::{Identity, NodeId, RecordKey};
use macula::record::SignedRecord;

const UNIX: u64 = 1_800_000_000_000;
const PEERS: usize = 12;

struct Fixtures {
    epoch: Instant,
    peers: Vec<Contact>,
    keys: Vec<RecordKey>,
    /// Valid, forged, expired and foreign-key records.
    records: Vec<SignedRecord>,
}

#[allow(clippy::disallowed_methods)] // The fuzzer needs some instant to add to.
fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let peers = (0..PEERS)
            .map(|i| {
                let id = Identity::from_seed([i as u8 + 1; 32]).node_id();
                Contact::new(id, SocketAddr::from(([10, 0, 0, i as u8], 4433)))
            })
            .collect();
        let keys: Vec<RecordKey> = (0..3).map(|i| RecordKey::from_bytes([i; 32])).collect();
        let mut records = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let signer = Identity::from_seed([i as u8 + 1; 32]);
            let good = SignedRecord::sign(&signer, *key, Bytes::from_static(b"v"), UNIX, 300);
            let mut forged = good.clone();
            forged.value = Bytes::from_static(b"w");
            let expired = SignedRecord::sign(&signer, *key, Bytes::from_static(b"x"), 0, 1);
            records.extend([good, forged, expired]);
        }
        Fixtures {
            epoch: Instant::now(),
            peers,
            keys,
            records,
        }
    })
}

/// Reads the fuzzer's bytes one choice at a time (zeros when exhausted).
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.byte() as usize % from.len()].clone()
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    let config = DhtConfig {
        k: 4,
        alpha: 2,
        max_store_batch: 4,
        inbound_burst: 8,
        ..DhtConfig::default()
    };
    let k = config.k;
    let mut dht = Dht::new(config, Identity::from_seed([0; 32]), 0);
    let me = Contact::new(dht.local_id(), SocketAddr::from(([10, 0, 0, 255], 4433)));
    let mut choices = Choices(data);
    let (mut now, mut unix) = (f.epoch, UNIX);
    let mut sent: Vec<(RequestId, NodeId)> = Vec::new();
    while !choices.0.is_empty() {
        let peer = choices.pick(&f.peers);
        let key = choices.pick(&f.keys);
        let contacts: Vec<Contact> = (0..choices.byte() % 8)
            .map(|_| {
                if choices.byte() % 16 == 0 {
                    me.clone()
                } else {
                    choices.pick(&f.peers)
                }
            })
            .collect();
        let records: Vec<SignedRecord> = (0..choices.byte() % 6)
            .map(|_| choices.pick(&f.records))
            .collect();
        match choices.byte() % 10 {
            0 => {
                let from = if choices.byte() % 8 == 0 {
                    me.clone()
                } else {
                    peer
                };
                let request = match choices.byte() % 4 {
                    0 => Request::Ping,
                    1 => Request::FindNode {
                        target: key.as_node_id(),
                    },
                    2 => Request::FindValue { key },
                    _ => Request::Store { records },
                };
                // What the connection says about the asker: claimed
                // addresses, and the source they may or may not match.
                let source = match choices.byte() % 3 {
                    0 => None,
                    1 => from.addrs.first().copied(),
                    _ => Some(SocketAddr::from(([203, 0, 113, choices.byte()], 4433))),
                };
                let inbound = Inbound {
                    id: from.id,
                    server: choices.byte() % 2 == 0,
                    claimed: from.addrs.iter().copied().collect(),
                    source,
                    proven: (choices.byte() % 2 == 0)
                        .then(|| from.addrs.iter().copied().collect())
                        .unwrap_or_default(),
                };
                dht.handle_request(
                    now,
                    unix,
                    &inbound,
                    RequestId(choices.byte().into()),
                    request,
                );
            }
            1 | 2 => {
                // A reply to a real request (or, sometimes, an invented one).
                let (id, asked) = if sent.is_empty() || choices.byte() % 8 == 0 {
                    (RequestId(choices.byte().into()), peer.id)
                } else {
                    choices.pick(&sent)
                };
                let from = if choices.byte() % 8 == 0 {
                    peer.id
                } else {
                    asked
                };
                let statuses = (0..choices.byte() % 5)
                    .map(|i| match i % 3 {
                        0 => StoreStatus::Stored,
                        1 => StoreStatus::Rejected(RejectReason::Full),
                        _ => StoreStatus::Rejected(RejectReason::BadSignature),
                    })
                    .collect();
                let response = match choices.byte() % 6 {
                    0 => Response::Pong,
                    1 => Response::Nodes { closer: contacts },
                    2 => Response::Value {
                        records,
                        omitted: usize::from(choices.byte()),
                        closer: contacts,
                    },
                    3 => Response::Stored { statuses },
                    4 => Response::Error(ErrorCode::Overloaded),
                    _ => Response::Error(ErrorCode::Refused),
                };
                dht.handle_response(now, unix, &from, id, response);
            }
            3 => {
                if !sent.is_empty() {
                    let (id, _) = choices.pick(&sent);
                    let failure = if choices.byte() % 2 == 0 {
                        Failure::Connection
                    } else {
                        Failure::Refused
                    };
                    dht.handle_failure(now, id, failure);
                }
            }
            4 => {
                let rtt = Duration::from_millis(choices.byte().into());
                if sent.is_empty() || choices.byte() % 2 == 0 {
                    dht.handle_rtt(peer.id, rtt);
                } else {
                    let (id, _) = choices.pick(&sent);
                    dht.handle_sent(now, id, rtt);
                }
            }
            5 => dht.handle_connection_closed(&peer.id),
            6 => {
                dht.find_node(now, key.as_node_id());
            }
            7 => {
                let value = Bytes::from(vec![0; choices.byte() as usize]);
                let _ = dht.store_with_confirmation(now, unix, key, value, Duration::from_secs(5));
            }
            8 => {
                dht.query_with_response(now, unix, key, Duration::from_secs(5));
            }
            _ => {
                let step = Duration::from_millis(u64::from(choices.byte()) * 50);
                now += step;
                unix += step.as_millis() as u64;
                dht.handle_timeout(now, unix);
            }
        }
        while let Some(output) = dht.poll_output() {
            match output {
                DhtOutput::Request {
                    request_id,
                    peer,
                    request,
                } => {
                    assert_ne!(peer.id, me.id, "never asks itself");
                    if let Request::Store { records } = &request {
                        assert!(!records.is_empty());
                    }
                    sent.push((request_id, peer.id));
                }
                DhtOutput::Reply {
                    response: Response::Nodes { closer } | Response::Value { closer, .. },
                    ..
                } => {
                    assert!(closer.len() <= k);
                }
                _ => {}
            }
        }
        if let Some(at) = dht.poll_timeout() {
            assert!(
                at + Duration::from_secs(600) >= now,
                "no deadline far in the past"
            );
        }
        assert!(dht.table().len() <= 256 * k);
        assert!(!dht.table().contains(&me.id));
    }
});
