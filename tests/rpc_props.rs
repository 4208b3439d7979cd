//! RPC properties under failures: the at-most-once rule as a model-based
//! proptest (no sequence of failures, errors, timeouts and cancellations makes
//! a call run on a second provider unless the first one is idempotent), and
//! 1,000 calls under random failures that all end, typed, by their deadline.

mod rpc_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::Child;
use macula::id::NodeId;
use macula::rpc::{
    CallId, CallOptions, Delivery, DirectoryRequest, Found, ProviderFlags, Rpc, RpcConfig,
    RpcError, RpcEvent, RpcOutput,
};
use macula::wire::{ErrorCode, ErrorReply, Reply};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpc_support::*;

const TIMEOUT: Duration = Duration::from_secs(2);

/// One CALL the machine sent.
#[derive(Clone, Debug)]
struct Attempt {
    call: CallId,
    provider: NodeId,
    request_id: u64,
    /// The provider registered the procedure idempotent.
    idempotent: bool,
    /// The caller asked for at most once.
    at_most_once: bool,
    /// The world proved the handler never ran (not delivered, or refused
    /// before running).
    not_run: bool,
    /// The world has answered or failed it.
    settled: bool,
    /// The world (the Node) wrote it: the provider may read it.
    sent: bool,
    /// The machine gave it up (CANCEL).
    cancelled: bool,
}

impl Attempt {
    /// The Node writes the CALL, unless the machine gave it up first (the
    /// Node then drops it unwritten).
    fn send(&mut self, now: Instant, rpc: &mut Rpc) {
        if !self.sent && !self.cancelled {
            self.sent = true;
            rpc.handle_sent(now, &self.provider, self.request_id);
        }
    }

    /// The world settles the attempt with `fate` (writing it first when the
    /// fate needs the provider to have read it).
    fn settle(&mut self, now: Instant, rpc: &mut Rpc, fate: Fate) {
        if fate.needs_delivery() {
            self.send(now, rpc);
        }
        self.settled = true;
        self.not_run |= fate.proves_not_run();
        fate.apply(now, rpc, self);
    }
}

/// What the machine did, as the rules need it.
#[derive(Default)]
struct Ledger {
    attempts: Vec<Attempt>,
    lookups: Vec<macula::id::RecordKey>,
    /// Call -> (started, options, completions so far, when completed).
    calls: BTreeMap<CallId, (Instant, CallOptions, usize, Option<Instant>)>,
    /// How many calls ended each way.
    outcomes: BTreeMap<&'static str, usize>,
}

impl Ledger {
    /// Records the machine's outputs at `now`; `flags` says whether a
    /// provider registered idempotent.
    fn absorb(&mut self, now: Instant, rpc: &mut Rpc, flags: &dyn Fn(&NodeId) -> bool) {
        while let Some(output) = rpc.poll_output() {
            match output {
                RpcOutput::Call {
                    call,
                    provider,
                    message,
                } => {
                    let at_most_once = self.calls[&call].1.at_most_once;
                    let idempotent = flags(&provider);
                    assert_eq!(message.idempotent, idempotent && !at_most_once);
                    self.attempts.push(Attempt {
                        call,
                        provider,
                        request_id: message.request_id,
                        idempotent,
                        at_most_once,
                        not_run: false,
                        settled: false,
                        sent: false,
                        cancelled: false,
                    });
                }
                RpcOutput::Cancel { provider, message } => {
                    let attempt = self
                        .attempts
                        .iter_mut()
                        .find(|a| a.provider == provider && a.request_id == message.request_id);
                    let attempt = attempt.expect("CANCEL of a known attempt");
                    attempt.cancelled = true;
                    if !attempt.sent {
                        attempt.not_run = true;
                        attempt.settled = true;
                    }
                }
                RpcOutput::Directory(DirectoryRequest::Lookup { key }) => self.lookups.push(key),
                RpcOutput::Event(RpcEvent::Completed { call, result }) => {
                    let entry = self.calls.get_mut(&call).expect("a known call");
                    entry.2 += 1;
                    entry.3 = Some(now);
                    let outcome = match result {
                        Ok(_) => "ok",
                        Err(RpcError::NoProvider { .. }) => "no provider",
                        Err(RpcError::Timeout { .. }) => "timeout",
                        Err(RpcError::Remote { .. }) => "remote",
                        Err(RpcError::Refused { .. }) => "refused",
                        Err(RpcError::Lost { .. }) => "lost",
                        Err(RpcError::Overloaded { .. }) => "overloaded",
                        Err(RpcError::Cancelled) => "cancelled",
                        Err(other) => panic!("{call:?} ended with {other:?}"),
                    };
                    *self.outcomes.entry(outcome).or_default() += 1;
                }
                _ => {}
            }
        }
    }
}

