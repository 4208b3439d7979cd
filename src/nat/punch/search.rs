//! The two halves of the birthday search for a peer behind a hard NAT (see the module docs
//! of [`crate::nat::punch`]): the hard side's extra sockets and the easy side's paced draw
//! of random ports.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::PunchConfig;

/// The lowest port a NAT hands out (Linux masquerade draws from 1024–65535).
const LOWEST_PORT: u16 = 1024;

/// The hard side's extra sockets: asked for once, adopted as the driver reports them, at
/// most as many as asked.
#[derive(Debug)]
pub(super) struct HardSockets {
    wanted: usize,
    open: Vec<SocketAddr>,
}

impl HardSockets {
    /// Sockets still to be asked for: `wanted` of them.
    pub(super) fn new(wanted: u16) -> Self {
        Self {
            wanted: usize::from(wanted),
            open: Vec::new(),
        }
    }

    /// How many sockets to ask the driver for.
    pub(super) fn wanted(&self) -> u16 {
        u16::try_from(self.wanted).unwrap_or(u16::MAX)
    }

    /// Takes the sockets the driver opened, up to the number asked for; returns the new
    /// ones kept and the ones beyond the cap (or already known), which the caller closes.
    pub(super) fn adopt(&mut self, opened: Vec<SocketAddr>) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let (mut kept, mut surplus) = (Vec::new(), Vec::new());
        for addr in opened {
            if self.open.len() < self.wanted && !self.open.contains(&addr) {
                self.open.push(addr);
                kept.push(addr);
            } else if !self.open.contains(&addr) {
                surplus.push(addr);
            }
        }
        (kept, surplus)
    }

    /// Whether `local` is one of our extra sockets.
    pub(super) fn owns(&self, local: SocketAddr) -> bool {
        self.open.contains(&local)
    }

    /// The open sockets.
    pub(super) fn open(&self) -> &[SocketAddr] {
        &self.open
    }

    /// Forgets every socket but `keep`; returns the ones to close.
    pub(super) fn release_all_but(&mut self, keep: Option<SocketAddr>) -> Vec<SocketAddr> {
        let (kept, released) = self.open.drain(..).partition(|a| Some(*a) == keep);
        self.open = kept;
        self.wanted = self.open.len();
        released
    }
}

/// The easy side's draw: distinct random ports of the hard side's NAT address, a batch per
/// tick, up to the attempt's budget and the punch's grant.
#[derive(Debug)]
pub(super) struct PortDraw {
    rng: ChaCha8Rng,
    target: IpAddr,
    drawn: BTreeSet<u16>,
    next: Option<Instant>,
    /// Probes the punch may still send over all its attempts.
    left: u64,
}

