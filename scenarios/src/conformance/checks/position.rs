//! `late-replay`, `live-only` and `unsubscribe`: where a subscription starts and stops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use brokerbench_adapters::{Capability, DeliveryMode, StartPosition, SubscriptionSpec, TopicSpec};
use brokerbench_results::Counts;

use super::{Outbox, all_have, confirmed_text, readers, settle, together_have, volume};
use crate::conformance::message::MessageId;
use crate::conformance::reader::{Acking, Reader, finish_all, wait_until};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, During, Finding, Stop};

/// Publish M retained messages, then subscribe from the beginning, and after the sequences
/// of the messages a quarter, half and three quarters of the way: each late subscriber
/// gets what it asked for, in order, none missing, and then the live message published
/// after it joined. (Three starting points, so that a broker that mishandles a start in
/// the middle of what it stored together cannot pass by luck of where its batches end.)
pub(super) async fn late_replay(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("history").into();
    // One partition: a sequence (a Kafka offset) then names one place in the topic.
    ctx.prepare(vec![TopicSpec::new(&*topic).partitions(1)])
        .await?;
    let mut out = Outbox::open(ctx).await?;
    let history_ids: BTreeSet<MessageId> = out
        .send(
            &topic,
            p.replay_messages,
            (p.size, DeliveryMode::All, p.window),
        )
        .await
        .into_iter()
        .collect();
    let confirmed = out.ledger.confirmed() as usize;

    let from_start = ctx
        .backend
        .subscribe(SubscriptionSpec::new(topic.clone()).start(StartPosition::Beginning))
        .await
        .during("subscribing from the beginning")?;
    let from_start = Reader::spawn(from_start, ctx.run, Acking::Never);
    all_have(std::slice::from_ref(&from_start), confirmed, ctx.deadline()).await;
    // The broker's sequence of each message, as the first late subscriber saw them.
    let sequences: BTreeMap<MessageId, i64> = from_start.with_log(|log| {
        log.received
            .iter()
            .filter_map(|r| Some((r.id(ctx.run)?, r.sequence?)))
            .collect()
    });
    let pivots: Vec<MessageId> = [1, 2, 3]
        .into_iter()
        .map(|quarter| MessageId {
            producer: 0,
            seq: p.replay_messages * quarter / 4,
        })
        .collect();
    let pivot_sequences: Option<Vec<i64>> =
        pivots.iter().map(|id| sequences.get(id).copied()).collect();
    let Some(pivot_sequences) = pivot_sequences else {
        let (_, log) = from_start.stop().await;
        let t = tally(&out.ledger, &log.received, |_| true, Order::Publish);
        let mut counts = t.counts;
        volume(&mut counts, &out.ledger);
        let mut finding = Finding::new(counts);
        finding.fail(if log.received.is_empty() {
            format!("a subscriber from the beginning got none of the {confirmed} retained messages")
        } else if !t.missing.is_empty() {
            format!(
                "a subscriber from the beginning got {} of {confirmed} retained messages (missing {})",
                log.distinct.len(),
                sample(&t.missing)
            )
        } else {
            "the deliveries carry no broker sequence, so a subscription after a sequence cannot be asked for".to_owned()
        });
        return Ok(finding);
    };
    // What each after-sequence subscriber is due: the history after its pivot, and
    // everything published later.
    let due_after = |pivot: i64| {
        let sequences = &sequences;
        let history_ids = &history_ids;
        move |id: &MessageId| {
            !history_ids.contains(id) || sequences.get(id).is_some_and(|s| *s > pivot)
        }
    };
    let mut after = Vec::new();
    for &pivot in &pivot_sequences {
        let sub = ctx
            .backend
            .subscribe(
                SubscriptionSpec::new(topic.clone()).start(StartPosition::AfterSequence(pivot)),
            )
            .await
            .during(&format!("subscribing after sequence {pivot}"))?;
        let want = history_ids
            .iter()
            .filter(|id| due_after(pivot)(id) && out.ledger.is_confirmed(id))
            .count();
        after.push((pivot, want, Reader::spawn(sub, ctx.run, Acking::Never)));
    }
    wait_until(ctx.deadline(), || {
        after.iter().all(|(_, want, r)| r.distinct() >= *want)
    })
    .await;

    // Then a live message: every one of them must get it after its replay.
    out.send(&topic, 1, (p.size, DeliveryMode::All, 1)).await;
    let ledger = out.ledger;
    let everything = ledger.confirmed() as usize;
    wait_until(ctx.deadline(), || {
        from_start.distinct() >= everything && after.iter().all(|(_, want, r)| r.distinct() > *want)
    })
    .await;
    settle(ctx).await;
    let mut tallies = vec![(
        "the subscriber from the beginning".to_owned(),
        tally(
            &ledger,
            &from_start.finish().await.received,
            |_| true,
            Order::Publish,
        ),
    )];
    for (pivot, _, reader) in after {
        let log = reader.finish().await;
        tallies.push((
            format!("the subscriber after sequence {pivot}"),
            tally(&ledger, &log.received, due_after(pivot), Order::Publish),
        ));
    }

    let mut counts = Counts::default();
    for (_, t) in &tallies {
        counts.add(&t.counts);
    }
    volume(&mut counts, &ledger);
    counts.detail("late_subscribers", tallies.len() as u64);
    let mut finding = Finding::new(counts);
    for (who, t) in &tallies {
        if t.lost_or_extra() || t.counts.reordered > 0 {
            finding.fail(format!("{who}: {}", t.describe()));
        }
    }
    let starts: Vec<String> = pivot_sequences.iter().map(i64::to_string).collect();
    Ok(finding.summary(format!(
        "{} retained: replayed in order from the beginning and after sequences {}, then the live one",
        confirmed_text(&ledger),
        starts.join(", ")
    )))
}

