//! The stream reassembler fed arbitrary bytes in chunks of varying size: it
//! must never panic, and what it yields (messages, skipped frames, the error
//! that ends the stream) must not depend on where the stream was cut. The
//! messages then go through a streamed-payload assembler, which must never
//! panic nor hold more than its payload limit.
//!
//! The input's last byte picks the chunk sizes and the rest is the stream, so
//! the frame_decoder corpus (valid frames) makes good seeds:
//! `cargo +nightly fuzz run stream_decoder fuzz/corpus/stream_decoder fuzz/corpus/frame_decoder`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::wire::{DecodeError, FrameReader, Limits, Message, PayloadAssembler};

/// Pops everything the reader has: the messages, and the error if one ends it.
fn drain(reader: &mut FrameReader, out: &mut Vec<Message>) -> Result<(), DecodeError> {
    while let Some(message) = reader.next_message()? {
        out.push(message);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_last() else {
        return;
    };
    let limits = Limits::default();

    let mut whole = FrameReader::new(limits);
    whole.push(stream);
    let mut expected = Vec::new();
    let whole_end = drain(&mut whole, &mut expected);

    let mut chunked = FrameReader::new(limits);
    let mut got = Vec::new();
    let mut chunked_end = Ok(());
    let mut rest = stream;
    let mut i = 0usize;
    while !rest.is_empty() && chunked_end.is_ok() {
        i += 1;
        let size = 1 + (usize::from(seed) * i * 7 + i) % 64;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        chunked.push(chunk);
        chunked_end = drain(&mut chunked, &mut got);
    }
    assert_eq!(got, expected);
    assert_eq!(chunked_end, whole_end);
    assert_eq!(chunked.skipped_frames(), whole.skipped_frames());

    const MAX_PAYLOAD: u64 = 4096;
    let room = u64::from(seed) * 32;
    let mut assembler = PayloadAssembler::default();
    for message in expected {
        if assembler.push(message, MAX_PAYLOAD, room).is_err() {
            break; // a protocol error ends the stream
        }
        assert!(assembler.buffered_len() as u64 <= MAX_PAYLOAD.min(room));
        assert!(assembler.reserved() <= MAX_PAYLOAD.min(room));
    }
});
