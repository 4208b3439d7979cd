//! Binding client transactions: retransmission schedule, matching by transaction id and
//! source, outcomes, determinism; end to end against the responder.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::nat::stun::TransactionId;
use macula::nat::stun::{
    Alternate, Attribute, BindingClient, BindingError, BindingOutcome, ChangeRequest, Class,
    ClientConfig, MappingBehaviour, Message, Observation, Responder, ResponderConfig,
    classify_mapping, decode,
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

const ME: &str = "10.0.0.2:5000";
const MAPPED: &str = "198.51.100.7:61000";
const REFLECTOR: &str = "203.0.113.1:3478";
const SEED: [u8; 32] = [7; 32];

fn drain<M: Machine>(machine: &mut M) -> (Vec<Transmit>, Vec<M::Event>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    machine.drain(|output| match output {
        Output::Transmit(t) => sent.push(t),
        Output::Event(e) => events.push(e),
        Output::Sockets(r) => panic!("a STUN machine asked for sockets: {r:?}"),
    });
    (sent, events)
}

/// Feeds `payload` to the client as if from `from`.
fn receive(client: &mut BindingClient, now: Instant, from: &str, payload: Bytes) {
    client.handle_input(
        now,
        Input::Datagram(Datagram {
            local: addr(ME),
            remote: addr(from),
            payload,
        }),
    );
}

/// The responder's answer to `request`, seen through a NAT that maps us to MAPPED.
fn reflect(responder: &mut Responder, now: Instant, request: &Transmit) -> Transmit {
    responder.handle_input(
        now,
        Input::Datagram(Datagram {
            local: request.destination,
            remote: addr(MAPPED),
            payload: request.payload.clone(),
        }),
    );
    let (mut sent, _) = drain(responder);
    assert_eq!(sent.len(), 1);
    sent.remove(0)
}

/// Runs a transaction that nobody answers and returns the times of its requests and of its
/// outcome.
fn unanswered(config: ClientConfig) -> (Vec<Duration>, Duration, BindingOutcome) {
    let t0 = start();
    let mut client = BindingClient::new(config, SEED);
    client.start(t0, addr(REFLECTOR), ChangeRequest::default());
    let (mut sent, _) = drain(&mut client);
    let mut times = vec![Duration::ZERO];
    let first = sent.remove(0);
    loop {
        let deadline = client
            .poll_timeout()
            .expect("a live transaction has a deadline");
        // An early timeout does nothing.
        client.handle_input(deadline - Duration::from_millis(1), Input::Timeout);
        assert_eq!(drain(&mut client), (vec![], vec![]));
        client.handle_input(deadline, Input::Timeout);
        let (sent, mut events) = drain(&mut client);
        if let Some(outcome) = events.pop() {
            assert!(sent.is_empty());
            assert_eq!(client.poll_timeout(), None);
            return (times, deadline - t0, outcome);
        }
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0], first, "a retransmission is the same datagram");
        times.push(deadline - t0);
    }
}

#[test]
fn the_default_schedule_doubles_from_250_ms_over_5_requests_then_waits_2_s() {
    let (times, gave_up, outcome) = unanswered(ClientConfig::default());
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    assert_eq!(times, ms(&[0, 250, 750, 1750, 3750]));
    assert_eq!(gave_up, Duration::from_millis(5750));
    assert_eq!(outcome.reflector, addr(REFLECTOR));
    assert_eq!(
        outcome.result,
        Err(BindingError::TimedOut {
            requests: 5,
            elapsed: Duration::from_millis(5750)
        })
    );
}

#[test]
fn the_schedule_follows_the_configured_rto_rc_and_rm() {
    let config = ClientConfig {
        rto: Duration::from_millis(100),
        max_requests: 3,
        final_wait_factor: 2,
        ..ClientConfig::default()
    };
    let (times, gave_up, _) = unanswered(config);
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    assert_eq!(times, ms(&[0, 100, 300]));
    assert_eq!(gave_up, Duration::from_millis(500));
}

#[test]
fn a_reflector_answer_gives_the_mapped_address_and_rtt() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    let mut responder = Responder::new(ResponderConfig::default());
    let id = client.start(t0, addr(REFLECTOR), ChangeRequest::default());
    let (sent, _) = drain(&mut client);
    let t1 = t0 + Duration::from_millis(40);
    let response = reflect(&mut responder, t1, &sent[0]);
    receive(&mut client, t1, REFLECTOR, response.payload);
    let (sent, events) = drain(&mut client);
    assert!(sent.is_empty());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, id);
    let mapping = events[0].result.as_ref().expect("a mapping");
    assert_eq!(mapping.mapped, addr(MAPPED));
    assert_eq!(mapping.responder, addr(REFLECTOR));
    assert_eq!(mapping.response_origin, Some(addr(REFLECTOR)));
    assert_eq!(mapping.other_address, None);
    assert_eq!(mapping.rtt, Some(Duration::from_millis(40)));
    assert_eq!(client.poll_timeout(), None, "nothing left to do");
    assert_eq!(client.stats().responses, 1);
}

