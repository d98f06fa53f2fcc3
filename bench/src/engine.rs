//! Runs a [`Plan`] against a backend and measures it.
//!
//! Order of events: every start-time subscriber is subscribed and ready, every producer
//! connected; then the clock starts. Producers follow their open-loop schedules through a
//! warm-up (not recorded) and the measured phase; then the run drains until every
//! confirmed message reached every eligible subscriber or the drain deadline passes.
//! Each task records into its own [`Recorder`]; the collector task merges the 1-second
//! intervals and samples the broker's CPU and memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AckMode, AdapterError, Backend, Capabilities, Capability, Delivery, DeliveryMode, Producer,
    PublishOutcome, PublishRequest, RunTopology, StartPosition, Subscription, SubscriptionSpec,
    TopicSpec,
};
use brokerbench_results::recorder::interval_of;
use brokerbench_results::sequence::Delivery as SeqDelivery;
use brokerbench_results::{
    Collector, CollectorError, IntervalSnapshot, LatencySet, Recorder, RunFigures, SequenceSet,
    SequenceTracker, snapshot_channel,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::envelope::{Envelope, HEADER_LEN};
use crate::pacer::Pacer;
use crate::plan::{Join, Plan, ReplyPlan};
use crate::resilience::{Reconnect, bounded, resubscribe_until};
use crate::resources::ProcessSampler;
use crate::schedule::Schedule;
use crate::timeline::{Arrival, DeliveryEvent, FaultHooks, PublishEvent, Settle, Timeline};

/// Lead time between "everyone is ready" and the first due message, so every task is
/// parked on its first deadline when the clock starts.
const START_LEAD: Duration = Duration::from_millis(50);
/// After the drain deadline, deliveries still arriving within this window are counted as
/// late rather than lost.
const LATE_WINDOW: Duration = Duration::from_millis(250);
/// How often the drain checks whether every expected delivery has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Tasks publish their counts for the progress display every this many events (and at
/// least every [`PROGRESS_EVERY`]).
const PROGRESS_BATCH: u64 = 256;
/// Longest a task keeps its progress counts to itself.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Counts a task has not yet added to the shared progress counters.
#[derive(Debug)]
struct ProgressCount {
    count: u64,
    due: Instant,
}

impl ProgressCount {
    fn new() -> Self {
        Self {
            count: 0,
            due: Instant::now() + PROGRESS_EVERY,
        }
    }

    /// Counts one event, publishing the tally every so often.
    fn add(&mut self, shared: &AtomicU64, now: Instant) {
        self.count += 1;
        if self.count >= PROGRESS_BATCH || now >= self.due {
            self.flush(shared);
            self.due = now + PROGRESS_EVERY;
        }
    }

    fn flush(&mut self, shared: &AtomicU64) {
        shared.fetch_add(std::mem::take(&mut self.count), Ordering::Relaxed);
    }
}

/// What can stop a run before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The backend cannot do what the plan needs, or refused the set-up.
    #[error(transparent)]
    Backend(#[from] AdapterError),
    /// The plan itself is unusable.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// The figures could not be computed.
    #[error("cannot compute the run's figures: {0}")]
    Figures(#[from] CollectorError),
    /// The pacer thread could not start.
    #[error("cannot start the pacer thread: {0}")]
    Pacer(#[from] std::io::Error),
    /// Set-up ended too late for the start instant (`RunOptions::start_at`).
    #[error(transparent)]
    NotReady(#[from] crate::start::NotReady),
}

/// Phase of a run, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Subscribing and connecting.
    #[default]
    Setup,
    /// Load is running but not recorded.
    Warmup,
    /// The measured phase.
    Measure,
    /// Waiting for the last deliveries.
    Drain,
    /// Finished.
    Done,
}

/// A live view of a run, updated about once a second.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Time since the clock started (warm-up included).
    pub elapsed: Duration,
    /// Length of warm-up plus measured phase.
    pub total: Duration,
    /// Publishes confirmed so far.
    pub published: u64,
    /// Deliveries so far.
    pub delivered: u64,
    /// Failed or unanswered publishes, phantom deliveries and subscription errors.
    pub errors: u64,
    /// Publishes confirmed per second over the last second.
    pub publish_rate: f64,
    /// Offered rate now.
    pub offered_rate: f64,
    /// p99 end-to-end latency of the latest complete interval, in µs.
    pub p99_us: Option<f64>,
}

/// Settings of one run besides the plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The broker's process on this machine, for CPU and memory figures.
    pub broker_pid: Option<u32>,
    /// Cancelling stops the run early; the outcome is then marked partial.
    pub cancel: CancellationToken,
    /// Receives progress updates.
    pub progress: Option<watch::Sender<Progress>>,
    /// Wall-clock instant at which the measured phase must begin (the warm-up starts
    /// that much earlier); `None` to start as soon as set-up is done.
    pub start_at: Option<std::time::SystemTime>,
    /// Set for a run with faults: subscribers' own backend, the measured phase's start,
    /// and a [`Timeline`] of every publish and delivery in the outcome.
    pub faults: Option<FaultHooks>,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// The figures, per interval and for the run.
    pub figures: RunFigures,
    /// Wall-clock time the run started (set-up included), in UTC.
    pub started_at: OffsetDateTime,
    /// Wall-clock end, in UTC.
    pub ended_at: OffsetDateTime,
    /// Wall-clock start of the measured phase, in UTC.
    pub measured_from: OffsetDateTime,
    /// With `start_at`: the time left between the end of set-up and the warm-up.
    pub slack: Option<Duration>,
    /// Why the run is incomplete, when it is.
    pub partial: Option<String>,
    /// Things a reader of the record should know (subscription errors, ...).
    pub notes: Vec<String>,
    /// Messages from before a late subscriber joined that it received by replay.
    pub replayed: u64,
    /// Publishes without a confirmation that were delivered all the same.
    pub recovered: u64,
    /// Every measured publish and delivery, for a run with faults.
    pub timeline: Option<Timeline>,
}

/// The capabilities a plan needs from a backend.
pub fn required_capabilities(plan: &Plan) -> Capabilities {
    let mut needed = Capabilities::NONE;
    for topic in &plan.topics {
        needed.insert(match topic.delivery {
            DeliveryMode::All => Capability::FanOut,
            DeliveryMode::One => Capability::Competing,
        });
        for sub in &topic.subscribers {
            if sub.ack {
                needed.insert(Capability::AckRedelivery);
            }
            match sub.join {
                Join::Late { from, .. } => needed.insert(match from {
                    StartPosition::Latest => Capability::LiveOnly,
                    _ => Capability::Replay,
                }),
                // Comes back after the last sequence it saw: the broker must replay.
                Join::Returning { .. } => needed.insert(Capability::Replay),
                Join::AtStart => {}
            }
        }
    }
    needed
}

/// Who sent what: one entry per producer id.
#[derive(Debug)]
struct ProducerInfo {
    /// Index of the topic it publishes to; `None` for receipt producers (any inbox).
    topic: Option<usize>,
    /// Next sequence number it will use (read by late subscribers when they join).
    next_seq: AtomicU64,
    /// Confirmed publishes of the measured phase.
    confirmed: AtomicU64,
    /// The schedule, for attributing lost messages to intervals.
    schedule: Option<Schedule>,
}

/// Counters for the progress display, shared by every task.
#[derive(Debug, Default)]
struct Live {
    published: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Measured first deliveries per topic, for the drain's completion check.
    delivered_per_topic: Vec<AtomicU64>,
}

/// The run's clock: the epoch is the start of the warm-up.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
    warmup_ns: u64,
    /// Deliveries after this are late.
    deadline: Instant,
}

