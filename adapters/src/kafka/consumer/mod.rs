//! The consuming side: librdkafka consumers, each polled by a thread of its own. A
//! subscription in a group, with manual acks or replaying has a consumer of its own;
//! the other fan-out subscriptions of a topic share one (`fanout`).
//!
//! ```text
//!  subscribe() ──ensure topic──> spawn reader thread ──────────────> await "ready"
//!       │                             │ fan-out: watermarks → assign(explicit offsets) → ready
//!       │                             │ group:   subscribe → rebalance callback:
//!       │                             │          committed offsets, or resolve the start and
//!       │                             │          commit it → assign(explicit offsets) → ready
//!       │ shareable: attach to the    v
//!       └─ topic's running reader ─> poll loop ──Batch::Many──> Subscription(s)
//!                                     ^──acks, unsubscribe── SubscriptionControl
//! ```
//!
//! The rooms: `start` (where a partition starts; the fan-out assignment), `context`
//! (readiness and a group member's rebalances), `acks` (manual-ack bookkeeping),
//! `reader` (the poll loop, errors, closing), `handoff` (deliveries to subscriptions,
//! back-pressure), `fanout` (the shared consumers), `control` (the subscription
//! handle's side).
//!
//! Readiness: a subscription is handed out only once its consumer reads from fixed
//! positions, so every message published afterwards reaches it (or, in a group, one of
//! the group's members). librdkafka would otherwise resolve "latest" lazily at the first
//! fetch, skipping whatever was published in between. A fan-out consumer assigns every
//! partition itself, at offsets it resolved from the watermarks. A group member resolves
//! the start of every partition that has no committed offset when the rebalance gives it
//! the partition, and commits that start at once: a partition that moves to another
//! member before anything was consumed keeps its place.
//!
//! Back-pressure: when a subscription's channel is full, the reader pauses its
//! partitions and keeps polling (which serves rebalances and heartbeats, so a slow reader
//! does not stall its group), then resumes once there is room.

mod acks;
mod context;
mod control;
mod fanout;
mod handoff;
mod reader;
mod start;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::watch;

use super::admin::{Shared, check_topic_name};
use super::{FANOUT_TOPIC_PARTITIONS, GROUP_TOPIC_PARTITIONS, config, group_id};
use crate::error::AdapterError;
use crate::subscription::{AckMode, StartPosition, Subscription, SubscriptionSpec};

use acks::AckBook;
#[cfg(test)]
pub(crate) use acks::{DELIVERED_MARK, PartitionAcks, parse_delivered};
use context::{Readiness, SubContext};
use control::{Command, KafkaSubscription};
pub(crate) use fanout::FanOuts;
use handoff::Outlet;
use reader::{LifeGuard, Reader};
#[cfg(test)]
pub(crate) use start::resolve_start;

/// How long one poll of the reader waits for a message. Acks, unsubscribe and the end of
/// a dropped subscription are noticed between polls, so within this.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// How long one poll waits while the subscription's channel is full.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(10);

/// Most deliveries handed over in one batch.
const MAX_BATCH: usize = 256;

/// How often a manual-ack member commits what was acknowledged (and on every rebalance
/// and on unsubscribe).
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// How long the reader's own metadata check may take when it verifies that the broker
/// is gone.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a fan-out subscriber asks again for a topic's partitions that do not show
/// in the metadata yet.
const METADATA_RETRY: Duration = Duration::from_millis(50);

/// How much longer `subscribe` waits than the reader's own readiness deadline, so the
/// reader's error (which knows why) arrives first.
const READY_MARGIN: Duration = Duration::from_secs(1);

/// Subscribes per `spec` and returns once ready (see the module documentation).
pub(crate) async fn subscribe(
    shared: &Arc<Shared>,
    spec: SubscriptionSpec,
) -> Result<Subscription, AdapterError> {
    check_topic_name(&spec.topic)?;
    let timeout = shared.options.request_timeout;
    let partitions = if spec.group.is_some() {
        GROUP_TOPIC_PARTITIONS
    } else {
        FANOUT_TOPIC_PARTITIONS
    };
    shared
        .ensure_topics(
            &[(spec.topic.to_string(), partitions)],
            tokio::time::Instant::now() + timeout,
        )
        .await?;
    if can_share(&spec) {
        let what = format!("subscription to {} on kafka at {}", spec.topic, shared.url);
        return fanout::subscribe(shared, &spec, what).await;
    }
    let kafka_group = match &spec.group {
        Some(group) => {
            let id = group_id(&spec.topic, group);
            shared.register_group(&id);
            id
        }
        None => private_group_id(),
    };
    let what = match &spec.group {
        Some(group) => format!(
            "subscription to {} in group {group} (kafka group {kafka_group}) on kafka at {}",
            spec.topic, shared.url
        ),
        None => format!("subscription to {} on kafka at {}", spec.topic, shared.url),
    };
    let (consumer, ready) = new_consumer(shared, &spec, &kafka_group, &what)?;
    let (commands_tx, commands_rx) = std_mpsc::channel();
    let rejected = Arc::new(AtomicU64::new(0));
    let control = KafkaSubscription {
        topic: spec.topic.clone(),
        id: 0,
        commands: commands_tx,
        rejected: rejected.clone(),
        tracks_acks: spec.group.is_some() && spec.ack == AckMode::Manual,
        timeout,
    };
    let (tx, subscription) = Subscription::channel(&spec, Box::new(control));
    spawn_reader(
        shared,
        consumer,
        Outlet::Own(tx),
        commands_rx,
        rejected,
        &what,
    )?;
    wait_ready(ready, &what, timeout).await?;
    // On an error the subscription is dropped above, which ends the reader.
    Ok(subscription)
}

