//! How fast the Redis Streams adapter publishes (and, with `firehose`, delivers), to put
//! next to `redis-benchmark` at the same settings.
//!
//! ```text
//! cargo run --release -p brokerbench-adapters --no-default-features --features redis \
//!     --example redis_publish -- [MODE] [MESSAGES] [SIZE] [PIPELINE] [CONNECTIONS]
//! ```
//!
//! - `MODE`: `batch` (default): each connection's task calls
//!   `Producer::publish_batch` with `PIPELINE` messages and awaits it before the next:
//!   the closed loop `redis-benchmark -P <PIPELINE>` runs on each of its connections.
//!   `single`: each task keeps `PIPELINE` `Producer::publish` futures in flight (a new one
//!   as soon as one resolves). `firehose`: as `batch`, with one fan-out subscription
//!   (automatic acks) reading the stream at the same time; the run ends when it has
//!   received every message.
//! - `MESSAGES` (default 1,000,000) in total, split evenly over the connections;
//!   `SIZE` payload bytes (default 100); `PIPELINE` (default 64); `CONNECTIONS` producers,
//!   each on its own connection (default 1).
//!
//! The server is `BROKERBENCH_REDIS_URL` (default `redis://127.0.0.1:6379`). The stream is
//! `bb.<run>.publish`, made for the run and deleted (`UNLINK`) at the end. One line is
//! printed, `key=value` pairs separated by spaces, rates in messages per second over the
//! wall time from the first publish to the last confirmation (delivery, for `delivered`):
//!
//! ```text
//! redis_publish mode=batch messages=1000000 size=100 pipeline=64 connections=1 seconds=1.234 published=810373 ok=1000000 failed=0 unknown=0
//! redis_publish mode=firehose ... published=700000 ok=1000000 failed=0 unknown=0 delivered=690000 received=1000000
//! ```
//!
//! The same work with `redis-benchmark` (one connection, pipeline 64, a 100-byte value in a
//! field named `payload`, as the adapter writes it), then removing its stream:
//!
//! ```text
//! redis-benchmark -q -n 1000000 -c 1 -P 64 XADD bench '*' payload "$(head -c 100 /dev/zero | tr '\0' x)"
//! redis-cli UNLINK bench
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use brokerbench_adapters::{
    Backend, BackendKind, ConnectOptions, PublishOutcome, PublishRequest, RunTopology,
    SubscriptionSpec, TopicSpec, connect,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

const USAGE: &str =
    "usage: redis_publish [batch|single|firehose] [MESSAGES] [SIZE] [PIPELINE] [CONNECTIONS]";

/// Confirmations of each kind, over all connections.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
}

impl Tally {
    fn count(&self, outcome: &PublishOutcome) {
        let counter = match outcome {
            PublishOutcome::Ok | PublishOutcome::Duplicate => &self.ok,
            PublishOutcome::Failed(_) => &self.failed,
            PublishOutcome::Unknown => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("batch", String::as_str);
    if !["batch", "single", "firehose"].contains(&mode) {
        return Err(USAGE.into());
    }
    let number = |i: usize, default: usize| -> Result<usize, String> {
        args.get(i).map_or(Ok(default), |s| {
            s.replace(['_', ','], "")
                .parse()
                .map_err(|e| format!("{s}: {e}; {USAGE}"))
        })
    };
    let messages = number(1, 1_000_000)?;
    let size = number(2, 100)?;
    let pipeline = number(3, 64)?.max(1);
    let connections = number(4, 1)?.max(1);

    let kind = BackendKind::Redis;
    let backend: Arc<dyn Backend> =
        Arc::from(connect(kind, &kind.resolve_url(None), ConnectOptions::new()).await?);
    let run = format!("rp{}", std::process::id());
    let topic: Arc<str> = Arc::from(backend.topic_name(&run, "publish"));
    backend
        .prepare(&RunTopology::new(run.clone()).topic(TopicSpec::new(topic.to_string())))
        .await?;
    let per_connection = messages / connections;
    let total = per_connection * connections;

    // The firehose's reader: counts deliveries, and notes when the last one came.
    let reader = if mode == "firehose" {
        let mut subscription = backend
            .subscribe(SubscriptionSpec::new(topic.clone()))
            .await?;
        Some(tokio::spawn(async move {
            let mut received = 0;
            while received < total {
                match subscription.next().await {
                    Some(Ok(_)) => received += 1,
                    _ => break,
                }
            }
            (received, Instant::now())
        }))
    } else {
        None
    };

    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let tally = Arc::new(Tally::default());
    let mut producers = Vec::with_capacity(connections);
    for _ in 0..connections {
        producers.push(backend.producer().await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = producers
        .into_iter()
        .map(|producer| {
            let (topic, payload, tally) = (topic.clone(), payload.clone(), tally.clone());
            let request = move || PublishRequest::new(topic.clone(), payload.clone());
            let single = mode == "single";
            tokio::spawn(async move {
                if single {
                    let mut in_flight = FuturesUnordered::new();
                    for _ in 0..per_connection {
                        if in_flight.len() >= pipeline
                            && let Some(outcome) = in_flight.next().await
                        {
                            tally.count(&outcome);
                        }
                        in_flight.push(producer.publish(request()));
                    }
                    while let Some(outcome) = in_flight.next().await {
                        tally.count(&outcome);
                    }
                } else {
                    let mut left = per_connection;
                    while left > 0 {
                        let n = left.min(pipeline);
                        left -= n;
                        let batch = (0..n).map(|_| request()).collect();
                        for outcome in producer.publish_batch(batch).await {
                            tally.count(&outcome);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let published_in = started.elapsed().as_secs_f64();
    let delivered = match reader {
        Some(reader) => {
            let (received, last) = reader.await?;
            let seconds = last.duration_since(started).as_secs_f64();
            format!(
                " delivered={:.0} received={received}",
                received as f64 / seconds
            )
        }
        None => String::new(),
    };
    backend.teardown().await?;
    println!(
        "redis_publish mode={mode} messages={total} size={size} pipeline={pipeline} connections={connections} seconds={published_in:.3} published={:.0} ok={} failed={} unknown={}{delivered}",
        total as f64 / published_in,
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.unknown.load(Ordering::Relaxed),
    );
    Ok(())
}
