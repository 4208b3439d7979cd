//! NAT discovery: what the network in front of a node's socket does, as a
//! pure machine the Node drives.
//!
//! A run has two phases.
//!
//! 1. **Bindings.** The Node names up to `max_reflectors` reflectors (other
//!    nodes from its routing table, configured STUN servers) and runs one
//!    Binding transaction toward each ([`DiscoveryAction::Bind`]), all at
//!    once. Their answers give the reflexive addresses, the mapping
//!    behaviour ([`classify_mapping`]: ≥ 2 reflector IPs tell
//!    endpoint-independent from destination-dependent, two ports of one IP
//!    tell address- from address-and-port-dependent) and the port allocation
//!    ([`classify_port_allocation`] over the distinct mapped ports in
//!    ascending order: when the node already talks to a reflector over QUIC,
//!    its mapping is older than the run, so the order the mappings were made
//!    is unknown; a sequential allocator still shows small steps, a random
//!    one still jumps). A mapped address equal to one of the socket's own
//!    addresses means no NAT in between.
//! 2. **Dial-backs.** The Node asks a DHT server it is connected to for two
//!    dial-backs ([`DiscoveryAction::DialBack`]): a STUN probe carrying a
//!    nonce sent by other nodes to our addresses, once from an IP we never
//!    sent to ([`ProbeSource::OtherIp`]) and once from a port we never sent
//!    to ([`ProbeSource::OtherPort`]). The Node tells the machine of every
//!    probe that arrives and whether its source was one we had sent to
//!    ([`ProbeOrigin`]): a probe from an address we opened a mapping toward
//!    proves nothing and is never counted as a pass. The answer names the
//!    helpers' addresses, so the machine knows whether a fitting stranger
//!    was among them. A test passes when a probe from a fitting stranger
//!    arrives, fails when a fitting stranger was asked and none of its
//!    probes arrived within `dial_back_timeout`, and is uncertain otherwise
//!    (no helper, or only helpers we had sent to).
//!
//! Alongside the bindings, the run **counts the hops** to the first
//! reflector ([`DiscoveryAction::CountHops`]): one Binding transaction per
//! IP TTL from 1 to `max_hops`, all at once; the smallest TTL answered is
//! the distance ([`NatReport::hops`]). Every NAT in front of the socket lies
//! on that path, so one less than the distance opens them all and dies before
//! the reflector: hole punching opens its NATs with that TTL, however many
//! layers there are (a home router inside a carrier-grade NAT), instead of
//! guessing (`nat::punch`). A reflector farther than `max_hops` leaves the
//! distance unknown.
//!
//! The [`NatReport`] then says: reachability **public** only when no NAT was
//! seen (a mapped address equal to one of the socket's own, known addresses;
//! a socket bound to a wildcard address with no listen address configured
//! cannot tell) and a stranger's probe arrived; **private** when a NAT was seen or
//! the stranger's probe was filtered; **undetermined** otherwise. Every
//! class has its uncertain value, and uncertainty is reported as such.
//!
//! A node whose bindings show a NAT is private whatever the dial-backs
//! find: the run then **reports early**, as soon as the bindings and the hop
//! count are in, when the last report did not already say private (a node
//! that just started, or one whose NAT appeared). Its relay reservations and
//! its peer record need not wait out `dial_back_timeout` for a probe its NAT
//! filters (issue 17: a restarted node behind a NAT could not be reached
//! for 4 s). The full report follows at the end of the run with the
//! filtering verdict.
//!
//! A run that **nobody answered** (no reflector's mapping, no dial-back
//! verdict: the network was cut off, or every reflector was gone) tells
//! nothing about the NAT. It does not replace the last report: a private
//! node cut off by a partition stays private, so it keeps asking for relay
//! reservations and publishing a record that names them, rather than
//! counting as undetermined until the next run (issue 17: a subscriber
//! behind a NAT went unreachable for 30 s after a partition healed). The
//! next run comes after [`DiscoveryConfig::unanswered_retry`], doubling
//! (with jitter) while runs stay unanswered, up to
//! [`DiscoveryConfig::retry`].
//!
//! A run that ends **undetermined** (answered, but no helper could make the
//! dial-back tests: a mesh of two) is made again after
//! [`DiscoveryConfig::retry`], doubling while the runs stay undetermined up
//! to [`DiscoveryConfig::interval`]; the Node brings the next run back
//! within the retry when its routing table grows
//! ([`Discovery::handle_contacts_grew`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::stun::{
    BindingOutcome, FilteringBehaviour, MappingBehaviour, Observation, PortAllocation,
    classify_filtering, classify_mapping, classify_port_allocation,
};
use crate::backoff;
use crate::contract::{Child, OutputQueue};
use crate::peer_record::Reachability;
use crate::wire::{DialBackStatus, ProbeSource};

