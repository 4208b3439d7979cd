//! Signed probes on a silent connection's path: proof that the peer still
//! answers while QUIC itself has backed off.
//!
//! Once data on a watched connection goes unacknowledged, QUIC's own probe
//! timer backs off, and on a path that loses packets in bursts (the loss
//! state of a radio link moves on with each packet, as netem's `gemodel`
//! does) the few packets QUIC still sends make a burst of a dozen packets
//! last seconds: to the side that waits, exactly a dead peer. From one round
//! trip into the silence the watch sends STUN Binding requests of its own on
//! the connection's path, one every
//! [`SilenceLimit::probe_every`](super::SilenceLimit) (40 ms), and the peer's
//! node answers each ([`answer`]). An answer, or a signed probe of the peer's, is a sign of
//! life: the silence is judged from it anew, so a connection is dead only
//! when its data and all those probes went unanswered. The probes also carry
//! the path through the burst: each one moves the loss state on, as QUIC's
//! backed-off packets would only seconds later.
//!
//! Requests and answers carry MESSAGE-INTEGRITY-SHA256 under a key both ends
//! export from the connection's TLS session ([`probe_key`]): nobody else can
//! answer for the peer, and the peer answers only requests signed for the
//! connection that comes from the request's address, with an answer the
//! request's size (no amplification) and at most so many a second
//! ([`ANSWER_BUDGET`]). The transaction id starts with [`PROBE_MARK`], which
//! tells them from NAT discovery's and the punch's (docs/PROTOCOL.md §11.4).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Transmit;
use crate::nat::stun::{
    Bucket, Class, IntegrityKey, Message, Method, TransactionId, decode, peek_class,
};

/// The first four bytes of a probe's transaction id ("macula probe"); the
/// other eight count the connection's probes.
pub const PROBE_MARK: [u8; 4] = *b"mprb";

/// The TLS exporter label of the probe key (RFC 8446 §7.5).
const KEY_LABEL: &[u8] = b"EXPORTER-macula-probe";

/// How many probes of one connection the peer answers: one per 10 ms, up to
/// 20 at once (a prober with the default limits sends one every 40 ms).
pub const ANSWER_BUDGET: Bucket = Bucket {
    interval: Duration::from_millis(10),
    burst: 20,
};

/// Probes kept waiting for their answer; an older one is forgotten (its
/// answer then counts for nothing).
const MAX_OUTSTANDING: usize = 64;

/// The key both ends of a connection sign its probes with, exported from its
/// TLS session; `None` before the handshake has one.
pub fn probe_key(session: &dyn quinn_proto::crypto::Session) -> Option<IntegrityKey> {
    let mut key = [0u8; 32];
    session
        .export_keying_material(&mut key, KEY_LABEL, &[])
        .ok()?;
    Some(IntegrityKey(key))
}

/// Whether `datagram` is a probe or a probe's answer (a STUN Binding message
/// whose transaction id carries [`PROBE_MARK`]); what it says is not checked.
pub fn is_probe(datagram: &[u8]) -> bool {
    peek_class(datagram).is_some() && datagram.get(8..12) == Some(&PROBE_MARK[..])
}

/// The answer to `request`, a probe signed with `key`: a Binding success
/// response with the same transaction id, signed too. `None` when `request`
/// is no probe or its signature does not check (leave it unanswered).
fn answer(key: &IntegrityKey, request: &[u8]) -> Option<Bytes> {
    let message = decode(request).ok()?.message;
    let ours = message.method == Method::BINDING
        && message.class == Class::Request
        && message.transaction_id.0[..4] == PROBE_MARK;
    if !ours || !key.verifies(request) {
        return None;
    }
    let answer = Message::binding(Class::Success, message.transaction_id);
    answer.encode_with_integrity(key).ok()
}

/// What became of a probe answer handed to [`Probes::handle_answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// The answer to one of our probes, signed by the peer: it took this
    /// round trip.
    Answer(Duration),
    /// It names one of our probes but its signature does not check (dropped).
    Unauthenticated,
    /// Not an answer to a probe of ours (already answered, forgotten, or
    /// never sent).
    Unknown,
}

/// Why a peer's probe was left unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// Over [`ANSWER_BUDGET`].
    OverBudget,
    /// Not a probe, or not signed for this connection.
    Unauthenticated,
}

