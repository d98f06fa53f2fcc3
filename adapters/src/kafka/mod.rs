//! The Kafka adapter, through rdkafka (librdkafka 2.12, bundled).
//!
//! URL: `kafka://host:port[,host:port...]` or a bare `host:port` list (port 9092 by
//! default), used as `bootstrap.servers`. PLAINTEXT only.
//!
//! # How brokerbench's semantics map onto Kafka
//!
//! - **Publish.** One idempotent producer (`enable.idempotence`, `acks=all`,
//!   `linger.ms=1`) per [`Producer`]; a publish is `Ok` on its delivery report, `Failed`
//!   when the broker or librdkafka refused it (too large, unknown topic, ...), `Unknown`
//!   when no report came within the publish timeout (librdkafka's `message.timeout.ms` is
//!   set to it) or the connection failed after sending. Thousands of publishes pipeline.
//!   The message key is the Kafka key (partitioned like the Java client, murmur2) and
//!   comes back as [`Delivery::key`](crate::Delivery::key).
//! - **Topics.** Created through the admin API (`prepare`, or on first use by a producer
//!   or subscription), deleted by `teardown`. Partitions: the topic's
//!   [`TopicSpec::partitions`](crate::TopicSpec::partitions), else
//!   [`GROUP_TOPIC_PARTITIONS`] for a topic with consumer groups (competing consumers
//!   share it by partitions) and [`FANOUT_TOPIC_PARTITIONS`] for the others, so that
//!   every fan-out subscriber sees one total order, the order of publishing. Kafka orders
//!   messages per partition only: on a topic with several partitions, a subscriber sees
//!   each key's messages in order (a key maps to one partition), but messages of
//!   different keys, and keyless ones (spread over partitions), interleave in any order.
//! - **Fan-out** (`group == None`): the subscriber assigns itself every partition at
//!   explicit offsets (no group, nothing stored on the broker). Partitions added to the
//!   topic later are not read. The fan-out subscriptions of a topic that start at
//!   `Latest` with automatic acks share one consumer per backend, which reads each
//!   message once and hands it to every one of them; a slow one holds the others back
//!   rather than making anyone lose a message (see [`KafkaBackend::consumers_created`]).
//! - **Competing** (`group == Some(g)`): one Kafka consumer group per (topic, group),
//!   named by [`group_id`]. A member gets whole partitions, so with more members than
//!   partitions some get nothing (they are still ready, and take over partitions when
//!   others leave).
//! - **Start.** `Latest` = the partition ends, `Beginning` = the first retained offsets,
//!   `AfterSequence(n)` = offset `n + 1` of every partition (kept within what the
//!   partition holds). [`Delivery::sequence`](crate::Delivery::sequence) is the message's
//!   offset in its partition, so on a one-partition topic it is the topic's sequence;
//!   on a topic with several partitions a sequence only means something together with
//!   its partition (in the ack token), and `AfterSequence` applies the same offset to
//!   every partition. A group uses its committed offsets where it has them (Kafka's
//!   rule); the start position applies to partitions without one.
//! - **Acks.** Automatic: a message handed to the subscription counts as consumed
//!   (committed every second and on every rebalance). Manual (groups): acknowledged
//!   offsets are committed (the lowest unacknowledged one per partition); an
//!   unacknowledged message is delivered again when its partition moves to another
//!   member, i.e. after this one unsubscribes, drops its subscription or dies (after
//!   `session.timeout.ms`, 10 s). There is no ack timeout within a live member and no
//!   per-message nack. Redeliveries are marked `redelivered` from the commit metadata
//!   (the highest offset the previous owner handed out), where the broker keeps commit
//!   metadata. A fan-out subscriber's acks do nothing: no one else could take over its
//!   messages.
//! - **Broker failure.** librdkafka reconnects by itself. Publishes without a delivery
//!   report resolve `Unknown` at the publish timeout. A subscription whose consumer has
//!   reported lost brokers (or its topic unknown) for the request timeout asks for the
//!   topic's metadata itself; if that fails too (or the topic is gone) the subscription
//!   ends with an [`ErrorKind::Closed`](crate::ErrorKind::Closed) error saying so.
//!
//! # Capabilities
//!
//! Fan-out, competing consumers, key ordering, replay, live-only, ack and redelivery
//! (on leaving, see above). Not: nack (Kafka has no per-message negative
//! acknowledgement), dead letter (no broker-side dead-letter topic), dedup (the
//! idempotent producer only drops its own retries, not a second publish of an
//! application id), retention limit (Kafka retains by time and bytes, not by message
//! count).
//!
//! # tansu
//!
//! The adapter speaks the Kafka protocol as Apache Kafka defines it and has no tansu
//! special case except one safeguard (teardown stops subscriptions before it deletes
//! topics, which is right for any broker). tansu 0.6 (a Kafka-compatible broker) differs
//! from Apache Kafka in ways this adapter's users see:
//!
//! - It does not create topics on demand (the adapter creates them explicitly anyway).
//! - A fetch from an offset inside a record batch returns only the batches that start at
//!   or after it: the rest of that batch is skipped. A group member resuming from a
//!   committed offset in the middle of a batch, or an `AfterSequence` start there, misses
//!   those messages (Apache Kafka returns the batch and the client skips the records
//!   before the offset).
//! - ListOffsets "latest" answers the base offset of the most recently written batch plus
//!   one (picked by write time, in milliseconds), not the log end offset. Together with
//!   the point above, a `Latest` subscriber usually starts at the true end; when several
//!   batches were written in the same millisecond it can start earlier and receive
//!   messages published before it was ready.
//! - A fetch always waits its full `fetch.wait.max.ms` (10 ms), even when data is there,
//!   so end-to-end latency is at least that (measured p50 13 ms; Apache Kafka answers a
//!   waiting fetch as soon as data arrives).
//! - OffsetFetch does not return commit metadata, so manual-ack redeliveries are not
//!   marked `redelivered` there (they do happen).
//! - A fetch for a topic that was deleted is answered with a "current leader" field and an
//!   all-zero topic id, on which librdkafka 2.12 dereferences a null topic name and
//!   crashes the process. Teardown therefore closes this backend's consumers before it
//!   deletes their topics; a topic deleted by someone else under a live subscription
//!   still crashes it.
//! - Debian's kcat (librdkafka 2.0.2) cannot parse tansu's ApiVersions v3 answer
//!   ("Read underflow"), so it cannot talk to it at all.

