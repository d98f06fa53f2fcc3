//! The RabbitMQ adapter: AMQP 0-9-1 through lapin.
//!
//! Mapping (`topology.rs` has the details and the queue types):
//! - a topic is a fanout exchange of the same name;
//! - a fan-out subscriber (`group == None`) gets its own server-named, exclusive,
//!   auto-delete queue bound to the exchange, so it sees every message published after
//!   it subscribed (live only: there is no replay from classic queues);
//! - a group (`group == Some(g)`) is one shared queue `<topic>.group.<g>` bound to the
//!   exchange, declared by [`prepare`](Backend::prepare) or by the first subscriber; its
//!   members compete for its messages, and the queue keeps what arrives while the group
//!   has no member, so a new member starts with the group's backlog (the group's position
//!   is shared, as with consumer groups on the other brokers);
//! - the message key travels as the AMQP routing key (see `message.rs`); RabbitMQ's
//!   competing consumers take messages round-robin whatever their key, so there is no
//!   key ordering (it would need one queue per key, as the consistent-hash exchange
//!   plugin does, which this adapter does not use);
//! - a delivery has no `sequence`: RabbitMQ numbers nothing per topic (delivery tags
//!   count per channel).
//!
//! A dead-letter topic (`<topic>.dead-letter`, see [`Backend::dead_letter_topic`]) is a
//! fanout exchange and one queue of the same name that keeps the dead letters until they
//! are read. Its subscribers, with or without a group, all read that queue: they share
//! its messages, and a new one also gets the dead letters from before it subscribed,
//! which is what a dead-letter queue is for.
//!
//! Connections: the backend keeps one connection for its own requests (prepare,
//! teardown) and for every subscription (one channel each); each producer opens its own
//! connection and publishes on one channel in confirm mode (see `producer.rs`). lapin runs
//! each connection's I/O on a thread of its own, so producers and the subscriptions do not
//! share one.
//!
//! The URL is `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`), with lapin's
//! query parameters (`heartbeat`, `frame_max`, `channel_max`) and brokerbench's
//! `prefetch` (the consumers' `basic.qos` prefetch count, see [`DEFAULT_PREFETCH`]).
//! Messages and [`Backend::url`] show it with the password replaced by `***`.

mod address;
mod errors;
mod message;
mod producer;
mod subscriber;
#[cfg(test)]
mod tests;
mod topology;

use std::sync::Arc;

use futures::future::BoxFuture;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::address::Target;
use self::errors::Deadline;
use self::producer::RabbitPublisher;
use self::subscriber::{Control, Reader};
use self::topology::{Declarer, QueuePlan, TopicConfig, Topology};
use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::{Capabilities, Capability};
use crate::error::{AdapterError, fmt_duration};
use crate::kind::BackendKind;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

pub use self::topology::MAX_DELIVERY_ATTEMPTS;

/// The consumers' prefetch count (`basic.qos`) unless the URL sets `prefetch`: how many
/// unacknowledged messages the broker pushes ahead to one subscription. With automatic
/// acks the adapter acknowledges each batch as soon as it is handed over, so this is the
/// read-ahead that keeps a fast consumer busy; with manual acks it is also how many
/// messages one member of a group holds while others wait.
pub const DEFAULT_PREFETCH: u16 = 1000;

/// What the producers and subscriptions of one backend share.
struct Context {
    target: Target,
    options: ConnectOptions,
    topology: Topology,
    /// Deletions of named fan-out queues started by dropped subscriptions; teardown
    /// waits for them.
    cleanups: TaskTracker,
}

/// Opens a lapin connection to the context's broker within the connect timeout.
async fn open_connection(context: &Context, role: &str) -> Result<Connection, AdapterError> {
    connect_within(context, role, context.options.connect_timeout).await
}

