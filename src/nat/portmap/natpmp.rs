//! The NAT-PMP codec (RFC 6886): the external-address and UDP-mapping
//! requests, and their responses.
//!
//! Requests: `0, 0` (external address, 2 bytes); `0, 1, reserved(2),
//! internal port, suggested external port, lifetime` (map UDP, 12 bytes).
//! Responses carry version 0, the opcode + 128, a 16-bit result code and the
//! seconds since the server's epoch; then the external IPv4 address (12
//! bytes in all), or the internal port, the mapped external port and the
//! granted lifetime (16 bytes in all).

use std::net::{IpAddr, Ipv4Addr};

use super::{RESPONSE_BIT, Reply, ReplyKind, WireError, be16, be32, envelope};

/// The protocol version.
pub const VERSION: u8 = 0;
const OP_EXTERNAL: u8 = 0;
const OP_MAP_UDP: u8 = 1;
/// The longest NAT-PMP response.
const MAX_LEN: usize = 16;

/// The external-address request.
pub fn external_request() -> Vec<u8> {
    vec![VERSION, OP_EXTERNAL]
}

/// A UDP mapping request for `internal_port`, suggesting `suggested_port`,
/// for `lifetime` seconds (0 with a suggested port of 0 deletes).
pub fn map_request(internal_port: u16, suggested_port: u16, lifetime: u32) -> Vec<u8> {
    let mut out = vec![VERSION, OP_MAP_UDP, 0, 0];
    out.extend_from_slice(&internal_port.to_be_bytes());
    out.extend_from_slice(&suggested_port.to_be_bytes());
    out.extend_from_slice(&lifetime.to_be_bytes());
    out
}

/// Reads a response.
pub fn decode(payload: &[u8]) -> Result<Reply, WireError> {
    envelope(payload, MAX_LEN, VERSION)?;
    let header = payload.get(..8).ok_or(WireError::Truncated)?;
    let op = header[1];
    if op & RESPONSE_BIT == 0 {
        return Err(WireError::NotAResponse);
    }
    let result = be16(&header[2..4]);
    if result != 0 {
        return Err(WireError::Refused(result));
    }
    let epoch = be32(&header[4..8]);
    let kind = match op & !RESPONSE_BIT {
        OP_EXTERNAL => {
            let ip = payload.get(8..12).ok_or(WireError::Truncated)?;
            if payload.len() != 12 {
                return Err(WireError::Malformed);
            }
            ReplyKind::ExternalIp(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])))
        }
        OP_MAP_UDP => {
            let body = payload.get(8..16).ok_or(WireError::Truncated)?;
            ReplyKind::Map {
                nonce: None,
                internal_port: be16(&body[0..2]),
                external_ip: None,
                external_port: be16(&body[2..4]),
                lifetime: be32(&body[4..8]),
            }
        }
        other => return Err(WireError::UnexpectedOpcode(other)),
    };
    Ok(Reply { epoch, kind })
}
