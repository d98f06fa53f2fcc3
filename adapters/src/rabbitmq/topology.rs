//! How brokerbench topics map onto RabbitMQ objects, and the record of what this backend
//! declared so that teardown can delete it.
//!
//! ```text
//!  topic T ──> fanout exchange "T"
//!                ├── fan-out subscriber:   server-named exclusive auto-delete classic queue
//!                │                         (quorum queue "T.fanout.<id>" on a dead-letter topic)
//!                └── group G:              shared queue "T.group.G", one per (topic, group)
//!                                          (classic; quorum on a dead-letter topic)
//!  dead-letter topic "T.dead-letter" ──> fanout exchange "T.dead-letter"
//!                └── queue "T.dead-letter" (classic, retains dead letters until read)
//! ```
//!
//! Classic queues are the default because they are RabbitMQ's fastest queue type and
//! brokerbench measures throughput. They do not count deliveries, so a message that keeps
//! being nacked (requeued) would loop for ever. A topic prepared with
//! [`TopicSpec::dead_letter`](crate::TopicSpec::dead_letter) therefore gets quorum queues,
//! which count deliveries (`x-delivery-count`, reported as the delivery's `attempt`) and
//! dead-letter a message after [`MAX_DELIVERY_ATTEMPTS`] deliveries (`x-delivery-limit`)
//! to the topic's dead-letter exchange (`x-dead-letter-exchange`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use parking_lot::Mutex;

use super::errors::Deadline;
use crate::error::AdapterError;

/// Appended to a topic's name to name its dead-letter topic (exchange and queue).
pub(super) const DEAD_LETTER_SUFFIX: &str = ".dead-letter";

/// Deliveries of one message on a dead-letter topic's queues before it is dead-lettered
/// (the reference broker's default too). RabbitMQ's `x-delivery-limit` counts the
/// deliveries *after* the first, so it is one less.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 5;

/// How long a named fan-out queue (quorum, on a dead-letter topic) may stay without a
/// consumer before RabbitMQ deletes it (`x-expires`): a safety net for a process that
/// died before deleting it. Its subscription deletes it when dropped.
const FANOUT_QUEUE_EXPIRY_MS: i64 = 10 * 60 * 1000;

/// The longest name RabbitMQ accepts for an exchange or a queue (a short string).
const MAX_NAME_BYTES: usize = 255;

/// The header that carries a key the routing key cannot (empty, or over 255 bytes).
pub(super) const KEY_HEADER: &str = "x-brokerbench-key";

/// The dead-letter topic of `topic`.
pub(super) fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// Whether `topic` names a dead-letter topic.
pub(super) fn is_dead_letter_topic(topic: &str) -> bool {
    topic.len() > DEAD_LETTER_SUFFIX.len() && topic.ends_with(DEAD_LETTER_SUFFIX)
}

/// The shared queue of `group` on `topic`.
pub(super) fn group_queue(topic: &str, group: &str) -> String {
    format!("{topic}.group.{group}")
}

/// A new, unique name for a fan-out subscriber's named queue on `topic`.
fn fanout_queue(topic: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{topic}.fanout.{:x}-{:x}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Checks that `name` can be an exchange or queue name.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) naming it and why.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), AdapterError> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "RabbitMQ names are at most 255 bytes"
    } else if name.starts_with("amq.") {
        "names starting with 'amq.' are reserved by RabbitMQ"
    } else {
        return Ok(());
    };
    Err(AdapterError::invalid_input(format!(
        "{what} '{name}' cannot be used on rabbitmq: {why}"
    )))
}

/// What a topic was prepared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct TopicConfig {
    /// Messages that keep failing go to the dead-letter topic (quorum queues).
    pub(super) dead_letter: bool,
    /// Each queue of the topic holds at most this many ready messages (oldest dropped).
    pub(super) max_messages: Option<u64>,
}

/// Which queue type a queue has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueType {
    Classic,
    Quorum,
}

