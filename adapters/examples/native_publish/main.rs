//! A plain publish-only loop of the client library an adapter uses, without the adapter:
//! the "native tool" that `scripts/ratios` compares brokerbench's publish rate with, for
//! the brokers whose own benchmark tool is not installable here.
//!
//! ```text
//! cargo run --release -p brokerbench-adapters --example native_publish -- \
//!     --broker nats|jetstream|rabbitmq|kafka [--url URL] [--messages N] [--in-flight K] \
//!     [--size BYTES] [--producers P] [--partitions N]
//! ```
//!
//! Defaults: 500,000 messages in total, 1,024 in flight per producer, 100-byte payloads,
//! one producer (one connection each), one Kafka partition (the adapter's default for a
//! topic without consumer groups). The URL defaults as brokerbench's (`--url`, else
//! `BROKERBENCH_<BROKER>_URL`, else the usual localhost address).
//!
//! What "confirmed" means, and what is created and deleted, per broker (the same as the
//! adapter's publish-only case, so the two rates compare):
//! - `nats`: core NATS has no acknowledgement; publishes go out in batches of `K / 2`, and
//!   a batch is confirmed by a round trip through the server sent after it (a request to a
//!   subject nobody answers, which the server refuses with "no responders" once it has
//!   processed everything the connection sent before), as the adapter confirms. At most
//!   one round trip is in flight, so at most `K` messages are unconfirmed. No subscriber:
//!   the server drops them, as it does for brokerbench's publish-only workload. Nothing
//!   to create. (`Client::flush` would not do: in async-nats it only hands the bytes to
//!   the socket and never waits for the server.)
//! - `jetstream`: a memory stream on one subject is created; `publish` with a PubAck per
//!   message, `K` acks awaited at a time; the stream is deleted.
//! - `rabbitmq`: a fanout exchange is declared, a confirm-mode channel per producer,
//!   `basic.publish` to the exchange with `K` publisher confirms outstanding (no queue is
//!   bound: the message is confirmed and goes nowhere); the exchange is deleted.
//! - `kafka`: a topic is created through the admin API (tansu does not auto-create), one
//!   `FutureProducer` per producer with the adapter's settings (idempotent, `acks=all`,
//!   `linger.ms=1`), `K` delivery reports outstanding; the topic is deleted.
//!
//! The clock starts when every producer is connected and ready, and stops at the last
//! confirmation. Output, on stdout, one JSON line:
//!
//! ```text
//! {"tool":"native_publish","broker":"kafka","producers":1,"in_flight":1024,"size":100,"messages":500000,"confirmed":500000,"failed":0,"seconds":2.1,"msgs_per_s":238095.2}
//! ```
//!
//! Exit code: 0 when every message was confirmed, 1 when some failed, 2 when the loop
//! could not run (unreachable broker, refused topic).

mod kafka;
mod nats;
mod rabbitmq;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::BackendKind;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Longest a connection, a topic creation or a deletion may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a single confirmation may take before the message counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: native_publish --broker nats|jetstream|rabbitmq|kafka [--url URL] [--messages N] [--in-flight K] [--size BYTES] [--producers P] [--partitions N]";

/// The validated flags.
#[derive(Debug, Clone)]
struct Settings {
    broker: BackendKind,
    url: String,
    messages: u64,
    in_flight: usize,
    size: usize,
    producers: usize,
    partitions: i32,
}

impl Settings {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
        let mut broker = None;
        let mut url = None;
        let (mut messages, mut in_flight, mut size, mut producers, mut partitions) =
            (500_000u64, 1024usize, 100usize, 1usize, 1i32);
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.into());
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let value_of = value.as_str();
            match flag.as_str() {
                "--broker" => {
                    let kind: BackendKind = value.parse().map_err(|e| format!("{e}"))?;
                    if !matches!(
                        kind,
                        BackendKind::Nats
                            | BackendKind::Jetstream
                            | BackendKind::Rabbitmq
                            | BackendKind::Kafka
                    ) {
                        return Err(format!(
                            "--broker {value}: this loop covers nats, jetstream, rabbitmq and kafka (Redis has redis-benchmark)"
                        ));
                    }
                    broker = Some(kind);
                }
                "--url" => url = Some(value),
                "--messages" => messages = number::<u64>(&flag, value_of)?.max(1),
                "--in-flight" => in_flight = number::<usize>(&flag, value_of)?.max(1),
                "--size" => size = number(&flag, value_of)?,
                "--producers" => producers = number::<usize>(&flag, value_of)?.max(1),
                "--partitions" => partitions = number::<i32>(&flag, value_of)?.max(1),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        let broker = broker.ok_or_else(|| format!("--broker is required\n{USAGE}"))?;
        Ok(Settings {
            broker,
            url: broker.resolve_url(url.as_deref()),
            messages,
            in_flight,
            size,
            producers,
            partitions,
        })
    }

    /// Messages of producer `index`: an equal share, the first ones taking the rest.
    fn share(&self, index: usize) -> u64 {
        let producers = self.producers as u64;
        self.messages / producers + u64::from((index as u64) < self.messages % producers)
    }
}

