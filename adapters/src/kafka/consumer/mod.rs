//! The consuming side: one librdkafka consumer per subscription, polled by a thread of
//! its own.
//!
//! ```text
//!  subscribe() ──ensure topic──> spawn reader thread ──────────────> await "ready"
//!                                     │ fan-out: watermarks → assign(explicit offsets) → ready
//!                                     │ group:   subscribe → rebalance callback:
//!                                     │          committed offsets, or resolve the start and
//!                                     │          commit it → assign(explicit offsets) → ready
//!                                     v
//!  Subscription <──Batch::Many── poll loop ──acks, unsubscribe── SubscriptionControl
//! ```
//!
//! Readiness: a subscription is handed out only once its consumer reads from fixed
//! positions, so every message published afterwards reaches it (or, in a group, one of
//! the group's members). librdkafka would otherwise resolve "latest" lazily at the first
//! fetch, skipping whatever was published in between. A fan-out subscriber assigns every
//! partition itself, at offsets it resolved from the watermarks. A group member resolves
//! the start of every partition that has no committed offset when the rebalance gives it
//! the partition, and commits that start at once: a partition that moves to another
//! member before anything was consumed keeps its place.
//!
//! Back-pressure: when the subscription's channel is full, the reader pauses its
//! partitions and keeps polling (which serves rebalances and heartbeats, so a slow reader
//! does not stall its group), then resumes once there is room.

mod acks;
mod context;
mod control;
mod reader;
mod start;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::oneshot;

use super::admin::{Shared, check_topic_name};
use super::{FANOUT_TOPIC_PARTITIONS, GROUP_TOPIC_PARTITIONS, config, group_id};
use crate::error::AdapterError;
use crate::subscription::{AckMode, Subscription, SubscriptionSpec};

use acks::AckBook;
#[cfg(test)]
pub(crate) use acks::{DELIVERED_MARK, PartitionAcks, parse_delivered};
use context::SubContext;
use control::KafkaSubscription;
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
    let (kafka_group, member) = match &spec.group {
        Some(group) => {
            let id = group_id(&spec.topic, group);
            shared.register_group(&id);
            (id, true)
        }
        None => (private_group_id(), false),
    };
    let manual = spec.ack == AckMode::Manual;
    let what = match &spec.group {
        Some(group) => format!(
            "subscription to {} in group {group} (kafka group {kafka_group}) on kafka at {}",
            spec.topic, shared.url
        ),
        None => format!("subscription to {} on kafka at {}", spec.topic, shared.url),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let context = SubContext {
        topic: spec.topic.clone(),
        what: what.clone(),
        member,
        manual,
        start: spec.start,
        timeout,
        ready: Mutex::new(Some(ready_tx)),
        acks: Mutex::new(AckBook::default()),
        paused: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<SubContext> = config::consumer(
        &shared.bootstrap,
        &shared.options,
        &kafka_group,
        member && !manual,
    )
    .create_with_context(context)
    .map_err(|e| AdapterError::invalid_input(format!("{what}: cannot create the consumer: {e}")))?;
    let (commands_tx, commands_rx) = std_mpsc::channel();
    let rejected = Arc::new(AtomicU64::new(0));
    let control = KafkaSubscription {
        topic: spec.topic.clone(),
        commands: commands_tx,
        rejected: rejected.clone(),
        tracks_acks: member && manual,
        timeout,
    };
    let (tx, subscription) = Subscription::channel(&spec, Box::new(control));
    let reader = Reader {
        life: LifeGuard(shared.new_reader()),
        consumer,
        tx,
        commands: commands_rx,
        rejected,
        trouble: None,
        fatal: None,
        last_commit: Instant::now(),
    };
    std::thread::Builder::new()
        .name("bb-kafka-sub".into())
        .spawn(move || reader.run())
        .map_err(|e| {
            AdapterError::closed(format!("{what}: cannot start the consumer thread: {e}"))
        })?;
    match tokio::time::timeout(timeout + READY_MARGIN, ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(subscription),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(AdapterError::closed(format!(
            "{what}: the consumer ended before it was ready"
        ))),
        Err(_) => Err(AdapterError::timeout(&what, timeout)),
    }
    // On an error the subscription is dropped here, which ends the reader.
}

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
