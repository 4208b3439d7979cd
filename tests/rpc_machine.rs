//! The RPC machine, path by path, with explicit instants: discovery and its
//! cache, provider choice, failover, every typed error, deadlines,
//! cancellation, and the handler side's refusals, answers and timers.

mod rpc_support;

use std::time::Duration;

use bytes::Bytes;
use macula::Child;
use macula::access::AccessList;
use macula::rpc::{
    ANNOUNCE_RETRY_BASE, AnnounceFailure, CallId, CallOptions, CancelReason, Delivery,
    DirectoryRequest, HandlerError, ProviderChoice, ProviderFlags, RegisterOptions, Rpc, RpcConfig,
    RpcError, RpcEvent, RpcOutput,
};
use macula::topic::Pattern;
use macula::wire::{Call, ErrorCode, ErrorReply, Message, Reply};
use rpc_support::*;

const SECOND: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(5);

/// The CALL outputs among `outputs`, as (provider byte, frame).
fn calls(outputs: &[RpcOutput]) -> Vec<(u8, Call)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RpcOutput::Call {
                provider, message, ..
            } => Some((provider.as_bytes()[0], message.clone())),
            _ => None,
        })
        .collect()
}

/// The one completion among `outputs`.
fn completed(outputs: &[RpcOutput]) -> (CallId, Result<Bytes, RpcError>) {
    let mut done = outputs.iter().filter_map(|o| match o {
        RpcOutput::Event(RpcEvent::Completed { call, result }) => Some((*call, result.clone())),
        _ => None,
    });
    let first = done.next().expect("a completion");
    assert!(done.next().is_none(), "one completion only");
    first
}

fn cancels(outputs: &[RpcOutput]) -> Vec<(u8, u64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RpcOutput::Cancel { provider, message } => {
                Some((provider.as_bytes()[0], message.request_id))
            }
            _ => None,
        })
        .collect()
}

/// Starts a call of "svc.echo" and answers its lookup with `providers`;
/// returns the call and the outputs after the lookup.
fn started(
    rpc: &mut Rpc,
    now: std::time::Instant,
    providers: Vec<macula::rpc::Found>,
    options: CallOptions,
) -> (CallId, Vec<RpcOutput>) {
    let call = rpc
        .call(now, "svc.echo", bytes("hi"), TIMEOUT, options)
        .unwrap();
    assert_eq!(
        drain(rpc),
        [RpcOutput::Directory(DirectoryRequest::Lookup {
            key: key("svc.echo")
        })]
    );
    rpc.handle_lookup(now, key("svc.echo"), providers);
    let out = drain(rpc);
    sent(rpc, now, &out);
    (call, out)
}

/// Tells the machine that the Node wrote every CALL among `outputs`.
fn sent(rpc: &mut Rpc, now: std::time::Instant, outputs: &[RpcOutput]) {
    for (provider, call) in calls(outputs) {
        rpc.handle_sent(now, &node(provider), call.request_id);
    }
}

/// Calls "svc.echo" with no payload and default options.
fn echo(rpc: &mut Rpc, now: std::time::Instant) -> CallId {
    rpc.call(
        now,
        "svc.echo",
        Bytes::new(),
        TIMEOUT,
        CallOptions::default(),
    )
    .unwrap()
}

/// Starts a call whose lookup finds provider 1 only (not idempotent).
fn started_with_one(rpc: &mut Rpc, now: std::time::Instant) -> (CallId, Vec<RpcOutput>) {
    started(rpc, now, vec![provider(1, false)], CallOptions::default())
}

#[test]
fn a_call_finds_a_provider_and_completes_with_its_reply() {
    let now = t0();
    let mut rpc = rpc();
    let (call, out) = started_with_one(&mut rpc, now);
    let sent = calls(&out);
    assert_eq!(sent.len(), 1);
    let (to, frame) = &sent[0];
    assert_eq!(*to, 1);
    assert_eq!(frame.procedure, "svc.echo");
    assert_eq!(frame.timeout_ms, 5000);
    assert!(!frame.idempotent);
    assert_eq!(rpc.calls_in_flight(), 1);
    assert_eq!(rpc.poll_timeout(), Some(now + TIMEOUT));

    // A reply from someone else, or for another request, changes nothing.
    let reply = Reply {
        request_id: frame.request_id,
        payload: bytes("ok"),
    };
    rpc.handle_reply(now, &node(9), reply.clone());
    rpc.handle_reply(
        now,
        &node(1),
        Reply {
            request_id: 99,
            ..reply.clone()
        },
    );
    assert!(drain(&mut rpc).is_empty());

    rpc.handle_reply(now + SECOND, &node(1), reply.clone());
    assert_eq!(completed(&drain(&mut rpc)), (call, Ok(bytes("ok"))));
    assert_eq!(rpc.calls_in_flight(), 0);
    assert_eq!(rpc.poll_timeout(), None);
    rpc.handle_reply(now + SECOND, &node(1), reply);
    assert!(drain(&mut rpc).is_empty(), "a late duplicate is ignored");
}

