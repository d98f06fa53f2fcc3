//! Hot-path cost of the per-task recorder: one call per delivered message (consumer
//! side, 2 histograms) and per confirmed publish (producer side, 3 histograms), plus a
//! bare histogram record. Timestamps advance 1 µs per sample, so the batch crosses
//! interval boundaries and the hand-off cost is included, amortised as in a real run.

use std::hint::black_box;

use brokerbench_results::{Delivery, LatencyHistogram, Recorder, snapshot_channel};
use criterion::{Criterion, Throughput};

/// Samples per iteration.
const BATCH: u64 = 10_000;
/// Nanoseconds between two samples' timestamps (1 µs: a rotation every 1e6 samples).
const STEP_NS: u64 = 1_000;

/// Pseudo-random latencies between 100 µs and ~10 ms, so the histogram index changes
/// from sample to sample as it does in a real run.
fn latencies() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..4_096).map(|_| rng.u64(100_000..10_000_000)).collect()
}

fn recorder(c: &mut Criterion) {
    let lat = latencies();
    let mut group = c.benchmark_group("recorder");
    group.throughput(Throughput::Elements(BATCH));

    group.bench_function("histogram_record", |b| {
        let mut h = LatencyHistogram::new();
        b.iter(|| {
            for i in 0..BATCH as usize {
                h.record(black_box(lat[i & 4_095]));
            }
        });
    });

    group.bench_function("record_delivery", |b| {
        let (tx, mut rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        let mut now = 0u64;
        b.iter(|| {
            for i in 0..BATCH as usize {
                now += STEP_NS;
                let intended = now.saturating_sub(lat[i & 4_095]);
                r.record_delivery(black_box(now), intended, intended + 500, Delivery::First);
            }
            while rx.try_recv().is_ok() {}
        });
    });

    group.bench_function("record_publish_ok", |b| {
        let (tx, mut rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        let mut now = 0u64;
        b.iter(|| {
            for i in 0..BATCH as usize {
                now += STEP_NS;
                let intended = now.saturating_sub(lat[i & 4_095]);
                r.record_publish_ok(black_box(now), intended, intended + 500);
            }
            while rx.try_recv().is_ok() {}
        });
    });

    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    recorder(&mut c);
    c.final_summary();
}
