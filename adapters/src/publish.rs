//! The publishing side: [`PublishRequest`], [`PublishOutcome`] and the [`Producer`] handle.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::capability::{Capabilities, Capability};
use crate::kind::BackendKind;

/// Who receives a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeliveryMode {
    /// Every subscriber of the topic (fan-out).
    #[default]
    All,
    /// Exactly one of the subscribers (competing consumers, work queue).
    ///
    /// On the reference broker this is decided by the publisher (`"delivery":"one"`).
    /// On brokers where the consumer side decides (a consumer group, a queue group, a
    /// shared queue), the subscriptions' [`group`](crate::SubscriptionSpec::group) does it
    /// and this field states the intent.
    One,
}

impl DeliveryMode {
    /// The protocol name: `all` or `one`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::All => "all",
            DeliveryMode::One => "one",
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message to publish.
///
/// ```
/// use brokerbench_adapters::PublishRequest;
/// let req = PublishRequest::new("orders", "hello").one().key("customer-7").id("m-1");
/// assert_eq!(&*req.topic, "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishRequest {
    /// The topic (subject, stream, exchange...) to publish to. An `Arc` so that a producer
    /// publishing many messages to one topic does not allocate the name each time.
    pub topic: Arc<str>,
    /// The message body. The reference protocol carries text, so it must be UTF-8 there
    /// (brokerbench's envelopes are ASCII).
    pub payload: Bytes,
    /// Fan-out or competing consumers.
    pub delivery: DeliveryMode,
    /// Message key. On a backend with [`Capability::KeyOrdering`] messages with one key go
    /// to one consumer, in order, under competing consumers (Kafka partitions by it). On
    /// the others the key travels as message metadata where the broker has a place for
    /// one (a header, a stream field) and orders nothing: a scenario that *depends* on
    /// per-key order must require the capability itself.
    pub key: Option<Arc<str>>,
    /// Message id for idempotent publishing: a second publish with the same id inside the
    /// broker's window is not delivered again (needs [`Capability::Dedup`]).
    pub id: Option<String>,
    /// Whether the broker should retain the message for subscribers that join later
    /// (the reference broker's per-topic cache). Brokers that always retain ignore it.
    pub cache: bool,
}

impl PublishRequest {
    /// A fan-out message to `topic`, retained, without key or id.
    pub fn new(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        PublishRequest {
            topic: topic.into(),
            payload: payload.into(),
            delivery: DeliveryMode::All,
            key: None,
            id: None,
            cache: true,
        }
    }

    /// Sets the delivery mode.
    #[must_use]
    pub fn delivery(mut self, delivery: DeliveryMode) -> Self {
        self.delivery = delivery;
        self
    }

    /// Competing consumers: shorthand for `.delivery(DeliveryMode::One)`.
    #[must_use]
    pub fn one(self) -> Self {
        self.delivery(DeliveryMode::One)
    }

    /// Sets the message key. An `Arc<str>` is shared, not copied, so a producer drawing
    /// from a fixed set of keys allocates nothing per message.
    #[must_use]
    pub fn key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the dedup id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets whether the broker retains the message for late subscribers.
    #[must_use]
    pub fn cache(mut self, cache: bool) -> Self {
        self.cache = cache;
        self
    }

    /// The capabilities a backend needs to honour this request.
    pub fn required_capabilities(&self) -> Capabilities {
        let mut needed = Capabilities::NONE;
        needed.insert(match self.delivery {
            DeliveryMode::All => Capability::FanOut,
            DeliveryMode::One => Capability::Competing,
        });
        if self.id.is_some() {
            needed.insert(Capability::Dedup);
        }
        needed
    }
}

/// How a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The broker confirmed the message.
    Ok,
    /// The broker confirmed the publish but recognised the id as already seen inside its
    /// dedup window: nothing new was delivered. A success for availability.
    Duplicate,
    /// The message was definitely not accepted: the broker refused it, or it could not be
    /// sent at all. The text says why.
    Failed(String),
    /// No confirmation within the publish timeout (or the connection dropped after the
    /// message was sent): the broker may or may not have accepted it. The conformance
    /// suite reports such a message as "recovered" if it shows up later.
    Unknown,
}

impl PublishOutcome {
    /// Whether the broker confirmed the publish (`Ok` or `Duplicate`).
    pub fn is_confirmed(&self) -> bool {
        matches!(self, PublishOutcome::Ok | PublishOutcome::Duplicate)
    }
}

impl fmt::Display for PublishOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishOutcome::Ok => f.write_str("ok"),
            PublishOutcome::Duplicate => f.write_str("duplicate"),
            PublishOutcome::Failed(reason) => write!(f, "failed: {reason}"),
            PublishOutcome::Unknown => f.write_str("unknown (no confirmation)"),
        }
    }
}

/// The adapter side of a [`Producer`].
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Publishes one message; see [`Producer::publish`].
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome>;

    /// Publishes `requests` in order as one batch; see [`Producer::publish_batch`].
    ///
    /// The default publishes each through [`publish`](Self::publish), polled in order.
    /// Adapters whose client can send several messages in one write or one pipeline
    /// override it.
    fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        let publishes: Vec<_> = requests.into_iter().map(|r| self.publish(r)).collect();
        Box::pin(futures::future::join_all(publishes))
    }
}

