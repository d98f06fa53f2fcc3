//! The reader thread: polls the consumer, hands deliveries over with back-pressure,
//! sorts errors, and closes the consumer at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::super::admin::ReaderLife;
use super::context::SubContext;
use super::control::Command;
use super::start::start_offset;
use super::{
    BACKPRESSURE_WAIT, COMMIT_INTERVAL, HEALTH_CHECK_TIMEOUT, MAX_BATCH, METADATA_RETRY, POLL_WAIT,
};
use crate::error::{AdapterError, fmt_duration};
use crate::subscription::{AckToken, AckTokenRepr, Batch, Delivery, StartPosition};

/// Trouble the reader saw (lost brokers, a vanished topic): checked once it has lasted
/// the request timeout.
pub(super) struct Trouble {
    pub(super) since: Instant,
    pub(super) what: String,
}

/// Tells the backend the reader has ended when dropped, which happens after its
/// consumer is closed (also if the thread panicked).
pub(super) struct LifeGuard(pub(super) Arc<ReaderLife>);

impl Drop for LifeGuard {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// The reader thread's state. `consumer` is declared before `life`, so a reader dropped
/// whole closes its consumer before it reports its end.
pub(super) struct Reader {
    pub(super) consumer: BaseConsumer<SubContext>,
    pub(super) life: LifeGuard,
    pub(super) tx: mpsc::Sender<Batch>,
    pub(super) commands: std_mpsc::Receiver<Command>,
    pub(super) rejected: Arc<AtomicU64>,
    pub(super) trouble: Option<Trouble>,
    /// An error that ends the subscription, noticed where it could not be acted on.
    pub(super) fatal: Option<AdapterError>,
    pub(super) last_commit: Instant,
}

/// What one poll produced, once the message (which borrows the consumer) is taken.
pub(super) enum Polled {
    Nothing,
    Message,
    Error(KafkaError),
}

impl Reader {
    fn ctx(&self) -> &SubContext {
        self.consumer.context()
    }

    pub(super) fn run(mut self) {
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
pub(super) fn send_within(tx: &mpsc::Sender<Batch>, batch: Batch, timeout: Duration) {
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
pub(super) fn close(consumer: &BaseConsumer<SubContext>) -> Result<(), AdapterError> {
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
