//! Whether a direct path still answers: STUN Binding probes at a steady pace, dead after a
//! few unanswered in a row.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Transmit;
use crate::nat::punch::SessionTag;
use crate::nat::stun::{Class, Message, Method, TransactionId, decode};

/// Marks liveness probes' transaction ids (bit 30 of the counter word), apart from the
/// punch's own probes, which share the session tag.
const LIVENESS_BIT: u32 = 1 << 30;

/// Probes one direct path and tells when it stopped answering.
///
/// Every `interval` it sends a Binding request carrying the session tag (the peer's punch
/// machine answers those); the path is dead when nothing was answered for `interval ·
/// (misses + 1)`. Pure: feed it time and datagrams, drain its transmits.
#[derive(Debug)]
pub struct Liveness {
    remote: SocketAddr,
    tag: SessionTag,
    interval: Duration,
    misses: u32,
    next_probe: Instant,
    last_heard: Instant,
    counter: u32,
    outstanding: BTreeMap<TransactionId, Instant>,
    out: VecDeque<Transmit>,
    rtt: Option<Duration>,
}

impl Liveness {
    /// Starts watching `remote`, which answered just now; the first probe goes one
    /// `interval` from now.
    pub fn new(
        now: Instant,
        remote: SocketAddr,
        tag: SessionTag,
        interval: Duration,
        misses: u32,
    ) -> Self {
        Self {
            remote,
            tag,
            interval,
            misses,
            next_probe: now.checked_add(interval).unwrap_or(now),
            last_heard: now,
            counter: 0,
            outstanding: BTreeMap::new(),
            out: VecDeque::new(),
            rtt: None,
        }
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
        let Ok(payload) = Message::binding(Class::Request, id).encode() else {
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

    #[test]
    fn answered_probes_keep_the_path_alive_and_silence_kills_it() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let peer: SocketAddr = "198.51.100.2:4433".parse().unwrap();
        let mut live = Liveness::new(t0, peer, SessionTag(*b"macpunch"), ms(100), 3);
        assert_eq!(live.poll_timeout(), t0 + ms(100));
        for step in 1..=10u64 {
            let now = t0 + ms(100 * step);
            live.handle_timeout(now);
            let probe = live.poll_transmit().expect("a probe per interval");
            assert_eq!(probe.destination, peer);
            let request = decode(&probe.payload).unwrap().message;
            let mut answer = Message::binding(Class::Success, request.transaction_id);
            answer.attributes.push(Attribute::XorMappedAddress(peer));
            let answer = answer.encode().unwrap();
            assert!(!live.handle_datagram(now, "192.0.2.9:1".parse().unwrap(), b"junk"));
            assert!(live.handle_datagram(now + ms(20), peer, &answer));
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
}
