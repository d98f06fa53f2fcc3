//! Subscribing to JetStream: a pull consumer read through async-nats' `messages()` stream,
//! on a connection of the subscription's own.
//!
//! - Fan-out: a consumer of the subscription's own, made here, deleted when the
//!   subscription ends (and by the backend's teardown otherwise). It is ephemeral with a
//!   long inactivity limit, so even a process that dies leaves nothing behind for long.
//! - Competing: the group's durable consumer (see `topology`), which every member pulls from.
//! - Start: `Latest` → deliver policy `new`, `Beginning` → `all`, `AfterSequence(n)` →
//!   `by_start_sequence` n + 1. The consumer exists on the server before [`subscribe`]
//!   returns, which is what makes a message published afterwards reach it.
//! - Acks: manual → `AckExplicit` with [`ACK_WAIT`], ack `+ACK`, nack `-NAK` (redelivered at
//!   once). Automatic on an own consumer → `AckNone`: the server is done with a message once
//!   it sent it, the cheapest at-most-once. Automatic in a group → the shared consumer acks
//!   explicitly (its members may ack by hand), and this task acks each message as soon as it
//!   takes it from the pull stream, before handing it to the [`Subscription`]. Only a message
//!   left more than the ack wait in async-nats' pull buffer (at most about one pull batch,
//!   while the subscription's channel stays full) is delivered again, marked redelivered.
//! - `Delivery::sequence` is the stream sequence, `attempt` the server's delivery count.
//!
//! Pulls ask for [`PULL_BATCH`] messages (and at most [`pull_bytes`] bytes) and are renewed
//! when half of them arrived, so a consumer streams thousands of messages a second with a
//! bounded buffer. The subscription ends with one error item when the connection is lost,
//! the consumer is deleted, or the server stops sending heartbeats.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::client::{self, Connection, Health, Pinger, RoundTripError};
use super::topology::{self, ACK_WAIT, MAX_ACK_PENDING, StreamEntry, Topology};
use crate::backend::ConnectOptions;
use crate::error::{AdapterError, ErrorKind};
use crate::subscription::{
    AckMode, AckToken, AckTokenRepr, Batch, Delivery, StartPosition, Subscription,
    SubscriptionControl, SubscriptionSpec,
};

/// Messages one pull request asks for; the next pull goes out when half have arrived.
const PULL_BATCH: usize = 256;

/// How long a pull request waits on the server for messages before it expires (and is
/// renewed).
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// The server sends a heartbeat this often while a pull waits with nothing to deliver;
/// two missed ones end the subscription with an error.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the server keeps a fan-out subscription's consumer once nobody pulls from it.
/// The subscription deletes it itself; this only bounds what a process that died leaves
/// behind. Long enough that a consumer held back by a slow reader is not removed.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(300);

/// Most messages handed to the [`Subscription`] channel in one batch.
const MAX_DELIVERY_BATCH: usize = 128;

/// Bytes one pull request asks for at most: several of the largest messages the server
/// accepts, and at least 16 MiB.
fn pull_bytes(max_payload: usize) -> usize {
    max_payload.saturating_mul(4).max(16 * 1024 * 1024)
}

/// The deliver policy for a subscription's start position.
pub(super) fn deliver_policy(start: StartPosition) -> DeliverPolicy {
    match start {
        StartPosition::Latest => DeliverPolicy::New,
        StartPosition::Beginning => DeliverPolicy::All,
        StartPosition::AfterSequence(n) => match u64::try_from(n) {
            Ok(n) => DeliverPolicy::ByStartSequence {
                start_sequence: n.saturating_add(1),
            },
            Err(_) => DeliverPolicy::All,
        },
    }
}

/// A unique name for a fan-out subscription's consumer: `bb-<pid>-<time>-<counter>`.
fn own_consumer_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "bb-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A request from the [`Subscription`] handle to its task.
type UnsubscribeReply = oneshot::Sender<Result<(), AdapterError>>;