/// How discovery runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Time between two runs. Default 10 min.
    pub interval: Duration,
    /// Time before another run when one ended undetermined (too few
    /// reflectors or helpers). Default 30 s; each further undetermined run
    /// in a row waits twice as long, up to [`DiscoveryConfig::interval`]
    /// (a small mesh with no helper to ask would otherwise run every 30 s
    /// for ever), unless more contacts came ([`Discovery::handle_contacts_grew`]).
    pub retry: Duration,
    /// Time before another run when nobody answered one (see the module
    /// docs): the first delay of a backoff that doubles up to
    /// [`DiscoveryConfig::retry`]. Default 2 s.
    pub unanswered_retry: Duration,
    /// How long to wait for the dial-back probes after asking. Default 4 s.
    pub dial_back_timeout: Duration,
    /// Most reflectors asked in one run. Default 4 (two IPs, and two ports
    /// of one IP when the routing table has them).
    pub max_reflectors: usize,
    /// The largest TTL of the hop count (see the module docs); 0 counts
    /// nothing. Default 8.
    pub max_hops: u8,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(600),
            retry: Duration::from_secs(30),
            unanswered_retry: Duration::from_secs(2),
            dial_back_timeout: Duration::from_secs(4),
            max_reflectors: 4,
            max_hops: 8,
        }
    }
}

/// What a run found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatReport {
    /// The distinct reflexive addresses the reflectors reported, in the
    /// order the mappings were made.
    pub reflexive: Vec<SocketAddr>,
    /// Whether an address translator stands in front of the socket (`None`:
    /// no reflector answered).
    pub behind_nat: Option<bool>,
    /// The mapping behaviour, as far as the reflectors can tell.
    pub mapping: MappingBehaviour,
    /// The filtering behaviour, as far as the dial-backs can tell.
    pub filtering: FilteringBehaviour,
    /// The port allocation, as far as the mappings can tell.
    pub ports: PortAllocation,
    /// The verdict (see the module docs).
    pub reachability: Reachability,
    /// Reflectors asked and reflectors that answered.
    pub reflectors: (usize, usize),
    /// The two dial-back tests: from another IP, from another port
    /// (`None`: uncertain).
    pub probes: (Option<bool>, Option<bool>),
    /// IP hops from the socket to the first reflector: the smallest TTL it
    /// answered (`None`: not counted, or farther than
    /// [`DiscoveryConfig::max_hops`]).
    pub hops: Option<u8>,
}

/// What the machine asks the Node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryAction {
    /// Run a Binding transaction toward `reflector` and report its outcome
    /// with [`Discovery::handle_binding`].
    Bind {
        /// Where to send the request.
        reflector: SocketAddr,
    },
    /// Ask a connected DHT server for a dial-back and report its answer
    /// with [`Discovery::handle_dial_back_result`] (or
    /// [`DialBackStatus::NoHelper`] when there is no one to ask).
    DialBack {
        /// Where the probe must come from.
        source: ProbeSource,
        /// The probe's STUN transaction id.
        nonce: [u8; 12],
        /// Our addresses to have probed.
        addrs: Vec<SocketAddr>,
    },
    /// Run a Binding transaction toward `reflector` whose requests all carry
    /// IP TTL `ttl`, and report whether it was answered with
    /// [`Discovery::handle_hop`].
    CountHops {
        /// Where to send the requests.
        reflector: SocketAddr,
        /// Their TTL.
        ttl: u8,
    },
}

/// Where a dial-back probe came from, as the Node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeOrigin {
    /// We sent to the probe's source IP (any port) recently.
    pub ip_contacted: bool,
    /// We sent to the probe's exact source address recently.
    pub addr_contacted: bool,
}

/// What discovery counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// Runs started.
    pub runs: u64,
    /// Runs that produced a report.
    pub reports: u64,
    /// Early private reports made before a run's dial-backs ended (see the
    /// module docs).
    pub early_reports: u64,
    /// Dial-backs asked for.
    pub dial_backs: u64,
    /// Probes from a fitting stranger.
    pub probes_passed: u64,
    /// Probes from an address we had sent to (ignored).
    pub probes_known_source: u64,
    /// Dial-back tests that ended uncertain.
    pub uncertain_tests: u64,
    /// Hop counts that found the distance to their reflector.
    pub hops_counted: u64,
    /// Runs nobody answered (see the module docs); those after a report
    /// left it standing.
    pub unanswered_runs: u64,
}

/// One dial-back test of a run.
#[derive(Clone, Copy, Debug)]
struct Probe {
    nonce: [u8; 12],
    /// A fitting stranger was asked to send the probe.
    stranger_asked: bool,
    passed: bool,
    answered: bool,
}

impl Probe {
    fn verdict(&self) -> Option<bool> {
        if self.passed {
            Some(true)
        } else if self.stranger_asked {
            Some(false)
        } else {
            None
        }
    }
}

/// Whether a probe from a source described by `origin` tests what the probe
/// of `index` is about.
fn fits(index: usize, origin: ProbeOrigin) -> bool {
    match index {
        0 => !origin.ip_contacted,
        _ => !origin.addr_contacted,
    }
}

#[derive(Debug)]
enum Phase {
    Binding { pending: usize },
    DialingBack { deadline: Instant },
}

#[derive(Debug)]
struct Run {
    local: Vec<SocketAddr>,
    asked: usize,
    observations: Vec<Observation>,
    phase: Phase,
    /// Indexed by [`probe_index`].
    probes: [Option<Probe>; 2],
    hops: HopCount,
}

