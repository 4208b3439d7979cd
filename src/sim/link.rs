//! Link models: what crossing one network attachment does to a packet.
//!
//! Every attachment of a host or a NAT's external side to a network has a
//! [`Link`]. A packet crossing a network goes through the sender's link and the
//! receiver's link; each may drop it (MTU, TTL, loss), duplicate it, delay it
//! (latency plus jitter) and hold it back so that later packets overtake it
//! (reordering). All the dice come from the world's seeded generator.
//!
//! Loss is independent per packet, or bursty: with [`Link::loss_burst`] each
//! direction of the link is a two-state Gilbert–Elliott chain (the simple
//! Gilbert form netem's `loss gemodel p r` implements: the good state loses
//! nothing, the bad state loses every packet), whose state the world keeps
//! per attachment and direction in a [`Burst`].

use std::time::Duration;

use rand::Rng;
use smallvec::SmallVec;

use super::trace::DropReason;

/// The properties of one attachment to a network. Build it with
/// [`Link::default`] (ideal, MTU 1500, no router hops) and the setters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for each packet.
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a packet is lost: per packet, or the
    /// long-run share of packets lost when [`Link::loss_burst`] is set.
    pub loss: f64,
    /// The mean length, in packets, of a run of lost packets: `None` loses
    /// packets independently; `Some(b)` makes loss bursty (Gilbert–Elliott,
    /// see the module docs) with bursts of `b` packets on average.
    pub loss_burst: Option<u32>,
    /// Probability that a packet is delivered twice (each copy delayed
    /// independently).
    pub duplicate: f64,
    /// Probability that a packet is held back by [`Link::reorder_delay`], so
    /// packets sent after it overtake it.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay: Duration,
    /// The largest IP packet (UDP payload plus 28 bytes of IPv4 or 48 bytes of
    /// IPv6 and UDP headers) the link carries; larger ones are dropped.
    pub mtu: usize,
    /// Routers on the link: each decrements the IP TTL by one.
    pub hops: u8,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            loss_burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: 1500,
            hops: 0,
        }
    }
}

/// The state of one direction of a link's bursty-loss chain (in a burst or
/// not); the world keeps one per attachment and direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Burst {
    bad: bool,
}

/// The delays of the copies of a packet that made it across (usually one).
pub(crate) type Copies = SmallVec<[Duration; 2]>;

impl Link {
    /// A link with this one-way latency and otherwise default properties.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// Sets the jitter.
    pub fn jitter(self, jitter: Duration) -> Self {
        Self { jitter, ..self }
    }

    /// Sets the loss probability.
    pub fn loss(self, loss: f64) -> Self {
        Self { loss, ..self }
    }

    /// Makes the loss bursty, with runs of `mean_burst` lost packets on
    /// average (a mean of 1 or less is still a chain: a lost packet is then
    /// always followed by a delivered one).
    pub fn loss_burst(self, mean_burst: u32) -> Self {
        Self {
            loss_burst: Some(mean_burst.max(1)),
            ..self
        }
    }

    /// Sets the duplication probability.
    pub fn duplicate(self, duplicate: f64) -> Self {
        Self { duplicate, ..self }
    }

    /// Sets the reordering probability and how long reordered packets wait.
    pub fn reorder(self, reorder: f64, reorder_delay: Duration) -> Self {
        Self {
            reorder,
            reorder_delay,
            ..self
        }
    }

    /// Sets the MTU.
    pub fn mtu(self, mtu: usize) -> Self {
        Self { mtu, ..self }
    }

    /// Sets the number of routers on the link.
    pub fn hops(self, hops: u8) -> Self {
        Self { hops, ..self }
    }

