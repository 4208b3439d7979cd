//! A QUIC handshake nobody answers is given up at the node's handshake timeout
//! (`NodeConfig::handshake_timeout`, 10 s), not QUIC's 60 s idle timeout: issue 17, live
//! seed 2, a publisher's dial over a circuit to a subscriber that had just been killed
//! waited a minute, and every later dial to that subscriber, over fresh circuits, waited
//! on it (29 publications lost).
#![cfg(feature = "sim")]

mod common;

use std::time::Duration;

use macula::node::{CloseCause, DEFAULT_HANDSHAKE_TIMEOUT, Event};
use macula::sim::{Link, Mesh};

#[test]
fn a_dial_nobody_answers_fails_at_the_handshake_timeout() {
    let link = Link::with_latency(Duration::from_millis(5));
    let mut mesh = Mesh::public(2, 7, common::epoch(), link, |_, _| {});
    let (dialer, silent) = (mesh.hosts[0], mesh.hosts[1]);
    mesh.world.set_online(silent, false);
    let seed = vec![mesh.contact(silent)];
    let start = mesh.world.now();
    mesh.world
        .with_machine(dialer, |node, now| node.bootstrap(now, seed));
    let mut closed = None;
    mesh.drive(Duration::from_secs(70), |world, host, event| {
        if host == dialer
            && let Event::Disconnected { cause, .. } = event
        {
            closed = Some((world.now() - start, cause));
        }
        closed.is_some()
    });
    let (after, cause) = closed.expect("the dial ended");
    let expected = format!(
        "no handshake within {} ms",
        DEFAULT_HANDSHAKE_TIMEOUT.as_millis()
    );
    assert_eq!(cause, CloseCause::Transport(expected));
    assert!(
        after >= DEFAULT_HANDSHAKE_TIMEOUT && after < DEFAULT_HANDSHAKE_TIMEOUT * 2,
        "given up after {after:?}"
    );
    let counters = mesh.world.machine(dialer).counters();
    assert_eq!(counters.handshake_timeouts, 1);
}
