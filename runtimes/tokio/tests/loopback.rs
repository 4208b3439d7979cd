//! Machines exchange datagrams over real loopback UDP sockets through the
//! generic [`Driver`]: timers, ordering, and the TTL of each datagram.

#[cfg(target_os = "linux")]
#[path = "../../testutil/arrival_ttls.rs"]
mod arrival_ttls;
#[cfg(target_os = "linux")]
#[path = "../../testutil/burst.rs"]
mod burst;
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
        let ttls = tokio::task::spawn_blocking(move || arrival_ttls::arrival_ttls(&observer, 4))
            .await
            .unwrap();
        pinging.abort();
        let numbers: Vec<u8> = ttls.iter().map(|(payload, _)| payload[1]).collect();
        assert_eq!(numbers, [0, 1, 2, 3], "{driver_addr} -> {target}");
        for (n, ttl) in numbers
            .into_iter()
            .zip(ttls.into_iter().map(|(_, ttl)| ttl))
        {
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

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_burst_to_one_peer_leaves_in_one_gso_send_and_arrives_as_datagrams() {
    let observer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    observer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let machine = burst::Queue::burst(observer.local_addr().unwrap());
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), machine)
        .await
        .unwrap();
    driver.flush().await;
    burst::expect_burst(&observer);
    let counters = driver.counters();
    burst::expect_two_sends(counters.datagrams_sent, counters.send_calls);
}

/// Counts the datagrams of each input it is fed.
#[derive(Default)]
struct InputSizes {
    sizes: Vec<usize>,
    out: VecDeque<Output<usize>>,
}

impl Machine for InputSizes {
    type Event = usize;

    fn handle_input(&mut self, now: Instant, input: Input) {
        self.handle_inputs(now, [input]);
    }

    fn handle_inputs(&mut self, _now: Instant, inputs: impl IntoIterator<Item = Input>) {
        let size = (inputs.into_iter())
            .filter(|i| matches!(i, Input::Datagram(_)))
            .count();
        self.sizes.push(size);
        self.out.push_back(Output::Event(size));
    }

    fn poll_output(&mut self) -> Option<Output<usize>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Issue 16: the driver feeds a read's datagrams at most
/// [`macula_udp::DATAGRAMS_PER_INPUT`] (32) as one input, several at once
/// when a burst waits (a whole read of 256 made a 64 MiB transfer a third
/// slower than inputs of 32).
#[tokio::test]
async fn a_read_of_many_datagrams_is_fed_a_few_at_a_time() {
    const BURST: usize = 40;
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), InputSizes::default())
        .await
        .unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..BURST {
        // Sizes differ so the kernel cannot coalesce them (GRO).
        sender
            .send_to(&vec![0; 1 + i], driver.local_addr())
            .unwrap();
    }
    let mut fed = 0;
    while fed < BURST {
        let event = tokio::time::timeout(Duration::from_secs(5), driver.next_event());
        fed += event.await.expect("every datagram arrives");
    }
    let sizes = &driver.machine().sizes;
    assert!(
        sizes
            .iter()
            .all(|s| (1..=macula_udp::DATAGRAMS_PER_INPUT).contains(s)),
        "{sizes:?}"
    );
    assert!(
        sizes.iter().any(|s| *s > 1),
        "a read of a waiting burst is fed several at a time: {sizes:?}"
    );
}