/// The adapter side of a [`Producer`] for adapters whose batch path is their only one: a
/// single publish is a batch of one. Every such type is a [`Publisher`].
pub(crate) trait BatchPublisher: Send + Sync + 'static {
    /// Publishes `requests` in order as one batch; see [`Producer::publish_batch`].
    fn publish_all(&self, requests: Vec<PublishRequest>)
    -> BoxFuture<'static, Vec<PublishOutcome>>;
}

impl<T: BatchPublisher> Publisher for T {
    /// The batch's one outcome (unknown, should the batch come back empty).
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let batch = self.publish_all(vec![request]);
        Box::pin(async move { batch.await.pop().unwrap_or(PublishOutcome::Unknown) })
    }

    fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        self.publish_all(requests)
    }
}

/// A cheap-to-clone handle that publishes messages through one broker connection
/// (or, for backends whose client multiplexes, one client).
///
/// Made by [`Backend::producer`](crate::Backend::producer). Clones share the connection;
/// the connection closes when the last clone is dropped (publishes still in flight then
/// resolve as [`PublishOutcome::Unknown`] unless their confirmation already arrived).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<dyn Publisher>,
    backend: BackendKind,
    capabilities: Capabilities,
}

impl Producer {
    pub(crate) fn new(
        inner: Arc<dyn Publisher>,
        backend: BackendKind,
        capabilities: Capabilities,
    ) -> Self {
        Producer {
            inner,
            backend,
            capabilities,
        }
    }

    /// Publishes one message. The future resolves when the broker has confirmed it
    /// ([`PublishOutcome::Ok`]), refused it ([`PublishOutcome::Failed`]), or not answered
    /// within the publish timeout ([`PublishOutcome::Unknown`]); it never panics and never
    /// returns an error of another shape.
    ///
    /// Publishes pipeline: many futures may be in flight on one producer at once, and
    /// nothing is sent until a future is first polled. A message takes its place in the
    /// connection's order at that first poll, so to keep a producer's messages in order,
    /// poll them in the order they were created (`FuturesUnordered` and `FuturesOrdered`
    /// both do for newly pushed futures).
    ///
    /// A request needing a capability the backend lacks (an id without
    /// [`Capability::Dedup`], `one` without [`Capability::Competing`]) fails at once
    /// without being sent; check [`Backend::capabilities`](crate::Backend::capabilities)
    /// before a run to fail earlier.
    pub fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let missing = self.capabilities.missing(request.required_capabilities());
        if !missing.is_empty() {
            let reason = format!("the {} backend does not support {missing}", self.backend);
            return Box::pin(std::future::ready(PublishOutcome::Failed(reason)));
        }
        self.inner.publish(request)
    }

    /// Publishes several messages at once, in order, as one batch: one write or one
    /// pipeline where the client allows it, so a producer that has many messages due
    /// together pays the per-call cost once. Resolves with one outcome per request, in
    /// the order given, once every one of them has its outcome (so each outcome is as
    /// late as the batch's last confirmation).
    ///
    /// The requests take their places in the connection's order together, at the
    /// future's first poll, exactly as if each had been [`publish`](Self::publish)ed and
    /// polled in turn. A request needing a missing capability fails without being sent,
    /// as with `publish`; the others are still sent.
    pub fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        if requests.iter().all(|r| {
            self.capabilities
                .missing(r.required_capabilities())
                .is_empty()
        }) {
            return self.inner.publish_batch(requests);
        }
        let publishes: Vec<_> = requests.into_iter().map(|r| self.publish(r)).collect();
        Box::pin(futures::future::join_all(publishes))
    }

    /// The backend this producer publishes to.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_fields_and_capabilities() {
        let req = PublishRequest::new("t", "p");
        assert_eq!(req.delivery, DeliveryMode::All);
        assert!(req.cache);
        assert_eq!(
            req.required_capabilities(),
            Capabilities::from(Capability::FanOut)
        );
        let req = req.one().key("k").id("i").cache(false);
        // A key alone asks for no ordering guarantee.
        assert_eq!(req.delivery, DeliveryMode::One);
        assert_eq!(req.key.as_deref(), Some("k"));
        assert_eq!(req.id.as_deref(), Some("i"));
        assert!(!req.cache);
        assert_eq!(
            req.required_capabilities(),
            Capabilities::of(&[Capability::Competing, Capability::Dedup])
        );
    }

    #[test]
    fn outcome_confirmation_and_display() {
        assert!(PublishOutcome::Ok.is_confirmed());
        assert!(PublishOutcome::Duplicate.is_confirmed());
        assert!(!PublishOutcome::Unknown.is_confirmed());
        assert!(!PublishOutcome::Failed("x".into()).is_confirmed());
        assert_eq!(
            PublishOutcome::Failed("Malformed json message".into()).to_string(),
            "failed: Malformed json message"
        );
    }
}
