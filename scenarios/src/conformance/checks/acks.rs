//! `ack-redelivery`, `nack-requeue` and `dead-letter`: what happens to messages that are
//! not acknowledged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AckMode, Delivery, DeliveryMode, Subscription, SubscriptionSpec, TopicSpec,
};
use futures::StreamExt;

use super::{Outbox, confirmed_text, settle, volume};
use crate::conformance::ledger::Ledger;
use crate::conformance::message::{Message, MessageId};
use crate::conformance::reader::{Acking, Reader, wait_until};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, During, Finding, Stop};

/// Rounds of publishing before giving up on getting a message to the first consumer.
const ROUNDS: u32 = 5;

/// Whether the broker marked a delivery as a redelivery, by flag or attempt count.
fn marked(redelivered: bool, attempt: Option<u32>) -> bool {
    redelivered || attempt.is_some_and(|a| a > 1)
}

/// Consumers A and B share a group with manual acks. A takes some messages and
/// disconnects without acking; B (which acks everything) must then get them, marked as
/// redelivered where the broker exposes that.
pub(super) async fn ack_redelivery(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("jobs").into();
    let group = "workers";
    ctx.prepare(vec![TopicSpec::new(&*topic).group(group)])
        .await?;
    let spec = SubscriptionSpec::new(topic.clone())
        .group(group)
        .ack(AckMode::Manual);
    let a = ctx
        .backend
        .subscribe(spec.clone())
        .await
        .during("subscribing consumer A")?;
    let a = Reader::spawn(a, ctx.run, Acking::Never);
    let b = ctx
        .backend
        .subscribe(spec)
        .await
        .during("subscribing consumer B")?;
    let b = Reader::spawn(b, ctx.run, Acking::Each);
    let mut out = Outbox::open(ctx).await?;
    let per_round = p.consumers.max(2) * 4;
    for _ in 0..ROUNDS {
        out.send(&topic, per_round, (p.size, DeliveryMode::One, p.window))
            .await;
        let want = out.ledger.confirmed() as usize;
        wait_until(ctx.deadline(), || {
            let mut union = a.with_log(|l| l.distinct.clone());
            b.with_log(|l| union.extend(l.distinct.iter().copied()));
            union.len() >= want
        })
        .await;
        if a.distinct() > 0 {
            break;
        }
    }
    // A leaves without acking what it holds: its subscription (and connection) is dropped.
    let a_log = a.finish().await;
    let dropped_at = Instant::now();
    let ledger = out.ledger;
    let held: BTreeSet<MessageId> = a_log.distinct.iter().copied().collect();
    if held.is_empty() {
        b.finish().await;
        return Err(Stop::Broken(format!(
            "consumer A got none of {} messages in {ROUNDS} rounds: nothing to redeliver",
            ledger.published()
        )));
    }
    let want = ledger.confirmed() as usize;
    let deadline = Instant::now() + p.redelivery_timeout;
    wait_until(deadline, || {
        b.with_log(|l| held.iter().all(|id| l.distinct.contains(id))) && b.distinct() >= want
    })
    .await;
    settle(ctx).await;
    let b_log = b.finish().await;

    let t = tally(&ledger, &b_log.received, |_| true, Order::Ignore);
    let mut redelivered = 0u64;
    let mut unmarked = 0u64;
    let mut wrongly_first = 0u64;
    let mut slowest = Duration::ZERO;
    for r in &b_log.received {
        let Some(id) = r.id(ctx.run) else { continue };
        if !held.contains(&id) {
            continue;
        }
        redelivered += 1;
        slowest = slowest.max(r.at.saturating_duration_since(dropped_at));
        if !marked(r.redelivered, r.attempt) {
            unmarked += 1;
            if r.attempt == Some(1) {
                wrongly_first += 1;
            }
        }
    }
    let mut counts = t.counts.clone();
    counts.delivered += a_log.received.len() as u64;
    volume(&mut counts, &ledger);
    counts.detail("held_by_the_consumer_that_left", held.len() as u64);
    counts.detail("redelivered_to_the_other", redelivered);
    counts.detail("redeliveries_unmarked", unmarked);
    counts.detail("slowest_redelivery_ms", slowest.as_millis() as u64);
    let mut finding = Finding::new(counts);
    let missing: Vec<MessageId> = held
        .iter()
        .filter(|id| !b_log.distinct.contains(id))
        .copied()
        .collect();
    if !missing.is_empty() {
        finding.fail(format!(
            "{} of the {} messages A held unacked never reached B within {} ({})",
            missing.len(),
            held.len(),
            humantime::format_duration(p.redelivery_timeout),
            sample(&missing)
        ));
    }
    let others = t.counts.lost.saturating_sub(missing.len() as u64);
    if others > 0 {
        finding.fail(format!(
            "{others} confirmed messages A never held reached no consumer either"
        ));
    }
    if t.counts.phantom > 0 {
        finding.fail(format!(
            "{} deliveries were never published or corrupted",
            t.counts.phantom
        ));
    }
    if wrongly_first > 0 {
        finding.fail(format!(
            "{wrongly_first} redeliveries carried attempt 1, as if delivered for the first time"
        ));
    }
    let marking = if unmarked == 0 {
        "all marked redelivered".to_owned()
    } else {
        format!("{unmarked} not marked (the broker does not say)")
    };
    Ok(finding.summary(format!(
        "A left holding {} unacked messages; B got them within {} ms, {marking}; {}",
        held.len(),
        slowest.as_millis(),
        confirmed_text(&ledger)
    )))
}

