//! Whether a direct path still answers: STUN Binding probes at a steady pace, dead after a
//! few unanswered in a row.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Transmit;
use crate::nat::punch::SessionTag;
use crate::nat::stun::{Class, IntegrityKey, Message, Method, TransactionId, decode};

/// Marks liveness probes' transaction ids (bit 30 of the counter word), apart from the
/// punch's own probes, which share the session tag.
const LIVENESS_BIT: u32 = 1 << 30;

/// Probes one direct path and tells when it stopped answering.
///
/// Every `interval` it sends a Binding request carrying the session tag (the peer's punch
/// machine answers those); the path is dead when nothing was answered for `interval ·
/// (misses + 1)`. Probes and answers carry MESSAGE-INTEGRITY-SHA256 under the session's
/// key: an answer that does not check keeps nothing alive. Pure: feed it time and
/// datagrams, drain its transmits.
#[derive(Debug)]
pub struct Liveness {
    remote: SocketAddr,
    tag: SessionTag,
    key: IntegrityKey,
    interval: Duration,
    misses: u32,
    next_probe: Instant,
    last_heard: Instant,
    counter: u32,
    outstanding: BTreeMap<TransactionId, Instant>,
    out: VecDeque<Transmit>,
    rtt: Option<Duration>,
    unauthenticated: u64,
}

impl Liveness {
    /// Starts watching `remote`, which answered just now; the first probe goes one
    /// `interval` from now. Probes are signed with `key`, answers must be.
    pub fn new(
        now: Instant,
        remote: SocketAddr,
        tag: SessionTag,
        key: IntegrityKey,
        interval: Duration,
        misses: u32,
    ) -> Self {
        Self {
            remote,
            tag,
            key,
            interval,
            misses,
            next_probe: now.checked_add(interval).unwrap_or(now),
            last_heard: now,
            counter: 0,
            outstanding: BTreeMap::new(),
            out: VecDeque::new(),
            rtt: None,
            unauthenticated: 0,
        }
    }

    /// The peer moved to `remote` (its NAT rebound; the connection followed
    /// it on an authentic packet, which counts as hearing from it): watch
    /// there from `now` on, forgetting the probes sent to the old address.
    pub fn follow(&mut self, now: Instant, remote: SocketAddr) {
        self.remote = remote;
        self.outstanding.clear();
        self.last_heard = self.last_heard.max(now);
        self.next_probe = self.next_probe.min(now);
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
            self.last_heard = self.last_heard.max(now);
            self.rtt = Some(now.saturating_duration_since(sent));
        }
        true
    }

    /// Sends the probes that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while now >= self.next_probe {
            self.probe(self.next_probe);
            self.next_probe = self.next_probe.checked_add(self.interval).unwrap_or(now);
        }
        // Probes older than the dead window can no longer matter.
        let window = self.window();
        self.outstanding
            .retain(|_, sent| now.saturating_duration_since(*sent) <= window);
    }

    /// True when the last two probe intervals brought no answer: the path
    /// may be dying (the peer's NAT rebooted, say).
    pub fn suspect(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard) >= self.interval.saturating_mul(2)
    }

    /// True once nothing was answered for the dead window.
    pub fn is_dead(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard) >= self.window()
    }

    /// When the next probe is due, or the path would be declared dead.
    pub fn poll_timeout(&self) -> Instant {
        let dead = self
            .last_heard
            .checked_add(self.window())
            .unwrap_or(self.last_heard);
        self.next_probe.min(dead)
    }

    /// The next probe to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn window(&self) -> Duration {
        self.interval.saturating_mul(self.misses.saturating_add(1))
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
            source: None,
            destination: self.remote,
            payload,
            ttl: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::stun::Attribute;

    const KEY: IntegrityKey = IntegrityKey([7; 32]);

    fn watch(t0: Instant, peer: SocketAddr) -> Liveness {
        let tag = SessionTag(*b"macpunch");
        Liveness::new(t0, peer, tag, KEY, Duration::from_millis(100), 3)
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
    fn answered_probes_keep_the_path_alive_and_silence_kills_it() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let peer: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        let mut live = watch(t0, peer);
        assert_eq!(live.poll_timeout(), t0 + ms(100));
        for step in 1..=10u64 {
            let now = t0 + ms(100 * step);
            live.handle_timeout(now);
            let probe = live.poll_transmit().expect("a probe per interval");
            assert_eq!(probe.destination, peer);
            assert!(KEY.verifies(&probe.payload), "probes are signed");
            assert!(!live.handle_datagram(now, "192.0.2.9:1".parse().unwrap(), b"junk"));
            assert!(live.handle_datagram(now + ms(20), peer, &answer(&probe, Some(&KEY))));
            assert!(!live.is_dead(now + ms(20)));
        }
        assert_eq!(live.rtt(), Some(ms(20)));
        let quiet = t0 + ms(1020);
        for step in 1..=4u64 {
            live.handle_timeout(quiet + ms(100 * step));
        }
        assert!(!live.is_dead(quiet + ms(399)));
        assert!(live.is_dead(quiet + ms(400)));
    }

    #[test]
    fn forged_answers_keep_nothing_alive() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let peer: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        let mut live = watch(t0, peer);
        let wrong = IntegrityKey([8; 32]);
        for step in 1..=4u64 {
            let now = t0 + ms(100 * step);
            live.handle_timeout(now);
            let probe = live.poll_transmit().expect("a probe per interval");
            // An on-path spoofer saw the probe and answers it from the peer's address.
            assert!(live.handle_datagram(now, peer, &answer(&probe, None)));
            assert!(live.handle_datagram(now, peer, &answer(&probe, Some(&wrong))));
        }
        assert_eq!(live.unauthenticated(), 8);
        assert_eq!(live.rtt(), None);
        assert!(live.is_dead(t0 + ms(400)));
    }
}