#[test]
fn an_answer_after_a_retransmission_has_no_rtt() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    let mut responder = Responder::new(ResponderConfig::default());
    client.start(t0, addr(REFLECTOR), ChangeRequest::default());
    let (sent, _) = drain(&mut client);
    let t1 = t0 + Duration::from_millis(250);
    client.handle_input(t1, Input::Timeout);
    let _ = drain(&mut client);
    let response = reflect(&mut responder, t1, &sent[0]);
    receive(&mut client, t1, REFLECTOR, response.payload);
    let (_, events) = drain(&mut client);
    assert_eq!(events[0].result.as_ref().unwrap().rtt, None);
}

#[test]
fn wrong_ids_and_wrong_sources_are_counted_and_ignored() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    let mut responder = Responder::new(ResponderConfig::default());
    client.start(t0, addr(REFLECTOR), ChangeRequest::default());
    let (sent, _) = drain(&mut client);
    let response = reflect(&mut responder, t0, &sent[0]).payload;

    let mut forged = decode(&response).unwrap().message;
    forged.transaction_id.0[0] ^= 1;
    receive(&mut client, t0, REFLECTOR, forged.encode().unwrap());
    receive(&mut client, t0, "203.0.113.66:3478", response.clone());
    receive(&mut client, t0, "203.0.113.1:3479", response.clone());
    receive(
        &mut client,
        t0,
        REFLECTOR,
        Bytes::from_static(b"\x01\x01junk"),
    );
    assert_eq!(drain(&mut client), (vec![], vec![]));
    let stats = client.stats();
    assert_eq!(
        (stats.unmatched, stats.wrong_source, stats.malformed),
        (1, 2, 1)
    );
    assert!(client.poll_timeout().is_some(), "the transaction goes on");

    receive(&mut client, t0, REFLECTOR, response.clone());
    let (_, events) = drain(&mut client);
    assert_eq!(events.len(), 1);
    // A duplicate after the end matches nothing.
    receive(&mut client, t0, REFLECTOR, response);
    assert_eq!(drain(&mut client), (vec![], vec![]));
    assert_eq!(client.stats().unmatched, 2);
}

#[test]
fn a_change_request_is_answered_from_the_alternate_address() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    let mut responder = Responder::new(ResponderConfig {
        alternate: Some(Alternate {
            ips: [addr(REFLECTOR).ip(), "203.0.113.2".parse().unwrap()],
            ports: [3478, 3479],
        }),
        ..ResponderConfig::default()
    });
    let change = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    client.start(t0, addr(REFLECTOR), change);
    let (sent, _) = drain(&mut client);
    let request = decode(&sent[0].payload).unwrap().message;
    assert!(
        request
            .attributes
            .contains(&Attribute::ChangeRequest(change))
    );
    let response = reflect(&mut responder, t0, &sent[0]);
    let source = response.source.expect("answered from a named address");
    assert_eq!(source, addr("203.0.113.2:3479"));
    receive(&mut client, t0, "203.0.113.2:3479", response.payload);
    let (_, events) = drain(&mut client);
    let mapping = events[0].result.as_ref().unwrap();
    assert_eq!(mapping.other_address, Some(addr("203.0.113.2:3479")));
    assert_eq!(events[0].change, change);
}

#[test]
fn an_error_response_ends_the_transaction_with_its_code() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    // No alternate address: a CHANGE-REQUEST draws a 420.
    let mut responder = Responder::new(ResponderConfig::default());
    let change = ChangeRequest {
        change_ip: true,
        change_port: false,
    };
    client.start(t0, addr(REFLECTOR), change);
    let (sent, _) = drain(&mut client);
    let response = reflect(&mut responder, t0, &sent[0]);
    // The error comes from where the request went and is taken from there (a success would
    // have to come from another IP), never from an unrelated address.
    receive(&mut client, t0, "198.51.100.99:9", response.payload.clone());
    assert_eq!(client.stats().wrong_source, 1);
    receive(&mut client, t0, REFLECTOR, response.payload);
    let (_, events) = drain(&mut client);
    assert_eq!(
        events[0].result,
        Err(BindingError::ErrorResponse { code: Some(420) })
    );
}