/// The hop count of a run: TTL-limited transactions still running, and the
/// smallest TTL answered so far.
#[derive(Debug, Default)]
struct HopCount {
    pending: u8,
    answered: Option<u8>,
}

impl HopCount {
    /// Nothing can lower the count any more, or there is a count: transactions
    /// sent at the same time with a smaller TTL answer at the same time, so the
    /// first answer is the distance unless its smaller twins were all lost.
    fn settled(&self) -> bool {
        self.pending == 0 || self.answered.is_some()
    }
}

fn probe_index(source: ProbeSource) -> Option<usize> {
    match source {
        ProbeSource::OtherIp => Some(0),
        ProbeSource::OtherPort => Some(1),
        ProbeSource::Unknown(_) => None,
    }
}

/// The discovery machine; see the module docs.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    rng: ChaCha8Rng,
    run: Option<Run>,
    report: Option<NatReport>,
    finished: Option<NatReport>,
    next_run: Option<Instant>,
    /// Runs in a row that nobody answered.
    unanswered_streak: u32,
    /// Answered runs in a row that ended undetermined.
    undetermined_streak: u32,
    actions: OutputQueue<DiscoveryAction>,
    stats: DiscoveryStats,
}

impl Discovery {
    /// An idle machine drawing nonces from `seed` (a secret key); the first
    /// run starts when the Node calls [`Discovery::start`].
    pub fn new(config: DiscoveryConfig, seed: [u8; 32]) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::from_seed(seed),
            run: None,
            report: None,
            finished: None,
            next_run: None,
            unanswered_streak: 0,
            undetermined_streak: 0,
            actions: OutputQueue::new(),
            stats: DiscoveryStats::default(),
        }
    }

    /// Starts a run (abandoning one under way) toward `reflectors` (at most
    /// `max_reflectors` are used, in the order given) for a socket whose own
    /// addresses are `local`.
    pub fn start(&mut self, now: Instant, reflectors: &[SocketAddr], local: Vec<SocketAddr>) {
        self.actions.mark(now);
        self.stats.runs += 1;
        self.actions.clear();
        let chosen: Vec<SocketAddr> = reflectors
            .iter()
            .copied()
            .take(self.config.max_reflectors)
            .collect();
        for &reflector in &chosen {
            self.actions.push(DiscoveryAction::Bind { reflector });
        }
        let mut hops = HopCount::default();
        if let Some(&reflector) = chosen.first() {
            for ttl in 1..=self.config.max_hops {
                self.actions
                    .push(DiscoveryAction::CountHops { reflector, ttl });
            }
            hops.pending = self.config.max_hops;
        }
        self.run = Some(Run {
            local,
            asked: chosen.len(),
            observations: Vec::new(),
            phase: Phase::Binding {
                pending: chosen.len(),
            },
            probes: [None, None],
            hops,
        });
        if chosen.is_empty() {
            self.dial_back(now);
        }
    }

    /// A report finished since the last call.
    pub fn take_finished(&mut self) -> Option<NatReport> {
        self.finished.take()
    }

    /// The last report.
    pub fn report(&self) -> Option<&NatReport> {
        self.report.as_ref()
    }

    /// Counters since construction.
    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    /// Whether a run is under way.
    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    /// The node has more contacts than when the last run ended: after an
    /// undetermined report (no helper to ask, say), the next run is due
    /// within [`DiscoveryConfig::retry`] again, and the retries start over.
    pub fn handle_contacts_grew(&mut self, now: Instant) {
        let undetermined =
            (self.report.as_ref()).is_some_and(|r| r.reachability == Reachability::Undetermined);
        if !undetermined || self.run.is_some() {
            return;
        }
        self.actions.mark(now);
        self.undetermined_streak = 0;
        let soon = now + self.config.retry;
        self.next_run = Some(self.next_run.map_or(soon, |at| at.min(soon)));
    }

    /// Whether the next periodic run is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.run.is_none() && self.next_run.is_some_and(|t| t <= now)
    }

    /// The nonce of a dial-back under way, if `nonce` is one.
    pub fn expects_probe(&self, nonce: &[u8; 12]) -> bool {
        self.run.as_ref().is_some_and(|run| {
            run.probes
                .iter()
                .flatten()
                .any(|probe| probe.nonce == *nonce)
        })
    }

    /// The outcome of a Binding transaction the machine asked for.
    pub fn handle_binding(&mut self, now: Instant, outcome: &BindingOutcome) {
        self.actions.mark(now);
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let Phase::Binding { pending } = &mut run.phase else {
            return;
        };
        *pending = pending.saturating_sub(1);
        if let Some(observation) = Observation::from_outcome(outcome) {
            run.observations.push(observation);
        }
        if *pending == 0 {
            self.dial_back(now);
            self.report_early_if_private();
        }
    }

    /// The end of a [`DiscoveryAction::CountHops`] transaction with TTL
    /// `ttl`: `answered` when the reflector answered it.
    pub fn handle_hop(&mut self, now: Instant, ttl: u8, answered: bool) {
        self.actions.mark(now);
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let hops = &mut run.hops;
        hops.pending = hops.pending.saturating_sub(1);
        if answered {
            hops.answered = Some(hops.answered.map_or(ttl, |t| t.min(ttl)));
        }
        if matches!(run.phase, Phase::DialingBack { .. }) {
            self.finish_if_settled(now);
            self.report_early_if_private();
        }
    }

    /// The answer to a dial-back request, with where each helper it names
    /// stands for us.
    pub fn handle_dial_back_result(
        &mut self,
        now: Instant,
        nonce: [u8; 12],
        status: DialBackStatus,
        helpers: &[ProbeOrigin],
    ) {
        self.actions.mark(now);
        let Some((index, probe)) = self.probe_mut(&nonce) else {
            return;
        };
        probe.answered = true;
        probe.stranger_asked = matches!(status, DialBackStatus::Forwarded)
            && helpers.iter().any(|origin| fits(index, *origin));
        self.finish_if_settled(now);
    }

    /// A probe with `nonce` arrived from a source described by `origin`.
    pub fn handle_probe(&mut self, now: Instant, nonce: [u8; 12], origin: ProbeOrigin) {
        self.actions.mark(now);
        let Some((index, probe)) = self.probe_mut(&nonce) else {
            return;
        };
        let passed = fits(index, origin);
        probe.passed |= passed;
        if passed {
            self.stats.probes_passed += 1;
        } else {
            self.stats.probes_known_source += 1;
        }
        self.finish_if_settled(now);
    }

    /// Ends the dial-back phase once its time is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.actions.mark(now);
        let over = matches!(
            &self.run,
            Some(Run { phase: Phase::DialingBack { deadline }, .. }) if *deadline <= now
        );
        if over {
            self.finish(now);
        }
    }

    /// The test of a run under way whose nonce is `nonce`, with its index.
    fn probe_mut(&mut self, nonce: &[u8; 12]) -> Option<(usize, &mut Probe)> {
        self.run
            .as_mut()?
            .probes
            .iter_mut()
            .enumerate()
            .find_map(|(i, p)| p.as_mut().filter(|p| p.nonce == *nonce).map(|p| (i, p)))
    }

    /// Bindings are done: ask for the two dial-backs.
    fn dial_back(&mut self, now: Instant) {
        let mut nonces = [[0u8; 12]; 2];
        for nonce in &mut nonces {
            self.rng.fill_bytes(nonce);
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in run
            .observations
            .iter()
            .map(|o| o.mapped)
            .chain(run.local.iter().copied())
        {
            if !addrs.contains(&addr) && !addr.ip().is_unspecified() {
                addrs.push(addr);
            }
        }
        run.phase = Phase::DialingBack {
            deadline: now + self.config.dial_back_timeout,
        };
        for (source, nonce) in [ProbeSource::OtherIp, ProbeSource::OtherPort]
            .into_iter()
            .zip(nonces)
        {
            let Some(index) = probe_index(source) else {
                continue;
            };
            run.probes[index] = Some(Probe {
                nonce,
                stranger_asked: false,
                passed: false,
                answered: false,
            });
            self.stats.dial_backs += 1;
            self.actions.push(DiscoveryAction::DialBack {
                source,
                nonce,
                addrs: addrs.clone(),
            });
        }
    }

    /// Ends the run early when nothing can change its verdict any more:
    /// every test passed or was answered without a forward, and the hop
    /// count is settled.
    fn finish_if_settled(&mut self, now: Instant) {
        let settled = self.run.as_ref().is_some_and(|run| {
            run.hops.settled()
                && (run.probes.iter().flatten())
                    .all(|p| p.passed || (p.answered && !p.stranger_asked))
        });
        if settled {
            self.finish(now);
        }
    }

    /// Reports a run under way whose bindings are in and show a NAT, when
    /// its hop count is settled and the last report did not say private
    /// already (see the module docs).
    fn report_early_if_private(&mut self) {
        let Some(run) = self.run.as_ref() else {
            return;
        };
        let said_private =
            (self.report.as_ref()).is_some_and(|r| r.reachability == Reachability::Private);
        if said_private || !run.hops.settled() || !matches!(run.phase, Phase::DialingBack { .. }) {
            return;
        }
        let report = report_of(run, None, None);
        if report.reachability != Reachability::Private {
            return;
        }
        self.stats.early_reports += 1;
        self.report = Some(report.clone());
        self.finished = Some(report);
    }

    fn finish(&mut self, now: Instant) {
        let Some(run) = self.run.take() else {
            return;
        };
        let verdict = |i: usize| run.probes[i].as_ref().and_then(Probe::verdict);
        let (other_ip, other_port) = (verdict(0), verdict(1));
        self.stats.uncertain_tests += [other_ip, other_port]
            .iter()
            .filter(|v| v.is_none())
            .count() as u64;
        let unanswered = run.observations.is_empty() && other_ip.is_none() && other_port.is_none();
        if unanswered {
            self.stats.unanswered_runs += 1;
            self.unanswered_streak = self.unanswered_streak.saturating_add(1);
            let (base, max) = (self.config.unanswered_retry, self.config.retry);
            let wait = backoff::delay(base, max, self.unanswered_streak, &mut self.rng);
            self.next_run = Some(now + wait);
            if self.report.is_some() {
                // Nothing contradicts the last verdict: it stands.
                return;
            }
        } else {
            self.unanswered_streak = 0;
        }
        let report = report_of(&run, other_ip, other_port);
        self.stats.reports += 1;
        self.stats.hops_counted += u64::from(report.hops.is_some());
        if !unanswered {
            let wait = if report.reachability == Reachability::Undetermined {
                self.undetermined_streak = self.undetermined_streak.saturating_add(1);
                let (first, max) = (self.config.retry, self.config.interval);
                backoff::ceiling(first, max, self.undetermined_streak)
            } else {
                self.undetermined_streak = 0;
                self.config.interval
            };
            self.next_run = Some(now + wait);
        }
        self.report = Some(report.clone());
        self.finished = Some(report);
    }
}

