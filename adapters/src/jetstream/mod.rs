//! The NATS JetStream adapter, through async-nats.
//!
//! - A topic is a stream storing the subject of the same name, in memory (see `topology`
//!   for its settings), created by [`prepare`](Backend::prepare) or on first use and deleted
//!   by [`teardown`](Backend::teardown).
//! - Fan-out: each subscription gets a pull consumer of its own. Competing: the members of
//!   a group share one durable pull consumer. Start positions map to deliver policies, so
//!   replay from the beginning or after a stream sequence works; `Delivery::sequence` is
//!   the stream sequence.
//! - Manual acks: `AckExplicit`, redelivery after a 5 s ack wait, nack as `-NAK` (at once);
//!   `redelivered` and `attempt` come from the server's delivery count.
//! - Dedup: the request id travels as `Nats-Msg-Id`; the stream's 2 minute window answers a
//!   repeated id with a duplicate ack, reported as [`PublishOutcome::Duplicate`](crate::PublishOutcome::Duplicate).
//! - A publish is confirmed by the stream's ack (`PubAck`); publishes pipeline, thousands in
//!   flight per producer.
//! - Every producer and every subscription has its own connection. A subscription ends with
//!   an error item when its connection is lost (its consumer keeps whatever was not
//!   acknowledged), its consumer is deleted, or heartbeats stop. A producer's client
//!   reconnects (for about a minute); publishes whose ack was outstanding when the
//!   connection was lost resolve as unknown.

mod publisher;
mod subscriber;
mod topology;

use std::sync::Arc;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::future::BoxFuture;

use crate::nats_client as client;

use self::client::{Connection, Target};
use self::topology::Topology;
use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::{Capabilities, Capability};
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

/// What JetStream guarantees through this adapter.
///
/// Left out, from the JetStream documentation: key ordering (a pull consumer hands each
/// message to whichever member's pull request is waiting; nothing routes a subject or key to
/// one member, and this adapter uses one subject per topic) and dead letter (JetStream has
/// no dead-letter destination: after `max_deliver` attempts the server only publishes a
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES` advisory and leaves the message in the
/// stream).
const CAPABILITIES: [Capability; 8] = [
    Capability::FanOut,
    Capability::Competing,
    Capability::Replay,
    Capability::LiveOnly,
    Capability::AckRedelivery,
    Capability::Nack,
    Capability::Dedup,
    Capability::RetentionLimit,
];

/// A connected NATS server with JetStream enabled.
///
/// ```no_run
/// # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
/// use brokerbench_adapters::jetstream::JetStreamBackend;
/// use brokerbench_adapters::{
///     Backend, ConnectOptions, PublishOutcome, PublishRequest, RunTopology, StartPosition,
///     SubscriptionSpec, TopicSpec,
/// };
/// use futures::StreamExt;
///
/// let js = JetStreamBackend::connect("nats://127.0.0.1:4222", ConnectOptions::new()).await?;
/// let topic = js.topic_name("run-1", "orders");
/// js.prepare(&RunTopology::new("run-1").topic(TopicSpec::new(topic.as_str()))).await?;
/// let producer = js.producer().await?;
/// let first = producer.publish(PublishRequest::new(topic.as_str(), "a").id("m-1")).await;
/// let again = producer.publish(PublishRequest::new(topic.as_str(), "a").id("m-1")).await;
/// assert_eq!((first, again), (PublishOutcome::Ok, PublishOutcome::Duplicate));
/// let spec = SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning);
/// let mut sub = js.subscribe(spec).await?;
/// assert_eq!(sub.next().await.expect("open")?.sequence, Some(1));
/// js.teardown().await?;
/// # Ok(()) }
/// ```
pub struct JetStreamBackend {
    url: String,
    target: Arc<Target>,
    options: ConnectOptions,
    topology: Arc<Topology>,
    /// The connection made by `connect`; the JetStream API calls of `prepare`, `teardown`
    /// and group set-up go through it.
    _control: Connection,
    version: Option<String>,
}

