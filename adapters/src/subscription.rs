//! The consuming side: [`SubscriptionSpec`], [`Delivery`] and the [`Subscription`] stream.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::capability::{Capabilities, Capability};
use crate::error::AdapterError;

/// Capacity, in batches, of the channel between a connection's reader and its
/// [`Subscription`]. A batch holds up to a few hundred deliveries parsed from one read
/// (one delivery for the null backend). When it is full the reader waits — it stops
/// reading the socket, the broker sees a slow consumer — so nothing is dropped here and
/// memory stays bounded.
pub(crate) const SUBSCRIPTION_CHANNEL_CAPACITY: usize = 256;

/// Where a new subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartPosition {
    /// Only messages published after the subscription is ready (live only).
    #[default]
    Latest,
    /// Every message the broker still retains, then live ones.
    Beginning,
    /// Retained messages whose sequence is greater than this one, then live ones.
    AfterSequence(i64),
}

/// How deliveries are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckMode {
    /// The broker considers a message done once it is pushed (at most once).
    #[default]
    Auto,
    /// Each delivery stays pending until [`Subscription::ack`]; [`Subscription::nack`]
    /// asks for it again; unacknowledged ones are redelivered (at least once).
    Manual,
}

/// What to subscribe to and how.
///
/// ```
/// use brokerbench_adapters::{AckMode, StartPosition, SubscriptionSpec};
/// let spec = SubscriptionSpec::new("orders")
///     .group("workers")
///     .start(StartPosition::AfterSequence(41))
///     .ack(AckMode::Manual);
/// assert_eq!(spec.group.as_deref(), Some("workers"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionSpec {
    /// The topic to read.
    pub topic: Arc<str>,
    /// Consumer group: subscriptions sharing a group compete for messages. On the
    /// reference broker the publisher's [`DeliveryMode::One`](crate::DeliveryMode::One)
    /// already picks one subscriber per message, so the group is informational there.
    pub group: Option<String>,
    /// Where to start reading.
    pub start: StartPosition,
    /// Automatic or manual acknowledgement.
    pub ack: AckMode,
}

impl SubscriptionSpec {
    /// A live-only, auto-ack, ungrouped subscription to `topic`.
    pub fn new(topic: impl Into<Arc<str>>) -> Self {
        SubscriptionSpec {
            topic: topic.into(),
            group: None,
            start: StartPosition::Latest,
            ack: AckMode::Auto,
        }
    }

    /// Sets the consumer group.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the start position.
    #[must_use]
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Sets the ack mode.
    #[must_use]
    pub fn ack(mut self, ack: AckMode) -> Self {
        self.ack = ack;
        self
    }

    /// The capabilities a backend needs to honour this subscription.
    pub fn required_capabilities(&self) -> Capabilities {
        let mut needed = Capabilities::NONE;
        if self.group.is_some() {
            needed.insert(Capability::Competing);
        }
        needed.insert(match self.start {
            StartPosition::Latest => Capability::LiveOnly,
            StartPosition::Beginning | StartPosition::AfterSequence(_) => Capability::Replay,
        });
        if self.ack == AckMode::Manual {
            needed.insert(Capability::AckRedelivery);
        }
        needed
    }
}

/// What an adapter needs to acknowledge one delivery. Opaque: each adapter keeps what
/// its broker wants (an index, a delivery tag, a stream id, a reply subject...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckToken(pub(crate) AckTokenRepr);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum AckTokenRepr {
    /// Nothing to acknowledge (auto-ack, or a backend without acks).
    #[default]
    None,
    /// The broker's message index within the topic (reference broker).
    Index(i64),
    /// An AMQP delivery tag on the subscription's channel (RabbitMQ).
    #[cfg_attr(not(feature = "rabbitmq"), allow(dead_code))]
    Tag(u64),
    /// A stream entry id such as `1700000000000-0` (Redis Streams).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    StreamId(Arc<str>),
    /// The subject that acknowledges the message when published to (JetStream's reply
    /// subject), as the client's own type: reference-counted, so neither taking it from the
    /// message nor publishing the ack copies it.
    #[cfg(feature = "jetstream")]
    Reply(async_nats::Subject),
    /// A partition and offset (Kafka).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Offset {
        /// The partition.
        partition: i32,
        /// The message's offset in it.
        offset: i64,
    },
}

