//! The subscription handle's side: acks and unsubscribe, sent to the reader thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::READY_MARGIN;
use crate::error::AdapterError;
use crate::subscription::{AckTokenRepr, Delivery, SubscriptionControl};

/// What the subscription handle asks of its reader.
pub(super) enum Command {
    /// A manual ack (group members only).
    Ack { partition: i32, offset: i64 },
    /// Subscription `id` leaves; answered once it has (for the last subscription of a
    /// consumer, once the consumer is closed).
    Unsubscribe {
        id: u64,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
}

/// The Kafka side of a [`Subscription`](crate::Subscription).
pub(super) struct KafkaSubscription {
    pub(super) topic: Arc<str>,
    /// This subscription among those of its consumer (0 for a consumer of its own).
    pub(super) id: u64,
    /// To the reader. For a consumer of its own, dropping it (with the subscription)
    /// ends the reader; a shared consumer notices a dropped subscription by its closed
    /// delivery channel.
    pub(super) commands: std_mpsc::Sender<Command>,
    pub(super) rejected: Arc<AtomicU64>,
    /// Manual acks in a group: acks are committed. Elsewhere there is nothing to commit.
    pub(super) tracks_acks: bool,
    pub(super) timeout: Duration,
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
        let sent = self
            .commands
            .send(Command::Unsubscribe { id: self.id, reply })
            .is_ok();
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
