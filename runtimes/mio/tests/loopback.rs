//! Two machines exchange datagrams over real loopback UDP sockets.

#[path = "../../testutil/pinger.rs"]
mod pinger;

use std::time::Duration;

use macula_mio::{PollLoop, clock};
use pinger::Pinger;

#[test]
fn pings_over_loopback_are_answered_in_order_with_timers_and_ttls() {
    let loopback = "127.0.0.1:0".parse().unwrap();
    let mut a = PollLoop::bind(loopback, Pinger::new(10)).unwrap();
    let mut b = PollLoop::bind(loopback, Pinger::new(0)).unwrap();
    let start = clock::now();
    let b_addr = b.driver().local_addr();
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
