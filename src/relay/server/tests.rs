//! Unit tests of the relay server, driven directly (no node): its limits,
//! refusals, closes and the leases it gives back.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::relay::RelayMode;
use crate::relay::test_support::{drain, lease, node, stream};

/// The default limits, relaying whatever the node's reachability.
fn always() -> RelayConfig {
    RelayConfig {
        mode: RelayMode::Always,
        ..RelayConfig::default()
    }
}

/// The address node `n` of the tests comes from, unless a test says
/// otherwise: one IP per node.
fn ip_of(peer: NodeId) -> IpAddr {
    IpAddr::from([198, 51, 100, peer.as_bytes()[0]])
}

/// The status of the one answer among `outputs`.
fn status(outputs: &[RelayServerOutput]) -> RelayStatus {
    let statuses: Vec<RelayStatus> = outputs
        .iter()
        .filter_map(|o| match o {
            RelayServerOutput::Answer { frame, .. } | RelayServerOutput::Splice { frame, .. } => {
                match frame {
                    Message::RelayReserveStatus(m) => Some(m.status),
                    Message::CircuitStatus(m) => Some(m.status),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(statuses.len(), 1, "one answer in {outputs:?}");
    statuses[0]
}

/// Grants `peer` a reservation on connection `conn`, pinned with a
/// lease on it.
fn reserve(server: &mut RelayServer, now: Instant, peer: NodeId, conn: u64) -> RelayStatus {
    reserve_from(server, now, (peer, ip_of(peer)), conn)
}

/// As [`reserve`], from a chosen IP.
fn reserve_from(
    server: &mut RelayServer,
    now: Instant,
    from: (NodeId, IpAddr),
    conn: u64,
) -> RelayStatus {
    let request = wire::RelayReserve { request_id: 1 };
    server.handle_reserve(now, ConnId(conn), from, stream(0), request);
    let outputs = drain(server);
    for output in &outputs {
        if let RelayServerOutput::Pin { conn, pin } = output {
            server.handle_pinned(*pin, Some(lease(conn.0)));
        }
    }
    status(&outputs)
}

/// Opens a circuit from `source` (connection `conn`) to `target`,
/// whose reserved connection gives stream 1; the outputs of the open.
fn open(
    server: &mut RelayServer,
    now: Instant,
    source: NodeId,
    conn: u64,
    target: NodeId,
) -> Vec<RelayServerOutput> {
    open_from(server, now, (source, ip_of(source)), conn, target)
}

/// As [`open`], from a chosen IP.
fn open_from(
    server: &mut RelayServer,
    now: Instant,
    source: (NodeId, IpAddr),
    conn: u64,
    target: NodeId,
) -> Vec<RelayServerOutput> {
    let request = wire::CircuitOpen {
        request_id: 7,
        target,
    };
    server.handle_circuit_open(now, ConnId(conn), source, stream(0), request);
    let mut outputs = drain(server);
    if let Some(RelayServerOutput::Announce { circuit, .. }) = outputs.first() {
        server.handle_target_stream(now, *circuit, Some(stream(1)));
        outputs = drain(server);
        for output in &outputs {
            if let RelayServerOutput::Pin { conn, pin } = output {
                server.handle_pinned(*pin, Some(lease(conn.0)));
            }
        }
    }
    outputs
}

fn resets(outputs: &[RelayServerOutput]) -> Vec<VarInt> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RelayServerOutput::Reset { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

fn released(outputs: &[RelayServerOutput]) -> Vec<ConnId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RelayServerOutput::Release(lease) => Some(lease.conn()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reservation_past_max_reservations_is_refused() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_reservations: 1,
        ..always()
    };
    let mut server = RelayServer::new(config);
    assert_eq!(reserve(&mut server, now, node(1), 1), RelayStatus::Ok);
    assert_eq!(
        reserve(&mut server, now, node(2), 2),
        RelayStatus::LimitReached
    );
    assert_eq!(
        reserve(&mut server, now, node(1), 1),
        RelayStatus::Ok,
        "a renewal is not a new reservation"
    );
    assert_eq!(server.reservation_count(), 1);
    assert_eq!(server.counters().reservations_granted, 2);
    assert_eq!(server.counters().refused_limit, 1);
}

#[test]
fn a_disabled_relay_refuses_everything() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        mode: RelayMode::Never,
        ..always()
    };
    let mut server = RelayServer::new(config);
    assert_eq!(
        reserve(&mut server, now, node(1), 1),
        RelayStatus::RelayDisabled
    );
    let outputs = open(&mut server, now, node(2), 2, node(1));
    assert_eq!(status(&outputs), RelayStatus::RelayDisabled);
    assert_eq!(server.counters().refused_disabled, 2);
}

#[test]
fn a_circuit_to_a_node_without_reservation_or_to_itself_is_refused() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    let outputs = open(&mut server, now, node(2), 2, node(1));
    assert_eq!(status(&outputs), RelayStatus::NoReservation);
    reserve(&mut server, now, node(1), 1);
    let outputs = open(&mut server, now, node(1), 1, node(1));
    assert_eq!(status(&outputs), RelayStatus::BadRequest);
    assert_eq!(server.counters().refused_no_reservation, 1);
    assert_eq!(server.counters().refused_bad_request, 1);
}

#[test]
fn circuits_past_the_per_node_limit_are_refused() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_circuits_per_peer: 1,
        ..always()
    };
    let mut server = RelayServer::new(config);
    reserve(&mut server, now, node(1), 1);
    reserve(&mut server, now, node(3), 3);
    let first = open(&mut server, now, node(2), 2, node(1));
    assert_eq!(status(&first), RelayStatus::Ok);
    assert!(server.carries(ConnId(2), stream(0)));
    assert!(server.carries(ConnId(1), stream(1)));
    let again = open(&mut server, now, node(2), 2, node(3));
    assert_eq!(
        status(&again),
        RelayStatus::LimitReached,
        "the source is at its limit"
    );
    let other = open(&mut server, now, node(4), 4, node(1));
    assert_eq!(
        status(&other),
        RelayStatus::LimitReached,
        "the target is at its limit"
    );
    assert_eq!(server.circuit_count(), 1);
    assert_eq!(server.counters().refused_limit, 2);
    assert_eq!(server.counters().circuits_opened, 1);
}