/// The report of a finished run whose dial-back verdicts are `other_ip` and
/// `other_port`.
fn report_of(run: &Run, other_ip: Option<bool>, other_port: Option<bool>) -> NatReport {
    let mut reflexive: Vec<SocketAddr> = Vec::new();
    for o in &run.observations {
        if !reflexive.contains(&o.mapped) {
            reflexive.push(o.mapped);
        }
    }
    // A socket bound to a wildcard address without a configured listen
    // address does not know its own IP: whether a NAT translated it is
    // then unknown.
    let known_local: Vec<SocketAddr> = run
        .local
        .iter()
        .copied()
        .filter(|l| !l.ip().is_unspecified())
        .collect();
    let behind_nat = (!run.observations.is_empty() && !known_local.is_empty()).then(|| {
        run.observations
            .iter()
            .any(|o| !known_local.iter().any(|l| same_addr(*l, o.mapped)))
    });
    let local_port = run.local.first().map_or(0, SocketAddr::port);
    let mut ports: Vec<u16> = reflexive.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    let reachability = match (behind_nat, other_ip) {
        (Some(false), Some(true)) => Reachability::Public,
        (Some(true), _) | (_, Some(false)) => Reachability::Private,
        _ => Reachability::Undetermined,
    };
    NatReport {
        behind_nat,
        mapping: classify_mapping(&run.observations),
        filtering: classify_filtering(other_ip, other_port),
        ports: classify_port_allocation(local_port, &ports),
        reachability,
        reflectors: (run.asked, run.observations.len()),
        probes: (other_ip, other_port),
        reflexive,
        hops: run.hops.answered,
    }
}

