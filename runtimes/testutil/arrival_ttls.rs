//! Reads the IP TTL (IPv6 hop limit) each datagram arrived with, through
//! `IP_RECVTTL` / `IPV6_RECVHOPLIMIT` and `recvmsg` (Linux, `nix`). Shared by
//! the TTL tests of the drivers and of their UDP base.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};

/// The payload and TTL (hop limit) of each of the next `count` datagrams at
/// `observer`, in order. Panics when one does not arrive within 5 s.
pub fn arrival_ttls(observer: &std::net::UdpSocket, count: usize) -> Vec<(Vec<u8>, i32)> {
    if observer.local_addr().unwrap().is_ipv4() {
        setsockopt(observer, sockopt::Ipv4RecvTtl, &true).unwrap();
    } else {
        setsockopt(observer, sockopt::Ipv6RecvHopLimit, &true).unwrap();
    }
    observer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (0..count)
        .map(|_| {
            let mut payload = [0u8; 2048];
            let mut cmsgs = nix::cmsg_space!(i32);
            let mut iov = [IoSliceMut::new(&mut payload)];
            let msg = recvmsg::<SockaddrStorage>(
                observer.as_raw_fd(),
                &mut iov,
                Some(&mut cmsgs),
                MsgFlags::empty(),
            )
            .expect("each datagram arrives within 5 s");
            let ttl =
                msg.cmsgs()
                    .unwrap()
                    .find_map(|c| match c {
                        ControlMessageOwned::Ipv4Ttl(ttl)
                        | ControlMessageOwned::Ipv6HopLimit(ttl) => Some(ttl),
                        _ => None,
                    })
                    .expect("the TTL came with the datagram");
            let len = msg.bytes;
            (payload[..len].to_vec(), ttl)
        })
        .collect()
}
