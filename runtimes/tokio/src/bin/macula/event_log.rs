//! One line on stderr per thing a node reports, stamped with the seconds
//! since the command started.

use macula::dht::DhtEvent;
use macula::nat::portmap::MapEvent;
use macula::node::{CloseCause, Event, PathChange};
use macula::path::PathKind;
use macula::pool::Direction;
use macula::pubsub::{Pattern, PubSubEvent};
use macula::rpc::{AnnounceFailed, AnnounceFailure, RpcEvent};
use tokio::time::Instant;

/// Prints events relative to a start time.
pub struct EventLog {
    start: Instant,
}

impl EventLog {
    /// A log whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Prints `line` with the time since the start.
    pub fn line(&self, line: &str) {
        eprintln!("[{:>9.3}s] {line}", self.start.elapsed().as_secs_f64());
    }

    /// Prints `event` if it is worth a line.
    pub fn event(&self, event: &Event) {
        if let Some(line) = describe(event) {
            self.line(&line);
        }
    }
}

/// The line for `event`, or `None` for the ones not worth one (DHT
/// operations, calls and messages, which their commands report).
fn describe(event: &Event) -> Option<String> {
    match event {
        Event::Connected {
            peer,
            direction,
            path,
        } => {
            let who = match direction {
                Direction::Outbound => "we dialed",
                Direction::Inbound => "it dialed",
            };
            Some(format!("connected to {peer} ({who}, {})", path_text(*path)))
        }
        Event::PathChanged { peer, path, reason } => {
            let why = match reason {
                PathChange::Punched { remote, rtt } => {
                    format!(
                        "a hole punch reached {remote}, round trip {} ms",
                        rtt.as_millis()
                    )
                }
                PathChange::DirectPathDead => "the direct path stopped answering".into(),
            };
            Some(format!(
                "connection to {peer} now goes {}: {why}",
                path_text(*path)
            ))
        }
        Event::Disconnected {
            peer,
            remote,
            cause,
        } => {
            let who = peer.map_or_else(|| remote.to_string(), |p| format!("{p} at {remote}"));
            Some(format!("disconnected from {who}: {}", cause_text(cause)))
        }
        Event::Dht(DhtEvent::Bootstrapped { table_size: 0, .. }) => {
            Some("tried to join the mesh: no peer answered".into())
        }
        Event::Dht(DhtEvent::Bootstrapped { table_size, .. }) => Some(format!(
            "joined the mesh: {table_size} peers in the routing table"
        )),
        Event::Rpc(RpcEvent::RegistrationFailed { procedure, failed }) => Some(format!(
            "announcing {procedure} failed: {}",
            failed_text(failed)
        )),
        Event::PubSub(PubSubEvent::SubscriptionFailed { patterns, failed }) => {
            let patterns: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
            Some(format!(
                "announcing the subscription to {} failed: {}",
                patterns.join(", "),
                failed_text(failed)
            ))
        }
        Event::Nat(report) => {
            let addrs: Vec<String> = report.reflexive.iter().map(ToString::to_string).collect();
            Some(format!(
                "NAT discovery: reachability {:?}, seen as {}; mapping {:?}, filtering {:?}, ports {:?}",
                report.reachability,
                if addrs.is_empty() {
                    "-".into()
                } else {
                    addrs.join(", ")
                },
                report.mapping,
                report.filtering,
                report.ports
            ))
        }
        Event::PortMapping(event) => Some(match event {
            MapEvent::Mapped {
                external,
                lifetime,
                protocol,
            } => format!(
                "port mapping: the gateway maps {external} to us for {} s ({protocol:?})",
                lifetime.as_secs()
            ),
            MapEvent::Lost => "port mapping: the mapping is lost".into(),
            MapEvent::Failed(error) => format!("port mapping failed: {error}"),
        }),
        Event::Dht(_)
        | Event::Rpc(_)
        | Event::PubSub(_)
        | Event::Relay(_)
        | Event::PeerRecord { .. } => None,
    }
}

/// How a connection's packets travel, in words.
fn path_text(path: PathKind) -> &'static str {
    match path {
        PathKind::Direct => "direct",
        PathKind::Relayed => "through a relay",
    }
}

/// Why an announcement failed and when it is tried again, in words.
fn failed_text(failed: &AnnounceFailed) -> String {
    let why = match &failed.reason {
        AnnounceFailure::Quorum { acked, quorum } => {
            format!("{acked} of the {quorum} nodes needed stored it")
        }
        AnnounceFailure::Rejected(detail) => detail.clone(),
    };
    format!(
        "{why} (failure {}; trying again in {:.0} s)",
        failed.failures,
        failed.retry_in.as_secs_f64()
    )
}

/// Why a connection closed, in words.
fn cause_text(cause: &CloseCause) -> String {
    match cause {
        CloseCause::Local(why) => format!("closed here ({why})"),
        CloseCause::Peer { reason, message } => {
            format!("closed by the peer ({reason:?}: {message})")
        }
        CloseCause::Refused { reason, detail } => format!("refused ({reason:?}: {detail})"),
        CloseCause::Transport(why) => format!("transport failed ({why})"),
        CloseCause::CircuitClosed { relay, loss } => {
            format!("the relay circuit through {relay} closed ({loss:?})")
        }
    }
}
