//! The reference side of a [`Subscription`](crate::Subscription): acks, nacks and
//! unsubscribe of one subscription, sent on its connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;

use super::Connection;
use crate::error::AdapterError;
use crate::subscription::{AckTokenRepr, Delivery, SubscriptionControl};

/// The reference side of a [`Subscription`](crate::Subscription): acks, nacks and unsubscribe go out on the
/// subscription's connection.
pub(super) struct ReferenceSubscription {
    pub(super) conn: Connection,
    pub(super) topic: Arc<str>,
    /// Acks and nacks the broker refused, counted by the reader.
    pub(super) rejected: Arc<AtomicU64>,
}

impl ReferenceSubscription {
    fn ack_or_nack(
        &self,
        delivery: &Delivery,
        nack: bool,
    ) -> BoxFuture<'static, Result<(), AdapterError>> {
        let AckTokenRepr::Index(index) = delivery.ack_token.0 else {
            let verb = if nack { "nack" } else { "ack" };
            return Box::pin(std::future::ready(Err(AdapterError::invalid_input(
                format!(
                    "cannot {verb} a delivery of {} without a broker index",
                    delivery.topic
                ),
            ))));
        };
        Box::pin(
            self.conn
                .ack(self.topic.clone(), index, nack, self.rejected.clone()),
        )
    }
}

impl SubscriptionControl for ReferenceSubscription {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.ack_or_nack(delivery, false)
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.ack_or_nack(delivery, true)
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(self.conn.unsubscribe(self.topic.clone()))
    }

    fn rejected_acks(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}
