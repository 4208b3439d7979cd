//! The chaos cluster's fault schedule: one seeded list of faults, each at its offset
//! from the end of the warm-up, that the live run (`tests/cluster/run`, which reads
//! `cluster_sim schedule`) and the simulated run ([`super::scenario`]) both play, so a
//! failure found live replays in the simulator with the same seed.

use std::fmt;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::plan::{GROUPS, ROUTERS};

/// How long the mesh forms before the first fault.
pub const WARMUP: Duration = Duration::from_secs(20);

/// The quiet end of a run: no fault starts in it.
pub const QUIET_TAIL: Duration = Duration::from_secs(15);

/// natB's two public addresses; a `readdress` moves it to the other one.
pub const READDRESS_IPS: [&str; 2] = ["198.19.2.2", "198.19.2.3"];

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of a node, restarted after `down`.
    Kill {
        /// The node.
        node: usize,
        /// How long it stays dead.
        down: Duration,
    },
    /// A graceful stop (its calls under way end first), restarted `down` after the
    /// signal.
    Stop {
        /// The node.
        node: usize,
        /// From the signal to the restart.
        down: Duration,
    },
    /// A host group (one of [`GROUPS`]) cut off the internet, healed after `lasts`.
    Partition {
        /// The group.
        group: &'static str,
        /// How long the cut lasts.
        lasts: Duration,
    },
    /// A NAT router (one of [`ROUTERS`]) forgets every mapping (ports are kept).
    NatReboot {
        /// The router.
        router: &'static str,
    },
    /// natB's public address moves to `ip` (one of [`READDRESS_IPS`]), every mapping
    /// flushed.
    Readdress {
        /// The new address.
        ip: &'static str,
    },
}

impl Fault {
    /// How long the fault lasts (0 for the instant ones).
    pub fn lasts(&self) -> Duration {
        match self {
            Self::Kill { down, .. } | Self::Stop { down, .. } => *down,
            Self::Partition { lasts, .. } => *lasts,
            Self::NatReboot { .. } | Self::Readdress { .. } => Duration::ZERO,
        }
    }
}

/// A fault and when it starts, from the end of the warm-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// Its start.
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
}

/// One line the run script reads: `AT_MS KIND TARGET LASTS_MS`.
impl fmt::Display for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.as_millis();
        let lasts = self.fault.lasts().as_millis();
        match &self.fault {
            Fault::Kill { node, .. } => write!(f, "{at} kill9 {node} {lasts}"),
            Fault::Stop { node, .. } => write!(f, "{at} stop {node} {lasts}"),
            Fault::Partition { group, .. } => write!(f, "{at} partition {group} {lasts}"),
            Fault::NatReboot { router } => write!(f, "{at} nat_reboot {router} {lasts}"),
            Fault::Readdress { ip } => write!(f, "{at} readdress {ip} {lasts}"),
        }
    }
}

/// The faults of a run with `seed` over `nodes` nodes lasting `total` after the
/// warm-up: a gap of 3–7 s, a fault, the gap after its end, and so on until the quiet
/// tail; kinds drawn evenly from kill (twice as likely), stop, partition, NAT reboot and
/// readdress. A kill keeps its node down 2–5 s, a stop 6–9 s (its calls, 5 s at most,
/// end first), a partition lasts 4–9 s.
pub fn schedule(seed: u64, nodes: usize, total: Duration) -> Vec<Scheduled> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let secs =
        |rng: &mut ChaCha8Rng, from: u64, to: u64| Duration::from_secs(rng.random_range(from..=to));
    let stop_by = total.saturating_sub(QUIET_TAIL);
    let mut faults = Vec::new();
    let mut at = Duration::ZERO;
    let mut readdressed = false;
    loop {
        at += secs(&mut rng, 3, 7);
        if at >= stop_by || nodes == 0 {
            return faults;
        }
        let fault = match rng.random_range(0..6u8) {
            0 | 1 => Fault::Kill {
                node: rng.random_range(0..nodes),
                down: secs(&mut rng, 2, 5),
            },
            2 => Fault::Stop {
                node: rng.random_range(0..nodes),
                down: secs(&mut rng, 6, 9),
            },
            3 => Fault::Partition {
                group: GROUPS[rng.random_range(0..GROUPS.len())],
                lasts: secs(&mut rng, 4, 9),
            },
            4 => Fault::NatReboot {
                router: ROUTERS[rng.random_range(0..ROUTERS.len())],
            },
            _ => {
                readdressed = !readdressed;
                Fault::Readdress {
                    ip: READDRESS_IPS[usize::from(readdressed)],
                }
            }
        };
        let lasts = fault.lasts();
        faults.push(Scheduled { at, fault });
        at += lasts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_schedule_and_another_seed_another() {
        let two_minutes = Duration::from_secs(120);
        let a = schedule(1, 30, two_minutes);
        assert_eq!(a, schedule(1, 30, two_minutes));
        assert_ne!(a, schedule(2, 30, two_minutes));
    }

    #[test]
    fn faults_keep_out_of_the_quiet_tail_and_never_overlap() {
        for seed in 1..50 {
            let total = Duration::from_secs(120);
            let faults = schedule(seed, 30, total);
            assert!(!faults.is_empty());
            for pair in faults.windows(2) {
                let gap = pair[1].at - (pair[0].at + pair[0].fault.lasts());
                assert!((3..=7).contains(&gap.as_secs()), "{seed}: gap {gap:?}");
            }
            assert!(faults.iter().all(|f| f.at < total - QUIET_TAIL));
            let nodes = faults.iter().filter_map(|f| match f.fault {
                Fault::Kill { node, .. } | Fault::Stop { node, .. } => Some(node),
                _ => None,
            });
            assert!(nodes.into_iter().all(|n| n < 30));
        }
    }

    #[test]
    fn readdress_alternates_between_the_two_addresses() {
        let faults = schedule(3, 30, Duration::from_secs(3600));
        let ips: Vec<&str> = (faults.iter())
            .filter_map(|f| match f.fault {
                Fault::Readdress { ip } => Some(ip),
                _ => None,
            })
            .collect();
        assert!(ips.len() > 2);
        assert!(ips.iter().step_by(2).all(|ip| *ip == READDRESS_IPS[1]));
        assert!(
            ips.iter()
                .skip(1)
                .step_by(2)
                .all(|ip| *ip == READDRESS_IPS[0])
        );
    }

    #[test]
    fn a_line_names_the_offset_kind_target_and_length() {
        let kill = Scheduled {
            at: Duration::from_millis(4000),
            fault: Fault::Kill {
                node: 7,
                down: Duration::from_secs(3),
            },
        };
        assert_eq!(kill.to_string(), "4000 kill9 7 3000");
        let reboot = Scheduled {
            at: Duration::from_millis(9000),
            fault: Fault::NatReboot { router: "natS" },
        };
        assert_eq!(reboot.to_string(), "9000 nat_reboot natS 0");
    }

    #[test]
    fn no_nodes_no_faults() {
        assert!(schedule(1, 0, Duration::from_secs(120)).is_empty());
    }
}
