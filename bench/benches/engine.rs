//! Micro-benchmarks of the engine's per-message work, side by side:
//!
//! - `envelope`: building and reading one envelope; a batch of 64 built into one buffer
//!   (what a producer does with the messages due together);
//! - `schedule`: computing a due time;
//! - `consumer`: what a subscriber task does per delivery (read the envelope, classify
//!   the sequence, record the latency);
//! - `null backend`: a batch of 64 published through the in-process null backend and
//!   read back from a subscription, per message.
//!
//! End-to-end engine throughput is measured by `brokerbench run --backend null` (see
//! `scripts/ratios`), not here. Recording alone is in `brokerbench-results`' `record`
//! benchmark.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items

use std::time::Duration;

use brokerbench_adapters::{Backend, NullBackend, PublishRequest, SubscriptionSpec};
use brokerbench_bench::envelope::Envelope;
use brokerbench_bench::plan::RateSchedule;
use brokerbench_bench::schedule::Schedule;
use brokerbench_results::{Delivery, Recorder, SequenceTracker, snapshot_channel};
use bytes::Bytes;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use futures::StreamExt;

/// Messages per batch in the batched benchmarks (the engine's default in-flight window).
const BATCH: usize = 64;

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
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode 64 × 100 B into one buffer", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(100 * BATCH);
            for seq in 0..BATCH as u64 {
                Envelope { seq, ..envelope }.encode_into(100, &mut buf);
            }
            let buf = Bytes::from(buf);
            let slices: Vec<Bytes> = (0..BATCH)
                .map(|i| buf.slice(i * 100..(i + 1) * 100))
                .collect();
            black_box(slices)
        });
    });
    group.finish();
}

/// A subscriber task's work per delivery, without the channel: decode, classify, record.
fn consumer(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = (0..4_096u64)
        .map(|seq| {
            Envelope {
                run: 7,
                producer: 0,
                seq,
                intended_ns: seq * 1_000,
                sent_ns: seq * 1_000 + 200,
            }
            .encode(100)
        })
        .collect();
    let mut group = c.benchmark_group("consumer");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("per delivery", |b| {
        let (tx, mut rx) = snapshot_channel();
        let mut recorder = Recorder::new(tx);
        let mut tracker = SequenceTracker::new();
        let mut round = 0u64;
        b.iter(|| {
            round += 1;
            for (i, payload) in payloads.iter().enumerate() {
                let e = Envelope::decode(black_box(payload)).expect("an envelope");
                // A new producer id each round, so every delivery is a first one.
                let class = tracker.observe(round, e.seq);
                let now = round * 5_000_000 + i as u64 * 1_000 + 50_000;
                recorder.record_delivery(now, e.intended_ns, e.sent_ns, class);
                debug_assert_eq!(class, Delivery::First);
            }
            while rx.try_recv().is_ok() {}
        });
    });
    group.finish();
}

/// One batch published through the null backend and read back, per message.
fn null_backend(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let backend = NullBackend::new();
    let (producer, mut subscription) = runtime.block_on(async {
        let subscription = backend
            .subscribe(SubscriptionSpec::new("bench"))
            .await
            .expect("subscribed");
        (backend.producer().await.expect("a producer"), subscription)
    });
    let payload = Bytes::from(vec![b'x'; 100]);
    let mut group = c.benchmark_group("null backend");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish_batch 64 and read them", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let requests = (0..BATCH)
                    .map(|_| PublishRequest::new("bench", payload.clone()))
                    .collect();
                let outcomes = producer.publish_batch(requests).await;
                for _ in 0..BATCH {
                    black_box(subscription.next().await);
                }
                black_box(outcomes)
            })
        });
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

criterion_group!(benches, envelope, schedule, consumer, null_backend);
criterion_main!(benches);
