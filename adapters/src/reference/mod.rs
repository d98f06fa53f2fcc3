//! The reference broker's adapter: brokerbench's own JSON-lines protocol over TCP.
//!
//! Every producer and every subscription gets its own connection, because the broker's
//! semantics are defined per connection: `all` pushes to every subscribed connection,
//! `one` to one of them. Topics come into being when first named, so there is nothing to
//! prepare or tear down. All capabilities are available (some through the protocol's
//! extensions).

mod codec;
mod connection;

use futures::future::BoxFuture;
use parking_lot::Mutex;

pub use connection::Connection;

use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::Capabilities;
use crate::error::{AdapterError, ErrorKind};
use crate::kind::BackendKind;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

/// The port the reference broker listens on by default.
pub const DEFAULT_PORT: u16 = 7000;

/// A connected reference broker.
///
/// ```no_run
/// # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
/// use brokerbench_adapters::{Backend, ConnectOptions, PublishRequest, ReferenceBackend};
/// let broker = ReferenceBackend::connect("tcp://127.0.0.1:7000", ConnectOptions::new()).await?;
/// let producer = broker.producer().await?;
/// let outcome = producer.publish(PublishRequest::new("orders", "hello")).await;
/// println!("{outcome}; broker stats: {}", broker.stats().await?);
/// # Ok(()) }
/// ```
pub struct ReferenceBackend {
    url: String,
    host_port: String,
    options: ConnectOptions,
    /// The connection made by `connect` (which proves the broker is there), kept for
    /// `stats`; replaced if the broker closes it.
    control: Mutex<Connection>,
}

impl ReferenceBackend {
    /// Connects to the reference broker at `url` (`tcp://host:port`, `tcp://host` for
    /// port 7000, or a bare `host:port`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for another scheme or a malformed address;
    /// [`ErrorKind::Connect`] when no resolved address answers within the connect timeout,
    /// e.g. `cannot connect to reference broker at tcp://127.0.0.1:7001 (tried
    /// 127.0.0.1:7001: connection refused)`.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        let host_port = host_port(url)?;
        let control = Connection::open(url, &host_port, &options).await?;
        Ok(ReferenceBackend {
            url: url.to_owned(),
            host_port,
            options,
            control: Mutex::new(control),
        })
    }

    /// What the reference broker can do: everything.
    pub fn capabilities() -> Capabilities {
        Capabilities::all()
    }

    /// Opens a new raw connection, which can publish and subscribe at once (for checks
    /// such as "the sender gets its own `all` message if it subscribed").
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect).
    pub async fn connection(&self) -> Result<Connection, AdapterError> {
        Connection::open(&self.url, &self.host_port, &self.options).await
    }

    /// The broker's counters (`{"command":"stats"}`): connections, topics, messages
    /// accepted, pushed, cached, duplicates, redelivered, dead-lettered and slow-consumer
    /// disconnects.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if the broker does not implement the extension; otherwise
    /// connection and timeout errors.
    pub async fn stats(&self) -> Result<serde_json::Value, AdapterError> {
        let control = self.control.lock().clone();
        if !control.is_closed() {
            return control.stats().await;
        }
        let fresh = self.connection().await?;
        *self.control.lock() = fresh.clone();
        fresh.stats().await
    }
}

impl std::fmt::Debug for ReferenceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceBackend")
            .field("url", &self.url)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Backend for ReferenceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        ReferenceBackend::capabilities()
    }

    fn dead_letter_topic(&self, topic: &str) -> Option<String> {
        Some(format!("$dlq.{topic}"))
    }

    fn prepare<'a>(
        &'a self,
        _topology: &'a RunTopology,
    ) -> BoxFuture<'a, Result<(), AdapterError>> {
        // Topics come into being when first named.
        Box::pin(std::future::ready(Ok(())))
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        // The protocol has no way to delete a topic; per-run names keep runs apart.
        Box::pin(std::future::ready(Ok(())))
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let conn = self.connection().await?;
            Ok(Producer::new(
                std::sync::Arc::new(conn),
                BackendKind::Reference,
                ReferenceBackend::capabilities(),
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            ReferenceBackend::capabilities().require(
                BackendKind::Reference,
                spec.required_capabilities(),
                &format!("the subscription to {}", spec.topic),
            )?;
            let conn = self.connection().await?;
            conn.subscribe(&spec).await
        })
    }

    fn broker_stats(&self) -> BoxFuture<'_, Result<Option<serde_json::Value>, AdapterError>> {
        Box::pin(async move { self.stats().await.map(Some) })
    }
}

/// `host:port` from a reference broker URL.
fn host_port(url: &str) -> Result<String, AdapterError> {
    let invalid = |why: &str| {
        AdapterError::new(
            ErrorKind::InvalidUrl,
            format!("invalid reference broker URL '{url}': {why} (expected tcp://host:port)"),
        )
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => rest,
        Some((scheme, _)) => return Err(invalid(&format!("unsupported scheme '{scheme}'"))),
        None => url,
    };
    let rest = rest.trim().trim_end_matches('/');
    if rest.is_empty() {
        return Err(invalid("no host"));
    }
    if rest.contains(['/', '@', '?', '#', ' ']) {
        return Err(invalid("only a host and a port are allowed"));
    }
    // The port follows the last ':' outside an IPv6 literal's brackets.
    let after_host = rest.rfind(']').map_or(0, |i| i + 1);
    let port = rest[after_host..]
        .rfind(':')
        .map(|i| &rest[after_host + i + 1..]);
    if rest.starts_with('[') != (after_host > 0) {
        return Err(invalid("unbalanced brackets"));
    }
    if after_host == 0 && rest.matches(':').count() > 1 {
        return Err(invalid("an IPv6 address must be in brackets"));
    }
    match port {
        Some(port) => match port.parse::<u16>() {
            Ok(_) => Ok(rest.to_owned()),
            Err(_) => Err(invalid(&format!(
                "port '{port}' is not a number from 0 to 65535"
            ))),
        },
        None => Ok(format!("{rest}:{DEFAULT_PORT}")),
    }
}

#[cfg(test)]
mod tests;
