//! The UDP base over real loopback sockets (`std` sockets: the base needs
//! nothing of a runtime): addresses in and out of a dual-stack socket, the
//! TTL of each datagram and the default after it, GSO batches arriving as
//! GRO reads split into datagrams (each its own buffer), ECN marks, and the
//! counters.

#[cfg(target_os = "linux")]
#[path = "../../testutil/arrival_ttls.rs"]
mod arrival_ttls;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use macula::{Datagram, Transmit};
use macula_udp::{
    Batch, Batcher, EcnCodepoint, MAX_BATCH_BYTES, RecvBuffers, SocketCounts, UdpBase, open,
};

fn base(addr: &str) -> UdpBase<UdpSocket> {
    UdpBase::new(open(addr.parse().unwrap()).unwrap()).unwrap()
}

fn transmit(to: SocketAddr, payload: Vec<u8>, ttl: Option<u8>) -> Transmit {
    Transmit {
        source: None,
        destination: to,
        payload: Bytes::from(payload),
        segment_size: None,
        ttl,
    }
}

/// The address peers reach `base` at on loopback (`ip` when it is bound to
/// an unspecified address).
fn at(base: &UdpBase<UdpSocket>, ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), base.local_addr().port())
}

/// Reads until `count` datagrams came, one read of at most `max_reads`
/// packets at a time; returns them and how many each read delivered.
fn receive(
    base: &UdpBase<UdpSocket>,
    count: usize,
    max_reads: usize,
) -> (Vec<(Datagram, Option<EcnCodepoint>)>, Vec<usize>) {
    let mut buffers = RecvBuffers::default();
    let mut got = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..500 {
        match base.try_receive(&mut buffers, max_reads, |d, ecn| got.push((d, ecn))) {
            Ok(n) => reads.push(n),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("receive failed: {error}"),
        }
        if got.len() >= count {
            return (got, reads);
        }
    }
    panic!("{} of {count} datagrams arrived within 5 s", got.len());
}

/// Sends `batch`, retrying while the send buffer is full.
fn send(base: &UdpBase<UdpSocket>, batch: &Batch) -> io::Result<()> {
    loop {
        match base.try_send(batch) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            sent => return sent,
        }
    }
}

#[test]
fn a_dual_stack_socket_sees_ipv4_peers_as_ipv4_with_the_address_they_sent_to() {
    let node = base("[::]:0");
    assert!(node.local_addr().is_ipv6());
    let v4_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let v6_peer = UdpSocket::bind("[::1]:0").unwrap();
    v4_peer.send_to(b"four", at(&node, "127.0.0.1")).unwrap();
    let (got, _) = receive(&node, 1, 8);
    v6_peer.send_to(b"six", at(&node, "::1")).unwrap();
    let (got6, _) = receive(&node, 1, 8);
    let (four, six) = (&got[0].0, &got6[0].0);
    assert_eq!(four.remote, v4_peer.local_addr().unwrap(), "plain IPv4");
    assert_eq!(four.local, at(&node, "127.0.0.1"), "its destination");
    assert_eq!(&four.payload[..], b"four");
    assert_eq!(six.remote, v6_peer.local_addr().unwrap());
    assert_eq!(six.local, at(&node, "::1"));

    // And back: the IPv4 peer is addressed as plain IPv4 too.
    let reply = Batch::new(transmit(four.remote, b"back".to_vec(), None));
    send(&node, &reply).unwrap();
    let mut buf = [0u8; 16];
    v4_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (len, from) = v4_peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..len], from), (&b"back"[..], at(&node, "127.0.0.1")));
}

#[cfg(target_os = "linux")]
#[test]
fn a_datagram_goes_out_with_its_own_ttl_and_the_next_with_the_default() {
    // IPv4, IPv6, and both (TTL and hop limit) from a dual-stack socket.
    for (from, to) in [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("[::1]:0", "[::1]:0"),
        ("[::]:0", "127.0.0.1:0"),
        ("[::]:0", "[::1]:0"),
    ] {
        let node = base(from);
        let observer = UdpSocket::bind(to).unwrap();
        let target = observer.local_addr().unwrap();
        for (n, ttl) in [(0u8, Some(3)), (1, None), (2, Some(1)), (3, None)] {
            send(&node, &Batch::new(transmit(target, vec![n], ttl))).unwrap();
        }
        let ttls: Vec<(u8, i32)> = arrival_ttls::arrival_ttls(&observer, 4)
            .into_iter()
            .map(|(payload, ttl)| (payload[0], ttl))
            .collect();
        let default = ttls[1].1;
        assert!(default > 3, "{from} -> {target}: default TTL {default}");
        assert_eq!(
            ttls,
            [(0, 3), (1, default), (2, 1), (3, default)],
            "{from} -> {target}"
        );
    }
}

