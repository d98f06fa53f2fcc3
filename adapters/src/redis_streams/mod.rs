//! PLACEHOLDER: the Redis Streams adapter is being written; replace this whole file.

use futures::future::BoxFuture;

use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::Capabilities;
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

/// A connected Redis Streams broker.
#[derive(Debug)]
pub struct RedisBackend {
    url: String,
}

impl RedisBackend {
    /// Connects to `url`.
    ///
    /// # Errors
    ///
    /// Always, for now.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        let _ = (
            options,
            RedisBackend {
                url: url.to_owned(),
            },
        );
        Err(AdapterError::unsupported(
            "the redis adapter is being written",
        ))
    }
}

impl Backend for RedisBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }
    fn url(&self) -> &str {
        &self.url
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }
    fn prepare<'a>(&'a self, _: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(async { Ok(()) })
    }
    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async { Ok(()) })
    }
    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async { Err(AdapterError::unsupported("not yet")) })
    }
    fn subscribe(&self, _: SubscriptionSpec) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async { Err(AdapterError::unsupported("not yet")) })
    }
}