#[test]
fn providers_are_cached_for_the_ttl() {
    let now = t0();
    let mut rpc = rpc();
    started_with_one(&mut rpc, now);
    echo(&mut rpc, now + SECOND);
    let out = drain(&mut rpc);
    assert_eq!(calls(&out).len(), 1, "served from the cache, no lookup");
    let later = now + Duration::from_secs(31);
    rpc.handle_timeout(later);
    drain(&mut rpc);
    rpc.call(
        later,
        "svc.echo",
        Bytes::new(),
        TIMEOUT,
        CallOptions::default(),
    )
    .unwrap();
    let out = drain(&mut rpc);
    assert_eq!(
        out[0],
        RpcOutput::Directory(DirectoryRequest::Lookup {
            key: key("svc.echo")
        }),
        "the TTL is over: looked up again"
    );
    assert_eq!(
        calls(&out[1..]).len(),
        1,
        "and the provider known is called meanwhile"
    );

    // Two TTLs after the last answer that found it (the new lookup timed
    // out), the provider is not used.
    let gone = now + Duration::from_secs(61);
    rpc.handle_timeout(gone);
    drain(&mut rpc);
    rpc.call(
        gone,
        "svc.echo",
        Bytes::new(),
        TIMEOUT,
        CallOptions::default(),
    )
    .unwrap();
    assert_eq!(
        drain(&mut rpc),
        [RpcOutput::Directory(DirectoryRequest::Lookup {
            key: key("svc.echo")
        })],
        "nothing known to use: the call waits for a lookup"
    );
}

#[test]
fn no_provider_found() {
    let now = t0();
    let mut rpc = rpc();
    let (call, out) = started(&mut rpc, now, vec![], CallOptions::default());
    assert_eq!(
        completed(&out),
        (
            call,
            Err(RpcError::NoProvider {
                procedure: "svc.echo".into(),
                tried: 0
            })
        )
    );
}

#[test]
fn a_lookup_that_never_answers_is_tried_again_until_the_deadline() {
    let now = t0();
    let mut rpc = Rpc::new(RpcConfig {
        lookup_timeout: 2 * SECOND,
        ..RpcConfig::new(realm(), 7)
    });
    let call = echo(&mut rpc, now);
    drain(&mut rpc);
    assert_eq!(rpc.poll_timeout(), Some(now + 2 * SECOND));
    rpc.handle_timeout(now + 2 * SECOND);
    assert_eq!(
        drain(&mut rpc),
        [RpcOutput::Directory(DirectoryRequest::Lookup {
            key: key("svc.echo")
        })]
    );
    rpc.handle_timeout(now + TIMEOUT);
    let out = drain(&mut rpc);
    assert!(
        cancels(&out).is_empty(),
        "nothing was sent, nothing to cancel"
    );
    assert!(matches!(completed(&out), (c, Err(RpcError::Timeout { .. })) if c == call));
    assert_eq!(rpc.calls_in_flight(), 0);
}

#[test]
fn a_call_times_out_at_its_deadline_and_cancels_the_attempt() {
    let now = t0();
    let mut rpc = rpc();
    let (call, out) = started_with_one(&mut rpc, now);
    let request_id = calls(&out)[0].1.request_id;
    rpc.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
    assert!(drain(&mut rpc).is_empty(), "early timeout is a no-op");
    rpc.handle_timeout(now + TIMEOUT);
    let out = drain(&mut rpc);
    assert_eq!(cancels(&out), [(1, request_id)]);
    assert_eq!(
        completed(&out),
        (
            call,
            Err(RpcError::Timeout {
                procedure: "svc.echo".into(),
                after: TIMEOUT
            })
        )
    );
}

