//! Whether a direct path still answers, judged by what comes back: authentic traffic of
//! the peer (QUIC packets that decrypt, answers to our probes) keeps it alive; STUN
//! Binding probes go out only while we wait for the peer, dead after a few unanswered.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Transmit;
use crate::nat::punch::SessionTag;
use crate::nat::stun::{Class, IntegrityKey, Message, Method, TransactionId, decode};

/// Marks liveness probes' transaction ids (bit 30 of the counter word), apart from the
/// punch's own probes, which share the session tag.
const LIVENESS_BIT: u32 = 1 << 30;

/// Watches one direct path and tells when it stopped answering.
///
/// The Node reports each packet it sends on the path ([`Liveness::sent`]) and each
/// authentic packet of the peer that came over it ([`Liveness::heard`]); only packets that
/// elicit an acknowledgement count as sent, so a bare ACK waits for nothing. While traffic
/// flows both ways nothing extra is sent; an idle path costs one QUIC PING per keep-alive
/// period, asked for by the side given one ([`Liveness::with_keep_alive`]) and answered by
/// the peer's ACK. Once something we sent has waited `interval` without a word back, a Binding
/// request carrying the session tag goes out every `interval` (the peer's punch machine
/// answers those); the path is dead when we waited `interval · (misses + 1)`. Probes and
/// answers carry MESSAGE-INTEGRITY-SHA256 under the session's key: an answer that does not
/// check keeps nothing alive. Pure: feed it time and datagrams, drain its transmits.
#[derive(Debug)]
pub struct Liveness {
    remote: SocketAddr,
    /// The extra socket the path uses on our side; `None`: the main socket.
    local: Option<SocketAddr>,
    tag: SessionTag,
    key: IntegrityKey,
    interval: Duration,
    misses: u32,
    /// The first packet we sent after we last heard from the peer; `None` while nothing
    /// waits for an answer.
    waiting_since: Option<Instant>,
    /// The next probe, while we wait.
    next_probe: Option<Instant>,
    counter: u32,
    outstanding: BTreeMap<TransactionId, Instant>,
    out: VecDeque<Transmit>,
    rtt: Option<Duration>,
    unauthenticated: u64,
    /// After how long without an ack-eliciting packet of ours the path wants a QUIC PING
    /// (`None`: never; the other side keeps it alive).
    keep_alive: Option<Duration>,
    /// When we last sent an ack-eliciting packet on the path (or asked for a PING).
    last_sent: Option<Instant>,
    /// A PING is due ([`Liveness::poll_ping`]).
    ping: bool,
    /// When an authentic QUIC packet of the peer first came over the path
    /// ([`Liveness::heard_quic`]): the peer sends on it since.
    peer_sends_since: Option<Instant>,
}

impl Liveness {
    /// Starts watching `remote`, which answered just now. Probes are signed with `key`,
    /// answers must be.
    pub fn new(
        remote: SocketAddr,
        tag: SessionTag,
        key: IntegrityKey,
        interval: Duration,
        misses: u32,
    ) -> Self {
        Self {
            remote,
            local: None,
            tag,
            key,
            interval,
            misses,
            waiting_since: None,
            next_probe: None,
            counter: 0,
            outstanding: BTreeMap::new(),
            out: VecDeque::new(),
            rtt: None,
            unauthenticated: 0,
            keep_alive: None,
            last_sent: None,
            ping: false,
            peer_sends_since: None,
        }
    }

    /// Sends the probes from the extra socket `local` (the path's, when the birthday search
    /// found it; `None`: the main socket).
    pub fn from_socket(mut self, local: Option<SocketAddr>) -> Self {
        self.local = local;
        self
    }

    /// Has the watch ask for a QUIC PING ([`Liveness::poll_ping`]) once `every` passed
    /// without an ack-eliciting packet of ours on the path, counting from `now`: one side
    /// of an idle direct path keeps its NAT bindings open, and the PING's acknowledgement
    /// (or its absence) tells whether the path still answers.
    pub fn with_keep_alive(mut self, now: Instant, every: Duration) -> Self {
        self.keep_alive = Some(every);
        self.last_sent = Some(now);
        self
    }