/// A consumer of `group` with manual acks, and one message published to `topic` for it
/// (confirmed): its id and the ledger.
async fn one_job(
    ctx: &Ctx<'_>,
    topic: &Arc<str>,
    group: &str,
) -> Result<(Subscription, MessageId, Ledger), Stop> {
    let spec = SubscriptionSpec::new(topic.clone())
        .group(group)
        .ack(AckMode::Manual);
    let sub = ctx
        .backend
        .subscribe(spec)
        .await
        .during("subscribing the consumer")?;
    let mut out = Outbox::open(ctx).await?;
    let id = out
        .send_one(topic, ctx.params.size, DeliveryMode::One)
        .await?;
    Ok((sub, id, out.ledger))
}

/// Whether `delivery` is, intact, message `id` of run `run`.
fn is_message(delivery: &Delivery, run: u32, id: MessageId) -> bool {
    Message::decode(&delivery.payload).is_ok_and(|m| m.run == run && m.id == id)
}

/// The next delivery of `sub` within `patience`: `Ok(None)` when nothing came,
/// `Err(reason)` when the stream failed or ended.
async fn next_within(
    sub: &mut Subscription,
    patience: Duration,
) -> Result<Option<Delivery>, String> {
    match tokio::time::timeout(patience, sub.next()).await {
        Err(_) => Ok(None),
        Ok(Some(Ok(d))) => Ok(Some(d)),
        Ok(Some(Err(e))) => Err(format!("the subscription failed: {e}")),
        Ok(None) => Err("the subscription ended".to_owned()),
    }
}