#[test]
fn undelivered_requests_fail_over_and_the_failed_provider_is_forgotten() {
    let now = t0();
    let mut rpc = rpc();
    let providers = vec![provider(1, false), provider(2, false)];
    let (call, out) = started(&mut rpc, now, providers, CallOptions::default());
    let (first, frame) = calls(&out)[0].clone();
    rpc.handle_failure(now, &node(first), frame.request_id, Delivery::NotDelivered);
    let out = drain(&mut rpc);
    let (second, frame2) = calls(&out)[0].clone();
    assert_ne!(first, second);
    assert_ne!(frame.request_id, frame2.request_id);
    assert!(frame2.timeout_ms <= 5000);
    rpc.handle_failure(
        now,
        &node(second),
        frame2.request_id,
        Delivery::NotDelivered,
    );
    assert_eq!(
        completed(&drain(&mut rpc)),
        (
            call,
            Err(RpcError::NoProvider {
                procedure: "svc.echo".into(),
                tried: 2
            })
        )
    );
    // Both are gone from the cache: the next call looks the procedure up
    // again (its providers may be reachable another way by now) rather
    // than hear of no provider until the entry expires.
    let _again = echo(&mut rpc, now);
    assert!(
        matches!(
            &drain(&mut rpc)[..],
            [RpcOutput::Directory(DirectoryRequest::Lookup { .. })]
        ),
        "a new lookup"
    );
}

#[test]
fn a_maybe_delivered_request_fails_over_only_when_idempotent() {
    let now = t0();
    for (idempotent, at_most_once, fails_over) in [
        (false, false, false),
        (true, false, true),
        (true, true, false),
    ] {
        let mut rpc = rpc();
        let options = CallOptions {
            at_most_once,
            ..CallOptions::default()
        };
        let providers = vec![provider(1, idempotent), provider(2, idempotent)];
        let (call, out) = started(&mut rpc, now, providers, options);
        let (first, frame) = calls(&out)[0].clone();
        assert_eq!(frame.idempotent, idempotent && !at_most_once);
        rpc.handle_failure(
            now,
            &node(first),
            frame.request_id,
            Delivery::MaybeDelivered,
        );
        let out = drain(&mut rpc);
        if fails_over {
            assert_eq!(calls(&out).len(), 1);
        } else {
            assert!(calls(&out).is_empty());
            assert_eq!(
                completed(&out),
                (
                    call,
                    Err(RpcError::Lost {
                        provider: node(first)
                    })
                )
            );
        }
    }
}

fn error_reply(request_id: u64, code: ErrorCode, message: &str) -> ErrorReply {
    ErrorReply {
        request_id,
        code,
        message: message.into(),
    }
}

#[test]
fn remote_errors_are_typed_and_refusals_before_running_fail_over() {
    let now = t0();
    // Overloaded and unknown procedure: the handler did not run; next.
    let mut machine = rpc();
    let providers = vec![provider(1, false), provider(2, false)];
    let (call, out) = started(&mut machine, now, providers, CallOptions::default());
    let (first, frame) = calls(&out)[0].clone();
    machine.handle_error(
        now,
        &node(first),
        error_reply(frame.request_id, ErrorCode::UnknownProcedure, ""),
    );
    let (second, frame) = calls(&drain(&mut machine))[0].clone();
    machine.handle_error(
        now,
        &node(second),
        error_reply(frame.request_id, ErrorCode::Overloaded, "busy"),
    );
    assert_eq!(
        completed(&drain(&mut machine)),
        (
            call,
            Err(RpcError::Overloaded {
                provider: Some(node(second)),
                bound: 0
            })
        )
    );

    // Final answers.
    for (code, expected) in [
        (
            ErrorCode::Refused,
            RpcError::Refused {
                provider: node(1),
                message: "m".into(),
            },
        ),
        (
            ErrorCode::Unauthorized,
            RpcError::Unauthorized {
                provider: node(1),
                message: "m".into(),
            },
        ),
        (
            ErrorCode::RemoteError,
            RpcError::Remote {
                provider: node(1),
                code: ErrorCode::RemoteError,
                message: "m".into(),
            },
        ),
        (
            ErrorCode::TooLarge,
            RpcError::Remote {
                provider: node(1),
                code: ErrorCode::TooLarge,
                message: "m".into(),
            },
        ),
        // The provider's copy of the deadline passed first.
        (
            ErrorCode::Timeout,
            RpcError::Timeout {
                procedure: "svc.echo".into(),
                after: TIMEOUT,
            },
        ),
    ] {
        let mut machine = rpc();
        let (call, out) = started(
            &mut machine,
            now,
            vec![provider(1, true), provider(2, true)],
            CallOptions::default(),
        );
        let frame = calls(&out)[0].1.clone();
        machine.handle_error(now, &node(1), error_reply(frame.request_id, code, "m"));
        let out = drain(&mut machine);
        assert!(calls(&out).is_empty(), "{code:?} is final");
        assert_eq!(completed(&out), (call, Err(expected)));
        assert!(cancels(&out).is_empty(), "answered: nothing to cancel");
    }
}

