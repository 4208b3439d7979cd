//! Two machines exchange datagrams over real loopback UDP sockets.

#[path = "../../testutil/pinger.rs"]
mod pinger;

use std::time::{Duration, Instant};

use macula_mio::Driver;
use pinger::Pinger;

#[test]
fn pings_over_loopback_are_answered_in_order_with_timers_and_ttls() {
    let mut a = Driver::bind("127.0.0.1:0".parse().unwrap(), Pinger::new(10)).unwrap();
    let mut b = Driver::bind("127.0.0.1:0".parse().unwrap(), Pinger::new(0)).unwrap();
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    a.machine_mut().start(start, b.local_addr());
    let mut got = Vec::new();
    while got.len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "every ping is answered within 5 s"
        );
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        got.extend(std::iter::from_fn(|| a.pop_event()));
        assert!(b.pop_event().is_none(), "b only answers");
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}