/// Subscribes on `connection` (which the subscription then owns) and returns once its
/// consumer exists on the server.
///
/// # Errors
///
/// The server's refusal to create the stream or consumer ([`ErrorKind::Rejected`]), or a
/// timeout.
pub(super) async fn subscribe(
    connection: Connection,
    topology: Arc<Topology>,
    stream: Arc<StreamEntry>,
    spec: &SubscriptionSpec,
    options: &ConnectOptions,
) -> Result<Subscription, AdapterError> {
    let url = topology.url().to_owned();
    let timeout = options.request_timeout;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .build(connection.client.clone());
    let topic = spec.topic.clone();
    let manual = spec.ack == AckMode::Manual;
    let (consumer, own) = match &spec.group {
        Some(group) => {
            let name = topology
                .group(&topic, &stream, group, deliver_policy(spec.start))
                .await?;
            let consumer: PullConsumer = js
                .get_consumer_from_stream(&name, &stream.name)
                .await
                .map_err(|e| {
                    if topology::consumer_not_found(&e) {
                        // The stream or the group's consumer is gone (a restarted
                        // server): both are made again next time.
                        topology.stream_lost(&topic);
                    }
                    let what = format!(
                        "join group {group} (consumer {name} of stream {})",
                        stream.name
                    );
                    topology::api_error(&what, &url, timeout, &e, is_timeout(&e))
                })?;
            (consumer, false)
        }
        None => {
            let name = own_consumer_name();
            let config = pull::Config {
                name: Some(name.clone()),
                description: Some(format!("brokerbench subscription to {topic}")),
                deliver_policy: deliver_policy(spec.start),
                ack_policy: if manual {
                    AckPolicy::Explicit
                } else {
                    AckPolicy::None
                },
                ack_wait: if manual { ACK_WAIT } else { Duration::ZERO },
                max_deliver: -1,
                max_ack_pending: if manual { MAX_ACK_PENDING } else { 0 },
                inactive_threshold: INACTIVE_THRESHOLD,
                ..Default::default()
            };
            topology.add_subscriber(&stream.name, &name);
            let consumer = match js.create_consumer_on_stream(config, &stream.name).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    topology.remove_subscriber(&stream.name, &name);
                    if topology::consumer_not_found(&e) {
                        // The stream is gone (a restarted server): made again next time.
                        topology.stream_lost(&topic);
                    }
                    let what = format!(
                        "create consumer {name} on stream {} for {topic}",
                        stream.name
                    );
                    return Err(topology::api_error(
                        &what,
                        &url,
                        timeout,
                        &e,
                        is_timeout(&e),
                    ));
                }
            };
            (consumer, true)
        }
    };
    let consumer_name = consumer.cached_info().name.clone();
    let messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .max_bytes_per_batch(pull_bytes(connection.client.server_info().max_payload))
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| {
            AdapterError::closed(format!(
                "subscribe to {topic} at jetstream {url}: could not start pulling from consumer {consumer_name}: {}",
                client::cause(&e)
            ))
        })?;
    let (commands, commands_rx) = mpsc::channel(1);
    let control = JetStreamControl {
        client: connection.client.clone(),
        commands,
        topic: topic.clone(),
        timeout,
    };
    let (tx, subscription) = Subscription::channel(spec, Box::new(control));
    let mut health = connection.health.clone();
    let seen = health.borrow_and_update().clone();
    let own = own.then(|| OwnConsumer {
        js,
        topology,
        url: url.clone(),
        timeout,
        stream: stream.name.clone(),
        name: consumer_name.clone(),
    });
    let task = Forwarder {
        client: connection.client.clone(),
        pinger: connection.pinger(),
        health,
        seen,
        tx,
        topic,
        url,
        stream: stream.name.clone(),
        consumer: consumer_name,
        own,
        manual,
        ack_each: !manual && spec.group.is_some(),
        timeout,
    };
    tokio::spawn(task.run(messages, commands_rx));
    Ok(subscription)
}

fn is_timeout(error: &jetstream::stream::ConsumerError) -> bool {
    error.kind() == jetstream::stream::ConsumerErrorKind::TimedOut
}

