//! Silence on a connection that carries data, read from quinn's own
//! counters: when ack-eliciting frames went out and when acknowledgements
//! came back. A peer that receives an ack-eliciting packet acknowledges it
//! within its ACK delay, so data left unacknowledged for a few probe
//! timeouts means the peer, or the path to it, is gone.
//!
//! While data is in flight quinn's probe timer (PTO) sends probes, and those
//! count as sent here, so an acknowledgement for older packets that came
//! just before the peer went away only restarts the wait at the next probe.
//! A connection to a relay also sends signed probes of its own once a silence
//! ran a round trip (`probe.rs`), and each answer restarts the wait: a
//! burst of loss that QUIC's backed-off timer stretches over seconds is not
//! taken for a dead relay. An idle connection sends nothing and is never
//! silent; it finds out at its next use.

use std::time::{Duration, Instant};

use quinn_proto::{Connection, ConnectionStats, FrameStats};

/// The ACK delay quinn's peers announce by default (RFC 9000 §18.2).
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// How long data may stay unacknowledged before a watched connection is
/// taken for dead: `ptos` probe timeouts, kept between `floor` and
/// `ceiling`. A relay connection probes the relay meanwhile (`probe.rs`),
/// one probe every `probe_every` from one round trip into the silence, so it
/// is dead only once they all went unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SilenceLimit {
    /// Probe timeouts of silence (each estimated as
    /// `3 × smoothed RTT + 25 ms`, quinn's PTO while the RTT variance is
    /// half the RTT).
    pub ptos: u32,
    /// The shortest silence that counts, whatever the RTT.
    pub floor: Duration,
    /// The longest silence waited for, whatever the RTT.
    pub ceiling: Duration,
    /// The longest silence waited for on a connection with nowhere to move
    /// ([`SilenceLimit::patient`]): over a relay circuit, to our only relay,
    /// or carrying circuit ends at a relay. A dead relay with another to
    /// move to is the relay connection's to find (within `ceiling`); what a
    /// circuit's silence adds is the queue on the relay's streams, which on
    /// a lossy link grows with the round trip, so its limit may too.
    pub circuit_ceiling: Duration,
    /// The gap between two probes to a silent relay, sent from one round
    /// trip into the silence (and the peer's ACK delay) to its limit. On a
    /// link whose loss comes in bursts (the loss state moves on with each
    /// packet), the probes carry the link through the burst: at the 3 s
    /// ceiling some 60 of them go unanswered in a row before the relay is
    /// dead, a burst rare enough to be taken for a dead relay.
    pub probe_every: Duration,
}

impl Default for SilenceLimit {
    /// Three probe timeouts, at least 1.5 s and at most 3 s (10 s over a
    /// circuit); for a relay connection, a probe every 40 ms.
    fn default() -> Self {
        Self {
            ptos: 3,
            floor: Duration::from_millis(1500),
            ceiling: Duration::from_secs(3),
            circuit_ceiling: Duration::from_secs(10),
            probe_every: Duration::from_millis(40),
        }
    }
}

impl SilenceLimit {
    /// The silence allowed on a connection whose smoothed RTT is `rtt`.
    pub fn after(&self, rtt: Duration) -> Duration {
        probe_timeout(rtt)
            .saturating_mul(self.ptos)
            .max(self.floor)
            .min(self.ceiling)
    }

    /// The wait of a connection whose smoothed RTT is `rtt`: the silence
    /// allowed, and the time its newest frame is given to be answered (one
    /// probe timeout, within the silence allowed).
    pub fn wait(&self, rtt: Duration) -> Wait {
        let limit = self.after(rtt);
        Wait {
            limit,
            answer: probe_timeout(rtt).min(limit),
            probes: None,
        }
    }

    /// The limit of a connection with nowhere to move: a connection to our
    /// only relay (no reservation elsewhere to move its circuits to), one
    /// over a relay circuit, and, at a relay, one that carries circuit ends.
    /// Three times the probe timeouts, up to `circuit_ceiling`. Closing such
    /// a connection gains nothing but failing its calls sooner, and on a
    /// slow link its silence is as often a burst of loss on someone's access
    /// link: on the ladder's very bad cellular rung, bursts of 5 s closed
    /// each kind with every party alive, and the calls over them were lost
    /// (tests/natlab/README.md, session 19). On a fast link the floor
    /// decides, as for any connection.
    pub fn patient(&self) -> SilenceLimit {
        SilenceLimit {
            ptos: self.ptos.saturating_mul(3),
            ceiling: self.circuit_ceiling,
            ..*self
        }
    }

