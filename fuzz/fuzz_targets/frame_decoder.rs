//! The frame decoder on arbitrary bytes: it must never panic, never claim
//! more bytes than it was given, and whatever it decodes must encode back to
//! the same bytes and decode again to the same message. The zero-copy
//! decoder must agree with the copying one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::wire::{Decoded, Limits, decode, decode_shared};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let result = decode(data, &limits);
    let shared = bytes::Bytes::copy_from_slice(data);
    assert_eq!(decode_shared(&shared, &limits), result);
    if let Ok(Decoded::Complete(message, used)) = result {
        assert!(used <= data.len());
        let bytes = message
            .to_vec(&limits)
            .expect("a decoded message re-encodes");
        assert_eq!(bytes, &data[..used]);
        assert_eq!(
            decode(&bytes, &limits),
            Ok(Decoded::Complete(message, used))
        );
    }
});
