//! The port mapper (PCP and NAT-PMP decoders and the machine around them) on arbitrary
//! answers from the gateway, interleaved with time passing: it must never panic, only
//! ever send to the gateway's server port, send nothing larger than a PCP MAP request,
//! and never report a mapping that no answer granted.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use macula::nat::portmap::{MapEvent, PortMapConfig, PortMapper, SERVER_PORT};
use macula::{Datagram, Input, Machine, Output};

fuzz_target!(|data: &[u8]| {
    let gateway: SocketAddr = SocketAddr::new("10.5.0.1".parse().unwrap(), SERVER_PORT);
    let local: SocketAddr = "10.5.0.11:46100".parse().unwrap();
    // The fuzz target is a test harness, not the core: one base instant is fine.
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let config = PortMapConfig::new(gateway.ip());
    let mut mapper = PortMapper::new(config, local, [3; 32], now);
    let mut answered = false;
    // Each chunk: a control byte (bit 0: from the gateway or elsewhere; the rest: seconds
    // to wait first), a length byte, then that many bytes of answer.
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(control >> 1) * 97);
        mapper.handle_input(now, Input::Timeout);
        let remote = if control & 1 == 0 { gateway } else { "10.5.0.2:5351".parse().unwrap() };
        answered |= remote == gateway && !payload.is_empty();
        let datagram = Datagram {
            local,
            remote,
            payload: Bytes::copy_from_slice(payload),
        };
        mapper.handle_input(now, Input::Datagram(datagram));
        while let Some(output) = mapper.poll_output() {
            match output {
                Output::Transmit(t) => {
                    assert_eq!(t.destination, gateway);
                    assert!(t.payload.len() <= 60);
                }
                Output::Event(MapEvent::Mapped { .. }) => assert!(answered),
                Output::Event(_) => {}
                Output::Sockets(_) => panic!("the port mapper asked for sockets"),
            }
        }
    }
    mapper.shutdown(now);
    while let Some(output) = mapper.poll_output() {
        if let Output::Transmit(t) = output {
            assert_eq!(t.destination, gateway);
        }
    }
    assert_eq!(mapper.poll_timeout(), None);
});