    /// The wait of a connection to a relay whose smoothed RTT is `rtt`:
    /// [`SilenceLimit::wait`], probing the relay every `probe_every` from
    /// one round trip (and the peer's ACK delay) into a silence.
    pub fn probing_wait(&self, rtt: Duration) -> Wait {
        self.probing_after(rtt, rtt.saturating_add(MAX_ACK_DELAY))
    }

    /// The wait of a direct connection no punch watches, whose smoothed RTT
    /// is `rtt`: as [`SilenceLimit::probing_wait`], but its probes start one
    /// more ACK delay into a silence. Most such connections sit idle between
    /// keep-alives, and the ACK of a lone keep-alive PING comes a whole ACK
    /// delay after its round trip: probes starting then would race it at
    /// every keep-alive, a probe and its answer more for nothing.
    pub fn peer_wait(&self, rtt: Duration) -> Wait {
        let after = rtt.saturating_add(MAX_ACK_DELAY.saturating_mul(2));
        self.probing_after(rtt, after)
    }

    /// [`SilenceLimit::wait`], probing every `probe_every` from `after` into
    /// a silence (within the silence limit).
    fn probing_after(&self, rtt: Duration, after: Duration) -> Wait {
        let wait = self.wait(rtt);
        let plan = ProbePlan {
            after: after.min(wait.limit),
            every: self.probe_every,
        };
        Wait {
            probes: Some(plan),
            ..wait
        }
    }
}

/// How long a watched connection may wait (see [`SilenceLimit::wait`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The silence allowed.
    pub limit: Duration,
    /// The time the newest ack-eliciting frame is given to be answered: a
    /// silence is not judged while a probe sent since may still be.
    pub answer: Duration,
    /// The probes sent during a silence (`None`: the connection sends
    /// none).
    pub probes: Option<ProbePlan>,
}

/// The signed probes of a silent connection (`probe.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    /// How far into a silence the first goes.
    pub after: Duration,
    /// The gap between two.
    pub every: Duration,
}

impl Wait {
    /// When a silence running since `since` starts being probed, and how
    /// often, if this wait probes.
    pub fn probes_from(&self, since: Instant) -> Option<(Instant, Duration)> {
        let plan = self.probes?;
        Some((since.checked_add(plan.after)?, plan.every))
    }
}

/// quinn's probe timeout on a connection whose smoothed RTT is `rtt`, while
/// the RTT variance is half the RTT.
fn probe_timeout(rtt: Duration) -> Duration {
    rtt.saturating_mul(3).saturating_add(MAX_ACK_DELAY)
}

/// Probe timeouts an answer over a connection may take at least
/// ([`answer_wait`]): a frame and three retransmissions, the probe timeout
/// backed off 1, 2 and 4 times.
const ANSWER_PTOS: u32 = 7;

/// How many floors a slow path may stretch [`answer_wait`] to, at most: a
/// peer that delays its acknowledgements to look slow gains no more.
const ANSWER_STRETCH: u32 = 3;

/// How long an answer over a connection whose smoothed RTT is `rtt` may
/// take: `floor`, or on a slow lossy path seven probe timeouts (a frame and
/// three retransmissions, backed off), at most three `floor`s. On the link
/// ladder's worst rungs (450 ms and 600 ms, bursty loss) a frame lost to a
/// burst, then QUIC's backed-off retransmission, took longer than 5 s.
pub(crate) fn answer_wait(floor: Duration, rtt: Duration) -> Duration {
    probe_timeout(rtt)
        .saturating_mul(ANSWER_PTOS)
        .min(floor.saturating_mul(ANSWER_STRETCH))
        .max(floor)
}

/// How many silence limits a watched connection is given at most, from its
/// first unacknowledged frame, while QUIC keeps sending probes.
const PATIENCE: u32 = 3;

