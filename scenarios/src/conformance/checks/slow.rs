//! `slow-consumer`: one subscriber far slower than the publish rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::{DeliveryMode, ErrorKind, SubscriptionSpec, TopicSpec};
use brokerbench_results::{Counts, LatencyHistogram};

use super::{Outbox, confirmed_text, settle, volume};
use crate::conformance::reader::{Acking, Pace, Reader, finish_all, wait_until};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, During, Finding, Stop};

/// Subscribers share a topic; one of them reads at `slow_read_rate` while messages go out
/// open loop at `slow_rate`, then drains at full speed once publishing is over. Whatever
/// the slow one misses must be explained by the broker (a slow-consumer error or a
/// disconnect on its subscription), never silent; the others must get everything with a
/// p99 latency under `slow_max_latency`.
pub(super) async fn slow_consumer(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("firehose").into();
    ctx.prepare(vec![TopicSpec::new(&*topic).partitions(1)])
        .await?;
    let spec = SubscriptionSpec::new(topic.clone());
    let pace = Pace::new(p.slow_read_rate);
    let slow = ctx
        .backend
        .subscribe(spec.clone())
        .await
        .during("subscribing the slow subscriber")?;
    let slow = Reader::spawn_paced(slow, ctx.run, Acking::Never, Some(pace.clone()));
    let mut fast = Vec::new();
    for i in 1..p.subscribers.max(2) {
        let sub = ctx
            .backend
            .subscribe(spec.clone())
            .await
            .during(&format!("subscribing subscriber {}", i + 1))?;
        fast.push(Reader::spawn(sub, ctx.run, Acking::Never));
    }
    let mut out = Outbox::open(ctx).await?;
    let started = Instant::now();
    out.send_paced(
        &topic,
        p.slow_messages,
        (p.slow_size, DeliveryMode::All),
        p.slow_rate,
    )
    .await;
    let ledger = out.ledger;
    let publishing = started.elapsed();
    let want = ledger.confirmed() as usize;
    wait_until(ctx.deadline(), || fast.iter().all(|r| r.distinct() >= want)).await;
    let read_while_slow = slow.distinct();
    // Now let the slow one catch up with what the broker still holds for it.
    pace.release();
    wait_until(ctx.deadline(), || slow.distinct() >= want || slow.ended()).await;
    settle(ctx).await;
    let slow_log = slow.finish().await;
    let fast_logs = finish_all(fast).await;

    let mut counts = Counts::default();
    let mut failures = Vec::new();
    // The project's latency histogram (HdrHistogram, ns), as every run measures.
    let mut latencies = LatencyHistogram::new();
    for (i, log) in fast_logs.iter().enumerate() {
        let t = tally(&ledger, &log.received, |_| true, Order::Ignore);
        if t.lost_or_extra() {
            failures.push(format!(
                "subscriber {} (keeping up): {}",
                i + 2,
                t.describe()
            ));
        }
        counts.add(&t.counts);
        for r in &log.received {
            if let Some(sent) = r.id(ctx.run).and_then(|id| ledger.get(&id)) {
                let latency = r.at.saturating_duration_since(sent.sent_at);
                latencies.record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }
    let p99 = latencies
        .value_at_quantile_ns(0.99)
        .map(Duration::from_nanos);
    if let Some(p99) = p99 {
        if p99 > p.slow_max_latency {
            failures.push(format!(
                "the subscribers keeping up saw p99 latency {} ms (limit {} ms) while one lagged",
                p99.as_millis(),
                p.slow_max_latency.as_millis()
            ));
        }
    }
    let t = tally(&ledger, &slow_log.received, |_| true, Order::Ignore);
    let signal = slow_log
        .error
        .as_ref()
        .filter(|(e, _)| matches!(e.kind(), ErrorKind::SlowConsumer | ErrorKind::Closed));
    let mut signalled = 0;
    if t.counts.lost > 0 {
        match signal {
            Some(_) => signalled = t.counts.lost,
            None => failures.push(format!(
                "the slow subscriber silently missed {} of {want} messages ({}); no error or disconnect told it",
                t.counts.lost,
                sample(&t.missing)
            )),
        }
    }
    if t.counts.duplicated + t.counts.phantom > 0 {
        failures.push(format!(
            "the slow subscriber: {}",
            t.counts.anomaly_summary()
        ));
    }
    counts.add(&t.counts);
    volume(&mut counts, &ledger);
    counts.detail("signalled_drops", signalled);
    counts.detail("read_while_slow", read_while_slow as u64);
    counts.detail("publish_ms", publishing.as_millis() as u64);
    if let Some(p99) = p99 {
        counts.detail("p99_latency_others_us", p99.as_micros() as u64);
    }
    let mut finding = Finding::new(counts);
    for f in failures {
        finding.fail(f);
    }
    let slow_text = match signal {
        Some((e, _)) if signalled > 0 => format!("the slow one lost {signalled}, signalled: {e}"),
        Some((e, _)) => format!("the slow one got everything before it was told: {e}"),
        None => "the slow one got everything once it caught up".to_owned(),
    };
    Ok(finding.summary(format!(
        "{} in {} ms to {} subscribers; the others kept up (p99 {:.1} ms); {slow_text}",
        confirmed_text(&ledger),
        publishing.as_millis(),
        fast_logs.len() + 1,
        p99.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    )))
}
