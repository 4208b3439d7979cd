//! The command line: subcommands and flags (clap derive). Every mesh flag
//! also reads an environment variable; settings missing from both come
//! from the config file, then from the defaults (see [`crate::settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use macula::id::Realm;
use serde::Deserialize;

use crate::contact::Seed;
use crate::failure::EXIT_CODES;
use crate::gateway::GatewayArg;

/// How settings combine, as `--help` shows it.
const PRECEDENCE: &str = "\
Every mesh setting can come from a flag, an environment variable (shown as [env: ...]) or the
TOML file given with --config; a flag wins over the variable, the variable over the file, the
file over the default. Lists (seeds, pins, announce) given in a variable are comma-separated.";

/// The `macula` command line.
#[derive(Debug, Parser)]
#[command(
    name = "macula",
    version,
    about = "A macula mesh node, and calls, publishes and subscriptions from the shell",
    long_about = None,
    after_help = EXIT_CODES,
)]
pub struct Cli {
    /// What to log on stderr: error, warn, info, debug, trace, or a filter
    /// like `macula_tokio=debug`.
    #[arg(long, global = true, env = "MACULA_LOG", default_value = "warn")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// What `macula` does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a mesh node until Ctrl-C; prints the seed others join through.
    #[command(after_help = PRECEDENCE)]
    Node(NodeArgs),
    /// Join the mesh, call a procedure, print its reply (stdout) and latency (stderr).
    #[command(after_help = PRECEDENCE)]
    Call(CallArgs),
    /// Join the mesh and publish one message to a topic.
    #[command(after_help = PRECEDENCE)]
    Publish(PublishArgs),
    /// Join the mesh and print every message on topics matching a pattern.
    #[command(after_help = PRECEDENCE)]
    Subscribe(SubscribeArgs),
    /// Run a mesh of several nodes on 127.0.0.1 in this process and show it working.
    Demo(DemoArgs),
    /// Create an identity file (an Ed25519 key in PKCS#8 PEM) and print its node id.
    Keygen(KeygenArgs),
}

/// How peers' certificates are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// The key is the identity: any peer whose certificate carries the node
    /// id it claims (the default).
    #[default]
    Identity,
    /// Only peers whose node ids are in the pin list (--pin).
    Pinned,
    /// Only peers whose certificate chains to a CA in --ca-file (inside its
    /// validity dates); this node presents the certificate in --cert-file,
    /// issued for the key in --identity.
    Ca,
}

/// When `macula node` relays for others (reservations and circuits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayArg {
    /// Only while this node is known to be publicly reachable: NAT
    /// discovery's dial-back found it so, or a stranger's unsolicited
    /// connection reached a global address of it (the default). Until then,
    /// and behind a NAT, it does not relay.
    #[default]
    Auto,
    /// Always: a node known to be public (a bootstrap or relay server).
    Always,
    /// Never.
    Never,
}

impl From<RelayArg> for macula::relay::RelayMode {
    fn from(arg: RelayArg) -> Self {
        match arg {
            RelayArg::Auto => Self::Auto,
            RelayArg::Always => Self::Always,
            RelayArg::Never => Self::Never,
        }
    }
}

/// The settings every command that joins the mesh shares.
#[derive(Debug, Default, Args)]
pub struct MeshArgs {
    /// TOML file with settings (keys as the long flags, `_` for `-`; lists as arrays).
    #[arg(long, short = 'c', env = "MACULA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on. Default: 0.0.0.0:4433 for `node`; for the
    /// other commands the local address that routes to the first seed, any port.
    #[arg(long, env = "MACULA_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address peers dial to reach this node. Default: the listen address;
    /// when that is 0.0.0.0 or `[::]`, the local address on the route to the
    /// first seed (or the default route).
    #[arg(
        long,
        env = "MACULA_ANNOUNCE",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub announce: Vec<SocketAddr>,
    /// A node to join the mesh through, as NODEID@HOST:PORT (printed by
    /// `macula node`). Repeat for several.
    #[arg(
        long = "seed",
        env = "MACULA_SEEDS",
        value_name = "SEED",
        value_delimiter = ','
    )]
    pub seeds: Vec<Seed>,
    /// The realm (a DNS-like name); nodes of other realms are refused.
    /// Default: io.macula.mesh.
    #[arg(long, env = "MACULA_REALM")]
    pub realm: Option<Realm>,
    /// Identity file (Ed25519 PKCS#8 PEM); created if missing. Without one
    /// the node gets a new node id each run.
    #[arg(long, env = "MACULA_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// How peers' certificates are checked. Default: identity.
    #[arg(long, env = "MACULA_TLS", value_name = "MODE")]
    pub tls: Option<TlsMode>,
    /// A node id (64 hex digits) trusted in --tls pinned. Repeat for several.
    #[arg(
        long = "pin",
        env = "MACULA_PINS",
        value_name = "NODEID",
        value_delimiter = ','
    )]
    pub pins: Vec<String>,
    /// PEM file of the CA certificates trusted in --tls ca.
    #[arg(long, env = "MACULA_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of this node's certificate chain for --tls ca (end-entity
    /// first, for the key in --identity).
    #[arg(long, env = "MACULA_CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Seconds to wait for joining the mesh, and for a call's answer. Default: 10.
    #[arg(long, env = "MACULA_TIMEOUT", value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