/// How many silence limits signs of life of the peer (answers to our
/// probes, its own probes) may stretch a silence to, from its start: a peer
/// that answers probes but never acknowledges our data is judged at last.
const LIVE_PATIENCE: u32 = 10;

/// One connection's watch: since when its ack-eliciting frames have gone
/// unacknowledged, and when the newest of them went out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Silence {
    acks: u64,
    sent: u64,
    since: Option<Instant>,
    /// When the silence began (or the connection last changed path): signs
    /// of life do not move it ([`Silence::heard`]).
    began: Option<Instant>,
    /// When the newest ack-eliciting frame went out.
    last_sent: Option<Instant>,
    /// No silence counts before then ([`Silence::excuse_until`]).
    excused: Option<Instant>,
    /// Whether the peer itself showed a sign of life during the running
    /// silence ([`Silence::heard`]): only then may it stretch to
    /// `LIVE_PATIENCE` limits.
    peer_heard: bool,
}

impl Silence {
    /// Takes in quinn's counters of the connection at `now`.
    pub fn observe(&mut self, now: Instant, stats: &ConnectionStats) {
        self.observe_counts(now, stats.frame_rx.acks, ack_eliciting(&stats.frame_tx));
    }

    /// Takes in the ACK frames received and ack-eliciting frames sent so
    /// far: an acknowledgement ends a silence, and a frame sent after it
    /// starts one.
    pub fn observe_counts(&mut self, now: Instant, acks_received: u64, eliciting_sent: u64) {
        if acks_received != self.acks {
            self.acks = acks_received;
            self.since = None;
            self.began = None;
            self.peer_heard = false;
        }
        if eliciting_sent != self.sent {
            self.sent = eliciting_sent;
            self.since.get_or_insert(now);
            self.began.get_or_insert(now);
            self.last_sent = Some(now);
        }
    }

    /// The connection moved to another path at `now`: a silence running
    /// since earlier (the old path's) runs from `now` instead.
    pub fn restart(&mut self, now: Instant) {
        if self.since.is_some() {
            self.since = Some(now);
            self.began = Some(now);
            self.peer_heard = false;
        }
    }

    /// A sign of life of the peer at `now` (an answer to a probe of ours,
    /// or a probe of its own): a running silence is judged from `now`
    /// anew, but within `LIVE_PATIENCE` limits of its start.
    pub fn heard(&mut self, now: Instant) {
        self.relay_heard(now);
        self.peer_heard |= self.running();
    }

    /// A sign of life of the relay this connection's circuit runs through
    /// at `now`: it says the relay's side of the path works, not that the
    /// peer at the circuit's other end lives, so a running silence is
    /// judged from `now` anew but only within `PATIENCE` limits of its
    /// start (unless the peer itself was heard, [`Silence::heard`]).
    pub fn relay_heard(&mut self, now: Instant) {
        if let Some(since) = &mut self.since {
            *since = now;
        }
    }

    /// No silence counts before `until`: the connection fell back to its
    /// relay circuit, and until then the peer may still send its packets
    /// (and its acknowledgements) to the dead direct path, not having
    /// noticed yet. A silence running then is judged as if it began at
    /// `until`.
    pub fn excuse_until(&mut self, until: Instant) {
        self.excused = self.excused.max(Some(until));
    }

    /// Whether ack-eliciting frames wait for an acknowledgement (a silence
    /// runs).
    pub fn running(&self) -> bool {
        self.since.is_some()
    }