/// A queue to declare and bind.
#[derive(Debug, Clone)]
pub(super) struct QueuePlan {
    /// The name, empty for a server-named queue.
    pub(super) name: String,
    pub(super) options: QueueDeclareOptions,
    pub(super) arguments: FieldTable,
    pub(super) queue_type: QueueType,
    /// The exchange to bind it to.
    pub(super) exchange: String,
    /// Whether its subscription deletes it when dropped (a named fan-out queue; the
    /// server-named ones delete themselves).
    pub(super) delete_with_subscription: bool,
}

impl QueuePlan {
    /// The shared queue of `group` on `topic`.
    pub(super) fn group(topic: &str, group: &str, config: TopicConfig) -> QueuePlan {
        let mut plan = QueuePlan::classic(group_queue(topic, group), topic);
        plan.apply(topic, config);
        plan
    }

    /// A fan-out subscriber's own queue on `topic`.
    pub(super) fn fanout(topic: &str, config: TopicConfig) -> QueuePlan {
        let mut plan = QueuePlan::classic(String::new(), topic);
        plan.options.exclusive = true;
        plan.options.auto_delete = true;
        if config.dead_letter {
            // Quorum queues cannot be exclusive or auto-delete: name it, and delete it
            // when the subscription goes (or let x-expires do it).
            plan.name = fanout_queue(topic);
            plan.options.exclusive = false;
            plan.options.auto_delete = false;
            plan.delete_with_subscription = true;
            plan.arguments.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(FANOUT_QUEUE_EXPIRY_MS),
            );
        }
        plan.apply(topic, config);
        plan
    }

    /// The queue of dead-letter topic `dead_letter_topic`, which keeps dead letters until
    /// they are read.
    pub(super) fn dead_letters(dead_letter_topic: &str) -> QueuePlan {
        QueuePlan::classic(dead_letter_topic.to_owned(), dead_letter_topic)
    }

    fn classic(name: String, exchange: &str) -> QueuePlan {
        QueuePlan {
            name,
            options: QueueDeclareOptions::default(),
            arguments: FieldTable::default(),
            queue_type: QueueType::Classic,
            exchange: exchange.to_owned(),
            delete_with_subscription: false,
        }
    }

    /// Adds what the topic's configuration asks for.
    fn apply(&mut self, topic: &str, config: TopicConfig) {
        if let Some(max) = config.max_messages {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            self.arguments
                .insert("x-max-length".into(), AMQPValue::LongLongInt(max));
            self.arguments.insert(
                "x-overflow".into(),
                AMQPValue::LongString("drop-head".into()),
            );
        }
        if config.dead_letter {
            self.queue_type = QueueType::Quorum;
            // Quorum queues are always durable.
            self.options.durable = true;
            self.arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            self.arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from(dead_letter_topic(topic))),
            );
            self.arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(MAX_DELIVERY_ATTEMPTS - 1)),
            );
        }
    }
}

/// What this backend declared, so that teardown deletes exactly that.
#[derive(Debug, Default)]
pub(super) struct Topology {
    inner: Mutex<Declared>,
}

#[derive(Debug, Default)]
struct Declared {
    /// Per-topic configuration from `prepare`.
    topics: HashMap<String, TopicConfig>,
    exchanges: BTreeSet<String>,
    queues: BTreeSet<String>,
}

impl Topology {
    /// The configuration `topic` was prepared with (the default if it was not).
    pub(super) fn config(&self, topic: &str) -> TopicConfig {
        self.inner
            .lock()
            .topics
            .get(topic)
            .copied()
            .unwrap_or_default()
    }

    /// Remembers `topic`'s configuration.
    pub(super) fn configure(&self, topic: &str, config: TopicConfig) {
        self.inner.lock().topics.insert(topic.to_owned(), config);
    }

    /// Whether this backend declared exchange `name`.
    pub(super) fn has_exchange(&self, name: &str) -> bool {
        self.inner.lock().exchanges.contains(name)
    }

    pub(super) fn record_exchange(&self, name: &str) {
        let mut inner = self.inner.lock();
        if !inner.exchanges.contains(name) {
            inner.exchanges.insert(name.to_owned());
        }
    }

