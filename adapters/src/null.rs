//! The null backend: in-process, no I/O, for measuring the load engine itself.
//!
//! A publish is confirmed at once and handed to the current subscribers of its topic
//! (every one for `all`, one for `one`: round robin, or by key hash when a key is
//! given), through the same [`Subscription`] stream type as a real broker. Nothing is
//! retained, so there is no replay, and there are no acks.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::sync::{Mutex, mpsc};

use crate::backend::{Backend, RunTopology};
use crate::capability::{Capabilities, Capability};
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::{DeliveryMode, Producer, PublishOutcome, PublishRequest, Publisher};
use crate::subscription::{Batch, Delivery, Subscription, SubscriptionControl, SubscriptionSpec};

/// The in-process backend. Cheap to create; each instance is its own little broker.
#[derive(Clone, Default)]
pub struct NullBackend {
    state: Arc<NullState>,
}

#[derive(Default)]
struct NullState {
    topics: RwLock<HashMap<Arc<str>, Arc<NullTopic>>>,
    next_subscriber: AtomicU64,
}

struct NullTopic {
    name: Arc<str>,
    /// The topic's subscribers and counters. An async, FIFO-fair lock, held while a
    /// message is handed to every subscriber channel — including waiting for room in a
    /// full one. That is what keeps every subscriber's order equal to the publish order
    /// under backpressure; subscribers never take it, so the wait always ends when they
    /// read (or drop their subscription).
    inner: Mutex<TopicInner>,
}

#[derive(Default)]
struct TopicInner {
    subscribers: Vec<NullSubscriber>,
    next_index: i64,
    next_pick: usize,
}

impl TopicInner {
    /// The subscriber a `one` message goes to: by key hash, else round robin. There must
    /// be at least one subscriber.
    fn pick(&mut self, key: Option<&str>) -> usize {
        let n = self.subscribers.len();
        match key {
            Some(key) => {
                let mut hasher = std::hash::DefaultHasher::new();
                key.hash(&mut hasher);
                (hasher.finish() % n as u64) as usize
            }
            None => {
                self.next_pick = self.next_pick.wrapping_add(1);
                self.next_pick % n
            }
        }
    }
}

struct NullSubscriber {
    id: u64,
    tx: mpsc::Sender<Batch>,
}

impl NullBackend {
    /// A new, empty null broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the null backend can do.
    pub fn capabilities() -> Capabilities {
        Capabilities::of(&[
            Capability::FanOut,
            Capability::Competing,
            Capability::KeyOrdering,
            Capability::LiveOnly,
        ])
    }

    fn topic(&self, name: &Arc<str>) -> Arc<NullTopic> {
        if let Some(topic) = self.state.topics.read().get(name) {
            return topic.clone();
        }
        self.state
            .topics
            .write()
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(NullTopic {
                    name: name.clone(),
                    inner: Mutex::new(TopicInner::default()),
                })
            })
            .clone()
    }
}

impl NullState {
    async fn publish(&self, request: PublishRequest) -> PublishOutcome {
        self.publish_run(vec![request]).await;
        PublishOutcome::Ok
    }

    /// Publishes a batch: each run of requests to one topic takes the topic's lock once
    /// and reaches each subscriber as one [`Batch::Many`].
    async fn publish_batch(&self, requests: Vec<PublishRequest>) -> Vec<PublishOutcome> {
        let outcomes = vec![PublishOutcome::Ok; requests.len()];
        let mut requests = requests.into_iter().peekable();
        while let Some(first) = requests.next() {
            let mut run = vec![first];
            while let Some(next) = requests.next_if(|r| r.topic == run[0].topic) {
                run.push(next);
            }
            self.publish_run(run).await;
        }
        outcomes
    }

    /// Publishes requests that all go to one topic. The topic's lock is held while the
    /// messages are handed to every subscriber channel, including waiting for room in a
    /// full one, so every subscriber sees the publish order.
    async fn publish_run(&self, run: Vec<PublishRequest>) {
        let Some(topic) = self.topics.read().get(&run[0].topic).cloned() else {
            // Nobody ever subscribed: like a broker with no subscribers and no retention.
            return;
        };
        let mut inner = topic.inner.lock().await;
        inner.subscribers.retain(|s| !s.tx.is_closed());
        let first_index = inner.next_index;
        inner.next_index += run.len() as i64;
        let n = inner.subscribers.len();
        if n == 0 {
            return;
        }
        let received_at = Instant::now();
        let mut batches: Vec<Vec<Delivery>> = vec![Vec::with_capacity(run.len()); n];
        for (i, request) in run.into_iter().enumerate() {
            let delivery = Delivery {
                topic: topic.name.clone(),
                payload: request.payload,
                key: request.key.as_deref().map(str::to_owned),
                redelivered: false,
                attempt: None,
                sequence: Some(first_index + i as i64),
                received_at,
                ack_token: Default::default(),
            };
            match request.delivery {
                DeliveryMode::All => {
                    for batch in &mut batches {
                        batch.push(delivery.clone());
                    }
                }
                DeliveryMode::One => {
                    let pick = inner.pick(delivery.key.as_deref());
                    batches[pick].push(delivery);
                }
            }
        }
        for (s, batch) in inner.subscribers.iter().zip(batches) {
            if !batch.is_empty() {
                // A subscriber that went away meanwhile is skipped, not an error.
                let _ = s.tx.send(Batch::Many(batch)).await;
            }
        }
    }
}

