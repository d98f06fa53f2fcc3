//! Runs a [`Plan`] against a backend and measures it.
//!
//! Order of events: every start-time subscriber is subscribed and ready, every producer
//! connected; then the clock starts. Producers follow their open-loop schedules through a
//! warm-up (not recorded) and the measured phase; then the run drains until every
//! confirmed message reached every eligible subscriber or the drain deadline passes.
//! Each task records into its own [`Recorder`](brokerbench_results::Recorder); the
//! collector task merges the 1-second intervals and samples the broker's CPU and memory.
//!
//! One room per job:
//! - `phases`: the run in order (subscribe, connect, start the clock, produce, drain);
//! - `produce`: a producer task; pacing with [`Pacer`](crate::pacer::Pacer), sending the
//!   messages due together as one batch;
//! - `outbox`: publishes in flight and their settling; `receipts`: a replying
//!   subscriber's receipts;
//! - `consume`: a subscriber task, classifying and recording each delivery;
//! - `account`: after the run, lost, duplicated, recovered and replayed messages;
//! - `collect`: merging the tasks' intervals, broker samples, progress;
//! - `shared`: the run clock, the producers' table and the live counters.

mod account;
mod collect;
mod consume;
mod outbox;
mod phases;
mod produce;
mod receipts;
mod shared;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use brokerbench_adapters::{
    AdapterError, Backend, Capabilities, Capability, DeliveryMode, RunTopology, StartPosition,
    TopicSpec,
};
use brokerbench_results::{CollectorError, RunFigures};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::plan::{Join, Plan};
use crate::schedule::Schedule;
use crate::timeline::{FaultHooks, Timeline};
use shared::{Live, ProducerInfo, Shared, group_name, run_tag};

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

    let outcome = phases::run_prepared(
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