/// Publish a batch, subscribe for new messages only, publish another: the subscriber gets
/// the second batch, all of it, and nothing of the first.
pub(super) async fn live_only(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("live").into();
    ctx.prepare(vec![TopicSpec::new(&*topic).partitions(1)])
        .await?;
    let mut out = Outbox::open(ctx).await?;
    let shape = (p.size, DeliveryMode::All, p.window);
    let before_ids: BTreeSet<MessageId> = out
        .send(&topic, p.messages, shape)
        .await
        .into_iter()
        .collect();
    let readers = readers(ctx, &SubscriptionSpec::new(topic.clone()), 1, Acking::Never).await?;
    // Anything retained would come now.
    tokio::time::sleep(p.grace).await;
    out.send(&topic, p.messages, shape).await;
    let ledger = out.ledger;
    let want = ledger
        .iter()
        .filter(|(id, _)| !before_ids.contains(id) && ledger.is_confirmed(id))
        .count();
    wait_until(ctx.deadline(), || {
        readers[0].with_log(|log| {
            log.distinct
                .iter()
                .filter(|id| !before_ids.contains(id))
                .count()
        }) >= want
    })
    .await;
    settle(ctx).await;
    let log = finish_all(readers).await.remove(0);
    let t = tally(
        &ledger,
        &log.received,
        |id| !before_ids.contains(id),
        Order::Ignore,
    );
    let old = log
        .received
        .iter()
        .filter(|r| r.id(ctx.run).is_some_and(|id| before_ids.contains(&id)))
        .count();
    let mut counts = t.counts;
    volume(&mut counts, &ledger);
    counts.detail("published_before_and_delivered", old as u64);
    let mut finding = Finding::new(counts);
    if old > 0 {
        finding.fail(format!(
            "{old} of the {} messages published before it subscribed were delivered to a live-only subscriber",
            before_ids.len()
        ));
    }
    let c = finding.counts.clone();
    if c.lost > 0 || c.duplicated > 0 || c.phantom as usize > old {
        let what = format!(
            "of the messages published after it subscribed: {} (missing {})",
            c.anomaly_summary(),
            sample(&t.missing)
        );
        finding.fail(what);
    }
    Ok(finding.summary(format!(
        "none of the {} earlier messages, all {want} later ones",
        before_ids.len()
    )))
}

