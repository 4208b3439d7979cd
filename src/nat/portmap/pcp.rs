//! The PCP codec (RFC 6887): MAP requests for UDP, and the MAP and ANNOUNCE
//! responses a client reads.
//!
//! Request (60 bytes): the 24-byte common header — version 2, R = 0 and the
//! opcode, 2 reserved bytes, the requested lifetime, the client's IP
//! (IPv4-mapped for IPv4) — then the MAP body: a 12-byte nonce, protocol 17,
//! 3 reserved bytes, the internal port, the suggested external port and the
//! suggested external IP (all zeros: no preference). Response: version 2,
//! R = 1 and the opcode, a reserved byte, the result code, the lifetime, the
//! server's epoch time and 12 reserved bytes, then for MAP the same body with
//! the assigned external port and IP. Options may follow; a message is at
//! most 1100 bytes and a multiple of 4.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{RESPONSE_BIT, Reply, ReplyKind, WireError, be16, be32, envelope};

/// The protocol version this client speaks.
pub const VERSION: u8 = 2;
/// The largest PCP message (RFC 6887 §7).
pub const MAX_LEN: usize = 1100;
const OP_ANNOUNCE: u8 = 0;
const OP_MAP: u8 = 1;
const HEADER_LEN: usize = 24;
const MAP_LEN: usize = 36;
const UDP: u8 = 17;

/// A MAP request for UDP from `client` (the address the server sees the
/// request come from) for `internal_port`, asking for `lifetime` seconds
/// (0 deletes), suggesting `suggested` as the external address.
pub fn map_request(
    nonce: &[u8; 12],
    client: IpAddr,
    internal_port: u16,
    suggested: Option<SocketAddr>,
    lifetime: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + MAP_LEN);
    out.extend_from_slice(&[VERSION, OP_MAP, 0, 0]);
    out.extend_from_slice(&lifetime.to_be_bytes());
    out.extend_from_slice(&mapped(client).octets());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&[UDP, 0, 0, 0]);
    out.extend_from_slice(&internal_port.to_be_bytes());
    let (port, ip) = match suggested {
        Some(addr) => (addr.port(), mapped(addr.ip())),
        None => (0, mapped(IpAddr::from([0, 0, 0, 0]))),
    };
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip.octets());
    out
}

/// Reads a response; a request (R = 0), an opcode other than MAP or
/// ANNOUNCE, or a body too short for its opcode is an error.
pub fn decode(payload: &[u8]) -> Result<Reply, WireError> {
    envelope(payload, MAX_LEN, VERSION)?;
    let header = payload.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
    if payload.len() % 4 != 0 {
        return Err(WireError::Malformed);
    }
    if header[1] & RESPONSE_BIT == 0 {
        return Err(WireError::NotAResponse);
    }
    let result = header[3];
    let lifetime = be32(&header[4..8]);
    let epoch = be32(&header[8..12]);
    if result != 0 {
        return Err(WireError::Refused(u16::from(result)));
    }
    let kind = match header[1] & !RESPONSE_BIT {
        OP_ANNOUNCE => ReplyKind::Announce,
        OP_MAP => {
            let body =
                (payload.get(HEADER_LEN..HEADER_LEN + MAP_LEN)).ok_or(WireError::Truncated)?;
            if body[12] != UDP {
                return Err(WireError::Malformed);
            }
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&body[..12]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&body[20..36]);
            let ip = Ipv6Addr::from(ip).to_canonical();
            ReplyKind::Map {
                nonce: Some(nonce),
                internal_port: be16(&body[16..18]),
                external_ip: Some(ip),
                external_port: be16(&body[18..20]),
                lifetime,
            }
        }
        other => return Err(WireError::UnexpectedOpcode(other)),
    };
    Ok(Reply { epoch, kind })
}

/// `ip` as PCP carries it: IPv6 as is, IPv4 IPv4-mapped.
fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