/// The subscription's side: acks through the subscription's connection, unsubscribes
/// through its task.
struct JetStreamControl {
    client: Client,
    commands: mpsc::Sender<UnsubscribeReply>,
    topic: Arc<str>,
    timeout: Duration,
}

impl JetStreamControl {
    /// Publishes `body` to the delivery's ack subject; resolves once it is queued on the
    /// connection (JetStream does not confirm acks).
    fn reply(
        &self,
        delivery: &Delivery,
        body: &'static [u8],
        what: &'static str,
    ) -> BoxFuture<'static, Result<(), AdapterError>> {
        let client = self.client.clone();
        let topic = self.topic.clone();
        let timeout = self.timeout;
        let subject = match &delivery.ack_token.0 {
            AckTokenRepr::Reply(subject) => Some(subject.clone()),
            _ => None,
        };
        let sequence = delivery.sequence;
        Box::pin(async move {
            let Some(subject) = subject else {
                return Err(AdapterError::invalid_input(format!(
                    "{what} on {topic}: this delivery carries no JetStream ack subject (it came from another subscription or backend)"
                )));
            };
            let sent =
                tokio::time::timeout(timeout, client.publish(subject, Bytes::from_static(body)))
                    .await;
            // Named only when it failed: acks are per message.
            let what = || match sequence {
                Some(seq) => format!("{what} of {topic} #{seq}"),
                None => format!("{what} on {topic}"),
            };
            match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(AdapterError::closed(format!(
                    "{}: {}",
                    what(),
                    client::cause(&e)
                ))),
                Err(_) => Err(AdapterError::timeout(
                    &format!("{} (the connection's queue stayed full)", what()),
                    timeout,
                )),
            }
        })
    }
}

impl SubscriptionControl for JetStreamControl {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.reply(delivery, b"+ACK", "ack")
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.reply(delivery, b"-NAK", "nack")
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        let commands = self.commands.clone();
        let topic = self.topic.clone();
        // The task may first hand over buffered deliveries, then waits at most one
        // request timeout for the server.
        let timeout = self.timeout.saturating_mul(2);
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            if commands.send(reply).await.is_err() {
                return Ok(()); // the task has ended, after an error item
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Ok(()),
                Err(_) => Err(AdapterError::timeout(
                    &format!("unsubscribe from {topic}"),
                    timeout,
                )),
            }
        })
    }
}

/// A fan-out subscription's own consumer, deleted when the subscription ends.
struct OwnConsumer {
    /// The subscription's JetStream context.
    js: Context,
    topology: Arc<Topology>,
    url: String,
    timeout: Duration,
    stream: String,
    name: String,
}

impl OwnConsumer {
    /// Deletes the consumer and waits for the server's confirmation.
    async fn delete(self) -> Result<(), AdapterError> {
        topology::delete_consumer(&self.js, &self.url, self.timeout, &self.stream, &self.name)
            .await?;
        self.topology.remove_subscriber(&self.stream, &self.name);
        Ok(())
    }
}

/// The task that moves messages from the pull stream to the [`Subscription`].
struct Forwarder {
    client: Client,
    pinger: Pinger,
    health: watch::Receiver<Health>,
    seen: Health,
    tx: mpsc::Sender<Batch>,
    topic: Arc<str>,
    url: String,
    stream: String,
    consumer: String,
    /// The consumer, when it is this subscription's own.
    own: Option<OwnConsumer>,
    manual: bool,
    /// Automatic acks on a consumer that needs them: ack each message once handed over.
    ack_each: bool,
    timeout: Duration,
}

/// What ended the forwarding loop.
enum Stop {
    /// The subscription handle is gone.
    Dropped,
    /// Unsubscribe, and answer here.
    Unsubscribe(UnsubscribeReply),
    /// The subscription cannot go on.
    Failed(AdapterError),
}

/// What woke the forwarding loop. It lives for one `match` on the stack; boxing the large
/// variant would cost an allocation per wake-up.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Stop(Stop),
    Health(bool),
    Message(Option<Result<jetstream::Message, pull::MessagesError>>),
}