/// Subscribers A, B, C get a batch; A unsubscribes; after the confirmation and a grace
/// period a second batch goes out: A gets none of it, B and C get both batches whole.
/// Where the backend has consumer groups, one member of a group of two leaves as well,
/// and the other must then get every message of the group.
pub(super) async fn unsubscribe(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("leave").into();
    // The group gets a topic of its own: brokers differ in whether `all` messages reach
    // group members and `one` messages reach plain subscribers of the same topic.
    let group_topic: Arc<str> = ctx.topic("leave-group").into();
    let competing = ctx.backend.capabilities().contains(Capability::Competing);
    let group = "pair";
    let mut topics = vec![TopicSpec::new(&*topic)];
    if competing {
        topics.push(TopicSpec::new(&*group_topic).group(group));
    }
    ctx.prepare(topics).await?;
    let mut readers = readers(
        ctx,
        &SubscriptionSpec::new(topic.clone()),
        p.subscribers.max(2),
        Acking::Never,
    )
    .await?;
    let pair = if competing {
        let spec = SubscriptionSpec::new(group_topic.clone()).group(group);
        let leaving = ctx
            .backend
            .subscribe(spec.clone())
            .await
            .during("subscribing the first group member")?;
        let staying = ctx
            .backend
            .subscribe(spec)
            .await
            .during("subscribing the second group member")?;
        Some((
            Reader::spawn(leaving, ctx.run, Acking::Never),
            Reader::spawn(staying, ctx.run, Acking::Never),
        ))
    } else {
        None
    };
    let mut out = Outbox::open(ctx).await?;
    let fan_out = (p.size, DeliveryMode::All, p.window);
    let first_ids: BTreeSet<MessageId> = out
        .send(&topic, p.messages, fan_out)
        .await
        .into_iter()
        .collect();
    all_have(&readers, out.ledger.confirmed() as usize, ctx.deadline()).await;

    // A leaves.
    let leaver = readers.remove(0);
    let (subscription, before_log) = leaver.stop().await;
    let mut subscription = subscription
        .ok_or_else(|| Stop::Broken("the first subscriber's reader panicked".into()))?;
    subscription
        .unsubscribe()
        .await
        .during("unsubscribing the first subscriber")?;
    let confirmed_at = Instant::now();
    let leaver = Reader::spawn(subscription, ctx.run, Acking::Never);
    let mut group_leave = None;
    if let Some((leaving, staying)) = pair {
        let (subscription, log) = leaving.stop().await;
        let mut subscription =
            subscription.ok_or_else(|| Stop::Broken("a group member's reader panicked".into()))?;
        subscription
            .unsubscribe()
            .await
            .during("unsubscribing a group member")?;
        group_leave = Some((
            Reader::spawn(subscription, ctx.run, Acking::Never),
            log,
            staying,
        ));
    }
    tokio::time::sleep(p.grace).await;
    let quiet_from = confirmed_at + p.grace;

    let second_ids: BTreeSet<MessageId> = out
        .send(&topic, p.messages, fan_out)
        .await
        .into_iter()
        .collect();
    let mut group_ids = BTreeSet::new();
    if group_leave.is_some() {
        let shape = (p.size, DeliveryMode::One, p.window);
        group_ids = out
            .send(&group_topic, p.messages, shape)
            .await
            .into_iter()
            .collect();
    }
    let ledger = out.ledger;
    let fan_out_due = |id: &MessageId| first_ids.contains(id) || second_ids.contains(id);
    let want = ledger
        .iter()
        .filter(|(id, _)| fan_out_due(id) && ledger.is_confirmed(id))
        .count();
    let deadline = ctx.deadline();
    all_have(&readers, want, deadline).await;
    if let Some((_, _, staying)) = &group_leave {
        let want_group = group_ids
            .iter()
            .filter(|id| ledger.is_confirmed(id))
            .count();
        together_have(std::slice::from_ref(staying), want_group, deadline).await;
    }
    settle(ctx).await;

    let after_log = leaver.finish().await;
    let stayers = finish_all(readers).await;
    let mut counts = Counts::default();
    let mut finding_failures = Vec::new();
    // The leaver: what it got after leaving.
    let late = after_log
        .received
        .iter()
        .filter(|r| {
            r.at > quiet_from
                || r.id(ctx.run)
                    .is_some_and(|id| second_ids.contains(&id) || group_ids.contains(&id))
        })
        .count();
    counts.late += late as u64;
    counts.delivered += (before_log.received.len() + after_log.received.len()) as u64;
    if late > 0 {
        finding_failures.push(format!(
            "{late} deliveries reached the subscriber after its unsubscribe was confirmed (+{} grace)",
            humantime::format_duration(p.grace)
        ));
    }
    for (i, log) in stayers.iter().enumerate() {
        let t = tally(&ledger, &log.received, fan_out_due, Order::Ignore);
        if t.lost_or_extra() {
            finding_failures.push(format!(
                "subscriber {} that stayed: {}",
                i + 2,
                t.describe()
            ));
        }
        counts.add(&t.counts);
    }
    if let Some((leaving, left_log, staying)) = group_leave {
        let left_after = leaving.finish().await;
        let stayed = staying.finish().await;
        let group_late = left_after
            .received
            .iter()
            .chain(&left_log.received)
            .filter(|r| r.id(ctx.run).is_some_and(|id| group_ids.contains(&id)))
            .count();
        counts.late += group_late as u64;
        if group_late > 0 {
            finding_failures.push(format!(
                "{group_late} group messages reached the member that had left"
            ));
        }
        let t = tally(
            &ledger,
            &stayed.received,
            |id| group_ids.contains(id),
            Order::Ignore,
        );
        if t.lost_or_extra() {
            finding_failures.push(format!(
                "the group member that stayed, of the group's messages: {}",
                t.describe()
            ));
        }
        counts.add(&t.counts);
        counts.detail("group_messages", group_ids.len() as u64);
    }
    volume(&mut counts, &ledger);
    let mut finding = Finding::new(counts);
    for f in finding_failures {
        finding.fail(f);
    }
    let group_text = if group_ids.is_empty() {
        String::new()
    } else {
        "; the group member that stayed got every group message".to_owned()
    };
    Ok(finding.summary(format!(
        "nothing reached the subscriber after its unsubscribe (+{} grace); the {} others got both batches whole{group_text}",
        humantime::format_duration(p.grace),
        stayers.len()
    )))
}
