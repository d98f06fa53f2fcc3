//! Publishing to NATS core, and what "confirmed" means there.
//!
//! Core NATS has no per-message acknowledgement. What can be proved is that the server
//! *processed* a message: it handles a connection's input in order, so once it answers a
//! round trip sent after the message (see [`Pinger::round_trip`]), it has routed the
//! message to every subscription that existed then. A publish resolves
//! [`PublishOutcome::Ok`] at that point.
//!
//! ```text
//!  publish futures ──PUB──> async-nats client ──> socket      (no waiting for the server)
//!        │ after the PUBs are queued: a waiter (connection epoch, deadline, oneshot)
//!        v
//!  waiters ──> flusher task: take all waiters, one round trip, resolve them all, repeat
//! ```
//!
//! One round trip is in flight at a time and it covers every publish queued before it
//! started, so at high rates one round trip confirms hundreds of messages and the producer
//! never waits for the server between messages. A batch
//! ([`publish_batch`](crate::Producer::publish_batch)) queues all its messages, then waits as
//! *one* waiter, so a batch costs one deadline, one oneshot and one wake-up of the flusher
//! however many messages it holds.
//!
//! A connection that is lost and re-established in between must not pass for a
//! confirmation: a message written to the old socket may never have reached the server.
//! Each waiter notes how many times the client had connected when its publish (a batch:
//! its first publish) was queued; a round trip confirms only waiters from the connection
//! it travelled on, the others resolve [`PublishOutcome::Unknown`] (including, conservatively, publishes queued during
//! the reconnect that went out on the new connection). Publishes queued after the reconnect
//! are confirmed as usual.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, HeaderMap, PublishErrorKind, Statistics, Subject};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::client::{self, Connection, Health, Pinger};
use crate::error::fmt_duration;
use crate::publish::{BatchPublisher, PublishOutcome, PublishRequest};

/// A publish waiting for the round trip that confirms it.
struct Waiter {
    /// `Statistics::connects` when its message was queued.
    epoch: u64,
    /// When it resolves as unknown at the latest.
    deadline: Instant,
    reply: oneshot::Sender<PublishOutcome>,
}

/// The publishes waiting for a round trip, oldest first.
struct Waiters {
    queue: VecDeque<Waiter>,
    /// Set when the flusher stopped: nobody would resolve a new waiter.
    closed: bool,
}

/// What the publish futures and the flusher task share.
struct Shared {
    client: Client,
    stats: Arc<Statistics>,
    /// The URL with its password redacted, for messages.
    url: String,
    timeout: Duration,
    waiters: Mutex<Waiters>,
    /// Wakes the flusher when a waiter is added.
    wake: Notify,
    /// Cancelled when the producer is dropped: the flusher stops and the waiters resolve
    /// as unknown.
    stop: CancellationToken,
    /// Held while a batch is handed to the client. Tokio's mutex is fair (FIFO), so a
    /// batch that has to wait for room in the client's queue half-way keeps the batches
    /// polled after it behind its remaining messages.
    order: tokio::sync::Mutex<()>,
}

/// The [`BatchPublisher`] of a NATS core producer: one connection, one flusher task.
pub(super) struct CorePublisher {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl CorePublisher {
    /// Starts the flusher task for `connection` on the current runtime.
    pub(super) fn start(connection: Connection, url: String, timeout: Duration) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            stats: connection.client.statistics(),
            client: connection.client.clone(),
            url,
            timeout,
            waiters: Mutex::new(Waiters {
                queue: VecDeque::new(),
                closed: false,
            }),
            wake: Notify::new(),
            stop: stop.clone(),
            order: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(flush_loop(
            shared.clone(),
            connection.pinger(),
            connection.health,
        ));
        CorePublisher {
            shared,
            _stop: stop.drop_guard(),
        }
    }
}

impl BatchPublisher for CorePublisher {
    /// The whole batch is queued in order, then waits as one waiter: one round trip
    /// confirms all of it, with one deadline and one connection epoch for the batch.
    fn publish_all(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.publish_all(requests).await })
    }
}

