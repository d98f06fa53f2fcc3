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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::admin::{ReaderLife, Shared, check_topic_name};
use super::{FANOUT_TOPIC_PARTITIONS, GROUP_TOPIC_PARTITIONS, config, group_id};
use crate::error::{AdapterError, fmt_duration};
use crate::subscription::{
    AckMode, AckToken, AckTokenRepr, Batch, Delivery, StartPosition, Subscription,
    SubscriptionControl, SubscriptionSpec,
};

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

/// The prefix of the metadata a manual-ack member commits with its offsets: the highest
/// offset it handed out, so the partition's next owner can mark redeliveries.
pub(crate) const DELIVERED_MARK: &str = "brokerbench:delivered=";

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

/// Where a partition starts when nothing is committed for it, from its watermarks
/// (ListOffsets; see the module documentation of `kafka` for what tansu 0.6 answers).
fn start_offset(
    consumer: &BaseConsumer<SubContext>,
    topic: &str,
    partition: i32,
    start: StartPosition,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    Ok(resolve_start(start, low, high))
}

/// The start offset for `start` in a partition holding offsets `low..high`: the end
/// for [`StartPosition::Latest`], the first retained offset for
/// [`StartPosition::Beginning`], `n + 1` kept inside `low..=high` for
/// [`StartPosition::AfterSequence`].
pub(crate) fn resolve_start(start: StartPosition, low: i64, high: i64) -> i64 {
    let low = low.max(0);
    let high = high.max(low);
    match start {
        StartPosition::Latest => high,
        StartPosition::Beginning => low,
        StartPosition::AfterSequence(n) => n.saturating_add(1).clamp(low, high),
    }
}

/// Reads the highest delivered offset from commit metadata written by [`AckBook`].
pub(crate) fn parse_delivered(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(DELIVERED_MARK)?.parse().ok()
}

/// Manual-ack bookkeeping of one partition this member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionAcks {
    /// The offset to commit: everything before it is acknowledged (or was before this
    /// member got the partition).
    next_commit: i64,
    /// Offsets handed out at or after `next_commit`, and whether each was acknowledged.
    outstanding: BTreeMap<i64, bool>,
    /// The highest offset handed out, by this member or (from the commit metadata) an
    /// earlier owner.
    delivered_high: Option<i64>,
    /// Offsets below this were handed out by an earlier owner: seeing them again is a
    /// redelivery.
    redelivered_below: i64,
    /// What was committed last (offset, delivered high), so unchanged state is not
    /// committed again.
    committed: Option<(i64, Option<i64>)>,
}

impl PartitionAcks {
    /// A partition starting at `start`, whose earlier owners handed out offsets up to
    /// `delivered_before` (from the commit metadata, where the broker keeps it).
    pub(crate) fn new(start: i64, delivered_before: Option<i64>) -> Self {
        PartitionAcks {
            next_commit: start,
            outstanding: BTreeMap::new(),
            delivered_high: delivered_before,
            redelivered_below: delivered_before.map_or(i64::MIN, |d| d.saturating_add(1)),
            committed: Some((start, delivered_before)),
        }
    }

    /// Records that `offset` is being handed out; returns whether it is a redelivery.
    pub(crate) fn on_delivery(&mut self, offset: i64) -> bool {
        if offset >= self.next_commit {
            self.outstanding.insert(offset, false);
        }
        self.delivered_high = Some(self.delivered_high.map_or(offset, |d| d.max(offset)));
        offset < self.redelivered_below
    }

    /// Records an ack; returns `false` for an offset that is not outstanding here.
    pub(crate) fn on_ack(&mut self, offset: i64) -> bool {
        match self.outstanding.get_mut(&offset) {
            Some(acked) if !*acked => *acked = true,
            _ => return false,
        }
        while let Some((&first, &true)) = self.outstanding.first_key_value() {
            self.outstanding.remove(&first);
            self.next_commit = first + 1;
        }
        true
    }

    /// The commit to make (offset and metadata): if anything changed since the last
    /// one, or in any case when `always` (a final commit, which must not rely on an
    /// earlier asynchronous one having succeeded).
    pub(crate) fn commit_point(&mut self, always: bool) -> Option<(i64, String)> {
        let now = (self.next_commit, self.delivered_high);
        if self.committed == Some(now) && !always {
            return None;
        }
        self.committed = Some(now);
        let metadata = self
            .delivered_high
            .map(|d| format!("{DELIVERED_MARK}{d}"))
            .unwrap_or_default();
        Some((self.next_commit, metadata))
    }
}

