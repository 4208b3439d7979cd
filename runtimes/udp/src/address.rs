//! IPv4 peers on an IPv6 socket: the OS names them IPv4-mapped
//! (`::ffff:a.b.c.d`); the machines only ever see plain IPv4.

use std::net::{IpAddr, SocketAddr};

/// An IPv4-mapped IPv6 address as plain IPv4; others unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The address to hand the OS: an IPv4 destination becomes IPv4-mapped IPv6
/// on an IPv6 socket (`v6_socket`), anything else stays as it is.
pub(crate) fn for_socket(destination: SocketAddr, v6_socket: bool) -> SocketAddr {
    match destination {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_addresses_read_as_ipv4_and_go_out_mapped() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v6), v6);
        assert_eq!(canonical(v4), v4);
        assert_eq!(for_socket(v4, true), mapped);
        assert_eq!(for_socket(v4, false), v4);
        assert_eq!(for_socket(v6, true), v6);
    }
}
