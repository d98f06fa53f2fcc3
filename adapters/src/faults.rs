//! A backend that misbehaves on purpose, to prove that measurements and checks catch it.
//!
//! [`FaultyBackend`] wraps any backend and, per its [`FaultPlan`], delays every delivery
//! by a known amount, stalls publishes periodically (the coordinated-omission case), and
//! drops, duplicates or holds back (reorders) the deliveries a predicate picks. The fidelity
//! tests of the load engine and the conformance checks use it; it is not a broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::backend::{Backend, RunTopology};
use crate::capability::Capabilities;
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::{Producer, PublishOutcome, PublishRequest, Publisher};
use crate::subscription::{Batch, Delivery, Subscription, SubscriptionControl, SubscriptionSpec};

/// What to do with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Deliver it normally.
    Pass,
    /// Never deliver it.
    Drop,
    /// Deliver it twice.
    Duplicate,
    /// Deliver it after the next delivery of the subscription (a reordering).
    HoldForNext,
    /// Deliver it with one byte of the payload changed.
    Corrupt,
}

/// Picks the fault for each delivery.
pub type FaultPicker = Arc<dyn Fn(&Delivery) -> Fault + Send + Sync>;

/// How a [`FaultyBackend`] misbehaves.
#[derive(Clone, Default)]
pub struct FaultPlan {
    /// Every delivery reaches the subscriber this much later than the broker delivered it.
    pub delivery_delay: Duration,
    /// Publishes stall for `length` at the start of every `every` (since the backend was
    /// made): a publish made during a stall is sent when it ends.
    pub publish_stall: Option<(Duration, Duration)>,
    /// Drops, duplicates, reorderings.
    pub picker: Option<FaultPicker>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("delivery_delay", &self.delivery_delay)
            .field("publish_stall", &self.publish_stall)
            .field("picker", &self.picker.is_some())
            .finish()
    }
}

/// A backend wrapped in a [`FaultPlan`].
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    origin: Instant,
}

impl FaultyBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            origin: Instant::now(),
        }
    }
}

/// Waits until `deadline` precisely: tokio's timer (1 ms steps) for most of the wait,
/// then yielding until the instant passes. Test-only precision at the cost of a busy
/// last millisecond.
async fn wait_precisely(deadline: Instant) {
    let coarse = deadline.checked_sub(Duration::from_millis(2));
    if let Some(coarse) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

struct StallingPublisher {
    inner: Producer,
    stall: Option<(Duration, Duration)>,
    origin: Instant,
}

impl Publisher for StallingPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let inner = self.inner.clone();
        let stall = self.stall;
        let origin = self.origin;
        Box::pin(async move {
            if let Some((every, length)) = stall {
                let since = origin.elapsed();
                let phase =
                    Duration::from_nanos((since.as_nanos() % every.as_nanos().max(1)) as u64);
                if phase < length {
                    wait_precisely(Instant::now() + (length - phase)).await;
                }
            }
            inner.publish(request).await
        })
    }
}

/// Ends the wrapped subscription when asked to unsubscribe.
struct Control {
    stop: tokio_util::sync::CancellationToken,
}

impl SubscriptionControl for Control {
    fn ack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(std::future::ready(Err(AdapterError::unsupported(
            "the fault-injecting backend does not forward acks",
        ))))
    }

    fn nack(&self, _: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        Box::pin(std::future::ready(Err(AdapterError::unsupported(
            "the fault-injecting backend does not forward nacks",
        ))))
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.stop.cancel();
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Backend for FaultyBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn url(&self) -> &str {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn topic_name(&self, run_id: &str, name: &str) -> String {
        self.inner.topic_name(run_id, name)
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        self.inner.prepare(topology)
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.inner.teardown()
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let inner = self.inner.producer().await?;
            let kind = inner.backend();
            let capabilities = self.inner.capabilities();
            Ok(Producer::new(
                Arc::new(StallingPublisher {
                    inner,
                    stall: self.plan.publish_stall,
                    origin: self.origin,
                }),
                kind,
                capabilities,
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            let mut inner = self.inner.subscribe(spec.clone()).await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let (tx, subscription) =
                Subscription::channel(&spec, Box::new(Control { stop: stop.clone() }));
            let plan = self.plan.clone();
            tokio::spawn(async move {
                let mut held: Option<Delivery> = None;
                loop {
                    let item = tokio::select! {
                        _ = stop.cancelled() => break,
                        item = inner.next() => item,
                    };
                    let mut delivery = match item {
                        Some(Ok(d)) => d,
                        Some(Err(err)) => {
                            let _ = tx.send(Batch::Error(err)).await;
                            break;
                        }
                        None => break,
                    };
                    if !plan.delivery_delay.is_zero() {
                        wait_precisely(delivery.received_at + plan.delivery_delay).await;
                        delivery.received_at = Instant::now();
                    }
                    let fault = plan
                        .picker
                        .as_ref()
                        .map_or(Fault::Pass, |pick| pick(&delivery));
                    let mut out = Vec::with_capacity(3);
                    match fault {
                        Fault::Pass => out.push(delivery),
                        Fault::Drop => {}
                        Fault::Corrupt => {
                            let mut bytes = delivery.payload.to_vec();
                            let middle = bytes.len() / 2;
                            if let Some(b) = bytes.get_mut(middle) {
                                *b = if *b == b'#' { b'%' } else { b'#' };
                            }
                            delivery.payload = bytes.into();
                            out.push(delivery);
                        }
                        Fault::Duplicate => {
                            out.push(delivery.clone());
                            out.push(delivery);
                        }
                        Fault::HoldForNext => {
                            if let Some(mut previous) = held.replace(delivery) {
                                previous.received_at = Instant::now();
                                out.push(previous);
                            }
                            continue;
                        }
                    }
                    if let Some(mut previous) = held.take() {
                        previous.received_at = Instant::now();
                        out.push(previous);
                    }
                    for d in out {
                        if tx.send(Batch::One(d)).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(previous) = held.take() {
                    let _ = tx.send(Batch::One(previous)).await;
                }
            });
            Ok(subscription)
        })
    }
}