/// One consumer nacks the same message `nack_attempts` times, then acks it: each time it
/// must come back within `nack_within`, with a growing attempt count where the broker
/// exposes one, and not again after the ack.
pub(super) async fn nack_requeue(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("retry").into();
    let group = "workers";
    ctx.prepare(vec![TopicSpec::new(&*topic).group(group)])
        .await?;
    let (mut sub, id, ledger) = one_job(ctx, &topic, group).await?;
    let mut finding = Finding::new(Default::default());
    let mut attempts: Vec<Option<u32>> = Vec::new();
    let mut unmarked = 0u64;
    let mut slowest = Duration::ZERO;
    let mut foreign = 0u64;
    let mut nacked_at = Instant::now();
    let total = p.nack_attempts + 1;
    while attempts.len() < total as usize {
        let first = attempts.is_empty();
        let patience = if first { p.timeout } else { p.nack_within };
        let delivery = match next_within(&mut sub, patience).await {
            Ok(Some(d)) => d,
            Ok(None) if first => {
                finding.fail(format!(
                    "the message was not delivered within {}",
                    humantime::format_duration(patience)
                ));
                break;
            }
            Ok(None) => {
                finding.fail(format!(
                    "after nack {} the message did not come back within {}",
                    attempts.len(),
                    humantime::format_duration(patience)
                ));
                finding.counts.lost += 1;
                break;
            }
            Err(reason) => {
                finding.fail(reason);
                break;
            }
        };
        if !is_message(&delivery, ctx.run, id) {
            foreign += 1;
            continue;
        }
        if !first {
            slowest = slowest.max(nacked_at.elapsed());
            if !marked(delivery.redelivered, delivery.attempt) {
                unmarked += 1;
            }
        }
        attempts.push(delivery.attempt);
        if attempts.len() < total as usize {
            sub.nack(&delivery).await.during("nacking")?;
            nacked_at = Instant::now();
        } else {
            sub.ack(&delivery).await.during("acking")?;
        }
    }
    // After the ack it must not come back.
    let mut after_ack = 0u64;
    if finding.failures.is_empty() {
        let quiet_until = Instant::now() + p.settle.max(p.nack_within);
        while let Ok(Some(d)) = next_within(
            &mut sub,
            quiet_until.saturating_duration_since(Instant::now()),
        )
        .await
        {
            if is_message(&d, ctx.run, id) {
                after_ack += 1;
            } else {
                foreign += 1;
            }
        }
    }
    drop(sub);
    // The first delivery may carry no attempt count (the reference protocol marks only
    // redeliveries); where redeliveries carry one, it must grow from delivery to delivery.
    let exposed: Vec<u32> = attempts
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.or((i == 0 && attempts.len() > 1 && attempts[1].is_some()).then_some(1))
        })
        .collect();
    let growing = exposed.windows(2).all(|w| w[1] > w[0]);
    if !exposed.is_empty() && (!growing || exposed.len() != attempts.len()) {
        finding.fail(format!(
            "the attempt count did not grow with each redelivery: {attempts:?}"
        ));
    }
    if after_ack > 0 {
        finding.fail(format!(
            "the message came back {after_ack} times after it was acked"
        ));
    }
    if foreign > 0 {
        finding.fail(format!(
            "{foreign} deliveries were never published or corrupted"
        ));
    }
    let counts = &mut finding.counts;
    volume(counts, &ledger);
    counts.delivered = attempts.len() as u64 + after_ack + foreign;
    counts.duplicated += after_ack;
    counts.phantom += foreign;
    counts.detail("nacks", attempts.len().saturating_sub(1) as u64);
    counts.detail("redeliveries_unmarked", unmarked);
    counts.detail("slowest_redelivery_ms", slowest.as_millis() as u64);
    let attempt_text = if exposed.is_empty() {
        "the broker exposes no attempt count".to_owned()
    } else {
        format!(
            "attempts {}",
            exposed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let n = p.nack_attempts;
    Ok(finding.summary(format!(
        "nacked {n} times, back each time within {} ms ({attempt_text}), gone after the ack",
        slowest.as_millis()
    )))
}

/// A topic with a dead-letter destination; its one consumer nacks every delivery. The
/// message must land once in the dead-letter destination with its payload intact, after
/// exactly `dead_letter_attempts` deliveries, and stop coming back to the consumer.
pub(super) async fn dead_letter(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("poison").into();
    let group = "workers";
    ctx.prepare(vec![TopicSpec::new(&*topic).group(group).dead_letter(true)])
        .await?;
    let Some(dead_topic) = ctx.backend.dead_letter_topic(&topic) else {
        return Err(Stop::Unsupported(format!(
            "the {} adapter names no dead-letter destination to read",
            ctx.backend.kind()
        )));
    };
    let dead = ctx
        .backend
        .subscribe(SubscriptionSpec::new(dead_topic.as_str()))
        .await
        .during("subscribing to the dead-letter destination")?;
    let dead = Reader::spawn(dead, ctx.run, Acking::Never);
    let (mut sub, id, ledger) = one_job(ctx, &topic, group).await?;

    // Nack every delivery until the message shows up in the dead-letter destination.
    let deadline = Instant::now() + p.redelivery_timeout;
    let mut attempts = 0u64;
    let mut foreign = 0u64;
    let mut failure = None;
    let mut dead_at = None;
    while Instant::now() < deadline {
        if dead.has(&id) {
            dead_at = Some(Instant::now());
            break;
        }
        match next_within(&mut sub, Duration::from_millis(50)).await {
            Ok(Some(d)) => {
                if is_message(&d, ctx.run, id) {
                    attempts += 1;
                    sub.nack(&d).await.during("nacking")?;
                } else {
                    foreign += 1;
                }
            }
            Ok(None) => {}
            Err(reason) => {
                failure = Some(reason);
                break;
            }
        }
    }
    // Once dead-lettered it must stop coming back.
    let mut after = 0u64;
    if dead_at.is_some() {
        let quiet_until = Instant::now() + p.grace.max(p.settle);
        while let Ok(Some(d)) = next_within(
            &mut sub,
            quiet_until.saturating_duration_since(Instant::now()),
        )
        .await
        {
            if is_message(&d, ctx.run, id) {
                after += 1;
                let _ = sub.nack(&d).await;
            } else {
                foreign += 1;
            }
        }
    }
    settle(ctx).await;
    drop(sub);
    let dead_log = dead.finish().await;
    let t = tally(&ledger, &dead_log.received, |_| true, Order::Ignore);
    let mut counts = t.counts;
    volume(&mut counts, &ledger);
    counts.delivered += attempts + after + foreign;
    counts.phantom += foreign;
    counts.late += after;
    counts.detail("attempts_before_dead_letter", attempts);
    let mut finding = Finding::new(counts);
    if let Some(reason) = failure {
        finding.fail(reason);
    }
    let configured = u64::from(p.dead_letter_attempts);
    if dead_at.is_some() && attempts != configured {
        finding.fail(format!(
            "dead-lettered after {attempts} deliveries, where {configured} are configured"
        ));
    }
    if dead_at.is_none() {
        finding.fail(format!(
            "after {attempts} nacked deliveries the message was not in the dead-letter destination {dead_topic} within {}",
            humantime::format_duration(p.redelivery_timeout)
        ));
    }
    let c = finding.counts.clone();
    if c.duplicated > 0 {
        let what = format!("the dead letter arrived {} times", c.duplicated + 1);
        finding.fail(what);
    }
    if c.phantom > 0 {
        let what = format!(
            "{} deliveries were corrupted or never published (payload not intact)",
            c.phantom
        );
        finding.fail(what);
    }
    if after > 0 {
        finding.fail(format!(
            "the consumer still got it {after} times after it was dead-lettered"
        ));
    }
    Ok(finding.summary(format!(
        "dead-lettered to {dead_topic} after {attempts} nacked deliveries (as configured), once, payload intact"
    )))
}
