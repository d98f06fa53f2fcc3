//! The publishing side: one connection and one confirm-mode channel per producer.
//!
//! A publish is `basic.publish` to the topic's fanout exchange, then the broker's
//! publisher confirm for it: `basic.ack` → [`PublishOutcome::Ok`], `basic.nack` →
//! [`PublishOutcome::Failed`]; no confirm within the publish timeout, or the channel or
//! connection lost after the message was written → [`PublishOutcome::Unknown`].
//! Messages are not `mandatory`: like a message to a topic nobody subscribes to on the
//! other backends, a message the exchange routes to no queue is accepted (confirmed) and
//! goes nowhere.
//!
//! Publishes pipeline. lapin gives a publish its delivery tag and queues its frames
//! synchronously in the first poll of `basic_publish`, so a publish's place on the channel
//! is fixed at its first poll, and any number of confirms can be outstanding; nothing
//! waits per message.
//!
//! Publishing to an exchange that does not exist makes RabbitMQ close the channel, so the
//! first publish to a topic this backend has not declared declares the exchange first (on
//! a short-lived second channel, so a refused declaration cannot close the publishing
//! channel). Publishes to that topic that arrive meanwhile queue behind it in order (a
//! [`Gate`]); once it is declared they go straight through.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation, Connection};
use parking_lot::Mutex;

use super::Context;
use super::errors::{self, Deadline};
use super::message;
use super::topology::{Declarer, check_name};
use crate::error::AdapterError;
use crate::publish::{PublishOutcome, PublishRequest, Publisher};

/// A producer's connection and channel.
pub(super) struct RabbitPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    context: Arc<Context>,
    /// Kept for the short-lived declaration channels; the publishing channel keeps the
    /// connection open by itself.
    connection: Connection,
    channel: Channel,
    /// One gate per topic published to.
    gates: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    /// Why the channel failed, as the first confirm it failed said (for the messages of
    /// later publishes, which lapin only tells that the channel is closed).
    failure: Mutex<Option<String>>,
}

impl RabbitPublisher {
    /// Opens the producer's connection and its channel in confirm mode.
    pub(super) async fn open(context: Arc<Context>) -> Result<RabbitPublisher, AdapterError> {
        let connection = super::open_connection(&context, "producer").await?;
        let deadline = Deadline::after(context.options.request_timeout);
        let url = &context.target.display;
        let channel = deadline
            .run(
                || format!("open a producer channel on rabbitmq at {url}"),
                connection.create_channel(),
            )
            .await?;
        deadline
            .run(
                || format!("enable publisher confirms on rabbitmq at {url}"),
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        Ok(RabbitPublisher {
            inner: Arc::new(Inner {
                context,
                connection,
                channel,
                gates: Mutex::new(HashMap::new()),
                failure: Mutex::new(None),
            }),
        })
    }
}

impl Publisher for RabbitPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.publish(request).await })
    }
}

/// What a publish finds at its topic's gate.
enum Entry {
    /// The exchange is known to exist: publish now.
    Open,
    /// Wait for the declaration, in order; the gate counts this publish as waiting.
    Wait(Arc<Gate>),
}

/// Keeps a topic's publishes in their first-poll order while its exchange is declared.
///
/// While the gate is not open, every publish registers as waiting (synchronously, at its
/// first poll) and then takes the declaration lock, which Tokio grants in FIFO order; the
/// holder declares the exchange if nobody has yet, queues its message, and lets the next
/// one in. The gate opens when the last waiter has queued its message after a successful
/// declaration, so a later publish cannot overtake one still waiting.
struct Gate {
    flow: Mutex<Flow>,
    /// Whether the exchange has been declared; held while declaring.
    declared: tokio::sync::Mutex<bool>,
}

#[derive(Debug, Default)]
struct Flow {
    open: bool,
    waiting: usize,
}

/// A waiter's place at a gate; leaving (dropping it, also when the publish future is
/// dropped while it waits) opens the gate if it was the last waiter and the exchange is
/// declared.
struct Waiting<'a> {
    gate: &'a Gate,
    declared: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut flow = self.gate.flow.lock();
        flow.waiting = flow.waiting.saturating_sub(1);
        if flow.waiting == 0 && self.declared {
            flow.open = true;
        }
    }
}

