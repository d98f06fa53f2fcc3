//! `key-order` and `total-order`: in what order messages arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use brokerbench_adapters::{DeliveryMode, SubscriptionSpec, TopicSpec};

use super::{Outbox, all_have, confirmed_text, readers, settle, together_have, volume};
use crate::conformance::reader::{Acking, Received, finish_all};
use crate::conformance::tally::{Order, tally};
use crate::conformance::{Ctx, Finding, Stop};

/// K consumers in one group, messages spread over several keys by one producer: per key,
/// the first deliveries come in publish order.
pub(super) async fn key_order(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("keyed").into();
    let group = "workers";
    ctx.prepare(vec![TopicSpec::new(&*topic).group(group)])
        .await?;
    let spec = SubscriptionSpec::new(topic.clone()).group(group);
    let readers = readers(ctx, &spec, p.consumers, Acking::Never).await?;
    let keys = p.keys.clamp(1, u32::from(u16::MAX - 1));
    let mut out = Outbox::open(ctx).await?;
    out.send_keyed(
        &topic,
        p.order_messages,
        (p.size, DeliveryMode::One, p.window),
        |i| Some((i % keys) as u16),
    )
    .await;
    let ledger = out.ledger;
    together_have(&readers, ledger.confirmed() as usize, ctx.deadline()).await;
    settle(ctx).await;
    let logs = finish_all(readers).await;

    // One timeline of every consumer's deliveries, by arrival.
    let mut timeline: Vec<(usize, &Received)> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, log)| log.received.iter().map(move |r| (i, r)))
        .collect();
    timeline.sort_by_key(|(_, r)| r.at);
    let union = tally(
        &ledger,
        timeline.iter().map(|(_, r)| *r),
        |_| true,
        Order::PerKey,
    );
    // Which consumers each key reached.
    let mut owners: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for (consumer, r) in &timeline {
        if let Some(key) = r.message.as_ref().ok().and_then(|m| m.key) {
            owners.entry(key).or_default().insert(*consumer);
        }
    }
    let split = owners.values().filter(|o| o.len() > 1).count();
    let mut counts = union.counts.clone();
    volume(&mut counts, &ledger);
    counts.detail("keys", u64::from(keys));
    counts.detail("keys_split_between_consumers", split as u64);
    let mut finding = Finding::new(counts);
    let c = finding.counts.clone();
    if c.reordered > 0 {
        let what = format!(
            "{} deliveries came before an earlier message of the same key ({split} of {keys} keys reached more than one consumer)",
            c.reordered
        );
        finding.fail(what);
    }
    if union.lost_or_extra() {
        finding.fail(union.describe());
    }
    Ok(finding.summary(format!(
        "{keys} keys over {} consumers, {}: every key in publish order ({split} keys moved between consumers)",
        logs.len(),
        confirmed_text(&ledger)
    )))
}

/// One producer publishing pipelined to a one-partition topic, one subscriber: the
/// delivery order is the order the broker accepted and confirmed the publishes in.
///
/// One producer's publishes reach the broker in send order (every adapter keeps it), and
/// each of these brokers confirms one connection's publishes in the order it accepted
/// them, so the confirm order is the send order. The order in which a pipelining client
/// *observes* its confirmations is not a reliable witness: two confirmations arriving
/// together can be seen in either order, depending on which future the scheduler polls
/// first. So deliveries are judged against the send order, and the observed confirm
/// order is reported beside it (`reordered_against_observed_confirms`).
pub(super) async fn total_order(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("ordered").into();
    // Kafka orders per partition: a single partition is how Kafka gives a total order.
    ctx.prepare(vec![TopicSpec::new(&*topic).partitions(1)])
        .await?;
    let readers = readers(ctx, &SubscriptionSpec::new(topic.clone()), 1, Acking::Never).await?;
    let mut out = Outbox::open(ctx).await?;
    out.send(
        &topic,
        p.order_messages,
        (p.size, DeliveryMode::All, p.window),
    )
    .await;
    let ledger = out.ledger;
    all_have(&readers, ledger.confirmed() as usize, ctx.deadline()).await;
    settle(ctx).await;
    let logs = finish_all(readers).await;
    let log = &logs[0];
    let t = tally(&ledger, &log.received, |_| true, Order::Publish);
    let observed = tally(&ledger, &log.received, |_| true, Order::Confirm);
    let mut counts = t.counts.clone();
    volume(&mut counts, &ledger);
    counts.detail(
        "reordered_against_observed_confirms",
        observed.counts.reordered,
    );
    let mut finding = Finding::new(counts);
    let c = finding.counts.clone();
    if c.reordered > 0 {
        let what = format!(
            "{} deliveries came before a message published and confirmed earlier",
            c.reordered
        );
        finding.fail(what);
    }
    if t.lost_or_extra() {
        finding.fail(t.describe());
    }
    if let Some((err, _)) = &log.error {
        finding.fail(format!("the subscription ended with an error: {err}"));
    }
    Ok(finding.summary(format!(
        "{}, {} in flight: delivered in confirm order",
        confirmed_text(&ledger),
        p.window
    )))
}
