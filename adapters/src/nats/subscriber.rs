//! Subscribing to NATS core: a plain subject subscription (fan-out) or a queue group
//! (competing), on a connection of its own.
//!
//! Ready means the server has processed the `SUB`: [`subscribe`] returns after a round trip
//! that followed it. A task forwards messages from the async-nats subscription into the
//! [`Subscription`] channel in batches and waits when that channel is full.
//!
//! Core NATS keeps nothing for a subscriber that is not there, so nothing may be papered
//! over: the subscription ends with an error item when
//! - the connection is lost ([`ErrorKind::Closed`]): messages published until a reconnect
//!   are gone for this subscriber, and async-nats would quietly resubscribe after it;
//! - async-nats dropped messages because its buffer for the subscription was full, which
//!   happens when the consumer of the [`Subscription`] does not keep up
//!   ([`ErrorKind::SlowConsumer`]);
//! - the server refused the subscription (a permissions violation, [`ErrorKind::Rejected`]).
//!
//! In each case the task first stops the subscription and forwards what async-nats had
//! already buffered, so only messages that really were dropped count as lost.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::client::{self, Connection, Health, Pinger, RoundTripError};
use crate::error::{AdapterError, ErrorKind};
use crate::subscription::{
    AckToken, Batch, Delivery, Subscription, SubscriptionControl, SubscriptionSpec,
};

/// Most messages handed to the [`Subscription`] channel in one batch. The task takes what
/// async-nats has already buffered, up to this, each time it wakes up.
const MAX_DELIVERY_BATCH: usize = 128;

/// A request from the [`Subscription`] handle to its task.
type UnsubscribeReply = oneshot::Sender<Result<(), AdapterError>>;

/// Subscribes on `connection` (which the subscription then owns) and returns once the
/// server has processed the subscription.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for a topic or group NATS does not accept,
/// [`ErrorKind::Timeout`] when the server does not answer the round trip,
/// [`ErrorKind::Rejected`] when it refused the subscription, [`ErrorKind::Closed`] when the
/// connection is gone.
pub(super) async fn subscribe(
    connection: Connection,
    spec: &SubscriptionSpec,
    url: String,
    request_timeout: Duration,
) -> Result<Subscription, AdapterError> {
    let topic = spec.topic.clone();
    let what = match &spec.group {
        Some(group) => format!("subscribe to {topic} in queue group {group} at nats {url}"),
        None => format!("subscribe to {topic} at nats {url}"),
    };
    let subscribed = match &spec.group {
        Some(group) => {
            connection
                .client
                .queue_subscribe(topic.to_string(), group.clone())
                .await
        }
        None => connection.client.subscribe(topic.to_string()).await,
    };
    let subscriber = subscribed.map_err(|error| {
        use async_nats::SubscribeErrorKind as K;
        match error.kind() {
            K::InvalidSubject => AdapterError::invalid_input(format!(
                "{what}: '{topic}' is not a valid NATS subject"
            )),
            K::InvalidQueueName => AdapterError::invalid_input(format!(
                "{what}: not a valid NATS queue group name (it must not be empty or contain spaces)"
            )),
            _ => AdapterError::closed(format!("{what}: {}", client::cause(&error))),
        }
    })?;
    let mut health = connection.health.clone();
    let before = health.borrow_and_update().clone();
    confirm(&connection.pinger(), &what, request_timeout).await?;
    let after = health.borrow_and_update().clone();
    if after.server_errors > before.server_errors
        && after
            .last_server_error
            .as_deref()
            .is_some_and(|e| e.contains("Subscription"))
    {
        return Err(AdapterError::rejected(format!(
            "{what}: refused{}",
            after.server_said()
        )));
    }
    let (commands, commands_rx) = mpsc::channel(1);
    let control = CoreControl {
        commands,
        topic: topic.clone(),
        timeout: request_timeout,
    };
    let (tx, subscription) = Subscription::channel(spec, Box::new(control));
    let task = Forwarder {
        subscriber,
        pinger: connection.pinger(),
        health,
        seen: after,
        tx,
        topic,
        url,
        request_timeout,
    };
    tokio::spawn(task.run(commands_rx));
    // `connection` (the client handle) drops here; the subscriber and the pinger keep the
    // connection open until the task ends.
    Ok(subscription)
}

/// A round trip, as an error naming `what` when it does not come back.
async fn confirm(pinger: &Pinger, what: &str, timeout: Duration) -> Result<(), AdapterError> {
    match pinger.round_trip(timeout).await {
        Ok(()) => Ok(()),
        Err(RoundTripError::Timeout) => Err(AdapterError::timeout(what, timeout)),
        Err(RoundTripError::Failed(why)) => Err(AdapterError::closed(format!("{what}: {why}"))),
    }
}

/// The subscription's side of its task: asks it to unsubscribe.
struct CoreControl {
    commands: mpsc::Sender<UnsubscribeReply>,
    topic: Arc<str>,
    timeout: Duration,
}

