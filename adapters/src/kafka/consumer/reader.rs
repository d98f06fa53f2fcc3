//! The reader thread: polls the consumer, hands deliveries over with back-pressure,
//! sorts errors, and closes the consumer at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::super::admin::ReaderLife;
use super::context::SubContext;
use super::control::Command;
use super::handoff::Outlet;
use super::start::assign_all;
use super::{BACKPRESSURE_WAIT, COMMIT_INTERVAL, HEALTH_CHECK_TIMEOUT, MAX_BATCH, POLL_WAIT};
use crate::error::{AdapterError, fmt_duration};
use crate::subscription::{AckToken, AckTokenRepr, Batch, Delivery};

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
    /// Where deliveries go: one subscription, or the fan-out subscriptions sharing this
    /// consumer.
    pub(super) outlet: Outlet,
    pub(super) commands: std_mpsc::Receiver<Command>,
    pub(super) rejected: Arc<AtomicU64>,
    pub(super) trouble: Option<Trouble>,
    /// An error that ends the subscription, noticed where it could not be acted on.
    pub(super) fatal: Option<AdapterError>,
    pub(super) last_commit: Instant,
    /// Deliveries taken from the consumer and not handed over yet.
    pub(super) batch: Vec<Delivery>,
}

/// Why a reader ends.
pub(super) enum End {
    /// The last subscription unsubscribed: answered once the consumer is closed.
    Unsubscribed(oneshot::Sender<Result<(), AdapterError>>),
    /// Every subscription was dropped (or the consumer never became ready).
    Dropped,
    /// The consumer cannot go on: every subscription gets this error, then its stream
    /// ends.
    Failed(AdapterError),
}

/// What one poll produced, once the message (which borrows the consumer) is taken.
pub(super) enum Polled {
    Nothing,
    Message,
    Error(KafkaError),
}

impl Reader {
    pub(super) fn ctx(&self) -> &SubContext {
        self.consumer.context()
    }

    pub(super) fn run(mut self) {
        let started = Instant::now();
        if let Err(error) = self.start() {
            self.ctx().signal_ready(Err(error));
            self.finish(End::Dropped);
            return;
        }
        let end = self.pump(started);
        self.finish(end);
    }

    /// Fan-out: assign every partition at its resolved start. Group: join it (the
    /// rebalance callback does the rest).
    fn start(&mut self) -> Result<(), AdapterError> {
        let ctx = self.ctx();
        if ctx.member {
            return self
                .consumer
                .subscribe(&[&*ctx.topic])
                .map_err(|e| AdapterError::rejected(format!("{}: {e}", ctx.what)));
        }
        assign_all(&self.consumer)
    }

    /// The poll loop, until something ends it.
    fn pump(&mut self, started: Instant) -> End {
        loop {
            if let Some(end) = self.serve(None) {
                return end;
            }
            if let Some(error) = self.fatal.take() {
                return End::Failed(error);
            }
            if self.life.0.should_stop() {
                return End::Failed(AdapterError::closed(format!(
                    "{}: the backend was torn down (its topics and groups are being deleted)",
                    self.ctx().what
                )));
            }
            if self.ctx().is_ready_pending() && started.elapsed() >= self.ctx().timeout {
                let last = self
                    .trouble
                    .as_ref()
                    .map(|t| format!(" (last error: {})", t.what))
                    .unwrap_or_default();
                let error = AdapterError::timeout(&self.ctx().what, self.ctx().timeout);
                return End::Failed(AdapterError::new(
                    error.kind(),
                    format!(
                        "{}: no partition assignment from the group coordinator{last}",
                        error.message()
                    ),
                ));
            }
            self.commit_acks();
            if let Some(error) = self.check_trouble() {
                return End::Failed(error);
            }
            let polled = match self.consumer.poll(POLL_WAIT) {
                None => Polled::Nothing,
                Some(Ok(message)) => {
                    let delivery = self.delivery(&message);
                    self.batch.push(delivery);
                    Polled::Message
                }
                Some(Err(e)) => Polled::Error(e),
            };
            match polled {
                Polled::Nothing => {}
                Polled::Error(e) => self.on_error(e),
                Polled::Message => {
                    // Gather what else is already there into the same batch.
                    while self.batch.len() < MAX_BATCH {
                        let more = match self.consumer.poll(Duration::ZERO) {
                            None => None,
                            Some(Ok(message)) => {
                                let delivery = self.delivery(&message);
                                self.batch.push(delivery);
                                continue;
                            }
                            Some(Err(e)) => Some(e),
                        };
                        if let Some(e) = more {
                            self.on_error(e);
                        }
                        break;
                    }
                    if let Err(end) = self.hand_over() {
                        return end;
                    }
                }
            }
        }
    }

    /// Turns a message into a delivery.
    pub(super) fn delivery(&self, message: &BorrowedMessage<'_>) -> Delivery {
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
        Delivery {
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
        }
    }

    pub(super) fn ack(&mut self, partition: i32, offset: i64) {
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
    pub(super) fn on_error(&mut self, error: KafkaError) {
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

    /// Serves the acks still queued when the reader ends; returns the replies of
    /// unsubscribes queued with them, to be answered once the consumer is closed.
    fn serve_last_commands(&mut self) -> Vec<oneshot::Sender<Result<(), AdapterError>>> {
        let mut replies = Vec::new();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Ack { partition, offset } => self.ack(partition, offset),
                Command::Unsubscribe { reply, .. } => replies.push(reply),
            }
        }
        replies
    }

    /// Ends the reader: reports a failure to every subscription (then their streams
    /// end), closes the consumer (its rebalance callback commits, and it leaves the
    /// group, waiting up to the request timeout) and answers the unsubscribes waiting
    /// for that.
    fn finish(mut self, end: End) {
        // A subscription may ack and then be dropped while its last batch is being handed
        // over; the hand-over then ends the reader with those acks still queued. Served
        // here, they are in the commit the rebalance callback makes when the consumer
        // closes, so the next member does not get those messages again.
        let mut unsubscribes = self.serve_last_commands();
        let Reader {
            consumer,
            outlet,
            life,
            ..
        } = self;
        let ctx = consumer.context().clone();
        // A shared consumer takes no more subscriptions from here on.
        let channels = outlet.close();
        let closed = match end {
            End::Failed(error) => {
                ctx.signal_ready(Err(error.clone()));
                // Teardown is waiting: a subscription nobody reads gets no error, only
                // the end of its stream.
                let wait = if life.0.should_stop() {
                    Duration::ZERO
                } else {
                    ctx.timeout
                };
                let deadline = Instant::now() + wait;
                for tx in &channels {
                    send_until(tx, Batch::Error(error.clone()), deadline);
                }
                // The streams end now; leaving the group below may take a while.
                drop(channels);
                close(&consumer)
            }
            End::Unsubscribed(reply) => {
                unsubscribes.push(reply);
                let closed = close(&consumer);
                drop(channels);
                closed
            }
            End::Dropped => {
                drop(channels);
                close(&consumer)
            }
        };
        for reply in unsubscribes {
            let _ = reply.send(closed.clone());
        }
        // Closed: dropping it only frees it. Then teardown may delete its topic.
        drop(consumer);
        drop(life);
    }
}

/// Sends `batch`, waiting until `deadline` for room (a subscription nobody reads must
/// not hold its reader forever).
fn send_until(tx: &mpsc::Sender<Batch>, batch: Batch, deadline: Instant) {
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
