//! Opening a driver's socket at an address: dual-stack where it can be, and
//! IPv4 where the host has no IPv6 at all. Every socket a driver opens (its
//! main one, and any extra one on an ephemeral port) goes through [`open`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking UDP socket bound at `addr`. An unspecified IPv6 address is
/// bound dual-stack where the OS allows it, IPv6-only where it refuses
/// dual-stack, and falls back to the unspecified IPv4 address on the same
/// port where the host has no IPv6 at all (logged). Port 0 picks a free port.
pub fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    open_with(addr, open_exactly).map(UdpSocket::from)
}

/// A non-blocking UDP socket bound at exactly `addr` (dual-stack if it is the
/// unspecified IPv6 address and the OS allows it), without [`open`]'s IPv4
/// fallback.
pub fn open_exactly(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if any_ipv6(addr)
        && let Err(error) = socket.set_only_v6(false)
    {
        tracing::debug!(%error, "dual-stack socket refused; serving IPv6 only");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// [`open`]'s fallback rule around `open_one`, which opens one address.
fn open_with(
    addr: SocketAddr,
    open_one: impl Fn(SocketAddr) -> io::Result<Socket>,
) -> io::Result<Socket> {
    match open_one(addr) {
        Err(error) if any_ipv6(addr) && no_ipv6(&error) => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(%error, %v4, "no IPv6 here; binding IPv4 only");
            open_one(v4)
        }
        opened => opened,
    }
}

/// `[::]:port`.
fn any_ipv6(addr: SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified())
}

/// The error says the host has no IPv6 (not that the port is taken or
/// forbidden, which IPv4 would not cure).
fn no_ipv6(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An opener for a host without IPv6: every IPv6 socket fails as such a
    /// kernel fails it (`EAFNOSUPPORT`).
    fn no_ipv6_host(addr: SocketAddr) -> io::Result<Socket> {
        if addr.is_ipv6() {
            return Err(io::Error::from_raw_os_error(97));
        }
        open_exactly(addr)
    }

    #[test]
    fn without_ipv6_any_ipv6_falls_back_to_any_ipv4_on_the_same_port() {
        let socket = open_with("[::]:0".parse().unwrap(), no_ipv6_host).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local.ip(), Ipv4Addr::UNSPECIFIED);
        // The same port: take a free one, release it, ask for it again.
        let port = local.port();
        drop(socket);
        let again = open_with(SocketAddr::from(([0u16; 8], port)), no_ipv6_host).unwrap();
        let again = again.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(again, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }

    #[test]
    fn a_specific_ipv6_address_or_a_taken_port_never_falls_back() {
        let specific = open_with("[::1]:0".parse().unwrap(), no_ipv6_host);
        assert!(specific.is_err(), "[::1] is not [::]: no IPv4 stand-in");
        let taken = |_: SocketAddr| Err(io::Error::from(io::ErrorKind::AddrInUse));
        let error = open_with("[::]:0".parse().unwrap(), taken).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        let forbidden = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(!no_ipv6(&forbidden));
    }

    #[test]
    fn any_ipv6_opens_dual_stack_where_the_host_has_ipv6() {
        let socket = open("[::]:0".parse().unwrap()).unwrap();
        assert!(socket.local_addr().unwrap().is_ipv6());
        assert!(!socket2::SockRef::from(&socket).only_v6().unwrap());
    }
}