/// A flag's number (`1000000`, `1_000_000` or `1,000,000`).
fn number<T>(flag: &str, value: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err: std::fmt::Display>,
{
    value
        .replace(['_', ','], "")
        .parse()
        .map_err(|e| format!("{flag} {value}: {e}"))
}

/// What one producer counted.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    confirmed: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.confirmed += other.confirmed;
        self.failed += other.failed;
    }

    fn count(&mut self, ok: bool) {
        if ok {
            self.confirmed += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// What handing one message to a client gave.
enum Sent<F> {
    /// Sent; the future resolves with its confirmation.
    Pending(F),
    /// Refused at once: counted as failed.
    Failed,
    /// The client's queue is full: wait for a confirmation, then try again.
    Full,
}

/// Sends `count` messages through `send`, keeping at most `in_flight` confirmations
/// outstanding, and counts each as `confirmed` says.
async fn windowed<F, Fut>(
    count: u64,
    in_flight: usize,
    mut send: impl FnMut() -> Fut,
    confirmed: impl Fn(&F::Output) -> bool,
) -> Tally
where
    F: std::future::Future,
    Fut: std::future::Future<Output = Sent<F>>,
{
    let mut tally = Tally::default();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    while sent < count || !pending.is_empty() {
        while sent < count && pending.len() < in_flight {
            match send().await {
                Sent::Pending(confirmation) => pending.push(confirmation),
                Sent::Failed => tally.failed += 1,
                Sent::Full if !pending.is_empty() => break,
                Sent::Full => {
                    tally.failed += 1;
                }
            }
            sent += 1;
        }
        if let Some(outcome) = pending.next().await {
            tally.count(confirmed(&outcome));
        }
    }
    tally
}

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("native_publish: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("native_publish: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("native_publish: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(settings: Settings) -> Result<bool, Error> {
    let payload = Bytes::from(vec![b'x'; settings.size]);
    let name = format!("bb-native-{}", std::process::id());
    let (tally, elapsed) = match settings.broker {
        BackendKind::Nats => nats::nats_core(&settings, &name, payload).await?,
        BackendKind::Jetstream => nats::jetstream(&settings, &name, payload).await?,
        BackendKind::Rabbitmq => rabbitmq::rabbitmq(&settings, &name, payload).await?,
        BackendKind::Kafka => kafka::kafka(&settings, &name, payload).await?,
        other => return Err(format!("no loop for {other}").into()),
    };
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        tally.confirmed as f64 / seconds
    } else {
        0.0
    };
    println!(
        "{}",
        serde_json::json!({
            "tool": "native_publish",
            "broker": settings.broker.to_string(),
            "producers": settings.producers,
            "in_flight": settings.in_flight,
            "size": settings.size,
            "messages": settings.messages,
            "confirmed": tally.confirmed,
            "failed": tally.failed,
            "seconds": (seconds * 1e6).round() / 1e6,
            "msgs_per_s": (rate * 10.0).round() / 10.0,
        })
    );
    Ok(tally.failed == 0 && tally.confirmed == settings.messages)
}

/// Runs `work` once per producer handle, each on its own task; the clock starts when
/// every task is spawned and waiting at the barrier. Returns the summed tally and the time
/// from the barrier to the last task's end.
async fn timed<H, F>(
    handles: Vec<H>,
    work: impl Fn(usize, H) -> F,
) -> Result<(Tally, Duration), Error>
where
    F: Future<Output = Tally> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(handles.len() + 1));
    let mut tasks = JoinSet::new();
    for (index, handle) in handles.into_iter().enumerate() {
        let barrier = barrier.clone();
        let job = work(index, handle);
        tasks.spawn(async move {
            barrier.wait().await;
            job.await
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        total.add(joined?);
    }
    Ok((total, started.elapsed()))
}