/// Equal addresses, IPv4-mapped IPv6 counting as IPv4.
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

impl Child for Discovery {
    type Output = DiscoveryAction;

    /// The next thing to do.
    fn poll_output(&mut self) -> Option<DiscoveryAction> {
        self.actions.pop()
    }

    /// When the machine needs [`Discovery::handle_timeout`] (the latest
    /// input's time while actions are queued).
    fn poll_timeout(&self) -> Option<Instant> {
        let deadline = match &self.run {
            Some(Run {
                phase: Phase::DialingBack { deadline },
                ..
            }) => Some(*deadline),
            Some(_) => None,
            None => self.next_run,
        };
        self.actions.deadline([deadline])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::stun::{self, BindingId, ChangeRequest, Mapping};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn outcome(reflector: &str, mapped: &str) -> BindingOutcome {
        BindingOutcome {
            id: BindingId(0),
            reflector: addr(reflector),
            change: ChangeRequest::default(),
            result: Ok(Mapping {
                mapped: addr(mapped),
                responder: addr(reflector),
                response_origin: None,
                other_address: None,
                rtt: None,
            }),
        }
    }

    const STRANGER: ProbeOrigin = ProbeOrigin {
        ip_contacted: false,
        addr_contacted: false,
    };
    const KNOWN: ProbeOrigin = ProbeOrigin {
        ip_contacted: true,
        addr_contacted: true,
    };

    /// A machine with the default settings but no hop count.
    fn without_hop_count() -> Discovery {
        let config = DiscoveryConfig {
            max_hops: 0,
            ..DiscoveryConfig::default()
        };
        Discovery::new(config, [1; 32])
    }

    /// A run from `local` toward two reflectors that saw `mapped`, up to the
    /// dial-back requests (without a hop count); returns the machine and the two
    /// nonces.
    fn bound(local: &str, mapped: &str) -> (Discovery, Instant, [[u8; 12]; 2]) {
        let now = crate::test_epoch();
        let mut d = without_hop_count();
        let reflectors = [addr("198.51.100.1:4433"), addr("198.51.100.2:4433")];
        d.start(now, &reflectors, vec![addr(local)]);
        for r in reflectors {
            assert_eq!(
                d.poll_output(),
                Some(DiscoveryAction::Bind { reflector: r })
            );
            d.handle_binding(now, &outcome(&r.to_string(), mapped));
        }
        let mut nonces = Vec::new();
        while let Some(action) = d.poll_output() {
            let DiscoveryAction::DialBack { nonce, .. } = action else {
                panic!("{action:?}");
            };
            nonces.push(nonce);
        }
        (d, now, [nonces[0], nonces[1]])
    }

    /// A run toward two reflectors with the default hop count, its bindings
    /// answered and its dial-backs answered without a helper: only the hop
    /// count is left. Returns the TTLs asked of the first reflector.
    fn counting(d: &mut Discovery, now: Instant) -> Vec<u8> {
        counting_toward(d, now, "10.0.0.2:4433", DialBackStatus::NoHelper)
    }

    /// [`counting`] from `local`, the dial-backs answered with `status`
    /// (a stranger named when forwarded).
    fn counting_toward(
        d: &mut Discovery,
        now: Instant,
        local: &str,
        status: DialBackStatus,
    ) -> Vec<u8> {
        let reflectors = [addr("198.51.100.1:4433"), addr("198.51.100.2:4433")];
        d.start(now, &reflectors, vec![addr(local)]);
        let mut ttls = Vec::new();
        while let Some(action) = d.poll_output() {
            match action {
                DiscoveryAction::Bind { reflector } => {
                    d.handle_binding(now, &outcome(&reflector.to_string(), "203.0.113.1:4433"));
                }
                DiscoveryAction::CountHops { reflector, ttl } => {
                    assert_eq!(reflector, reflectors[0], "hops are counted to the first");
                    ttls.push(ttl);
                }
                DiscoveryAction::DialBack { nonce, .. } => {
                    let helpers: &[ProbeOrigin] = match status {
                        DialBackStatus::Forwarded => &[STRANGER],
                        _ => &[],
                    };
                    d.handle_dial_back_result(now, nonce, status, helpers);
                }
            }
        }
        ttls
    }

    #[test]
    fn the_smallest_ttl_answered_is_the_hop_count() {
        let now = crate::test_epoch();
        let mut d = Discovery::new(DiscoveryConfig::default(), [1; 32]);
        assert_eq!(counting(&mut d, now), (1..=8).collect::<Vec<u8>>());
        assert!(d.take_finished().is_none(), "waits for the hop count");
        // TTLs 4 and 3 answer (a home NAT inside a carrier NAT, then the
        // reflector's router); 1 and 2 time out later and change nothing.
        d.handle_hop(now, 4, true);
        let report = d
            .take_finished()
            .expect("the first answer settles the count");
        assert_eq!(report.hops, Some(4));
        assert_eq!(d.stats().hops_counted, 1);
        // Outcomes after the run are ignored.
        d.handle_hop(now, 3, true);
        assert!(d.take_finished().is_none());
    }

    #[test]
    fn a_reflector_beyond_the_largest_ttl_leaves_the_hops_unknown() {
        let now = crate::test_epoch();
        let mut d = Discovery::new(DiscoveryConfig::default(), [1; 32]);
        let ttls = counting(&mut d, now);
        for ttl in ttls {
            assert!(d.take_finished().is_none());
            d.handle_hop(now, ttl, false);
        }
        let report = d.take_finished().expect("every TTL timed out");
        assert_eq!(report.hops, None);
        assert_eq!(d.stats().hops_counted, 0);
    }

    #[test]
    fn the_dial_back_deadline_ends_a_run_whose_hop_count_hangs() {
        let now = crate::test_epoch();
        let mut d = Discovery::new(DiscoveryConfig::default(), [1; 32]);
        counting(&mut d, now);
        d.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(d.take_finished().map(|r| r.hops), Some(None));
    }

    #[test]
    fn a_run_behind_a_nat_reports_early_only_when_the_last_report_was_not_private() {
        let now = crate::test_epoch();
        let mut d = Discovery::new(DiscoveryConfig::default(), [1; 32]);
        // The hop count is still running when the bindings are in: no
        // early report yet (punching needs the count).
        let ttls = counting_toward(&mut d, now, "10.0.0.2:4433", DialBackStatus::Forwarded);
        assert!(d.take_finished().is_none(), "waits for the hop count");
        d.handle_hop(now, 3, true);
        let early = d.take_finished().expect("settled hops: an early report");
        assert_eq!(
            (early.reachability, early.hops),
            (Reachability::Private, Some(3))
        );
        for ttl in ttls {
            d.handle_hop(now, ttl, false);
        }
        assert!(d.take_finished().is_none(), "once per run");
        d.handle_timeout(now + Duration::from_secs(5));
        assert!(d.take_finished().is_some(), "the full report at the end");
        // The next run finds the same NAT: the last report said private,
        // so only the full report comes.
        let later = now + Duration::from_secs(700);
        counting_toward(&mut d, later, "10.0.0.2:4433", DialBackStatus::Forwarded);
        d.handle_hop(later, 3, true);
        assert!(d.take_finished().is_none());
        d.handle_timeout(later + Duration::from_secs(5));
        assert!(d.take_finished().is_some());
        assert_eq!(d.stats().early_reports, 1);
    }

    #[test]
    fn an_untranslated_address_waits_for_the_dial_backs() {
        let (mut d, now, [ip, _]) = bound("198.51.100.9:4433", "198.51.100.9:4433");
        assert!(d.take_finished().is_none(), "no NAT seen: no early verdict");
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_timeout(now + Duration::from_secs(5));
        let report = d.take_finished().unwrap();
        assert_eq!(
            report.reachability,
            Reachability::Private,
            "the probe was filtered"
        );
        assert_eq!(d.stats().early_reports, 0);
    }

    #[test]
    fn a_strangers_probe_to_an_untranslated_address_is_public() {
        let (mut d, now, [ip, port]) = bound("198.51.100.9:4433", "198.51.100.9:4433");
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_dial_back_result(now, port, DialBackStatus::NoHelper, &[]);
        d.handle_probe(now, ip, STRANGER);
        let report = d
            .take_finished()
            .expect("settled once the stranger's probe came");
        assert_eq!(report.reachability, Reachability::Public);
        assert_eq!(report.behind_nat, Some(false));
        assert_eq!(report.filtering, FilteringBehaviour::EndpointIndependent);
        assert_eq!(report.mapping, MappingBehaviour::EndpointIndependent);
    }

    #[test]
    fn a_probe_through_a_mapping_we_opened_proves_nothing() {
        let (mut d, now, [ip, port]) = bound("198.51.100.9:4433", "198.51.100.9:4433");
        // A probe from an address we had sent to does not pass; and when
        // only such helpers were asked, nothing else can come: the run ends
        // as soon as both answers are in.
        d.handle_probe(now, ip, KNOWN);
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[KNOWN]);
        assert!(d.take_finished().is_none());
        d.handle_dial_back_result(now, port, DialBackStatus::Forwarded, &[KNOWN]);
        let report = d.take_finished().unwrap();
        assert_eq!(report.probes, (None, None));
        assert_eq!(report.reachability, Reachability::Undetermined);
        assert_eq!(d.stats().probes_known_source, 1);
    }