#[test]
fn a_success_without_a_mapped_address_is_an_error() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    client.start(t0, addr(REFLECTOR), ChangeRequest::default());
    let (sent, _) = drain(&mut client);
    let id = decode(&sent[0].payload).unwrap().message.transaction_id;
    let empty = Message::binding(Class::Success, id).encode().unwrap();
    receive(&mut client, t0, REFLECTOR, empty);
    let (_, events) = drain(&mut client);
    assert_eq!(events[0].result, Err(BindingError::NoMappedAddress));
}

#[test]
fn the_same_seed_draws_the_same_transaction_ids_and_another_seed_others() {
    let run = |seed: [u8; 32]| {
        let t0 = start();
        let mut client = BindingClient::new(ClientConfig::default(), seed);
        for port in 1..=3 {
            client.start(
                t0,
                SocketAddr::from(([203, 0, 113, 1], port)),
                ChangeRequest::default(),
            );
        }
        drain(&mut client).0
    };
    assert_eq!(run(SEED), run(SEED));
    assert_ne!(run(SEED), run([8; 32]));
}

#[test]
fn a_cancelled_transaction_is_silent() {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    let id = client.start(t0, addr(REFLECTOR), ChangeRequest::default());
    let _ = drain(&mut client);
    assert!(client.cancel(id));
    assert!(!client.cancel(id));
    assert_eq!(client.poll_timeout(), None);
}

/// Two reflectors on different IPs, asked through a NAT that maps per destination (`nat`
/// gives the mapped address toward each reflector); their outcomes classify the NAT.
fn classify_through(nat: impl Fn(SocketAddr) -> SocketAddr) -> MappingBehaviour {
    let t0 = start();
    let mut client = BindingClient::new(ClientConfig::default(), SEED);
    let mut responder = Responder::new(ResponderConfig::default());
    for reflector in [REFLECTOR, "198.51.100.1:3478"] {
        client.start(t0, addr(reflector), ChangeRequest::default());
    }
    let (sent, _) = drain(&mut client);
    for request in sent {
        responder.handle_input(
            t0,
            Input::Datagram(Datagram {
                local: request.destination,
                remote: nat(request.destination),
                payload: request.payload,
            }),
        );
        let (answers, _) = drain(&mut responder);
        receive(
            &mut client,
            t0,
            &request.destination.to_string(),
            answers[0].payload.clone(),
        );
    }
    let (_, outcomes) = drain(&mut client);
    let observations: Vec<Observation> = outcomes
        .iter()
        .filter_map(Observation::from_outcome)
        .collect();
    assert_eq!(observations.len(), 2);
    classify_mapping(&observations)
}

#[test]
fn outcomes_of_two_reflectors_classify_the_mapping() {
    assert_eq!(
        classify_through(|_| addr(MAPPED)),
        MappingBehaviour::EndpointIndependent
    );
    let per_destination = |reflector: SocketAddr| {
        if reflector == addr(REFLECTOR) {
            addr(MAPPED)
        } else {
            addr("198.51.100.7:61001")
        }
    };
    assert_eq!(
        classify_through(per_destination),
        MappingBehaviour::DestinationDependent
    );
}

/// One step of the model test: start a transaction, let time pass, or answer one.
#[derive(Clone, Debug)]
enum Step {
    Start {
        reflector: u8,
    },
    Advance {
        ms: u64,
    },
    /// Answer the `nth` started transaction (modulo), rightly or in one of the wrong ways.
    Answer {
        nth: usize,
        wrong_id: bool,
        wrong_source: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3).prop_map(|reflector| Step::Start { reflector }),
        (0u64..2000).prop_map(|ms| Step::Advance { ms }),
        (0usize..8, any::<bool>(), any::<bool>()).prop_map(|(nth, wrong_id, wrong_source)| {
            Step::Answer {
                nth,
                wrong_id,
                wrong_source,
            }
        }),
    ]
}

/// The reference: a transaction started at `start` sends at `start + offsets` and gives up at
/// `start + give_up`, unless answered first.
struct Expected {
    reflector: SocketAddr,
    start: Duration,
    transaction_id: [u8; 12],
    answered: Option<Duration>,
}

fn schedule(config: &ClientConfig) -> (Vec<Duration>, Duration) {
    let mut offsets = vec![Duration::ZERO];
    let mut backoff = config.rto;
    while offsets.len() < config.max_requests as usize {
        offsets.push(*offsets.last().unwrap() + backoff);
        backoff *= 2;
    }
    let give_up = *offsets.last().unwrap() + config.rto * config.final_wait_factor;
    (offsets, give_up)
}