    /// Since when the silence runs, if one does.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// When the silence is judged, if one runs: once it lasted `wait.limit`
    /// since the first unacknowledged frame and the newest frame sent waited
    /// `wait.answer` (a sign of life of the peer restarts it:
    /// [`Silence::heard`]). A probe QUIC sent late in the silence, after
    /// its backed-off probe timeout, is given its round trip: on a link that
    /// carries few packets while QUIC backs off, a burst of loss can last
    /// seconds, and its end shows as that probe's acknowledgement. A relay
    /// that died is judged within one probe timeout of `wait.limit`, and
    /// whatever QUIC sends, the judgement comes within `PATIENCE` limits
    /// (`LIVE_PATIENCE` from the start while the peer shows signs of life).
    pub fn deadline(&self, wait: Wait) -> Option<Instant> {
        let excused = |at: Instant| self.excused.map_or(at, |excused| excused.max(at));
        let since = excused(self.since?);
        let began = excused(self.began.unwrap_or(since));
        let newest = self.last_sent.map_or(since, |sent| sent.max(since));
        let due = (since.checked_add(wait.limit))
            .max(newest.checked_add(wait.answer))
            .unwrap_or(since);
        let latest = (since.checked_add(wait.limit.saturating_mul(PATIENCE))).unwrap_or(since);
        let patience = if self.peer_heard {
            LIVE_PATIENCE
        } else {
            PATIENCE
        };
        let longest = (began.checked_add(wait.limit.saturating_mul(patience))).unwrap_or(began);
        Some(due.min(latest).min(longest))
    }

    /// Whether the silence is judged by `now` (see [`Silence::deadline`]).
    pub fn reached(&self, now: Instant, wait: Wait) -> bool {
        self.deadline(wait).is_some_and(|at| at <= now)
    }
}

/// Frames quinn has decoded from the connection's packets so far, every
/// kind counted: any authentic new packet moves it (a forged one does not
/// decrypt, a replayed one is dropped as a duplicate).
pub(crate) fn frames_received(quinn: &Connection) -> u64 {
    let frames = quinn.stats().frame_rx;
    ack_eliciting(&frames)
        .wrapping_add(frames.acks)
        .wrapping_add(frames.connection_close)
}

