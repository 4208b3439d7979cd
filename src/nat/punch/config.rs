//! The punch machine's timing and limits, with their reasons.

use std::time::Duration;

/// How a punch paces its probes, grows its opening TTL and retries. See the module docs of
/// [`crate::nat::punch`] for the strategy these serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchConfig {
    /// The largest IP TTL of the opener's opening burst in the first attempt (default 2:
    /// enough to cross one NAT right in front of the host and die at the next router).
    /// `0`: no opening burst at all (the naive simultaneous punch).
    pub first_open_ttl: u8,
    /// How much the largest opening TTL grows with each later attempt (default 2), so a
    /// host behind two NATs (home router inside carrier-grade NAT) opens both by its
    /// second attempt.
    pub open_ttl_step: u8,
    /// The largest opening TTL ever used (default 8).
    pub max_open_ttl: u8,
    /// The shortest lead the opener's burst has over the follower's first probe; the lead
    /// is `max(min_lead, rtt / 4)` and must outlast the error of the agreed start time
    /// (default 20 ms). `0` with `first_open_ttl: 0` is the naive race.
    pub min_lead: Duration,
    /// The shortest gap between our first packets to two destinations while our own NAT
    /// maps each destination to its next sequential port (default 25 ms; the gap is
    /// `max(this, rtt / 8)`, see [`PunchConfig::touch_gap`]). `0`: no gap.
    pub min_touch_gap: Duration,
    /// The gap after the first round of checks; it doubles after each round (default 50 ms,
    /// RFC 8445's Ta).
    pub first_interval: Duration,
    /// The longest gap between rounds (default 500 ms).
    pub max_interval: Duration,
    /// How long one attempt probes at least; the attempt lasts `max(this, 8 · rtt)`
    /// (default 4 s).
    pub attempt_duration: Duration,
    /// How long both sides stay silent between attempts: longer than Linux keeps an
    /// unreplied UDP conntrack entry (30 s), so a stale entry planted by a lost race is
    /// gone before the next attempt (default 31 s).
    pub stale_wait: Duration,
    /// Attempts in all (default 3, as in DCUtR).
    pub max_attempts: u32,
    /// The most probes one attempt sends, triggered checks included (default 100, RFC 8445
    /// §19.5.1's bound on connectivity checks).
    pub max_checks_per_attempt: u32,
    /// The most remote candidates probed, peer-reflexive ones included (default 16).
    pub max_candidates: usize,
    /// When both sides offered a global IPv6 candidate, how long an answer on any other
    /// pair waits for one on an IPv6 pair before it wins: `max(this, rtt)` (default 100 ms:
    /// another round of checks, 50 ms later, and its round trip). RFC 8421 prefers IPv6
    /// pairs; the wait keeps a broken IPv6 path from delaying the punch by more than that.
    pub ipv6_grace: Duration,
    /// Birthday search, hard side: how many extra sockets to open, each opening one
    /// mapping of its NAT toward the peer (default 256, as Tailscale). With `n` sockets and
    /// `k` probes over the 64,512 ports of a Linux NAT, the search finds one with
    /// probability `1 - (1 - n/64512)^k`.
    pub search_sockets: u16,
    /// Birthday search, easy side: the most random ports probed per attempt (default 2,048:
    /// 99.97% with 256 sockets; 1,024 would give 98%).
    pub search_probes: u32,
    /// Birthday search, easy side: probes per pacing tick (default 10).
    pub search_batch: u32,
    /// Birthday search, easy side: the gap between pacing ticks (default 10 ms, so 1,000
    /// probes a second and the whole budget in about 2 s).
    pub search_interval: Duration,
    /// Birthday search, easy side: the random-port probes the node sends toward one
    /// target network (IPv4 /24, IPv6 /48) over every punch and every peer together,
    /// refilled over [`PunchConfig::search_network_refill`] (default 6,144: one punch's
    /// three attempts).
    pub search_network_probes: u64,
    /// How long a target network's search budget takes to refill completely (default
    /// 10 min: about 10 probes, 1 KB, a second per network in the long run).
    pub search_network_refill: Duration,
    /// The most target networks whose search budget is remembered (default 1,024; when
    /// full and none has refilled, a new network gets no search).
    pub search_networks: usize,
}

impl Default for PunchConfig {
    fn default() -> Self {
        Self {
            first_open_ttl: 2,
            open_ttl_step: 2,
            max_open_ttl: 8,
            min_lead: Duration::from_millis(20),
            min_touch_gap: Duration::from_millis(25),
            first_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(500),
            attempt_duration: Duration::from_secs(4),
            stale_wait: Duration::from_secs(31),
            max_attempts: 3,
            max_checks_per_attempt: 100,
            max_candidates: 16,
            ipv6_grace: Duration::from_millis(100),
            search_sockets: 256,
            search_probes: 2048,
            search_batch: 10,
            search_interval: Duration::from_millis(10),
            search_network_probes: 6144,
            search_network_refill: Duration::from_secs(600),
            search_networks: 1024,
        }
    }
}