proptest! {
    /// Driven by random starts, clock advances and answers (some with a wrong id, from a
    /// wrong source, or too late), the client sends exactly the reference schedule of every
    /// transaction up to its answer, ends each exactly once, and ignores and counts every
    /// answer that does not end one.
    #[test]
    fn the_client_follows_the_reference_model(steps in proptest::collection::vec(step(), 1..60)) {
        let config = ClientConfig::default();
        let (offsets, give_up) = schedule(&config);
        let t0 = start();
        let mut client = BindingClient::new(config, SEED);
        let mut now = Duration::ZERO;
        let mut model: Vec<Expected> = Vec::new();
        let mut sends: Vec<(Duration, SocketAddr, [u8; 12])> = Vec::new();
        let mut outcomes: Vec<(Duration, BindingOutcome)> = Vec::new();
        let mut ignored = 0;
        let collect = |client: &mut BindingClient, at: Duration, sends: &mut Vec<_>, outcomes: &mut Vec<_>| {
            let (sent, events) = drain(client);
            for t in sent {
                let id = decode(&t.payload).unwrap().message.transaction_id.0;
                sends.push((at, t.destination, id));
            }
            outcomes.extend(events.into_iter().map(|e| (at, e)));
        };
        for step in steps {
            match step {
                Step::Start { reflector } => {
                    let reflector = SocketAddr::from(([203, 0, 113, reflector + 1], 3478));
                    let id = client.start(t0 + now, reflector, ChangeRequest::default());
                    prop_assert_eq!(id.0 as usize, model.len());
                    collect(&mut client, now, &mut sends, &mut outcomes);
                    let transaction_id = sends.last().unwrap().2;
                    model.push(Expected { reflector, start: now, transaction_id, answered: None });
                }
                Step::Advance { ms } => {
                    let until = now + Duration::from_millis(ms);
                    while let Some(deadline) = client.poll_timeout().filter(|d| *d <= t0 + until) {
                        now = deadline - t0;
                        client.handle_input(deadline, Input::Timeout);
                        collect(&mut client, now, &mut sends, &mut outcomes);
                    }
                    now = until;
                }
                Step::Answer { nth, wrong_id, wrong_source } => {
                    if model.is_empty() {
                        continue;
                    }
                    let nth = nth % model.len();
                    let e = &mut model[nth];
                    let mut id = e.transaction_id;
                    id[11] ^= u8::from(wrong_id);
                    let mut response = Message::binding(Class::Success, TransactionId(id));
                    response.attributes.push(Attribute::XorMappedAddress(addr(MAPPED)));
                    let from = if wrong_source { SocketAddr::from(([192, 0, 2, 1], 3478)) } else { e.reflector };
                    receive(&mut client, t0 + now, &from.to_string(), response.encode().unwrap());
                    collect(&mut client, now, &mut sends, &mut outcomes);
                    let live = e.answered.is_none() && now < e.start + give_up;
                    if live && !wrong_id && !wrong_source {
                        e.answered = Some(now);
                    } else {
                        ignored += 1;
                    }
                }
            }
        }
        // Sends: every transaction's scheduled times up to its answer (or give-up) and `now`.
        let mut expected_sends: Vec<(Duration, SocketAddr, [u8; 12])> = Vec::new();
        for e in &model {
            let end = e.answered.unwrap_or(e.start + give_up).min(now);
            for offset in &offsets {
                let at = e.start + *offset;
                if at <= end && (e.answered.is_none_or(|a| at <= a)) {
                    expected_sends.push((at, e.reflector, e.transaction_id));
                }
            }
        }
        expected_sends.sort();
        let mut got_sends = sends.clone();
        got_sends.sort();
        prop_assert_eq!(got_sends, expected_sends);
        // Outcomes: one per ended transaction, at its answer or give-up time.
        let mut expected_outcomes: Vec<(Duration, u64, bool)> = model
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.answered {
                Some(at) => Some((at, i as u64, true)),
                None => (e.start + give_up <= now).then_some((e.start + give_up, i as u64, false)),
            })
            .collect();
        expected_outcomes.sort();
        let mut got_outcomes: Vec<(Duration, u64, bool)> = outcomes
            .iter()
            .map(|(at, o)| (*at, o.id.0, o.result.is_ok()))
            .collect();
        got_outcomes.sort();
        prop_assert_eq!(got_outcomes, expected_outcomes);
        let stats = client.stats();
        prop_assert_eq!(stats.unmatched + stats.wrong_source, ignored);
    }
}