impl Shared {
    /// Queues `requests` in order, then waits for the round trip that confirms them all.
    /// One deadline, one epoch and one waiter serve the whole batch; a request that could
    /// not be queued has its own `Failed` outcome, the others share the waiter's.
    async fn publish_all(&self, requests: Vec<PublishRequest>) -> Vec<PublishOutcome> {
        let deadline = Instant::now() + self.timeout;
        let epoch = self.stats.connects.load(Ordering::Acquire);
        let count = requests.len();
        // `None`: queued, waiting for the round trip; `Some`: settled without it.
        let mut outcomes: Vec<Option<PublishOutcome>> = Vec::with_capacity(count);
        let queue_all = async {
            let _turn = self.order.lock().await;
            for request in requests {
                let outcome = self.queue(request).await;
                outcomes.push(outcome);
            }
        };
        // The batch takes its turn at its first poll and keeps it until every message is
        // queued, so batches enter the connection in the order they are first polled, whole.
        // `unconstrained`: with Tokio's
        // cooperative budget spent, the client's queue would answer "not now" at the first
        // poll without taking a place in line, and a publish polled later could overtake.
        let in_time = tokio::task::unconstrained(tokio::time::timeout_at(deadline, queue_all))
            .await
            .is_ok();
        if !in_time {
            // The request being queued when time ran out, and those after it, never went.
            let reason = format!(
                "not sent: the connection to nats at {} took no message for {} (it is reconnecting, or the client's queue stayed full)",
                self.url,
                fmt_duration(self.timeout)
            );
            outcomes.resize(count, Some(PublishOutcome::Failed(reason)));
        }
        let confirmation = if outcomes.iter().any(Option::is_none) {
            self.confirmation(epoch, deadline).await
        } else {
            PublishOutcome::Unknown // unused: every request is settled
        };
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| confirmation.clone()))
            .collect()
    }

    /// Hands one message to the client: `None` once it is queued, or `Some(Failed)` when it
    /// cannot be sent.
    async fn queue(&self, request: PublishRequest) -> Option<PublishOutcome> {
        let subject = Subject::from(&*request.topic);
        let queued = match request.key.as_deref() {
            None => self.client.publish(subject, request.payload).await,
            Some(key) => {
                let mut headers = HeaderMap::new();
                if let Err(reason) = client::key_headers(&mut headers, key) {
                    return Some(PublishOutcome::Failed(format!("not sent: {reason}")));
                }
                self.client
                    .publish_with_headers(subject, headers, request.payload)
                    .await
            }
        };
        let error = queued.err()?;
        let reason = match error.kind() {
            PublishErrorKind::MaxPayloadExceeded => format!(
                "the message is larger than nats at {} accepts: {}",
                self.url,
                client::cause(&error)
            ),
            PublishErrorKind::InvalidSubject => {
                format!("'{}' is not a valid NATS subject", request.topic)
            }
            PublishErrorKind::Send => format!(
                "the connection to nats at {} is closed (the client gave up reconnecting)",
                self.url
            ),
        };
        Some(PublishOutcome::Failed(format!("not sent: {reason}")))
    }

    /// Waits, as one waiter, for the round trip that confirms what was queued on
    /// connection `epoch`: `Ok`, or `Unknown` by `deadline` at the latest.
    async fn confirmation(&self, epoch: u64, deadline: Instant) -> PublishOutcome {
        // The flusher resolves every waiter by its deadline (no timer per batch).
        let (reply, confirmed) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock();
            if waiters.closed {
                return PublishOutcome::Unknown;
            }
            waiters.queue.push_back(Waiter {
                epoch,
                deadline,
                reply,
            });
        }
        self.wake.notify_one();
        confirmed.await.unwrap_or(PublishOutcome::Unknown)
    }
}

/// The flusher: while publishes wait, one round trip after another, each resolving every
/// publish queued before it started. A round trip waits no longer than the earliest
/// deadline of the publishes it covers, and a publish waits for at most the round trip in
/// flight when it was queued (which ends by an earlier deadline) and its own, so every
/// publish resolves by its deadline.
async fn flush_loop(shared: Arc<Shared>, pinger: Pinger, mut health: watch::Receiver<Health>) {
    loop {
        let batch: Vec<Waiter> = loop {
            let batch: Vec<Waiter> = shared.waiters.lock().queue.drain(..).collect();
            if !batch.is_empty() {
                break batch;
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                () = shared.stop.cancelled() => return close(&shared),
            }
        };
        let disconnects = health.borrow_and_update().disconnects;
        let earliest = batch
            .iter()
            .map(|w| w.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        let left = earliest.saturating_duration_since(Instant::now());
        let confirmed = if left.is_zero() {
            false
        } else {
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => return close(&shared),
                result = pinger.round_trip(left) => result.is_ok(),
                // Lost (or gone for good): whatever was on the old socket may never have
                // reached the server, and the round trip went with it.
                _ = health.wait_for(|h| h.disconnects > disconnects) => false,
            }
        };
        let epoch = shared.stats.connects.load(Ordering::Acquire);
        for waiter in batch {
            let outcome = if confirmed && waiter.epoch == epoch {
                PublishOutcome::Ok
            } else {
                PublishOutcome::Unknown
            };
            let _ = waiter.reply.send(outcome);
        }
    }
}

/// Stops taking waiters; those queued resolve as unknown (their senders drop).
fn close(shared: &Shared) {
    let mut waiters = shared.waiters.lock();
    waiters.closed = true;
    waiters.queue.clear();
}