#[test]
fn a_target_without_a_stream_refuses_the_circuit() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    reserve(&mut server, now, node(1), 1);
    let request = wire::CircuitOpen {
        request_id: 7,
        target: node(1),
    };
    server.handle_circuit_open(
        now,
        ConnId(2),
        (node(2), ip_of(node(2))),
        stream(0),
        request,
    );
    let Some(RelayServerOutput::Announce { circuit, conn, .. }) = server.poll_output() else {
        panic!("the target is announced the circuit");
    };
    assert_eq!((circuit, conn), (1, ConnId(1)));
    server.handle_target_stream(now, circuit, None);
    assert_eq!(status(&drain(&mut server)), RelayStatus::TargetUnreachable);
    assert_eq!(server.counters().refused_unreachable, 1);
    let outputs = open(&mut server, now, node(2), 2, node(1));
    let granted = outputs.iter().find_map(|o| match o {
        RelayServerOutput::Splice {
            frame: Message::CircuitStatus(m),
            ..
        } => Some(m.circuit),
        _ => None,
    });
    assert_eq!(granted, Some(2), "a fresh id");
}

#[test]
fn a_circuit_is_closed_at_its_byte_limit() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_circuit_bytes: 100,
        ..always()
    };
    let mut server = RelayServer::new(config);
    reserve(&mut server, now, node(1), 1);
    open(&mut server, now, node(2), 2, node(1));
    let frame = encode_frame(&[7; 60]).expect("fits");
    server.handle_circuit_bytes(now, ConnId(2), stream(0), &frame);
    let outputs = drain(&mut server);
    let Some(RelayServerOutput::Forward {
        conn,
        stream: to,
        frame: forwarded,
    }) = outputs.first()
    else {
        panic!("the first packet is forwarded: {outputs:?}");
    };
    assert_eq!((*conn, *to), (ConnId(1), stream(1)));
    server.handle_forwarded(forwarded, Written::Written);
    assert_eq!(server.counters().packets_forwarded, 1);
    server.handle_circuit_bytes(now, ConnId(1), stream(1), &frame);
    let outputs = drain(&mut server);
    assert_eq!(resets(&outputs), [CIRCUIT_LIMIT, CIRCUIT_LIMIT]);
    assert_eq!(released(&outputs).len(), 2, "both ends' leases go back");
    assert_eq!(server.circuit_count(), 0);
    assert!(!server.carries(ConnId(2), stream(0)));
    assert_eq!(server.counters().circuits_over_limit, 1);
    assert_eq!(server.counters().circuits_closed, 1);
}

