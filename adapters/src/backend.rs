//! The [`Backend`] trait, its options, per-run topology, and [`connect`].

use std::time::Duration;

use futures::future::BoxFuture;

use crate::capability::Capabilities;
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

/// How to connect and how long to wait. Every wait on the network has one of these
/// timeouts.
///
/// ```
/// use std::time::Duration;
/// use brokerbench_adapters::ConnectOptions;
/// let options = ConnectOptions::new().connect_timeout(Duration::from_secs(2));
/// assert_eq!(options.publish_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Name resolution plus TCP connection to every resolved address, in total.
    /// Default 5 s: an unreachable broker is reported within a few seconds.
    pub connect_timeout: Duration,
    /// How long a publish waits for the broker's confirmation before it resolves as
    /// [`PublishOutcome::Unknown`](crate::PublishOutcome::Unknown). Default 10 s.
    pub publish_timeout: Duration,
    /// How long other requests (subscribe, unsubscribe, stats, set-up) wait for their
    /// confirmation, and how long one socket write may block. Default 10 s.
    pub request_timeout: Duration,
}

impl ConnectOptions {
    /// The defaults: connect 5 s, publish 10 s, requests 10 s.
    pub fn new() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`publish_timeout`](Self::publish_timeout).
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The topics, groups and limits one run will use, so a backend can create them before
/// the run ([`Backend::prepare`]) and delete them after ([`Backend::teardown`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RunTopology {
    /// The run's id, as passed to [`Backend::topic_name`].
    pub run_id: String,
    /// Every topic of the run, already made unique with [`Backend::topic_name`].
    pub topics: Vec<TopicSpec>,
}

impl RunTopology {
    /// A topology for `run_id` with no topics yet.
    pub fn new(run_id: impl Into<String>) -> Self {
        RunTopology {
            run_id: run_id.into(),
            topics: Vec::new(),
        }
    }

    /// Adds a topic.
    #[must_use]
    pub fn topic(mut self, topic: TopicSpec) -> Self {
        self.topics.push(topic);
        self
    }
}

/// One topic (stream, exchange and queues, subject) of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSpec {
    /// The per-run name (from [`Backend::topic_name`]).
    pub name: String,
    /// Consumer groups that will read it (shared durable consumers, shared queues,
    /// consumer groups).
    pub groups: Vec<String>,
    /// Partitions, for brokers that have them (Kafka); `None` = the broker's default.
    pub partitions: Option<u32>,
    /// Retain at most this many messages (needs
    /// [`Capability::RetentionLimit`](crate::Capability::RetentionLimit)).
    pub max_messages: Option<u64>,
    /// Whether messages that keep failing should go to a dead-letter destination (needs
    /// [`Capability::DeadLetter`](crate::Capability::DeadLetter)).
    pub dead_letter: bool,
}

impl TopicSpec {
    /// A topic with no groups, default partitions, no retention limit, no dead letter.
    pub fn new(name: impl Into<String>) -> Self {
        TopicSpec {
            name: name.into(),
            groups: Vec::new(),
            partitions: None,
            max_messages: None,
            dead_letter: false,
        }
    }

    /// Adds a consumer group.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// Sets the partition count.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Sets the retention limit in messages.
    #[must_use]
    pub fn max_messages(mut self, max: u64) -> Self {
        self.max_messages = Some(max);
        self
    }

    /// Asks for a dead-letter destination.
    #[must_use]
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// The capabilities a backend needs to set this topic up.
    pub fn required_capabilities(&self) -> Capabilities {
        use crate::capability::Capability;
        let mut needed = Capabilities::NONE;
        if !self.groups.is_empty() {
            needed.insert(Capability::Competing);
        }
        if self.max_messages.is_some() {
            needed.insert(Capability::RetentionLimit);
        }
        if self.dead_letter {
            needed.insert(Capability::DeadLetter);
        }
        needed
    }
}

