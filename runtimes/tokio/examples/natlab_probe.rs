//! The NAT lab's probe: `macula::sim::Probe` on a real UDP socket.
//!
//! `tests/natlab/run` starts this inside network namespaces, one process per
//! host and step, and reads what it prints. The same machine the simulator
//! drives runs here unchanged on [`macula_tokio::Driver`], so a check in the
//! lab and a scenario in the simulator test one model against two networks.
//!
//! ```text
//! natlab_probe reflect ADDR...
//!     answer every datagram on each ADDR with the source address seen;
//!     prints `ready` once every socket is bound, then one line per answer
//! natlab_probe probe --bind ADDR [--start UNIX_MS] [--reflect] [--listen MS]
//!                    [--until N] [--send OFFSET_MS,DEST[,TTL]]...
//!     send each datagram OFFSET_MS after the start (the wall-clock instant
//!     UNIX_MS, so processes in different namespaces agree; default: now),
//!     then keep listening MS after the last send, or stop at the N-th
//!     datagram received; prints `recv +MS REMOTE PAYLOAD` for each
//! natlab_probe stun --bind ADDR --server ADDR [--change ip|port|both] [--timeout MS]
//!     one STUN binding request (RFC 8489), with an RFC 5780 CHANGE-REQUEST
//!     when asked; prints `mapped ADDR from REMOTE other=ADDR rtt_ms=N
//!     software=...` from the XOR-MAPPED-ADDRESS and OTHER-ADDRESS, or
//!     `no-answer` when none came in time (exit 0: with a CHANGE-REQUEST,
//!     silence is the NAT's filtering answering)
//! ```
//!
//! The STUN client is deliberately tiny and local to the lab: a 20-byte
//! request (plus CHANGE-REQUEST), and the response's addresses read back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use macula::sim::{Probe, ProbeEvent};
use macula_tokio::Driver;

/// The STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Binding request and success response message types.
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
/// Attribute types read from a binding response.
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const SOFTWARE: u16 = 0x8022;
/// RFC 5780 attributes: the request's CHANGE-REQUEST and the server's
/// alternate address.
const CHANGE_REQUEST: u16 = 0x0003;
const OTHER_ADDRESS: u16 = 0x802C;
/// CHANGE-REQUEST flags (RFC 5780 §7.2).
const CHANGE_IP: u32 = 0x4;
const CHANGE_PORT: u32 = 0x2;