    #[test]
    fn a_filtered_strangers_probe_behind_a_nat_is_private() {
        let (mut d, now, [ip, port]) = bound("192.168.1.2:4433", "203.0.113.1:4433");
        // The bindings saw a NAT: private is reported at once, the
        // filtering still unknown.
        let early = d.take_finished().expect("an early private report");
        assert_eq!(early.reachability, Reachability::Private);
        assert_eq!(early.probes, (None, None));
        assert_eq!(early.filtering, FilteringBehaviour::Uncertain);
        assert_eq!(d.stats().early_reports, 1);
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_dial_back_result(now, port, DialBackStatus::Forwarded, &[STRANGER]);
        assert!(d.take_finished().is_none(), "waits for the probes");
        d.handle_timeout(now + Duration::from_secs(5));
        let report = d.take_finished().unwrap();
        assert_eq!(report.reachability, Reachability::Private);
        assert_eq!(report.behind_nat, Some(true));
        assert_eq!(
            report.filtering,
            FilteringBehaviour::AddressAndPortDependent
        );
        assert_eq!(report.reflexive, vec![addr("203.0.113.1:4433")]);
        // The next run is due after the interval, not the retry.
        assert!(!d.due(now + Duration::from_secs(31)));
        assert!(d.due(now + Duration::from_secs(605)));
    }