#[test]
fn a_circuit_is_closed_at_its_lifetime() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_circuit_lifetime: Duration::from_secs(60),
        reservation_ttl: Duration::from_secs(600),
        ..always()
    };
    let mut server = RelayServer::new(config);
    reserve(&mut server, now, node(1), 1);
    open(&mut server, now, node(2), 2, node(1));
    let deadline = now + Duration::from_secs(60);
    assert_eq!(server.poll_timeout(), Some(deadline));
    server.handle_timeout(deadline - Duration::from_millis(1));
    assert!(drain(&mut server).is_empty(), "early is harmless");
    server.handle_timeout(deadline);
    let outputs = drain(&mut server);
    assert_eq!(resets(&outputs), [CIRCUIT_LIMIT, CIRCUIT_LIMIT]);
    assert_eq!(server.counters().circuits_over_limit, 1);
    assert_eq!(
        server.reservation_count(),
        1,
        "the reservation lasts longer"
    );
    assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(600)));
}

#[test]
fn a_connection_gone_releases_its_reservation_and_circuit_leases() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    reserve(&mut server, now, node(1), 1);
    open(&mut server, now, node(2), 2, node(1));
    server.handle_connection_gone(now, ConnId(1));
    let outputs = drain(&mut server);
    let mut leases = released(&outputs);
    leases.sort();
    assert_eq!(
        leases,
        [ConnId(1), ConnId(1), ConnId(2)],
        "the reservation's and both circuit ends' leases"
    );
    assert_eq!(resets(&outputs), [CIRCUIT_PEER_GONE, CIRCUIT_PEER_GONE]);
    assert_eq!(server.reservation_count(), 0);
    assert_eq!(server.circuit_count(), 0);
    assert_eq!(server.counters().reservations_ended, 1);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn a_broken_frame_or_a_full_queue_is_counted() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    reserve(&mut server, now, node(1), 1);
    open(&mut server, now, node(2), 2, node(1));
    server.handle_forwarded(&[0; 10], Written::QueueFull);
    assert_eq!(server.counters().dropped_queue_full, 1);
    server.handle_circuit_bytes(now, ConnId(2), stream(0), &[0, 0]);
    let outputs = drain(&mut server);
    assert_eq!(resets(&outputs), [CIRCUIT_BROKEN, CIRCUIT_BROKEN]);
    assert_eq!(server.counters().frame_errors, 1);
}

#[test]
fn a_release_ends_only_the_reservation_of_its_connection() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    reserve(&mut server, now, node(1), 1);
    server.handle_release(now, ConnId(9), node(1), stream(4));
    assert!(matches!(
        drain(&mut server)[..],
        [RelayServerOutput::Finish { .. }]
    ));
    assert_eq!(server.reservation_count(), 1);
    server.handle_release(now, ConnId(1), node(1), stream(4));
    assert_eq!(released(&drain(&mut server)), [ConnId(1)]);
    assert_eq!(server.reservation_count(), 0);
}

