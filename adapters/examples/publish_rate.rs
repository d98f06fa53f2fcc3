//! The most a single producer of an adapter can publish, confirmed, per second: to compare
//! with the broker's own tools (`redis-benchmark`, `kcat -P`, `nats bench`, PerfTest).
//!
//! ```text
//! cargo run --release -p brokerbench-adapters --example publish_rate -- KIND [MESSAGES] [SIZE] [IN_FLIGHT] [PRODUCERS]
//! ```
//!
//! Defaults: 200,000 messages of 200 bytes, 4,096 in flight, one producer. The URL comes
//! from `BROKERBENCH_<KIND>_URL` or the kind's default. A topic is prepared and torn down;
//! one subscriber is attached (so brokers that drop unrouted messages still do the work),
//! and its deliveries are counted but not awaited.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use brokerbench_adapters::{
    Backend, BackendKind, ConnectOptions, PublishOutcome, PublishRequest, RunTopology,
    SubscriptionSpec, TopicSpec, connect,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind: BackendKind = args
        .first()
        .ok_or("usage: publish_rate KIND [MESSAGES] [SIZE] [IN_FLIGHT] [PRODUCERS]")?
        .parse()?;
    let number = |i: usize, default: usize| -> Result<usize, String> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().map_err(|e| format!("{s}: {e}")))
    };
    let messages = number(1, 200_000)?;
    let size = number(2, 200)?;
    let in_flight = number(3, 4096)?.max(1);
    let producers = number(4, 1)?.max(1);

    let url = kind.resolve_url(None);
    let backend: Arc<dyn Backend> = Arc::from(connect(kind, &url, ConnectOptions::new()).await?);
    let run = format!("rate-{}", std::process::id());
    let topic: Arc<str> = Arc::from(backend.topic_name(&run, "rate"));
    backend
        .prepare(&RunTopology::new(run.clone()).topic(TopicSpec::new(topic.to_string())))
        .await?;
    let mut subscription = backend
        .subscribe(SubscriptionSpec::new(topic.clone()))
        .await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(_)) = subscription.next().await {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let per_producer = messages / producers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let producer = backend.producer().await?;
        let topic = topic.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut pending = FuturesUnordered::new();
            let mut sent = 0;
            while sent < per_producer || !pending.is_empty() {
                while sent < per_producer && pending.len() < in_flight {
                    pending.push(
                        producer.publish(PublishRequest::new(topic.clone(), payload.clone())),
                    );
                    sent += 1;
                }
                match pending.next().await {
                    Some(PublishOutcome::Ok | PublishOutcome::Duplicate) => ok += 1,
                    Some(_) => failed += 1,
                    None => {}
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f) = task.await?;
        ok += o;
        failed += f;
    }
    let elapsed = started.elapsed();
    let seen = delivered.load(Ordering::Relaxed);
    println!(
        "{kind} {}: {ok} confirmed, {failed} not, in {:.2}s = {:.0} msgs/s ({size} B, {in_flight} in flight, {producers} producer(s)); {seen} delivered by then",
        brokerbench_adapters::endpoint::redact(&url),
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
    );
    reader.abort();
    backend.teardown().await?;
    Ok(())
}
