//! What idle connections cost and how fast a dead direct path is left, in the simulator:
//! an idle direct connection sends one QUIC PING (and the peer one ACK) per keep-alive
//! period, no liveness probes; a direct path that dies while idle is left by the next
//! keep-alive or within five probe intervals of the next call, and one that dies while
//! busy within five probe intervals by the side that sends.
#![cfg(feature = "sim")]

mod common;

use common::epoch;
use std::time::Duration;

use macula::node::{Event, PathChange};
use macula::path::PathKind;
use macula::sim::idle_lab::{IdleLab, IdleLabConfig};
use macula::sim::node_lab::{NodeLab, NodeLabConfig};
use macula::sim::punch_lab::{NatKind, Pairing};

#[test]
fn an_idle_direct_connection_sends_one_ping_a_keep_alive_and_a_relayed_one_less() {
    let config = IdleLabConfig {
        direct: 1,
        relayed: 1,
        ..IdleLabConfig::default()
    };
    let mut lab = IdleLab::new(&config, epoch());
    let kinds = lab.connect().expect("every connection up");
    assert_eq!(
        kinds,
        (2, 1),
        "the relay's and the punched one direct, one relayed"
    );
    let since = lab.mesh.world.elapsed();
    let total = lab.idle(Duration::from_secs(60));
    let direct = lab.hub_sent(since, Some(lab.peer_ip(0)));
    let relay = lab.hub_sent(since, Some(lab.relay_ip()));
    println!("in an idle minute the hub sent {total}: {direct} direct, {relay} to the relay");
    // One PING per 15 s from the opener (the hub): four, no liveness probe.
    assert!(
        direct <= 4,
        "{direct} datagrams on an idle direct path in a minute"
    );
    // The relay connection's own keep-alive every 15 s (four), the relayed connection's
    // PING every 30 s and the ACK of the answer the relay forwards back (four).
    assert!(
        relay <= 8,
        "{relay} datagrams to the relay in an idle minute"
    );
    assert_eq!(total, direct + relay);
    assert_eq!(lab.hub().upgrade_counters().fallbacks, 0);
}

/// A masquerade pair, direct after three seconds of calls, none lost.
fn direct_pair(seed: u64) -> NodeLab {
    let masquerade = Pairing::Separate(NatKind::LinuxMasquerade, NatKind::LinuxMasquerade);
    let config = NodeLabConfig {
        seed,
        link_loss: 0.0,
        ..NodeLabConfig::default()
    };
    let mut lab = NodeLab::new(masquerade, &config, epoch());
    lab.connect().expect("connected through the relay");
    lab.calls_for(Duration::from_secs(3));
    let (_, lost) = lab.finish();
    assert_eq!(lost, 0);
    for host in lab.sides() {
        assert_eq!(lab.world.machine(host).connection_kinds(), (2, 0), "direct");
    }
    lab
}

/// How long after `cut` (elapsed virtual time) each side left the direct path, as the lab
/// logged it while it made calls.
fn fallbacks_after(lab: &NodeLab, cut: Duration) -> Vec<Duration> {
    let start = lab.world.start();
    (lab.changes().iter())
        .filter(|c| c.1 == PathKind::Relayed && c.2 == PathChange::DirectPathDead)
        .map(|c| c.0.saturating_duration_since(start).saturating_sub(cut))
        .collect()
}

/// As [`fallbacks_after`], for a world that ran without the lab (its events still there).
fn idle_fallbacks_after(lab: &NodeLab, cut: Duration) -> Vec<Duration> {
    let start = lab.world.start();
    (lab.world.events().iter())
        .filter(|e| {
            matches!(
                e.event,
                Event::PathChanged {
                    reason: PathChange::DirectPathDead,
                    ..
                }
            )
        })
        .map(|e| e.at.saturating_duration_since(start).saturating_sub(cut))
        .collect()
}

