//! Progress of the long steps on stderr: one line per step, counted
//! in place while it runs when stderr is a terminal.

use std::io::{IsTerminal, Write};

use tokio::time::Instant;

use crate::latency::Ms;

/// One step being shown.
pub struct Step {
    label: String,
    total: usize,
    started: Instant,
    live: bool,
}

impl Step {
    /// Starts showing a step of `total` parts (0 for a step not counted).
    pub fn start(label: impl Into<String>, total: usize) -> Self {
        let step = Self {
            label: label.into(),
            total,
            started: Instant::now(),
            live: std::io::stderr().is_terminal(),
        };
        step.show(0);
        step
    }

    /// `done` of the parts are finished.
    pub fn advance(&self, done: usize) {
        if self.live {
            self.show(done);
        }
    }

    /// The step finished; `outcome` says how.
    pub fn finish(self, outcome: &str) {
        let took = Ms(self.started.elapsed());
        if self.live {
            eprint!("\r\x1b[2K");
        }
        eprintln!("  {} ... {outcome} ({took})", self.label);
    }

    fn show(&self, done: usize) {
        if !self.live {
            return;
        }
        let count = if self.total > 0 {
            format!(" [{done}/{}]", self.total)
        } else {
            String::new()
        };
        eprint!("\r\x1b[2K  {} ...{count}", self.label);
        let _ = std::io::stderr().flush();
    }
}