impl SubscriptionControl for CoreControl {
    fn ack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        // Unreachable through `Subscription`: manual acks are refused at subscribe.
        let topic = self.topic.clone();
        Box::pin(async move {
            Err(AdapterError::unsupported(format!(
                "ack on {topic}: core NATS has no acknowledgements"
            )))
        })
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.ack(delivery)
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        let commands = self.commands.clone();
        let topic = self.topic.clone();
        // Twice the request timeout: the task may first hand over buffered deliveries,
        // then waits at most one request timeout for the server.
        let timeout = self.timeout.saturating_mul(2);
        Box::pin(async move {
            let what = format!("unsubscribe from {topic}");
            let (reply, answer) = oneshot::channel();
            if commands.send(reply).await.is_err() {
                // The task has ended (after an error item): nothing is subscribed any more.
                return Ok(());
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Ok(()),
                Err(_) => Err(AdapterError::timeout(&what, timeout)),
            }
        })
    }
}

/// The task that moves messages from async-nats to the [`Subscription`].
struct Forwarder {
    subscriber: Subscriber,
    pinger: Pinger,
    health: watch::Receiver<Health>,
    /// The health as of the last check.
    seen: Health,
    tx: mpsc::Sender<Batch>,
    topic: Arc<str>,
    url: String,
    request_timeout: Duration,
}

impl Forwarder {
    async fn run(mut self, mut commands: mpsc::Receiver<UnsubscribeReply>) {
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => {
                    // `None`: the subscription was dropped.
                    if let Some(reply) = command {
                        let result = self.unsubscribe().await;
                        let _ = reply.send(result);
                    }
                    return;
                }
                () = self.tx.closed() => return,
                changed = self.health.changed() => {
                    let error = match changed {
                        Ok(()) => {
                            let now = self.health.borrow_and_update().clone();
                            let error = self.trouble(&now);
                            self.seen = now;
                            error
                        }
                        Err(_) => Some(AdapterError::closed(format!(
                            "subscription to {} at nats {}: the client closed the connection",
                            self.topic, self.url
                        ))),
                    };
                    if let Some(error) = error {
                        self.fail(error).await;
                        return;
                    }
                }
                message = self.subscriber.next() => {
                    let Some(message) = message else {
                        let error = AdapterError::closed(format!(
                            "subscription to {} at nats {}: the client ended it",
                            self.topic, self.url
                        ));
                        let _ = self.tx.send(Batch::Error(error)).await;
                        return;
                    };
                    let mut batch = Vec::with_capacity(8);
                    batch.push(self.delivery(message));
                    while batch.len() < MAX_DELIVERY_BATCH {
                        match self.subscriber.next().now_or_never() {
                            Some(Some(message)) => batch.push(self.delivery(message)),
                            _ => break,
                        }
                    }
                    if self.tx.send(Batch::Many(batch)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// What a change of the connection's health means for this subscription, if anything.
    fn trouble(&self, now: &Health) -> Option<AdapterError> {
        let (topic, url) = (&self.topic, &self.url);
        if now.slow_consumers > self.seen.slow_consumers {
            let dropped = now.slow_consumers - self.seen.slow_consumers;
            return Some(AdapterError::new(
                ErrorKind::SlowConsumer,
                format!(
                    "subscription to {topic} at nats {url}: the client dropped {dropped} message(s) because the subscriber did not keep up (async-nats buffers 64Ki messages per subscription; the subscription stopped there)"
                ),
            ));
        }
        if now.disconnects > self.seen.disconnects || now.gave_up {
            return Some(AdapterError::closed(format!(
                "subscription to {topic} at nats {url}: the connection was lost{}; core NATS keeps nothing for an absent subscriber, so messages published until a reconnect are lost to it, and the subscription stopped there",
                now.server_said()
            )));
        }
        if now.server_errors > self.seen.server_errors
            && now
                .last_server_error
                .as_deref()
                .is_some_and(|e| e.contains("Subscription"))
        {
            return Some(AdapterError::rejected(format!(
                "subscription to {topic} at nats {url}: refused{}",
                now.server_said()
            )));
        }
        None
    }

    fn delivery(&self, message: Message) -> Delivery {
        Delivery {
            topic: self.topic.clone(),
            key: client::key_of(message.headers.as_ref()),
            payload: message.payload,
            redelivered: false,
            attempt: None,
            sequence: None,
            received_at: std::time::Instant::now(),
            ack_token: AckToken::default(),
        }
    }

    /// Stops the subscription, hands over what async-nats had buffered, then `error`.
    async fn fail(mut self, error: AdapterError) {
        let _ = self.subscriber.unsubscribe().await;
        if self.forward_buffered().await {
            let _ = self.tx.send(Batch::Error(error)).await;
        }
    }

    /// Unsubscribes, hands over what had arrived, and confirms with the server.
    async fn unsubscribe(&mut self) -> Result<(), AdapterError> {
        let what = format!("unsubscribe from {} at nats {}", self.topic, self.url);
        // Stops the client routing messages here and closes the buffer, so the loop below
        // ends once what arrived before is handed over.
        if let Err(error) = self.subscriber.unsubscribe().await {
            return Err(AdapterError::closed(format!("{what}: {error}")));
        }
        self.forward_buffered().await;
        confirm(&self.pinger, &what, self.request_timeout).await
    }

    /// Forwards every buffered message of a closed subscriber; `false` if the
    /// [`Subscription`] is gone.
    async fn forward_buffered(&mut self) -> bool {
        loop {
            let mut batch = Vec::new();
            while batch.len() < MAX_DELIVERY_BATCH {
                match self.subscriber.next().now_or_never() {
                    Some(Some(message)) => batch.push(self.delivery(message)),
                    _ => break,
                }
            }
            if batch.is_empty() {
                return true;
            }
            if self.tx.send(Batch::Many(batch)).await.is_err() {
                return false;
            }
        }
    }
}