    pub(super) fn record_queue(&self, name: &str) {
        let mut inner = self.inner.lock();
        if !inner.queues.contains(name) {
            inner.queues.insert(name.to_owned());
        }
    }

    /// Forgets a queue that went away with its subscription.
    pub(super) fn forget_queue(&self, name: &str) {
        self.inner.lock().queues.remove(name);
    }

    /// Everything declared so far (queues, exchanges), forgetting it all.
    pub(super) fn take(&self) -> (Vec<String>, Vec<String>) {
        let mut inner = self.inner.lock();
        inner.topics.clear();
        let queues = std::mem::take(&mut inner.queues).into_iter().collect();
        let exchanges = std::mem::take(&mut inner.exchanges).into_iter().collect();
        (queues, exchanges)
    }
}

/// The declarations of one request, on one channel, within one deadline; each failure
/// names the step and the broker (`url`, password redacted).
pub(super) struct Declarer<'a> {
    pub(super) channel: &'a Channel,
    pub(super) topology: &'a Topology,
    pub(super) deadline: Deadline,
    pub(super) url: &'a str,
}

impl Declarer<'_> {
    /// Declares the fanout exchange of `topic` (idempotent) and remembers it.
    pub(super) async fn exchange(&self, topic: &str) -> Result<(), AdapterError> {
        check_name("topic", topic)?;
        self.deadline
            .run(
                || format!("declare exchange '{topic}' on rabbitmq at {}", self.url),
                self.channel.exchange_declare(
                    ShortString::from(topic),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        self.topology.record_exchange(topic);
        Ok(())
    }

    /// Declares `plan`'s queue and binds it to its exchange; returns the queue's name
    /// (the broker's, for a server-named queue).
    pub(super) async fn queue(&self, plan: &QueuePlan) -> Result<String, AdapterError> {
        check_name("topic", &plan.exchange)?;
        if !plan.name.is_empty() {
            check_name("queue", &plan.name)?;
        }
        let described = if plan.name.is_empty() {
            format!("a fan-out queue of '{}'", plan.exchange)
        } else {
            format!("queue '{}'", plan.name)
        };
        let queue = self
            .deadline
            .run(
                || format!("declare {described} on rabbitmq at {}", self.url),
                self.channel.queue_declare(
                    ShortString::from(plan.name.as_str()),
                    plan.options,
                    plan.arguments.clone(),
                ),
            )
            .await?;
        let name = queue.name().as_str().to_owned();
        self.topology.record_queue(&name);
        self.deadline
            .run(
                || {
                    format!(
                        "bind queue '{name}' to exchange '{}' on rabbitmq at {}",
                        plan.exchange, self.url
                    )
                },
                self.channel.queue_bind(
                    ShortString::from(name.as_str()),
                    ShortString::from(plan.exchange.as_str()),
                    ShortString::from(""),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        Ok(name)
    }

    /// Declares dead-letter topic `dead_letter_topic`: its exchange and its queue.
    pub(super) async fn dead_letter_topic(
        &self,
        dead_letter_topic: &str,
    ) -> Result<(), AdapterError> {
        self.exchange(dead_letter_topic).await?;
        self.queue(&QueuePlan::dead_letters(dead_letter_topic))
            .await?;
        Ok(())
    }

    /// Declares what publishing to or subscribing to `topic` needs before its own queues:
    /// its exchange and, for a dead-letter topic or a topic prepared with dead-lettering,
    /// the dead-letter exchange and queue.
    pub(super) async fn topic(&self, topic: &str) -> Result<TopicConfig, AdapterError> {
        if is_dead_letter_topic(topic) {
            self.dead_letter_topic(topic).await?;
            return Ok(TopicConfig::default());
        }
        let config = self.topology.config(topic);
        self.exchange(topic).await?;
        if config.dead_letter {
            self.dead_letter_topic(&dead_letter_topic(topic)).await?;
        }
        Ok(config)
    }
}