/// Opens a lapin connection to the context's broker within `timeout`.
async fn connect_within(
    context: &Context,
    role: &str,
    timeout: std::time::Duration,
) -> Result<Connection, AdapterError> {
    let target = &context.target;
    let properties =
        ConnectionProperties::default().with_connection_name(format!("brokerbench {role}").into());
    match tokio::time::timeout(
        timeout,
        Connection::connect_uri(target.uri.clone(), properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(errors::connect_failed(target, &error)),
        Err(_) => Err(AdapterError::connect(format!(
            "cannot connect to rabbitmq at {} (connected to {} but the AMQP handshake did not finish within {})",
            target.display,
            target.host_port,
            fmt_duration(timeout)
        ))),
    }
}

/// A connected RabbitMQ broker.
///
/// ```no_run
/// # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
/// use brokerbench_adapters::rabbitmq::RabbitMqBackend;
/// use brokerbench_adapters::{Backend, ConnectOptions, PublishRequest, SubscriptionSpec};
/// use futures::StreamExt;
///
/// let broker =
///     RabbitMqBackend::connect("amqp://guest:guest@127.0.0.1:5672/%2f", ConnectOptions::new()).await?;
/// println!("{:?}", broker.server_version()); // Some("RabbitMQ 3.12.1")
/// let mut sub = broker.subscribe(SubscriptionSpec::new("bb.demo.orders")).await?;
/// let producer = broker.producer().await?;
/// assert!(producer.publish(PublishRequest::new("bb.demo.orders", "hi")).await.is_confirmed());
/// assert_eq!(sub.next().await.expect("open")?.payload, "hi");
/// broker.teardown().await?;
/// # Ok(()) }
/// ```
pub struct RabbitMqBackend {
    context: Arc<Context>,
    server_version: Option<String>,
    /// The backend's own connection (requests and subscriptions); replaced when it
    /// closes.
    connection: tokio::sync::Mutex<Arc<Connection>>,
}

impl RabbitMqBackend {
    /// Connects to the broker at `url` (`amqp://user:password@host:port/vhost`).
    ///
    /// It first reaches the broker over TCP and reads the broker's greeting (for
    /// [`server_version`](Backend::server_version)), then logs in, all within the
    /// connect timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl) for a URL of another form;
    /// [`ErrorKind::Connect`](crate::ErrorKind::Connect) when the broker cannot be
    /// reached, e.g. `cannot connect to rabbitmq at amqp://guest:***@127.0.0.1:5673/%2f
    /// (tried 127.0.0.1:5673: connection refused)`;
    /// [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) when something else than an
    /// AMQP 0-9-1 broker answers; [`ErrorKind::Rejected`](crate::ErrorKind::Rejected) when
    /// the broker refuses the login or the virtual host.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        let target = Target::parse(url)?;
        let started = tokio::time::Instant::now();
        let server_version = address::probe(&target, options.connect_timeout).await?;
        // What the probe left of the connect timeout, for the login.
        let remaining = options
            .connect_timeout
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_millis(100));
        let context = Arc::new(Context {
            target,
            options,
            topology: Topology::default(),
            cleanups: TaskTracker::new(),
        });
        let connection = connect_within(&context, "backend", remaining).await?;
        Ok(RabbitMqBackend {
            context,
            server_version,
            connection: tokio::sync::Mutex::new(Arc::new(connection)),
        })
    }

    /// What RabbitMQ can do through this adapter.
    ///
    /// Fan-out, competing consumers, live-only subscriptions, manual acks with
    /// redelivery when the consumer goes away, nack, dead-lettering (after
    /// [`MAX_DELIVERY_ATTEMPTS`] deliveries, on topics prepared with it) and a retention
    /// limit (`x-max-length`, oldest dropped). Not: replay (classic queues keep nothing
    /// for later subscribers), dedup (AMQP 0-9-1 has no idempotent publish), key ordering
    /// (see the module documentation).
    pub fn capabilities() -> Capabilities {
        Capabilities::of(&[
            Capability::FanOut,
            Capability::Competing,
            Capability::LiveOnly,
            Capability::AckRedelivery,
            Capability::Nack,
            Capability::DeadLetter,
            Capability::RetentionLimit,
        ])
    }

    /// The backend's connection, reopened if it has closed.
    async fn connection(&self) -> Result<Arc<Connection>, AdapterError> {
        let mut current = self.connection.lock().await;
        if !current.status().connected() {
            *current = Arc::new(open_connection(&self.context, "backend").await?);
        }
        Ok(current.clone())
    }

    /// A new channel on the backend's connection.
    async fn channel(&self, deadline: Deadline, purpose: &str) -> Result<Channel, AdapterError> {
        let connection = self.connection().await?;
        deadline
            .run(
                || {
                    format!(
                        "open a channel to {purpose} on rabbitmq at {}",
                        self.context.target.display
                    )
                },
                connection.create_channel(),
            )
            .await
    }

    async fn prepare_topology(&self, topology: &RunTopology) -> Result<(), AdapterError> {
        for topic in &topology.topics {
            RabbitMqBackend::capabilities().require(
                BackendKind::Rabbitmq,
                topic.required_capabilities(),
                &format!("topic {}", topic.name),
            )?;
            topology::check_name("topic", &topic.name)?;
            if topology::is_dead_letter_topic(&topic.name) && topic.dead_letter {
                return Err(AdapterError::invalid_input(format!(
                    "topic '{}' is a dead-letter topic (its name ends with '{}') and cannot have a dead-letter topic of its own",
                    topic.name,
                    topology::DEAD_LETTER_SUFFIX
                )));
            }
            for group in &topic.groups {
                topology::check_name("group queue", &topology::group_queue(&topic.name, group))?;
            }
        }
        let deadline = Deadline::after(self.context.options.request_timeout);
        let channel = self.channel(deadline, "prepare the run").await?;
        let declare = Declarer {
            channel: &channel,
            topology: &self.context.topology,
            deadline,
            url: &self.context.target.display,
        };
        for topic in &topology.topics {
            let config = TopicConfig {
                dead_letter: topic.dead_letter,
                max_messages: topic.max_messages,
            };
            self.context.topology.configure(&topic.name, config);
            declare.topic(&topic.name).await?;
            if topology::is_dead_letter_topic(&topic.name) {
                // Its readers, grouped or not, read its one queue.
                continue;
            }
            for group in &topic.groups {
                declare
                    .queue(&QueuePlan::group(&topic.name, group, config))
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete_everything(&self) -> Result<(), AdapterError> {
        // Let dropped subscriptions finish deleting their queues first.
        let cleanups = &self.context.cleanups;
        cleanups.close();
        let _ = tokio::time::timeout(self.context.options.request_timeout, cleanups.wait()).await;
        cleanups.reopen();
        let (queues, exchanges) = self.context.topology.take();
        if queues.is_empty() && exchanges.is_empty() {
            return Ok(());
        }
        let deadline = Deadline::after(self.context.options.request_timeout);
        let mut failures = Vec::new();
        let mut channel: Option<Channel> = None;
        let work = queues
            .iter()
            .map(|q| (true, q))
            .chain(exchanges.iter().map(|e| (false, e)));
        for (is_queue, name) in work {
            let what = format!(
                "delete {} '{name}'",
                if is_queue { "queue" } else { "exchange" }
            );
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                match self.channel(deadline, "tear down the run").await {
                    Ok(fresh) => channel = Some(fresh),
                    Err(e) => {
                        failures.push(format!("{what}: {}", e.message()));
                        continue;
                    }
                }
            }
            let Some(ch) = channel.as_ref() else { continue };
            let name = ShortString::from(name.as_str());
            let result = if is_queue {
                deadline
                    .run(
                        || what.clone(),
                        ch.queue_delete(name, QueueDeleteOptions::default()),
                    )
                    .await
                    .map(drop)
            } else {
                deadline
                    .run(
                        || what.clone(),
                        ch.exchange_delete(name, ExchangeDeleteOptions::default()),
                    )
                    .await
            };
            if let Err(e) = result {
                failures.push(e.message().to_owned());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::rejected(format!(
                "teardown on rabbitmq at {} failed: {}",
                self.context.target.display,
                failures.join("; ")
            )))
        }
    }

    async fn open_subscription(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Subscription, AdapterError> {
        let context = &self.context;
        RabbitMqBackend::capabilities().require(
            BackendKind::Rabbitmq,
            spec.required_capabilities(),
            &format!("the subscription to {}", spec.topic),
        )?;
        let topic = spec.topic.clone();
        topology::check_name("topic", &topic)?;
        let deadline = Deadline::after(context.options.request_timeout);
        let channel = self
            .channel(deadline, &format!("subscribe to '{topic}'"))
            .await?;
        let declare = Declarer {
            channel: &channel,
            topology: &context.topology,
            deadline,
            url: &context.target.display,
        };
        let config = declare.topic(&topic).await?;
        let plan = if topology::is_dead_letter_topic(&topic) {
            // Readers of a dead-letter topic read its queue, which kept the dead letters.
            QueuePlan::dead_letters(&topic)
        } else {
            match &spec.group {
                Some(group) => QueuePlan::group(&topic, group, config),
                None => QueuePlan::fanout(&topic, config),
            }
        };
        let queue = declare.queue(&plan).await?;
        let goes_with_subscription =
            spec.group.is_none() && !topology::is_dead_letter_topic(&topic);
        let prefetch = context.target.prefetch.unwrap_or(DEFAULT_PREFETCH);
        let url = &context.target.display;
        deadline
            .run(
                || format!("set the prefetch of '{topic}' on rabbitmq at {url}"),
                channel.basic_qos(prefetch, BasicQosOptions::default()),
            )
            .await?;
        let consumer = deadline
            .run(
                || format!("consume queue '{queue}' of '{topic}' on rabbitmq at {url}"),
                channel.basic_consume(
                    ShortString::from(queue.as_str()),
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        let shared = Arc::new(subscriber::Shared::default());
        let reader_finished = CancellationToken::new();
        let delete_queue = goes_with_subscription && plan.delete_with_subscription;
        let control = Control {
            context: context.clone(),
            channel: channel.clone(),
            consumer_tag: consumer.tag(),
            topic: topic.clone(),
            queue: queue.clone(),
            delete_queue,
            forget_queue: goes_with_subscription,
            shared: shared.clone(),
            reader_finished: reader_finished.clone(),
        };
        let (tx, subscription) = Subscription::channel(&spec, Box::new(control));
        let reader = Reader {
            context: context.clone(),
            channel,
            consumer,
            tx,
            topic,
            queue,
            queue_type: plan.queue_type,
            ack: spec.ack,
            shared,
            cancel_when_dropped: delete_queue,
            _finished: reader_finished.drop_guard(),
        };
        tokio::spawn(reader.run());
        Ok(subscription)
    }
}

impl std::fmt::Debug for RabbitMqBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqBackend")
            .field("url", &self.context.target.display)
            .field("server_version", &self.server_version)
            .field("options", &self.context.options)
            .finish_non_exhaustive()
    }
}

impl Backend for RabbitMqBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Rabbitmq
    }

    /// The URL, with its password replaced by `***`.
    fn url(&self) -> &str {
        &self.context.target.display
    }

    fn capabilities(&self) -> Capabilities {
        RabbitMqBackend::capabilities()
    }

    fn dead_letter_topic(&self, topic: &str) -> Option<String> {
        Some(topology::dead_letter_topic(topic))
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(self.prepare_topology(topology))
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(self.delete_everything())
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let publisher = RabbitPublisher::open(self.context.clone()).await?;
            Ok(Producer::new(
                Arc::new(publisher),
                BackendKind::Rabbitmq,
                RabbitMqBackend::capabilities(),
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(self.open_subscription(spec))
    }

    fn server_version(&self) -> Option<String> {
        self.server_version.clone()
    }
}