/// Manual-ack bookkeeping of every partition a member owns.
#[derive(Debug, Default)]
struct AckBook {
    partitions: HashMap<i32, PartitionAcks>,
}

impl AckBook {
    /// Adds the commit points of `partitions` (all owned ones for `None`) to `list`;
    /// see [`PartitionAcks::commit_point`] for `always`.
    fn commits(
        &mut self,
        topic: &str,
        partitions: Option<&[i32]>,
        always: bool,
        list: &mut TopicPartitionList,
    ) {
        for (&partition, acks) in &mut self.partitions {
            if partitions.is_some_and(|only| !only.contains(&partition)) {
                continue;
            }
            if let Some((offset, metadata)) = acks.commit_point(always)
                && list
                    .add_partition_offset(topic, partition, Offset::Offset(offset))
                    .is_ok()
                && let Some(mut elem) = list.find_partition(topic, partition)
            {
                elem.set_metadata(metadata);
            }
        }
    }
}

/// The consumer's context: readiness, rebalances, manual-ack bookkeeping.
struct SubContext {
    topic: Arc<str>,
    /// "subscription to T [in group G (kafka group K)] on kafka at URL", for messages.
    what: String,
    /// Whether this consumer is a member of a shared group (competing consumers).
    member: bool,
    /// Whether acks are manual.
    manual: bool,
    start: StartPosition,
    /// The request timeout.
    timeout: Duration,
    /// Told once the subscription is ready, or why it cannot be.
    ready: Mutex<Option<oneshot::Sender<Result<(), AdapterError>>>>,
    acks: Mutex<AckBook>,
    /// Whether the reader paused its partitions (back-pressure); a rebalance keeps
    /// newly assigned partitions paused too.
    paused: AtomicBool,
}

impl SubContext {
    fn tracks_acks(&self) -> bool {
        self.member && self.manual
    }

    fn signal_ready(&self, result: Result<(), AdapterError>) {
        if let Some(ready) = self.ready.lock().take() {
            let _ = ready.send(result);
        }
    }

    fn is_ready_pending(&self) -> bool {
        self.ready.lock().is_some()
    }

    /// Takes over `offered` partitions at fixed positions: the committed offset, or the
    /// resolved start (committed at once). If the positions cannot be found, it still
    /// takes the partitions, from their committed offsets (librdkafka looks them up;
    /// `auto.offset.reset=earliest` where there are none), so the group does not stall
    /// on this member; the error then says why this member may not be ready.
    fn on_assign(
        &self,
        consumer: &BaseConsumer<Self>,
        offered: &TopicPartitionList,
    ) -> Result<(), AdapterError> {
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            AdapterError::closed(format!("{}: {doing}: {e}", self.what))
        };
        let (assignment, fresh) = match self.positions(consumer, offered) {
            Ok(positions) => positions,
            Err(error) => {
                let _ = consumer.assign(offered);
                return Err(error);
            }
        };
        if let Err(e) = consumer.assign(&assignment) {
            let _ = consumer.assign(offered);
            return Err(fail("taking the assigned partitions", &e));
        }
        if self.paused.load(Ordering::Acquire) {
            let _ = consumer.pause(&assignment);
        }
        if fresh.count() > 0 {
            consumer
                .commit(&fresh, CommitMode::Sync)
                .map_err(|e| fail("committing the start offsets", &e))?;
        }
        Ok(())
    }

    /// The positions of `offered` partitions (committed or resolved), and those of them
    /// that were resolved (to commit); sets up the ack bookkeeping.
    fn positions(
        &self,
        consumer: &BaseConsumer<Self>,
        offered: &TopicPartitionList,
    ) -> Result<(TopicPartitionList, TopicPartitionList), AdapterError> {
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            AdapterError::closed(format!("{}: {doing}: {e}", self.what))
        };
        let topic: &str = &self.topic;
        let committed = if offered.count() == 0 {
            TopicPartitionList::new()
        } else {
            consumer
                .committed_offsets(offered.clone(), self.timeout)
                .map_err(|e| fail("reading the group's committed offsets", &e))?
        };
        let mut assignment = TopicPartitionList::with_capacity(committed.count());
        let mut fresh = TopicPartitionList::new();
        let mut owned = Vec::with_capacity(committed.count());
        for elem in committed.elements() {
            let partition = elem.partition();
            let (start, delivered_before) = match elem.offset() {
                Offset::Offset(offset) if offset >= 0 => (offset, parse_delivered(elem.metadata())),
                _ => {
                    let start = start_offset(consumer, topic, partition, self.start, self.timeout)
                        .map_err(|e| {
                            fail(&format!("finding where partition {partition} starts"), &e)
                        })?;
                    fresh
                        .add_partition_offset(topic, partition, Offset::Offset(start))
                        .map_err(|e| fail("building the start offsets", &e))?;
                    (start, None)
                }
            };
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(|e| fail("building the assignment", &e))?;
            owned.push((partition, PartitionAcks::new(start, delivered_before)));
        }
        if self.tracks_acks() {
            let mut book = self.acks.lock();
            book.partitions.clear();
            book.partitions.extend(owned);
        }
        Ok((assignment, fresh))
    }

    /// Gives up `revoked` partitions: commits what was consumed (automatic acks) or what
    /// was acknowledged (manual acks, with the highest offset handed out as metadata).
    fn on_revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        if self.tracks_acks() {
            let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
            let mut commits = TopicPartitionList::new();
            {
                let mut book = self.acks.lock();
                book.commits(&self.topic, Some(&partitions), true, &mut commits);
                for partition in &partitions {
                    book.partitions.remove(partition);
                }
            }
            if commits.count() > 0 {
                // Best effort: what is not committed is delivered again, not lost.
                let _ = consumer.commit(&commits, CommitMode::Sync);
            }
        } else if self.member {
            // Stored offsets of messages handed over; `NoOffset` when there are none.
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }
}