    /// The peer moved to `remote` (its NAT rebound; the connection followed it on an
    /// authentic packet, which counts as hearing from it): watch there from now on,
    /// forgetting the probes sent to the old address.
    pub fn follow(&mut self, remote: SocketAddr) {
        self.remote = remote;
        self.outstanding.clear();
        self.heard();
    }

    /// We sent an ack-eliciting packet on the path at `now`: from now on we wait for the
    /// peer.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(Some(now));
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
            self.next_probe = now.checked_add(self.interval);
        }
    }

    /// Whether something we sent waits for a word from the peer.
    pub fn waiting(&self) -> bool {
        self.waiting_since.is_some()
    }

    /// Authentic traffic of the peer came over the path: nothing waits any more.
    pub fn heard(&mut self) {
        self.waiting_since = None;
        self.next_probe = None;
    }

    /// An authentic QUIC packet of the peer came over the path at `now`: nothing waits,
    /// and the peer has moved its own traffic onto the path (an answer to our probe only
    /// says its punch machine answers).
    pub fn heard_quic(&mut self, now: Instant) {
        self.peer_sends_since.get_or_insert(now);
        self.heard();
    }

    /// Whether a packet of the peer that came out of the relay circuit at `now` says the
    /// peer has fallen back to it: our path is in doubt ([`Liveness::suspect`]), or the
    /// peer has sent on the path for a dead window already, so the packet is no straggler
    /// it sent over the relay before its own switch. Why (issue 14's link ladder, slow 3G,
    /// seed 8, open × full-cone lost 736): a burst of loss on A's uplink made B find the
    /// direct path dead while A still heard B on it; A, not in doubt, stayed direct, the
    /// route then broke, and B judged its circuit silent (A's acknowledgements went into
    /// the dead path) before A found the path dead 5 s after B.
    pub fn peer_fell_back(&self, now: Instant) -> bool {
        let window = self.dead_window();
        self.suspect(now)
            || (self.peer_sends_since)
                .is_some_and(|since| now.saturating_duration_since(since) >= window)
    }

    /// Answers to our probes whose MESSAGE-INTEGRITY-SHA256 was missing or wrong (ignored).
    pub fn unauthenticated(&self) -> u64 {
        self.unauthenticated
    }

    /// The watched address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The last probe's round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Claims an answer to one of our probes from the watched address.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> bool {
        let Ok(decoded) = decode(payload) else {
            return false;
        };
        let message = decoded.message;
        if message.method != Method::BINDING || message.class != Class::Success {
            return false;
        }
        if !self.outstanding.contains_key(&message.transaction_id) {
            return false;
        }
        if !self.key.verifies(payload) {
            self.unauthenticated += 1;
            return true;
        }
        let Some(sent) = self.outstanding.remove(&message.transaction_id) else {
            return false;
        };
        if from == self.remote {
            self.rtt = Some(now.saturating_duration_since(sent));
            self.heard();
        }
        true
    }

    /// Sends the probes that are due, and asks for a PING when the keep-alive is.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ping_at().is_some_and(|at| now >= at) {
            self.ping = true;
            self.last_sent = Some(now);
        }
        while let Some(at) = self.next_probe.filter(|at| now >= *at) {
            self.probe(at);
            self.next_probe = Some(at.checked_add(self.interval).unwrap_or(now));
        }
        // Probes older than the dead window can no longer matter.
        let window = self.dead_window();
        self.outstanding
            .retain(|_, sent| now.saturating_duration_since(*sent) <= window);
    }

    /// True when what we sent has waited two probe intervals: the path may be dying (the
    /// peer's NAT rebooted, say).
    pub fn suspect(&self, now: Instant) -> bool {
        self.waited(now) >= self.interval.saturating_mul(2)
    }

    /// True once what we sent waited the dead window without a word back.
    pub fn is_dead(&self, now: Instant) -> bool {
        self.waiting_since.is_some() && self.waited(now) >= self.dead_window()
    }

    /// How long what we sent may wait before the path is dead: `interval`
    /// once per allowed miss, and once more.
    pub fn dead_window(&self) -> Duration {
        self.interval.saturating_mul(self.misses.saturating_add(1))
    }

    /// When the next probe is due, or the path would be declared dead, or (while nothing
    /// waits) the keep-alive; `None` while nothing waits and no keep-alive is kept.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Some(since) = self.waiting_since else {
            return self.ping_at();
        };
        let dead = since.checked_add(self.dead_window()).unwrap_or(since);
        Some(self.next_probe.map_or(dead, |probe| probe.min(dead)))
    }

    /// The next probe to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Whether a QUIC PING is due on the path's connection (once per keep-alive).
    pub fn poll_ping(&mut self) -> bool {
        std::mem::take(&mut self.ping)
    }

    /// When the keep-alive PING is due: `None` while something waits for an answer (the
    /// probes judge the path then) or without a keep-alive.
    fn ping_at(&self) -> Option<Instant> {
        if self.waiting_since.is_some() {
            return None;
        }
        let (last, every) = (self.last_sent?, self.keep_alive?);
        Some(last.checked_add(every).unwrap_or(last))
    }

    /// How long what we sent has waited by `now` (zero while nothing waits).
    fn waited(&self, now: Instant) -> Duration {
        self.waiting_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    fn probe(&mut self, at: Instant) {
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.tag.0);
        id[8..]
            .copy_from_slice(&(LIVENESS_BIT | (self.counter & (LIVENESS_BIT - 1))).to_be_bytes());
        self.counter = self.counter.wrapping_add(1);
        let id = TransactionId(id);
        self.outstanding.insert(id, at);
        let Ok(payload) = Message::binding(Class::Request, id).encode_with_integrity(&self.key)
        else {
            unreachable!("a Binding request without attributes encodes")
        };
        self.out.push_back(Transmit {
            source: self.local,
            destination: self.remote,
            payload,
            segment_size: None,
            ttl: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::stun::Attribute;

    const KEY: IntegrityKey = IntegrityKey([7; 32]);

    fn watch(peer: SocketAddr) -> Liveness {
        let tag = SessionTag(*b"macpunch");
        Liveness::new(peer, tag, KEY, Duration::from_millis(100), 3)
    }

    /// The peer's answer to `probe`, signed with `key` (`None`: unsigned).
    fn answer(probe: &Transmit, key: Option<&IntegrityKey>) -> bytes::Bytes {
        let request = decode(&probe.payload).unwrap().message;
        let mut answer = Message::binding(Class::Success, request.transaction_id);
        answer
            .attributes
            .push(Attribute::XorMappedAddress(probe.destination));
        match key {
            Some(key) => answer.encode_with_integrity(key).unwrap(),
            None => answer.encode().unwrap(),
        }
    }

    #[test]
    fn traffic_both_ways_and_idleness_send_no_probe() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let mut live = watch("198.51.100.2:4433".parse().unwrap());
        assert_eq!(live.poll_timeout(), None, "idle: nothing to wait for");
        for step in 0..100u64 {
            let now = t0 + ms(20 * step);
            live.sent(now);
            live.handle_timeout(now + ms(10));
            live.heard();
            assert_eq!(live.poll_timeout(), None);
        }
        live.handle_timeout(t0 + ms(60_000));
        assert!(live.poll_transmit().is_none(), "not one probe");
        assert!(!live.is_dead(t0 + ms(60_000)));
    }

    #[test]
    fn probes_go_out_while_we_wait_and_an_answer_ends_the_wait() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let peer: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        let mut live = watch(peer);
        live.sent(t0);
        live.sent(t0 + ms(50));
        assert_eq!(
            live.poll_timeout(),
            Some(t0 + ms(100)),
            "from the first send"
        );
        live.handle_timeout(t0 + ms(100));
        let probe = live
            .poll_transmit()
            .expect("a probe after an interval of waiting");
        assert_eq!(probe.destination, peer);
        assert!(KEY.verifies(&probe.payload), "probes are signed");
        assert!(!live.handle_datagram(t0 + ms(110), "192.0.2.9:1".parse().unwrap(), b"junk"));
        assert!(live.suspect(t0 + ms(200)) && !live.suspect(t0 + ms(199)));
        assert!(live.handle_datagram(t0 + ms(120), peer, &answer(&probe, Some(&KEY))));
        assert_eq!(live.rtt(), Some(ms(20)));
        assert!(!live.waiting() && live.poll_timeout().is_none());
        assert!(!live.is_dead(t0 + ms(10_000)));
    }

    #[test]
    fn a_relayed_packet_says_the_peer_fell_back_when_in_doubt_or_a_dead_window_after_it_sent_here()
    {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let mut live = watch("198.51.100.2:4433".parse().unwrap());
        // The peer's QUIC has not been heard on the path: a relayed packet may be one it
        // sent before its switch, unless our path is in doubt.
        live.sent(t0);
        assert!(!live.peer_fell_back(t0 + ms(199)));
        assert!(live.peer_fell_back(t0 + ms(200)), "in doubt");
        // A probe answer is the peer's punch machine, not its traffic.
        live.heard();
        assert!(!live.peer_fell_back(t0 + ms(10_000)));
        // Its QUIC heard here at 1 s: a relayed packet within the dead window (400 ms)
        // may still be a straggler; after it, the peer has fallen back.
        live.heard_quic(t0 + ms(1000));
        live.heard_quic(t0 + ms(1300));
        assert!(!live.peer_fell_back(t0 + ms(1399)));
        assert!(live.peer_fell_back(t0 + ms(1400)));
    }

    #[test]
    fn silence_after_a_send_kills_the_path() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let mut live = watch("198.51.100.2:4433".parse().unwrap());
        live.sent(t0);
        for step in 1..=3u64 {
            live.handle_timeout(t0 + ms(100 * step));
        }
        let probes = std::iter::from_fn(|| live.poll_transmit()).count();
        assert_eq!(probes, 3, "one each interval while waiting");
        assert!(!live.is_dead(t0 + ms(399)));
        assert!(live.is_dead(t0 + ms(400)));
        assert_eq!(live.poll_timeout(), Some(t0 + ms(400)));
    }

    #[test]
    fn an_idle_path_with_a_keep_alive_asks_for_one_ping_per_period_and_none_while_busy() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let every = ms(15_000);
        let mut live = watch("198.51.100.2:4433".parse().unwrap()).with_keep_alive(t0, every);
        assert_eq!(live.poll_timeout(), Some(t0 + every));
        live.handle_timeout(t0 + ms(14_999));
        assert!(!live.poll_ping(), "not before the period");
        // Traffic both ways pushes the keep-alive back.
        live.sent(t0 + ms(10_000));
        live.heard();
        assert_eq!(live.poll_timeout(), Some(t0 + ms(25_000)));
        let mut pings = 0;
        for second in 10..=70u64 {
            live.handle_timeout(t0 + ms(1000 * second));
            if live.poll_ping() {
                pings += 1;
                // The PING goes out and is acknowledged.
                live.sent(t0 + ms(1000 * second));
                live.heard();
            }
        }
        assert_eq!(pings, 4, "one a period from 25 s to 70 s");
        assert!(
            live.poll_transmit().is_none(),
            "no probe: every PING was answered"
        );
        // While a packet waits, the probes judge the path and no PING is asked.
        live.sent(t0 + ms(71_000));
        assert_eq!(live.poll_timeout(), Some(t0 + ms(71_100)));
        live.handle_timeout(t0 + ms(90_000));
        assert!(!live.poll_ping());
    }

    #[test]
    fn without_a_keep_alive_an_idle_path_asks_for_nothing() {
        let t0 = crate::test_epoch();
        let mut live = watch("198.51.100.2:4433".parse().unwrap());
        live.handle_timeout(t0 + Duration::from_secs(3600));
        assert!(!live.poll_ping());
        assert_eq!(live.poll_timeout(), None);
    }

    #[test]
    fn forged_answers_keep_nothing_alive() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let peer: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        let mut live = watch(peer);
        let wrong = IntegrityKey([8; 32]);
        live.sent(t0);
        for step in 1..=3u64 {
            let now = t0 + ms(100 * step);
            live.handle_timeout(now);
            let probe = live.poll_transmit().expect("a probe per interval");
            // An on-path spoofer saw the probe and answers it from the peer's address.
            assert!(live.handle_datagram(now, peer, &answer(&probe, None)));
            assert!(live.handle_datagram(now, peer, &answer(&probe, Some(&wrong))));
        }
        assert_eq!(live.unauthenticated(), 6);
        assert_eq!(live.rtt(), None);
        assert!(live.is_dead(t0 + ms(400)));
    }
}