/// A unique per-run name for the scenario's topic `name`: `bb.<run_id>.<name>`, with
/// every character other than ASCII letters, digits, `-` and `_` in either part replaced
/// by `_`, so the result is valid for every broker (NATS subjects, Kafka topics, Redis
/// keys, RabbitMQ queues).
///
/// ```
/// assert_eq!(brokerbench_adapters::topic_name("r1", "chat room"), "bb.r1.chat_room");
/// ```
pub fn topic_name(run_id: &str, name: &str) -> String {
    fn clean(part: &str, out: &mut String) {
        out.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    let mut out = String::with_capacity(4 + run_id.len() + name.len());
    out.push_str("bb.");
    clean(run_id, &mut out);
    out.push('.');
    clean(name, &mut out);
    out
}

/// One broker, reached through its adapter.
///
/// Selected at run time (`Box<dyn Backend>` / `Arc<dyn Backend>`), so every async method
/// returns a boxed future. Producers and subscriptions each own their connection (or
/// share the adapter's multiplexed client), so they can live on different tasks and
/// outlive the call that made them.
pub trait Backend: Send + Sync + 'static {
    /// Which broker this is.
    fn kind(&self) -> BackendKind;

    /// The URL it was connected with.
    fn url(&self) -> &str;

    /// What it can do. A scenario needing more must stop before the run; use
    /// [`Capabilities::require`].
    fn capabilities(&self) -> Capabilities;

    /// A unique per-run name for the scenario's topic `name`; see [`topic_name`].
    fn topic_name(&self, run_id: &str, name: &str) -> String {
        topic_name(run_id, name)
    }

    /// The topic where messages of `topic` go after too many failed deliveries, for
    /// backends with [`Capability::DeadLetter`](crate::Capability::DeadLetter) whose
    /// dead letters can be subscribed to like a topic.
    fn dead_letter_topic(&self, topic: &str) -> Option<String> {
        let _ = topic;
        None
    }

    /// Creates what the run needs (streams, exchanges, queues, consumer groups) before
    /// the run. A no-op where topics come into being when first named.
    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>>;

    /// Deletes what [`prepare`](Self::prepare) created. A no-op where there is nothing to
    /// delete.
    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>>;

    /// A new producer (its own connection where the broker has connections).
    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>>;

    /// Subscribes and returns once the broker has confirmed, so the subscription is ready:
    /// every message published after this returns is eligible for it.
    ///
    /// Fails at once with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) if the
    /// spec needs a capability the backend lacks.
    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>>;

    /// The broker's name and version as the broker reported it when connecting (e.g.
    /// `nats-server 2.10.24`, `RabbitMQ 3.12.1`, `redis 7.0.15`), where it reports one.
    fn server_version(&self) -> Option<String> {
        None
    }

    /// The broker's own counters, where it exposes them (the reference broker's `stats`
    /// command); `None` otherwise.
    fn broker_stats(&self) -> BoxFuture<'_, Result<Option<serde_json::Value>, AdapterError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// Connects to the broker of `kind` at `url`.
///
/// `url` is typically [`BackendKind::resolve_url`]'s result. The null backend ignores it.
///
/// # Errors
///
/// [`ErrorKind::Connect`](crate::ErrorKind::Connect) when the broker cannot be reached
/// within [`ConnectOptions::connect_timeout`] (the message names the URL, the addresses
/// tried and the OS error), [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl) for a
/// URL of the wrong form, [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for a
/// kind whose adapter is not built yet.
pub async fn connect(
    kind: BackendKind,
    url: &str,
    options: ConnectOptions,
) -> Result<Box<dyn Backend>, AdapterError> {
    match kind {
        BackendKind::Reference => Ok(Box::new(
            crate::reference::ReferenceBackend::connect(url, options).await?,
        )),
        BackendKind::Null => Ok(Box::new(crate::null::NullBackend::new())),
        #[cfg(feature = "nats")]
        BackendKind::Nats => Ok(Box::new(
            crate::nats::NatsBackend::connect(url, options).await?,
        )),
        #[cfg(feature = "jetstream")]
        BackendKind::Jetstream => Ok(Box::new(
            crate::jetstream::JetStreamBackend::connect(url, options).await?,
        )),
        #[cfg(feature = "rabbitmq")]
        BackendKind::Rabbitmq => Ok(Box::new(
            crate::rabbitmq::RabbitMqBackend::connect(url, options).await?,
        )),
        #[cfg(feature = "redis")]
        BackendKind::Redis => Ok(Box::new(
            crate::redis_streams::RedisBackend::connect(url, options).await?,
        )),
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => Ok(Box::new(
            crate::kafka::KafkaBackend::connect(url, options).await?,
        )),
        #[allow(unreachable_patterns)]
        _ => Err(AdapterError::unsupported(format!(
            "brokerbench was built without the `{kind}` feature, so it cannot connect to {}; rebuild with `--features {kind}`",
            crate::endpoint::redact(url)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_unique_per_run_and_safe() {
        assert_eq!(topic_name("run-1", "orders"), "bb.run-1.orders");
        assert_eq!(topic_name("a.b", "x/y z*"), "bb.a_b.x_y_z_");
        assert_ne!(topic_name("r1", "t"), topic_name("r2", "t"));
    }

    #[test]
    fn topic_spec_capabilities() {
        use crate::Capability;
        assert!(TopicSpec::new("t").required_capabilities().is_empty());
        let spec = TopicSpec::new("t")
            .group("g")
            .partitions(3)
            .max_messages(10)
            .dead_letter(true);
        assert_eq!(
            spec.required_capabilities(),
            Capabilities::of(&[
                Capability::Competing,
                Capability::RetentionLimit,
                Capability::DeadLetter
            ])
        );
        let topology = RunTopology::new("r").topic(spec);
        assert_eq!(topology.topics.len(), 1);
    }
}