/// A connection's probes (module docs): those it sends while a watched
/// silence runs, and its budget for answering the peer's. Pure: feed it
/// time and datagrams, drain its transmits.
#[derive(Debug, Default)]
pub struct Probing {
    /// Exported from the TLS session at first use.
    key: Option<IntegrityKey>,
    /// Ours, once the connection was first probed from.
    sent: Option<Probes>,
    /// The theoretical arrival time of [`ANSWER_BUDGET`].
    answer_tat: Option<Instant>,
}

impl Probing {
    /// The connection's probe key, made by `key` at first use
    /// ([`probe_key`]).
    fn key(&mut self, key: impl FnOnce() -> Option<IntegrityKey>) -> Option<IntegrityKey> {
        if self.key.is_none() {
            self.key = key();
        }
        self.key.clone()
    }

    /// Probes the peer at `remote` as `wait` asks of a silence running
    /// since `since` ([`Wait::probes`](super::Wait)), and stops once no
    /// silence runs or the connection is no longer watched so.
    pub fn steer(
        &mut self,
        key: impl FnOnce() -> Option<IntegrityKey>,
        remote: SocketAddr,
        wait: Option<super::Wait>,
        since: Option<Instant>,
    ) {
        let Some((from, every)) = wait.zip(since).and_then(|(w, since)| w.probes_from(since))
        else {
            if let Some(probes) = &mut self.sent {
                probes.stop();
            }
            return;
        };
        // The peer moved (its NAT rebound): the probes follow it.
        if self.sent.as_ref().is_none_or(|p| p.remote != remote) {
            let Some(key) = self.key(key) else {
                return;
            };
            self.sent = Some(Probes::new(remote, key));
        }
        if let Some(probes) = &mut self.sent {
            probes.start(from, every);
        }
    }

    /// The next probe, while probing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sent.as_ref().and_then(Probes::poll_timeout)
    }

    /// Sends the probe due by `now`, if one is.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(probes) = &mut self.sent {
            probes.handle_timeout(now);
        }
    }

    /// The next probe to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.sent.as_mut().and_then(Probes::poll_transmit)
    }

    /// `datagram` (a probe answer, [`is_probe`]) came from `from` at `now`.
    pub fn handle_answer(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Heard {
        match &mut self.sent {
            Some(probes) => probes.handle_answer(now, from, datagram),
            None => Heard::Unknown,
        }
    }

    /// The answer to the peer's probe `request` at `now`, within
    /// [`ANSWER_BUDGET`] (a refused one spends none of it); `key` as for
    /// [`Probing::steer`].
    pub fn answer(
        &mut self,
        now: Instant,
        key: impl FnOnce() -> Option<IntegrityKey>,
        request: &[u8],
    ) -> Result<Bytes, Unanswered> {
        let tat = ANSWER_BUDGET
            .admit(now, self.answer_tat)
            .ok_or(Unanswered::OverBudget)?;
        let key = self.key(key).ok_or(Unanswered::Unauthenticated)?;
        let answer = answer(&key, request).ok_or(Unanswered::Unauthenticated)?;
        self.answer_tat = Some(tat);
        Ok(answer)
    }
}

/// The probes one connection sends: one every interval from a given start
/// while its silence runs, matched with their answers.
#[derive(Debug)]
struct Probes {
    remote: SocketAddr,
    key: IntegrityKey,
    every: Duration,
    counter: u64,
    /// The next probe, while probing.
    next: Option<Instant>,
    /// Probes waiting for their answer, oldest first.
    outstanding: VecDeque<(TransactionId, Instant)>,
    out: VecDeque<Transmit>,
}

