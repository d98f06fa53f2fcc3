//! Backends: one [`Backend`] abstraction over the reference broker, NATS, JetStream,
//! RabbitMQ, Redis Streams and Kafka, so one scenario runs unchanged against each.
//!
//! A backend is chosen at run time ([`connect`] returns a `Box<dyn Backend>`). It makes
//! [`Producer`]s, whose [`publish`](Producer::publish) resolves to a [`PublishOutcome`]
//! (ok, failed, unknown) once the broker confirmed or the timeout passed, and ready
//! [`Subscription`]s, which are `Stream`s of [`Delivery`]s. [`Backend::capabilities`]
//! says what the broker can do, so a scenario asking for more fails before the run with a
//! message naming what is missing.
//!
//! Each real broker's adapter is a module behind a cargo feature of the same name, all on
//! by default: `nats`, `jetstream`, `rabbitmq`, `redis`, `kafka`. A kind whose feature is
//! off returns an [`ErrorKind::Unsupported`] error from [`connect`]. The reference broker
//! and the in-process [`BackendKind::Null`] are always built.
//!
//! ```no_run
//! # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
//! use brokerbench_adapters::{connect, BackendKind, ConnectOptions, PublishRequest, SubscriptionSpec};
//! use futures::StreamExt;
//!
//! let kind = BackendKind::Reference;
//! let backend = connect(kind, &kind.resolve_url(None), ConnectOptions::new()).await?;
//! let topic = backend.topic_name("run-1", "chat");
//! let mut sub = backend.subscribe(SubscriptionSpec::new(topic.as_str())).await?;
//! let producer = backend.producer().await?;
//! assert!(producer.publish(PublishRequest::new(topic.as_str(), "hi")).await.is_confirmed());
//! let delivery = sub.next().await.expect("stream open")?;
//! assert_eq!(delivery.payload, "hi");
//! # Ok(()) }
//! ```

mod backend;
mod capability;
pub mod containers;
pub mod endpoint;
mod error;
pub mod faults;
#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(feature = "kafka")]
pub mod kafka;
mod kind;
#[cfg(feature = "nats")]
pub mod nats;
// The connection code NATS core and JetStream share (documented inside, where the
// links to its private settings resolve).
#[cfg(any(feature = "nats", feature = "jetstream"))]
mod nats_client;
mod net;
mod null;
mod publish;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis_streams;
pub mod reference;
mod subscription;

pub use backend::{Backend, ConnectOptions, RunTopology, TopicSpec, connect, topic_name};
pub use capability::{Capabilities, Capability};
pub use error::{AdapterError, ErrorKind};
pub use kind::BackendKind;
pub use null::NullBackend;
pub use publish::{DeliveryMode, Producer, PublishOutcome, PublishRequest};
pub use reference::ReferenceBackend;
pub use subscription::{
    AckMode, AckToken, Acknowledger, Delivery, StartPosition, Subscription, SubscriptionSpec,
};