impl ClientContext for SubContext {}

impl ConsumerContext for SubContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match RDKafkaErrorCode::from(err) {
            RDKafkaErrorCode::AssignPartitions => {
                let result = self.on_assign(consumer, partitions);
                self.signal_ready(result);
            }
            RDKafkaErrorCode::RevokePartitions => {
                self.on_revoke(consumer, partitions);
                let _ = consumer.unassign();
            }
            _ => {
                let _ = consumer.unassign();
            }
        }
    }
}

/// What the subscription handle asks of its reader.
enum Command {
    Ack { partition: i32, offset: i64 },
    Unsubscribe(oneshot::Sender<Result<(), AdapterError>>),
}

/// The Kafka side of a [`Subscription`].
struct KafkaSubscription {
    topic: Arc<str>,
    /// To the reader; dropping it (with the subscription) ends the reader.
    commands: std_mpsc::Sender<Command>,
    rejected: Arc<AtomicU64>,
    /// Manual acks in a group: acks are committed. Elsewhere there is nothing to commit.
    tracks_acks: bool,
    timeout: Duration,
}

impl SubscriptionControl for KafkaSubscription {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        let AckTokenRepr::Offset { partition, offset } = delivery.ack_token.0 else {
            return Box::pin(std::future::ready(Err(AdapterError::invalid_input(
                format!(
                    "cannot ack a delivery of {} without a Kafka partition and offset",
                    delivery.topic
                ),
            ))));
        };
        let result = if !self.tracks_acks {
            // A fan-out subscriber owns no group offsets: nothing to commit.
            Ok(())
        } else {
            self.commands
                .send(Command::Ack { partition, offset })
                .map_err(|_| {
                    AdapterError::closed(format!(
                        "ack of {} partition {partition} offset {offset}: the subscription has ended",
                        self.topic
                    ))
                })
        };
        Box::pin(std::future::ready(result))
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(std::future::ready(Err(AdapterError::unsupported(format!(
            "nack of a delivery of {}: Kafka has no per-message negative acknowledgement; a consumer's position is one offset per partition, and an unacknowledged message is delivered again only when its partition moves to another group member (after this one leaves)",
            delivery.topic
        )))))
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        let (reply, confirmed) = oneshot::channel();
        let sent = self.commands.send(Command::Unsubscribe(reply)).is_ok();
        let timeout = self.timeout;
        let topic = self.topic.clone();
        Box::pin(async move {
            if !sent {
                // The reader has ended (an error, or the broker went away) and closed its
                // consumer on the way out.
                return Ok(());
            }
            match tokio::time::timeout(timeout + READY_MARGIN, confirmed).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Ok(()),
                Err(_) => Err(AdapterError::timeout(
                    &format!("unsubscribe from {topic}"),
                    timeout,
                )),
            }
        })
    }

    fn rejected_acks(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Trouble the reader saw (lost brokers, a vanished topic): checked once it has lasted
/// the request timeout.
struct Trouble {
    since: Instant,
    what: String,
}

/// Tells the backend the reader has ended when dropped, which happens after its
/// consumer is closed (also if the thread panicked).
struct LifeGuard(Arc<ReaderLife>);

impl Drop for LifeGuard {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// The reader thread's state. `consumer` is declared before `life`, so a reader dropped
/// whole closes its consumer before it reports its end.
struct Reader {
    consumer: BaseConsumer<SubContext>,
    life: LifeGuard,
    tx: mpsc::Sender<Batch>,
    commands: std_mpsc::Receiver<Command>,
    rejected: Arc<AtomicU64>,
    trouble: Option<Trouble>,
    /// An error that ends the subscription, noticed where it could not be acted on.
    fatal: Option<AdapterError>,
    last_commit: Instant,
}

/// What one poll produced, once the message (which borrows the consumer) is taken.
enum Polled {
    Nothing,
    Message,
    Error(KafkaError),
}

impl Reader {
    fn ctx(&self) -> &SubContext {
        self.consumer.context()
    }

    fn run(mut self) {
        let started = Instant::now();
        if let Err(error) = self.start() {
            self.ctx().signal_ready(Err(error));
            self.finish(None, None);
            return;
        }
        let (reply, error) = self.pump(started);
        self.finish(reply, error);
    }

    /// Fan-out: assign every partition at its resolved start. Group: join it (the
    /// rebalance callback does the rest).
    fn start(&mut self) -> Result<(), AdapterError> {
        let ctx = self.consumer.context().clone();
        let topic: &str = &ctx.topic;
        if ctx.member {
            return self
                .consumer
                .subscribe(&[topic])
                .map_err(|e| AdapterError::rejected(format!("{}: {e}", ctx.what)));
        }
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            AdapterError::closed(format!("{}: {doing}: {e}", ctx.what))
        };
        let deadline = Instant::now() + ctx.timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        // The topic exists (it was ensured); a broker that has not caught up with its
        // creation yet shows it without partitions for a moment.
        let partitions: Vec<i32> = loop {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), left())
                .map_err(|e| fail("reading the topic's partitions", &e))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default();
            if !partitions.is_empty() {
                break partitions;
            }
            if left() < METADATA_RETRY {
                return Err(AdapterError::closed(format!(
                    "{}: the topic has no partitions in the broker's metadata",
                    ctx.what
                )));
            }
            std::thread::sleep(METADATA_RETRY);
        };
        let mut assignment = TopicPartitionList::with_capacity(partitions.len());
        for partition in partitions {
            let offset = match ctx.start {
                // Resolved by librdkafka to the first retained offset, which a publish
                // cannot move.
                StartPosition::Beginning => Offset::Beginning,
                start => Offset::Offset(
                    start_offset(&self.consumer, topic, partition, start, left()).map_err(|e| {
                        fail(&format!("finding where partition {partition} starts"), &e)
                    })?,
                ),
            };
            assignment
                .add_partition_offset(topic, partition, offset)
                .map_err(|e| fail("building the assignment", &e))?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| fail("assigning the partitions", &e))?;
        ctx.signal_ready(Ok(()));
        Ok(())
    }

    /// The poll loop. Returns the unsubscribe request that ended it, or the error.
    fn pump(
        &mut self,
        started: Instant,
    ) -> (
        Option<oneshot::Sender<Result<(), AdapterError>>>,
        Option<AdapterError>,
    ) {
        let mut batch = Vec::new();
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Ack { partition, offset }) => self.ack(partition, offset),
                    Ok(Command::Unsubscribe(reply)) => return (Some(reply), None),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    // The subscription was dropped.
                    Err(std_mpsc::TryRecvError::Disconnected) => return (None, None),
                }
            }
            if let Some(error) = self.fatal.take() {
                return (None, Some(error));
            }
            if self.life.0.should_stop() {
                let error = AdapterError::closed(format!(
                    "{}: the backend was torn down (its topics and groups are being deleted)",
                    self.ctx().what
                ));
                return (None, Some(error));
            }
            if self.ctx().is_ready_pending() && started.elapsed() >= self.ctx().timeout {
                let last = self
                    .trouble
                    .as_ref()
                    .map(|t| format!(" (last error: {})", t.what))
                    .unwrap_or_default();
                let error = AdapterError::timeout(&self.ctx().what, self.ctx().timeout);
                return (
                    None,
                    Some(AdapterError::new(
                        error.kind(),
                        format!(
                            "{}: no partition assignment from the group coordinator{last}",
                            error.message()
                        ),
                    )),
                );
            }
            self.commit_acks();
            if let Some(error) = self.check_trouble() {
                return (None, Some(error));
            }
            let polled = match self.consumer.poll(POLL_WAIT) {
                None => Polled::Nothing,
                Some(Ok(message)) => {
                    self.take(&message, &mut batch);
                    Polled::Message
                }
                Some(Err(e)) => Polled::Error(e),
            };
            match polled {
                Polled::Nothing => {}
                Polled::Error(e) => self.on_error(e),
                Polled::Message => {
                    // Gather what else is already there into the same batch.
                    while batch.len() < MAX_BATCH {
                        let more = match self.consumer.poll(Duration::ZERO) {
                            None => None,
                            Some(Ok(message)) => {
                                self.take(&message, &mut batch);
                                continue;
                            }
                            Some(Err(e)) => Some(e),
                        };
                        if let Some(e) = more {
                            self.on_error(e);
                        }
                        break;
                    }
                    if !self.hand_over(&mut batch) {
                        return (None, None);
                    }
                }
            }
        }
    }

    /// Turns a message into a delivery.
    fn take(&self, message: &BorrowedMessage<'_>, batch: &mut Vec<Delivery>) {
        let received_at = Instant::now();
        let ctx = self.ctx();
        let partition = message.partition();
        let offset = message.offset();
        let redelivered = if ctx.tracks_acks() {
            ctx.acks
                .lock()
                .partitions
                .get_mut(&partition)
                .is_some_and(|acks| acks.on_delivery(offset))
        } else {
            if ctx.member {
                // Automatic acks: handed over means done; committed by librdkafka's
                // auto-commit and on every rebalance.
                let _ = self.consumer.store_offset_from_message(message);
            }
            false
        };
        batch.push(Delivery {
            topic: ctx.topic.clone(),
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            redelivered,
            attempt: None,
            sequence: Some(offset),
            received_at,
            ack_token: AckToken(AckTokenRepr::Offset { partition, offset }),
        });
    }

    /// Hands `batch` to the subscription, waiting for room with the partitions paused.
    /// Returns `false` if the subscription is gone.
    fn hand_over(&mut self, batch: &mut Vec<Delivery>) -> bool {
        if batch.is_empty() {
            return !self.tx.is_closed();
        }
        // Messages arrive: whatever trouble there was is over.
        self.trouble = None;
        loop {
            let sent = match self.tx.try_reserve() {
                Ok(permit) => {
                    permit.send(Batch::Many(std::mem::take(batch)));
                    true
                }
                Err(TrySendError::Closed(())) => return false,
                // Nobody reads it, and teardown is waiting.
                Err(TrySendError::Full(())) if self.life.0.should_stop() => return false,
                Err(TrySendError::Full(())) => false,
            };
            if sent {
                if self.ctx().paused.swap(false, Ordering::AcqRel)
                    && let Ok(assignment) = self.consumer.assignment()
                {
                    let _ = self.consumer.resume(&assignment);
                }
                return true;
            }
            if !self.ctx().paused.swap(true, Ordering::AcqRel)
                && let Ok(assignment) = self.consumer.assignment()
            {
                let _ = self.consumer.pause(&assignment);
            }
            // Serve rebalances and heartbeats meanwhile; a message fetched before the
            // pause joins the batch.
            let polled = match self.consumer.poll(BACKPRESSURE_WAIT) {
                Some(Ok(message)) => {
                    self.take(&message, batch);
                    None
                }
                Some(Err(e)) => Some(e),
                None => None,
            };
            if let Some(e) = polled {
                self.on_error(e);
            }
        }
    }

    fn ack(&mut self, partition: i32, offset: i64) {
        let accepted = self
            .ctx()
            .acks
            .lock()
            .partitions
            .get_mut(&partition)
            .is_some_and(|acks| acks.on_ack(offset));
        if !accepted {
            // The partition moved to another member (which gets the message again), or
            // the offset was acknowledged already.
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Commits what a manual-ack member's acks allow, every [`COMMIT_INTERVAL`] (the
    /// rebalance callback commits synchronously when partitions leave, including on
    /// close).
    fn commit_acks(&mut self) {
        if !self.ctx().tracks_acks() || self.last_commit.elapsed() < COMMIT_INTERVAL {
            return;
        }
        self.last_commit = Instant::now();
        let mut commits = TopicPartitionList::new();
        self.ctx()
            .acks
            .lock()
            .commits(&self.ctx().topic, None, false, &mut commits);
        if commits.count() > 0 {
            // Best effort: an offset not committed means a redelivery, never a loss.
            let _ = self.consumer.commit(&commits, CommitMode::Async);
        }
    }

    /// Sorts a consumer error: fatal ones end the subscription; connection and topic
    /// trouble is remembered and checked once it has lasted the request timeout; the rest
    /// librdkafka retries by itself.
    fn on_error(&mut self, error: KafkaError) {
        let ctx = self.consumer.context();
        if let KafkaError::MessageConsumptionFatal(code) = error {
            self.fatal = Some(AdapterError::closed(format!(
                "{}: the consumer failed: {code}",
                ctx.what
            )));
            return;
        }
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        match code {
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication => {
                self.fatal = Some(AdapterError::rejected(format!(
                    "{}: the broker refused: {code}",
                    ctx.what
                )));
            }
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition => {
                let what = code.to_string();
                match &mut self.trouble {
                    Some(trouble) => trouble.what = what,
                    None => {
                        self.trouble = Some(Trouble {
                            since: Instant::now(),
                            what,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Once trouble has lasted the request timeout, asks the broker for the topic's
    /// metadata: an answer with the topic ends the trouble; no answer, or an answer
    /// without the topic, ends the subscription.
    fn check_trouble(&mut self) -> Option<AdapterError> {
        let ctx = self.consumer.context().clone();
        let trouble = self.trouble.as_ref()?;
        let lasted = trouble.since.elapsed();
        if lasted < ctx.timeout {
            return None;
        }
        let topic: &str = &ctx.topic;
        match self
            .consumer
            .fetch_metadata(Some(topic), HEALTH_CHECK_TIMEOUT.min(ctx.timeout))
        {
            Ok(metadata) => {
                let found = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
                if found {
                    self.trouble = None;
                    None
                } else {
                    Some(AdapterError::closed(format!(
                        "{}: the topic no longer exists on the broker (consumer error for {}: {})",
                        ctx.what,
                        fmt_duration(lasted),
                        trouble.what
                    )))
                }
            }
            Err(e) => Some(AdapterError::closed(format!(
                "{}: lost the broker: consumer errors for {} ({}), and a metadata request failed too ({})",
                ctx.what,
                fmt_duration(lasted),
                trouble.what,
                e.rdkafka_error_code()
                    .map_or_else(|| e.to_string(), |code| code.to_string())
            ))),
        }
    }

    /// Ends the subscription: reports `error` (then the stream ends), closes the
    /// consumer (its rebalance callback commits, and it leaves the group, waiting up to
    /// the request timeout) and answers `reply`.
    fn finish(
        self,
        reply: Option<oneshot::Sender<Result<(), AdapterError>>>,
        error: Option<AdapterError>,
    ) {
        let Reader {
            consumer, tx, life, ..
        } = self;
        let ctx = consumer.context().clone();
        if let Some(error) = error {
            ctx.signal_ready(Err(error.clone()));
            send_within(&tx, Batch::Error(error), ctx.timeout);
            // The stream ends now; leaving the group below may take a while.
            drop(tx);
            let _ = close(&consumer);
        } else {
            let closed = close(&consumer);
            if let Some(reply) = reply {
                let _ = reply.send(closed);
            }
            drop(tx);
        }
        // Closed: dropping it only frees it. Then teardown may delete its topic.
        drop(consumer);
        drop(life);
    }
}

/// Sends `batch`, waiting up to `timeout` for room (a subscription nobody reads must not
/// hold its reader forever).
fn send_within(tx: &mpsc::Sender<Batch>, batch: Batch, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut batch = batch;
    loop {
        match tx.try_send(batch) {
            Ok(()) | Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                batch = back;
                std::thread::sleep(BACKPRESSURE_WAIT);
            }
            Err(TrySendError::Full(_)) => return,
        }
    }
}

/// Closes `consumer`: revokes its partitions (the rebalance callback commits) and leaves
/// its group, within the request timeout.
fn close(consumer: &BaseConsumer<SubContext>) -> Result<(), AdapterError> {
    let ctx = consumer.context();
    consumer
        .close_queue()
        .map_err(|e| AdapterError::closed(format!("{}: closing the consumer: {e}", ctx.what)))?;
    let deadline = Instant::now() + ctx.timeout;
    while !consumer.closed() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AdapterError::timeout(
                &format!("{}: leaving", ctx.what),
                ctx.timeout,
            ));
        }
        // Messages still returned here were not handed over; their offsets are not
        // committed, so the group delivers them again.
        let _ = consumer.poll(POLL_WAIT.min(left));
    }
    Ok(())
}
