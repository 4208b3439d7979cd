//! A datagram's own IP TTL (IPv6 hop limit): set on the socket for one
//! send, then the socket's default comes back. Hole punching sends probes
//! that must expire between the two NATs; everything else keeps the default.

use std::io;

use socket2::SockRef;

/// The socket's own IPv4 TTL and IPv6 hop limit, read once at start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DefaultTtl {
    v4: Option<u32>,
    v6: Option<u32>,
}

/// Sets a TTL or hop limit on a socket.
type SetTtl = fn(&SockRef<'_>, u32) -> io::Result<()>;

impl DefaultTtl {
    /// Reads the defaults of `sock`. An IPv6-only socket has no IPv4 TTL to
    /// read, an IPv4 one (`v6` false) no hop limit.
    pub(crate) fn read(sock: &SockRef<'_>, v6: bool) -> Self {
        Self {
            v4: sock.ttl_v4().ok(),
            v6: if v6 {
                sock.unicast_hops_v6().ok()
            } else {
                None
            },
        }
    }

    /// Runs `send` with the IPv4 TTL (`to_v4`) or the IPv6 hop limit set to
    /// `ttl`, then restores the default. A failed restore is logged: the
    /// datagram went out, and the next send with a TTL sets it again.
    pub(crate) fn with_ttl<R>(
        &self,
        sock: &SockRef<'_>,
        ttl: u8,
        to_v4: bool,
        send: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let (set, default): (SetTtl, _) = if to_v4 {
            (|s, t| s.set_ttl_v4(t), self.v4)
        } else {
            (|s, t| s.set_unicast_hops_v6(t), self.v6)
        };
        set(sock, u32::from(ttl))?;
        let sent = send();
        if let Some(default) = default
            && let Err(error) = set(sock, default)
        {
            tracing::warn!(%error, default, "could not restore the socket's default TTL");
        }
        sent
    }
}