/// One message as a subscriber received it.
#[derive(Clone)]
pub struct Delivery {
    /// The topic it came from. Shared with the subscription, so cloning is cheap.
    pub topic: Arc<str>,
    /// The message body.
    pub payload: Bytes,
    /// The publisher's ordering key, when the broker carries one.
    pub key: Option<String>,
    /// Whether the broker says this is not the first delivery of the message.
    pub redelivered: bool,
    /// The delivery attempt (1 = first), where the broker exposes it.
    pub attempt: Option<u32>,
    /// The broker's sequence for the message within the topic (the reference broker's
    /// index, a stream sequence, an offset), where it has one.
    pub sequence: Option<i64>,
    /// When the client parsed the message: the end of the end-to-end latency measurement.
    pub received_at: Instant,
    pub(crate) ack_token: AckToken,
}

impl Delivery {
    /// A delivery with no key, no sequence, first attempt, received now. For tests and
    /// for code that builds deliveries from other sources.
    pub fn new(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Delivery {
            topic: topic.into(),
            payload: payload.into(),
            key: None,
            redelivered: false,
            attempt: None,
            sequence: None,
            received_at: Instant::now(),
            ack_token: AckToken::default(),
        }
    }

    /// What the adapter uses to acknowledge this delivery.
    pub fn ack_token(&self) -> &AckToken {
        &self.ack_token
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("payload", &self.payload)
            .field("key", &self.key)
            .field("redelivered", &self.redelivered)
            .field("attempt", &self.attempt)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// What travels from an adapter's reader to a [`Subscription`].
#[derive(Debug)]
pub(crate) enum Batch {
    One(Delivery),
    Many(Vec<Delivery>),
    /// The subscription cannot continue; the stream yields this error, then ends.
    Error(AdapterError),
}

/// The adapter side of a [`Subscription`].
pub(crate) trait SubscriptionControl: Send + Sync + 'static {
    /// Acknowledges a delivery; resolves once the ack is handed to the connection.
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>>;
    /// Asks for a delivery to be redelivered; resolves once handed to the connection.
    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>>;
    /// Leaves the topic; resolves when the broker confirmed. Afterwards the sender side of
    /// the delivery channel must be dropped, so the stream ends.
    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>>;
    /// Acks and nacks the broker refused so far.
    fn rejected_acks(&self) -> u64 {
        0
    }
}

/// A ready subscription: a [`Stream`] of deliveries.
///
/// The broker has confirmed the subscription by the time you hold one. The stream yields
/// `Ok(Delivery)` for each message, and `Err` once if the subscription cannot continue
/// (the broker closed the connection, disconnected a slow consumer, ...), then ends. It
/// also ends, without an error, after [`unsubscribe`](Self::unsubscribe) once the
/// deliveries that arrived before the broker's confirmation have been read.
///
/// Deliveries are buffered in a bounded channel; when the consumer does not keep up the
/// adapter stops reading (backpressure), it never drops. Dropping the subscription closes
/// its connection, which the broker takes as leaving the topic.
pub struct Subscription {
    topic: Arc<str>,
    group: Option<String>,
    ack_mode: AckMode,
    rx: mpsc::Receiver<Batch>,
    current: std::vec::IntoIter<Delivery>,
    /// Batches read off the channel while waiting for an unsubscribe confirmation; bounded
    /// by what the broker had already sent before it processed the unsubscribe.
    parked: VecDeque<Batch>,
    control: Arc<dyn SubscriptionControl>,
}

impl Subscription {
    /// A subscription reading `rx`, and the sender for the adapter's reader.
    pub(crate) fn channel(
        spec: &SubscriptionSpec,
        control: Box<dyn SubscriptionControl>,
    ) -> (mpsc::Sender<Batch>, Subscription) {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CHANNEL_CAPACITY);
        (tx, Subscription::from_parts(spec, rx, control))
    }

