//! The settings of a node the CLI starts, from three layers: flags and
//! environment variables (clap merges those two, the flag winning), then
//! the TOML config file, then the defaults.
//!
//! A config file holds any of the keys of [`FileSettings`]; unknown keys are
//! refused (a typo would otherwise be silently ignored). Paths in it are
//! relative to the file's directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use macula::access::AccessList;
use macula::dht::Contact;
use macula::id::Realm;
use macula::tls::{CaRoots, PeerVerification, PinSet};
use serde::Deserialize;

use crate::args::{MeshArgs, RelayArg, TlsMode};
use crate::contact::Seed;
use crate::failure::Failure;
use crate::gateway::GatewayArg;

/// The realm when none is given.
pub const DEFAULT_REALM: &str = "io.macula.mesh";

/// Where `macula node` listens when no address is given.
pub const DEFAULT_NODE_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4433);

/// How long joining and calls wait when no timeout is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys a config file may hold (all optional), as the long flags are
/// named with `_` for `-`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// `listen = "0.0.0.0:4433"`
    pub listen: Option<SocketAddr>,
    /// `announce = ["203.0.113.7:4433"]`
    pub announce: Option<Vec<SocketAddr>>,
    /// `seeds = ["NODEID@HOST:PORT", ...]`
    pub seeds: Option<Vec<String>>,
    /// `realm = "io.macula.mesh"`
    pub realm: Option<String>,
    /// `identity = "node.pem"`
    pub identity: Option<PathBuf>,
    /// `tls = "identity"` or `"pinned"`
    pub tls: Option<TlsMode>,
    /// `pins = ["NODEID", ...]`
    pub pins: Option<Vec<String>>,
    /// `ca_file = "ca.pem"` (`tls = "ca"`)
    pub ca_file: Option<PathBuf>,
    /// `cert_file = "node-cert.pem"` (`tls = "ca"`)
    pub cert_file: Option<PathBuf>,
    /// `timeout = 10` (seconds)
    pub timeout: Option<f64>,
    /// `peers_file = "peers.txt"` (`macula node` only)
    pub peers_file: Option<PathBuf>,
    /// `echo = ["demo.echo"]` (`macula node` only)
    pub echo: Option<Vec<String>>,
    /// `metrics_addr = "127.0.0.1:9464"` (`macula node` only)
    pub metrics_addr: Option<SocketAddr>,
    /// `allow_caller = ["admin.#=NODEID,NODEID"]` (`macula node` only)
    pub allow_caller: Option<Vec<String>>,
    /// `allow_publisher = ["alerts.#=NODEID"]` (`macula node` only)
    pub allow_publisher: Option<Vec<String>>,
    /// `relay = "auto"`, `"always"` or `"never"` (`macula node` only)
    pub relay: Option<RelayArg>,
    /// `gateway = "auto"` or `"192.168.1.1"` (`macula node` only)
    pub gateway: Option<GatewayArg>,
}

impl FileSettings {
    /// Reads and parses the config file at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::settings(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let mut settings = Self::parse(&text).map_err(|problem| {
            Failure::settings(format!("config file {}: {problem}", path.display()))
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let paths = [
            &mut settings.identity,
            &mut settings.peers_file,
            &mut settings.ca_file,
            &mut settings.cert_file,
        ];
        for file in paths.into_iter().flatten() {
            *file = dir.join(&*file);
        }
        Ok(settings)
    }

    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

/// The settings a mesh command runs with, every layer applied.
#[derive(Debug)]
pub struct Settings {
    /// Where to bind; `None` picks the address on the route to the first seed.
    pub listen: Option<SocketAddr>,
    /// Addresses announced to peers (empty: decided at bind time).
    pub announce: Vec<SocketAddr>,
    /// The nodes to join through.
    pub seeds: Vec<Contact>,
    /// The realm.
    pub realm: Realm,
    /// The identity file, if any.
    pub identity: Option<PathBuf>,
    /// How peers are verified.
    pub verification: PeerVerification,
    /// The certificate chain file this node presents (`--tls ca`).
    pub cert_file: Option<PathBuf>,
    /// How long joining and calls wait.
    pub timeout: Duration,
}

