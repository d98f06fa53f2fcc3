//! The publishing side: one idempotent librdkafka producer per [`Producer`](crate::Producer).
//!
//! ```text
//!  publish (batch) futures ──first poll: enqueue each (librdkafka copies it)──> librdkafka
//!        ^                                                                        │
//!        └──── the batch's reports, one wake-up <── delivery reports (polling thread) ┘
//! ```
//!
//! A batch ([`publish_batch`](crate::Producer::publish_batch)) enqueues all its messages,
//! then waits once, by one deadline, until the polling thread has filled in every report
//! (a single publish is a batch of one). A publish is enqueued synchronously when its
//! future is first polled, so messages keep the order of first polls (librdkafka's
//! idempotent producer keeps a partition's order through retries). Two things cannot be done synchronously: creating a topic this
//! backend has not seen yet, and waiting for room when librdkafka's local queue is full.
//! Such a publish takes the "slow path": it queues behind a fair (FIFO) lock, and while
//! any publish is on the slow path every later one joins it, so the order still holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::FANOUT_TOPIC_PARTITIONS;
use super::admin::{OffThread, Shared};
use super::config;
use crate::error::{AdapterError, fmt_duration};
use crate::publish::{BatchPublisher, PublishOutcome, PublishRequest};

/// How long a publish on the slow path sleeps before trying a full local queue again.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// What the delivery report of one message says: delivered, or why not.
type Report = Result<(), KafkaError>;

/// Routes each delivery report to the batch waiting for it.
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Slot>;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: Self::DeliveryOpaque) {
        let report = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        slot.reports.fill(slot.index, report);
        // Dropping the slot counts the report as done.
    }
}

/// Where one message's delivery report goes: its batch, and its place in the batch.
///
/// Dropping it counts its report as done, whether one was filled in or not (a message
/// librdkafka refused comes back with its slot; one dropped without a report stays
/// unknown), so a batch never waits longer than its last slot lives.
struct Slot {
    reports: Arc<Reports>,
    index: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.reports.release();
    }
}

/// The delivery reports of one batch (of one message, for
/// [`Producer::publish`](crate::Producer::publish)), filled in by librdkafka's polling
/// thread; the batch's future is woken once, by the last.
struct Reports {
    /// One place per message of the batch. Taken (left empty) when the batch stops
    /// waiting: a report arriving later is dropped.
    reports: Mutex<Vec<Option<Report>>>,
    /// Reports still expected, plus one while the batch is still enqueueing.
    left: AtomicUsize,
    /// Told when `left` reaches zero.
    done: Notify,
}

impl Reports {
    fn new(count: usize) -> Arc<Reports> {
        Arc::new(Reports {
            reports: Mutex::new(std::iter::repeat_with(|| None).take(count).collect()),
            left: AtomicUsize::new(1),
            done: Notify::new(),
        })
    }

    /// Counts a report to come (when its [`Slot`] is made).
    fn expect(&self) {
        self.left.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts an expected report (or the enqueueing) as done; `true` for the last one.
    fn release(&self) -> bool {
        let last = self.left.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            self.done.notify_one();
        }
        last
    }

    /// Files the report of the message at `index` (dropped when the batch stopped waiting).
    fn fill(&self, index: usize, report: Report) {
        if let Some(place) = self.reports.lock().get_mut(index) {
            *place = Some(report);
        }
    }
}

/// A producer: cheap to clone, every clone publishes through the same librdkafka client.
#[derive(Clone)]
pub(crate) struct KafkaPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    producer: OffThread<ThreadedProducer<DeliveryContext>>,
    shared: Arc<Shared>,
    /// Topics this producer has published to (so known to exist): the fast path.
    topics: RwLock<HashSet<Arc<str>>>,
    /// Publishes on the slow path now; while nonzero, new publishes take it too.
    slow: AtomicUsize,
    /// The slow path's FIFO lock (Tokio's mutex is fair).
    gate: tokio::sync::Mutex<()>,
}