impl Probes {
    /// Probes for the peer at `remote`, signed with `key`, once started.
    fn new(remote: SocketAddr, key: IntegrityKey) -> Self {
        Self {
            remote,
            key,
            every: Duration::MAX,
            counter: 0,
            next: None,
            outstanding: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// Probes from `at` on, one every `every` (at least a millisecond);
    /// probing that runs already keeps its next probe.
    fn start(&mut self, at: Instant, every: Duration) {
        self.every = every.max(Duration::from_millis(1));
        self.next.get_or_insert(at);
    }

    /// No more probes (the silence ended); the answers of those sent still
    /// count.
    fn stop(&mut self) {
        self.next = None;
    }

    /// The next probe, while probing.
    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Sends the probes due by `now` (one, however late: a probe is a sign
    /// of life asked for, not a debt).
    fn handle_timeout(&mut self, now: Instant) {
        if self.next.is_some_and(|at| at <= now) {
            self.probe(now);
            self.next = now.checked_add(self.every);
        }
    }

    /// The next probe to send.
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// `datagram` came from `from` at `now`: the answer to one of our
    /// probes, or not.
    fn handle_answer(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Heard {
        let Ok(decoded) = decode(datagram) else {
            return Heard::Unknown;
        };
        let message = decoded.message;
        if from != self.remote
            || message.method != Method::BINDING
            || message.class != Class::Success
        {
            return Heard::Unknown;
        }
        let id = message.transaction_id;
        let Some(at) = self.outstanding.iter().position(|(sent, _)| *sent == id) else {
            return Heard::Unknown;
        };
        if !self.key.verifies(datagram) {
            return Heard::Unauthenticated;
        }
        let (_, sent) = self.outstanding.remove(at).unwrap_or((id, now));
        // Probes sent before it are lost or late: the path answers anyway.
        self.outstanding.drain(..at);
        Heard::Answer(now.saturating_duration_since(sent))
    }

    fn probe(&mut self, now: Instant) {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&PROBE_MARK);
        id[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter = self.counter.wrapping_add(1);
        let id = TransactionId(id);
        let Ok(payload) = Message::binding(Class::Request, id).encode_with_integrity(&self.key)
        else {
            return; // A Binding request without attributes always encodes.
        };
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((id, now));
        self.out
            .push_back(Transmit::single(None, self.remote, payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::SilenceLimit;

    const KEY: IntegrityKey = IntegrityKey([7; 32]);

    fn relay() -> SocketAddr {
        "203.0.113.1:4433".parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A relay connection's probing, started by a silence that began at `since`.
    fn probing(since: Instant) -> Probing {
        let mut probing = Probing::default();
        let wait = SilenceLimit::default().probing_wait(ms(100));
        probing.steer(|| Some(KEY), relay(), Some(wait), Some(since));
        probing
    }

    fn sent(probing: &mut Probing) -> Vec<Transmit> {
        std::iter::from_fn(|| probing.poll_transmit()).collect()
    }

    #[test]
    fn a_silence_is_probed_from_one_round_trip_on_at_the_set_pace_until_it_ends() {
        let t0 = crate::test_epoch();
        let mut probing = probing(t0);
        // One RTT and the peer's ACK delay into the silence, then every 40 ms.
        assert_eq!(probing.poll_timeout(), Some(t0 + ms(125)));
        probing.handle_timeout(t0 + ms(124));
        assert!(sent(&mut probing).is_empty());
        probing.handle_timeout(t0 + ms(125));
        probing.handle_timeout(t0 + ms(165));
        // Late: one probe, not a burst to catch up.
        probing.handle_timeout(t0 + ms(400));
        let probes = sent(&mut probing);
        assert_eq!(probes.len(), 3);
        for probe in &probes {
            assert_eq!(probe.destination, relay());
            assert!(is_probe(&probe.payload), "marked");
            assert!(KEY.verifies(&probe.payload), "signed");
        }
        assert_eq!(probing.poll_timeout(), Some(t0 + ms(440)));
        // The silence ended: no more probes.
        probing.steer(|| Some(KEY), relay(), None, None);
        assert_eq!(probing.poll_timeout(), None);
        probing.handle_timeout(t0 + ms(10_000));
        assert!(sent(&mut probing).is_empty());
    }

    #[test]
    fn a_connection_not_watched_for_probes_sends_none() {
        let t0 = crate::test_epoch();
        let mut probing = Probing::default();
        let plain = SilenceLimit::default().wait(ms(100));
        probing.steer(|| Some(KEY), relay(), Some(plain), Some(t0));
        assert_eq!(probing.poll_timeout(), None);
        // Nor without a key (the handshake has none yet).
        let wait = SilenceLimit::default().probing_wait(ms(100));
        probing.steer(|| None, relay(), Some(wait), Some(t0));
        assert_eq!(probing.poll_timeout(), None);
    }

    #[test]
    fn the_peer_answers_a_signed_probe_with_a_signed_answer_of_its_size() {
        let t0 = crate::test_epoch();
        let mut ours = probing(t0);
        ours.handle_timeout(t0 + ms(125));
        let probe = sent(&mut ours).remove(0);
        let mut peers = Probing::default();
        let answer = peers
            .answer(t0 + ms(150), || Some(KEY), &probe.payload)
            .expect("answered");
        assert_eq!(answer.len(), probe.payload.len(), "no amplification");
        assert!(KEY.verifies(&answer) && is_probe(&answer));
        assert_eq!(
            ours.handle_answer(t0 + ms(175), relay(), &answer),
            Heard::Answer(ms(50))
        );
        assert_eq!(
            ours.handle_answer(t0 + ms(180), relay(), &answer),
            Heard::Unknown,
            "answered once"
        );
    }

    #[test]
    fn forged_stray_and_misdirected_answers_count_for_nothing() {
        let t0 = crate::test_epoch();
        let mut ours = probing(t0);
        ours.handle_timeout(t0 + ms(125));
        let probe = sent(&mut ours).remove(0);
        let id = decode(&probe.payload).unwrap().message.transaction_id;
        let forged = Message::binding(Class::Success, id)
            .encode_with_integrity(&IntegrityKey([8; 32]))
            .unwrap();
        assert_eq!(
            ours.handle_answer(t0 + ms(150), relay(), &forged),
            Heard::Unauthenticated
        );
        let unsigned = Message::binding(Class::Success, id).encode().unwrap();
        assert_eq!(
            ours.handle_answer(t0 + ms(150), relay(), &unsigned),
            Heard::Unauthenticated
        );
        let answer = answer(&KEY, &probe.payload).unwrap();
        let elsewhere: SocketAddr = "192.0.2.9:4433".parse().unwrap();
        assert_eq!(
            ours.handle_answer(t0 + ms(150), elsewhere, &answer),
            Heard::Unknown,
            "from another address"
        );
        let mut stray_id = id.0;
        stray_id[11] ^= 1;
        let stray = Message::binding(Class::Success, TransactionId(stray_id))
            .encode_with_integrity(&KEY)
            .unwrap();
        assert_eq!(
            ours.handle_answer(t0 + ms(150), relay(), &stray),
            Heard::Unknown
        );
        assert_eq!(
            ours.handle_answer(t0 + ms(150), relay(), b"junk"),
            Heard::Unknown
        );
        // The genuine one still counts.
        assert_eq!(
            ours.handle_answer(t0 + ms(160), relay(), &answer),
            Heard::Answer(ms(35))
        );
    }

    #[test]
    fn only_signed_probes_within_the_budget_are_answered() {
        let t0 = crate::test_epoch();
        let mut ours = probing(t0);
        ours.handle_timeout(t0 + ms(125));
        let probe = sent(&mut ours).remove(0);
        let mut peer = Probing::default();
        let mut other_key = Probing::default();
        assert_eq!(
            other_key.answer(t0, || Some(IntegrityKey([8; 32])), &probe.payload),
            Err(Unanswered::Unauthenticated)
        );
        let id = decode(&probe.payload).unwrap().message.transaction_id;
        let unsigned = Message::binding(Class::Request, id).encode().unwrap();
        assert_eq!(
            peer.answer(t0, || Some(KEY), &unsigned),
            Err(Unanswered::Unauthenticated)
        );
        let plain = Message::binding(Class::Request, TransactionId([1; 12]))
            .encode_with_integrity(&KEY)
            .unwrap();
        assert!(!is_probe(&plain));
        assert_eq!(
            peer.answer(t0, || Some(KEY), &plain),
            Err(Unanswered::Unauthenticated),
            "a Binding request without the mark is NAT discovery's"
        );
        // A flood: the burst, then one per interval.
        let answered = (0..100)
            .filter(|_| peer.answer(t0, || Some(KEY), &probe.payload).is_ok())
            .count();
        assert_eq!(answered, usize::try_from(ANSWER_BUDGET.burst).unwrap());
        assert!(
            peer.answer(t0 + ms(5), || Some(KEY), &probe.payload)
                .is_err()
        );
        assert!(
            peer.answer(t0 + ms(10), || Some(KEY), &probe.payload)
                .is_ok()
        );
    }

    #[test]
    fn probes_follow_a_peer_that_moved_and_forget_the_oldest_beyond_the_bound() {
        let t0 = crate::test_epoch();
        let mut ours = probing(t0);
        let mut first = None;
        for step in 0..=MAX_OUTSTANDING as u64 {
            ours.handle_timeout(t0 + ms(125 + 40 * step));
            let probe = sent(&mut ours).remove(0);
            first.get_or_insert(probe);
        }
        let oldest = answer(&KEY, &first.unwrap().payload).unwrap();
        assert_eq!(
            ours.handle_answer(t0 + ms(5000), relay(), &oldest),
            Heard::Unknown,
            "forgotten"
        );
        let moved: SocketAddr = "203.0.113.1:5000".parse().unwrap();
        let wait = SilenceLimit::default().probing_wait(ms(100));
        ours.steer(|| Some(KEY), moved, Some(wait), Some(t0 + ms(6000)));
        ours.handle_timeout(t0 + ms(6125));
        assert_eq!(sent(&mut ours).remove(0).destination, moved);
    }
}
