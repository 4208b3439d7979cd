//! A burst from the Node leaves as GSO transmits: quinn is polled for several
//! datagrams at once ([`macula::quic::TransportSettings::max_segments`]), and
//! a call whose payload spans many packets goes out in transmits of several
//! datagrams each, which the simulator (as a driver without GSO would) puts
//! on the wire datagram by datagram; the echo coming back whole shows that
//! every split datagram was a packet of its own. With `max_segments` 1 the
//! same call goes out one datagram per transmit. (The drivers' GSO send and
//! GRO receive of such a transmit: `runtimes/udp/tests/base.rs`.)
#![cfg(feature = "sim")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use macula::rpc::RegisterOptions;
use macula::sim::{Link, Mesh, echo};

/// Two public nodes, one serving `svc.echo`; the other calls it with a payload
/// of `len` bytes, quinn polled for at most `max_segments` datagrams at a time.
/// The echo, the transmits of several datagrams the call took and the
/// datagrams in them, and the largest datagram on the wire.
fn echo_call(len: usize, max_segments: usize) -> (Bytes, (u64, u64), usize) {
    let link = Link::with_latency(Duration::from_millis(5));
    let mut mesh = Mesh::public(3, 1, common::epoch(), link, |_, c| {
        c.transport.max_segments = max_segments;
    });
    assert!(mesh.bootstrap_all(), "bootstrap");
    let (provider, caller) = (mesh.hosts[1], mesh.hosts[2]);
    mesh.register(provider, "svc.echo", RegisterOptions::default());
    mesh.settle(Duration::from_secs(2));
    let before = mesh.world.bursts();
    let since = mesh.world.elapsed();
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let call = mesh.call(caller, "svc.echo", payload);
    let reply = mesh.await_call(call, |world, host, event| {
        echo(world, host, event).unwrap();
    });
    let after = mesh.world.bursts();
    let largest = (mesh.world.trace().entries().iter())
        .filter(|e| e.elapsed >= since)
        .map(|e| e.size)
        .max()
        .unwrap_or(0);
    let bursts = (after.0 - before.0, after.1 - before.1);
    (reply.expect("the echo"), bursts, largest)
}

#[test]
fn a_burst_leaves_as_segmented_transmits_and_arrives_split_into_whole_packets() {
    let len = 64 * 1024;
    let (reply, (transmits, datagrams), largest) = echo_call(len, 10);
    let mut want = b"echo:".to_vec();
    want.extend((0..len).map(|i| (i % 251) as u8));
    assert_eq!(
        reply, want,
        "every split datagram arrived as a packet of its own"
    );
    // 64 KiB each way is some 100 datagrams of ~1,200 bytes: most in bursts.
    assert!(transmits >= 5, "{transmits} segmented transmits");
    assert!(
        datagrams >= 2 * transmits,
        "{datagrams} datagrams in {transmits}"
    );
    assert!(
        datagrams >= 60,
        "{datagrams} of the call's datagrams in bursts"
    );
    assert!(
        largest <= 1500,
        "one datagram at a time on the wire: {largest} bytes"
    );
}

#[test]
fn with_one_segment_a_transmit_holds_one_datagram() {
    let (reply, bursts, _) = echo_call(64 * 1024, 1);
    assert_eq!(reply.len(), 5 + 64 * 1024);
    assert_eq!(bursts, (0, 0));
}
