//! What a [`Subscription`](crate::Subscription) holds: the [`SubscriptionControl`] that
//! queues acks and nacks for the acker and asks the reader to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::acker::AckRequest;
use crate::error::AdapterError;
use crate::subscription::{AckTokenRepr, Delivery, SubscriptionControl};

/// An unsubscribe request: the answer goes back once the broker confirmed.
pub(super) type Stop = oneshot::Sender<Result<(), AdapterError>>;

/// The [`SubscriptionControl`] of a Redis subscription.
pub(super) struct RedisControl {
    pub(super) topic: Arc<str>,
    pub(super) stops: mpsc::Sender<Stop>,
    pub(super) acks: Option<mpsc::Sender<AckRequest>>,
    pub(super) rejected: Arc<AtomicU64>,
    /// Set when an ack or nack got no answer (the control connection was lost and could
    /// not be dialled again, or the request timed out); reported once, by the next ack or
    /// nack, which is then not queued. Later ones are sent as usual (on a new control
    /// connection if need be).
    pub(super) ack_failure: Arc<Mutex<Option<AdapterError>>>,
    pub(super) timeout: Duration,
}

impl RedisControl {
    /// Queues an ack or nack; resolves once queued.
    fn queue(
        &self,
        delivery: &Delivery,
        nack: bool,
    ) -> BoxFuture<'static, Result<(), AdapterError>> {
        let verb = if nack { "nack" } else { "ack" };
        let ready = |result| -> BoxFuture<'static, Result<(), AdapterError>> {
            Box::pin(std::future::ready(result))
        };
        let AckTokenRepr::StreamId(id) = &delivery.ack_token.0 else {
            return ready(Err(AdapterError::invalid_input(format!(
                "{verb} on {}: the delivery carries no stream entry id (it did not come from a manual-ack redis subscription)",
                self.topic
            ))));
        };
        let Some(acks) = &self.acks else {
            return ready(Err(AdapterError::unsupported(format!(
                "{verb} on {}: the subscription uses automatic acks",
                self.topic
            ))));
        };
        if let Some(error) = self.ack_failure.lock().take() {
            return ready(Err(error));
        }
        let request = if nack {
            AckRequest::Nack(id.clone())
        } else {
            AckRequest::Ack(id.clone())
        };
        let gone = move |topic: &str, id: &str| {
            AdapterError::closed(format!(
                "{verb} of {id} on {topic}: the subscription's acknowledger has stopped"
            ))
        };
        match acks.try_send(request) {
            Ok(()) => ready(Ok(())),
            Err(TrySendError::Closed(_)) => ready(Err(gone(&self.topic, id))),
            Err(TrySendError::Full(request)) => {
                let acks = acks.clone();
                let timeout = self.timeout;
                let topic = self.topic.clone();
                let id = id.clone();
                Box::pin(async move {
                    match tokio::time::timeout(timeout, acks.send(request)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(gone(&topic, &id)),
                        Err(_) => Err(AdapterError::timeout(
                            &format!("{verb} of {id} on {topic} (ack queue full)"),
                            timeout,
                        )),
                    }
                })
            }
        }
    }
}

impl SubscriptionControl for RedisControl {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.queue(delivery, false)
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.queue(delivery, true)
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        let stops = self.stops.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            let ended = || {
                AdapterError::closed(format!(
                    "unsubscribe from {topic}: the subscription had already ended"
                ))
            };
            let (stop, answer) = oneshot::channel();
            if stops.send(stop).await.is_err() {
                return Err(ended());
            }
            // The reader answers after bounded steps (each within the request timeout).
            answer.await.unwrap_or_else(|_| Err(ended()))
        })
    }

    fn rejected_acks(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}
