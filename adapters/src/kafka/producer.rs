//! The publishing side: one idempotent librdkafka producer per [`Producer`](crate::Producer).
//!
//! ```text
//!  publish futures ──first poll: enqueue (librdkafka copies the message)──> librdkafka
//!        ^                                                                       │
//!        └──── oneshot per message <── delivery report (producer polling thread) ┘
//! ```
//!
//! A publish is enqueued synchronously when its future is first polled, so messages keep
//! the order of first polls (librdkafka's idempotent producer keeps a partition's order
//! through retries). Two things cannot be done synchronously: creating a topic this
//! backend has not seen yet, and waiting for room when librdkafka's local queue is full.
//! Such a publish takes the "slow path": it queues behind a fair (FIFO) lock, and while
//! any publish is on the slow path every later one joins it, so the order still holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::FANOUT_TOPIC_PARTITIONS;
use super::admin::{OffThread, Shared};
use super::config;
use crate::error::{AdapterError, fmt_duration};
use crate::publish::{PublishOutcome, PublishRequest, Publisher};

/// How long a publish on the slow path sleeps before trying a full local queue again.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// What the delivery report of one message says: delivered, or why not.
type Report = Result<(), KafkaError>;

/// Routes each delivery report to the publish waiting for it.
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<Report>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let report = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        // The publish may have given up (timeout) already.
        let _ = reply.send(report);
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

impl Publisher for KafkaPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        Box::pin(self.inner.clone().publish(request))
    }
}

impl Inner {
    async fn publish(self: Arc<Self>, request: PublishRequest) -> PublishOutcome {
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let fast =
            self.slow.load(Ordering::Acquire) == 0 && self.topics.read().contains(&*request.topic);
        let enqueued = if fast {
            match self.enqueue(&request) {
                Err(Refusal::QueueFull) => self.enqueue_slowly(&request, deadline).await,
                other => other.map_err(|refusal| refusal.outcome(&request)),
            }
        } else {
            self.enqueue_slowly(&request, deadline).await
        };
        let report = match enqueued {
            Ok(report) => report,
            Err(outcome) => return outcome,
        };
        match tokio::time::timeout_at(deadline, report).await {
            Ok(Ok(Ok(()))) => PublishOutcome::Ok,
            Ok(Ok(Err(error))) => delivery_outcome(&request.topic, &error),
            // No report within the publish timeout, or the client went away: the broker
            // may or may not have the message.
            Ok(Err(_)) | Err(_) => PublishOutcome::Unknown,
        }
    }

    /// Hands the message to librdkafka, which copies it.
    fn enqueue(&self, request: &PublishRequest) -> Result<oneshot::Receiver<Report>, Refusal> {
        let (reply, report) = oneshot::channel();
        let mut record =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(&request.topic, Box::new(reply))
                .payload(&request.payload[..]);
        if let Some(key) = &request.key {
            record = record.key(key.as_bytes());
        }
        match self.producer.send(record) {
            Ok(()) => Ok(report),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Refusal::QueueFull)
            }
            Err((error, _)) => Err(Refusal::Other(error)),
        }
    }

    /// The slow path: creates the topic if needed, waits for room in the local queue;
    /// in FIFO order with every other publish on it.
    async fn enqueue_slowly(
        &self,
        request: &PublishRequest,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Report>, PublishOutcome> {
        let _slow = SlowPath::enter(&self.slow);
        let not_sent = |why: String| PublishOutcome::Failed(format!("not sent: {why}"));
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.gate.lock()).await else {
            return Err(not_sent(format!(
                "the publishes queued ahead of it (waiting for a topic to be created or for room in the local queue) took longer than {}",
                fmt_duration(self.shared.options.publish_timeout)
            )));
        };
        if !self.topics.read().contains(&*request.topic) {
            let topic: &str = &request.topic;
            self.shared
                .ensure_topics(&[(topic.to_owned(), FANOUT_TOPIC_PARTITIONS)], deadline)
                .await
                .map_err(|e| not_sent(e.to_string()))?;
            self.topics.write().insert(request.topic.clone());
        }
        loop {
            match self.enqueue(request) {
                Ok(report) => return Ok(report),
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