    pub(crate) fn from_parts(
        spec: &SubscriptionSpec,
        rx: mpsc::Receiver<Batch>,
        control: Box<dyn SubscriptionControl>,
    ) -> Subscription {
        Subscription {
            topic: spec.topic.clone(),
            group: spec.group.clone(),
            ack_mode: spec.ack,
            rx,
            current: Vec::new().into_iter(),
            parked: VecDeque::new(),
            control: Arc::from(control),
        }
    }

    /// The topic this subscription reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group, if any.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The ack mode it was created with.
    pub fn ack_mode(&self) -> AckMode {
        self.ack_mode
    }

    /// Acknowledges `delivery`. Resolves when the ack has been handed to the connection,
    /// in order with everything else it sends — not when the broker confirmed it, so a
    /// consumer that awaits each ack never stalls its own stream. Acks the broker refuses
    /// (an index it no longer holds as pending, typically because the ack timeout already
    /// redelivered it) are counted in [`rejected_acks`](Self::rejected_acks).
    ///
    /// With [`AckMode::Auto`] it does nothing and returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the connection is gone,
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when its request queue stayed full
    /// for the request timeout.
    pub fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.acknowledger().ack(delivery)
    }

    /// Rejects `delivery` and asks the broker to deliver it again now (possibly to another
    /// consumer), marked as redelivered. Resolves like [`ack`](Self::ack).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) with [`AckMode::Auto`];
    /// otherwise as for [`ack`](Self::ack).
    pub fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.acknowledger().nack(delivery)
    }

    /// A handle that acks and nacks this subscription's deliveries from anywhere (another
    /// task, while this one reads the stream). It stays usable as long as the
    /// subscription's connection is.
    pub fn acknowledger(&self) -> Acknowledger {
        Acknowledger {
            control: self.control.clone(),
            ack_mode: self.ack_mode,
            topic: self.topic.clone(),
        }
    }

    /// Acks and nacks the broker refused so far on this subscription.
    pub fn rejected_acks(&self) -> u64 {
        self.control.rejected_acks()
    }

    /// Leaves the topic and returns when the broker confirmed it. Deliveries that arrived
    /// before the confirmation stay readable from the stream, which then ends; anything
    /// after the confirmation is not this subscription's any more.
    ///
    /// While waiting it keeps draining the delivery channel into the subscription, so the
    /// adapter's reader can reach the confirmation even if the channel was full.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if the broker did not confirm
    /// within the request timeout, [`ErrorKind::Closed`](crate::ErrorKind::Closed) if the
    /// connection is gone, [`ErrorKind::Rejected`](crate::ErrorKind::Rejected) if the
    /// broker refused.
    pub async fn unsubscribe(&mut self) -> Result<(), AdapterError> {
        let mut confirm = self.control.unsubscribe();
        loop {
            tokio::select! {
                result = &mut confirm => return result,
                batch = self.rx.recv() => match batch {
                    Some(batch) => self.parked.push_back(batch),
                    None => return confirm.await,
                },
            }
        }
    }

    fn take_batch(&mut self, batch: Batch) -> Option<Result<Delivery, AdapterError>> {
        match batch {
            Batch::One(delivery) => Some(Ok(delivery)),
            Batch::Many(deliveries) => {
                self.current = deliveries.into_iter();
                self.current.next().map(Ok)
            }
            Batch::Error(error) => Some(Err(error)),
        }
    }
}

/// Acks and nacks the deliveries of one [`Subscription`], detached from its stream; see
/// [`Subscription::acknowledger`].
#[derive(Clone)]
pub struct Acknowledger {
    control: Arc<dyn SubscriptionControl>,
    ack_mode: AckMode,
    topic: Arc<str>,
}

impl Acknowledger {
    /// As [`Subscription::ack`].
    pub fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        match self.ack_mode {
            AckMode::Auto => Box::pin(std::future::ready(Ok(()))),
            AckMode::Manual => self.control.ack(delivery),
        }
    }

    /// As [`Subscription::nack`].
    pub fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        match self.ack_mode {
            AckMode::Auto => Box::pin(std::future::ready(Err(AdapterError::unsupported(format!(
                "nack on topic {}: the subscription uses automatic acks; subscribe with AckMode::Manual",
                self.topic
            ))))),
            AckMode::Manual => self.control.nack(delivery),
        }
    }

    /// As [`Subscription::rejected_acks`].
    pub fn rejected_acks(&self) -> u64 {
        self.control.rejected_acks()
    }
}

