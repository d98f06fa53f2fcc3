//! The consuming side: one channel and one consumer per subscription, and the task that
//! moves deliveries from lapin's consumer into the bounded channel of the
//! [`Subscription`](crate::Subscription).
//!
//! ```text
//!  broker ──basic.deliver──> lapin consumer ──> reader task ──Batch──> Subscription
//!     ^                                            │
//!     └──── basic.ack (auto mode, multiple) ───────┘
//! ```
//!
//! Acknowledgement:
//! - [`AckMode::Auto`]: the consumer uses manual acks, and the reader acknowledges each
//!   batch (`basic.ack multiple=true` on its last tag) once the batch is in the
//!   subscription's channel. Compared with `no_ack`, this keeps memory bounded: when the
//!   application does not keep up, the channel fills, acks stop, and the broker stops at
//!   the prefetch limit instead of pushing into an unbounded client buffer. One ack frame
//!   per batch costs little.
//! - [`AckMode::Manual`]: deliveries carry their delivery tag;
//!   [`Subscription::ack`](crate::Subscription::ack) and
//!   [`Subscription::nack`](crate::Subscription::nack) send `basic.ack` /
//!   `basic.nack requeue=true`. RabbitMQ closes a channel that acknowledges a tag twice or
//!   a tag it does not know, so the adapter keeps the set of unacknowledged tags and
//!   refuses (counts in `rejected_acks`) an ack for a tag not in it, without sending it.
//!
//! RabbitMQ has no per-message ack timeout: an unacknowledged message is delivered again
//! when its consumer goes away (the subscription is dropped, its channel or connection
//! closes), to another consumer of the queue, marked `redelivered`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions, QueueDeleteOptions};
use lapin::types::ShortString;
use lapin::{Channel, Consumer};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Context;
use super::errors::{self, Deadline};
use super::message;
use super::topology::QueueType;
use crate::error::AdapterError;
use crate::subscription::{AckMode, AckToken, AckTokenRepr, Batch, Delivery, SubscriptionControl};

/// Most deliveries the reader hands over in one batch; it hands over whatever is ready
/// after each wake-up, so this only bounds a batch's size.
const MAX_DELIVERY_BATCH: usize = 256;

/// What the reader and the subscription's control share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Set before `basic.cancel` is sent, so the reader takes the end of the consumer
    /// as the unsubscribe it is, not as the broker cancelling.
    unsubscribing: AtomicBool,
    /// Delivery tags handed out and not yet acked or nacked (manual mode only).
    unacked: Mutex<HashSet<u64>>,
    /// Acks and nacks refused because their tag was not outstanding.
    rejected: AtomicU64,
}

/// Everything the reader task needs.
pub(super) struct Reader {
    pub(super) context: Arc<Context>,
    pub(super) channel: Channel,
    pub(super) consumer: Consumer,
    pub(super) tx: mpsc::Sender<Batch>,
    pub(super) topic: Arc<str>,
    pub(super) queue: String,
    pub(super) queue_type: QueueType,
    pub(super) ack: AckMode,
    pub(super) shared: Arc<Shared>,
    /// Cancel the consumer, and wait for the broker's confirmation, when the
    /// subscription is dropped: its queue is deleted next, and RabbitMQ (3.10) crashes the
    /// channel, and with it the connection, on a `basic.cancel` for a quorum queue that was
    /// deleted first.
    pub(super) cancel_when_dropped: bool,
    /// Signals the subscription's cleanup that the reader has finished (when dropped).
    pub(super) _finished: DropGuard,
}

impl Reader {
    /// Runs until the subscription is dropped or the consumer ends. Dropping the
    /// consumer then cancels it if it is still active; the channel closes once the
    /// subscription's [`Control`] has dropped its handle too.
    pub(super) async fn run(mut self) {
        let dropped = self.forward().await;
        if dropped && self.cancel_when_dropped && !self.shared.unsubscribing.load(Ordering::Acquire)
        {
            let deadline = Deadline::after(self.context.options.request_timeout);
            let _ = deadline
                .run(
                    String::new,
                    self.channel
                        .basic_cancel(self.consumer.tag(), BasicCancelOptions::default()),
                )
                .await;
        }
    }