    /// Sends a packet of `ip_size` bytes with `*ttl` across the link in the
    /// direction whose loss chain is `burst`: drops it, or returns the delay
    /// of each copy and leaves the decremented TTL.
    pub(crate) fn cross(
        &self,
        rng: &mut impl Rng,
        burst: &mut Burst,
        ip_size: usize,
        ttl: &mut u8,
    ) -> Result<Copies, DropReason> {
        if ip_size > self.mtu {
            return Err(DropReason::TooBig);
        }
        if *ttl <= self.hops {
            return Err(DropReason::TtlExpired);
        }
        *ttl -= self.hops;
        if self.lose(rng, burst) {
            return Err(DropReason::Lost);
        }
        let copies = if rng.random_bool(self.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        Ok((0..copies).map(|_| self.delay(rng)).collect())
    }

    /// Whether the next packet is lost, stepping the loss chain when bursty.
    ///
    /// The chain: from the good state the link turns bad with probability
    /// `p`, from the bad state it turns good with `r = 1 / mean_burst`, and a
    /// packet is lost exactly while the link is bad. Its long-run share of
    /// bad packets is `p / (p + r)`, so `p = loss · r / (1 − loss)` gives the
    /// configured loss.
    fn lose(&self, rng: &mut impl Rng, burst: &mut Burst) -> bool {
        let loss = self.loss.clamp(0.0, 1.0);
        let Some(mean) = self.loss_burst.filter(|_| loss > 0.0 && loss < 1.0) else {
            return rng.random_bool(loss);
        };
        let r = 1.0 / f64::from(mean.max(1));
        let p = (loss * r / (1.0 - loss)).min(1.0);
        let turn = if burst.bad { r } else { p };
        if rng.random_bool(turn) {
            burst.bad = !burst.bad;
        }
        burst.bad
    }

    /// One packet's delay: latency, jitter and perhaps the reordering hold.
    fn delay(&self, rng: &mut impl Rng) -> Duration {
        let max = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = rng.random_range(0..=max);
        let hold = if rng.random_bool(self.reorder.clamp(0.0, 1.0)) {
            self.reorder_delay
        } else {
            Duration::ZERO
        };
        self.latency
            .saturating_add(Duration::from_nanos(jitter))
            .saturating_add(hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn oversized_packets_are_dropped_before_anything_else() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut ttl = 64;
        let link = Link::default().mtu(1280);
        assert_eq!(
            link.cross(&mut rng, &mut Burst::default(), 1281, &mut ttl),
            Err(DropReason::TooBig)
        );
        assert_eq!(
            link.cross(&mut rng, &mut Burst::default(), 1280, &mut ttl)
                .map(|c| c.len()),
            Ok(1)
        );
    }

    #[test]
    fn each_router_decrements_the_ttl_and_the_last_one_drops_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let link = Link::default().hops(3);
        let mut ttl = 4;
        assert!(
            link.cross(&mut rng, &mut Burst::default(), 100, &mut ttl)
                .is_ok()
        );
        assert_eq!(ttl, 1);
        let mut ttl = 3;
        assert_eq!(
            link.cross(&mut rng, &mut Burst::default(), 100, &mut ttl),
            Err(DropReason::TtlExpired)
        );
    }

    /// The share lost and the mean run of lost packets over `n` packets.
    fn loss_runs(link: Link, n: usize) -> (f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut burst = Burst::default();
        let (mut lost, mut runs, mut previous) = (0usize, 0usize, false);
        for _ in 0..n {
            let mut ttl = 64;
            let dropped = link.cross(&mut rng, &mut burst, 100, &mut ttl).is_err();
            lost += usize::from(dropped);
            runs += usize::from(dropped && !previous);
            previous = dropped;
        }
        (lost as f64 / n as f64, lost as f64 / runs.max(1) as f64)
    }

    #[test]
    fn bursty_loss_keeps_the_share_and_clusters_the_drops() {
        let (share, run) = loss_runs(Link::default().loss(0.08).loss_burst(20), 400_000);
        assert!((0.07..0.09).contains(&share), "{share}");
        assert!((17.0..23.0).contains(&run), "{run}");
        let (share, run) = loss_runs(Link::default().loss(0.08), 400_000);
        assert!((0.075..0.085).contains(&share), "{share}");
        assert!(run < 1.2, "independent loss has runs of about 1: {run}");
    }

    #[test]
    fn bursty_loss_at_the_limits() {
        assert_eq!(
            loss_runs(Link::default().loss(0.0).loss_burst(5), 1000).0,
            0.0
        );
        assert_eq!(
            loss_runs(Link::default().loss(1.0).loss_burst(5), 1000).0,
            1.0
        );
        // A mean burst of 0 is taken as 1: still a chain, still the share.
        let (share, _) = loss_runs(Link::default().loss(0.1).loss_burst(0), 200_000);
        assert!((0.09..0.11).contains(&share), "{share}");
    }

    #[test]
    fn delays_stay_within_latency_plus_jitter_plus_hold() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ms = Duration::from_millis;
        let link = Link::with_latency(ms(10))
            .jitter(ms(5))
            .reorder(0.5, ms(20));
        let mut held = 0;
        for _ in 0..1000 {
            let mut ttl = 64;
            let d = link
                .cross(&mut rng, &mut Burst::default(), 100, &mut ttl)
                .unwrap()[0];
            assert!(d >= ms(10) && d <= ms(35), "{d:?}");
            held += usize::from(d > ms(15));
        }
        assert!((400..600).contains(&held), "{held}");
    }
}