impl fmt::Debug for Acknowledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acknowledger")
            .field("topic", &self.topic)
            .field("ack_mode", &self.ack_mode)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery, AdapterError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(delivery) = this.current.next() {
                return Poll::Ready(Some(Ok(delivery)));
            }
            let batch = match this.parked.pop_front() {
                Some(batch) => batch,
                None => match this.rx.poll_recv(cx) {
                    Poll::Ready(Some(batch)) => batch,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
            };
            // An empty `Many` batch yields nothing: go round again.
            if let Some(item) = this.take_batch(batch) {
                return Poll::Ready(Some(item));
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("ack_mode", &self.ack_mode)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use futures::StreamExt;

    struct NoControl;

    impl SubscriptionControl for NoControl {
        fn ack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
            Box::pin(async { Err(AdapterError::closed("ack reached the control")) })
        }
        fn nack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
            Box::pin(async { Err(AdapterError::closed("nack reached the control")) })
        }
        fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn spec_capabilities() {
        let spec = SubscriptionSpec::new("t");
        assert_eq!(
            spec.required_capabilities(),
            Capabilities::from(Capability::LiveOnly)
        );
        let spec = spec
            .group("g")
            .start(StartPosition::Beginning)
            .ack(AckMode::Manual);
        assert_eq!(
            spec.required_capabilities(),
            Capabilities::of(&[
                Capability::Competing,
                Capability::Replay,
                Capability::AckRedelivery
            ])
        );
    }

    #[tokio::test]
    async fn stream_flattens_batches_then_reports_error_then_ends() {
        let spec = SubscriptionSpec::new("t");
        let (tx, mut sub) = Subscription::channel(&spec, Box::new(NoControl));
        tx.send(Batch::One(Delivery::new("t", "a"))).await.unwrap();
        tx.send(Batch::Many(vec![])).await.unwrap();
        tx.send(Batch::Many(vec![
            Delivery::new("t", "b"),
            Delivery::new("t", "c"),
        ]))
        .await
        .unwrap();
        tx.send(Batch::Error(AdapterError::closed("gone")))
            .await
            .unwrap();
        drop(tx);
        let mut payloads = Vec::new();
        let mut errors = Vec::new();
        while let Some(item) = sub.next().await {
            match item {
                Ok(d) => payloads.push(d.payload),
                Err(e) => errors.push(e),
            }
        }
        assert_eq!(payloads, ["a", "b", "c"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].kind(), ErrorKind::Closed);
    }

    #[tokio::test]
    async fn auto_ack_is_a_no_op_and_nack_needs_manual_mode() {
        let spec = SubscriptionSpec::new("t");
        let (_tx, sub) = Subscription::channel(&spec, Box::new(NoControl));
        let d = Delivery::new("t", "a");
        assert!(sub.ack(&d).await.is_ok());
        let err = sub.nack(&d).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("AckMode::Manual"), "{err}");

        let spec = SubscriptionSpec::new("t").ack(AckMode::Manual);
        let (_tx, sub) = Subscription::channel(&spec, Box::new(NoControl));
        assert_eq!(
            sub.ack(&d).await.unwrap_err().message(),
            "ack reached the control"
        );
    }

    #[tokio::test]
    async fn unsubscribe_keeps_earlier_deliveries_readable() {
        let spec = SubscriptionSpec::new("t");
        let (tx, mut sub) = Subscription::channel(&spec, Box::new(NoControl));
        tx.send(Batch::One(Delivery::new("t", "before")))
            .await
            .unwrap();
        drop(tx);
        sub.unsubscribe().await.unwrap();
        let rest: Vec<_> = sub.map(|d| d.unwrap().payload).collect().await;
        assert_eq!(rest, ["before"]);
    }
}
