//! `retention-trim`: a late reader sees exactly the retained tail.

use std::collections::BTreeSet;
use std::sync::Arc;

use brokerbench_adapters::{Capability, DeliveryMode, StartPosition, SubscriptionSpec, TopicSpec};

use super::{Outbox, confirmed_text, settle, volume};
use crate::conformance::message::MessageId;
use crate::conformance::reader::{Acking, Reader, wait_until};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, During, Finding, Stop};

/// A topic limited to `retention` messages gets `retention + retention_excess`, then a late
/// reader joins: from the beginning where the backend replays, else as a consumer group
/// declared before the messages (whose queue is what the broker retains). It must get
/// exactly the last `retention` messages, in order; the older ones are trimmed, not lost.
pub(super) async fn retention_trim(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("retained").into();
    let replay = ctx.backend.capabilities().contains(Capability::Replay);
    let group = "late";
    let mut spec = TopicSpec::new(&*topic)
        .partitions(1)
        .max_messages(p.retention);
    if !replay {
        spec = spec.group(group);
    }
    ctx.prepare(vec![spec]).await?;
    let mut out = Outbox::open(ctx).await?;
    let total = (p.retention + p.retention_excess).min(u64::from(u32::MAX)) as u32;
    let mode = if replay {
        DeliveryMode::All
    } else {
        DeliveryMode::One
    };
    out.send(&topic, total, (p.size, mode, p.window)).await;
    let ledger = out.ledger;
    if ledger.confirmed() != u64::from(total) {
        return Err(Stop::Broken(format!(
            "not every message was confirmed: {}",
            confirmed_text(&ledger)
        )));
    }
    // One producer, in order: the retained tail is the last `retention` sequence numbers.
    let first_kept = total.saturating_sub(p.retention as u32);
    let tail = |id: &MessageId| id.seq >= first_kept;
    let trimmed_ids: BTreeSet<MessageId> = ledger
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !tail(id))
        .collect();

    let late = if replay {
        SubscriptionSpec::new(topic.clone()).start(StartPosition::Beginning)
    } else {
        SubscriptionSpec::new(topic.clone()).group(group)
    };
    let late = ctx
        .backend
        .subscribe(late)
        .await
        .during("subscribing the late reader")?;
    let late = Reader::spawn(late, ctx.run, Acking::Never);
    let want = p.retention as usize;
    wait_until(ctx.deadline(), || {
        late.with_log(|log| log.distinct.iter().filter(|id| tail(id)).count()) >= want
    })
    .await;
    settle(ctx).await;
    let log = late.finish().await;
    let t = tally(&ledger, &log.received, tail, Order::Publish);
    let beyond = log
        .received
        .iter()
        .filter(|r| r.id(ctx.run).is_some_and(|id| trimmed_ids.contains(&id)))
        .count() as u64;
    let mut counts = t.counts;
    volume(&mut counts, &ledger);
    // Deliveries of trimmed messages were counted phantom (not due); they are their own
    // failure here.
    counts.phantom -= beyond;
    counts.trimmed = trimmed_ids.len() as u64 - beyond;
    counts.detail("retention", p.retention);
    counts.detail("retained_beyond_the_limit", beyond);
    let mut finding = Finding::new(counts);
    if beyond > 0 {
        finding.fail(format!(
            "{beyond} of the {} oldest messages were still delivered: more than the limit of {} was retained",
            trimmed_ids.len(),
            p.retention
        ));
    }
    let c = finding.counts.clone();
    if c.lost > 0 {
        let what = format!(
            "{} of the last {} messages were missing: lost, not trimmed ({})",
            c.lost,
            p.retention,
            sample(&t.missing)
        );
        finding.fail(what);
    }
    if c.reordered + c.duplicated + c.phantom > 0 {
        let what = format!("the late reader: {}", c.anomaly_summary());
        finding.fail(what);
    }
    let how = if replay {
        "from the beginning"
    } else {
        "through a consumer group"
    };
    Ok(finding.summary(format!(
        "{total} published to a topic keeping {}: a late reader {how} got exactly the last {}, in order; {} trimmed",
        p.retention,
        p.retention,
        trimmed_ids.len()
    )))
}