impl Forwarder {
    async fn run(
        mut self,
        mut messages: pull::Stream,
        mut commands: mpsc::Receiver<UnsubscribeReply>,
    ) {
        match self.forward(&mut messages, &mut commands).await {
            Stop::Dropped => {
                drop(messages);
                if let Some(own) = self.own.take() {
                    let _ = own.delete().await;
                }
            }
            Stop::Unsubscribe(reply) => {
                let result = self.unsubscribe(messages).await;
                let _ = reply.send(result);
            }
            Stop::Failed(error) => {
                // Hand over what had arrived, then the error, and end the stream; the own
                // consumer goes too (a teardown retries if the server cannot be reached).
                self.forward_buffered(&mut messages).await;
                drop(messages);
                let _ = self.tx.send(Batch::Error(error)).await;
                let own = self.own.take();
                drop(self);
                if let Some(own) = own {
                    let _ = own.delete().await;
                }
            }
        }
    }

    async fn forward(
        &mut self,
        messages: &mut pull::Stream,
        commands: &mut mpsc::Receiver<UnsubscribeReply>,
    ) -> Stop {
        loop {
            let wake = tokio::select! {
                biased;
                command = commands.recv() => Wake::Stop(match command {
                    Some(reply) => Stop::Unsubscribe(reply),
                    None => Stop::Dropped,
                }),
                () = self.tx.closed() => Wake::Stop(Stop::Dropped),
                changed = self.health.changed() => Wake::Health(changed.is_err()),
                item = messages.next() => Wake::Message(item),
            };
            let message = match wake {
                Wake::Stop(stop) => return stop,
                Wake::Health(gone) => match self.trouble(gone) {
                    Some(error) => return Stop::Failed(error),
                    None => continue,
                },
                Wake::Message(Some(Ok(message))) => message,
                Wake::Message(Some(Err(error))) => return Stop::Failed(self.stream_error(&error)),
                Wake::Message(None) => {
                    return Stop::Failed(AdapterError::closed(format!(
                        "subscription to {} at jetstream {}: the pull stream of consumer {} ended",
                        self.topic, self.url, self.consumer
                    )));
                }
            };
            let mut batch = Vec::with_capacity(8);
            let mut acks = Vec::new();
            self.push(message, &mut batch, &mut acks);
            let mut deferred = None;
            while batch.len() < MAX_DELIVERY_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => self.push(message, &mut batch, &mut acks),
                    Some(Some(Err(error))) => {
                        deferred = Some(self.stream_error(&error));
                        break;
                    }
                    _ => break,
                }
            }
            if !self.hand_over(batch, acks).await {
                return Stop::Dropped;
            }
            if let Some(error) = deferred {
                return Stop::Failed(error);
            }
        }
    }

    /// Acks a batch if this task acks, then sends it to the subscription; `false` if the
    /// subscription is gone.
    ///
    /// Acking first: automatic acks mean the message is done once it reached this process,
    /// and a batch waiting in a full subscription channel must not outlive the ack wait and
    /// be delivered to another member of the group as well.
    async fn hand_over(&self, batch: Vec<Delivery>, acks: Vec<Subject>) -> bool {
        for subject in acks {
            // Queued on the connection, not confirmed: if the connection is lost first, the
            // server redelivers after the ack wait (at least once, marked redelivered).
            let ack = self.client.publish(subject, Bytes::from_static(b"+ACK"));
            if tokio::time::timeout(self.timeout, ack).await.is_err() {
                break;
            }
        }
        self.tx.send(Batch::Many(batch)).await.is_ok()
    }

    /// Adds a message to `batch` (and its ack subject to `acks` when this task acks).
    fn push(
        &self,
        message: jetstream::Message,
        batch: &mut Vec<Delivery>,
        acks: &mut Vec<Subject>,
    ) {
        let received_at = std::time::Instant::now();
        let (sequence, delivered) = match message.info() {
            Ok(info) => (
                i64::try_from(info.stream_sequence).ok(),
                u32::try_from(info.delivered).ok(),
            ),
            Err(_) => (None, None),
        };
        let jetstream::Message { message, .. } = message;
        let ack_token = match (&message.reply, self.manual) {
            (Some(reply), true) => AckToken(AckTokenRepr::Reply(reply.clone())),
            _ => AckToken::default(),
        };
        if self.ack_each {
            if let Some(reply) = &message.reply {
                acks.push(reply.clone());
            }
        }
        batch.push(Delivery {
            topic: self.topic.clone(),
            key: client::key_of(message.headers.as_ref()),
            payload: message.payload,
            redelivered: delivered.is_some_and(|n| n > 1),
            attempt: delivered,
            sequence,
            received_at,
            ack_token,
        });
    }

    /// What a change of the connection's health means for this subscription, if anything.
    fn trouble(&mut self, gone: bool) -> Option<AdapterError> {
        let now = self.health.borrow_and_update().clone();
        let (topic, url) = (&self.topic, &self.url);
        let error = if gone || now.disconnects > self.seen.disconnects || now.gave_up {
            Some(AdapterError::closed(format!(
                "subscription to {topic} at jetstream {url}: the connection was lost{}; the subscription stopped there (unacknowledged messages stay with consumer {})",
                now.server_said(),
                self.consumer
            )))
        } else if now.slow_consumers > self.seen.slow_consumers {
            Some(AdapterError::new(
                ErrorKind::SlowConsumer,
                format!(
                    "subscription to {topic} at jetstream {url}: the client dropped {} message(s) because the subscriber did not keep up",
                    now.slow_consumers - self.seen.slow_consumers
                ),
            ))
        } else {
            None
        };
        self.seen = now;
        error
    }

    /// The error for an error item of the pull stream.
    fn stream_error(&self, error: &pull::MessagesError) -> AdapterError {
        let (consumer, stream) = (&self.consumer, &self.stream);
        let at = format!("subscription to {} at jetstream {}", self.topic, self.url);
        match error.kind() {
            MessagesErrorKind::ConsumerDeleted => AdapterError::closed(format!(
                "{at}: consumer {consumer} of stream {stream} was deleted (by a teardown, or by hand)"
            )),
            MessagesErrorKind::NoResponders => AdapterError::closed(format!(
                "{at}: nothing answers pulls from consumer {consumer} of stream {stream} (the stream is gone, or JetStream is down)"
            )),
            MessagesErrorKind::MissingHeartbeat => AdapterError::closed(format!(
                "{at}: the server sent no heartbeat for consumer {consumer} within {}s",
                PULL_HEARTBEAT.as_secs() * 2
            )),
            MessagesErrorKind::Pull => AdapterError::closed(format!(
                "{at}: a pull request could not be sent: {}",
                client::cause(error)
            )),
            _ => AdapterError::protocol(format!("{at}: {}", client::cause(error))),
        }
    }

    /// Forwards what the pull stream has buffered, without waiting for more.
    async fn forward_buffered(&self, messages: &mut pull::Stream) {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            self.push(message, &mut batch, &mut acks);
        }
        if !batch.is_empty() {
            let _ = self.hand_over(batch, acks).await;
        }
    }

    /// Stops pulling, hands over what had arrived, and deletes the own consumer (or, in a
    /// group, confirms with the server that this member's inbox is gone).
    async fn unsubscribe(&mut self, mut messages: pull::Stream) -> Result<(), AdapterError> {
        self.forward_buffered(&mut messages).await;
        // Dropping the pull stream stops its pull requests and unsubscribes its inbox.
        drop(messages);
        if let Some(own) = self.own.take() {
            return own.delete().await;
        }
        let what = format!("unsubscribe from {} at jetstream {}", self.topic, self.url);
        match self.pinger.round_trip(self.timeout).await {
            Ok(()) => Ok(()),
            Err(RoundTripError::Timeout) => Err(AdapterError::timeout(&what, self.timeout)),
            Err(RoundTripError::Failed(why)) => Err(AdapterError::closed(format!("{what}: {why}"))),
        }
    }
}

#[cfg(test)]
mod tests;
