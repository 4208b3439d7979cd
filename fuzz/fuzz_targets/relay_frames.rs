//! The circuit frame splitter (what a relay and a circuit end parse) fed
//! arbitrary bytes in chunks of varying size: it must never panic, it must
//! hold no more than one frame plus one chunk, and what it yields must not
//! depend on where the stream was cut. Every packet it yields re-encodes to
//! the bytes it came from.
//!
//! The input's last byte picks the chunk sizes and the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::relay::{FrameError, FrameSplitter, MAX_CIRCUIT_PACKET, encode_frame};

/// Pops every packet the splitter has, and the error if one ends it.
fn drain(splitter: &mut FrameSplitter, out: &mut Vec<Vec<u8>>) -> Result<(), FrameError> {
    while let Some(packet) = splitter.next_packet()? {
        out.push(packet.to_vec());
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_last() else {
        return;
    };
    let mut whole = FrameSplitter::new();
    whole.push(stream);
    let mut expected = Vec::new();
    let whole_end = drain(&mut whole, &mut expected);

    let mut chunked = FrameSplitter::new();
    let mut got = Vec::new();
    let mut chunked_end = Ok(());
    let mut rest = stream;
    let mut i = 0usize;
    while !rest.is_empty() && chunked_end.is_ok() {
        i += 1;
        let size = (1 + (usize::from(seed) * i * 7 + i) % 64).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        chunked.push(chunk);
        chunked_end = drain(&mut chunked, &mut got);
        assert!(chunked.buffered_len() <= MAX_CIRCUIT_PACKET + 2 + 64);
    }
    assert_eq!(got, expected);
    assert_eq!(chunked_end, whole_end);

    let reencoded: Vec<u8> = expected
        .iter()
        .flat_map(|p| encode_frame(p).expect("a yielded packet fits a frame").to_vec())
        .collect();
    assert_eq!(&stream[..reencoded.len()], &reencoded[..]);
});
