//! Starting a node from [`Settings`] and joining the mesh through its
//! seeds: the part every command shares.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use macula::dht::Contact;
use macula::tls::{NodeTls, WallClock};
use macula_tokio::{BindError, MaculaConfig, MaculaNode};
use tokio::time::{Instant, sleep, timeout_at};

use crate::contact::SeedLine;
use crate::failure::Failure;
use crate::identity;
use crate::settings::Settings;

/// Pause between two tries to join while no seed answers.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// The configuration of a node with `settings`; `default_listen` is used
/// when the settings give no address (else the address routing to the
/// first seed, any port). Loads or creates the identity file.
pub fn config(
    settings: &Settings,
    default_listen: Option<SocketAddr>,
) -> Result<MaculaConfig, Failure> {
    let first_seed = settings
        .seeds
        .first()
        .and_then(|s| s.addrs.first().copied());
    let bind = settings
        .listen
        .or(default_listen)
        .unwrap_or_else(|| SocketAddr::new(route_ip(first_seed, false), 0));
    let mut config = MaculaConfig::new(settings.realm.clone(), bind);
    config.node.verification = settings.verification.clone();
    config.node.listen_addrs = settings.announce.clone();
    if config.node.listen_addrs.is_empty() && bind.ip().is_unspecified() && bind.port() != 0 {
        let ip = route_ip(first_seed, bind.is_ipv6());
        config.node.listen_addrs = vec![SocketAddr::new(ip, bind.port())];
    }
    match (&settings.cert_file, &settings.identity) {
        (Some(cert), Some(key)) => {
            // The certificate must be for the identity's key: both are read
            // and matched here, so a mismatch names the two files.
            let clock = WallClock::at(0);
            let (identity, tls) =
                NodeTls::from_pem_files(cert, key, settings.verification.clone(), clock)
                    .map_err(|e| Failure::settings(format!("--cert-file: {e}")))?;
            config.identity = Some(identity);
            config.node.certificate_chain = Some(tls.chain().to_vec());
        }
        (Some(_), None) => {
            return Err(Failure::settings(
                "--cert-file needs --identity: the file of the key the certificate was issued for",
            ));
        }
        (None, Some(path)) => config.identity = Some(identity::load_or_create(path)?),
        (None, None) => {}
    }
    Ok(config)
}

/// Starts a node with `config`; a failure says what to change.
pub async fn bind(config: MaculaConfig) -> Result<MaculaNode, Failure> {
    MaculaNode::bind(config).await.map_err(|e| match e {
        BindError::Socket { addr, source } if source.kind() == std::io::ErrorKind::AddrInUse => {
            Failure::network(format!(
                "cannot listen on {addr}: the address is in use (another node running? pick another with --listen)"
            ))
        }
        BindError::Metrics { addr, source } => Failure::network(format!(
            "cannot serve metrics on {addr}: {source} (pick another with --metrics-addr)"
        )),
        BindError::Socket { .. } => Failure::network(e.to_string()),
        other => Failure::other(format!("cannot start the node: {other}")),
    })
}

/// The local address the system would send from toward `toward` (or
/// toward the default route), falling back to loopback. Nothing is sent:
/// connecting a UDP socket only picks the route.
fn route_ip(toward: Option<SocketAddr>, v6: bool) -> IpAddr {
    let target = toward.unwrap_or(if v6 {
        // Documentation addresses (RFC 5737, RFC 3849): a route, no host.
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            9,
        )
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9)
    });
    let (any, loopback) = if target.is_ipv6() {
        (
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )
    };
    UdpSocket::bind(SocketAddr::new(any, 0))
        .and_then(|socket| socket.connect(target).and_then(|()| socket.local_addr()))
        .map(|local| local.ip())
        .unwrap_or(loopback)
}

/// Joins the mesh through `seeds`, trying again until one answers or
/// `timeout` passes. Returns the routing table's size.
pub async fn join(
    node: &MaculaNode,
    seeds: &[Contact],
    timeout: Duration,
) -> Result<usize, Failure> {
    if seeds.is_empty() {
        return Err(Failure::settings(
            "no seed to join through: give --seed NODEID@HOST:PORT (printed by `macula node`), \
             MACULA_SEEDS, or `seeds` in the config file",
        ));
    }
    let deadline = Instant::now() + timeout;
    let unreachable = || {
        let listed: Vec<String> = seeds.iter().map(|s| SeedLine(s).to_string()).collect();
        Failure::network(format!(
            "no seed answered within {:.1} s (tried {}); is a node running there, in the same realm?",
            timeout.as_secs_f64(),
            listed.join(", ")
        ))
    };
    loop {
        match timeout_at(deadline, node.bootstrap(seeds.to_vec())).await {
            Err(_) => {
                // Out of time with a lookup still running: say whether any
                // seed answered at all.
                let known = node.stats().await?.routing_table;
                if known == 0 {
                    return Err(unreachable());
                }
                return Err(Failure::network(format!(
                    "joining the mesh did not finish within {:.1} s ({known} peers answered so far)",
                    timeout.as_secs_f64()
                )));
            }
            Ok(Ok(table_size)) if table_size > 0 => return Ok(table_size),
            Ok(Ok(_)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left <= JOIN_RETRY {
                    return Err(unreachable());
                }
                eprintln!(
                    "no seed has answered yet; trying again ({:.1} s left)",
                    left.as_secs_f64()
                );
                sleep(JOIN_RETRY).await;
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}