#[test]
fn a_direct_path_that_dies_while_idle_is_left_by_the_next_keep_alive() {
    let mut lab = direct_pair(31);
    lab.world.run_for(Duration::from_secs(20));
    let cut = lab.world.elapsed();
    lab.cut(true);
    lab.world.run_for(Duration::from_secs(25));
    let after = idle_fallbacks_after(&lab, cut);
    println!("fell back {after:?} after the cut");
    // The opener's next PING (within 15 s) goes unanswered: 5 probe intervals later it
    // falls back, and its new offer over the relay moves the other side too.
    assert_eq!(after.len(), 2, "both sides fell back: {after:?}");
    let bound = Duration::from_secs(15) + Duration::from_secs(3);
    assert!(after.iter().all(|a| *a <= bound), "{after:?} > {bound:?}");
}

#[test]
fn a_call_on_a_direct_path_that_died_while_idle_falls_back_within_five_probe_intervals() {
    let mut lab = direct_pair(32);
    lab.world.run_for(Duration::from_secs(20));
    lab.cut(true);
    // Just after a keep-alive was answered: the next is 15 s away.
    lab.world.run_for(Duration::from_secs(1));
    let first_call = lab.world.elapsed();
    lab.calls_for(Duration::from_secs(3));
    let after = fallbacks_after(&lab, first_call);
    println!("fell back {after:?} after the first call");
    assert!(!after.is_empty(), "the caller fell back");
    // Five probe intervals (100 ms at this RTT) after the call found no answer.
    assert!(after[0] <= Duration::from_millis(600), "{after:?}");
    let (_, lost) = lab.finish();
    assert_eq!(lost, 0, "the calls went over the relay");
}

#[test]
fn a_direct_path_that_dies_while_busy_is_left_within_five_probe_intervals() {
    let mut lab = direct_pair(33);
    let cut = lab.world.elapsed();
    lab.cut(true);
    lab.calls_for(Duration::from_secs(3));
    let after = fallbacks_after(&lab, cut);
    println!("fell back {after:?} after the cut");
    assert_eq!(after.len(), 2, "both sides fell back: {after:?}");
    // The caller waits five probe intervals (100 ms at this RTT) for an answer; the
    // other side, which sends only when it hears, within two seconds.
    let (first, second) = (after[0].min(after[1]), after[0].max(after[1]));
    assert!(first <= Duration::from_millis(600), "{after:?}");
    assert!(second <= Duration::from_secs(2), "{after:?}");
    let (_, lost) = lab.finish();
    assert_eq!(lost, 0);
}

#[test]
fn an_idle_direct_pair_and_its_relay_cost_only_keep_alives() {
    let mut lab = direct_pair(24);
    // A minute of nothing: no liveness probe, only keep-alives: the opener's PING every
    // 15 s on the direct path and the peer's ACK, and on each node's relay connection
    // (dialed direct) a PING every 15 s and the relay's ACK.
    let since = lab.world.elapsed();
    lab.world.run_for(Duration::from_secs(60));
    let packets = (lab.world.trace().entries().iter())
        .filter(|e| e.elapsed >= since && e.size > 0)
        .count();
    println!("packets in the idle minute: {packets}");
    assert!(packets <= 24, "{packets} packets in an idle minute");
    for host in lab.sides() {
        let node = lab.world.machine(host);
        assert_eq!(node.connection_kinds(), (2, 0), "still direct");
        assert_eq!(node.upgrade_counters().fallbacks, 0);
    }
}

