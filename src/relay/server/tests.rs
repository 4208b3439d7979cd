//! Unit tests of the relay server, driven directly (no node): its limits,
//! refusals, closes and the leases it gives back.

use std::time::Duration;

use super::*;
use crate::relay::test_support::{drain, lease, node, stream};

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
    let request = wire::RelayReserve { request_id: 1 };
    server.handle_reserve(now, ConnId(conn), peer, stream(0), request);
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
        ..RelayConfig::default()
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
        enabled: false,
        ..RelayConfig::default()
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
    let mut server = RelayServer::new(RelayConfig::default());
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
        ..RelayConfig::default()
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
fn a_target_without_a_stream_refuses_the_circuit_and_takes_no_id() {
    let now = crate::test_epoch();
    let mut server = RelayServer::new(RelayConfig::default());
    reserve(&mut server, now, node(1), 1);
    let request = wire::CircuitOpen {
        request_id: 7,
        target: node(1),
    };
    server.handle_circuit_open(now, ConnId(2), node(2), stream(0), request);
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
    assert_eq!(granted, Some(1), "the refused circuit took no id");
}

#[test]
fn a_circuit_is_closed_at_its_byte_limit() {
    let now = crate::test_epoch();
    let config = RelayConfig {
        max_circuit_bytes: 100,
        ..RelayConfig::default()
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
        ..RelayConfig::default()
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
    let mut server = RelayServer::new(RelayConfig::default());
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
    let mut server = RelayServer::new(RelayConfig::default());
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
    let mut server = RelayServer::new(RelayConfig::default());
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