#[test]
fn cancel_sends_cancel_and_ends_the_call() {
    let now = t0();
    let mut rpc = rpc();
    let (call, out) = started_with_one(&mut rpc, now);
    let request_id = calls(&out)[0].1.request_id;
    rpc.cancel(now, call).unwrap();
    let out = drain(&mut rpc);
    assert_eq!(cancels(&out), [(1, request_id)]);
    assert_eq!(completed(&out), (call, Err(RpcError::Cancelled)));
    assert_eq!(rpc.cancel(now, call), Err(RpcError::UnknownCall(call.0)));
    assert_eq!(rpc.poll_timeout(), None, "no deadline left behind");
}

#[test]
fn commands_refused_at_once() {
    let now = t0();
    let mut rpc = Rpc::new(RpcConfig {
        max_payload: 4,
        max_in_flight: 1,
        ..RpcConfig::new(realm(), 7)
    });
    let opts = CallOptions::default();
    assert_eq!(
        rpc.call(now, "svc.echo", bytes("12345"), TIMEOUT, opts),
        Err(RpcError::TooLarge { size: 5, max: 4 })
    );
    assert!(matches!(
        rpc.call(now, "bad name", Bytes::new(), TIMEOUT, opts),
        Err(RpcError::BadName(_))
    ));
    rpc.call(now, "svc.echo", bytes("1234"), TIMEOUT, opts)
        .unwrap();
    assert_eq!(
        rpc.call(now, "svc.echo", Bytes::new(), TIMEOUT, opts),
        Err(RpcError::Overloaded {
            provider: None,
            bound: 1
        })
    );
    assert!(matches!(
        rpc.register(now, "a..b", RegisterOptions::default()),
        Err(RpcError::BadName(_))
    ));
}

#[test]
fn round_robin_takes_providers_in_turn_and_random_follows_the_seed() {
    let now = t0();
    // The providers `calls` calls with `config` go to.
    let picks = |config: RpcConfig, calls_made: usize| {
        let mut rpc = Rpc::new(config);
        let providers = vec![provider(1, false), provider(2, false), provider(3, false)];
        let (_, out) = started(&mut rpc, now, providers, CallOptions::default());
        let mut picked = vec![calls(&out)[0].0];
        for _ in 1..calls_made {
            echo(&mut rpc, now);
            picked.push(calls(&drain(&mut rpc))[0].0);
        }
        picked
    };
    let round_robin = RpcConfig {
        choice: ProviderChoice::RoundRobin,
        ..RpcConfig::new(realm(), 7)
    };
    assert_eq!(picks(round_robin, 6), [1, 2, 3, 1, 2, 3]);
    let random = |seed| picks(RpcConfig::new(realm(), seed), 16);
    assert_eq!(random(1), random(1));
    assert_ne!(random(1), random(2));
    assert!([1, 2, 3].iter().all(|p| random(1).contains(p)));
}

#[test]
fn register_announces_until_unregistered() {
    let now = t0();
    let mut rpc = rpc();
    let announce = |idempotent| {
        RpcOutput::Directory(DirectoryRequest::Announce {
            key: key("svc.echo"),
            value: ProviderFlags { idempotent }.encode(),
        })
    };
    let idempotent = RegisterOptions {
        idempotent: true,
        ..RegisterOptions::default()
    };
    rpc.register(now, "svc.echo", idempotent).unwrap();
    assert_eq!(drain(&mut rpc), [announce(true)]);
    // The DHT republishes the record; the machine announces it once.
    assert_eq!(rpc.poll_timeout(), None);
    rpc.handle_timeout(now + Duration::from_secs(240));
    assert_eq!(drain(&mut rpc), []);
    // One registration per procedure: a second is refused and changes
    // nothing; unregistered first, it takes the new options.
    assert_eq!(
        rpc.register(now, "svc.echo", RegisterOptions::default()),
        Err(RpcError::AlreadyRegistered("svc.echo".into()))
    );
    assert_eq!(drain(&mut rpc), []);
    assert!(rpc.unregister(now, "svc.echo"));
    drain(&mut rpc);
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    assert_eq!(drain(&mut rpc), [announce(false)]);
    assert!(rpc.unregister(now, "svc.echo"));
    assert_eq!(
        drain(&mut rpc),
        [RpcOutput::Directory(DirectoryRequest::Withdraw {
            key: key("svc.echo")
        })]
    );
    assert!(!rpc.unregister(now, "svc.echo"));
    assert_eq!(rpc.poll_timeout(), None);
}