/// `macula node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Settings shared with the other commands.
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// File the node saves the peers it knows to and starts from next time
    /// (one `NODEID ADDR...` per line).
    #[arg(long, env = "MACULA_PEERS_FILE", value_name = "FILE")]
    pub peers_file: Option<PathBuf>,
    /// Serve PROCEDURE, answering every call with its payload. Repeat for several.
    #[arg(
        long,
        env = "MACULA_ECHO",
        value_name = "PROCEDURE",
        value_delimiter = ','
    )]
    pub echo: Vec<String>,
    /// Serve `GET /metrics` (OpenMetrics text) and `GET /health` over HTTP
    /// at this address (port 0 picks a free one).
    #[arg(long, env = "MACULA_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Only these nodes may call the procedures PATTERN matches (a pattern
    /// as for subscribe: `admin.#`, `jobs.*`); others are answered ERROR
    /// unauthorized. Procedures no rule matches stay open to every caller;
    /// a procedure several rules match is open to all their nodes. Repeat
    /// for several rules (`;` between rules in the environment variable).
    #[arg(
        long = "allow-caller",
        env = "MACULA_ALLOW_CALLERS",
        value_name = "PATTERN=NODEID,...",
        value_delimiter = ';'
    )]
    pub allow_callers: Vec<String>,
    /// Only these nodes may publish to this node on the topics PATTERN
    /// matches; other nodes' publications there are dropped (counted).
    /// Topics no rule matches stay open to every publisher. Repeat for
    /// several rules (`;` between rules in the environment variable).
    #[arg(
        long = "allow-publisher",
        env = "MACULA_ALLOW_PUBLISHERS",
        value_name = "PATTERN=NODEID,...",
        value_delimiter = ';'
    )]
    pub allow_publishers: Vec<String>,
    /// When to relay for private nodes: auto (only once this node is known
    /// to be publicly reachable: NAT discovery's dial-back found it so, or a
    /// stranger's unsolicited connection reached a global address of it;
    /// never behind a NAT), always, never. Default: auto.
    #[arg(long, env = "MACULA_RELAY", value_name = "MODE")]
    pub relay: Option<RelayArg>,
    /// Ask this router (an IP address, or `auto` for the default route's)
    /// to forward a port to the node, by PCP (RFC 6887) and else NAT-PMP
    /// (RFC 6886); the mapping is renewed while the node runs and deleted
    /// when it stops, and its address becomes a punch candidate. Default: no
    /// port mapping.
    #[arg(long, env = "MACULA_GATEWAY", value_name = "IP|auto")]
    pub gateway: Option<GatewayArg>,
}

/// Where a payload comes from: the argument, a file, or stdin (`-`).
#[derive(Debug, Args)]
pub struct PayloadArgs {
    /// The payload as text; `-` reads stdin. Default: empty.
    #[arg(value_name = "PAYLOAD", conflicts_with = "file")]
    pub payload: Option<String>,
    /// Read the payload from FILE.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `macula call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The procedure, like `greeter.hello`.
    pub procedure: String,
    /// The arguments.
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// Settings shared with the other commands.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// `macula publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic, like `sensors.kitchen.temp`.
    pub topic: String,
    /// The message.
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// Settings shared with the other commands.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// `macula subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The pattern: segments separated by `.`, `*` for one segment, a final
    /// `#` for the rest (like `sensors.*.temp`, `sensors.#`).
    pub pattern: String,
    /// Exit after this many messages (default: run until Ctrl-C).
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Settings shared with the other commands.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// `macula demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Nodes in the local mesh (at least 5: the scenario needs a caller, a
    /// provider, a publisher and three subscribers).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(5..=64))]
    pub nodes: u16,
    /// Calls over the pooled connection, for the latency percentiles.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub calls: u32,
}

/// `macula keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity; an existing file is never overwritten.
    pub file: PathBuf,
}
