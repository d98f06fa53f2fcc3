//! A prepared run, phase by phase: subscribe, connect, start the clock, produce, drain.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AckMode, Backend, DeliveryMode, PublishRequest, StartPosition, SubscriptionSpec,
};
use brokerbench_results::{Recorder, SequenceTracker, snapshot_channel};
use bytes::Bytes;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::account::{account, expected_deliveries, fanout};
use super::collect::collect;
use super::consume::{Absence, Role, consume};
use super::produce::produce;
use super::receipts::Replier;
use super::shared::{Clock, ConsumerResult, Shared, group_name};
use super::{EngineError, Phase, RunOptions, RunOutcome};
use crate::pacer::Pacer;
use crate::plan::{Join, Plan};
use crate::timeline::Timeline;

/// Lead time between "everyone is ready" and the first due message, so every task is
/// parked on its first deadline when the clock starts.
pub(super) const START_LEAD: Duration = Duration::from_millis(50);
/// After the drain deadline, deliveries still arriving within this window are counted as
/// late rather than lost.
pub(super) const LATE_WINDOW: Duration = Duration::from_millis(250);
/// How often the drain checks whether every expected delivery has arrived.
pub(super) const DRAIN_POLL: Duration = Duration::from_millis(10);
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_prepared(
    plan: &Plan,
    backend: &Arc<dyn Backend>,
    options: &RunOptions,
    shared: &Arc<Shared>,
    topic_names: &[Arc<str>],
    inbox_topics: &[Arc<str>],
    reply_ids: &[Vec<Option<u32>>],
    started_at: OffsetDateTime,
) -> Result<RunOutcome, EngineError> {
    let (snapshots, snapshot_rx) = snapshot_channel();
    let stop_consumers = CancellationToken::new();
    let stop_inboxes = CancellationToken::new();
    // Whatever way this function returns, no task of the run outlives it.
    let _stop_consumers_on_exit = stop_consumers.clone().drop_guard();
    let _stop_inboxes_on_exit = stop_inboxes.clone().drop_guard();
    // Subscriptions and receipt senders may have a path of their own to the broker.
    let subscribers: Arc<dyn Backend> = options
        .faults
        .as_ref()
        .and_then(|h| h.subscriber_backend.clone())
        .unwrap_or_else(|| backend.clone());

    // 1. Subscribers that are there from the start: ready before the clock starts.
    let mut start_subs = Vec::new();
    for (ti, topic) in plan.topics.iter().enumerate() {
        for (si, sub) in topic.subscribers.iter().enumerate() {
            if matches!(sub.join, Join::AtStart | Join::Returning { .. }) {
                let spec = subscription_spec(
                    &topic_names[ti],
                    topic.delivery,
                    &topic.name,
                    sub.ack,
                    StartPosition::Latest,
                );
                start_subs.push((ti, si, spec));
            }
        }
    }
    let ready = futures::future::join_all(
        start_subs
            .iter()
            .map(|(_, _, spec)| subscribers.subscribe(spec.clone())),
    )
    .await;
    let mut consumers = Vec::new();
    for ((ti, si, spec), subscription) in start_subs.iter().zip(ready) {
        let subscription = subscription?;
        let sub = &plan.topics[*ti].subscribers[*si];
        let absence = match sub.join {
            Join::Returning {
                offline_after,
                rejoin_after,
            } => Some(Absence {
                offline_after,
                rejoin_after,
                backend: subscribers.clone(),
                spec: spec.clone(),
            }),
            _ => None,
        };
        let replier = match (sub.reply, reply_ids[*ti][*si]) {
            (Some(plan), Some(id)) => Some(Replier::new(plan, id, subscribers.producer().await?)),
            _ => None,
        };
        let role = Role {
            ack: sub.ack,
            replier,
            first_eligible: Vec::new(),
            absence,
            resubscribe: Some((subscribers.clone(), spec.clone())),
        };
        consumers.push(tokio::spawn(consume(
            shared.clone(),
            *ti,
            subscription,
            role,
            Recorder::new(snapshots.clone()),
            stop_consumers.clone(),
        )));
    }
    let mut inbox_consumers = Vec::new();
    for (k, name) in inbox_topics.iter().enumerate() {
        let spec = SubscriptionSpec::new(name.clone());
        let subscription = subscribers.subscribe(spec.clone()).await?;
        inbox_consumers.push(tokio::spawn(consume(
            shared.clone(),
            plan.topics.len() + k,
            subscription,
            Role {
                resubscribe: Some((subscribers.clone(), spec)),
                ..Role::default()
            },
            Recorder::new(snapshots.clone()),
            stop_inboxes.clone(),
        )));
    }

    // 2. Producers, connected.
    let mut producer_plans = Vec::new();
    for (ti, topic) in plan.topics.iter().enumerate() {
        for p in &topic.producers {
            producer_plans.push((ti, p));
        }
    }
    let connections =
        futures::future::join_all(producer_plans.iter().map(|_| backend.producer())).await;
    let mut producer_handles = Vec::new();
    for connection in connections {
        producer_handles.push(connection?);
    }

    // 3. The clock starts.
    let pacer = Arc::new(Pacer::start()?);
    let start = crate::start::clock_start(options.start_at, plan.warmup, START_LEAD)?;
    let epoch = start.epoch;
    let send_end = epoch + plan.warmup + plan.duration;
    let clock = Clock {
        epoch,
        warmup_ns: plan.warmup.as_nanos() as u64,
        deadline: send_end + plan.drain,
    };
    let _ = shared.clock.set(clock);
    shared.started.cancel();
    if let Some(hooks) = &options.faults {
        hooks.measure_start.send_replace(Some(epoch + plan.warmup));
    }

    let stop_producers = options.cancel.child_token();
    let mut producer_tasks = Vec::new();
    for (id, ((ti, p), handle)) in producer_plans.iter().zip(producer_handles).enumerate() {
        let topic = &plan.topics[*ti];
        let template = PublishRequest::new(topic_names[*ti].clone(), Bytes::new())
            .delivery(topic.delivery)
            .cache(topic.cache);
        producer_tasks.push(tokio::spawn(produce(
            shared.clone(),
            id as u32,
            (backend.clone(), handle),
            template,
            (*p).clone(),
            pacer.clone(),
            Recorder::new(snapshots.clone()),
            stop_producers.clone(),
        )));
    }
    // Late subscribers join on their own schedule.
    for (ti, topic) in plan.topics.iter().enumerate() {
        for (si, sub) in topic.subscribers.iter().enumerate() {
            if let Join::Late { after, from } = sub.join {
                let spec =
                    subscription_spec(&topic_names[ti], topic.delivery, &topic.name, sub.ack, from);
                let backend = subscribers.clone();
                let shared = shared.clone();
                let recorder = Recorder::new(snapshots.clone());
                let stop = stop_consumers.clone();
                let reply = sub.reply.zip(reply_ids[ti][si]);
                let ack = sub.ack;
                consumers.push(tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep_until((epoch + after).into()) => {}
                        _ = stop.cancelled() => return not_joined(ti),
                    }
                    let subscription = match backend.subscribe(spec.clone()).await {
                        Ok(s) => s,
                        Err(err) => {
                            let mut result = not_joined(ti);
                            result.error = Some(format!("late subscriber could not join: {err}"));
                            return result;
                        }
                    };
                    // Eligible for everything its topic's producers send from now on.
                    let mut first = vec![0; shared.producers.len()];
                    for &id in &shared.topic_producers[ti] {
                        first[id as usize] = shared.producers[id as usize]
                            .next_seq
                            .load(Ordering::Acquire);
                    }
                    let replier = match reply {
                        Some((plan, id)) => match backend.producer().await {
                            Ok(p) => Some(Replier::new(plan, id, p)),
                            Err(_) => None,
                        },
                        None => None,
                    };
                    let role = Role {
                        ack,
                        replier,
                        first_eligible: first,
                        absence: None,
                        resubscribe: Some((backend.clone(), spec)),
                    };
                    consume(shared, ti, subscription, role, recorder, stop).await
                }));
            }
        }
    }

    // 4. The collector: merges intervals, samples the broker, updates progress.
    drop(snapshots);
    let collector_task = tokio::spawn(collect(
        shared.clone(),
        snapshot_rx,
        options.broker_pid,
        options.progress.clone(),
        clock,
        plan.warmup + plan.duration,
        plan.clone(),
    ));

    // 5. Wait for the producers (or Ctrl-C).
    let mut partial = None;
    let mut producer_results = Vec::new();
    for task in producer_tasks {
        if let Ok(result) = task.await {
            producer_results.push(result);
        }
    }
    if options.cancel.is_cancelled() {
        partial = Some("interrupted before the end of the run".to_string());
    }
    set_phase(options, Phase::Drain);

    // 6. Drain: until every expected delivery arrived, or the deadline.
    let deadline = if partial.is_some() {
        Instant::now() + Duration::from_millis(500).min(plan.drain)
    } else {
        clock.deadline
    };
    let expected = expected_deliveries(plan, shared);
    while Instant::now() < deadline && !options.cancel.is_cancelled() {
        let done = expected
            .iter()
            .enumerate()
            .all(|(ti, want)| shared.live.delivered_per_topic[ti].load(Ordering::Relaxed) >= *want);
        if done {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // Deliveries arriving a little after the deadline are late, not lost.
    tokio::time::sleep(if Instant::now() >= deadline {
        LATE_WINDOW
    } else {
        Duration::ZERO
    })
    .await;
    stop_consumers.cancel();
    let mut results = Vec::new();
    for task in consumers {
        if let Ok(result) = task.await {
            results.push(result);
        }
    }
    // Receipts sent during the drain still need to reach their inboxes.
    let receipts_confirmed: u64 = results
        .iter()
        .filter_map(|r| r.receipts.as_ref())
        .map(|r| r.confirmed.len())
        .sum();
    let inbox_deadline = Instant::now().max(deadline) + Duration::from_millis(500);
    while !inbox_topics.is_empty() && Instant::now() < inbox_deadline {
        let got: u64 = (plan.topics.len()..plan.topics.len() + inbox_topics.len())
            .map(|ti| shared.live.delivered_per_topic[ti].load(Ordering::Relaxed))
            .sum();
        if got >= receipts_confirmed {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    stop_inboxes.cancel();
    for task in inbox_consumers {
        if let Ok(result) = task.await {
            results.push(result);
        }
    }
    drop(pacer);

    // 7. Lost, duplicated across competing consumers, recovered.
    let mut collector = match collector_task.await {
        Ok(collector) => collector,
        Err(err) => return Err(EngineError::Plan(format!("collector task failed: {err}"))),
    };
    let mut all_producer_results = producer_results;
    for r in &mut results {
        if let Some(receipts) = r.receipts.take() {
            all_producer_results.push(receipts);
        }
    }
    let mut notes = Vec::new();
    let (recovered, replayed) = account(
        plan,
        shared,
        &all_producer_results,
        &results,
        inbox_topics,
        &mut collector,
        &mut notes,
    );
    for r in &results {
        notes.extend(r.notes.iter().cloned());
        if let Some(err) = &r.error {
            notes.push(err.clone());
        }
    }
    let timeline = shared.record_timeline.then(|| {
        let measured_ns = plan.duration.as_nanos() as u64;
        Timeline {
            publishes: all_producer_results
                .iter_mut()
                .filter_map(|p| p.events.take())
                .flatten()
                .collect(),
            deliveries: results
                .iter_mut()
                .flat_map(|r| std::mem::take(&mut r.events))
                .collect(),
            fanout: fanout(plan, shared),
            measured_ns,
            observed_until_ns: measured_ns + plan.drain.as_nanos() as u64,
        }
    });
    // Under faults a subscription that could not be re-established is a measured
    // outcome (deliveries due and missing), not a broken run.
    if partial.is_none() && options.faults.is_none() {
        if let Some(err) = results.iter().find_map(|r| r.error.as_ref()) {
            if err.contains("closed") || err.contains("lost") || err.contains("connection") {
                partial = Some(format!("a subscription ended early: {err}"));
            }
        }
    }
    set_phase(options, Phase::Done);
    let figures = collector.finish(plan.duration)?;
    Ok(RunOutcome {
        figures,
        started_at,
        ended_at: OffsetDateTime::now_utc(),
        measured_from: start.measured_from,
        slack: start.slack,
        partial,
        notes,
        replayed,
        recovered,
        timeline,
    })
}

pub(super) fn not_joined(topic: usize) -> ConsumerResult {
    ConsumerResult {
        topic,
        tracker: SequenceTracker::new(),
        first_eligible: Vec::new(),
        replayed: 0,
        error: None,
        joined: false,
        receipts: None,
        events: Vec::new(),
        notes: Vec::new(),
    }
}

pub(super) fn set_phase(options: &RunOptions, phase: Phase) {
    if let Some(progress) = &options.progress {
        progress.send_modify(|p| p.phase = phase);
    }
}

pub(super) fn subscription_spec(
    name: &Arc<str>,
    delivery: DeliveryMode,
    scenario_name: &str,
    ack: bool,
    start: StartPosition,
) -> SubscriptionSpec {
    let mut spec = SubscriptionSpec::new(name.clone()).start(start);
    if delivery == DeliveryMode::One {
        spec = spec.group(group_name(scenario_name));
    }
    if ack {
        spec = spec.ack(AckMode::Manual);
    }
    spec
}