/// Whether a subscription per `spec` can share its topic's consumer: one that owns
/// nothing on the broker (no group, no acks to commit) and starts where a running
/// consumer is, at the end. Groups, manual acks and replays keep a consumer of their own.
fn can_share(spec: &SubscriptionSpec) -> bool {
    spec.group.is_none() && spec.ack == AckMode::Auto && spec.start == StartPosition::Latest
}

/// Creates a consumer for subscriptions per `spec` in Kafka group `kafka_group` (a
/// private id for fan-out), counted in the backend's statistics; returns it with a
/// watch of its readiness.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when librdkafka refuses
/// the configuration.
fn new_consumer(
    shared: &Shared,
    spec: &SubscriptionSpec,
    kafka_group: &str,
    what: &str,
) -> Result<(BaseConsumer<SubContext>, watch::Receiver<Readiness>), AdapterError> {
    let member = spec.group.is_some();
    let manual = spec.ack == AckMode::Manual;
    let (ready, ready_rx) = watch::channel(None);
    let context = SubContext {
        topic: spec.topic.clone(),
        what: what.to_owned(),
        member,
        manual,
        start: spec.start,
        timeout: shared.options.request_timeout,
        ready,
        acks: Mutex::new(AckBook::default()),
        paused: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<SubContext> = config::consumer(
        &shared.bootstrap,
        &shared.options,
        kafka_group,
        member && !manual,
    )
    .create_with_context(context)
    .map_err(|e| AdapterError::invalid_input(format!("{what}: cannot create the consumer: {e}")))?;
    shared.consumer_created();
    Ok((consumer, ready_rx))
}

/// Starts the reader thread of `consumer`, serving `outlet`.
///
/// # Errors
///
/// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when no thread can be had.
fn spawn_reader(
    shared: &Shared,
    consumer: BaseConsumer<SubContext>,
    outlet: Outlet,
    commands: std_mpsc::Receiver<Command>,
    rejected: Arc<AtomicU64>,
    what: &str,
) -> Result<(), AdapterError> {
    let reader = Reader {
        life: LifeGuard(shared.new_reader()),
        consumer,
        outlet,
        commands,
        rejected,
        trouble: None,
        fatal: None,
        last_commit: Instant::now(),
        batch: Vec::new(),
    };
    std::thread::Builder::new()
        .name("bb-kafka-sub".into())
        .spawn(move || reader.run())
        .map(drop)
        .map_err(|e| AdapterError::closed(format!("{what}: cannot start the consumer thread: {e}")))
}

/// Waits until the consumer behind `ready` is ready, up to the request timeout (and a
/// margin, so the reader's own error, which says why, comes first).
///
/// # Errors
///
/// The reader's error; [`ErrorKind::Closed`](crate::ErrorKind::Closed) when it ended
/// without one; [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
async fn wait_ready(
    mut ready: watch::Receiver<Readiness>,
    what: &str,
    timeout: Duration,
) -> Result<(), AdapterError> {
    let waited = tokio::time::timeout(timeout + READY_MARGIN, async {
        ready
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone())
    })
    .await;
    match waited {
        Ok(Some(result)) => result,
        Ok(None) => Err(AdapterError::closed(format!(
            "{what}: the consumer ended before it was ready"
        ))),
        Err(_) => Err(AdapterError::timeout(what, timeout)),
    }
}

#[cfg(test)]
mod tests;

/// A group id no one else uses, for a fan-out subscriber. It never joins that group (it
/// assigns partitions itself) and never commits, so nothing is created on the broker;
/// librdkafka only requires a group id for `assign`.
fn private_group_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "brokerbench.fanout.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
