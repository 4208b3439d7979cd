//! macula-mio over real loopback UDP sockets: machines exchange datagrams
//! (timers, per-datagram TTLs, dual-stack), a read stops at its budget, and
//! a burst to one peer leaves in one GSO send.

#[cfg(target_os = "linux")]
#[path = "../../testutil/burst.rs"]
mod burst;
#[path = "../../testutil/pinger.rs"]
mod pinger;

use std::time::Duration;

use macula_mio::{PollLoop, clock};
use pinger::Pinger;

#[test]
fn pings_over_loopback_are_answered_in_order_with_timers_and_ttls() {
    ping_pong("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn a_dual_stack_socket_talks_to_an_ipv4_peer() {
    // a sends to 127.0.0.1 (as ::ffff:127.0.0.1), TTL 1 on odd pings with
    // the IPv4 option of its IPv6 socket; b's answers come back as IPv4.
    ping_pong("[::]:0", "127.0.0.1:0");
}

/// `a` pings `b` ten times; every answer comes back, in order.
fn ping_pong(a: &str, b: &str) {
    let mut a = PollLoop::bind(a.parse().unwrap(), Pinger::new(10)).unwrap();
    let mut b = PollLoop::bind(b.parse().unwrap(), Pinger::new(0)).unwrap();
    let start = clock::now();
    let b_addr = b.driver().local_addr();
    assert!(b_addr.is_ipv4());
    a.driver_mut()
        .command(|pinger, now| pinger.start(now, b_addr));
    let mut got = Vec::new();
    while got.len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "every ping is answered within 5 s"
        );
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        got.extend(std::iter::from_fn(|| a.driver_mut().pop_event()));
        assert!(b.driver_mut().pop_event().is_none(), "b only answers");
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    let counters = a.driver().counters();
    assert_eq!(counters.datagrams_sent, 10);
    assert_eq!(counters.datagrams_received, 10);
    assert_eq!(counters.send_errors, 0);
    assert_eq!(b.driver().counters().datagrams_sent, 10);
}

#[test]
fn a_read_stops_at_its_budget_and_resumes_on_the_next_turn() {
    let mut b = PollLoop::bind("127.0.0.1:0".parse().unwrap(), Pinger::new(0)).unwrap();
    b.driver_mut().set_datagrams_per_turn(3);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for n in 0..10u8 {
        peer.send_to(&[b'?', n], b.driver().local_addr()).unwrap();
    }
    // All ten are queued on b's socket: the first turn reads three of them
    // and asks for an immediate next turn.
    let start = clock::now();
    while b.driver().counters().datagrams_received == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the pings arrive");
        b.turn(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(b.driver().counters().datagrams_received, 3);
    assert_eq!(b.driver().timeout(), Some(Duration::ZERO));
    // No new datagram comes (mio is edge-triggered), yet the rest is read.
    for _ in 0..3 {
        b.turn(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(b.driver().counters().datagrams_received, 10);
    let mut answers = Vec::new();
    let mut buf = [0; 2];
    while answers.len() < 10 {
        let (len, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((len, buf[0]), (2, b'!'));
        answers.push(buf[1]);
    }
    assert_eq!(answers, (0..10).collect::<Vec<u8>>());
    assert_eq!(b.driver().timeout(), None, "drained, and no deadline");
}

/// Receives one datagram on `socket` (IP_RECVTTL set) with the IP TTL it
/// arrived with.
#[cfg(target_os = "linux")]
fn recv_with_ttl(socket: &std::net::UdpSocket) -> (Vec<u8>, u8) {
    use std::os::fd::AsRawFd;
    let mut data = [0u8; 64];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below points into
    // buffers that outlive the calls, with their true lengths.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let len = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        let len = usize::try_from(len).unwrap_or_else(|_| {
            panic!("recvmsg: {}", std::io::Error::last_os_error());
        });
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_TTL {
                let ttl = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return (data[..len].to_vec(), u8::try_from(ttl).unwrap());
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    panic!("no IP_TTL control message");
}

#[cfg(target_os = "linux")]
#[test]
fn each_transmit_goes_out_with_its_own_ttl_and_the_default_after() {
    use std::os::fd::AsRawFd;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and its size is passed with it.
    let set = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&raw const on).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "IP_RECVTTL: {}", std::io::Error::last_os_error());
    let mut a = PollLoop::bind("127.0.0.1:0".parse().unwrap(), Pinger::new(4)).unwrap();
    let default_ttl = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .ttl()
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    a.driver_mut()
        .command(|pinger, now| pinger.start(now, peer_addr));
    let mut got = Vec::new();
    while got.len() < 4 {
        // Pings go out every 5 ms; one turn sends what is due.
        a.turn(Duration::from_millis(10)).unwrap();
        while a.driver().counters().datagrams_sent > got.len() as u64 {
            got.push(recv_with_ttl(&peer));
        }
    }
    // The pinger asks for TTL 1 on odd pings only.
    let expected: Vec<(Vec<u8>, u8)> = (0..4u8)
        .map(|n| {
            (
                vec![b'?', n],
                if n % 2 == 1 { 1 } else { default_ttl as u8 },
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[cfg(target_os = "linux")]
#[test]
fn a_burst_to_one_peer_leaves_in_one_gso_send_and_arrives_as_datagrams() {
    let observer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    observer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let machine = burst::Queue::burst(observer.local_addr().unwrap());
    let mut driver = macula_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), machine).unwrap();
    driver.flush();
    burst::expect_burst(&observer);
    let counters = driver.counters();
    burst::expect_two_sends(counters.datagrams_sent, counters.send_calls);
}
