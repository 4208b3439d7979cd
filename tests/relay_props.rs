//! Property tests of the relay's pieces: circuit frames split back into
//! the packets that went in however the stream is cut, and the token bucket
//! never lets more through than its rate plus one burst.

use std::time::{Duration, Instant};

use macula::relay::{FrameError, FrameSplitter, MAX_CIRCUIT_PACKET, TokenBucket, encode_frame};
use proptest::collection::vec;
use proptest::prelude::*;

fn packet() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 1..=MAX_CIRCUIT_PACKET)
}

proptest! {
    #[test]
    fn frames_split_back_into_their_packets(
        packets in vec(packet(), 0..12),
        cuts in vec(1usize..3000, 1..40),
    ) {
        let stream: Vec<u8> = packets
            .iter()
            .flat_map(|p| encode_frame(p).unwrap().to_vec())
            .collect();
        let mut splitter = FrameSplitter::new();
        let mut out = Vec::new();
        let mut rest = stream.as_slice();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
            rest = tail;
            splitter.push(chunk);
            while let Some(packet) = splitter.next_packet().unwrap() {
                out.push(packet.to_vec());
            }
            prop_assert!(splitter.buffered_len() < 2 + MAX_CIRCUIT_PACKET);
        }
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn a_bad_length_ends_the_stream_for_good(
        len in prop_oneof![Just(0u16), (MAX_CIRCUIT_PACKET as u16 + 1)..=u16::MAX],
        tail in vec(any::<u8>(), 0..100),
    ) {
        let mut splitter = FrameSplitter::new();
        splitter.push(&len.to_be_bytes());
        splitter.push(&tail);
        let error = splitter.next_packet().unwrap_err();
        let expected = if len == 0 {
            FrameError::Empty
        } else {
            FrameError::TooLarge(usize::from(len))
        };
        prop_assert_eq!(error, expected);
        splitter.push(&encode_frame(&[1, 2, 3]).unwrap());
        prop_assert_eq!(splitter.next_packet().unwrap_err(), expected);
    }

    #[test]
    fn a_bucket_passes_at_most_its_rate_plus_one_burst(
        rate in 1u64..100_000,
        takes in vec((0u64..2_000, 1u64..20_000), 1..200),
    ) {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate, start);
        let mut at = start;
        let mut passed = 0u64;
        for (gap_ms, bytes) in takes {
            at += Duration::from_millis(gap_ms);
            if bucket.take(at, bytes) {
                passed += bytes;
            }
            let elapsed = at.duration_since(start).as_secs_f64();
            let allowed = rate as f64 * elapsed + rate as f64;
            prop_assert!(passed as f64 <= allowed + 1.0, "{passed} > {allowed}");
        }
    }
}