fn call_frame(request_id: u64, procedure: &str, payload: &'static str, timeout_ms: u32) -> Call {
    Call {
        request_id,
        procedure: procedure.into(),
        timeout_ms,
        idempotent: false,
        payload: bytes(payload),
    }
}

/// The one answer among `outputs`, as (caller byte, frame).
fn answer(outputs: &[RpcOutput]) -> (u8, Message) {
    match outputs {
        [RpcOutput::Answer { caller, message }, ..] => (caller.as_bytes()[0], message.clone()),
        other => panic!("no answer first: {other:?}"),
    }
}

fn error_code(outputs: &[RpcOutput]) -> ErrorCode {
    match answer(outputs).1 {
        Message::ErrorReply(e) => e.code,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn the_handler_side_hands_calls_over_and_sends_answers() {
    let now = t0();
    let mut rpc = rpc();
    rpc.handle_call(now, node(5), call_frame(1, "svc.echo", "x", 0));
    assert_eq!(error_code(&drain(&mut rpc)), ErrorCode::UnknownProcedure);

    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    drain(&mut rpc);
    rpc.handle_call(now, node(5), call_frame(1, "svc.echo", "x", 0));
    let out = drain(&mut rpc);
    let [
        RpcOutput::Event(RpcEvent::Request {
            id,
            caller,
            procedure,
            payload,
        }),
    ] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(
        (caller, procedure.as_str(), payload),
        (&node(5), "svc.echo", &bytes("x"))
    );
    assert_eq!(rpc.calls_handled(), 1);
    rpc.handle_call(now, node(5), call_frame(1, "svc.echo", "again", 0));
    assert!(
        drain(&mut rpc).is_empty(),
        "a reused open request id is ignored"
    );
    rpc.reply(now, *id, Ok(bytes("y"))).unwrap();
    assert_eq!(
        answer(&drain(&mut rpc)),
        (
            5,
            Message::Reply(Reply {
                request_id: 1,
                payload: bytes("y")
            })
        )
    );
    assert_eq!(
        rpc.reply(now, *id, Ok(Bytes::new())),
        Err(RpcError::UnknownCall(id.0))
    );

    rpc.handle_call(now, node(5), call_frame(2, "svc.echo", "x", 0));
    let RpcOutput::Event(RpcEvent::Request { id, .. }) = drain(&mut rpc)[0].clone() else {
        panic!()
    };
    rpc.reply(now, id, Err(HandlerError::failed("boom")))
        .unwrap();
    assert_eq!(
        answer(&drain(&mut rpc)).1,
        Message::ErrorReply(ErrorReply {
            request_id: 2,
            code: ErrorCode::RemoteError,
            message: "boom".into()
        })
    );
}

#[test]
fn the_handler_side_refuses_unauthorized_oversized_and_excess_calls() {
    let now = t0();
    let mut rpc = Rpc::new(RpcConfig {
        max_payload: 4,
        max_handlers: 1,
        ..RpcConfig::new(realm(), 7)
    });
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    rpc.set_authorizer(|caller: &macula::id::NodeId, procedure: &str| {
        *caller != node(6) && procedure == "svc.echo"
    });
    drain(&mut rpc);
    rpc.handle_call(now, node(6), call_frame(1, "svc.echo", "x", 0));
    assert_eq!(error_code(&drain(&mut rpc)), ErrorCode::Unauthorized);
    rpc.handle_call(now, node(5), call_frame(1, "svc.echo", "12345", 0));
    assert_eq!(error_code(&drain(&mut rpc)), ErrorCode::TooLarge);
    rpc.handle_call(now, node(5), call_frame(1, "svc.echo", "1234", 0));
    let RpcOutput::Event(RpcEvent::Request { id, .. }) = drain(&mut rpc)[0].clone() else {
        panic!()
    };
    rpc.handle_call(now, node(5), call_frame(2, "svc.echo", "1", 0));
    assert_eq!(error_code(&drain(&mut rpc)), ErrorCode::Overloaded);
    assert_eq!(
        rpc.reply(now, id, Ok(bytes("12345"))),
        Err(RpcError::TooLarge { size: 5, max: 4 })
    );
    assert_eq!(
        error_code(&drain(&mut rpc)),
        ErrorCode::TooLarge,
        "the caller is told"
    );
    let stats = rpc.stats();
    assert_eq!((stats.refused, stats.handled), (3, 1));
    let refusals = stats.refusals;
    assert_eq!(
        (
            refusals.unauthorized,
            refusals.too_large,
            refusals.overloaded
        ),
        (1, 1, 1)
    );
    assert_eq!(rpc.calls_handled(), 0);
}

#[test]
fn the_callers_access_list_of_the_config_decides_who_calls_what() {
    let now = t0();
    let callers = AccessList::open()
        .allow(Pattern::new("admin.#").unwrap(), [node(1)])
        .check(|caller: &macula::id::NodeId, _: &str| *caller != node(9));
    let mut rpc = Rpc::new(RpcConfig {
        callers,
        ..RpcConfig::new(realm(), 7)
    });
    for procedure in ["admin.reboot", "svc.echo"] {
        rpc.register(now, procedure, RegisterOptions::default())
            .unwrap();
    }
    drain(&mut rpc);
    let mut verdicts = Vec::new();
    for (request_id, (caller, procedure)) in [
        (1, "admin.reboot"),
        (2, "admin.reboot"),
        (2, "svc.echo"),
        (9, "svc.echo"),
    ]
    .into_iter()
    .enumerate()
    {
        let request_id = request_id as u64;
        rpc.handle_call(now, node(caller), call_frame(request_id, procedure, "x", 0));
        let out = drain(&mut rpc);
        let handled = matches!(out[..], [RpcOutput::Event(RpcEvent::Request { .. })]);
        verdicts.push(if handled {
            None
        } else {
            Some(error_code(&out))
        });
    }
    let refused = Some(ErrorCode::Unauthorized);
    assert_eq!(verdicts, [None, refused, None, refused]);
    assert_eq!(rpc.stats().refusals.unauthorized, 2);
}

#[test]
fn one_caller_gets_at_most_its_share_of_the_handler_slots() {
    let now = t0();
    let mut rpc = Rpc::new(RpcConfig {
        max_handlers: 4,
        max_handlers_per_caller: 2,
        ..RpcConfig::new(realm(), 7)
    });
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    drain(&mut rpc);
    let mut held = Vec::new();
    for request_id in 0..3 {
        rpc.handle_call(now, node(5), call_frame(request_id, "svc.echo", "x", 0));
        match drain(&mut rpc).as_slice() {
            [RpcOutput::Event(RpcEvent::Request { id, .. })] => held.push(*id),
            other => assert_eq!(error_code(other), ErrorCode::Overloaded),
        }
    }
    assert_eq!(held.len(), 2, "the third call of one caller is refused");
    assert_eq!(rpc.stats().refusals.caller_share, 1);
    for (caller, request_id) in [(6, 0), (7, 0)] {
        rpc.handle_call(
            now,
            node(caller),
            call_frame(request_id, "svc.echo", "x", 0),
        );
        assert!(matches!(
            drain(&mut rpc)[..],
            [RpcOutput::Event(RpcEvent::Request { .. })]
        ));
    }
    rpc.handle_call(now, node(8), call_frame(0, "svc.echo", "x", 0));
    assert_eq!(error_code(&drain(&mut rpc)), ErrorCode::Overloaded);
    assert_eq!(rpc.stats().refusals.overloaded, 1, "every slot taken");
    // A slot given back is the caller's again.
    rpc.reply(now, held[0], Ok(bytes("y"))).unwrap();
    drain(&mut rpc);
    rpc.handle_call(now, node(5), call_frame(9, "svc.echo", "x", 0));
    assert!(matches!(
        drain(&mut rpc)[..],
        [RpcOutput::Event(RpcEvent::Request { .. })]
    ));
}

#[test]
fn a_procedure_past_its_concurrency_limit_is_answered_overloaded() {
    let now = t0();
    let mut rpc = rpc();
    let single = RegisterOptions {
        max_concurrent: 1,
        ..RegisterOptions::default()
    };
    rpc.register(now, "svc.single", single).unwrap();
    // A limit of 0 means 1: the procedure is served at all.
    let zero = RegisterOptions {
        max_concurrent: 0,
        ..RegisterOptions::default()
    };
    rpc.register(now, "svc.zero", zero).unwrap();
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    drain(&mut rpc);
    let request = |rpc: &mut Rpc, caller: u8, request_id: u64, procedure: &str| {
        rpc.handle_call(
            now,
            node(caller),
            call_frame(request_id, procedure, "x", 5000),
        );
        match drain(rpc).as_slice() {
            [RpcOutput::Event(RpcEvent::Request { id, .. })] => Ok(*id),
            other => Err(error_code(other)),
        }
    };
    let first = request(&mut rpc, 5, 0, "svc.single").expect("the first call runs");
    assert_eq!(
        request(&mut rpc, 6, 0, "svc.single"),
        Err(ErrorCode::Overloaded),
        "the second, from another caller, is past the procedure's limit"
    );
    assert_eq!(rpc.stats().refusals.procedure_limit, 1);
    assert_eq!(rpc.stats().refusals.overloaded, 0, "not the node's limit");
    // Other procedures keep their own slots.
    request(&mut rpc, 6, 1, "svc.echo").expect("another procedure runs");
    request(&mut rpc, 6, 2, "svc.zero").expect("a limit of 0 serves one");
    assert_eq!(
        request(&mut rpc, 7, 0, "svc.zero"),
        Err(ErrorCode::Overloaded)
    );
    // The slot is free once the call ends here: answered ...
    rpc.reply(now, first, Ok(bytes("y"))).unwrap();
    drain(&mut rpc);
    let second = request(&mut rpc, 6, 3, "svc.single").expect("the slot is free");
    // ... cancelled by its caller ...
    rpc.handle_cancel(now, node(6), 3);
    drain(&mut rpc);
    let third = request(&mut rpc, 7, 1, "svc.single").expect("free after CANCEL");
    assert_ne!(second, third);
    // ... or past its deadline.
    rpc.handle_timeout(now + 5 * SECOND);
    drain(&mut rpc);
    request(&mut rpc, 8, 0, "svc.single").expect("free after the deadline");
    assert_eq!(rpc.stats().refusals.procedure_limit, 2);
}

#[test]
fn handled_calls_end_on_cancel_and_on_their_deadline() {
    let now = t0();
    let mut rpc = rpc();
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    drain(&mut rpc);
    rpc.handle_call(now, node(5), call_frame(1, "svc.echo", "x", 1000));
    let RpcOutput::Event(RpcEvent::Request { id, .. }) = drain(&mut rpc)[0].clone() else {
        panic!()
    };
    rpc.handle_cancel(now, node(6), 1);
    assert!(
        drain(&mut rpc).is_empty(),
        "another caller's CANCEL is not this call's"
    );
    rpc.handle_cancel(now, node(5), 1);
    assert_eq!(
        drain(&mut rpc),
        [RpcOutput::Event(RpcEvent::Cancelled {
            id,
            reason: CancelReason::Caller
        })]
    );
    assert_eq!(
        rpc.reply(now, id, Ok(Bytes::new())),
        Err(RpcError::UnknownCall(id.0))
    );
    assert!(drain(&mut rpc).is_empty());

    rpc.handle_call(now, node(5), call_frame(2, "svc.echo", "x", 1000));
    let RpcOutput::Event(RpcEvent::Request { id, .. }) = drain(&mut rpc)[0].clone() else {
        panic!()
    };
    let deadline = now + SECOND;
    assert_eq!(rpc.poll_timeout(), Some(deadline));
    rpc.handle_timeout(deadline - Duration::from_millis(1));
    assert!(drain(&mut rpc).is_empty());
    rpc.handle_timeout(deadline);
    let out = drain(&mut rpc);
    assert_eq!(error_code(&out), ErrorCode::Timeout);
    assert_eq!(
        out[1],
        RpcOutput::Event(RpcEvent::Cancelled {
            id,
            reason: CancelReason::Deadline
        })
    );
    assert_eq!(rpc.calls_handled(), 0);
}

#[test]
fn poll_timeout_is_now_while_output_is_queued() {
    let now = t0();
    let mut rpc = rpc();
    assert_eq!(rpc.poll_timeout(), None);
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    assert_eq!(rpc.poll_timeout(), Some(now));
    drain(&mut rpc);
    assert_eq!(rpc.poll_timeout(), None, "the DHT republishes");
}

#[test]
fn a_node_can_call_its_own_procedure_through_the_node_looping_frames_back() {
    let now = t0();
    let mut rpc = rpc();
    let me = node(1);
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    drain(&mut rpc);
    let (call, out) = started_with_one(&mut rpc, now);
    let [
        RpcOutput::Call {
            provider, message, ..
        },
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*provider, me);
    // The Node hands a CALL to itself straight back ...
    rpc.handle_call(now, me, message.clone());
    let RpcOutput::Event(RpcEvent::Request { id, payload, .. }) = drain(&mut rpc)[0].clone() else {
        panic!()
    };
    rpc.reply(now, id, Ok(payload)).unwrap();
    // ... and the answer too.
    let (caller, answer) = answer(&drain(&mut rpc));
    assert_eq!(caller, 1);
    let Message::Reply(reply) = answer else {
        panic!()
    };
    rpc.handle_reply(now, &me, reply);
    assert_eq!(completed(&drain(&mut rpc)), (call, Ok(bytes("hi"))));
}

#[test]
fn a_failed_announcement_is_reported_and_announced_again_after_a_backoff() {
    let now = t0();
    let mut rpc = rpc();
    rpc.register(now, "svc.echo", RegisterOptions::default())
        .unwrap();
    let announce = drain(&mut rpc);
    let failure = AnnounceFailure::Quorum {
        acked: 0,
        quorum: 1,
    };
    rpc.handle_announced(now, key("svc.echo"), Err(failure.clone()));
    let [RpcOutput::Event(RpcEvent::RegistrationFailed { procedure, failed })] =
        &drain(&mut rpc)[..]
    else {
        panic!("one failure event");
    };
    assert_eq!(procedure, "svc.echo");
    assert_eq!((&failed.reason, failed.failures), (&failure, 1));
    let retry_in = &failed.retry_in;
    assert!(*retry_in >= ANNOUNCE_RETRY_BASE / 2 && *retry_in <= ANNOUNCE_RETRY_BASE);
    assert_eq!(rpc.poll_timeout(), Some(now + *retry_in));
    rpc.handle_timeout(now + *retry_in);
    assert_eq!(drain(&mut rpc), announce, "announced again");
    rpc.handle_announced(now + *retry_in, key("svc.echo"), Ok(()));
    assert_eq!(drain(&mut rpc), []);
    assert_eq!(rpc.poll_timeout(), None);
    // Outcomes for keys not registered are ignored.
    rpc.handle_announced(now, key("svc.other"), Err(failure));
    assert_eq!(drain(&mut rpc), []);
}

#[test]
fn a_silent_provider_is_given_up_after_its_window_when_moving_on_is_safe() {
    // TIMEOUT (5 s) shared among the default 3 attempts.
    let window = TIMEOUT / 3;
    for (idempotent, written, moves_on) in [
        (true, true, true),
        (false, false, true),
        (false, true, false),
    ] {
        let now = t0();
        let mut rpc = rpc();
        let providers = vec![provider(1, idempotent), provider(2, idempotent)];
        let call = rpc
            .call(
                now,
                "svc.echo",
                bytes("hi"),
                TIMEOUT,
                CallOptions::default(),
            )
            .unwrap();
        drain(&mut rpc);
        rpc.handle_lookup(now, key("svc.echo"), providers);
        let (first, frame) = calls(&drain(&mut rpc))[0].clone();
        if written {
            rpc.handle_sent(now, &node(first), frame.request_id);
        }
        let deadline = if moves_on {
            now + window
        } else {
            now + TIMEOUT
        };
        assert_eq!(rpc.poll_timeout(), Some(deadline), "{idempotent} {written}");
        rpc.handle_timeout(now + window);
        let out = drain(&mut rpc);
        if !moves_on {
            assert!(out.is_empty(), "a written non-idempotent call waits");
            continue;
        }
        assert_eq!(cancels(&out), [(first, frame.request_id)]);
        let [(second, next)] = &calls(&out)[..] else {
            panic!("the next provider is tried: {out:?}");
        };
        assert_ne!(*second, first);
        // The second is silent too: with nobody left to move on to it keeps
        // the rest of the call's time, and the call times out at its deadline.
        if written {
            rpc.handle_sent(now + window, &node(*second), next.request_id);
        }
        rpc.handle_timeout(now + window * 2);
        assert_eq!(
            drain(&mut rpc),
            [],
            "the last provider is not given up early"
        );
        assert_eq!(rpc.poll_timeout(), Some(now + TIMEOUT));
        rpc.handle_timeout(now + TIMEOUT);
        let out = drain(&mut rpc);
        assert_eq!(cancels(&out), [(*second, next.request_id)]);
        assert!(matches!(completed(&out), (c, Err(RpcError::Timeout { .. })) if c == call));
    }
}

#[test]
fn an_attempt_window_can_be_set_per_call_and_never_outlives_the_call() {
    let now = t0();
    let mut rpc = rpc();
    let options = CallOptions {
        attempt_timeout: Some(SECOND),
        ..CallOptions::default()
    };
    let (_, out) = started(&mut rpc, now, vec![provider(1, true)], options);
    assert_eq!(calls(&out).len(), 1);
    assert_eq!(rpc.poll_timeout(), Some(now + SECOND));
    let mut rpc = self::rpc();
    let options = CallOptions {
        attempt_timeout: Some(TIMEOUT * 2),
        ..CallOptions::default()
    };
    started(&mut rpc, now, vec![provider(1, true)], options);
    assert_eq!(rpc.poll_timeout(), Some(now + TIMEOUT));
}