/// The driver's clock, read only here.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// The instant `unix_ms` on the wall clock, which every namespace shares.
#[allow(clippy::disallowed_methods)]
fn instant_at_unix_ms(unix_ms: u64) -> Instant {
    let (wall, mono) = (SystemTime::now(), now());
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    match at.duration_since(wall) {
        Ok(ahead) => mono + ahead,
        Err(behind) => mono.checked_sub(behind.duration()).unwrap_or(mono),
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// A payload as one printable word: text when it is printable ASCII without
/// spaces, else hex.
fn printable(payload: &[u8]) -> String {
    if !payload.is_empty() && payload.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(payload).into_owned()
    } else {
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        format!("hex:{hex}")
    }
}

/// One scheduled datagram of the `probe` command.
struct Send {
    offset: Duration,
    destination: SocketAddr,
    ttl: Option<u8>,
}

fn parse_send(spec: &str) -> Result<Send, String> {
    let mut parts = spec.split(',');
    let bad = || format!("--send {spec}: expected OFFSET_MS,DEST[,TTL]");
    let offset = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let destination = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let ttl = match parts.next() {
        Some(t) => Some(t.parse().map_err(|_| bad())?),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Send {
        offset: Duration::from_millis(offset),
        destination,
        ttl,
    })
}

/// Options shared by the commands.
#[derive(Default)]
struct Options {
    bind: Option<SocketAddr>,
    start: Option<u64>,
    reflect: bool,
    listen: u64,
    until: Option<usize>,
    sends: Vec<Send>,
    server: Option<SocketAddr>,
    change: u32,
    timeout: Option<u64>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        listen: 500,
        ..Options::default()
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--reflect" {
            options.reflect = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value}: not {what}");
        match flag.as_str() {
            "--bind" => options.bind = Some(value.parse().map_err(|_| bad("an address"))?),
            "--server" => options.server = Some(value.parse().map_err(|_| bad("an address"))?),
            "--start" => options.start = Some(value.parse().map_err(|_| bad("a number"))?),
            "--listen" => options.listen = value.parse().map_err(|_| bad("a number"))?,
            "--until" => options.until = Some(value.parse().map_err(|_| bad("a number"))?),
            "--change" => {
                options.change = match value.as_str() {
                    "ip" => CHANGE_IP,
                    "port" => CHANGE_PORT,
                    "both" => CHANGE_IP | CHANGE_PORT,
                    _ => return Err(bad("ip, port or both")),
                }
            }
            "--timeout" => options.timeout = Some(value.parse().map_err(|_| bad("a number"))?),
            "--send" => options.sends.push(parse_send(value)?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// `reflect`: a reflector probe on each address, until killed.
async fn reflect(addrs: &[String]) -> Result<(), String> {
    let mut drivers = Vec::new();
    for addr in addrs {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{addr}: not an address"))?;
        let driver = Driver::bind(addr, Probe::reflector())
            .await
            .map_err(|e| format!("bind {addr}: {e}"))?;
        drivers.push(driver);
    }
    if drivers.is_empty() {
        return Err("reflect needs at least one address".into());
    }
    println!("ready");
    let mut tasks = tokio::task::JoinSet::new();
    for mut driver in drivers {
        tasks.spawn(async move {
            let local = driver.local_addr();
            loop {
                // Socket errors are logged and counted by the driver, which
                // carries on: a reflector runs until the lab stops it.
                if let Some(remote) = driver.next_event().await.remote() {
                    println!("reflect {local} <- {remote}");
                }
            }
        });
    }
    match tasks.join_next().await {
        Some(Ok(error)) => Err(error),
        Some(Err(e)) => Err(format!("reflector task: {e}")),
        None => Ok(()),
    }
}

/// `probe`: scheduled sends, then every datagram received until the end.
async fn probe(options: Options) -> Result<(), String> {
    let bind = options.bind.ok_or("probe needs --bind")?;
    let start = options.start.map_or_else(now, instant_at_unix_ms);
    let mut machine = if options.reflect {
        Probe::reflector()
    } else {
        Probe::new()
    };
    let mut last = Duration::ZERO;
    for (i, send) in options.sends.iter().enumerate() {
        let payload = format!("probe:{}:{i}", bind.port());
        machine.send_with_ttl(start + send.offset, send.destination, payload, send.ttl);
        last = last.max(send.offset);
    }
    let mut driver = Driver::bind(bind, machine)
        .await
        .map_err(|e| format!("bind {bind}: {e}"))?;
    let end = start + last + Duration::from_millis(options.listen);
    let mut received = 0;
    while options.until.is_none_or(|n| received < n) {
        let event = match tokio::time::timeout_at(end.into(), driver.next_event()).await {
            Err(_elapsed) => return Ok(()),
            Ok(event) => event,
        };
        if let ProbeEvent::Received {
            remote, payload, ..
        } = &event
        {
            let at = millis(now().saturating_duration_since(start));
            println!("recv +{at} {remote} {}", printable(&payload[..]));
            received += 1;
        }
    }
    Ok(())
}

/// A binding request with `transaction`, and a CHANGE-REQUEST when
/// `change` has flags.
fn binding_request(transaction: [u8; 12], change: u32) -> Vec<u8> {
    let attributes: u16 = if change == 0 { 0 } else { 8 };
    let mut request = Vec::with_capacity(28);
    request.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    request.extend_from_slice(&attributes.to_be_bytes());
    request.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    request.extend_from_slice(&transaction);
    if change != 0 {
        request.extend_from_slice(&CHANGE_REQUEST.to_be_bytes());
        request.extend_from_slice(&4u16.to_be_bytes());
        request.extend_from_slice(&change.to_be_bytes());
    }
    request
}

/// What a binding response said.
struct Mapped {
    address: SocketAddr,
    other: Option<SocketAddr>,
    software: Option<String>,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Reads a (XOR-)MAPPED-ADDRESS value; `xor` holds the cookie and
/// transaction id to undo the XOR with, `None` for plain MAPPED-ADDRESS.
fn read_address(value: &[u8], xor: Option<&[u8; 16]>) -> Option<SocketAddr> {
    let mask = |bytes: &[u8]| -> Vec<u8> {
        match xor {
            Some(key) => bytes.iter().zip(key.iter()).map(|(b, k)| b ^ k).collect(),
            None => bytes.to_vec(),
        }
    };
    let port = mask(value.get(2..4)?);
    let port = u16::from_be_bytes([port[0], port[1]]);
    let ip = match value.get(1)? {
        0x01 => {
            let raw = mask(value.get(4..8)?);
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        }
        0x02 => {
            let raw: [u8; 16] = mask(value.get(4..20)?).try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(raw))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses a binding success response to `transaction`.
fn parse_response(message: &[u8], transaction: [u8; 12]) -> Result<Mapped, String> {
    let kind = be16(message, 0).ok_or("response shorter than a STUN header")?;
    if kind != BINDING_SUCCESS {
        return Err(format!("message type {kind:#06x}, not a binding success"));
    }
    if message.get(4..8) != Some(&MAGIC_COOKIE.to_be_bytes()[..]) {
        return Err("no magic cookie".into());
    }
    if message.get(8..20) != Some(&transaction[..]) {
        return Err("transaction id does not match".into());
    }
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&transaction);
    let (mut xor_mapped, mut mapped, mut other, mut software) = (None, None, None, None);
    let mut at = 20;
    while let (Some(kind), Some(len)) = (be16(message, at), be16(message, at + 2)) {
        let len = usize::from(len);
        let value = message
            .get(at + 4..at + 4 + len)
            .ok_or("attribute runs past the message")?;
        match kind {
            XOR_MAPPED_ADDRESS => xor_mapped = read_address(value, Some(&key)),
            MAPPED_ADDRESS => mapped = read_address(value, None),
            OTHER_ADDRESS => other = read_address(value, None),
            SOFTWARE => software = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        at += 4 + len.next_multiple_of(4);
    }
    let address = xor_mapped
        .or(mapped)
        .ok_or("no (XOR-)MAPPED-ADDRESS in the response")?;
    Ok(Mapped {
        address,
        other,
        software,
    })
}

/// `stun`: one binding request to `--server`, its answer printed.
async fn stun(options: Options) -> Result<(), String> {
    let bind = options.bind.ok_or("stun needs --bind")?;
    let server = options.server.ok_or("stun needs --server")?;
    let timeout = Duration::from_millis(options.timeout.unwrap_or(2000));
    // A transaction id unique enough for one lab run: process id and port.
    let mut transaction = [0u8; 12];
    transaction[..4].copy_from_slice(&std::process::id().to_be_bytes());
    transaction[4..6].copy_from_slice(&bind.port().to_be_bytes());
    transaction[6..].copy_from_slice(b"natlab");
    let start = now();
    let mut machine = Probe::new();
    machine.send(start, server, binding_request(transaction, options.change));
    let mut driver = Driver::bind(bind, machine)
        .await
        .map_err(|e| format!("bind {bind}: {e}"))?;
    loop {
        let Ok(event) =
            tokio::time::timeout_at((start + timeout).into(), driver.next_event()).await
        else {
            println!("no-answer");
            return Ok(());
        };
        let ProbeEvent::Received {
            remote, payload, ..
        } = event
        else {
            continue;
        };
        // A CHANGE-REQUEST is answered from the server's other address.
        if remote != server && options.change == 0 {
            continue;
        }
        let rtt = millis(now().saturating_duration_since(start));
        let mapped = parse_response(&payload, transaction)?;
        let software = mapped.software.unwrap_or_default().replace(' ', "_");
        let other = mapped
            .other
            .map_or_else(|| "none".into(), |a| a.to_string());
        let address = mapped.address;
        println!("mapped {address} from {remote} other={other} rtt_ms={rtt} software={software}");
        return Ok(());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "reflect" => reflect(rest).await,
        Some((command, rest)) if command == "probe" => match parse_options(rest) {
            Ok(options) => probe(options).await,
            Err(e) => Err(e),
        },
        Some((command, rest)) if command == "stun" => match parse_options(rest) {
            Ok(options) => stun(options).await,
            Err(e) => Err(e),
        },
        _ => Err("usage: natlab_probe reflect|probe|stun ... (see the source's docs)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natlab_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_response_reads_back_its_xor_mapped_address() {
        let transaction = *b"0123456789ab";
        let mapped: SocketAddr = "198.51.100.2:40000".parse().unwrap();
        let mut response = binding_request(transaction, 0);
        response[..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        let port = mapped.port() ^ 0x2112;
        let IpAddr::V4(ip) = mapped.ip() else {
            unreachable!()
        };
        let ip = u32::from(ip) ^ MAGIC_COOKIE;
        let mut attribute = XOR_MAPPED_ADDRESS.to_be_bytes().to_vec();
        attribute.extend_from_slice(&8u16.to_be_bytes());
        attribute.extend_from_slice(&[0, 1]);
        attribute.extend_from_slice(&port.to_be_bytes());
        attribute.extend_from_slice(&ip.to_be_bytes());
        response.extend_from_slice(&attribute);
        let len = u16::try_from(attribute.len()).unwrap();
        response[2..4].copy_from_slice(&len.to_be_bytes());
        let parsed = parse_response(&response, transaction).unwrap();
        assert_eq!(parsed.address, mapped);
        assert!(parse_response(&response, *b"another-txid").is_err());
    }

    #[test]
    fn a_change_request_is_one_attribute_after_the_header() {
        let request = binding_request(*b"0123456789ab", CHANGE_IP | CHANGE_PORT);
        assert_eq!(request.len(), 28);
        assert_eq!(request[2..4], [0, 8]);
        assert_eq!(request[20..], [0, 3, 0, 4, 0, 0, 0, 6]);
        assert_eq!(binding_request(*b"0123456789ab", 0).len(), 20);
    }
}