/// How long each keep-alive of an idle connection between two public nodes 1 ms apart
/// waited for its answer (from the PING leaving to the answer arriving), over two idle
/// minutes, with the nodes' [`TransportSettings::immediate_acks`](macula::quic::TransportSettings::immediate_acks)
/// as given.
fn keep_alive_answer_times(immediate_acks: bool) -> Vec<Duration> {
    let link = macula::sim::Link::with_latency(Duration::from_millis(1));
    let mut mesh = macula::sim::Mesh::public(2, 3, epoch(), link, |_, c| {
        c.transport.immediate_acks = immediate_acks;
    });
    assert!(mesh.bootstrap_all(), "bootstrapped");
    mesh.settle(Duration::from_secs(5));
    let since = mesh.world.elapsed();
    mesh.settle(Duration::from_secs(120));
    let delivered = |e: &&macula::sim::TraceEntry| {
        e.elapsed >= since && matches!(e.outcome, macula::sim::Outcome::Delivered(_))
    };
    let entries: Vec<&macula::sim::TraceEntry> = mesh
        .world
        .trace()
        .entries()
        .iter()
        .filter(delivered)
        .collect();
    // Each datagram, and the first one back after it if that came within a second (a
    // datagram answered by none is an ACK, answered by nothing).
    let mut times = Vec::new();
    for (i, sent) in entries.iter().enumerate() {
        let answer = (entries[i + 1..].iter())
            .find(|e| e.source == sent.destination && e.destination == sent.source);
        if let Some(answer) = answer {
            let waited = answer.elapsed - sent.elapsed + Duration::from_millis(1);
            if waited < Duration::from_secs(1) {
                times.push(waited);
            }
        }
    }
    times
}

#[test]
fn an_idle_keep_alive_is_acknowledged_at_once_so_no_probe_timeout_can_race_it() {
    let immediate = keep_alive_answer_times(true);
    println!("answered after {immediate:?}");
    assert!(immediate.len() >= 7, "{immediate:?}");
    // Two one-way trips: the peer acknowledged as the PING arrived.
    assert!(
        immediate.iter().all(|t| *t <= Duration::from_millis(3)),
        "{immediate:?}"
    );
    // Without: the peer held each ACK for its max_ack_delay (25 ms), which our probe
    // timeout waits beyond the round trip with only a millisecond to spare.
    let delayed = keep_alive_answer_times(false);
    println!("without immediate ACKs, answered after {delayed:?}");
    assert!(
        delayed.iter().any(|t| *t >= Duration::from_millis(25)),
        "{delayed:?}"
    );
}

/// Relayed connections dialed one by one over 30 s, idle for two minutes: (datagrams the
/// hub sent to the relay, its beat PINGs, the distinct half-seconds the hub's datagrams to
/// the relay left in).
fn relayed_idle_minutes(seed: u64) -> (usize, u64, usize) {
    let config = IdleLabConfig {
        seed,
        direct: 0,
        relayed: 20,
        dial_gap: Duration::from_millis(1500),
        ..IdleLabConfig::default()
    };
    let mut lab = IdleLab::new(&config, epoch());
    assert_eq!(
        lab.connect(),
        Some((1, 20)),
        "the relay's direct, 20 relayed"
    );
    let since = lab.mesh.world.elapsed();
    let pings = lab.hub().counters().beat_pings;
    let sent = lab.idle(Duration::from_secs(120));
    let relay = lab.relay_ip();
    let mut moments: Vec<u128> = (lab.mesh.world.trace().entries().iter())
        .filter(|e| e.elapsed >= since && e.size > 0 && e.destination.ip() == relay)
        .filter(|e| !matches!(e.outcome, macula::sim::Outcome::Event(..)))
        .map(|e| e.elapsed.as_millis() / 500)
        .collect();
    moments.dedup();
    (sent, lab.hub().counters().beat_pings - pings, moments.len())
}

#[test]
fn relayed_keep_alives_leave_together_at_the_beat_whenever_their_connections_were_made() {
    let (sent, pings, moments) = relayed_idle_minutes(3);
    println!("two idle minutes: {sent} datagrams, {pings} beat PINGs, in {moments} half-seconds");
    // Four beats of 20 PINGs each.
    assert_eq!(pings, 80);
    // Each beat's PINGs and the ACKs of the peers' answers leave within a half-second or
    // two, and the relay connection's own keep-alive between beats: on their own timers the
    // 20 connections' keep-alives fell in some 20 moments per 30 s.
    assert!(moments <= 16, "{moments} moments");
    // Each beat: the PINGs in a packet or two, and an ACK of every second packet of answers
    // the relay forwards back (a PING and an ACK each per connection per 30 s: 160).
    assert!(sent <= 60, "{sent} datagrams in two idle minutes");
}
