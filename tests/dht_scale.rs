//! The DHT at N = 1,000 over the DHT-only network model, graded against a
//! brute-force oracle with the thresholds (50 ms RTT, 5% loss, 10%
//! churn). The 10,000-node run is `examples/dht_scale.rs`.
#![cfg(feature = "sim")]

use std::time::{Duration, Instant};

use macula::dht::DhtConfig;
use macula::sim::dht_net::SimConfig;
use macula::sim::dht_scale::{Scale, ScaleConfig};

#[allow(clippy::disallowed_methods)] // Only the origin of virtual time.
fn epoch() -> Instant {
    Instant::now()
}

fn scenario(seed: u64) -> ScaleConfig {
    ScaleConfig {
        sim: SimConfig {
            nodes: 1000,
            rtt: Duration::from_millis(50),
            jitter: 0.1,
            loss: 0.05,
            join_spacing: Duration::from_millis(10),
            seed,
            dht: DhtConfig::default(),
        },
        lookups: 500,
        stores: 50,
        churn: 0.1,
        spacing: Duration::from_millis(5),
    }
}

#[test]
fn a_thousand_nodes_with_loss_and_churn_meet_the_targets() {
    let mut scale = Scale::new(scenario(7), epoch());
    scale.bootstrap();
    let r = scale.run();
    eprintln!("{r:?}");
    assert_eq!(r.lookups, 500);
    assert!(r.closest_found_rate >= 0.99, "{r:?}");
    assert!(r.k_overlap >= 0.9, "{r:?}");
    assert!(r.median_hops <= 3.0, "{r:?}");
    assert!(r.median_latency_ms <= 500.0, "{r:?}");
    assert!(r.store_quorum_rate >= 0.95, "{r:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let small = |seed| {
        let mut config = scenario(seed);
        config.sim.nodes = 150;
        config.lookups = 30;
        config.stores = 5;
        let mut scale = Scale::new(config, epoch());
        scale.bootstrap();
        (scale.run(), scale.net().messages())
    };
    let (a, b) = (small(3), small(3));
    assert_eq!(a, b);
    assert_ne!(a.1, small(4).1, "another seed, another run");
}