impl PunchConfig {
    /// The naive punch: no opening burst, no lead, both sides probe at the agreed time.
    /// Kept as the baseline the NAT lab measured (4 of 10 between two Linux masquerades).
    pub fn naive() -> Self {
        Self {
            first_open_ttl: 0,
            open_ttl_step: 0,
            min_lead: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The largest opening TTL of attempt `attempt` (0-based); 0 means no burst.
    pub fn open_ttl(&self, attempt: u32) -> u8 {
        if self.first_open_ttl == 0 {
            return 0;
        }
        let grown = u32::from(self.open_ttl_step).saturating_mul(attempt);
        let ttl = u32::from(self.first_open_ttl).saturating_add(grown);
        u8::try_from(ttl.min(u32::from(self.max_open_ttl))).unwrap_or(self.max_open_ttl)
    }

    /// The lead for a measured `rtt`.
    pub fn lead(&self, rtt: Duration) -> Duration {
        if self.min_lead.is_zero() {
            return Duration::ZERO;
        }
        self.min_lead.max(rtt / 4)
    }

    /// How long after the agreed start the follower's first full-TTL probe leaves, for a
    /// measured `rtt` of the relayed connection: half the round trip plus one lead.
    ///
    /// The opener's burst opens its NAT only once it has crossed the opener's own access
    /// link, and a slow one (a cellular or satellite hop between a host and its carrier NAT)
    /// may take up to half the relayed round trip. A follower probing one lead after the
    /// start would reach the opener's NAT before the burst and plant the entry the burst is
    /// there to prevent (the ladder's satellite rung saw it: the follower's probe arrived
    /// 100 ms before the opener's burst, 750 ms into a 757 ms round trip). `0` when there is
    /// no lead (the naive race).
    pub fn follow_after(&self, rtt: Duration) -> Duration {
        let lead = self.lead(rtt);
        if lead.is_zero() {
            return Duration::ZERO;
        }
        (rtt / 2).saturating_add(lead)
    }

    /// How long after the agreed start the opener's own full-TTL probes (and its opening
    /// TTLs that might reach the peer's NAT) leave: once the follower's first probe
    /// ([`PunchConfig::follow_after`]) has crossed the follower's own access link, up to half
    /// the round trip, and left its NAT, with one lead more for the error of the start.
    pub fn open_after(&self, rtt: Duration) -> Duration {
        let lead = self.lead(rtt);
        if lead.is_zero() {
            return Duration::ZERO;
        }
        self.follow_after(rtt)
            .saturating_add(rtt / 2)
            .saturating_add(lead)
    }

    /// The gap between our first packets to two destinations, for a measured `rtt`, when
    /// our NAT maps each new destination to its next port (`max(min_touch_gap, rtt / 8)`,
    /// at most 100 ms): wider than the jitter of the link in front of our NAT, which would
    /// otherwise reorder them and with them the ports the peer predicted (the ladder's
    /// jitter is at most an eighth of its relayed round trip).
    pub fn touch_gap(&self, rtt: Duration) -> Duration {
        if self.min_touch_gap.is_zero() {
            return Duration::ZERO;
        }
        self.min_touch_gap
            .max(rtt / 8)
            .min(Duration::from_millis(100))
    }

    /// How long one attempt lasts for a measured `rtt`.
    pub fn attempt_len(&self, rtt: Duration) -> Duration {
        self.attempt_duration.max(rtt.saturating_mul(8))
    }

    /// How long an answer on a non-IPv6 pair waits for one on an IPv6 pair, for a
    /// measured `rtt` ([`PunchConfig::ipv6_grace`]).
    pub fn ipv6_wait(&self, rtt: Duration) -> Duration {
        self.ipv6_grace.max(rtt)
    }

    /// The gap after round `round` (0-based).
    pub fn interval(&self, round: u32) -> Duration {
        let doubled = self.first_interval.saturating_mul(1u32 << round.min(16));
        doubled.min(self.max_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_ttl_starts_low_and_grows_to_its_cap() {
        let config = PunchConfig::default();
        let ttls: Vec<u8> = (0..5).map(|a| config.open_ttl(a)).collect();
        assert_eq!(ttls, [2, 4, 6, 8, 8]);
        assert_eq!(PunchConfig::naive().open_ttl(3), 0);
    }

    #[test]
    fn the_follower_waits_half_a_round_trip_and_a_lead_the_opener_a_round_trip_and_two() {
        let config = PunchConfig::default();
        let ms = Duration::from_millis;
        // 757 ms: the ladder's satellite rung, relayed.
        assert_eq!(config.follow_after(ms(757)), ms(757) / 2 + ms(757) / 4);
        assert_eq!(config.open_after(ms(757)), ms(757) + ms(757) / 2);
        // A short round trip keeps the 20 ms lead.
        assert_eq!(config.follow_after(ms(10)), ms(25));
        assert_eq!(config.open_after(ms(10)), ms(50));
        // The naive race probes at the start on both sides.
        let naive = PunchConfig::naive();
        assert_eq!(naive.follow_after(ms(757)), Duration::ZERO);
        assert_eq!(naive.open_after(ms(757)), Duration::ZERO);
    }

    #[test]
    fn first_touches_are_spaced_wider_than_an_eighth_of_the_round_trip() {
        let config = PunchConfig::default();
        let ms = Duration::from_millis;
        assert_eq!(config.touch_gap(ms(40)), ms(25));
        assert_eq!(config.touch_gap(ms(560)), ms(70));
        assert_eq!(config.touch_gap(ms(2000)), ms(100));
        let off = PunchConfig {
            min_touch_gap: Duration::ZERO,
            ..config
        };
        assert_eq!(off.touch_gap(ms(560)), Duration::ZERO);
    }

    #[test]
    fn intervals_double_up_to_the_cap() {
        let config = PunchConfig::default();
        let ms: Vec<u128> = (0..6).map(|r| config.interval(r).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 500, 500]);
    }
}