impl Inner {
    async fn publish(self: Arc<Self>, request: PublishRequest) -> PublishOutcome {
        let deadline = Deadline::after(self.context.options.publish_timeout);
        if let Err(e) = check_name("topic", &request.topic) {
            return PublishOutcome::Failed(format!("not sent: {e}"));
        }
        match self.enter(&request.topic) {
            Entry::Open => self.send(&request, deadline).await,
            Entry::Wait(gate) => {
                self.publish_after_declaring(&request, &gate, deadline)
                    .await
            }
        }
    }

    /// The gate of `topic`; counts this publish as waiting unless the gate is open.
    fn enter(&self, topic: &Arc<str>) -> Entry {
        let mut gates = self.gates.lock();
        let gate = match gates.get(topic) {
            Some(gate) => gate,
            None => {
                let open = self.context.topology.has_exchange(topic);
                gates.entry(topic.clone()).or_insert_with(|| {
                    Arc::new(Gate {
                        flow: Mutex::new(Flow { open, waiting: 0 }),
                        declared: tokio::sync::Mutex::new(open),
                    })
                })
            }
        };
        let mut flow = gate.flow.lock();
        if flow.open {
            Entry::Open
        } else {
            flow.waiting += 1;
            Entry::Wait(gate.clone())
        }
    }

    async fn publish_after_declaring(
        &self,
        request: &PublishRequest,
        gate: &Gate,
        deadline: Deadline,
    ) -> PublishOutcome {
        let mut waiting = Waiting {
            gate,
            declared: false,
        };
        let topic = &*request.topic;
        let Ok(mut declared) = tokio::time::timeout_at(deadline.at(), gate.declared.lock()).await
        else {
            return PublishOutcome::Failed(format!(
                "not sent: the declaration of exchange '{topic}' on rabbitmq at {} took longer than the publish timeout",
                self.context.target.display
            ));
        };
        if !*declared {
            if let Err(e) = self.declare(topic, deadline).await {
                return PublishOutcome::Failed(format!("not sent: {e}"));
            }
            *declared = true;
        }
        // Queue this message before letting the next waiter in.
        let mut send = pin!(self.send(request, deadline));
        let first = futures::poll!(send.as_mut());
        waiting.declared = true;
        drop(waiting);
        drop(declared);
        match first {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => send.await,
        }
    }

    /// Declares what publishing to `topic` needs, on a channel of its own.
    async fn declare(&self, topic: &str, deadline: Deadline) -> Result<(), AdapterError> {
        let url = &self.context.target.display;
        let channel = deadline
            .run(
                || format!("open a channel to declare '{topic}' on rabbitmq at {url}"),
                self.connection.create_channel(),
            )
            .await?;
        Declarer {
            channel: &channel,
            topology: &self.context.topology,
            deadline,
            url,
        }
        .topic(topic)
        .await?;
        Ok(())
    }

    /// `basic.publish`, then its confirm. The publish is queued at the first poll.
    async fn send(&self, request: &PublishRequest, deadline: Deadline) -> PublishOutcome {
        let (routing_key, properties) = message::routing(request.key.as_deref());
        let publish = self.channel.basic_publish(
            ShortString::from(&*request.topic),
            routing_key,
            BasicPublishOptions::default(),
            &request.payload,
            properties,
        );
        let confirm = match tokio::time::timeout_at(deadline.at(), publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) if errors::not_sent(&e) => {
                let reason = self
                    .failure
                    .lock()
                    .clone()
                    .unwrap_or_else(|| errors::describe(&e).1);
                return PublishOutcome::Failed(format!(
                    "not sent: the producer's channel to rabbitmq at {} is closed ({reason})",
                    self.context.target.display,
                ));
            }
            // Written (perhaps partly) and then the connection failed, or stuck behind a
            // blocked connection until the timeout.
            Ok(Err(_)) | Err(_) => return PublishOutcome::Unknown,
        };
        match tokio::time::timeout_at(deadline.at(), confirm).await {
            Ok(Ok(Confirmation::Ack(_))) => PublishOutcome::Ok,
            Ok(Ok(Confirmation::Nack(_))) => PublishOutcome::Failed(format!(
                "rabbitmq at {} refused the message to '{}' (basic.nack)",
                self.context.target.display, request.topic
            )),
            Ok(Err(e)) => {
                // The channel or connection failed after the message was written.
                self.failure
                    .lock()
                    .get_or_insert_with(|| errors::describe(&e).1);
                PublishOutcome::Unknown
            }
            // Confirms are always on; a missing one or the timeout leave the outcome open.
            Ok(Ok(Confirmation::NotRequested)) | Err(_) => PublishOutcome::Unknown,
        }
    }
}
