//! Micro-benchmarks of the engine's per-message work: building and reading an envelope,
//! and computing a due time. End-to-end engine throughput is measured with the
//! `null_load` example, not here.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items

use std::time::Duration;

use brokerbench_bench::envelope::Envelope;
use brokerbench_bench::plan::RateSchedule;
use brokerbench_bench::schedule::Schedule;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};

fn envelope(c: &mut Criterion) {
    let envelope = Envelope {
        run: 7,
        producer: 3,
        seq: 123_456,
        intended_ns: 9_876_543_210,
        sent_ns: 9_876_600_000,
    };
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(128);
    group.bench_function("encode 100 B", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&envelope).encode_into(100, &mut buf);
            black_box(buf.len())
        });
    });
    let bytes = envelope.encode(100);
    group.bench_function("decode 100 B", |b| {
        b.iter(|| black_box(Envelope::decode(black_box(&bytes))).is_ok());
    });
    group.finish();
}

fn schedule(c: &mut Criterion) {
    let schedule = Schedule::new(
        &RateSchedule::constant(50_000.0),
        Duration::from_secs(1),
        Duration::from_secs(60),
        1,
    );
    let mut group = c.benchmark_group("schedule");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("due time", |b| {
        b.iter(|| {
            i = (i + 1) % 3_000_000;
            black_box(schedule.due_ns(black_box(i)))
        });
    });
    group.finish();
}

criterion_group!(benches, envelope, schedule);
criterion_main!(benches);
