//! One line on stderr per thing a node reports, stamped with the seconds
//! since the command started.

use tokio::time::Instant;

use macula::dht::DhtEvent;
use macula::node::{CloseCause, Event};
use macula::pool::Direction;

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

/// The line for `event`, or `None` for the ones the RPC and pub/sub
/// commands report themselves.
fn describe(event: &Event) -> Option<String> {
    match event {
        Event::Connected { peer, direction } => Some(match direction {
            Direction::Outbound => format!("connected to {peer} (we dialed)"),
            Direction::Inbound => format!("connected to {peer} (it dialed)"),
        }),
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
        Event::Dht(_) | Event::Rpc(_) | Event::PubSub(_) => None,
    }
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
    }
}