impl Clock {
    /// ns since the epoch.
    fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// ns on the recorder clock (since the start of the measured phase); `None` during
    /// the warm-up.
    fn measured(&self, at: Instant) -> Option<u64> {
        self.since_epoch(at).checked_sub(self.warmup_ns)
    }
}

/// Everything a task needs, shared.
struct Shared {
    run_tag: u32,
    producers: Vec<ProducerInfo>,
    live: Live,
    /// Set once when the clock starts; read lock-free on every delivery.
    clock: OnceLock<Clock>,
    max_in_flight: usize,
    /// Inbox topic per original producer id (receipts); empty when no receipts.
    inboxes: Vec<Option<Arc<str>>>,
    /// Cancelled (that is, fired) once the clock has started.
    started: CancellationToken,
    /// Topics of the plan; receipt inboxes come after them.
    scheduled_topics: usize,
    /// Producer ids of each topic of the plan.
    topic_producers: Vec<Vec<u32>>,
    /// Keep every measured publish and delivery (a run with faults).
    record_timeline: bool,
    /// A publish without an outcome after this long counts as unknown.
    publish_deadline: Option<Duration>,
}

impl Shared {
    fn clock(&self) -> Clock {
        self.clock.get().copied().unwrap_or_else(|| Clock {
            epoch: Instant::now(),
            warmup_ns: 0,
            deadline: Instant::now() + Duration::from_secs(3600),
        })
    }
}

/// What a subscriber task hands back.
struct ConsumerResult {
    topic: usize,
    tracker: SequenceTracker,
    /// First sequence it was eligible for, per producer id.
    first_eligible: Vec<u64>,
    replayed: u64,
    error: Option<String>,
    joined: bool,
    receipts: Option<ProducerResult>,
    /// Its deliveries, for the timeline.
    events: Vec<DeliveryEvent>,
    /// What happened to it on the way (re-established subscriptions).
    notes: Vec<String>,
}

/// What a producer task hands back.
struct ProducerResult {
    id: u32,
    confirmed: SequenceSet,
    /// Sequences whose outcome was failed or unknown (delivered anyway = recovered).
    unconfirmed: SequenceSet,
    /// Its publishes, for the timeline (scheduled producers of a run with faults).
    events: Option<Vec<PublishEvent>>,
}

