//! A backend that misbehaves on purpose, to prove that measurements and checks catch it.
//!
//! [`FaultyBackend`] wraps any backend and, per its [`FaultPlan`], delays every delivery
//! by a known amount, stalls publishes periodically (the coordinated-omission case),
//! drops, duplicates, holds back (reorders) or corrupts the deliveries a predicate picks
//! (for every subscription, or per subscription), and breaks promises the way faulty
//! clients and brokers do: subscribing otherwise than asked, publishing otherwise than
//! asked, delivering after an unsubscribe, swallowing nacks, dropping what a slow
//! subscriber has no room for. Acks and nacks are forwarded to the broker. The fidelity
//! tests of the load engine and the conformance checks' tests use it; it is not a broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::backend::{Backend, RunTopology};
use crate::capability::Capabilities;
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::{Producer, PublishOutcome, PublishRequest, Publisher};
use crate::subscription::{
    Acknowledger, Batch, Delivery, Subscription, SubscriptionControl, SubscriptionSpec,
};

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

/// Picks the fault picker of each subscription from its number (0 for the first one this
/// backend made, in subscribe order); `None` leaves that subscription alone.
pub type PickerFor = Arc<dyn Fn(usize) -> Option<FaultPicker> + Send + Sync>;

/// Rewrites a subscription before it reaches the broker.
pub type SpecRewrite = Arc<dyn Fn(SubscriptionSpec) -> SubscriptionSpec + Send + Sync>;

/// Rewrites a publish before it reaches the broker.
pub type PublishRewrite = Arc<dyn Fn(PublishRequest) -> PublishRequest + Send + Sync>;

/// How a [`FaultyBackend`] misbehaves.
#[derive(Clone, Default)]
pub struct FaultPlan {
    /// Every delivery reaches the subscriber this much later than the broker delivered it.
    pub delivery_delay: Duration,
    /// Publishes stall for `length` at the start of every `every` (since the backend was
    /// made): a publish made during a stall is sent when it ends.
    pub publish_stall: Option<(Duration, Duration)>,
    /// Drops, duplicates, reorderings, corruptions, for every subscription.
    pub picker: Option<FaultPicker>,
    /// Like `picker`, chosen per subscription (overrides `picker` where it gives one).
    pub picker_for: Option<PickerFor>,
    /// Subscribes otherwise than asked (live-only as from-the-beginning, manual acks as
    /// automatic...), while the caller's subscription keeps the spec it asked for.
    pub subscribe_as: Option<SpecRewrite>,
    /// Publishes otherwise than asked (without the dedup id, ...).
    pub publish_as: Option<PublishRewrite>,
    /// Confirms an unsubscribe without leaving: deliveries keep coming.
    pub deliver_after_unsubscribe: bool,
    /// Answers nacks `Ok` without passing them on.
    pub swallow_nacks: bool,
    /// Hands each delivery over without waiting: one that finds the subscriber's buffer
    /// full is dropped, silently (a lossy client).
    pub drop_when_full: bool,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("delivery_delay", &self.delivery_delay)
            .field("publish_stall", &self.publish_stall)
            .field("picker", &self.picker.is_some())
            .field("picker_for", &self.picker_for.is_some())
            .field("subscribe_as", &self.subscribe_as.is_some())
            .field("publish_as", &self.publish_as.is_some())
            .field("deliver_after_unsubscribe", &self.deliver_after_unsubscribe)
            .field("swallow_nacks", &self.swallow_nacks)
            .field("drop_when_full", &self.drop_when_full)
            .finish()
    }
}

/// A backend wrapped in a [`FaultPlan`].
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    origin: Instant,
    /// Subscriptions made so far (numbers them for [`FaultPlan::picker_for`]).
    subscriptions: std::sync::atomic::AtomicUsize,
}

impl FaultyBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            origin: Instant::now(),
            subscriptions: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Waits until `deadline` precisely: tokio's timer (1 ms steps) for most of the wait,
/// then the last 2 ms asleep on a blocking-pool thread (the OS sleeps to within tens of
/// µs). Spinning on a runtime worker instead would take that worker from the run's
/// producers for the whole time and, on a loaded machine, delay their sends.
async fn wait_precisely(deadline: Instant) {
    let coarse = deadline.checked_sub(Duration::from_millis(2));
    if let Some(coarse) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}

struct StallingPublisher {
    inner: Producer,
    stall: Option<(Duration, Duration)>,
    rewrite: Option<PublishRewrite>,
    origin: Instant,
}

impl Publisher for StallingPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let inner = self.inner.clone();
        let stall = self.stall;
        let origin = self.origin;
        let request = match &self.rewrite {
            Some(rewrite) => rewrite(request),
            None => request,
        };
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

/// Forwards acks and nacks to the wrapped subscription; ends it when asked to
/// unsubscribe (unless the plan says to keep delivering).
struct Control {
    stop: tokio_util::sync::CancellationToken,
    inner: Acknowledger,
    swallow_nacks: bool,
    deliver_after_unsubscribe: bool,
}

impl SubscriptionControl for Control {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.inner.ack(delivery)
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        if self.swallow_nacks {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.inner.nack(delivery)
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        if !self.deliver_after_unsubscribe {
            self.stop.cancel();
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn rejected_acks(&self) -> u64 {
        self.inner.rejected_acks()
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

    fn dead_letter_topic(&self, topic: &str) -> Option<String> {
        self.inner.dead_letter_topic(topic)
    }

    fn server_version(&self) -> Option<String> {
        self.inner.server_version()
    }

    fn broker_stats(&self) -> BoxFuture<'_, Result<Option<serde_json::Value>, AdapterError>> {
        self.inner.broker_stats()
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
                    rewrite: self.plan.publish_as.clone(),
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
            let number = self
                .subscriptions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let asked = match &self.plan.subscribe_as {
                Some(rewrite) => rewrite(spec.clone()),
                None => spec.clone(),
            };
            let mut inner = self.inner.subscribe(asked).await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let control = Control {
                stop: stop.clone(),
                inner: inner.acknowledger(),
                swallow_nacks: self.plan.swallow_nacks,
                deliver_after_unsubscribe: self.plan.deliver_after_unsubscribe,
            };
            let (tx, subscription) = Subscription::channel(&spec, Box::new(control));
            let mut plan = self.plan.clone();
            if let Some(picker) = plan.picker_for.as_ref().and_then(|pick| pick(number)) {
                plan.picker = Some(picker);
            }
            tokio::spawn(async move {
                let mut held: Option<Delivery> = None;
                loop {
                    let item = tokio::select! {
                        _ = stop.cancelled() => break,
                        // The caller dropped its subscription: drop the broker's too.
                        () = tx.closed() => break,
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
                        if plan.drop_when_full {
                            match tx.try_send(Batch::One(d)) {
                                Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        } else if tx.send(Batch::One(d)).await.is_err() {
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
