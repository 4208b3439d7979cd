//! Machines exchange datagrams over real loopback UDP sockets through the
//! generic [`Driver`]: timers, ordering, and the TTL of each datagram.

#[path = "../../testutil/pinger.rs"]
mod pinger;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use macula::{Input, Machine, Output};

use macula_tokio::Driver;
use pinger::Pinger;

#[tokio::test]
async fn pings_over_loopback_are_answered_in_order_with_timers_and_ttls() {
    let loopback = "127.0.0.1:0".parse().unwrap();
    let mut a = Driver::bind(loopback, Pinger::new(10)).await.unwrap();
    let mut b = Driver::bind(loopback, Pinger::new(0)).await.unwrap();
    let b_addr = b.local_addr();
    let responder = tokio::spawn(async move {
        // b never reports events: it only answers. Run it until the test ends.
        let _ = b.next_event().await;
    });
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    a.machine_mut().start(now, b_addr);
    let mut got = Vec::new();
    while got.len() < 10 {
        let event = tokio::time::timeout(Duration::from_secs(5), a.next_event())
            .await
            .expect("every ping is answered within 5 s");
        got.push(event);
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    let counters = a.counters();
    assert_eq!(counters.datagrams_sent, 10);
    assert_eq!(counters.datagrams_received, 10);
    assert_eq!(counters.send_errors, 0);
    responder.abort();
}

/// The IP TTL (IPv6 hop limit) each datagram arrived with at `observer`,
/// in order, for `count` datagrams.
#[cfg(target_os = "linux")]
fn arrival_ttls(observer: std::net::UdpSocket, count: usize) -> Vec<(u8, i32)> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };

    if observer.local_addr().unwrap().is_ipv4() {
        setsockopt(&observer, sockopt::Ipv4RecvTtl, &true).unwrap();
    } else {
        setsockopt(&observer, sockopt::Ipv6RecvHopLimit, &true).unwrap();
    }
    observer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (0..count)
        .map(|_| {
            let mut payload = [0u8; 16];
            let mut cmsgs = nix::cmsg_space!(i32);
            let mut iov = [IoSliceMut::new(&mut payload)];
            let msg = recvmsg::<SockaddrStorage>(
                observer.as_raw_fd(),
                &mut iov,
                Some(&mut cmsgs),
                MsgFlags::empty(),
            )
            .expect("each ping arrives within 5 s");
            let ttl =
                msg.cmsgs()
                    .unwrap()
                    .find_map(|c| match c {
                        ControlMessageOwned::Ipv4Ttl(ttl)
                        | ControlMessageOwned::Ipv6HopLimit(ttl) => Some(ttl),
                        _ => None,
                    })
                    .expect("the TTL came with the datagram");
            (payload[1], ttl)
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn each_datagram_goes_out_with_its_own_ttl_and_the_default_comes_back() {
    // IPv4, IPv6, and IPv4 and IPv6 (the hop limit) from a dual-stack socket.
    for (driver_addr, observer_addr) in [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("[::1]:0", "[::1]:0"),
        ("[::]:0", "127.0.0.1:0"),
        ("[::]:0", "[::1]:0"),
    ] {
        let observer = std::net::UdpSocket::bind(observer_addr).unwrap();
        let target = observer.local_addr().unwrap();
        let mut driver = Driver::bind(driver_addr.parse().unwrap(), Pinger::new(4))
            .await
            .unwrap();
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        driver.machine_mut().start(now, target);
        // The observer never answers, so this runs until aborted.
        let pinging = tokio::spawn(async move { driver.next_event().await });
        let ttls = tokio::task::spawn_blocking(move || arrival_ttls(observer, 4))
            .await
            .unwrap();
        pinging.abort();
        let numbers: Vec<u8> = ttls.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [0, 1, 2, 3], "{driver_addr} -> {target}");
        for (n, ttl) in ttls {
            if n % 2 == 1 {
                assert_eq!(ttl, 1, "ping {n} from {driver_addr} set TTL 1");
            } else {
                assert!(
                    ttl > 1,
                    "ping {n} from {driver_addr} had the default TTL back, got {ttl}"
                );
            }
        }
    }
}

/// What [`Recorder`] saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Datagram,
    Timeout,
}

/// Reports every datagram; the first one makes a deadline due at once,
/// reported when its timeout comes.
#[derive(Default)]
struct Recorder {
    deadline: Option<Instant>,
    armed: bool,
    out: VecDeque<Output<Seen>>,
}

impl Machine for Recorder {
    type Event = Seen;

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram(_) => {
                self.out.push_back(Output::Event(Seen::Datagram));
                if !self.armed {
                    self.armed = true;
                    self.deadline = Some(now);
                }
            }
            Input::Timeout if self.deadline.is_some_and(|d| d <= now) => {
                self.deadline = None;
                self.out.push_back(Output::Event(Seen::Timeout));
            }
            Input::Timeout | Input::LocalAddressChanged { .. } | Input::SocketsOpened(_) => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<Seen>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
}

#[tokio::test]
async fn a_flood_of_datagrams_cannot_starve_a_due_deadline() {
    const BUDGET: usize = 8;
    const FLOOD: usize = 100;
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Recorder::default())
        .await
        .unwrap();
    driver.set_datagrams_per_turn(BUDGET);
    let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..FLOOD {
        // Sizes differ so the kernel cannot coalesce them (GRO).
        flood.send_to(&vec![0; 1 + i], driver.local_addr()).unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < FLOOD + 1 {
        let event = tokio::time::timeout(Duration::from_secs(5), driver.next_event());
        seen.push(event.await.expect("every datagram arrives"));
    }
    let timeout_at = seen.iter().position(|s| *s == Seen::Timeout);
    assert_eq!(
        timeout_at,
        Some(BUDGET),
        "the deadline came due at the first datagram and fired after one turn's budget"
    );
    assert_eq!(driver.counters().datagrams_received, FLOOD as u64);
}

/// Queues datagrams and nothing else.
#[cfg(target_os = "linux")]
struct Queue(VecDeque<Output<()>>);

#[cfg(target_os = "linux")]
impl Machine for Queue {
    type Event = ();

    fn handle_input(&mut self, _: Instant, _: Input) {}

    fn poll_output(&mut self) -> Option<Output<()>> {
        self.0.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_burst_to_one_peer_leaves_in_one_gso_send_and_arrives_as_datagrams() {
    let observer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    observer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let datagram = |n: u8, len: usize, ttl| {
        Output::Transmit(macula::Transmit {
            source: None,
            destination: observer.local_addr().unwrap(),
            payload: vec![n; len].into(),
            ttl,
        })
    };
    // Five of 100 bytes and a shorter last one, then one with its own TTL.
    let mut burst: VecDeque<_> = (0..5).map(|n| datagram(n, 100, None)).collect();
    burst.push_back(datagram(5, 40, None));
    burst.push_back(datagram(6, 100, Some(9)));
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Queue(burst))
        .await
        .unwrap();
    driver.flush().await;

    let mut buf = [0u8; 200];
    for (n, len) in [
        (0, 100),
        (1, 100),
        (2, 100),
        (3, 100),
        (4, 100),
        (5, 40),
        (6, 100),
    ] {
        let (got, _) = observer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..got], &vec![n; len][..], "datagram {n}");
    }
    let counters = driver.counters();
    assert_eq!(counters.datagrams_sent, 7);
    assert_eq!(
        counters.send_calls, 2,
        "one GSO send, then the TTL one alone"
    );
}