impl Ledger {
    /// Starts a call and records it.
    fn call(&mut self, now: Instant, rpc: &mut Rpc, procedure: &str, options: CallOptions) {
        let call = rpc
            .call(now, procedure, Bytes::new(), TIMEOUT, options)
            .unwrap();
        self.calls.insert(call, (now, options, 0, None));
    }

    /// The rules, checked once every call had the time to end: each ended
    /// exactly once, by its deadline; and of the attempts of one call that
    /// may have run, every one but the last was on a provider that
    /// registered idempotent, for a caller that allowed running twice.
    fn check(&self) {
        for (call, (started, _, completions, at)) in &self.calls {
            assert_eq!(*completions, 1, "{call:?} completed {completions} times");
            let at = at.expect("completed");
            assert!(
                at <= *started + TIMEOUT,
                "{call:?} ended after its deadline"
            );
        }
        let mut ran: BTreeMap<CallId, Vec<&Attempt>> = BTreeMap::new();
        for attempt in self.attempts.iter().filter(|a| a.sent && !a.not_run) {
            ran.entry(attempt.call).or_default().push(attempt);
        }
        for (call, attempts) in ran {
            for earlier in &attempts[..attempts.len() - 1] {
                assert!(
                    earlier.idempotent && !earlier.at_most_once,
                    "{call:?} may have run on {:?} and again elsewhere: {attempts:?}",
                    earlier.provider
                );
            }
        }
    }
}

/// How the world settles an attempt.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Reply,
    Error(ErrorCode),
    Failure(Delivery),
}

impl Fate {
    /// True when this fate proves the handler did not run.
    fn proves_not_run(self) -> bool {
        matches!(
            self,
            Fate::Failure(Delivery::NotDelivered)
                | Fate::Error(ErrorCode::Overloaded | ErrorCode::UnknownProcedure)
        )
    }

    /// True when the provider must have read the request for this fate.
    fn needs_delivery(self) -> bool {
        !matches!(self, Fate::Failure(Delivery::NotDelivered))
    }

    /// Feeds the fate of `attempt` to the machine.
    fn apply(self, now: Instant, rpc: &mut Rpc, attempt: &Attempt) {
        let request_id = attempt.request_id;
        match self {
            Fate::Reply => rpc.handle_reply(
                now,
                &attempt.provider,
                Reply {
                    request_id,
                    payload: Bytes::new(),
                },
            ),
            Fate::Error(code) => rpc.handle_error(
                now,
                &attempt.provider,
                ErrorReply {
                    request_id,
                    code,
                    message: String::new(),
                },
            ),
            Fate::Failure(delivery) => {
                rpc.handle_failure(now, &attempt.provider, request_id, delivery)
            }
        }
    }
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        Just(Fate::Reply),
        prop::sample::select(vec![
            ErrorCode::Overloaded,
            ErrorCode::UnknownProcedure,
            ErrorCode::Refused,
            ErrorCode::RemoteError,
            ErrorCode::Timeout,
        ])
        .prop_map(Fate::Error),
        Just(Fate::Failure(Delivery::NotDelivered)),
        Just(Fate::Failure(Delivery::MaybeDelivered)),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Call { procedure: u8, at_most_once: bool },
    AnswerLookup { index: usize, empty: bool },
    Settle { index: usize, fate: Fate },
    Send(usize),
    Wait(u64),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3, any::<bool>()).prop_map(|(procedure, at_most_once)| Op::Call { procedure, at_most_once }),
        2 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(index, empty)| Op::AnswerLookup { index, empty }),
        5 => (any::<usize>(), fate()).prop_map(|(index, fate)| Op::Settle { index, fate }),
        3 => any::<usize>().prop_map(Op::Send),
        1 => (0u64..1500).prop_map(Op::Wait),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

