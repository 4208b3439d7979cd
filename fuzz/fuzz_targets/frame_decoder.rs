//! The frame decoder on arbitrary bytes: it must never panic, never claim
//! more bytes than it was given, and whatever it decodes must encode back to
//! the same bytes and decode again to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::wire::{Decoded, Limits, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(Decoded::Complete(message, used)) = decode(data, &limits) {
        assert!(used <= data.len());
        let bytes = message.to_vec(&limits).expect("a decoded message re-encodes");
        assert_eq!(bytes, &data[..used]);
        assert_eq!(
            decode(&bytes, &limits),
            Ok(Decoded::Complete(message, used))
        );
    }
});
