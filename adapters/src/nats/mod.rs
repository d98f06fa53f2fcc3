//! The NATS core adapter, through async-nats.
//!
//! - Fan-out: each subscriber subscribes to the topic as a subject and gets every message.
//! - Competing: subscribers with a [`group`](crate::SubscriptionSpec::group) join the NATS
//!   queue group of that name; the server gives each message to one member.
//! - At most once: no acks, no replay, no dedup, nothing kept for absent subscribers.
//! - A publish is confirmed once the server has *processed* it, proved by a round trip
//!   on the producer's connection after it (one round trip confirms every publish queued
//!   before it, so confirmation costs no per-message wait).
//! - The key travels in the `Bb-Key` header.
//! - Every producer and every subscription has its own connection, so one slow consumer or
//!   lost connection affects only its own subscription.
//! - A subscription ends with an error item when its connection is lost or the client had
//!   to drop messages because the subscriber did not keep up; it is never silently resumed,
//!   because messages published meanwhile are lost to it. A producer's client reconnects
//!   (for about a minute), and publishes in flight when the connection was lost resolve as
//!   unknown.
//!
//! Subjects need no set-up, so [`prepare`](Backend::prepare) only checks that the topology
//! asks for nothing NATS core cannot do, and [`teardown`](Backend::teardown) has nothing to
//! delete.

mod publisher;
mod subscriber;

use std::sync::Arc;

use futures::future::BoxFuture;

use self::client::{Connection, Target};
use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::{Capabilities, Capability};
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::nats_client as client;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

/// What NATS core guarantees through this adapter.
///
/// Left out, from the NATS documentation ("Core NATS offers an at most once quality of
/// service"): replay (core NATS stores nothing), ack and redelivery and nack (there are no
/// acknowledgements), dedup (no message ids), retention limits (nothing is retained),
/// dead letter, and key ordering (a queue group picks a member per message at random).
const CAPABILITIES: [Capability; 3] = [
    Capability::FanOut,
    Capability::Competing,
    Capability::LiveOnly,
];

/// A connected NATS server, used for core NATS (subjects and queue groups).
///
/// ```no_run
/// # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
/// use brokerbench_adapters::nats::NatsBackend;
/// use brokerbench_adapters::{Backend, ConnectOptions, PublishRequest, SubscriptionSpec};
/// use futures::StreamExt;
///
/// let nats = NatsBackend::connect("nats://127.0.0.1:4222", ConnectOptions::new()).await?;
/// println!("{:?}", nats.server_version()); // Some("nats-server 2.10.24")
/// let mut sub = nats.subscribe(SubscriptionSpec::new("orders")).await?;
/// let producer = nats.producer().await?;
/// let outcome = producer.publish(PublishRequest::new("orders", "hi").key("c-7")).await;
/// assert!(outcome.is_confirmed());
/// let delivery = sub.next().await.expect("open")?;
/// assert_eq!(delivery.key.as_deref(), Some("c-7"));
/// # Ok(()) }
/// ```
pub struct NatsBackend {
    url: String,
    target: Arc<Target>,
    options: ConnectOptions,
    /// The connection made by `connect`, which proved the server is there; kept open so the
    /// server lists the backend for as long as it lives.
    _control: Connection,
    version: Option<String>,
}

impl NatsBackend {
    /// Connects to the NATS server at `url`: `nats://[user:password@|token@]host[:port]`,
    /// several hosts separated by commas, `tls://...` for TLS, or a bare `host:port`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl) for a URL of another form;
    /// [`ErrorKind::Connect`](crate::ErrorKind::Connect) when no server answers within the
    /// connect timeout, e.g. `cannot connect to nats at nats://127.0.0.1:4999 (tried
    /// 127.0.0.1:4999: connection refused)`; [`ErrorKind::Rejected`](crate::ErrorKind::Rejected)
    /// when the server refuses the credentials.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        let target = Target::parse(BackendKind::Nats, url)?;
        let control = target.connect(&options, "control").await?;
        Ok(NatsBackend {
            url: url.to_owned(),
            version: control.server_version(),
            target: Arc::new(target),
            options,
            _control: control,
        })
    }

    /// What NATS core can do: fan-out, competing consumers (queue groups), live-only
    /// subscriptions.
    pub fn capabilities() -> Capabilities {
        Capabilities::of(&CAPABILITIES)
    }
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("url", &self.target.display)
            .field("server", &self.version)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Backend for NatsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nats
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        NatsBackend::capabilities()
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        // Subjects and queue groups come into being when first used; only check that
        // nothing is asked that core NATS cannot do.
        let checked = topology.topics.iter().try_for_each(|topic| {
            NatsBackend::capabilities().require(
                BackendKind::Nats,
                topic.required_capabilities(),
                &format!("topic {}", topic.name),
            )
        });
        Box::pin(std::future::ready(checked))
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        // Nothing was created on the server: subscriptions end with their connections.
        Box::pin(std::future::ready(Ok(())))
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let connection = self.target.connect(&self.options, "producer").await?;
            let publisher = publisher::CorePublisher::start(
                connection,
                self.target.display.clone(),
                self.options.publish_timeout,
            );
            Ok(Producer::new(
                Arc::new(publisher),
                BackendKind::Nats,
                NatsBackend::capabilities(),
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            NatsBackend::capabilities().require(
                BackendKind::Nats,
                spec.required_capabilities(),
                &format!("the subscription to {}", spec.topic),
            )?;
            let connection = self.target.connect(&self.options, "subscriber").await?;
            subscriber::subscribe(
                connection,
                &spec,
                self.target.display.clone(),
                self.options.request_timeout,
            )
            .await
        })
    }

    fn server_version(&self) -> Option<String> {
        self.version.clone()
    }
}