    /// A run from behind a NAT toward two reflectors (without a hop count)
    /// that neither reflector nor dial-back helper answered, as in a partition.
    fn unanswered_run(d: &mut Discovery, now: Instant) {
        let reflectors = [addr("198.51.100.1:4433"), addr("198.51.100.2:4433")];
        d.start(now, &reflectors, vec![addr("192.168.1.2:4433")]);
        while let Some(action) = d.poll_output() {
            match action {
                DiscoveryAction::Bind { reflector } => {
                    let mut timed_out = outcome(&reflector.to_string(), "203.0.113.1:4433");
                    timed_out.result = Err(stun::BindingError::TimedOut {
                        requests: 7,
                        elapsed: Duration::from_secs(3),
                    });
                    d.handle_binding(now, &timed_out);
                }
                DiscoveryAction::DialBack { nonce, .. } => {
                    d.handle_dial_back_result(now, nonce, DialBackStatus::NoHelper, &[]);
                }
                DiscoveryAction::CountHops { .. } => panic!("no hop count here"),
            }
        }
    }

    /// The first `secs` (whole seconds from `now`) at which the next run is due.
    fn due_after(d: &Discovery, now: Instant) -> u64 {
        (0..=700)
            .find(|s| d.due(now + Duration::from_secs(*s)))
            .expect("a next run")
    }

    /// A run of a public node whose dial-backs only helpers we had sent to
    /// could make: its verdict is undetermined.
    fn undetermined_run(d: &mut Discovery, now: Instant) -> NatReport {
        let public = "198.51.100.9:4433";
        let reflectors = [addr("198.51.100.1:4433"), addr("198.51.100.2:4433")];
        d.start(now, &reflectors, vec![addr(public)]);
        let mut nonces = Vec::new();
        while let Some(action) = d.poll_output() {
            match action {
                DiscoveryAction::Bind { reflector } => {
                    d.handle_binding(now, &outcome(&reflector.to_string(), public));
                }
                DiscoveryAction::DialBack { nonce, .. } => nonces.push(nonce),
                other => panic!("{other:?}"),
            }
        }
        for nonce in nonces {
            d.handle_dial_back_result(now, nonce, DialBackStatus::Forwarded, &[KNOWN]);
        }
        d.take_finished().expect("a report")
    }

