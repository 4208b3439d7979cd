//! Relay forwarding over real UDP on loopback, against plain UDP forwarding.
//!
//! *Relay*: a relay node on a thread of its own (its own one-thread tokio runtime, so its
//! CPU time is that thread's), a node reserved on it, and a node whose connection to that
//! one runs through the relay (their NAT classes rule a direct path out, as in [`super::idle`]).
//! Neither end upgrades the connection to a direct path. The dialer writes 1,200-byte packets onto the circuit ([`macula::node::Node::flood_circuit`]:
//! junk to the far end's QUIC, which drops it, but the relay forwards it like any packet), at
//! most [`AHEAD`] bytes ahead of what the relay has forwarded; MB/s is what the relay
//! forwarded (`bytes_forwarded`) over the time it took, and MB per CPU-second is the same
//! bytes over the relay thread's CPU time. The relay's rate limits are lifted for it.
//! *Floor*: a thread that receives 1,200-byte UDP datagrams and sends each on to another
//! socket, fed at most [`UDP_AHEAD`] bytes ahead of what arrived (so the sockets drop none);
//! the same two figures, over the time to the last datagram's arrival.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use macula::nat::punch::NatClass;
use macula::node::NodeConfig;
use macula::sim::punch_lab::NatKind;

use super::PATIENCE;
use super::common::clock;
use super::cpu::{on_own_thread, thread_cpu_time};
use super::idle::{FOREVER, bind, bind_with, drive_for};

/// Bytes at most written and not yet forwarded.
const AHEAD: u64 = 1 << 20;
/// Bytes at most sent to the plain forwarder and not yet received.
const UDP_AHEAD: u64 = 64 << 10;
/// Bytes of every packet.
const PACKET: usize = 1200;

/// What one forwarder achieved.
pub struct Forwarding {
    /// Bytes forwarded per second, in MB (10^6).
    pub mb_s: f64,
    /// Bytes forwarded per CPU-second of the forwarding thread, in MB.
    pub mb_per_cpu_s: f64,
}

impl Forwarding {
    fn new(bytes: u64, wall: Duration, cpu: Duration) -> Self {
        let mb = bytes as f64 / 1e6;
        Self {
            mb_s: mb / wall.as_secs_f64(),
            mb_per_cpu_s: mb / cpu.as_secs_f64().max(1e-6),
        }
    }
}

/// What the relay thread publishes after every turn.
#[derive(Default)]
struct Progress {
    forwarded: AtomicU64,
    cpu_us: AtomicU64,
    stop: AtomicBool,
}

impl Progress {
    fn read(&self) -> (u64, Duration) {
        let cpu = Duration::from_micros(self.cpu_us.load(Ordering::Acquire));
        (self.forwarded.load(Ordering::Acquire), cpu)
    }
}

/// The ends of the relayed connection keep it on the relay (no upgrade to a direct path).
fn stay(config: &mut NodeConfig) {
    config.upgrade.auto = false;
}