    /// Forwards deliveries; true when it stopped because the subscription was dropped.
    async fn forward(&mut self) -> bool {
        loop {
            let item = tokio::select! {
                biased;
                () = self.tx.closed() => return true,
                item = self.consumer.next() => item,
            };
            let first = match item {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return self.report(&error).await,
                None => return self.report_end().await,
            };
            let mut batch = Vec::with_capacity(8);
            let mut last_tag = first.delivery_tag;
            batch.push(self.delivery(first));
            // Whatever else is ready goes into the same batch.
            let mut after: Option<Option<lapin::Error>> = None;
            while batch.len() < MAX_DELIVERY_BATCH {
                match self.consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => {
                        last_tag = delivery.delivery_tag;
                        batch.push(self.delivery(delivery));
                    }
                    Some(Some(Err(error))) => {
                        after = Some(Some(error));
                        break;
                    }
                    Some(None) => {
                        after = Some(None);
                        break;
                    }
                    None => break,
                }
            }
            let batch = if batch.len() == 1 {
                Batch::One(batch.remove(0))
            } else {
                Batch::Many(batch)
            };
            if self.tx.send(batch).await.is_err() {
                return true;
            }
            if self.ack == AckMode::Auto {
                // A failure here means the channel is gone; the consumer reports why.
                let _ = self
                    .channel
                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await;
            }
            match after {
                None => {}
                Some(Some(error)) => return self.report(&error).await,
                Some(None) => return self.report_end().await,
            }
        }
    }

    /// A lapin delivery as a brokerbench one, timestamped now.
    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        let received_at = Instant::now();
        let ack_token = match self.ack {
            AckMode::Auto => AckToken::default(),
            AckMode::Manual => {
                self.shared.unacked.lock().insert(delivery.delivery_tag);
                AckToken(AckTokenRepr::Tag(delivery.delivery_tag))
            }
        };
        let attempt = match self.queue_type {
            QueueType::Quorum => Some(message::quorum_attempt(&delivery.properties)),
            QueueType::Classic => None,
        };
        Delivery {
            topic: self.topic.clone(),
            key: message::key(&delivery.routing_key, &delivery.properties),
            payload: Bytes::from(delivery.data),
            redelivered: delivery.redelivered,
            attempt,
            sequence: None,
            received_at,
            ack_token,
        }
    }

    /// Sends the error that ended the consumer; false (the consumer ended, not the
    /// subscription).
    async fn report(&self, error: &lapin::Error) -> bool {
        let (kind, text) = errors::describe(error);
        let error = AdapterError::new(
            kind,
            format!(
                "the subscription to '{}' on rabbitmq at {} ended: {text}",
                self.topic, self.context.target.display
            ),
        );
        let _ = self.tx.send(Batch::Error(error)).await;
        false
    }

    /// The consumer ended without an error: fine after an unsubscribe, otherwise the
    /// broker cancelled it (its queue was deleted, or the broker closed it). False, as
    /// for [`report`](Self::report).
    async fn report_end(&self) -> bool {
        if self.shared.unsubscribing.load(Ordering::Acquire) {
            return false;
        }
        let error = AdapterError::closed(format!(
            "rabbitmq at {} cancelled the subscription to '{}' (queue '{}' was deleted, or the broker closed the consumer)",
            self.context.target.display, self.topic, self.queue
        ));
        let _ = self.tx.send(Batch::Error(error)).await;
        false
    }
}

/// The subscription's handle on its channel, for acks, nacks and unsubscribe.
pub(super) struct Control {
    pub(super) context: Arc<Context>,
    pub(super) channel: Channel,
    pub(super) consumer_tag: ShortString,
    pub(super) topic: Arc<str>,
    pub(super) queue: String,
    /// Delete the queue when the subscription is dropped (a named fan-out queue; the
    /// server-named ones delete themselves).
    pub(super) delete_queue: bool,
    /// Forget the queue from the backend's record when the subscription is dropped,
    /// because it goes away with it.
    pub(super) forget_queue: bool,
    pub(super) shared: Arc<Shared>,
    /// Cancelled when the reader has finished (and cancelled its consumer).
    pub(super) reader_finished: CancellationToken,
}

impl Drop for Control {
    fn drop(&mut self) {
        if self.forget_queue {
            self.context.topology.forget_queue(&self.queue);
        }
        if !self.delete_queue || !self.channel.status().connected() {
            return;
        }
        // Best effort, bounded by the request timeout, and tracked so that teardown
        // waits for it; the queue's x-expires is the fallback (also when there is no
        // runtime left to run this on).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let channel = self.channel.clone();
        let queue = ShortString::from(self.queue.as_str());
        let deadline = Deadline::after(self.context.options.request_timeout);
        let reader_finished = self.reader_finished.clone();
        self.context.cleanups.spawn_on(
            async move {
                // The consumer goes first (see `Reader::cancel_when_dropped`).
                let _ = tokio::time::timeout_at(deadline.at(), reader_finished.cancelled()).await;
                if channel.status().connected() {
                    let _ = deadline
                        .run(
                            String::new,
                            channel.queue_delete(queue, QueueDeleteOptions::default()),
                        )
                        .await;
                }
            },
            &runtime,
        );
    }
}

impl Control {
    fn settle(
        &self,
        delivery: &Delivery,
        nack: bool,
    ) -> BoxFuture<'static, Result<(), AdapterError>> {
        let verb = if nack { "nack" } else { "ack" };
        let tag = match delivery.ack_token.0 {
            AckTokenRepr::Tag(tag) => tag,
            _ => {
                let error = AdapterError::invalid_input(format!(
                    "{verb} on '{}': the delivery carries no rabbitmq delivery tag (it came from another subscription or backend)",
                    self.topic
                ));
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        if !self.shared.unacked.lock().remove(&tag) {
            // Acked or nacked already: sending it again would make RabbitMQ close the
            // channel.
            self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Ok(())));
        }
        let channel = self.channel.clone();
        let deadline = Deadline::after(self.context.options.request_timeout);
        // Named only when it fails: acks are per message.
        let (topic, context) = (self.topic.clone(), self.context.clone());
        let what = move || {
            format!(
                "{verb} of delivery {tag} on '{topic}' on rabbitmq at {}",
                context.target.display
            )
        };
        Box::pin(async move {
            if nack {
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                deadline.run(what, channel.basic_nack(tag, options)).await
            } else {
                let options = BasicAckOptions { multiple: false };
                deadline.run(what, channel.basic_ack(tag, options)).await
            }
        })
    }
}

impl SubscriptionControl for Control {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.settle(delivery, false)
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.settle(delivery, true)
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.shared.unsubscribing.store(true, Ordering::Release);
        let channel = self.channel.clone();
        let tag = self.consumer_tag.clone();
        let deadline = Deadline::after(self.context.options.request_timeout);
        let what = format!(
            "unsubscribe from '{}' on rabbitmq at {}",
            self.topic, self.context.target.display
        );
        Box::pin(async move {
            deadline
                .run(
                    || what,
                    channel.basic_cancel(tag, BasicCancelOptions::default()),
                )
                .await
        })
    }

    fn rejected_acks(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }
}
