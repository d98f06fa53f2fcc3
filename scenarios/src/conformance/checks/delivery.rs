//! `fanout` and `compete`: who gets a message.

use std::sync::Arc;

use brokerbench_adapters::{DeliveryMode, SubscriptionSpec, TopicSpec};
use brokerbench_results::Counts;

use super::{Outbox, all_have, confirmed_text, readers, settle, together_have, volume};
use crate::conformance::reader::{Acking, finish_all};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, Finding, Stop};

/// N subscribers, M messages to `all`: every subscriber gets every confirmed message once,
/// and nothing else.
pub(super) async fn fanout(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("fanout").into();
    ctx.prepare(vec![TopicSpec::new(&*topic)]).await?;
    let readers = readers(
        ctx,
        &SubscriptionSpec::new(topic.clone()),
        p.subscribers,
        Acking::Never,
    )
    .await?;
    let mut out = Outbox::open(ctx).await?;
    out.send(&topic, p.messages, (p.size, DeliveryMode::All, p.window))
        .await;
    let ledger = out.ledger;
    let want = ledger.confirmed() as usize;
    all_have(&readers, want, ctx.deadline()).await;
    settle(ctx).await;
    let logs = finish_all(readers).await;

    let mut total = Counts::default();
    let mut failures = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let t = tally(&ledger, &log.received, |_| true, Order::Ignore);
        if t.lost_or_extra() {
            let mut what = format!("subscriber {} of {}: {}", i + 1, logs.len(), t.describe());
            if let Some((err, _)) = &log.error {
                what.push_str(&format!("; its subscription ended: {err}"));
            }
            failures.push(what);
        }
        total.add(&t.counts);
    }
    volume(&mut total, &ledger);
    total.detail("subscribers", logs.len() as u64);
    let mut finding = Finding::new(total);
    for f in failures {
        finding.fail(f);
    }
    Ok(finding.summary(format!(
        "{} subscribers each got every message once ({})",
        logs.len(),
        confirmed_text(&ledger)
    )))
}

/// K consumers in one group, M messages to `one`: every confirmed message reaches exactly
/// one consumer, and the union is everything.
pub(super) async fn compete(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("compete").into();
    let group = "workers";
    ctx.prepare(vec![TopicSpec::new(&*topic).group(group)])
        .await?;
    let spec = SubscriptionSpec::new(topic.clone()).group(group);
    let readers = readers(ctx, &spec, p.consumers, Acking::Never).await?;
    let mut out = Outbox::open(ctx).await?;
    out.send(&topic, p.messages, (p.size, DeliveryMode::One, p.window))
        .await;
    let ledger = out.ledger;
    together_have(&readers, ledger.confirmed() as usize, ctx.deadline()).await;
    settle(ctx).await;
    let logs = finish_all(readers).await;

    let union = tally(
        &ledger,
        logs.iter().flat_map(|log| &log.received),
        |_| true,
        Order::Ignore,
    );
    let mut counts = union.counts;
    volume(&mut counts, &ledger);
    let shares: Vec<String> = logs.iter().map(|l| l.received.len().to_string()).collect();
    for (i, log) in logs.iter().enumerate() {
        counts.detail(&format!("consumer_{}", i + 1), log.received.len() as u64);
    }
    let mut finding = Finding::new(counts);
    let c = finding.counts.clone();
    if c.duplicated > 0 {
        let what = format!(
            "{} messages reached more than one consumer (or one twice)",
            c.duplicated
        );
        finding.fail(what);
    }
    if c.lost > 0 {
        let what = format!(
            "{} confirmed messages reached no consumer ({})",
            c.lost,
            sample(&union.missing)
        );
        finding.fail(what);
    }
    if c.phantom > 0 {
        let what = format!("{} deliveries were never published or corrupted", c.phantom);
        finding.fail(what);
    }
    for (i, log) in logs.iter().enumerate() {
        if let Some((err, _)) = &log.error {
            finding.fail(format!("consumer {} ended with an error: {err}", i + 1));
        }
    }
    Ok(finding.summary(format!(
        "{} consumers shared {} messages exactly once (split {})",
        logs.len(),
        confirmed_text(&ledger),
        shares.join("/")
    )))
}