mod admin;
mod config;
mod consumer;
mod producer;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::{Capabilities, Capability};
use crate::error::{AdapterError, fmt_duration};
use crate::kind::BackendKind;
use crate::net;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

use admin::Shared;

/// Partitions of a topic with consumer groups that this adapter creates without an
/// explicit count: up to this many members of a group consume in parallel.
pub const GROUP_TOPIC_PARTITIONS: u32 = 8;

/// Partitions of a topic without consumer groups that this adapter creates without an
/// explicit count: one, so every subscriber sees every message in publishing order.
pub const FANOUT_TOPIC_PARTITIONS: u32 = 1;

/// The Kafka consumer group id of brokerbench group `group` on `topic`: groups are per
/// topic, so one name used on two topics makes two independent Kafka groups.
///
/// ```
/// assert_eq!(brokerbench_adapters::kafka::group_id("bb.r1.jobs", "workers"), "bb.r1.jobs.workers");
/// ```
pub fn group_id(topic: &str, group: &str) -> String {
    format!("{topic}.{group}")
}

/// A connected Kafka cluster.
///
/// ```no_run
/// # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
/// use brokerbench_adapters::kafka::KafkaBackend;
/// use brokerbench_adapters::{Backend, ConnectOptions, PublishRequest};
/// let kafka = KafkaBackend::connect("kafka://127.0.0.1:9092", ConnectOptions::new()).await?;
/// let producer = kafka.producer().await?;
/// let outcome = producer.publish(PublishRequest::new("bb.demo.orders", "hello").key("customer-7")).await;
/// println!("{outcome}");
/// kafka.teardown().await?;
/// # Ok(()) }
/// ```
pub struct KafkaBackend {
    shared: Arc<Shared>,
    server_version: Option<String>,
    /// The one librdkafka producer every [`Producer`] of this backend publishes through,
    /// made on first use. librdkafka clients are thread-safe and heavy (threads, buffers
    /// and connections of their own); one per process is what Kafka's clients
    /// recommend, and a run with hundreds of producers would otherwise drown in threads.
    publisher: tokio::sync::OnceCell<producer::KafkaPublisher>,
}