impl PortDraw {
    /// A draw toward `target` (the peer's NAT address as an authority vouched for it),
    /// seeded with `seed`, granted nothing yet ([`PortDraw::grant`]); idle until
    /// [`PortDraw::begin`].
    pub(super) fn new(target: IpAddr, seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            target,
            drawn: BTreeSet::new(),
            next: None,
            left: 0,
        }
    }

    /// The address the draw probes.
    pub(super) fn target(&self) -> IpAddr {
        self.target
    }

    /// Sets how many probes the punch may send over all its attempts.
    pub(super) fn grant(&mut self, probes: u64) {
        self.left = probes;
    }

    /// Starts an attempt's draw at `at` with a fresh budget (its NAT forgot the last
    /// attempt's mappings during the silence between attempts).
    pub(super) fn begin(&mut self, at: Instant) {
        self.drawn.clear();
        self.next = Some(at);
    }

    /// Stops drawing.
    pub(super) fn stop(&mut self) {
        self.next = None;
    }

    /// When the next batch is due; `None` when idle or the budget is spent.
    pub(super) fn due(&self) -> Option<Instant> {
        self.next
    }

    /// The batch due by `now`: up to [`PunchConfig::search_batch`] addresses at ports not
    /// drawn before in this attempt, never more than [`PunchConfig::search_probes`] in all.
    pub(super) fn batch(&mut self, now: Instant, config: &PunchConfig) -> Vec<SocketAddr> {
        let Some(next) = self.next.filter(|n| now >= *n) else {
            return Vec::new();
        };
        let budget = usize::try_from(config.search_probes).unwrap_or(usize::MAX);
        let space = usize::from(u16::MAX - LOWEST_PORT) + 1;
        let budget = budget.min(space);
        let batch = usize::try_from(config.search_batch).unwrap_or(usize::MAX);
        let mut ports = Vec::new();
        while ports.len() < batch && self.drawn.len() < budget && self.left > 0 {
            let port = self.rng.random_range(LOWEST_PORT..=u16::MAX);
            if self.drawn.insert(port) {
                self.left -= 1;
                ports.push(SocketAddr::new(self.target, port));
            }
        }
        self.next = (self.drawn.len() < budget && self.left > 0)
            .then(|| next.checked_add(config.search_interval))
            .flatten()
            .map(|n| n.max(now));
        ports
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 2], port))
    }

    #[test]
    fn hard_sockets_keep_at_most_what_was_asked_and_release_all_but_the_winner() {
        let mut sockets = HardSockets::new(2);
        assert_eq!(sockets.wanted(), 2);
        let (kept, surplus) = sockets.adopt(vec![addr(1), addr(1), addr(2), addr(3)]);
        assert_eq!(kept, [addr(1), addr(2)]);
        assert_eq!(surplus, [addr(3)]);
        assert!(sockets.owns(addr(2)) && !sockets.owns(addr(3)));
        // A late report after the cap: all surplus.
        assert_eq!(sockets.adopt(vec![addr(4)]), (vec![], vec![addr(4)]));
        assert_eq!(sockets.release_all_but(Some(addr(2))), [addr(1)]);
        assert_eq!(sockets.open(), [addr(2)]);
        assert_eq!(sockets.release_all_but(None), [addr(2)]);
        assert!(sockets.open().is_empty());
        // Released sockets are not taken again.
        assert_eq!(sockets.adopt(vec![addr(5)]), (vec![], vec![addr(5)]));
    }

    #[test]
    fn the_draw_is_paced_distinct_capped_and_restarts_per_attempt() {
        let t0 = crate::test_epoch();
        let config = PunchConfig {
            search_probes: 25,
            search_batch: 10,
            search_interval: Duration::from_millis(10),
            ..PunchConfig::default()
        };
        let ip = IpAddr::from([198, 51, 100, 7]);
        let mut draw = PortDraw::new(ip, 1);
        draw.grant(u64::MAX);
        assert!(draw.batch(t0, &config).is_empty(), "idle before begin");
        draw.begin(t0);
        let first = draw.batch(t0, &config);
        assert_eq!(first.len(), 10);
        assert!(
            first
                .iter()
                .all(|a| a.ip() == ip && a.port() >= LOWEST_PORT)
        );
        // Not due again before the interval.
        assert!(
            draw.batch(t0 + Duration::from_millis(9), &config)
                .is_empty()
        );
        assert_eq!(draw.due(), Some(t0 + Duration::from_millis(10)));
        let second = draw.batch(t0 + Duration::from_millis(10), &config);
        let third = draw.batch(t0 + Duration::from_millis(20), &config);
        assert_eq!((second.len(), third.len()), (10, 5), "capped at 25");
        assert_eq!(draw.due(), None, "the budget is spent");
        let all: BTreeSet<u16> = (first.iter().chain(&second).chain(&third))
            .map(SocketAddr::port)
            .collect();
        assert_eq!(all.len(), 25, "no port twice");
        draw.begin(t0 + Duration::from_secs(40));
        assert_eq!(draw.batch(t0 + Duration::from_secs(40), &config).len(), 10);
        draw.stop();
        assert!(draw.batch(t0 + Duration::from_secs(41), &config).is_empty());
    }

    #[test]
    fn a_budget_beyond_the_port_space_ends_when_every_port_was_drawn() {
        let t0 = crate::test_epoch();
        let config = PunchConfig {
            search_probes: u32::MAX,
            search_batch: u32::MAX,
            ..PunchConfig::default()
        };
        let mut draw = PortDraw::new(IpAddr::from([198, 51, 100, 7]), 2);
        draw.grant(u64::MAX);
        draw.begin(t0);
        assert_eq!(draw.batch(t0, &config).len(), 64512);
        assert_eq!(draw.due(), None);
    }

    #[test]
    fn the_grant_caps_the_draw_over_every_attempt() {
        let t0 = crate::test_epoch();
        let config = PunchConfig {
            search_probes: 25,
            search_batch: 10,
            ..PunchConfig::default()
        };
        let mut draw = PortDraw::new(IpAddr::from([198, 51, 100, 7]), 3);
        draw.begin(t0);
        assert!(draw.batch(t0, &config).is_empty(), "nothing granted");
        assert_eq!(draw.due(), None);
        draw.grant(30);
        draw.begin(t0);
        let sent: usize = (0..3)
            .map(|i| draw.batch(t0 + config.search_interval * i, &config).len())
            .sum();
        assert_eq!(sent, 25, "one attempt's budget");
        draw.begin(t0 + Duration::from_secs(40));
        let later = draw.batch(t0 + Duration::from_secs(40), &config);
        assert_eq!(later.len(), 5, "what is left of the grant");
        assert_eq!(draw.due(), None);
    }
}
