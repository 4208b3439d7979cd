//! A node's state at one moment ([`NodeStats`], from [`Node::stats`]) and
//! whether that state is healthy ([`Health::assess`]).
//!
//! A node is **ok** unless one of these rules says it is **degraded**:
//!
//! | rule | degraded when |
//! | --- | --- |
//! | peers | no live connection |
//! | routing | the routing table is empty |
//! | errors | a connection failed or was refused in the last [`ERROR_WINDOW`] (60 s) |
//! | stores | under [`MIN_STORE_SUCCESS_RATE`] (50%) of the last store operations (up to 64) reached their quorum |
//! | running | the node has stopped ([`Health::stopped`], said by its driver) |
//!
//! No clock is read here: the driver passes `now`.

use std::fmt;
use std::time::{Duration, Instant};

use super::{Node, NodeCounters};
use crate::metrics::Metrics;

/// How long a connection error keeps the node degraded.
pub const ERROR_WINDOW: Duration = Duration::from_secs(60);

/// The share of recent store operations that must reach their quorum.
pub const MIN_STORE_SUCCESS_RATE: f64 = 0.5;

/// A node's state at one moment ([`Node::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStats {
    /// What the node counted (datagrams by kind, timeouts, protocol errors).
    pub counters: NodeCounters,
    /// Live QUIC connections.
    pub connections: usize,
    /// Routing-table entries.
    pub routing_table: usize,
    /// The node's metrics.
    pub metrics: Metrics,
}

impl Node {
    /// The node's counters, connections, routing-table size and metrics
    /// now (a copy).
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            counters: self.counters().clone(),
            connections: self.connection_count(),
            routing_table: self.dht().table().len(),
            metrics: self.metrics().clone(),
        }
    }
}

/// Why a node is degraded.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthReason {
    /// No live connection.
    NoConnectedPeers,
    /// The routing table is empty.
    EmptyRoutingTable,
    /// A connection error happened `ago` (within [`ERROR_WINDOW`]).
    RecentConnectionError {
        /// How long ago.
        ago: Duration,
    },
    /// Recent store operations reached their quorum at `rate`.
    LowStorePropagation {
        /// The share that did, in `[0, 1]`.
        rate: f64,
    },
    /// The node is not running.
    Stopped,
}

impl fmt::Display for HealthReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthReason::NoConnectedPeers => write!(f, "no connected peers"),
            HealthReason::EmptyRoutingTable => write!(f, "empty routing table"),
            HealthReason::RecentConnectionError { ago } => {
                write!(f, "connection error {} s ago", ago.as_secs())
            }
            HealthReason::LowStorePropagation { rate } => write!(
                f,
                "{:.0}% of recent DHT stores reached their quorum (below {:.0}%)",
                rate * 100.0,
                MIN_STORE_SUCCESS_RATE * 100.0
            ),
            HealthReason::Stopped => write!(f, "node stopped"),
        }
    }
}

/// A node's health: ok when there is no reason to say otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// Every rule the node breaks, in the table's order.
    pub reasons: Vec<HealthReason>,
}

impl Health {
    /// The health `stats` show at `now`.
    pub fn assess(stats: &NodeStats, now: Instant) -> Self {
        let metrics = &stats.metrics;
        let mut reasons = Vec::new();
        if stats.connections == 0 {
            reasons.push(HealthReason::NoConnectedPeers);
        }
        if stats.routing_table == 0 {
            reasons.push(HealthReason::EmptyRoutingTable);
        }
        if let Some(at) = metrics.last_connection_error {
            let ago = now.saturating_duration_since(at);
            if ago < ERROR_WINDOW {
                reasons.push(HealthReason::RecentConnectionError { ago });
            }
        }
        if let Some(rate) = metrics.store_propagation_success_rate()
            && rate < MIN_STORE_SUCCESS_RATE
        {
            reasons.push(HealthReason::LowStorePropagation { rate });
        }
        Self { reasons }
    }

    /// The health of a node that no longer runs.
    pub fn stopped() -> Self {
        Self {
            reasons: vec![HealthReason::Stopped],
        }
    }

    /// True when no rule is broken.
    pub fn is_ok(&self) -> bool {
        self.reasons.is_empty()
    }

    /// `{"status":"ok"|"degraded","reasons":[...]}`.
    pub fn to_json(&self) -> String {
        let status = if self.is_ok() { "ok" } else { "degraded" };
        // The sentences are ASCII without quotes or backslashes: nothing
        // to escape.
        let reasons: Vec<String> = self.reasons.iter().map(|r| format!("\"{r}\"")).collect();
        format!(
            "{{\"status\":\"{status}\",\"reasons\":[{}]}}",
            reasons.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::ConnectionErrorKind;

    use super::*;

    fn stats(connections: usize, routing_table: usize, metrics: Metrics) -> NodeStats {
        NodeStats {
            counters: NodeCounters::default(),
            connections,
            routing_table,
            metrics,
        }
    }

    #[test]
    fn a_connected_node_with_peers_is_ok() {
        let health = Health::assess(&stats(2, 5, Metrics::new()), crate::test_epoch());
        assert!(health.is_ok());
        assert_eq!(health.to_json(), r#"{"status":"ok","reasons":[]}"#);
    }

    #[test]
    fn a_stopped_node_says_so() {
        let health = Health::stopped();
        assert!(!health.is_ok());
        assert_eq!(
            health.to_json(),
            r#"{"status":"degraded","reasons":["node stopped"]}"#
        );
    }

    #[test]
    fn each_rule_gives_its_reason_and_the_node_recovers() {
        let now = crate::test_epoch();
        let mut metrics = Metrics::new();
        metrics.record_connection_error(now, ConnectionErrorKind::Timeout);
        for success in [true, false, false, false] {
            metrics.record_store(success);
        }
        let later = now + Duration::from_secs(2);
        let health = Health::assess(&stats(0, 0, metrics.clone()), later);
        assert_eq!(
            health.reasons,
            vec![
                HealthReason::NoConnectedPeers,
                HealthReason::EmptyRoutingTable,
                HealthReason::RecentConnectionError {
                    ago: Duration::from_secs(2)
                },
                HealthReason::LowStorePropagation { rate: 0.25 },
            ]
        );
        assert_eq!(
            health.to_json(),
            "{\"status\":\"degraded\",\"reasons\":[\"no connected peers\",\"empty routing table\",\
             \"connection error 2 s ago\",\
             \"25% of recent DHT stores reached their quorum (below 50%)\"]}"
        );
        // Just inside the window the error still counts; at its end it no
        // longer does. The stores recover at half the recent ones.
        let inside = now + ERROR_WINDOW - Duration::from_millis(1);
        let still = Health::assess(&stats(1, 1, metrics.clone()), inside);
        assert!(matches!(
            still.reasons[..],
            [
                HealthReason::RecentConnectionError { .. },
                HealthReason::LowStorePropagation { .. }
            ]
        ));
        for _ in 0..4 {
            metrics.record_store(true);
        }
        let much_later = now + ERROR_WINDOW;
        assert!(Health::assess(&stats(1, 1, metrics), much_later).is_ok());
    }
}
