//! Why a command failed, as one line for the user and an exit code a
//! script can test. No panics and no `Debug` dumps reach the terminal.

use std::fmt;
use std::process::ExitCode;

/// What kind of failure ended a command; each kind has its own exit code
/// (listed in `macula --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Anything not listed below (exit code 1).
    Other,
    /// A config, identity, peers or payload file, or a setting, is unusable
    /// (exit code 3). Bad flags are clap's (exit code 2).
    Settings,
    /// The socket could not be bound, or no seed answered (exit code 4).
    Network,
    /// No node provides the procedure (exit code 5).
    NoProvider,
    /// No answer in time (exit code 6).
    Timeout,
    /// The provider answered with an error, or refused the call (exit code 7).
    Remote,
    /// The call failed otherwise: lost connection, too large, overloaded
    /// (exit code 8).
    Call,
    /// `macula demo` ran, but an expected call or delivery did not happen
    /// (exit code 9).
    DemoIncomplete,
    /// `macula publish`: a subscriber found in the DHT was not reached
    /// (exit code 10).
    Undelivered,
}

/// The exit codes, as `macula --help` shows them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other error
  2  bad command line (unknown flag, missing or malformed value)
  3  unusable setting or file (config, identity, peers, payload file)
  4  network: the address cannot be bound, or no seed answered in time
  5  call: no node provides the procedure
  6  call: no answer in time
  7  call: the provider answered with an error or refused the call
  8  call: failed otherwise (connection lost, payload too large, overloaded)
  9  demo: an expected call or delivery did not happen
 10  publish: a subscriber found in the DHT could not be reached";

impl FailureKind {
    /// The process exit code of this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Settings => 3,
            Self::Network => 4,
            Self::NoProvider => 5,
            Self::Timeout => 6,
            Self::Remote => 7,
            Self::Call => 8,
            Self::DemoIncomplete => 9,
            Self::Undelivered => 10,
        }
    }
}

/// A failed command: its kind and the message for the user.
#[derive(Debug)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// One or more lines for the user, naming the file or setting at fault.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A settings or file failure.
    pub fn settings(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Settings, message)
    }

    /// A network failure.
    pub fn network(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Network, message)
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Other, message)
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_code())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A node command that failed because the node stopped under it.
impl From<macula_tokio::CommandError> for Failure {
    fn from(error: macula_tokio::CommandError) -> Self {
        Self::other(format!("node command failed: {error}"))
    }
}