impl KafkaBackend {
    /// Connects to the cluster at `url` (`kafka://host:port[,host:port...]` or a bare
    /// `host:port` list): a TCP connection to each bootstrap address, then a metadata
    /// request, all within the connect timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl) for a URL of another
    /// form; [`ErrorKind::Connect`](crate::ErrorKind::Connect) when no bootstrap address
    /// accepts a connection (naming each address and its error) or the broker does not
    /// answer the metadata request in time.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        let parsed = config::parse_url(url)?;
        let deadline = Instant::now() + options.connect_timeout;
        let host_ports: Vec<String> = parsed.endpoints.iter().map(|e| e.host_port()).collect();
        let dials = host_ports
            .iter()
            .map(|host_port| net::reach(host_port, options.connect_timeout));
        let dialed = futures::future::join_all(dials).await;
        if !dialed.iter().any(Result::is_ok) {
            // No bootstrap address accepted a TCP connection: say what each answered.
            let why: Vec<_> = dialed.into_iter().filter_map(Result::err).collect();
            return Err(net::unreachable("kafka", url, &why));
        }
        drop(dialed);
        let shared = Arc::new(Shared::new(url, parsed.bootstrap, options.clone())?);
        // librdkafka waits for metadata at least this long, whatever the dials took.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(500));
        let (metadata, cluster) = shared.metadata(None, left).await.map_err(|e| {
            AdapterError::connect(format!(
                "cannot connect to kafka at {url} (the TCP connection succeeded, but no Kafka metadata answer within {}: {e})",
                fmt_duration(options.connect_timeout)
            ))
        })?;
        let brokers: Vec<String> = metadata
            .brokers()
            .iter()
            .map(|b| format!("{} at {}:{}", b.id(), b.host(), b.port()))
            .collect();
        let server_version = Some(format!(
            "Kafka protocol, cluster {}, broker{} {}",
            cluster.as_deref().unwrap_or("(no cluster id)"),
            if brokers.len() == 1 { "" } else { "s" },
            brokers.join(", ")
        ));
        Ok(KafkaBackend {
            shared,
            server_version,
            publisher: tokio::sync::OnceCell::new(),
        })
    }

    /// What Kafka can do through this adapter (see the module documentation).
    pub fn capabilities() -> Capabilities {
        Capabilities::of(&[
            Capability::FanOut,
            Capability::Competing,
            Capability::KeyOrdering,
            Capability::Replay,
            Capability::LiveOnly,
            Capability::AckRedelivery,
        ])
    }

    /// How many librdkafka consumers this backend has created so far: one for each
    /// subscription with a consumer of its own (a group member, manual acks, a replay),
    /// and one per topic for the fan-out subscriptions that share one (see the module
    /// documentation). For tests and diagnostics.
    pub fn consumers_created(&self) -> u64 {
        self.shared.consumers_created()
    }

    /// How many of this backend's consumers are open: created, and not yet closed by
    /// their reader thread (which closes a consumer when its last subscription has gone,
    /// or on an error or teardown).
    pub fn open_consumers(&self) -> usize {
        self.shared.open_consumers()
    }

    /// The `bootstrap.servers` list the URL names.
    pub fn bootstrap_servers(&self) -> &str {
        &self.shared.bootstrap
    }
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("url", &self.shared.url)
            .field("bootstrap", &self.shared.bootstrap)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

impl Backend for KafkaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kafka
    }

    fn url(&self) -> &str {
        &self.shared.url
    }

    fn capabilities(&self) -> Capabilities {
        KafkaBackend::capabilities()
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(async move {
            let capabilities = KafkaBackend::capabilities();
            let mut topics = Vec::with_capacity(topology.topics.len());
            for topic in &topology.topics {
                capabilities.require(
                    BackendKind::Kafka,
                    topic.required_capabilities(),
                    &format!("topic {}", topic.name),
                )?;
                let partitions = topic.partitions.unwrap_or(if topic.groups.is_empty() {
                    FANOUT_TOPIC_PARTITIONS
                } else {
                    GROUP_TOPIC_PARTITIONS
                });
                topics.push((topic.name.clone(), partitions));
            }
            let deadline = Instant::now() + self.shared.options.request_timeout;
            self.shared.ensure_topics(&topics, deadline).await?;
            // Kafka creates a group when its first member joins; remember the names so
            // teardown deletes them. Their start positions are fixed when a member first
            // gets each partition (see the consumer module).
            for topic in &topology.topics {
                for group in &topic.groups {
                    self.shared.register_group(&group_id(&topic.name, group));
                }
            }
            Ok(())
        })
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(self.shared.teardown())
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let publisher = self
                .publisher
                .get_or_try_init(|| producer::KafkaPublisher::new(self.shared.clone()))
                .await?
                .clone();
            Ok(Producer::new(
                Arc::new(publisher),
                BackendKind::Kafka,
                KafkaBackend::capabilities(),
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            KafkaBackend::capabilities().require(
                BackendKind::Kafka,
                spec.required_capabilities(),
                &format!("the subscription to {}", spec.topic),
            )?;
            consumer::subscribe(&self.shared, spec).await
        })
    }

    fn server_version(&self) -> Option<String> {
        self.server_version.clone()
    }
}

#[cfg(test)]
mod tests;