/// The first of `flag` (flag or environment variable) and `file` given.
fn layer<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

/// A list from the flags if they gave one, else from the file.
fn layer_list<T>(flag: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

/// Applies the layers: `flags` (with their environment variables) over
/// `file` over the defaults. `file_name` names the file in errors.
pub fn resolve(flags: MeshArgs, file: FileSettings, file_name: &str) -> Result<Settings, Failure> {
    let in_file = |problem: String| Failure::settings(format!("{file_name}: {problem}"));
    let file_seeds = file
        .seeds
        .unwrap_or_default()
        .iter()
        .map(|text| text.parse::<Seed>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| in_file(format!("seeds: {e}")))?;
    let file_realm = file
        .realm
        .map(|name| Realm::new(&name))
        .transpose()
        .map_err(|e| in_file(format!("realm: {e}")))?;
    let realm = match layer(flags.realm, file_realm) {
        Some(realm) => realm,
        None => Realm::new(DEFAULT_REALM).expect("the default realm is valid"),
    };
    let pins = layer_list(flags.pins, file.pins);
    let mode = layer(flags.tls, file.tls).unwrap_or_default();
    let ca_file = layer(flags.ca_file, file.ca_file);
    let cert_file = layer(flags.cert_file, file.cert_file);
    let verification = match mode {
        TlsMode::Identity => PeerVerification::Identity,
        TlsMode::Pinned => PeerVerification::Pinned(
            PinSet::from_hex(pins.iter().map(String::as_str))
                .map_err(|e| Failure::settings(format!("--tls pinned: {e}")))?,
        ),
        TlsMode::Ca => {
            let (Some(ca_file), Some(_)) = (&ca_file, &cert_file) else {
                return Err(Failure::settings(
                    "--tls ca needs --ca-file (the trusted CAs) and --cert-file (this node's \
                     certificate, for the key in --identity)",
                ));
            };
            PeerVerification::CertificateAuthority(
                CaRoots::from_pem_file(ca_file)
                    .map_err(|e| Failure::settings(format!("--ca-file: {e}")))?,
            )
        }
    };
    let timeout = match layer(flags.timeout, file.timeout) {
        None => DEFAULT_TIMEOUT,
        Some(secs) => Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                Failure::settings(format!(
                    "timeout {secs} is not a positive number of seconds"
                ))
            })?,
    };
    Ok(Settings {
        listen: layer(flags.listen, file.listen),
        announce: layer_list(flags.announce, file.announce),
        seeds: layer_list(flags.seeds, Some(file_seeds))
            .into_iter()
            .map(|seed| seed.0)
            .collect(),
        realm,
        identity: layer(flags.identity, file.identity),
        verification,
        cert_file: cert_file.filter(|_| mode == TlsMode::Ca),
        timeout,
    })
}

/// An access list from `PATTERN=NODEID,...` rules: the flag's if it gave
/// any, else the file's. `flag` names the rules in errors.
pub fn access_list(
    flag_rules: Vec<String>,
    file_rules: Option<Vec<String>>,
    flag: &str,
) -> Result<AccessList, Failure> {
    layer_list(flag_rules, file_rules)
        .iter()
        .try_fold(AccessList::open(), |list, rule| list.allow_text(rule))
        .map_err(|e| Failure::settings(format!("{flag}: {e}")))
}

