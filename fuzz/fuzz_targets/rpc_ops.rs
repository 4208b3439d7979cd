//! The RPC machine driven by arbitrary operation sequences — calls, lookup
//! answers, replies, errors with any code, failures, cancels, registrations,
//! incoming calls, handler answers and time — must never panic, must end
//! every call exactly once, and must have none left once every deadline
//! passed.
//!
//! Each input byte picks an operation; the bytes after it are its arguments.

#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use macula::Child;
use macula::id::{NodeId, Realm, RecordKey};
use macula::rpc::{
    CallId, CallOptions, Delivery, DirectoryRequest, Found, HandlerError, InboundId, ProviderFlags,
    RegisterOptions, Rpc, RpcConfig, RpcEvent, RpcOutput,
};
use macula::wire::{Call, ErrorCode, ErrorReply, Reply};

/// Reads argument bytes, zero once the input runs out.
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
}

fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

const PROCEDURES: [&str; 3] = ["svc.a", "svc.b", "not a name"];

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut now = start;
    let mut rpc = Rpc::new(RpcConfig {
        max_in_flight: 8,
        max_handlers: 4,
        max_payload: 64,
        ..RpcConfig::new(Realm::new("io.fuzz").unwrap(), 1)
    });
    let mut completions: BTreeMap<CallId, u32> = BTreeMap::new();
    let mut lookups: Vec<RecordKey> = Vec::new();
    let mut attempts: Vec<(NodeId, u64)> = Vec::new();
    let mut requests: Vec<InboundId> = Vec::new();
    let mut args = Args(data);
    while !args.0.is_empty() {
        let op = args.byte();
        let a = args.byte();
        let b = args.byte();
        match op % 10 {
            0 => {
                let procedure = PROCEDURES[usize::from(a % 3)];
                let payload = Bytes::from(vec![0; usize::from(b % 80)]);
                let timeout = Duration::from_millis(u64::from(a) * 16 + 1);
                let options = CallOptions {
                    at_most_once: b & 1 == 1,
                    attempt_timeout: (b & 2 == 2).then(|| Duration::from_millis(u64::from(b) * 4)),
                };
                if let Ok(call) = rpc.call(now, procedure, payload, timeout, options) {
                    completions.insert(call, 0);
                }
            }
            1 if !lookups.is_empty() => {
                let key = lookups.remove(usize::from(a) % lookups.len());
                let found = (0..4u8)
                    .filter(|i| a >> i & 1 == 1)
                    .map(|i| Found {
                        provider: node(i + 1),
                        value: ProviderFlags {
                            idempotent: b >> i & 1 == 1,
                        }
                        .encode(),
                    })
                    .collect();
                rpc.handle_lookup(now, key, found);
            }
            2 if !attempts.is_empty() => {
                let (provider, request_id) = attempts.remove(usize::from(a) % attempts.len());
                match b % 5 {
                    0 => rpc.handle_reply(
                        now,
                        &provider,
                        Reply {
                            request_id,
                            payload: Bytes::new(),
                        },
                    ),
                    1 => {
                        let code = ErrorCode::from_code(u16::from(a % 12));
                        let error = ErrorReply {
                            request_id,
                            code,
                            message: String::new(),
                        };
                        rpc.handle_error(now, &provider, error);
                    }
                    2 => rpc.handle_failure(now, &provider, request_id, Delivery::NotDelivered),
                    3 => rpc.handle_failure(now, &provider, request_id, Delivery::MaybeDelivered),
                    _ => {
                        // Written: still open, it may be settled later.
                        rpc.handle_sent(now, &provider, request_id);
                        attempts.push((provider, request_id));
                    }
                }
            }
            3 => {
                now += Duration::from_millis(u64::from(a) * 10);
                rpc.handle_timeout(now);
            }
            4 if !completions.is_empty() => {
                let call = *completions
                    .keys()
                    .nth(usize::from(a) % completions.len())
                    .unwrap();
                let _ = rpc.cancel(now, call);
            }
            5 => {
                let options = RegisterOptions {
                    idempotent: b & 1 == 1,
                    max_concurrent: usize::from(b >> 1 & 3),
                };
                let _ = rpc.register(now, PROCEDURES[usize::from(a % 3)], options);
            }
            6 => {
                rpc.unregister(now, PROCEDURES[usize::from(a % 3)]);
            }
            7 => {
                let call = Call {
                    request_id: u64::from(b % 8),
                    procedure: PROCEDURES[usize::from(a % 3)].into(),
                    timeout_ms: u32::from(b) * 8,
                    idempotent: false,
                    payload: Bytes::from(vec![0; usize::from(a % 80)]),
                };
                rpc.handle_call(now, node(a % 4), call);
            }
            8 if !requests.is_empty() => {
                let id = requests.remove(usize::from(a) % requests.len());
                let result = match b % 3 {
                    0 => Ok(Bytes::new()),
                    1 => Ok(Bytes::from(vec![0; 100])),
                    _ => Err(HandlerError::failed("no")),
                };
                let _ = rpc.reply(now, id, result);
            }
            9 => rpc.handle_cancel(now, node(a % 4), u64::from(b % 8)),
            _ => {}
        }
        drain(
            &mut rpc,
            &mut completions,
            &mut lookups,
            &mut attempts,
            &mut requests,
        );
    }
    // Every call has a deadline: once they all passed, none is left.
    let end = now + Duration::from_secs(10);
    while let Some(at) = rpc.poll_timeout().filter(|at| *at <= end) {
        rpc.handle_timeout(at.max(now));
        drain(
            &mut rpc,
            &mut completions,
            &mut lookups,
            &mut attempts,
            &mut requests,
        );
    }
    assert_eq!(rpc.calls_in_flight(), 0);
    assert!(completions.values().all(|&n| n == 1), "{completions:?}");
});

fn drain(
    rpc: &mut Rpc,
    completions: &mut BTreeMap<CallId, u32>,
    lookups: &mut Vec<RecordKey>,
    attempts: &mut Vec<(NodeId, u64)>,
    requests: &mut Vec<InboundId>,
) {
    while let Some(output) = rpc.poll_output() {
        match output {
            RpcOutput::Directory(DirectoryRequest::Lookup { key }) => lookups.push(key),
            RpcOutput::Call {
                provider, message, ..
            } => attempts.push((provider, message.request_id)),
            RpcOutput::Event(RpcEvent::Completed { call, .. }) => {
                *completions.get_mut(&call).expect("a call we made") += 1;
            }
            RpcOutput::Event(RpcEvent::Request { id, .. }) => requests.push(id),
            _ => {}
        }
    }
}
