//! What one reference-broker subscriber costs the client per delivery, without a broker:
//! a stand-in server on loopback answers the subscribe and then writes push lines as the
//! reference broker renders them, in large writes; the benchmark reads them through the
//! public API (`ReferenceBackend::connection`, `Connection::subscribe`, the
//! subscription's stream), so each delivery pays for the socket read, splitting the
//! lines, decoding the push, the hand-over from the connection's reader task and the
//! stream, as in a run. The server's side is a copy of ready bytes.
//!
//! - `usual push`: the lines the broker sends for brokerbench's messages (`"delivery":"all"`,
//!   `"cache":false`, an index), which the adapter reads by their shape;
//! - `other key order`: the same messages with their keys in another order, which go
//!   through the adapter's general scanner.
//!
//! The payload is a 100-byte envelope-like ASCII string, as `scripts/ratios` sends.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use brokerbench_adapters::{ConnectOptions, ReferenceBackend, Subscription, SubscriptionSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

/// Distinct lines rendered once; the server cycles through them.
const LINES: usize = 1024;

/// A stand-in broker: answers every request line with `{"success":true}`; after a
/// `subscribe`, writes the requested number of push lines on that connection.
struct StandIn {
    url: String,
    /// How many push lines to write next, to the subscribed connection.
    more: mpsc::Sender<u64>,
}

impl StandIn {
    fn start(render: fn(usize) -> String) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("tcp://{}", listener.local_addr().expect("local address"));
        let (more, requests) = mpsc::channel::<u64>();
        let lines: Vec<u8> = (0..LINES).flat_map(|i| render(i).into_bytes()).collect();
        let ends: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|&(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        // One thread per connection (the backend's control connection never subscribes);
        // the first to subscribe takes the requests.
        let requests = Arc::new(Mutex::new(Some(requests)));
        let lines = Arc::new((lines, ends));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let requests = requests.clone();
                let lines = lines.clone();
                thread::spawn(move || {
                    if !answer_until_subscribe(&stream) {
                        return;
                    }
                    let taken = requests.lock().expect("not poisoned").take();
                    if let Some(requests) = taken {
                        push(stream, &lines.0, &lines.1, &requests);
                    }
                });
            }
        });
        StandIn { url, more }
    }
}

/// Answers request lines until a `subscribe` (answered too): `true`, or until the
/// connection closes: `false`. The control connection never subscribes; its thread ends
/// with it.
fn answer_until_subscribe(stream: &TcpStream) -> bool {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if writer.write_all(b"{\"success\":true}\r\n").is_err() {
            return false;
        }
        if line.contains("\"subscribe\"") {
            return true;
        }
    }
}

/// Writes `n` lines for every `n` received, cycling through `lines`.
fn push(mut stream: TcpStream, lines: &[u8], ends: &[usize], requests: &mpsc::Receiver<u64>) {
    let mut next = 0usize;
    for mut n in requests {
        while n > 0 {
            let take = (LINES - next).min(usize::try_from(n).unwrap_or(usize::MAX));
            let start = if next == 0 { 0 } else { ends[next - 1] };
            let end = ends[next + take - 1];
            if stream.write_all(&lines[start..end]).is_err() {
                return;
            }
            next = (next + take) % LINES;
            n -= take as u64;
        }
    }
}

/// A 100-byte ASCII payload, like an envelope.
fn payload(i: usize) -> String {
    let head = format!("B1{i:032x}");
    format!("{head}{}", ".".repeat(100 - head.len()))
}

fn usual(i: usize) -> String {
    format!(
        "{{\"command\":\"send\",\"topic\":\"bench\",\"msg\":\"{}\",\"delivery\":\"all\",\"cache\":false,\"index\":{i}}}\r\n",
        payload(i)
    )
}

fn other_order(i: usize) -> String {
    format!(
        "{{\"index\":{i},\"command\":\"send\",\"topic\":\"bench\",\"delivery\":\"all\",\"msg\":\"{}\",\"cache\":false}}\r\n",
        payload(i)
    )
}

/// Subscribes to the stand-in and measures `iters` deliveries read from the stream.
fn read_deliveries(c: &mut Criterion, name: &str, render: fn(usize) -> String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let server = StandIn::start(render);
    let mut subscription: Subscription = runtime.block_on(async {
        let backend = ReferenceBackend::connect(&server.url, ConnectOptions::new())
            .await
            .expect("connect to the stand-in");
        let connection = backend.connection().await.expect("a connection");
        connection
            .subscribe(&SubscriptionSpec::new("bench"))
            .await
            .expect("subscribe")
    });
    let mut group = c.benchmark_group("reference subscriber");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                server.more.send(iters).expect("the stand-in is running");
                let mut bytes = 0usize;
                for _ in 0..iters {
                    let delivery = subscription
                        .next()
                        .await
                        .expect("the stream goes on")
                        .expect("a delivery");
                    bytes += delivery.payload.len();
                }
                assert_eq!(bytes as u64, iters * 100);
                started.elapsed()
            })
        });
    });
    group.finish();
}

fn usual_push(c: &mut Criterion) {
    read_deliveries(c, "usual push", usual);
}

fn general_scanner(c: &mut Criterion) {
    read_deliveries(c, "other key order", other_order);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = usual_push, general_scanner
}
criterion_main!(benches);