    #[test]
    fn undetermined_runs_back_off_to_the_interval_until_contacts_grow() {
        let now = crate::test_epoch();
        let mut d = without_hop_count();
        let mut at = now;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let report = undetermined_run(&mut d, at);
            assert_eq!(report.reachability, Reachability::Undetermined);
            let wait = due_after(&d, at);
            waits.push(wait);
            at += Duration::from_secs(wait);
        }
        // 30 s, then twice as long each time, up to the 10 min interval.
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        // A new contact may be the helper that was missing: within 30 s again.
        undetermined_run(&mut d, at);
        let later = at + Duration::from_secs(100);
        d.handle_contacts_grew(later);
        assert_eq!(due_after(&d, later), 30);
        let at = later + Duration::from_secs(30);
        undetermined_run(&mut d, at);
        assert_eq!(due_after(&d, at), 30, "the retries started over");
        // After a verdict, growth changes nothing.
        let (mut d, now, [ip, port]) = bound("192.168.1.2:4433", "203.0.113.1:4433");
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_dial_back_result(now, port, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_timeout(now + Duration::from_secs(5));
        assert!(d.take_finished().is_some());
        d.handle_contacts_grew(now + Duration::from_secs(6));
        assert!(!d.due(now + Duration::from_secs(60)));
    }

    #[test]
    fn a_run_nobody_answered_leaves_the_last_verdict_and_retries_soon_then_less_often() {
        let (mut d, now, [ip, port]) = bound("192.168.1.2:4433", "203.0.113.1:4433");
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_dial_back_result(now, port, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_timeout(now + Duration::from_secs(5));
        let private = d.take_finished().expect("a private verdict");
        assert_eq!(private.reachability, Reachability::Private);
        // Cut off: run after run goes unanswered. The verdict stands, nothing is
        // reported, and the runs come 2 s, then 4, 8, 16 s apart (half of each
        // certain, half jitter), and at most 30 s.
        let mut at = now + Duration::from_secs(10);
        let mut gaps = Vec::new();
        for _ in 0..6 {
            unanswered_run(&mut d, at);
            assert!(d.take_finished().is_none(), "nothing new to report");
            assert_eq!(d.report(), Some(&private));
            let gap = due_after(&d, at);
            gaps.push(gap);
            at += Duration::from_secs(gap);
        }
        assert_eq!(d.stats().unanswered_runs, 6);
        let ceilings = [2, 4, 8, 16, 30, 30];
        for (gap, ceiling) in gaps.iter().zip(ceilings) {
            assert!((ceiling / 2..=ceiling).contains(gap), "{gaps:?}");
        }
        // Answered again: a new verdict, and the backoff starts over.
        let reflectors = [addr("198.51.100.1:4433"), addr("198.51.100.2:4433")];
        d.start(at, &reflectors, vec![addr("192.168.1.2:4433")]);
        while let Some(action) = d.poll_output() {
            match action {
                DiscoveryAction::Bind { reflector } => {
                    d.handle_binding(at, &outcome(&reflector.to_string(), "203.0.113.7:4433"));
                }
                DiscoveryAction::DialBack { nonce, .. } => {
                    d.handle_dial_back_result(at, nonce, DialBackStatus::NoHelper, &[]);
                }
                DiscoveryAction::CountHops { .. } => {}
            }
        }
        let fresh = d.take_finished().expect("an answered run reports");
        assert_eq!(fresh.reflexive, vec![addr("203.0.113.7:4433")]);
        unanswered_run(&mut d, at);
        assert!((1..=2).contains(&due_after(&d, at)));
    }

    #[test]
    fn a_first_run_nobody_answered_reports_undetermined_and_retries_soon() {
        let now = crate::test_epoch();
        let mut d = without_hop_count();
        unanswered_run(&mut d, now);
        let report = d
            .take_finished()
            .expect("no verdict yet: an undetermined one");
        assert_eq!(report.reachability, Reachability::Undetermined);
        assert_eq!(report.reflectors, (2, 0));
        assert!((1..=2).contains(&due_after(&d, now)), "not the 30 s retry");
    }

    #[test]
    fn a_wildcard_socket_cannot_tell_whether_it_is_translated() {
        let (mut d, now, [ip, port]) = bound("0.0.0.0:4433", "198.51.100.9:4433");
        d.handle_dial_back_result(now, ip, DialBackStatus::Forwarded, &[STRANGER]);
        d.handle_dial_back_result(now, port, DialBackStatus::NoHelper, &[]);
        d.handle_probe(now, ip, STRANGER);
        let report = d.take_finished().unwrap();
        assert_eq!(report.behind_nat, None);
        assert_eq!(report.reachability, Reachability::Undetermined);
        assert_eq!(report.filtering, FilteringBehaviour::EndpointIndependent);
    }
}
