//! Micro-benchmarks of the hot path that does not touch sockets: framing a read buffer
//! into lines, parsing a `send` and rendering the pushed message once.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items

use bytes::BytesMut;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use reference_broker::codec::{Frame, LineDecoder};
use reference_broker::request::Request;

/// A 100-byte-payload send, as the load driver publishes it.
fn send_line() -> String {
    format!(
        r#"{{"command":"send","topic":"bench.0","msg":"{}","delivery":"all"}}"#,
        "x".repeat(100)
    )
}

fn framing(c: &mut Criterion) {
    let line = send_line() + "\n";
    let batch: String = line.repeat(512);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(512));
    group.bench_function("512 lines from one read", |b| {
        let mut decoder = LineDecoder::new(1 << 20);
        b.iter(|| {
            let mut buf = BytesMut::from(batch.as_bytes());
            let mut n = 0;
            while let Some(Frame::Line(line)) = decoder.decode(&mut buf) {
                n += line.len();
            }
            black_box(n)
        });
    });
    group.finish();
}

fn parse_and_render(c: &mut Criterion) {
    let line = send_line();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse send", |b| {
        b.iter(|| black_box(Request::parse(black_box(line.as_bytes())).is_ok()));
    });
    group.bench_function("parse send + render push", |b| {
        b.iter(|| match Request::parse(black_box(line.as_bytes())) {
            Ok(Request::Send(send)) => black_box(send.render(12345).0.len()),
            _ => unreachable!("the benchmark line is a valid send"),
        });
    });
    group.bench_function("parse malformed", |b| {
        let bad = br#"{"command":"send","topic":"t","msg":"m","delivery":"some"}"#;
        b.iter(|| black_box(Request::parse(black_box(bad)).is_err()));
    });
    group.finish();
}

criterion_group!(benches, framing, parse_and_render);
criterion_main!(benches);