/// Provider records of nodes 1..=4 with these idempotent flags.
fn providers(flags: [bool; 4]) -> Vec<Found> {
    (0..4u8)
        .map(|i| provider(i + 1, flags[usize::from(i)]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_non_idempotent_call_never_runs_on_two_providers(
        flags in any::<[bool; 4]>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut now = t0();
        let mut rpc = rpc();
        let mut ledger = Ledger::default();
        let is_idempotent = |p: &NodeId| flags[usize::from(p.as_bytes()[0] - 1)];
        for op in ops {
            match op {
                Op::Call { procedure, at_most_once } => {
                    let name = format!("svc.p{procedure}");
                    ledger.call(now, &mut rpc, &name, CallOptions { at_most_once, ..CallOptions::default() });
                }
                Op::AnswerLookup { index, empty } => {
                    if !ledger.lookups.is_empty() {
                        let key = ledger.lookups.remove(index % ledger.lookups.len());
                        let found = if empty { vec![] } else { providers(flags) };
                        rpc.handle_lookup(now, key, found);
                    }
                }
                Op::Settle { index, fate } => {
                    let open: Vec<usize> = (0..ledger.attempts.len())
                        .filter(|&i| !ledger.attempts[i].settled)
                        .collect();
                    if !open.is_empty() {
                        ledger.attempts[open[index % open.len()]].settle(now, &mut rpc, fate);
                    }
                }
                Op::Send(index) => {
                    if !ledger.attempts.is_empty() {
                        let at = index % ledger.attempts.len();
                        ledger.attempts[at].send(now, &mut rpc);
                    }
                }
                Op::Wait(ms) => {
                    // Time moves on as a driver moves it: through every
                    // deadline the machine asks for on the way.
                    let target = now + Duration::from_millis(ms);
                    while let Some(at) = rpc.poll_timeout().filter(|at| *at <= target) {
                        now = now.max(at);
                        rpc.handle_timeout(now);
                        ledger.absorb(now, &mut rpc, &is_idempotent);
                    }
                    now = target;
                }
                Op::Cancel(index) => {
                    let open: Vec<CallId> = ledger
                        .calls
                        .iter()
                        .filter(|(_, c)| c.2 == 0)
                        .map(|(id, _)| *id)
                        .collect();
                    if !open.is_empty() {
                        rpc.cancel(now, open[index % open.len()]).unwrap();
                    }
                }
            }
            ledger.absorb(now, &mut rpc, &is_idempotent);
        }
        // Let every deadline pass, one timer at a time.
        while let Some(at) = rpc.poll_timeout() {
            now = now.max(at);
            rpc.handle_timeout(now);
            ledger.absorb(now, &mut rpc, &is_idempotent);
        }
        prop_assert_eq!(rpc.calls_in_flight(), 0);
        ledger.check();
    }
}

/// Something the simulated world will do.
#[derive(Clone, Debug)]
enum Event {
    Start,
    AnswerLookup(macula::id::RecordKey),
    Settle(usize, Fate),
    Send(usize),
}

#[test]
fn a_thousand_calls_under_random_failures_all_end_typed_by_their_deadline() {
    let start = t0();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let flags: Vec<bool> = (0..20).map(|_| rng.random_bool(0.5)).collect();
    let is_idempotent = |p: &NodeId| flags[usize::from(p.as_bytes()[0] - 1)];
    let mut rpc = Rpc::new(RpcConfig::new(realm(), 11));
    let mut ledger = Ledger::default();
    let mut events: BTreeMap<(Instant, u64), Event> = BTreeMap::new();
    let mut seq = 0u64;
    let mut schedule = |events: &mut BTreeMap<(Instant, u64), Event>, at, event| {
        seq += 1;
        events.insert((at, seq), event);
    };
    for i in 0..1000u64 {
        schedule(
            &mut events,
            start + Duration::from_millis(i * 5),
            Event::Start,
        );
    }
    let mut now = start;
    let mut scheduled_attempts = 0;
    loop {
        let next_event = events.keys().next().map(|(at, _)| *at);
        let Some(at) = [next_event, rpc.poll_timeout()].into_iter().flatten().min() else {
            break;
        };
        now = now.max(at);
        if next_event == Some(at) {
            let (_, event) = events.pop_first().expect("an event is due");
            match event {
                Event::Start => {
                    let name = format!("svc.p{}", rng.random_range(0..5));
                    let options = CallOptions {
                        at_most_once: rng.random_bool(0.2),
                        ..CallOptions::default()
                    };
                    ledger.call(now, &mut rpc, &name, options);
                }
                Event::AnswerLookup(key) => {
                    let found: Vec<Found> = (1..=20u8)
                        .filter(|_| rng.random_bool(0.3))
                        .map(|p| Found {
                            provider: node(p),
                            value: ProviderFlags {
                                idempotent: flags[usize::from(p - 1)],
                            }
                            .encode(),
                        })
                        .collect();
                    rpc.handle_lookup(now, key, found);
                }
                Event::Settle(index, fate) => {
                    if !ledger.attempts[index].settled {
                        ledger.attempts[index].settle(now, &mut rpc, fate);
                    }
                }
                Event::Send(index) => ledger.attempts[index].send(now, &mut rpc),
            }
        } else {
            rpc.handle_timeout(now);
        }
        ledger.absorb(now, &mut rpc, &is_idempotent);
        for key in std::mem::take(&mut ledger.lookups) {
            let delay = Duration::from_millis(rng.random_range(1..300));
            schedule(&mut events, now + delay, Event::AnswerLookup(key));
        }
        for index in scheduled_attempts..ledger.attempts.len() {
            if rng.random_bool(0.9) {
                let delay = Duration::from_millis(rng.random_range(1..50));
                schedule(&mut events, now + delay, Event::Send(index));
            }
            let fate = match rng.random_range(0..10) {
                0..5 => Fate::Reply,
                5 => Fate::Error(ErrorCode::RemoteError),
                6 => Fate::Error(ErrorCode::Overloaded),
                7 => Fate::Failure(Delivery::NotDelivered),
                8 => Fate::Failure(Delivery::MaybeDelivered),
                _ => continue, // never answered
            };
            let delay = Duration::from_millis(rng.random_range(1..3000));
            schedule(&mut events, now + delay, Event::Settle(index, fate));
        }
        scheduled_attempts = ledger.attempts.len();
    }
    assert_eq!(ledger.calls.len(), 1000);
    let stats = rpc.stats();
    assert_eq!((stats.calls, stats.succeeded + stats.failed), (1000, 1000));
    assert_eq!(stats.succeeded, ledger.outcomes["ok"] as u64);
    assert_eq!(stats.attempts, ledger.attempts.len() as u64);
    assert!(stats.failovers > 0 && stats.failovers < stats.attempts);
    let kinds: Vec<_> = ledger.outcomes.keys().copied().collect();
    assert_eq!(
        kinds,
        [
            "lost",
            "no provider",
            "ok",
            "overloaded",
            "remote",
            "timeout"
        ],
        "every way to end is exercised: {:?}",
        ledger.outcomes
    );
    assert_eq!(rpc.calls_in_flight(), 0);
    ledger.check();
}