/// Runs `plan` on `backend`.
///
/// # Errors
///
/// [`EngineError`] when the run cannot start: a capability the backend lacks, a
/// subscription or connection that fails during set-up. Failures after the clock started
/// do not abort the run: they are counted and the outcome says what happened.
pub async fn run(
    plan: &Plan,
    backend: Arc<dyn Backend>,
    options: RunOptions,
) -> Result<RunOutcome, EngineError> {
    if plan.topics.is_empty() {
        return Err(EngineError::Plan("the plan has no topics".into()));
    }
    backend
        .capabilities()
        .require(backend.kind(), required_capabilities(plan), "this scenario")?;
    let started_at = OffsetDateTime::now_utc();
    let run_tag = run_tag(&plan.run_id);

    // Names, producer ids and receipt inboxes.
    let topic_names: Vec<Arc<str>> = plan
        .topics
        .iter()
        .map(|t| Arc::from(backend.topic_name(&plan.run_id, &t.name)))
        .collect();
    let mut producers = Vec::new();
    let mut inboxes = Vec::new();
    for (ti, topic) in plan.topics.iter().enumerate() {
        let wants_receipts = topic.subscribers.iter().any(|s| s.reply.is_some());
        for p in &topic.producers {
            let id = producers.len();
            producers.push(ProducerInfo {
                topic: Some(ti),
                next_seq: AtomicU64::new(0),
                confirmed: AtomicU64::new(0),
                schedule: Some(Schedule::with_phase(
                    &p.rate,
                    plan.warmup,
                    plan.duration,
                    p.burst,
                    p.phase,
                )),
            });
            inboxes.push(
                wants_receipts
                    .then(|| Arc::from(backend.topic_name(&plan.run_id, &format!("inbox.{id}")))),
            );
        }
    }
    // Receipt producers: one per replying subscriber, ids after the scheduled ones.
    let mut reply_ids = Vec::new();
    for topic in &plan.topics {
        let mut ids = Vec::new();
        for sub in &topic.subscribers {
            ids.push(sub.reply.map(|_| {
                let id = producers.len() as u32;
                producers.push(ProducerInfo {
                    topic: None,
                    next_seq: AtomicU64::new(0),
                    confirmed: AtomicU64::new(0),
                    schedule: None,
                });
                id
            }));
        }
        reply_ids.push(ids);
    }
    if producers.len() > 0xff_ffff {
        return Err(EngineError::Plan("more than 16 million producers".into()));
    }
    let inbox_topics: Vec<Arc<str>> = inboxes.iter().flatten().cloned().collect();

    let mut topology = RunTopology::new(plan.run_id.clone());
    for (topic, name) in plan.topics.iter().zip(&topic_names) {
        let mut spec = TopicSpec::new(name.to_string());
        if topic.delivery == DeliveryMode::One {
            spec = spec.group(group_name(&topic.name));
        }
        topology = topology.topic(spec);
    }
    for name in &inbox_topics {
        topology = topology.topic(TopicSpec::new(name.to_string()));
    }
    backend.prepare(&topology).await?;

    let topic_count = plan.topics.len() + inbox_topics.len();
    let mut topic_producers = vec![Vec::new(); plan.topics.len()];
    for (id, p) in producers.iter().enumerate() {
        if let Some(t) = p.topic {
            topic_producers[t].push(id as u32);
        }
    }
    let shared = Arc::new(Shared {
        run_tag,
        producers,
        live: Live {
            delivered_per_topic: (0..topic_count).map(|_| AtomicU64::new(0)).collect(),
            ..Live::default()
        },
        clock: OnceLock::new(),
        max_in_flight: plan.max_in_flight.max(1),
        inboxes,
        started: CancellationToken::new(),
        scheduled_topics: plan.topics.len(),
        topic_producers,
        record_timeline: options.faults.is_some(),
        publish_deadline: options.faults.as_ref().map(|h| h.publish_deadline),
    });

    let outcome = run_prepared(
        plan,
        &backend,
        &options,
        &shared,
        &topic_names,
        &inbox_topics,
        &reply_ids,
        started_at,
    )
    .await;
    let teardown = backend.teardown().await;
    let mut outcome = outcome?;
    if let Err(err) = teardown {
        outcome
            .notes
            .push(format!("cleaning up the run's topics failed: {err}"));
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn run_prepared(
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

/// Deliveries each message of a producer is due, by producer id: its topic's start-time
/// subscribers (fan-out) or one (competing consumers); 0 for receipt senders.
fn fanout(plan: &Plan, shared: &Shared) -> Vec<u32> {
    let mut out = vec![0u32; shared.producers.len()];
    for (ti, topic) in plan.topics.iter().enumerate() {
        let at_start = topic
            .subscribers
            .iter()
            .filter(|s| matches!(s.join, Join::AtStart | Join::Returning { .. }))
            .count() as u32;
        let due = match topic.delivery {
            DeliveryMode::All => at_start,
            DeliveryMode::One => u32::from(at_start > 0),
        };
        for &id in &shared.topic_producers[ti] {
            out[id as usize] = due;
        }
    }
    out
}

fn not_joined(topic: usize) -> ConsumerResult {
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

fn set_phase(options: &RunOptions, phase: Phase) {
    if let Some(progress) = &options.progress {
        progress.send_modify(|p| p.phase = phase);
    }
}

fn subscription_spec(
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

/// The consumer group shared by the competing consumers of a `one` topic.
fn group_name(topic: &str) -> String {
    format!("{topic}.workers")
}

/// A 32-bit tag of the run id, carried in every envelope.
fn run_tag(run_id: &str) -> u32 {
    run_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Deliveries the drain waits for, per topic (start-time subscribers only; late ones
/// are not waited for).
fn expected_deliveries(plan: &Plan, shared: &Shared) -> Vec<u64> {
    let mut expected = vec![0u64; shared.live.delivered_per_topic.len()];
    for (ti, topic) in plan.topics.iter().enumerate() {
        let confirmed: u64 = shared.topic_producers[ti]
            .iter()
            .map(|&id| {
                shared.producers[id as usize]
                    .confirmed
                    .load(Ordering::Relaxed)
            })
            .sum();
        let at_start = topic
            .subscribers
            .iter()
            .filter(|s| matches!(s.join, Join::AtStart | Join::Returning { .. }))
            .count() as u64;
        expected[ti] = match topic.delivery {
            DeliveryMode::All => confirmed * at_start,
            DeliveryMode::One => confirmed * u64::from(at_start > 0),
        };
    }
    expected
}

/// Publishes `plan`'s schedule; every request is a copy of `template` (topic, delivery,
/// cache) with its own payload and key.
#[allow(clippy::too_many_arguments)]
async fn produce(
    shared: Arc<Shared>,
    id: u32,
    (backend, mut producer): (Arc<dyn Backend>, Producer),
    template: PublishRequest,
    plan: crate::plan::ProducerPlan,
    pacer: Arc<Pacer>,
    mut recorder: Recorder,
    stop: CancellationToken,
) -> ProducerResult {
    let info = &shared.producers[id as usize];
    let schedule = info.schedule.clone().unwrap_or_else(|| {
        Schedule::new(
            &crate::plan::RateSchedule::constant(0.0),
            Duration::ZERO,
            Duration::ZERO,
            1,
        )
    });
    let clock = shared.clock();
    let mut rng = fastrand::Rng::new();
    // Shared, so drawing a key for a message copies a pointer, not the string.
    let keys: Vec<Arc<str>> = plan
        .keys
        .as_ref()
        .map(|k| (0..k.count).map(|i| Arc::from(format!("k{i}"))).collect())
        .unwrap_or_default();
    let mut reconnect = Reconnect::new(backend);
    let mut outbox = Outbox::new(id);
    if shared.record_timeline {
        outbox.result.events = Some(Vec::new());
    }
    let mut seq = 0u64;
    'schedule: while let Some(due_ns) = schedule.due_ns(seq) {
        let due = clock.epoch + Duration::from_nanos(due_ns);
        let sleep = pacer.sleep_until(due);
        tokio::pin!(sleep);
        let mut slept = false;
        loop {
            let full = outbox.in_flight.len() >= shared.max_in_flight;
            if slept && !full {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break 'schedule,
                Some(done) = outbox.in_flight.next(), if !outbox.in_flight.is_empty() => {
                    reconnect.observe(done.2, &done.3);
                    outbox.settle(&shared, &clock, &mut recorder, done);
                }
                fresh = reconnect.next(), if reconnect.pending() => {
                    if let Some(fresh) = fresh {
                        producer = fresh;
                    }
                }
                _ = &mut sleep, if !slept => slept = true,
            }
        }
        let sent = Instant::now();
        let envelope = Envelope {
            run: shared.run_tag,
            producer: id,
            seq,
            intended_ns: due_ns,
            sent_ns: clock.since_epoch(sent),
        };
        let size = plan.size.sample(&mut rng).max(HEADER_LEN);
        let mut payload = Vec::with_capacity(size);
        envelope.encode_into(size, &mut payload);
        let mut request = template.clone();
        request.payload = Bytes::from(payload);
        if let Some(k) = &plan.keys {
            request = request.key(keys[k.sample(&mut rng) as usize].clone());
        }
        info.next_seq.store(seq + 1, Ordering::Release);
        outbox.push(
            seq,
            due_ns,
            sent,
            bounded(producer.publish(request), shared.publish_deadline),
        );
        seq += 1;
    }
    let result = outbox.finish(&shared, &clock, &mut recorder).await;
    let _ = recorder.finish().await;
    result
}

/// What settling a publish needs: its sequence, when it was due (ns since the epoch),
/// when it was sent, and how it went.
type Settled = (u64, u64, Instant, PublishOutcome);

/// One publish in flight, carrying what settling it needs. A named future, so the queue of
/// a producer and that of a receipt sender have one type and a publish is boxed once.
struct InFlight {
    seq: u64,
    due_ns: u64,
    sent: Instant,
    publish: BoxFuture<'static, PublishOutcome>,
}

impl Future for InFlight {
    type Output = Settled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        let this = &mut *self;
        this.publish
            .poll_unpin(cx)
            .map(|outcome| (this.seq, this.due_ns, this.sent, outcome))
    }
}

/// The publishes of one producer id (scheduled producer or receipt sender) that are in
/// flight, and the tally of those settled.
struct Outbox {
    in_flight: FuturesUnordered<InFlight>,
    result: ProducerResult,
    progress: ProgressCount,
}

impl Outbox {
    fn new(id: u32) -> Self {
        Self {
            in_flight: FuturesUnordered::new(),
            result: ProducerResult {
                id,
                confirmed: SequenceSet::new(),
                unconfirmed: SequenceSet::new(),
                events: None,
            },
            progress: ProgressCount::new(),
        }
    }

    fn push(
        &mut self,
        seq: u64,
        due_ns: u64,
        sent: Instant,
        publish: BoxFuture<'static, PublishOutcome>,
    ) {
        self.in_flight.push(InFlight {
            seq,
            due_ns,
            sent,
            publish,
        });
    }

    /// Records the outcome of one publish.
    fn settle(
        &mut self,
        shared: &Shared,
        clock: &Clock,
        recorder: &mut Recorder,
        (seq, due_ns, sent, outcome): Settled,
    ) {
        let now = Instant::now();
        let Some(intended) = due_ns.checked_sub(clock.warmup_ns) else {
            return; // a warm-up message
        };
        let now_ns = clock.measured(now).unwrap_or(0);
        // A message is never sent before it is due, so `sent` is in the measured phase.
        let sent_ns = clock.measured(sent).unwrap_or(intended).max(intended);
        if let Some(events) = self.result.events.as_mut() {
            events.push(PublishEvent {
                producer: self.result.id,
                seq,
                intended_ns: intended,
                settled_ns: now_ns,
                outcome: match outcome {
                    PublishOutcome::Ok | PublishOutcome::Duplicate => Settle::Confirmed,
                    PublishOutcome::Failed(_) => Settle::Failed,
                    PublishOutcome::Unknown => Settle::Unknown,
                },
            });
        }
        match outcome {
            PublishOutcome::Ok | PublishOutcome::Duplicate => {
                recorder.record_publish_ok(now_ns, intended, sent_ns);
                let _ = self.result.confirmed.insert(seq);
                shared.producers[self.result.id as usize]
                    .confirmed
                    .fetch_add(1, Ordering::Relaxed);
                self.progress.add(&shared.live.published, now);
            }
            PublishOutcome::Failed(_) => {
                recorder.record_publish_failed(now_ns, intended, sent_ns);
                let _ = self.result.unconfirmed.insert(seq);
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
            }
            PublishOutcome::Unknown => {
                recorder.record_publish_unknown(now_ns, intended, sent_ns);
                let _ = self.result.unconfirmed.insert(seq);
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits for every publish still in flight, then hands back the tally.
    async fn finish(
        mut self,
        shared: &Shared,
        clock: &Clock,
        recorder: &mut Recorder,
    ) -> ProducerResult {
        // Under faults a broker may never answer: what is still in flight at the drain
        // deadline counts as unknown, so the run ends on time.
        let give_up = shared.publish_deadline.map(|_| clock.deadline);
        loop {
            let next = match give_up {
                None => self.in_flight.next().await,
                Some(at) => match tokio::time::timeout_at(at.into(), self.in_flight.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let left: Vec<(u64, u64, Instant)> = self
                            .in_flight
                            .iter()
                            .map(|f| (f.seq, f.due_ns, f.sent))
                            .collect();
                        self.in_flight = FuturesUnordered::new();
                        for (seq, due_ns, sent) in left {
                            let unknown = (seq, due_ns, sent, PublishOutcome::Unknown);
                            self.settle(shared, clock, recorder, unknown);
                        }
                        None
                    }
                },
            };
            let Some(done) = next else { break };
            self.settle(shared, clock, recorder, done);
        }
        self.progress.flush(&shared.live.published);
        self.result
    }
}

/// Receipt publishing state of a replying subscriber.
struct Replier {
    plan: ReplyPlan,
    producer: Producer,
    seq: u64,
    outbox: Outbox,
}

impl Replier {
    fn new(plan: ReplyPlan, id: u32, producer: Producer) -> Self {
        Self {
            plan,
            producer,
            seq: 0,
            outbox: Outbox::new(id),
        }
    }

    /// Publishes one receipt to the inbox of producer `to`, for a message received at
    /// `received_at`; waits first while too many receipts are in flight.
    async fn send(
        &mut self,
        shared: &Shared,
        to: u32,
        received_at: Instant,
        recorder: &mut Recorder,
    ) {
        let Some(Some(inbox)) = shared.inboxes.get(to as usize) else {
            return;
        };
        let clock = shared.clock();
        while self.outbox.in_flight.len() >= shared.max_in_flight {
            if let Some(done) = self.outbox.in_flight.next().await {
                self.outbox.settle(shared, &clock, recorder, done);
            }
        }
        let id = self.outbox.result.id;
        let intended_ns = clock.since_epoch(received_at);
        let sent = Instant::now();
        let envelope = Envelope {
            run: shared.run_tag,
            producer: id,
            seq: self.seq,
            intended_ns,
            sent_ns: clock.since_epoch(sent),
        };
        let request =
            PublishRequest::new(inbox.clone(), Bytes::from(envelope.encode(self.plan.size)));
        let seq = self.seq;
        self.seq += 1;
        shared.producers[id as usize]
            .next_seq
            .store(self.seq, Ordering::Release);
        self.outbox
            .push(seq, intended_ns, sent, self.producer.publish(request));
    }
}

/// A returning subscriber's time away.
struct Absence {
    offline_after: Duration,
    rejoin_after: Duration,
    backend: Arc<dyn Backend>,
    spec: SubscriptionSpec,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn next_delivery(
    subscription: &mut Option<Subscription>,
) -> Option<Result<Delivery, AdapterError>> {
    match subscription.as_mut() {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// What a subscriber task does besides reading its subscription.
#[derive(Default)]
struct Role {
    /// Acknowledge every delivery.
    ack: bool,
    /// Answers each measured first delivery with receipts.
    replier: Option<Replier>,
    /// First sequence it is eligible for, per producer id (empty: all of them).
    first_eligible: Vec<u64>,
    /// Goes away and comes back (a returning subscriber).
    absence: Option<Absence>,
    /// How to subscribe again when the subscription ends under it (the broker restarted,
    /// the connection was cut).
    resubscribe: Option<(Arc<dyn Backend>, SubscriptionSpec)>,
}

async fn consume(
    shared: Arc<Shared>,
    topic: usize,
    subscription: Subscription,
    role: Role,
    mut recorder: Recorder,
    stop: CancellationToken,
) -> ConsumerResult {
    let Role {
        ack,
        mut replier,
        first_eligible,
        absence,
        resubscribe,
    } = role;
    // A returning subscriber's absence is timed on the run clock, which only starts once
    // every subscriber is ready: wait for it (nothing is published before it starts).
    if absence.is_some() {
        tokio::select! {
            _ = shared.started.cancelled() => {}
            _ = stop.cancelled() => {}
        }
    }
    let clock = shared.clock();
    let topic_name: Arc<str> = Arc::from(subscription.topic());
    let mut subscription = Some(subscription);
    let mut last_sequence: Option<i64> = None;
    let offline_at = absence.as_ref().map(|a| clock.epoch + a.offline_after);
    let mut gone_offline = false;
    let mut tracker = SequenceTracker::new();
    let mut result = ConsumerResult {
        topic,
        tracker: SequenceTracker::new(),
        first_eligible,
        replayed: 0,
        error: None,
        joined: true,
        receipts: None,
        events: Vec::new(),
        notes: Vec::new(),
    };
    let mut reestablished = 0u64;
    let mut delivered_progress = ProgressCount::new();
    loop {
        let in_flight = replier
            .as_ref()
            .is_some_and(|r| !r.outbox.in_flight.is_empty());
        let goes_offline = !gone_offline && offline_at.is_some();
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = async { replier.as_mut()?.outbox.in_flight.next().await }, if in_flight => {
                if let Some(r) = replier.as_mut() {
                    r.outbox.settle(&shared, &shared.clock(), &mut recorder, done);
                }
                continue;
            }
            _ = sleep_until_opt(offline_at), if goes_offline => {
                gone_offline = true;
                let Some(absence) = absence.as_ref() else { continue };
                // Drop off (the connection closes), stay away, then come back after the
                // last message seen so the broker replays only what was missed.
                drop(subscription.take());
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until((clock.epoch + absence.rejoin_after).into()) => {}
                }
                let start = match last_sequence {
                    Some(seq) => StartPosition::AfterSequence(seq),
                    None => StartPosition::Beginning,
                };
                match absence.backend.subscribe(absence.spec.clone().start(start)).await {
                    Ok(s) => subscription = Some(s),
                    Err(err) => {
                        result.error = Some(format!(
                            "returning subscriber to {topic_name} could not rejoin: {err}"
                        ));
                        break;
                    }
                }
                continue;
            }
            item = next_delivery(&mut subscription) => item,
        };
        let delivery = match item {
            Some(Ok(delivery)) => delivery,
            None if resubscribe.is_none() => break,
            ended => {
                let why = match ended {
                    Some(Err(err)) => err.to_string(),
                    _ => "the broker closed it".to_owned(),
                };
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
                drop(subscription.take());
                let again = match &resubscribe {
                    Some((backend, spec)) => resubscribe_until(backend, spec, &stop).await,
                    None => None,
                };
                match again {
                    Some((s, after)) => {
                        subscription = Some(s);
                        reestablished += 1;
                        if reestablished == 1 {
                            result.notes.push(format!(
                                "subscription to {topic_name} ended ({why}) and was re-established after {} ms",
                                after.as_millis()
                            ));
                        }
                        continue;
                    }
                    None => {
                        result.error = Some(format!(
                            "subscription to {topic_name} ended: {why}{}",
                            if resubscribe.is_some() {
                                "; it could not be re-established before the end of the run"
                            } else {
                                ""
                            }
                        ));
                        break;
                    }
                }
            }
        };
        if delivery.sequence.is_some() {
            last_sequence = delivery.sequence;
        }
        if ack {
            if let Some(s) = subscription.as_ref() {
                let _ = s.ack(&delivery).await;
            }
        }
        if let Some(sender) = handle_delivery(
            &shared,
            topic,
            &delivery,
            &mut tracker,
            &mut result,
            &mut recorder,
        ) {
            delivered_progress.add(&shared.live.delivered, delivery.received_at);
            if let Some(r) = replier.as_mut() {
                for _ in 0..r.plan.count.max(1) {
                    r.send(&shared, sender, delivery.received_at, &mut recorder)
                        .await;
                }
            }
        }
    }
    delivered_progress.flush(&shared.live.delivered);
    if reestablished > 1 {
        result.notes.push(format!(
            "subscription to {topic_name} was re-established {reestablished} times in all"
        ));
    }
    if let Some(r) = replier {
        let receipts = r
            .outbox
            .finish(&shared, &shared.clock(), &mut recorder)
            .await;
        result.receipts = Some(receipts);
    }
    drop(subscription);
    let _ = recorder.finish().await;
    result.tracker = tracker;
    result
}

/// Classifies one delivery and records it. Returns the sender's producer id for a
/// measured first delivery (the one that deserves a receipt).
fn handle_delivery(
    shared: &Shared,
    topic: usize,
    delivery: &Delivery,
    tracker: &mut SequenceTracker,
    result: &mut ConsumerResult,
    recorder: &mut Recorder,
) -> Option<u32> {
    let clock = shared.clock();
    let now_ns = clock.measured(delivery.received_at).unwrap_or(0);
    let envelope = match Envelope::decode(&delivery.payload) {
        Ok(e) if e.run == shared.run_tag => e,
        _ => {
            recorder.record_phantom(now_ns);
            shared.live.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    let Some(info) = shared.producers.get(envelope.producer as usize) else {
        recorder.record_phantom(now_ns);
        return None;
    };
    // A message of a scheduled producer must arrive on that producer's topic; a receipt
    // on an inbox (the envelope does not say which producer it answers).
    let right_topic = match info.topic {
        Some(t) => t == topic,
        None => topic >= shared.scheduled_topics,
    };
    if !right_topic {
        recorder.record_phantom(now_ns);
        shared.live.errors.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let Some(intended) = envelope.intended_ns.checked_sub(clock.warmup_ns) else {
        return None; // warm-up traffic
    };
    if result
        .first_eligible
        .get(envelope.producer as usize)
        .is_some_and(|first| envelope.seq < *first)
    {
        result.replayed += 1;
        return None;
    }
    let sent = envelope
        .sent_ns
        .saturating_sub(clock.warmup_ns)
        .max(intended);
    let class = tracker.observe(u64::from(envelope.producer), envelope.seq);
    let late = delivery.received_at > clock.deadline;
    let arrival = match class {
        _ if late => Some(Arrival::Late),
        SeqDelivery::First => Some(Arrival::First),
        SeqDelivery::Reordered => Some(Arrival::Reordered),
        SeqDelivery::Duplicate => Some(Arrival::Duplicate),
        SeqDelivery::OutOfRange => None,
    };
    if let Some(arrival) = arrival.filter(|_| shared.record_timeline) {
        if topic < shared.scheduled_topics {
            result.events.push(DeliveryEvent {
                producer: envelope.producer,
                seq: envelope.seq,
                intended_ns: intended,
                received_ns: now_ns,
                arrival,
            });
        }
    }
    if late {
        recorder.record_late(now_ns);
        return None;
    }
    recorder.record_delivery(now_ns, intended, sent, class);
    match class {
        SeqDelivery::First | SeqDelivery::Reordered => {
            shared.live.delivered_per_topic[topic].fetch_add(1, Ordering::Relaxed);
            Some(envelope.producer)
        }
        _ => None,
    }
}

/// Computes lost and cross-subscriber duplicates, feeds them to the collector, and
/// returns (recovered, replayed).
fn account(
    plan: &Plan,
    shared: &Shared,
    producers: &[ProducerResult],
    consumers: &[ConsumerResult],
    inbox_topics: &[Arc<str>],
    collector: &mut Collector,
    notes: &mut Vec<String>,
) -> (u64, u64) {
    let mut sent_by_id: Vec<Option<&ProducerResult>> = vec![None; shared.producers.len()];
    for p in producers {
        sent_by_id[p.id as usize] = Some(p);
    }
    let mut subs_by_topic: Vec<Vec<&ConsumerResult>> =
        vec![Vec::new(); plan.topics.len() + inbox_topics.len()];
    for c in consumers.iter().filter(|c| c.joined) {
        subs_by_topic[c.topic].push(c);
    }
    let warmup_ns = plan.warmup.as_nanos() as u64;
    let interval_for = |id: u32, seq: u64| -> u64 {
        shared.producers[id as usize]
            .schedule
            .as_ref()
            .and_then(|s| s.due_ns(seq))
            .map_or_else(
                || interval_of(plan.duration.as_nanos() as u64).saturating_sub(1),
                |due| interval_of(due.saturating_sub(warmup_ns)),
            )
    };
    let mut recovered = 0u64;
    let mut replayed = 0u64;
    for (ti, topic) in plan.topics.iter().enumerate() {
        let subs = &subs_by_topic[ti];
        if subs.is_empty() {
            continue;
        }
        replayed += subs.iter().map(|s| s.replayed).sum::<u64>();
        for &pid in &shared.topic_producers[ti] {
            let Some(sent) = sent_by_id[pid as usize] else {
                continue;
            };
            match topic.delivery {
                DeliveryMode::All => {
                    for sub in subs {
                        let first = sub.first_eligible.get(pid as usize).copied().unwrap_or(0);
                        let received = sub.tracker.received(u64::from(pid));
                        for seq in sent.confirmed.iter().filter(|s| *s >= first) {
                            if !received.contains(seq) {
                                collector.record_lost(interval_for(pid, seq), 1);
                            }
                        }
                        // Due all the same: delivery availability counts them.
                        for seq in sent.unconfirmed.iter().filter(|s| *s >= first) {
                            if !received.contains(seq) {
                                collector.record_undelivered(interval_for(pid, seq), 1);
                            }
                        }
                        recovered += sent.unconfirmed.intersection_len(received);
                    }
                }
                DeliveryMode::One => {
                    let mut union = SequenceSet::new();
                    let mut total = 0u64;
                    for sub in subs {
                        let received = sub.tracker.received(u64::from(pid));
                        total += received.len();
                        union.union_with(received);
                    }
                    for seq in sent.confirmed.difference(&union) {
                        collector.record_lost(interval_for(pid, seq), 1);
                    }
                    for seq in sent.unconfirmed.difference(&union) {
                        collector.record_undelivered(interval_for(pid, seq), 1);
                    }
                    recovered += sent.unconfirmed.intersection_len(&union);
                    let cross_duplicates = total - union.len();
                    if cross_duplicates > 0 {
                        notes.push(format!(
                            "{cross_duplicates} message(s) of producer {pid} reached more than one competing consumer"
                        ));
                    }
                }
            }
        }
    }
    // Receipts: every confirmed receipt should reach exactly one inbox.
    if !inbox_topics.is_empty() {
        let inbox_subs: Vec<&ConsumerResult> = subs_by_topic[plan.topics.len()..]
            .iter()
            .flatten()
            .copied()
            .collect();
        for sent in producers
            .iter()
            .filter(|p| shared.producers[p.id as usize].topic.is_none())
        {
            let mut union = SequenceSet::new();
            for sub in &inbox_subs {
                union.union_with(sub.tracker.received(u64::from(sent.id)));
            }
            let lost = sent.confirmed.difference_len(&union);
            if lost > 0 {
                collector.record_lost(
                    interval_of(plan.duration.as_nanos() as u64).saturating_sub(1),
                    lost,
                );
            }
            recovered += sent.unconfirmed.intersection_len(&union);
        }
    }
    (recovered, replayed)
}

/// Merges snapshots, samples the broker each second and publishes progress.
async fn collect(
    shared: Arc<Shared>,
    mut snapshots: mpsc::Receiver<IntervalSnapshot>,
    broker_pid: Option<u32>,
    progress: Option<watch::Sender<Progress>>,
    clock: Clock,
    total: Duration,
    plan: Plan,
) -> Collector {
    let mut collector = Collector::new();
    // Offered messages per interval, from the schedules.
    for info in &shared.producers {
        let Some(schedule) = &info.schedule else {
            continue;
        };
        let intervals =
            plan.duration.as_secs().max(1) + u64::from(plan.duration.subsec_nanos() > 0);
        let mut before = schedule.count_before(clock.warmup_ns);
        for i in 0..intervals {
            let end = (clock.warmup_ns + (i + 1) * 1_000_000_000).min(schedule.end_ns() + 1);
            let upto = schedule.count_before(end);
            collector.record_offered(i, upto.saturating_sub(before));
            before = upto;
        }
    }
    let mut sampler = broker_pid.and_then(ProcessSampler::new);
    let measure_start = clock.epoch + Duration::from_nanos(clock.warmup_ns);
    let mut tick = tokio::time::interval_at(measure_start.into(), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_published = 0u64;
    let mut last_tick = Instant::now();
    let mut latest_p99 = None;
    let mut window: Option<(u64, LatencySet)> = None;
    let mut ui_tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            snapshot = snapshots.recv() => match snapshot {
                Some(s) => {
                    if progress.is_some() {
                        // Keep the newest interval's e2e latency for the progress line.
                        let index = s.interval();
                        match &window {
                            Some((current, _)) if index < *current => {}
                            Some((current, set)) if index > *current => {
                                latest_p99 = set.e2e.value_at_quantile_ns(0.99).map(|ns| ns as f64 / 1000.0).or(latest_p99);
                                let mut set = LatencySet::default();
                                s.add_latencies_to(&mut set);
                                window = Some((index, set));
                            }
                            Some(_) => {
                                if let Some((_, set)) = window.as_mut() {
                                    s.add_latencies_to(set);
                                }
                            }
                            None => {
                                let mut set = LatencySet::default();
                                s.add_latencies_to(&mut set);
                                window = Some((index, set));
                            }
                        }
                    }
                    collector.ingest(s);
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if let (Some(s), Some(ns)) = (sampler.as_mut(), clock.measured(now)) {
                    if let Some(sample) = s.sample() {
                        // The sample covers the second that just ended.
                        let interval = interval_of(ns).saturating_sub(1);
                        if ns >= 1_000_000_000 && interval < plan.duration.as_secs().max(1) + 1 {
                            collector.record_broker_sample(interval, sample.cpu_percent, sample.rss_bytes);
                        }
                    }
                }
            }
            _ = ui_tick.tick(), if progress.is_some() => {
                let now = Instant::now();
                let published = shared.live.published.load(Ordering::Relaxed);
                let dt = now.duration_since(last_tick).as_secs_f64();
                let rate = if dt > 0.0 { (published - last_published.min(published)) as f64 / dt } else { 0.0 };
                last_published = published;
                last_tick = now;
                let elapsed = now.saturating_duration_since(clock.epoch);
                if let Some(tx) = &progress {
                    tx.send_modify(|p| {
                        if p.phase != Phase::Drain && p.phase != Phase::Done && shared.started.is_cancelled() {
                            p.phase = if elapsed.as_nanos() < u128::from(clock.warmup_ns) { Phase::Warmup } else { Phase::Measure };
                        }
                        p.elapsed = elapsed.min(total);
                        p.total = total;
                        p.published = published;
                        p.delivered = shared.live.delivered.load(Ordering::Relaxed);
                        p.errors = shared.live.errors.load(Ordering::Relaxed);
                        p.publish_rate = rate;
                        p.offered_rate = plan.offered_rate_at(elapsed.saturating_sub(Duration::from_nanos(clock.warmup_ns)));
                        p.p99_us = latest_p99;
                    });
                }
            }
        }
    }
    collector
}