struct NullPublisher {
    state: Arc<NullState>,
}

impl Publisher for NullPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let state = self.state.clone();
        Box::pin(async move { state.publish(request).await })
    }

    fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        let state = self.state.clone();
        Box::pin(async move { state.publish_batch(requests).await })
    }
}

struct NullSubscriptionControl {
    topic: Arc<NullTopic>,
    id: u64,
}

impl NullSubscriptionControl {
    async fn leave(topic: Arc<NullTopic>, id: u64) {
        topic.inner.lock().await.subscribers.retain(|s| s.id != id);
    }
}

impl SubscriptionControl for NullSubscriptionControl {
    fn ack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(std::future::ready(Err(AdapterError::unsupported(
            "the null backend has no acks",
        ))))
    }

    fn nack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(std::future::ready(Err(AdapterError::unsupported(
            "the null backend has no acks",
        ))))
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        let topic = self.topic.clone();
        let id = self.id;
        Box::pin(async move {
            Self::leave(topic, id).await;
            Ok(())
        })
    }
}

impl Backend for NullBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Null
    }

    fn url(&self) -> &str {
        BackendKind::Null.default_url()
    }

    fn capabilities(&self) -> Capabilities {
        NullBackend::capabilities()
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        let needed = topology.topics.iter().fold(Capabilities::NONE, |acc, t| {
            acc.union(t.required_capabilities())
        });
        let result = NullBackend::capabilities().require(
            BackendKind::Null,
            needed,
            &format!("the topology of run {}", topology.run_id),
        );
        Box::pin(std::future::ready(result))
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        let producer = Producer::new(
            Arc::new(NullPublisher {
                state: self.state.clone(),
            }),
            BackendKind::Null,
            NullBackend::capabilities(),
        );
        Box::pin(std::future::ready(Ok(producer)))
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            NullBackend::capabilities().require(
                BackendKind::Null,
                spec.required_capabilities(),
                &format!("the subscription to {}", spec.topic),
            )?;
            let topic = self.topic(&spec.topic);
            let id = self.state.next_subscriber.fetch_add(1, Ordering::Relaxed);
            let control = NullSubscriptionControl {
                topic: topic.clone(),
                id,
            };
            let (tx, subscription) = Subscription::channel(&spec, Box::new(control));
            topic
                .inner
                .lock()
                .await
                .subscribers
                .push(NullSubscriber { id, tx });
            Ok(subscription)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AckMode, ErrorKind, StartPosition};
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    use std::time::Duration;

    async fn next_payload(sub: &mut Subscription) -> Option<String> {
        let item = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
        match item {
            Ok(Some(Ok(d))) => Some(String::from_utf8(d.payload.to_vec()).unwrap()),
            Ok(Some(Err(e))) => panic!("error item {e}"),
            Ok(None) | Err(_) => None,
        }
    }

    #[tokio::test]
    async fn fan_out_reaches_every_subscriber_in_order() {
        let backend = NullBackend::new();
        let mut subs = Vec::new();
        for _ in 0..3 {
            subs.push(backend.subscribe(SubscriptionSpec::new("t")).await.unwrap());
        }
        let producer = backend.producer().await.unwrap();
        for i in 0..10 {
            let outcome = producer
                .publish(PublishRequest::new("t", format!("m{i}")))
                .await;
            assert_eq!(outcome, PublishOutcome::Ok);
        }
        for sub in &mut subs {
            for i in 0..10 {
                assert_eq!(next_payload(sub).await.as_deref(), Some(&*format!("m{i}")));
            }
            assert_eq!(next_payload(sub).await, None);
        }
    }

    #[tokio::test]
    async fn one_reaches_exactly_one_subscriber_round_robin() {
        let backend = NullBackend::new();
        let mut subs = Vec::new();
        for _ in 0..3 {
            subs.push(backend.subscribe(SubscriptionSpec::new("t")).await.unwrap());
        }
        let producer = backend.producer().await.unwrap();
        for i in 0..30 {
            producer
                .publish(PublishRequest::new("t", format!("m{i}")).one())
                .await;
        }
        let mut seen = Vec::new();
        for sub in &mut subs {
            let mut count = 0;
            while let Some(p) = next_payload(sub).await {
                seen.push(p);
                count += 1;
            }
            assert_eq!(count, 10, "round robin spreads evenly");
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 30, "each message exactly once");
    }

    #[tokio::test]
    async fn same_key_goes_to_same_subscriber() {
        let backend = NullBackend::new();
        let mut subs = Vec::new();
        for _ in 0..4 {
            subs.push(backend.subscribe(SubscriptionSpec::new("t")).await.unwrap());
        }
        let producer = backend.producer().await.unwrap();
        for i in 0..40 {
            let key = format!("k{}", i % 5);
            producer
                .publish(
                    PublishRequest::new("t", format!("{key}:{i}"))
                        .one()
                        .key(key),
                )
                .await;
        }
        let mut owner: HashMap<String, usize> = HashMap::new();
        let mut total = 0;
        for (n, sub) in subs.iter_mut().enumerate() {
            while let Some(p) = next_payload(sub).await {
                let key = p.split(':').next().unwrap().to_owned();
                assert_eq!(
                    *owner.entry(key).or_insert(n),
                    n,
                    "key split across subscribers"
                );
                total += 1;
            }
        }
        assert_eq!(total, 40);
        assert_eq!(owner.len(), 5);
    }

    #[tokio::test]
    async fn unsubscribe_and_drop_stop_deliveries() {
        let backend = NullBackend::new();
        let mut a = backend.subscribe(SubscriptionSpec::new("t")).await.unwrap();
        let b = backend.subscribe(SubscriptionSpec::new("t")).await.unwrap();
        let producer = backend.producer().await.unwrap();
        producer.publish(PublishRequest::new("t", "before")).await;
        a.unsubscribe().await.unwrap();
        drop(b);
        assert_eq!(
            producer.publish(PublishRequest::new("t", "after")).await,
            PublishOutcome::Ok
        );
        assert_eq!(next_payload(&mut a).await.as_deref(), Some("before"));
        assert!(a.next().await.is_none(), "stream ends after unsubscribe");
    }

    #[tokio::test]
    async fn missing_capabilities_fail_fast() {
        let backend = NullBackend::new();
        let err = backend
            .subscribe(SubscriptionSpec::new("t").start(StartPosition::Beginning))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(
            err.to_string(),
            "the null backend does not support replay (needed by the subscription to t)"
        );
        let err = backend
            .subscribe(SubscriptionSpec::new("t").ack(AckMode::Manual))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ack and redelivery"), "{err}");
        let producer = backend.producer().await.unwrap();
        assert_eq!(
            producer
                .publish(PublishRequest::new("t", "x").id("1"))
                .await,
            PublishOutcome::Failed("the null backend does not support dedup".into())
        );
        let topology = RunTopology::new("r").topic(crate::TopicSpec::new("t").dead_letter(true));
        assert!(backend.prepare(&topology).await.is_err());
    }

    #[tokio::test]
    async fn backpressure_keeps_order_and_loses_nothing() {
        let backend = NullBackend::new();
        let mut sub = backend.subscribe(SubscriptionSpec::new("t")).await.unwrap();
        let producer = backend.producer().await.unwrap();
        const N: usize = 5 * crate::subscription::SUBSCRIPTION_CHANNEL_CAPACITY;
        let publisher = tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            for i in 0..N {
                inflight.push(producer.publish(PublishRequest::new("t", i.to_string())));
                if inflight.len() >= 64 {
                    assert_eq!(inflight.next().await, Some(PublishOutcome::Ok));
                }
            }
            while let Some(outcome) = inflight.next().await {
                assert_eq!(outcome, PublishOutcome::Ok);
            }
        });
        for i in 0..N {
            let d = sub.next().await.unwrap().unwrap();
            assert_eq!(d.payload, i.to_string());
            assert_eq!(d.sequence, Some(i as i64));
        }
        publisher.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throughput_smoke() {
        const N: u64 = 200_000;
        let backend = NullBackend::new();
        let mut sub = backend.subscribe(SubscriptionSpec::new("t")).await.unwrap();
        let producer = backend.producer().await.unwrap();
        let consumer = tokio::spawn(async move {
            let mut count = 0u64;
            while count < N {
                sub.next().await.unwrap().unwrap();
                count += 1;
            }
            count
        });
        let payload = bytes::Bytes::from_static(&[b'x'; 100]);
        let topic: Arc<str> = Arc::from("t");
        let mut inflight = FuturesUnordered::new();
        for _ in 0..N {
            inflight.push(producer.publish(PublishRequest::new(topic.clone(), payload.clone())));
            if inflight.len() >= 64 {
                inflight.next().await;
            }
        }
        while inflight.next().await.is_some() {}
        assert_eq!(consumer.await.unwrap(), N);
    }
}