#[test]
fn many_ids_from_one_ip_get_only_the_per_ip_reservations() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_reservations_per_ip: 2,
        ..always()
    };
    let mut server = RelayServer::new(config);
    let flooder = IpAddr::from([203, 0, 113, 9]);
    for n in 1..=2 {
        assert_eq!(
            reserve_from(&mut server, now, (node(n), flooder), u64::from(n)),
            RelayStatus::Ok
        );
    }
    assert_eq!(
        reserve_from(&mut server, now, (node(3), flooder), 3),
        RelayStatus::LimitReached,
        "a third id from the same IP"
    );
    let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
    assert_eq!(
        reserve_from(&mut server, now, (node(4), v6(1)), 4),
        RelayStatus::Ok
    );
    assert_eq!(
        reserve_from(&mut server, now, (node(5), v6(2)), 5),
        RelayStatus::Ok
    );
    assert_eq!(
        reserve_from(&mut server, now, (node(6), v6(3)), 6),
        RelayStatus::LimitReached,
        "one IPv6 /64 is one IP"
    );
    assert_eq!(
        reserve(&mut server, now, node(7), 7),
        RelayStatus::Ok,
        "another IP"
    );
    assert_eq!(
        reserve_from(&mut server, now, (node(1), flooder), 1),
        RelayStatus::Ok,
        "a renewal"
    );
    assert_eq!(
        reserve_from(&mut server, now, (node(2), flooder), 8),
        RelayStatus::Ok,
        "a node moving to a new connection keeps its place"
    );
    assert_eq!(server.reservation_count(), 5);
    assert_eq!(server.counters().refused_ip_limit, 2);
    assert_eq!(server.counters().refused_limit, 0);
}

#[test]
fn circuits_past_the_per_ip_limit_are_refused_at_either_end() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_circuits_per_ip: 2,
        ..always()
    };
    let mut server = RelayServer::new(config);
    let [a, b, c, d] = [1, 2, 3, 4].map(|n| IpAddr::from([203, 0, 113, n]));
    reserve_from(&mut server, now, (node(1), a), 1);
    reserve_from(&mut server, now, (node(5), c), 5);
    for (n, conn) in [(2, 2), (3, 3)] {
        let outputs = open_from(&mut server, now, (node(n), b), conn, node(1));
        assert_eq!(status(&outputs), RelayStatus::Ok);
    }
    let outputs = open_from(&mut server, now, (node(4), b), 4, node(5));
    assert_eq!(
        status(&outputs),
        RelayStatus::LimitReached,
        "the source's IP is full"
    );
    let outputs = open_from(&mut server, now, (node(6), d), 6, node(1));
    assert_eq!(
        status(&outputs),
        RelayStatus::LimitReached,
        "the target's IP is full"
    );
    let outputs = open_from(&mut server, now, (node(7), d), 7, node(5));
    assert_eq!(status(&outputs), RelayStatus::Ok);
    assert_eq!(server.circuit_count(), 3);
    assert_eq!(server.counters().refused_ip_limit, 2);
}

/// The frames forwarded among `outputs`.
fn forwarded(outputs: &[RelayServerOutput]) -> usize {
    (outputs.iter())
        .filter(|o| matches!(o, RelayServerOutput::Forward { .. }))
        .count()
}

#[test]
fn a_flooder_over_its_rate_spends_nothing_of_the_total() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        peer_rate: 1000,
        total_rate: 2000,
        ..always()
    };
    let mut server = RelayServer::new(config);
    reserve(&mut server, now, node(1), 1);
    reserve(&mut server, now, node(3), 3);
    open(&mut server, now, node(2), 2, node(1));
    open(&mut server, now, node(4), 4, node(3));
    let flood = encode_frame(&[7; 598]).expect("fits");
    for _ in 0..20 {
        server.handle_circuit_bytes(now, ConnId(2), stream(0), &flood);
    }
    let packet = encode_frame(&[7; 498]).expect("fits");
    assert_eq!(
        forwarded(&drain(&mut server)),
        1,
        "the flooder gets its rate"
    );
    assert_eq!(server.counters().dropped_rate, 19);
    for _ in 0..2 {
        server.handle_circuit_bytes(now, ConnId(4), stream(0), &packet);
    }
    let small = encode_frame(&[7; 100]).expect("fits");
    server.handle_circuit_bytes(now, ConnId(4), stream(0), &small);
    assert_eq!(
        forwarded(&drain(&mut server)),
        2,
        "the other circuit's traffic within its rate passes"
    );
    assert_eq!(server.counters().dropped_total_rate, 0);
}

