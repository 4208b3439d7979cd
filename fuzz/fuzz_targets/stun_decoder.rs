//! The STUN decoder on arbitrary bytes: it must never panic; whatever it decodes without
//! unknown attributes must encode to a message that decodes to the same thing (padding and
//! attribute bytes may differ, the meaning may not); and the responder fed the same bytes
//! never answers with more than the request plus its allowance.

#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use macula::nat::stun::{AMPLIFICATION_ALLOWANCE, Responder, ResponderConfig, decode};
use macula::{Datagram, Input, Machine, Output};

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode(data) {
        if decoded.unknown_required.is_empty() {
            let bytes = decoded.message.encode().expect("a decoded message re-encodes");
            assert_eq!(bytes.len(), decoded.message.encoded_len());
            let again = decode(&bytes).expect("an encoded message decodes");
            assert_eq!(again.message, decoded.message);
        }
    }

    let mut responder = Responder::new(ResponderConfig::default());
    let local: SocketAddr = "203.0.113.1:4433".parse().unwrap();
    let remote: SocketAddr = "[2001:db8::7]:50000".parse().unwrap();
    // The fuzz target is a test harness, not the core: one base instant is fine.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    responder.handle_input(
        now,
        Input::Datagram(Datagram {
            local,
            remote,
            payload: Bytes::copy_from_slice(data),
        }),
    );
    while let Some(output) = responder.poll_output() {
        // The responder's events are uninhabited and it asks for no sockets: every output
        // is a transmit.
        let Output::Transmit(t) = output else {
            panic!("the STUN responder asked for something other than a transmit");
        };
        assert!(t.payload.len() <= data.len() + AMPLIFICATION_ALLOWANCE);
        assert!(decode(&t.payload).is_ok(), "the responder sends valid STUN");
    }
});
