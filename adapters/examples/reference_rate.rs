//! The reference adapter alone, closed loop: one producer and N subscribers on one topic,
//! publishing for a while, counting confirmed publishes and deliveries per second. It is
//! what `reference-broker/examples/load.rs throughput` measures with raw sockets, done
//! through the adapter (a `Producer` and `Subscription` streams), so the two rates side by
//! side say what the adapter costs.
//!
//! ```text
//! cargo run --release -p brokerbench-adapters --no-default-features --example reference_rate -- \
//!     [URL] [SUBSCRIBERS] [BATCH] [BATCHES_IN_FLIGHT] [SECONDS] [SIZE]
//! ```
//!
//! Defaults: `tcp://127.0.0.1:7000`, 1 subscriber, batches of 64 through
//! `Producer::publish_batch` (`BATCH` 0: single `publish` calls, 64 in flight per
//! `BATCHES_IN_FLIGHT`), 4 batches in flight, 5 s, 100-byte messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    Backend, ConnectOptions, PublishOutcome, PublishRequest, ReferenceBackend, SubscriptionSpec,
};
use futures::StreamExt;
use futures::stream::FuturesOrdered;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "tcp://127.0.0.1:7000".to_owned());
    let number = |i: usize, default: usize| -> Result<usize, String> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().map_err(|e| format!("{s}: {e}")))
    };
    let subscribers = number(1, 1)?;
    let batch = number(2, 64)?;
    let in_flight = number(3, 4)?.max(1);
    let seconds = number(4, 5)?.max(1);
    let size = number(5, 100)?;

    let backend = ReferenceBackend::connect(&url, ConnectOptions::new()).await?;
    let topic: Arc<str> = Arc::from(format!("rate-{}", std::process::id()));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut subscription = backend
            .subscribe(SubscriptionSpec::new(topic.clone()))
            .await?;
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            // Counted locally and added every so often, as the load tool does per read:
            // one shared counter bumped per delivery by ten tasks would measure itself.
            let mut unreported = 0u64;
            while let Ok(Some(item)) =
                tokio::time::timeout(Duration::from_millis(500), subscription.next()).await
            {
                if let Err(error) = item {
                    eprintln!("subscription ended: {error}");
                    break;
                }
                unreported += 1;
                if unreported == 256 {
                    delivered.fetch_add(unreported, Ordering::Relaxed);
                    unreported = 0;
                }
            }
            delivered.fetch_add(unreported, Ordering::Relaxed);
        }));
    }
    let producer = backend.producer().await?;
    let payload = bytes::Bytes::from("x".repeat(size));
    let request = PublishRequest::new(topic.clone(), payload);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds as u64);
    let (mut confirmed, mut failed) = (0u64, 0u64);
    let mut count = |outcome: &PublishOutcome| {
        if outcome.is_confirmed() {
            confirmed += 1;
        } else {
            failed += 1;
        }
    };
    if batch == 0 {
        let mut flight = FuturesOrdered::new();
        let window = 64 * in_flight;
        loop {
            while flight.len() < window && Instant::now() < deadline {
                flight.push_back(producer.publish(request.clone()));
            }
            match flight.next().await {
                Some(outcome) => count(&outcome),
                None => break,
            }
        }
    } else {
        let mut flight = FuturesOrdered::new();
        loop {
            while flight.len() < in_flight && Instant::now() < deadline {
                flight.push_back(producer.publish_batch(vec![request.clone(); batch]));
            }
            match flight.next().await {
                Some(outcomes) => outcomes.iter().for_each(&mut count),
                None => break,
            }
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    // Deliveries while publishing (the rate); the rest arrive within the readers' idle
    // timeout and only complete the count.
    let delivered_in_time = delivered.load(Ordering::Relaxed);
    for reader in readers {
        let _ = reader.await;
    }
    let delivered = delivered.load(Ordering::Relaxed);
    let mode = if batch == 0 {
        format!("single publishes, {} in flight", 64 * in_flight)
    } else {
        format!("batches of {batch}, {in_flight} in flight")
    };
    println!(
        "reference adapter, {mode}, {subscribers} subscriber(s), {size}-byte messages: \
         {:.0} confirmed publishes/s, {:.0} deliveries/s ({confirmed} confirmed, {failed} not, \
         {delivered} delivered, expected {})",
        confirmed as f64 / publish_secs,
        delivered_in_time as f64 / publish_secs,
        confirmed * subscribers as u64,
    );
    Ok(())
}