/// `bytes` bytes through a relay (module docs).
pub async fn relay(bytes: u64) -> Forwarding {
    let progress = Arc::new(Progress::default());
    let (contact_tx, contact_rx) = tokio::sync::oneshot::channel();
    let shared = progress.clone();
    let relay_thread = on_own_thread(move || async move {
        let mut relay = bind(1, NatClass::OPEN, None).await;
        let _ = contact_tx.send(relay.machine().contact());
        while !shared.stop.load(Ordering::Acquire) {
            drive_for(&mut relay, Duration::from_millis(1)).await;
            let forwarded = relay.machine().relay_counters().bytes_forwarded;
            shared.forwarded.store(forwarded, Ordering::Release);
            let cpu = thread_cpu_time().as_micros() as u64;
            shared.cpu_us.store(cpu, Ordering::Release);
        }
    });
    let contact = contact_rx.await.expect("the relay is up");
    let target = bind_with(2, NatKind::SymmetricRandom.class(), Some(&contact), stay);
    let mut target = target.await;
    let target_id = target.machine().node_id();
    let target_task = tokio::spawn(async move { drive_for(&mut target, FOREVER).await });
    let dialer = bind_with(3, NatKind::PortRestricted.class(), Some(&contact), stay);
    let mut dialer = dialer.await;
    drive_for(&mut dialer, Duration::from_millis(500)).await;
    (dialer.machine_mut()).dial_via_relay(clock(), contact, target_id);
    let limit = clock() + PATIENCE;
    while dialer.machine().connection_kinds().1 == 0 {
        let kinds = dialer.machine().connection_kinds();
        let relays = dialer.machine().reserved_relays().len();
        let what = format!("(direct, relayed) {kinds:?}, reserved on {relays}");
        assert!(
            clock() < limit,
            "gave up waiting for the relayed connection: {what}"
        );
        drive_for(&mut dialer, Duration::from_millis(10)).await;
    }

    let (start_bytes, start_cpu) = progress.read();
    let started = clock();
    let packets = bytes / PACKET as u64;
    let mut written = 0;
    let mut last = (start_bytes, clock());
    loop {
        let (forwarded, _) = progress.read();
        if forwarded != last.0 {
            last = (forwarded, clock());
        }
        let done = forwarded - start_bytes;
        if done >= packets * PACKET as u64 || last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        let unforwarded = (written * PACKET as u64).saturating_sub(done);
        let room = (AHEAD.saturating_sub(unforwarded) / PACKET as u64).min(packets - written);
        if room > 0 {
            (dialer.machine_mut()).flood_circuit(clock(), &target_id, room as usize);
            written += room;
        }
        drive_for(&mut dialer, Duration::from_micros(200)).await;
    }
    let (end_bytes, end_cpu) = progress.read();
    let wall = last.1 - started;
    progress.stop.store(true, Ordering::Release);
    relay_thread.join().expect("the relay thread ends");
    target_task.abort();
    Forwarding::new(end_bytes - start_bytes, wall, end_cpu - start_cpu)
}

/// `bytes` bytes through a plain UDP forwarder (module docs).
pub fn udp(bytes: u64) -> Forwarding {
    let socket = || UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback socket");
    let (sender, forwarder, receiver) = (socket(), socket(), socket());
    let to = receiver.local_addr().expect("a bound address");
    let via = forwarder.local_addr().expect("a bound address");
    let patience = Some(Duration::from_millis(200));
    forwarder
        .set_read_timeout(patience)
        .expect("a read timeout");
    receiver.set_read_timeout(patience).expect("a read timeout");
    let started = clock();
    // Bytes received, and when the last of them came (µs after `started`).
    let received = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let count = received.clone();
    let receiving = std::thread::spawn(move || {
        let mut buf = [0; 2048];
        while let Ok(n) = receiver.recv(&mut buf) {
            count
                .1
                .store(started.elapsed().as_micros() as u64, Ordering::Release);
            count.0.fetch_add(n as u64, Ordering::Release);
        }
    });
    let forwarding = std::thread::spawn(move || {
        let mut buf = [0; 2048];
        let (mut forwarded, cpu) = (0, thread_cpu_time());
        while let Ok(n) = forwarder.recv(&mut buf) {
            if forwarder.send_to(&buf[..n], to).is_ok() {
                forwarded += n as u64;
            }
        }
        (forwarded, thread_cpu_time() - cpu)
    });
    let packet = [0x5a; PACKET];
    let mut sent = 0;
    while sent < bytes && started.elapsed() < PATIENCE {
        // Well inside the sockets' buffers, so none is dropped for want of room.
        if sent.saturating_sub(received.0.load(Ordering::Acquire)) < UDP_AHEAD {
            let _ = sender.send_to(&packet, via);
            sent += PACKET as u64;
        } else {
            std::thread::yield_now();
        }
    }
    let (forwarded, cpu) = forwarding.join().expect("the forwarder ends");
    receiving.join().expect("the receiver ends");
    let wall = Duration::from_micros(received.1.load(Ordering::Acquire));
    Forwarding::new(forwarded, wall, cpu)
}