impl JetStreamBackend {
    /// Connects to the NATS server at `url` (`nats://[user:password@|token@]host[:port]`,
    /// several hosts separated by commas, `tls://...` for TLS, or a bare `host:port`) and
    /// checks that JetStream answers.
    ///
    /// # Errors
    ///
    /// As for NATS core: [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl),
    /// [`ErrorKind::Connect`](crate::ErrorKind::Connect) (e.g. `cannot connect to jetstream at
    /// nats://127.0.0.1:4999 (tried 127.0.0.1:4999: connection refused)`),
    /// [`ErrorKind::Rejected`](crate::ErrorKind::Rejected) for refused credentials; and
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the server runs without
    /// JetStream.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        let target = Target::parse(BackendKind::Jetstream, url)?;
        let control = target.connect(&options, "control").await?;
        let info = control.client.server_info();
        let no_jetstream = || {
            AdapterError::unsupported(format!(
                "nats-server {} at {} runs without JetStream (start it with -js, or enable jetstream in its configuration)",
                info.version, target.display
            ))
        };
        if !info.jetstream {
            return Err(no_jetstream());
        }
        // One JetStream round trip: the account must have JetStream, not only the server.
        // (Read as plain JSON: the shape of the answer changes between server versions.)
        let what = format!("ask jetstream at {} for its account", target.display);
        let request = async_nats::Request::new().timeout(Some(options.request_timeout));
        let answer = tokio::time::timeout(
            options.request_timeout,
            control.client.send_request("$JS.API.INFO", request),
        )
        .await;
        match answer {
            Ok(Ok(message)) => {
                let reply: serde_json::Value =
                    serde_json::from_slice(&message.payload).map_err(|e| {
                        AdapterError::protocol(format!("{what}: an answer that is not JSON: {e}"))
                    })?;
                if let Some(error) = reply.get("error") {
                    let description = error
                        .get("description")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("no description");
                    return Err(
                        match error.get("err_code").and_then(serde_json::Value::as_u64) {
                            // JetStream not enabled for the account.
                            Some(10039) => no_jetstream(),
                            _ => AdapterError::rejected(format!(
                                "{what}: it answered: {description}"
                            )),
                        },
                    );
                }
            }
            Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(no_jetstream());
            }
            Ok(Err(error)) if error.kind() != async_nats::RequestErrorKind::TimedOut => {
                return Err(AdapterError::closed(format!(
                    "{what}: {}",
                    client::cause(&error)
                )));
            }
            Ok(Err(_)) | Err(_) => {
                return Err(AdapterError::timeout(&what, options.request_timeout));
            }
        }
        let js = jetstream::context::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(control.client.clone());
        let topology = Topology::new(js, target.display.clone(), options.request_timeout);
        Ok(JetStreamBackend {
            url: url.to_owned(),
            version: control.server_version(),
            target: Arc::new(target),
            options,
            topology: Arc::new(topology),
            _control: control,
        })
    }

    /// What JetStream can do here: fan-out, competing consumers, replay, live-only
    /// subscriptions, ack and redelivery, nack, dedup, retention limits.
    pub fn capabilities() -> Capabilities {
        Capabilities::of(&CAPABILITIES)
    }

    /// The name of the stream that stores `topic` (`bb_run_chat-1a2b3c4d` for
    /// `bb.run.chat`), to look at it with the `nats` CLI or the server's monitoring.
    pub fn stream_name(topic: &str) -> String {
        topology::stream_name(topic)
    }
}

impl std::fmt::Debug for JetStreamBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBackend")
            .field("url", &self.target.display)
            .field("server", &self.version)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Backend for JetStreamBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Jetstream
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        JetStreamBackend::capabilities()
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(async move {
            for topic in &topology.topics {
                JetStreamBackend::capabilities().require(
                    BackendKind::Jetstream,
                    topic.required_capabilities(),
                    &format!("topic {}", topic.name),
                )?;
            }
            for topic in &topology.topics {
                let stream = self
                    .topology
                    .stream(&topic.name, topic.max_messages)
                    .await?;
                // A group made here receives every message published from now on, whether
                // or not a member has joined yet.
                for group in &topic.groups {
                    self.topology
                        .group(&topic.name, &stream, group, DeliverPolicy::New)
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(self.topology.teardown())
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let connection = self.target.connect(&self.options, "producer").await?;
            let publisher = publisher::JetStreamPublisher::start(
                connection,
                self.topology.clone(),
                self.options.publish_timeout,
            );
            Ok(Producer::new(
                Arc::new(publisher),
                BackendKind::Jetstream,
                JetStreamBackend::capabilities(),
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            JetStreamBackend::capabilities().require(
                BackendKind::Jetstream,
                spec.required_capabilities(),
                &format!("the subscription to {}", spec.topic),
            )?;
            let stream = self.topology.stream(&spec.topic, None).await?;
            let connection = self.target.connect(&self.options, "subscriber").await?;
            subscriber::subscribe(
                connection,
                self.topology.clone(),
                stream,
                &spec,
                &self.options,
            )
            .await
        })
    }

    fn server_version(&self) -> Option<String> {
        self.version.clone()
    }
}