/// The mesh settings of a command: its config file (if one is given) read,
/// then every layer applied.
pub fn from_args(mut flags: MeshArgs) -> Result<(Settings, FileSettings), Failure> {
    let (file, name) = match flags.config.take() {
        Some(path) => {
            let file = FileSettings::load(&path)?;
            (file, format!("config file {}", path.display()))
        }
        None => (FileSettings::default(), "config".to_owned()),
    };
    // The node-only keys go back to the caller; the rest is resolved here.
    let node_only = FileSettings {
        peers_file: file.peers_file.clone(),
        echo: file.echo.clone(),
        metrics_addr: file.metrics_addr,
        allow_caller: file.allow_caller.clone(),
        allow_publisher: file.allow_publisher.clone(),
        relay: file.relay,
        gateway: file.gateway,
        ..FileSettings::default()
    };
    let settings = resolve(flags, file, &name)?;
    Ok((settings, node_only))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::args::{Cli, Command};

    const ID_A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const ID_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

    /// The mesh flags of `macula call x` followed by `flags`.
    fn flags(flags: &[&str]) -> MeshArgs {
        let line = ["macula", "call", "x"].iter().chain(flags);
        match Cli::try_parse_from(line).unwrap().command {
            Command::Call(call) => call.mesh,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn file(text: &str) -> FileSettings {
        FileSettings::parse(text).unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let settings = resolve(MeshArgs::default(), FileSettings::default(), "f").unwrap();
        assert_eq!(settings.realm.as_str(), DEFAULT_REALM);
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.listen, None);
        assert!(settings.seeds.is_empty() && settings.announce.is_empty());
        assert!(matches!(settings.verification, PeerVerification::Identity));
    }

    #[test]
    fn the_file_fills_what_the_flags_leave_out() {
        let text = format!(
            "listen = \"127.0.0.1:7000\"\nrealm = \"org.example.lab\"\nseeds = [\"{ID_A}@127.0.0.1:7001\"]\ntimeout = 2.5\n"
        );
        let settings = resolve(flags(&[]), file(&text), "f").unwrap();
        assert_eq!(settings.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(settings.realm.as_str(), "org.example.lab");
        assert_eq!(settings.seeds[0].id.to_string(), ID_A);
        assert_eq!(settings.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn flags_win_over_the_file() {
        let text = format!(
            "listen = \"127.0.0.1:7000\"\nrealm = \"org.example.lab\"\nseeds = [\"{ID_A}@127.0.0.1:7001\"]\n"
        );
        let seed = format!("{ID_B}@127.0.0.1:7002");
        let given = flags(&[
            "--listen",
            "127.0.0.1:8000",
            "--realm",
            "org.example.prod",
            "--seed",
            &seed,
        ]);
        let settings = resolve(given, file(&text), "f").unwrap();
        assert_eq!(settings.listen, Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(settings.realm.as_str(), "org.example.prod");
        assert_eq!(
            settings.seeds.len(),
            1,
            "a list from the flags replaces the file's"
        );
        assert_eq!(settings.seeds[0].id.to_string(), ID_B);
    }

    #[test]
    fn pinned_mode_takes_pins_from_either_layer_and_needs_one() {
        let pinned = resolve(
            flags(&["--tls", "pinned", "--pin", ID_A]),
            FileSettings::default(),
            "f",
        );
        assert!(matches!(
            pinned.unwrap().verification,
            PeerVerification::Pinned(_)
        ));
        let from_file = resolve(
            flags(&[]),
            file(&format!("tls = \"pinned\"\npins = [\"{ID_B}\"]")),
            "f",
        );
        assert!(matches!(
            from_file.unwrap().verification,
            PeerVerification::Pinned(_)
        ));
        let none = resolve(flags(&["--tls", "pinned"]), FileSettings::default(), "f").unwrap_err();
        assert!(
            none.message.contains("at least one pin"),
            "{}",
            none.message
        );
    }

    #[test]
    fn bad_file_values_name_the_file_and_the_key() {
        let bad_realm =
            resolve(flags(&[]), file("realm = \"NoDots\""), "config file m.toml").unwrap_err();
        assert!(
            bad_realm.message.starts_with("config file m.toml: realm:"),
            "{}",
            bad_realm.message
        );
        let bad_seed =
            resolve(flags(&[]), file("seeds = [\"nope\"]"), "config file m.toml").unwrap_err();
        assert!(bad_seed.message.contains("seeds:"), "{}", bad_seed.message);
        let bad_timeout =
            resolve(flags(&["--timeout=-1"]), FileSettings::default(), "f").unwrap_err();
        assert!(
            bad_timeout.message.contains("timeout"),
            "{}",
            bad_timeout.message
        );
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused_with_their_line() {
        let unknown =
            FileSettings::parse("realm = \"a.b\"\nlisten_addr = \"1.2.3.4:5\"").unwrap_err();
        assert!(
            unknown.contains("listen_addr") && unknown.contains("line 2"),
            "{unknown}"
        );
        let mistyped = FileSettings::parse("listen = 4433").unwrap_err();
        assert!(mistyped.contains("listen"), "{mistyped}");
    }

    #[test]
    fn access_rules_come_from_the_flags_or_else_the_file() {
        let line = [
            "macula",
            "node",
            "--allow-caller",
            &format!("admin.#={ID_A}"),
            "--allow-caller",
            &format!("jobs.*={ID_A},{ID_B}"),
        ];
        let Command::Node(node) = Cli::try_parse_from(line).unwrap().command else {
            panic!("not node");
        };
        let file = file(&format!(
            "allow_caller = [\"admin.#={ID_B}\"]\nallow_publisher = [\"alerts.#={ID_B}\"]"
        ));
        let callers = access_list(node.allow_callers, file.allow_caller, "--allow-caller");
        let callers = callers.unwrap();
        let (a, b) = (ID_A.parse().unwrap(), ID_B.parse().unwrap());
        assert!(callers.allows(&a, "admin.reboot"), "the flags win");
        assert!(!callers.allows(&b, "admin.reboot"));
        assert!(callers.allows(&b, "jobs.run") && callers.allows(&b, "open.proc"));
        let publishers = access_list(
            node.allow_publishers,
            file.allow_publisher,
            "--allow-publisher",
        );
        let publishers = publishers.unwrap();
        assert!(publishers.allows(&b, "alerts.fire") && !publishers.allows(&a, "alerts.fire"));
        let bad = access_list(vec!["admin.#".into()], None, "--allow-caller").unwrap_err();
        assert!(
            bad.message.starts_with("--allow-caller:"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn the_node_only_keys_of_a_file_reach_the_node() {
        let dir = std::env::temp_dir().join(format!("macula-node-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        let text = "relay = \"never\"\ngateway = \"192.168.1.1\"\necho = [\"demo.echo\"]\nmetrics_addr = \"127.0.0.1:9464\"\nallow_caller = [\"a.#=x\"]\nallow_publisher = [\"b.#=y\"]\npeers_file = \"p\"";
        std::fs::write(&path, text).unwrap();
        let flags = MeshArgs {
            config: Some(path),
            ..MeshArgs::default()
        };
        let (_, node_only) = from_args(flags).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(node_only.relay, Some(RelayArg::Never));
        assert_eq!(
            node_only.gateway,
            Some(GatewayArg::At("192.168.1.1".parse().unwrap()))
        );
        assert_eq!(node_only.echo, Some(vec!["demo.echo".to_owned()]));
        assert!(node_only.metrics_addr.is_some() && node_only.peers_file.is_some());
        assert!(node_only.allow_caller.is_some() && node_only.allow_publisher.is_some());
        let bad = FileSettings::parse("gateway = \"router\"").unwrap_err();
        assert!(bad.contains("router"), "{bad}");
    }

    #[test]
    fn paths_in_a_file_are_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("macula-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            "identity = \"node.pem\"\npeers_file = \"/abs/peers\"",
        )
        .unwrap();
        let loaded = FileSettings::load(&path).unwrap();
        assert_eq!(loaded.identity, Some(dir.join("node.pem")));
        assert_eq!(loaded.peers_file, Some(PathBuf::from("/abs/peers")));
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = FileSettings::load(&path).unwrap_err();
        assert!(missing.message.contains("m.toml"), "{}", missing.message);
    }
}