impl KafkaPublisher {
    /// Makes the producer and proves the broker answers it (one metadata round trip),
    /// which also opens its connections before the first publish.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if librdkafka refuses
    /// the configuration, [`ErrorKind::Connect`](crate::ErrorKind::Connect) if the broker
    /// does not answer within the request timeout.
    pub(crate) async fn new(shared: Arc<Shared>) -> Result<KafkaPublisher, AdapterError> {
        let producer: ThreadedProducer<DeliveryContext> =
            config::producer(&shared.bootstrap, &shared.options)
                .create_with_context(DeliveryContext)
                .map_err(|e| {
                    AdapterError::invalid_input(format!(
                        "cannot create a kafka producer for {}: {e}",
                        shared.url
                    ))
                })?;
        let inner = Arc::new(Inner {
            producer: OffThread::new(producer),
            shared,
            topics: RwLock::new(HashSet::new()),
            slow: AtomicUsize::new(0),
            gate: tokio::sync::Mutex::new(()),
        });
        let timeout = inner.shared.options.request_timeout;
        let probe = inner.clone();
        let answered = tokio::task::spawn_blocking(move || {
            probe
                .producer
                .client()
                .fetch_metadata(None, timeout)
                .map(drop)
        })
        .await;
        let url = &inner.shared.url;
        match answered {
            Ok(Ok(())) => Ok(KafkaPublisher { inner }),
            Ok(Err(e)) => Err(AdapterError::connect(format!(
                "a new producer could not reach kafka at {url} within {}: {e}",
                fmt_duration(timeout)
            ))),
            Err(e) => Err(AdapterError::closed(format!(
                "a new producer for kafka at {url}: {e}"
            ))),
        }
    }
}

impl BatchPublisher for KafkaPublisher {
    /// Every message is enqueued in order, then the batch waits once, by one deadline,
    /// for all the delivery reports.
    fn publish_all(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        Box::pin(self.inner.clone().publish_all(requests))
    }
}

impl Inner {
    async fn publish_all(self: Arc<Self>, requests: Vec<PublishRequest>) -> Vec<PublishOutcome> {
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let reports = Reports::new(requests.len());
        // `Some`: not sent, and why; `None`: enqueued, its report decides.
        let mut refused: Vec<Option<PublishOutcome>> = vec![None; requests.len()];
        // Once one message of the batch takes the slow path, the rest follow it (order).
        let mut slow: Option<(SlowPath<'_>, tokio::sync::MutexGuard<'_, ()>)> = None;
        for (index, request) in requests.iter().enumerate() {
            if slow.is_none() {
                let fast = self.slow.load(Ordering::Acquire) == 0
                    && self.topics.read().contains(&*request.topic);
                if fast {
                    match self.enqueue(request, &reports, index) {
                        Ok(()) => continue,
                        Err(Refusal::QueueFull) => {}
                        Err(other) => {
                            refused[index] = Some(other.outcome(request));
                            continue;
                        }
                    }
                }
                let path = SlowPath::enter(&self.slow);
                let Ok(turn) = tokio::time::timeout_at(deadline, self.gate.lock()).await else {
                    let reason = format!(
                        "not sent: the publishes queued ahead of it (waiting for a topic to be created or for room in the local queue) took longer than {}",
                        fmt_duration(self.shared.options.publish_timeout)
                    );
                    for place in &mut refused[index..] {
                        *place = Some(PublishOutcome::Failed(reason.clone()));
                    }
                    break;
                };
                slow = Some((path, turn));
            }
            if let Err(outcome) = self
                .enqueue_slowly(request, &reports, index, deadline)
                .await
            {
                refused[index] = Some(outcome);
            }
        }
        drop(slow);
        if !reports.release() {
            // No report within the publish timeout, or the client went away: the broker
            // may or may not have the message (`None` below).
            let _ = tokio::time::timeout_at(deadline, reports.done.notified()).await;
        }
        let delivered = std::mem::take(&mut *reports.reports.lock());
        refused
            .into_iter()
            .zip(requests.iter())
            .enumerate()
            .map(|(index, (refused, request))| {
                refused.unwrap_or_else(|| match delivered.get(index) {
                    Some(Some(Ok(()))) => PublishOutcome::Ok,
                    Some(Some(Err(error))) => delivery_outcome(&request.topic, error),
                    _ => PublishOutcome::Unknown,
                })
            })
            .collect()
    }