/// The frames quinn sent that a peer must acknowledge: all but ACK and
/// CONNECTION_CLOSE (padding is not counted).
fn ack_eliciting(frames: &FrameStats) -> u64 {
    let small = [
        frames.ack_frequency,
        frames.crypto,
        frames.data_blocked,
        frames.datagram,
        u64::from(frames.handshake_done),
        frames.immediate_ack,
        frames.max_data,
        frames.max_stream_data,
        frames.max_streams_bidi,
        frames.max_streams_uni,
        frames.new_connection_id,
        frames.new_token,
        frames.path_challenge,
        frames.path_response,
        frames.ping,
        frames.reset_stream,
        frames.retire_connection_id,
        frames.stream_data_blocked,
        frames.streams_blocked_bidi,
        frames.streams_blocked_uni,
        frames.stop_sending,
        frames.stream,
    ];
    small.into_iter().fold(0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait of `limit` that gives the newest frame no time of its own.
    fn patient(limit: Duration) -> Wait {
        Wait {
            limit,
            answer: Duration::ZERO,
            probes: None,
        }
    }

    /// `ms` milliseconds after `t0`.
    fn after(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_limit_is_a_few_probe_timeouts_within_its_bounds() {
        let limit = SilenceLimit::default();
        assert_eq!(
            limit.after(Duration::from_millis(10)),
            Duration::from_millis(1500)
        );
        // 3 × (3 × 200 + 25) ms.
        assert_eq!(
            limit.after(Duration::from_millis(200)),
            Duration::from_millis(1875)
        );
        assert_eq!(limit.after(Duration::from_secs(1)), Duration::from_secs(3));
        let inverted = SilenceLimit {
            floor: Duration::from_secs(5),
            ..limit
        };
        assert_eq!(inverted.after(Duration::ZERO), Duration::from_secs(3));
    }

    #[test]
    fn a_connection_with_nowhere_to_move_waits_three_times_the_probe_timeouts_up_to_the_circuit_ceiling()
     {
        let limit = SilenceLimit::default();
        let lone = limit.patient();
        let ms = Duration::from_millis;
        // Fast links keep the floor.
        assert_eq!(lone.after(ms(10)), ms(1500));
        // 9 × (3 × 200 + 25) ms, where the shared limit stops at 3.
        assert_eq!(lone.after(ms(200)), ms(5625));
        assert_eq!(limit.after(ms(200)), ms(1875));
        // Very bad cellular's relayed round trip, 10 s at most.
        assert_eq!(lone.after(ms(550)), Duration::from_secs(10));
        assert_eq!(lone.probe_every, limit.probe_every);
    }

    #[test]
    fn a_direct_peer_is_probed_only_once_a_keep_alives_delayed_ack_is_late() {
        let limit = SilenceLimit::default();
        let rtt = Duration::from_millis(10);
        let relay = limit.probing_wait(rtt).probes.expect("probed");
        let peer = limit.peer_wait(rtt).probes.expect("probed");
        assert_eq!(relay.after, Duration::from_millis(35));
        assert_eq!(peer.after, Duration::from_millis(60));
        assert_eq!(peer.every, relay.every);
        assert_eq!(limit.peer_wait(rtt).limit, limit.probing_wait(rtt).limit);
        let slow = limit.peer_wait(Duration::from_secs(5));
        assert_eq!(
            slow.probes.expect("probed").after,
            slow.limit,
            "within the limit"
        );
    }

    #[test]
    fn a_path_change_restarts_a_running_silence_only() {
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let limit = patient(Duration::from_secs(1));
        let mut silence = Silence::default();
        silence.restart(at(5));
        assert_eq!(silence.deadline(limit), None, "no silence, none started");
        silence.observe_counts(at(10), 0, 2);
        silence.restart(at(900));
        assert!(
            !silence.reached(at(1500), limit),
            "the old path's wait is gone"
        );
        assert_eq!(silence.deadline(limit), Some(at(1900)));
    }

    #[test]
    fn sent_frames_start_a_silence_and_an_acknowledgement_ends_it() {
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let limit = patient(Duration::from_secs(1));
        let mut silence = Silence::default();
        silence.observe_counts(at(0), 0, 0);
        assert_eq!(silence.deadline(limit), None, "nothing sent, nothing waits");
        silence.observe_counts(at(10), 0, 2);
        silence.observe_counts(at(50), 0, 3);
        assert_eq!(
            silence.deadline(limit),
            Some(at(1010)),
            "the first frame counts"
        );
        assert!(!silence.reached(at(1009), limit));
        assert!(silence.reached(at(1010), limit));
        silence.observe_counts(at(60), 1, 3);
        assert_eq!(silence.deadline(limit), None);
        // An acknowledgement and a new frame in one look: the new frame waits.
        silence.observe_counts(at(70), 2, 4);
        assert_eq!(silence.deadline(limit), Some(at(1070)));
    }

    /// Slow 3G, seed 1, full-cone × open: a burst on A's uplink lost its
    /// packets for 1 s, QUIC backed off, and the probe that got through went
    /// out 2.4 s into the silence; the watch closed A's relay connection
    /// 35 ms before that probe's acknowledgement came back.
    #[test]
    fn a_probe_sent_late_in_a_silence_is_given_its_round_trip() {
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let wait = SilenceLimit::default().wait(Duration::from_millis(290));
        assert_eq!(wait.limit, Duration::from_millis(2685));
        assert_eq!(wait.answer, Duration::from_millis(895));
        let mut silence = Silence::default();
        silence.observe_counts(at(0), 0, 1);
        assert_eq!(silence.deadline(wait), Some(at(2685)));
        // QUIC's probe after its backed-off timeout.
        silence.observe_counts(at(2400), 0, 2);
        assert_eq!(silence.deadline(wait), Some(at(3295)));
        assert!(!silence.reached(at(2700), wait));
        // Probes that keep coming never put the judgement past 3 limits.
        silence.observe_counts(at(7900), 0, 3);
        assert_eq!(silence.deadline(wait), Some(at(3 * 2685)));
    }

    #[test]
    fn a_relay_connection_probes_from_a_round_trip_on_and_a_circuit_waits_longer() {
        let limit = SilenceLimit::default();
        let rtt = Duration::from_millis(500);
        let wait = limit.probing_wait(rtt);
        assert_eq!(wait.limit, Duration::from_secs(3), "the ceiling");
        let plan = wait.probes.expect("probes");
        assert_eq!(plan.after, Duration::from_millis(525));
        assert_eq!(plan.every, Duration::from_millis(40));
        assert_eq!(limit.wait(rtt).probes, None);
        // 9 × (3 × 300 ms + 25 ms), within the patient limit's own ceiling.
        let patient = limit.patient();
        assert_eq!(
            patient.after(Duration::from_millis(300)),
            Duration::from_millis(8325)
        );
        assert_eq!(
            patient.after(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        assert_eq!(patient.after(Duration::from_millis(10)), limit.floor);
    }

    /// Congested cellular, seed 1: B fell back 3.4 s before A, whose
    /// packets and acknowledgements went on into the dead direct path; B's
    /// circuit was judged silent 3 s after its fall back.
    #[test]
    fn after_a_fall_back_the_silence_counts_only_once_the_peer_could_follow() {
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let limit = patient(Duration::from_secs(3));
        let mut silence = Silence::default();
        silence.observe_counts(at(0), 0, 1);
        silence.restart(at(100));
        silence.excuse_until(at(3900));
        assert_eq!(silence.deadline(limit), Some(at(6900)));
        // An earlier excuse does not shorten it.
        silence.excuse_until(at(1000));
        assert_eq!(silence.deadline(limit), Some(at(6900)));
        // The peer's acknowledgement ends the silence; a later one is
        // judged as usual.
        silence.observe_counts(at(4500), 1, 1);
        assert_eq!(silence.deadline(limit), None);
        silence.observe_counts(at(8000), 1, 2);
        assert_eq!(silence.deadline(limit), Some(at(11_000)));
    }

    #[test]
    fn signs_of_life_stretch_a_silence_to_ten_limits_at_most() {
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let limit = patient(Duration::from_secs(1));
        let mut silence = Silence::default();
        silence.observe_counts(at(0), 0, 1);
        silence.heard(at(900));
        assert_eq!(silence.deadline(limit), Some(at(1900)), "judged anew");
        for ms in (1800..20_000).step_by(900) {
            silence.heard(at(ms));
        }
        assert_eq!(silence.deadline(limit), Some(at(10_000)), "but not forever");
        // A path change starts the count again; an acknowledgement ends it.
        silence.restart(at(12_000));
        silence.heard(at(15_000));
        assert_eq!(silence.deadline(limit), Some(at(16_000)));
        silence.observe_counts(at(15_500), 1, 1);
        silence.heard(at(15_600));
        assert_eq!(
            silence.deadline(limit),
            None,
            "nothing waits, nothing to hear"
        );
    }

    #[test]
    fn a_relays_signs_of_life_stretch_a_circuits_silence_to_three_limits_at_most() {
        // Issue 17, the 100-node cluster: a publisher's connection over a
        // circuit to a peer that was killed was held 31 s, its silence
        // restarted by every probe of its busy relay. The relay living says
        // nothing of the circuit's far end.
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let limit = patient(Duration::from_secs(1));
        let mut silence = Silence::default();
        silence.observe_counts(at(0), 0, 1);
        silence.relay_heard(at(900));
        assert_eq!(silence.deadline(limit), Some(at(1900)), "judged anew");
        for ms in (1800..20_000).step_by(900) {
            silence.relay_heard(at(ms));
        }
        assert_eq!(silence.deadline(limit), Some(at(3000)), "three limits");
        // The peer's own sign of life gives it the peer's patience.
        silence.heard(at(2900));
        assert_eq!(silence.deadline(limit), Some(at(3900)));
        silence.relay_heard(at(9500));
        assert_eq!(silence.deadline(limit), Some(at(10_000)));
        // An acknowledgement ends the silence, and with it what was heard.
        silence.observe_counts(at(11_000), 1, 1);
        silence.observe_counts(at(12_000), 1, 2);
        for ms in (12_500..30_000).step_by(500) {
            silence.relay_heard(at(ms));
        }
        assert_eq!(silence.deadline(limit), Some(at(15_000)));
    }

    #[test]
    fn an_idle_connection_is_never_silent() {
        let t0 = crate::test_epoch();
        let at = |ms| after(t0, ms);
        let mut silence = Silence::default();
        silence.observe_counts(at(0), 4, 5);
        silence.observe_counts(at(10), 5, 5);
        silence.observe_counts(at(60_000), 5, 5);
        assert!(!silence.reached(at(120_000), patient(Duration::from_secs(1))));
    }
}