#[test]
fn the_total_rate_drops_what_fits_the_senders_rate_and_counts_it_apart() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        peer_rate: 1000,
        total_rate: 1000,
        ..always()
    };
    let mut server = RelayServer::new(config);
    reserve(&mut server, now, node(1), 1);
    reserve(&mut server, now, node(3), 3);
    open(&mut server, now, node(2), 2, node(1));
    open(&mut server, now, node(4), 4, node(3));
    let packet = encode_frame(&[7; 700]).expect("fits");
    server.handle_circuit_bytes(now, ConnId(2), stream(0), &packet);
    server.handle_circuit_bytes(now, ConnId(4), stream(0), &packet);
    assert_eq!(forwarded(&drain(&mut server)), 1);
    assert_eq!(server.counters().dropped_total_rate, 1);
    assert_eq!(server.counters().dropped_rate, 0);
    let later = now + Duration::from_secs(1);
    server.handle_circuit_bytes(later, ConnId(4), stream(0), &packet);
    assert_eq!(
        forwarded(&drain(&mut server)),
        1,
        "the refused sender's own tokens were not spent"
    );
}

#[test]
fn in_auto_mode_the_relay_serves_only_while_public() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(RelayConfig::default());
    assert!(!server.serving());
    assert_eq!(
        reserve(&mut server, now, node(1), 1),
        RelayStatus::RelayDisabled
    );
    assert!(server.handle_public(now, true), "it starts serving");
    assert!(!server.handle_public(now, true), "no change");
    assert_eq!(reserve(&mut server, now, node(1), 1), RelayStatus::Ok);
    assert!(server.handle_public(now, false));
    assert_eq!(
        reserve(&mut server, now, node(1), 1),
        RelayStatus::RelayDisabled,
        "no renewal once private"
    );
    let outputs = open(&mut server, now, node(2), 2, node(1));
    assert_eq!(status(&outputs), RelayStatus::RelayDisabled);
    assert_eq!(server.counters().refused_disabled, 3);
    let mut never = RelayServer::new(RelayConfig {
        mode: RelayMode::Never,
        ..RelayConfig::default()
    });
    assert!(!never.handle_public(now, true));
    assert!(!never.serving());
}

#[test]
fn circuits_admitted_in_one_input_each_get_their_target_stream() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    reserve(&mut server, now, node(1), 1);
    reserve(&mut server, now, node(3), 3);
    let mut announced = Vec::new();
    for (source, target) in [(2, 1), (4, 3)] {
        let request = wire::CircuitOpen {
            request_id: 7,
            target: node(target),
        };
        let from = (node(source), ip_of(node(source)));
        server.handle_circuit_open(now, ConnId(u64::from(source)), from, stream(0), request);
        for output in drain(&mut server) {
            if let RelayServerOutput::Announce { circuit, .. } = output {
                announced.push(circuit);
            }
        }
    }
    assert_eq!(announced, [1, 2]);
    server.handle_target_stream(now, 2, Some(stream(1)));
    server.handle_target_stream(now, 1, Some(stream(1)));
    let statuses = drain(&mut server)
        .iter()
        .filter(|o| matches!(o, RelayServerOutput::Splice { .. }))
        .count();
    assert_eq!(statuses, 2, "both spliced");
    assert_eq!(server.circuit_count(), 2);
}

#[test]
fn a_spliced_circuit_vouches_each_end_to_the_other_and_a_refused_one_nothing() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(always());
    reserve(&mut server, now, node(1), 1);
    let vouches = |outputs: &[RelayServerOutput]| -> Vec<(ConnId, u64, ConnId)> {
        (outputs.iter())
            .filter_map(|o| match o {
                RelayServerOutput::Vouch {
                    conn,
                    circuit,
                    other,
                } => Some((*conn, *circuit, *other)),
                _ => None,
            })
            .collect()
    };
    let outputs = open(&mut server, now, node(2), 2, node(1));
    assert_eq!(
        vouches(&outputs),
        [(ConnId(2), 1, ConnId(1)), (ConnId(1), 1, ConnId(2))]
    );
    // To a node without a reservation: refused, no word on anyone.
    assert!(vouches(&open(&mut server, now, node(2), 2, node(3))).is_empty());
}