    /// Hands the message to librdkafka, which copies it; its report goes to `reports`
    /// at `index`.
    fn enqueue(
        &self,
        request: &PublishRequest,
        reports: &Arc<Reports>,
        index: usize,
    ) -> Result<(), Refusal> {
        reports.expect();
        let slot = Box::new(Slot {
            reports: reports.clone(),
            index,
        });
        let mut record = BaseRecord::<[u8], [u8], _>::with_opaque_to(&request.topic, slot)
            .payload(&request.payload[..]);
        if let Some(key) = &request.key {
            record = record.key(key.as_bytes());
        }
        // On an error the record comes back with its slot, and dropping it releases it.
        match self.producer.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Refusal::QueueFull)
            }
            Err((error, _)) => Err(Refusal::Other(error)),
        }
    }

    /// The slow path, for a caller holding the FIFO gate: creates the topic if needed,
    /// waits for room in the local queue.
    async fn enqueue_slowly(
        &self,
        request: &PublishRequest,
        reports: &Arc<Reports>,
        index: usize,
        deadline: Instant,
    ) -> Result<(), PublishOutcome> {
        let not_sent = |why: String| PublishOutcome::Failed(format!("not sent: {why}"));
        if !self.topics.read().contains(&*request.topic) {
            let topic: &str = &request.topic;
            self.shared
                .ensure_topics(&[(topic.to_owned(), FANOUT_TOPIC_PARTITIONS)], deadline)
                .await
                .map_err(|e| not_sent(e.to_string()))?;
            self.topics.write().insert(request.topic.clone());
        }
        loop {
            match self.enqueue(request, reports, index) {
                Ok(()) => return Ok(()),
                Err(Refusal::QueueFull) if Instant::now() + QUEUE_FULL_BACKOFF < deadline => {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err(Refusal::QueueFull) => {
                    return Err(not_sent(format!(
                        "librdkafka's local queue (queue.buffering.max.messages) stayed full for {}",
                        fmt_duration(self.shared.options.publish_timeout)
                    )));
                }
                Err(refusal) => return Err(refusal.outcome(request)),
            }
        }
    }
}

/// Counts a publish on the slow path for as long as it lives (also when the publish
/// future is dropped half-way).
struct SlowPath<'a>(&'a AtomicUsize);

impl<'a> SlowPath<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        SlowPath(count)
    }
}

impl Drop for SlowPath<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why librdkafka did not take a message.
#[derive(Debug)]
enum Refusal {
    /// Its local queue is full: wait and try again.
    QueueFull,
    /// Anything else (too large, unknown topic, fatal producer state): never sent.
    Other(KafkaError),
}

impl Refusal {
    fn outcome(self, request: &PublishRequest) -> PublishOutcome {
        match self {
            Refusal::QueueFull => {
                PublishOutcome::Failed("not sent: librdkafka's local queue is full".to_owned())
            }
            Refusal::Other(error) => PublishOutcome::Failed(format!(
                "not sent to topic {} ({} bytes): {}",
                request.topic,
                request.payload.len(),
                reason(&error)
            )),
        }
    }
}

/// The outcome of a message whose delivery report says it failed.
///
/// Failures that leave the message's fate open are [`PublishOutcome::Unknown`]: a
/// timeout (librdkafka's `message.timeout.ms` is the publish timeout), a purge of sent
/// messages, a lost connection, a fatal idempotence error, or a write whose replication
/// the broker could not confirm. Everything else is an answer from the broker (or a local
/// check) that the message was not written: [`PublishOutcome::Failed`].
pub(crate) fn delivery_outcome(topic: &str, error: &KafkaError) -> PublishOutcome {
    match error.rdkafka_error_code() {
        Some(code) if fate_unknown(code) => PublishOutcome::Unknown,
        _ => PublishOutcome::Failed(format!(
            "kafka did not take the message for topic {topic}: {}",
            reason(error)
        )),
    }
}

/// Whether a failed delivery may still have been written.
pub(crate) fn fate_unknown(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::PurgeInflight
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::UnknownProducerId
    )
}

/// librdkafka's text for an error, without rdkafka's wrapper prefix.
fn reason(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => code.to_string(),
        None => error.to_string(),
    }
}
