//! A ladder of bad last-mile links, from good Wi-Fi to very bad cellular
//! (feature `sim`).
//!
//! The rungs are iroh's patchbay degradation ladder (n0-computer/iroh,
//! `iroh/tests/patchbay/degrade.rs`): each models a plausible access link of one device, applied to
//! both directions of that device's interface. Patchbay gives a round-trip time,
//! which it halves into a one-way netem delay on the interface; the jitter, the loss
//! share and its mean burst (Gilbert–Elliott, [`Link::loss_burst`]) are its figures
//! as they stand. Patchbay also caps each rung's bandwidth with a buffer of one
//! round trip; the simulator has no bandwidth model, so queueing delay and
//! congestion loss are not reproduced. Its last two rungs (barely usable, absurd)
//! are marked "not yet passing" there and are left out here.

use std::time::Duration;

use super::Link;

/// One rung of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rung {
    /// Good home Wi-Fi, 5 GHz near the access point: 16 ms RTT, 0.1 % loss in
    /// bursts of 5 (patchbay `good-wifi`, whose `bursty_loss` defaults to 5).
    GoodWifi,
    /// Congested 2.4 GHz Wi-Fi: 40 ms RTT, 12 ms jitter, 1 % loss in bursts of 6
    /// (patchbay `congested-wifi`).
    CongestedWifi,
    /// LTE at the cell edge: 90 ms RTT, 15 ms jitter, 2 % loss in bursts of 8
    /// (patchbay `weak-4g`).
    Weak4g,
    /// Degraded 3G: 200 ms RTT, 30 ms jitter, 3 % loss in bursts of 10
    /// (patchbay `slow-3g`).
    Slow3g,
    /// Oversubscribed cellular: 300 ms RTT, 40 ms jitter, 5 % loss in bursts of
    /// 12 (patchbay `congested-cellular`).
    CongestedCellular,
    /// Very bad cellular (a moving vehicle in poor coverage): 450 ms RTT, 60 ms
    /// jitter, 8 % loss in bursts of 20 (patchbay `very-bad-cellular`).
    VeryBadCellular,
    /// Geostationary satellite: 600 ms RTT, 40 ms jitter, 1.5 % loss in bursts
    /// of 6 (patchbay `satellite`).
    Satellite,
}

impl Rung {
    /// Every rung, best first.
    pub const ALL: [Rung; 7] = [
        Rung::GoodWifi,
        Rung::CongestedWifi,
        Rung::Weak4g,
        Rung::Slow3g,
        Rung::CongestedCellular,
        Rung::VeryBadCellular,
        Rung::Satellite,
    ];

    /// Patchbay's label.
    pub fn name(self) -> &'static str {
        match self {
            Rung::GoodWifi => "good-wifi",
            Rung::CongestedWifi => "congested-wifi",
            Rung::Weak4g => "weak-4g",
            Rung::Slow3g => "slow-3g",
            Rung::CongestedCellular => "congested-cellular",
            Rung::VeryBadCellular => "very-bad-cellular",
            Rung::Satellite => "satellite",
        }
    }

    /// (round trip ms, jitter ms, loss %, mean burst in packets), as patchbay lists them.
    fn figures(self) -> (u64, u64, f64, u32) {
        match self {
            Rung::GoodWifi => (16, 0, 0.1, 5),
            Rung::CongestedWifi => (40, 12, 1.0, 6),
            Rung::Weak4g => (90, 15, 2.0, 8),
            Rung::Slow3g => (200, 30, 3.0, 10),
            Rung::CongestedCellular => (300, 40, 5.0, 12),
            Rung::VeryBadCellular => (450, 60, 8.0, 20),
            Rung::Satellite => (600, 40, 1.5, 6),
        }
    }

    /// The round trip the rung adds to every path through it.
    pub fn rtt(self) -> Duration {
        Duration::from_millis(self.figures().0)
    }

    /// The rung as a link: half the round trip each way, the jitter, bursty loss.
    pub fn link(self) -> Link {
        let (rtt, jitter, loss_pct, burst) = self.figures();
        Link::with_latency(Duration::from_millis(rtt / 2))
            .jitter(Duration::from_millis(jitter))
            .loss(loss_pct / 100.0)
            .loss_burst(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rungs_run_from_good_wifi_to_very_bad_cellular() {
        let first = Rung::ALL[0].link();
        assert_eq!(first.latency, Duration::from_millis(8));
        assert!((first.loss - 0.001).abs() < 1e-12);
        let worst = Rung::VeryBadCellular.link();
        assert_eq!(Rung::VeryBadCellular.rtt(), Duration::from_millis(450));
        assert!((worst.loss - 0.08).abs() < 1e-12);
        assert_eq!(worst.loss_burst, Some(20));
        let losses: Vec<f64> = Rung::ALL[..6].iter().map(|r| r.link().loss).collect();
        assert!(losses.windows(2).all(|w| w[0] < w[1]), "{losses:?}");
    }
}