#[test]
fn a_gso_batch_arrives_as_a_gro_read_split_into_its_datagrams() {
    let (sender, receiver) = (base("127.0.0.1:0"), base("127.0.0.1:0"));
    let segments = sender.max_segments();
    assert!(segments > 1, "this CI host offers GSO");
    // Four of 100 bytes and a shorter last one: one batch, one send call.
    let mut batcher = Batcher::default();
    let to = receiver.local_addr();
    for n in 0..5u8 {
        let len = if n == 4 { 40 } else { 100 };
        batcher.push(transmit(to, vec![n; len], None), segments);
        assert!(batcher.next_full().is_none());
    }
    let batch = batcher.finish().unwrap();
    assert_eq!((batch.count(), batch.segment_size()), (5, Some(100)));
    send(&sender, &batch).unwrap();

    // One read (max_reads 1) brings all five: the kernel kept the GSO packet
    // whole for the GRO socket, and the base split it at its stride.
    let (got, reads) = receive(&receiver, 5, 1);
    assert_eq!(reads, [5], "one GRO read of five datagrams");
    let payloads: Vec<(u8, usize)> = got
        .iter()
        .map(|(d, _)| (d.payload[0], d.payload.len()))
        .collect();
    assert_eq!(payloads, [(0, 100), (1, 100), (2, 100), (3, 100), (4, 40)]);
    assert!(got.iter().all(|(d, _)| d.remote == sender.local_addr()));
    // Each datagram's bytes its own, for the node to hand to QUIC uncopied.
    assert!(got.iter().all(|(d, _)| d.payload.is_unique()));

    let sent = SocketCounts {
        datagrams_sent: 5,
        send_calls: 1,
        ..SocketCounts::default()
    };
    assert_eq!(sender.counters().snapshot(), sent);
    let received = SocketCounts {
        datagrams_received: 5,
        ..SocketCounts::default()
    };
    assert_eq!(receiver.counters().snapshot(), received);
}

#[test]
fn an_ecn_mark_sent_is_the_mark_received() {
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let (sender, receiver) = (base(addr), base(addr));
        for ecn in [None, Some(EcnCodepoint::Ect0), Some(EcnCodepoint::Ce)] {
            let mut batch = Batch::new(transmit(receiver.local_addr(), vec![1], None));
            batch.set_ecn(ecn);
            send(&sender, &batch).unwrap();
            let (got, _) = receive(&receiver, 1, 8);
            assert_eq!(got[0].1, ecn, "{addr}");
        }
    }
}

#[test]
fn a_send_the_os_refuses_is_counted_against_its_datagrams_and_returned() {
    let sender = base("127.0.0.1:0");
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Larger than any UDP datagram: the kernel refuses it (EMSGSIZE).
    let too_large = Batch::new(transmit(to, vec![0; 70_000], Some(2)));
    assert!(send(&sender, &too_large).is_err());
    // No IPv6 destination from an IPv4 socket.
    let wrong_family = Batch::new(transmit("[::1]:9".parse().unwrap(), vec![0; 10], None));
    assert!(send(&sender, &wrong_family).is_err());
    let counts = sender.counters().snapshot();
    assert_eq!(
        counts,
        SocketCounts {
            send_calls: 2,
            send_errors: 2,
            ..SocketCounts::default()
        }
    );
    // The refused send with its own TTL left the default in place.
    let default = UdpSocket::bind("127.0.0.1:0").unwrap().ttl().unwrap();
    assert_eq!(sender.io().ttl().unwrap(), default);
}

#[test]
fn one_segmented_transmit_leaves_in_one_send_and_arrives_as_its_datagrams() {
    let (sender, receiver) = (base("127.0.0.1:0"), base("127.0.0.1:0"));
    let segments = sender.max_segments();
    assert!(segments > 1, "this CI host offers GSO");
    // Three of 100 bytes and a last one of 40, as a machine hands them over.
    let mut payload: Vec<u8> = (0..3u8).flat_map(|n| vec![n; 100]).collect();
    payload.extend(vec![3; 40]);
    let mut whole = transmit(receiver.local_addr(), payload, None);
    whole.segment_size = Some(100);
    let mut batcher = Batcher::default();
    batcher.push(whole, segments);
    let batch = batcher.finish().unwrap();
    assert!(batcher.finish().is_none());
    assert_eq!((batch.count(), batch.segment_size()), (4, Some(100)));
    send(&sender, &batch).unwrap();

    let (got, _) = receive(&receiver, 4, 4);
    let payloads: Vec<(u8, usize)> = got
        .iter()
        .map(|(d, _)| (d.payload[0], d.payload.len()))
        .collect();
    assert_eq!(payloads, [(0, 100), (1, 100), (2, 100), (3, 40)]);
    let sent = SocketCounts {
        datagrams_sent: 4,
        send_calls: 1,
        ..SocketCounts::default()
    };
    assert_eq!(sender.counters().snapshot(), sent);
}

#[test]
fn a_burst_of_full_datagrams_leaves_in_sends_the_os_takes_and_arrives_whole() {
    let (sender, receiver) = (base("127.0.0.1:0"), base("127.0.0.1:0"));
    let segments = sender.max_segments();
    assert!(segments >= 64, "this CI host offers 64 GSO segments");
    // 64 datagrams of 1,200 bytes (a QUIC burst), one transmit each as a Node emits them:
    // 76,800 bytes, more than one UDP send may carry (Linux refused the whole send).
    let to = receiver.local_addr();
    let mut batcher = Batcher::default();
    let mut batches = Vec::new();
    for n in 0..64u8 {
        batcher.push(transmit(to, vec![n; 1200], None), segments);
        batches.extend(std::iter::from_fn(|| batcher.next_full()));
    }
    batches.extend(std::iter::from_fn(|| batcher.finish()));
    assert!(
        batches
            .iter()
            .all(|b| b.contents().len() <= MAX_BATCH_BYTES),
        "{:?}",
        batches.iter().map(|b| b.count()).collect::<Vec<_>>()
    );
    assert_eq!(batches.iter().map(Batch::count).sum::<usize>(), 64);
    for batch in &batches {
        send(&sender, batch).expect("a send the OS takes");
    }
    let (got, _) = receive(&receiver, 64, 64);
    let order: Vec<u8> = got.iter().map(|(d, _)| d.payload[0]).collect();
    assert_eq!(order, (0..64).collect::<Vec<u8>>());
    let counts = sender.counters().snapshot();
    assert_eq!((counts.datagrams_sent, counts.send_errors), (64, 0));
}
