//! Wire codec throughput: encode and decode of a typical CALL frame (100-byte
//! payload) and a 1 KiB PUBLISH frame, beside a memcpy of the same bytes as
//! the floor, all in the same run.
//!
//! `decode` copies payloads out of a borrowed slice; `decode_shared` decodes
//! from a shared `Bytes` (as `FrameReader` does), payloads sliced, not copied.
//! Criterion reports MB/s (group `bytes`) and messages/s (group `messages`);
//! a summary at the end prints each codec path's ratio to memcpy.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use macula::wire::{Call, Limits, Message, Publish, decode, decode_shared};

/// The frames under test: name, message, encoded bytes.
fn cases() -> Vec<(&'static str, Message, Bytes)> {
    let limits = Limits::default();
    let call = Message::from(Call {
        request_id: 0x0123_4567_89ab_cdef,
        procedure: "io.macula.inventory.reserve_item".into(),
        timeout_ms: 5_000,
        idempotent: true,
        payload: Bytes::from(vec![0x5a; 100]),
    });
    let publish = Message::from(Publish {
        message_id: 42_000_001,
        epoch: 1_700_000_000_000,
        sequence: 42,
        topic: "io.macula.sensors.building-7.floor-3.temperature".into(),
        payload: Bytes::from(vec![0xa5; 1024]),
    });
    [("call_100B", call), ("publish_1KiB", publish)]
        .into_iter()
        .map(|(name, message)| {
            let bytes = message
                .to_vec(&limits)
                .expect("bench frames fit the limits");
            (name, message, Bytes::from(bytes))
        })
        .collect()
}

/// The three operations compared, run once on `message` / `bytes`.
#[derive(Clone, Copy)]
enum Op {
    Memcpy,
    Encode,
    Decode,
    DecodeShared,
}

impl Op {
    const ALL: [Op; 4] = [Op::Memcpy, Op::Encode, Op::Decode, Op::DecodeShared];

    fn name(self) -> &'static str {
        match self {
            Op::Memcpy => "memcpy",
            Op::Encode => "encode",
            Op::Decode => "decode",
            Op::DecodeShared => "decode_shared",
        }
    }

    fn run(self, message: &Message, bytes: &Bytes, scratch: &mut Vec<u8>, limits: &Limits) {
        match self {
            Op::Memcpy => {
                scratch.clear();
                scratch.extend_from_slice(black_box(bytes));
            }
            Op::Encode => {
                scratch.clear();
                black_box(message)
                    .encode(limits, scratch)
                    .expect("bench frames fit the limits");
            }
            Op::Decode => {
                black_box(decode(black_box(bytes), limits).expect("bench frames decode"));
            }
            Op::DecodeShared => {
                black_box(decode_shared(black_box(bytes), limits).expect("bench frames decode"));
            }
        }
        black_box(&scratch);
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, message, bytes) in cases() {
        for (unit, throughput) in [
            ("bytes", Throughput::Bytes(bytes.len() as u64)),
            ("messages", Throughput::Elements(1)),
        ] {
            let mut group = c.benchmark_group(format!("{unit}/{name}"));
            group.throughput(throughput);
            for op in Op::ALL {
                let mut scratch = Vec::with_capacity(bytes.len());
                group.bench_function(op.name(), |b| {
                    b.iter(|| op.run(&message, &bytes, &mut scratch, &limits))
                });
            }
            group.finish();
        }
    }
}

/// Mean seconds of one `op`, measured over about `budget`.
// Benches measure wall time; the core's ban on reading clocks does not apply.
#[allow(clippy::disallowed_methods)]
fn mean_secs(op: Op, message: &Message, bytes: &Bytes, budget: Duration) -> f64 {
    let limits = Limits::default();
    let mut scratch = Vec::with_capacity(bytes.len());
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < budget {
        for _ in 0..1_000 {
            op.run(message, bytes, &mut scratch, &limits);
        }
        runs += 1_000;
    }
    start.elapsed().as_secs_f64() / f64::from(runs)
}

/// Prints MB/s, messages/s and the ratio to memcpy for each frame and op.
fn summary() {
    println!("\nwire summary (same run; ratio = time / memcpy time)");
    for (name, message, bytes) in cases() {
        let budget = Duration::from_secs(1);
        let floor = mean_secs(Op::Memcpy, &message, &bytes, budget);
        for op in Op::ALL {
            let secs = mean_secs(op, &message, &bytes, budget);
            println!(
                "{name:>13} {:>13} {:>5} B: {:>9.1} MB/s {:>12.0} msg/s {:>6.2}x memcpy",
                op.name(),
                bytes.len(),
                bytes.len() as f64 / secs / 1e6,
                1.0 / secs,
                secs / floor,
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
