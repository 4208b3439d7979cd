//! Two machines exchange datagrams over real loopback UDP sockets.

#[path = "../../testutil/pinger.rs"]
mod pinger;

use std::time::{Duration, Instant};

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
