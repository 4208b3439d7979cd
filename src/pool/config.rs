//! The pool's settings and their defaults, checked once at construction.

use std::time::Duration;

use crate::id::NodeId;

use super::PoolError;

/// The longest duration a setting may have: far enough for any real use,
/// short enough that `now + setting` never overflows an `Instant`.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The most entries a pool may hold at once (slab indices are `u32`).
const MAX_ENTRIES: usize = 1 << 31;

/// How the pool sizes, ages and retries its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Our own node id: the tie-break between two simultaneous dials keeps
    /// the one dialed by the lower id, and acquiring it is an error.
    pub local: NodeId,
    /// Most connections we dialed (including connects in flight and peers
    /// backing off before a retry). Default 100.
    pub max_outbound: usize,
    /// Most connections peers dialed to us. Default 1000: a DHT server or a
    /// popular provider has many inbound peers.
    pub max_inbound: usize,
    /// An entry unused (no lease) for this long is closed. Default 5 min.
    pub idle_ttl: Duration,
    /// How long an acquire may wait for its connection before it fails.
    /// Default 10 s.
    pub wait_timeout: Duration,
    /// Connect attempts per peer before its waiters fail. Default 5. The
    /// attempts go on even when every waiter timed out or cancelled (the
    /// connection then comes up idle); a success starts the count again.
    pub max_connect_attempts: u32,
    /// Backoff after the first failed connect; it doubles per failure.
    /// Default 250 ms.
    pub backoff_base: Duration,
    /// Upper bound of the backoff. Default 30 s.
    pub backoff_max: Duration,
    /// Most acquires waiting on one peer. Default 64.
    pub max_waiters_per_peer: usize,
    /// Most peers waiting for an outbound slot while every slot is pinned.
    /// Default 256.
    pub max_queued_peers: usize,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl PoolConfig {
    /// The defaults, for a node with id `local`.
    pub fn new(local: NodeId) -> Self {
        Self {
            local,
            max_outbound: 100,
            max_inbound: 1000,
            idle_ttl: Duration::from_secs(300),
            wait_timeout: Duration::from_secs(10),
            max_connect_attempts: 5,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_waiters_per_peer: 64,
            max_queued_peers: 256,
            seed: 0,
        }
    }

    /// Checks every setting, naming the first bad one.
    pub(crate) fn validate(&self) -> Result<(), PoolError> {
        let counts = [
            ("max_outbound", self.max_outbound),
            ("max_inbound", self.max_inbound),
            ("max_connect_attempts", self.max_connect_attempts as usize),
            ("max_waiters_per_peer", self.max_waiters_per_peer),
            ("max_queued_peers", self.max_queued_peers),
        ];
        if let Some((setting, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(PoolError::InvalidConfig {
                setting,
                problem: "must be at least 1",
            });
        }
        let entries = self
            .max_outbound
            .saturating_add(self.max_inbound)
            .saturating_add(self.max_queued_peers);
        if entries > MAX_ENTRIES {
            return Err(PoolError::InvalidConfig {
                setting: "max_outbound",
                problem: "max_outbound + max_inbound + max_queued_peers must not exceed 2^31",
            });
        }
        let durations = [
            ("idle_ttl", self.idle_ttl),
            ("wait_timeout", self.wait_timeout),
            ("backoff_base", self.backoff_base),
            ("backoff_max", self.backoff_max),
        ];
        if let Some((setting, _)) = durations.iter().find(|(_, d)| *d > MAX_SETTING_DURATION) {
            return Err(PoolError::InvalidConfig {
                setting,
                problem: "longer than MAX_SETTING_DURATION (100 years)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        let config = PoolConfig::new(NodeId::from_bytes([1; 32]));
        assert_eq!(config.validate(), Ok(()));
        let zero_cap = PoolConfig {
            max_inbound: 0,
            ..config.clone()
        };
        assert!(matches!(
            zero_cap.validate(),
            Err(PoolError::InvalidConfig {
                setting: "max_inbound",
                ..
            })
        ));
        let forever = PoolConfig {
            idle_ttl: Duration::MAX,
            ..config
        };
        assert!(matches!(
            forever.validate(),
            Err(PoolError::InvalidConfig {
                setting: "idle_ttl",
                ..
            })
        ));
    }
}
