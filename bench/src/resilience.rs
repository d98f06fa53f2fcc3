//! Keeping a run going when the broker or the network fails under it: a producer whose
//! publishes keep failing is replaced by a fresh one (the open-loop schedule goes on
//! meanwhile, its failures counted), a subscription that ends is made again, and a
//! publish that never answers is given up as unknown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AdapterError, Backend, Producer, PublishOutcome, Subscription, SubscriptionSpec,
};
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Consecutive failed or unknown publishes after which a producer is replaced.
const FAILURES_BEFORE_RECONNECT: u32 = 3;
/// Longest a connection attempt may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// How many producers of the process may be connecting at once. When a fault cuts every
/// connection, all the producers of a run (a hundred in `chat-under-faults`) start
/// replacing theirs at the same moment; let loose together, their handshakes crowd each
/// other (and the broker) past the connect deadline, each timed-out attempt is retried,
/// and publishing never recovers. Taken in turns, each handshake takes milliseconds.
const CONCURRENT_CONNECTS: usize = 8;
/// Connection attempts waiting for their turn (see [`CONCURRENT_CONNECTS`]); the connect
/// deadline starts once an attempt has its turn.
static CONNECT_TURNS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(CONCURRENT_CONNECTS);
/// First and longest pause between two attempts.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Replaces a producer whose publishes keep failing.
pub(crate) struct Reconnect {
    backend: Arc<dyn Backend>,
    failing: u32,
    /// Publishes sent before this belong to the producer that was replaced.
    since: Instant,
    pause: Duration,
    pending: Option<JoinHandle<Result<Producer, AdapterError>>>,
}

impl Reconnect {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            failing: 0,
            since: Instant::now(),
            pause: Duration::ZERO,
            pending: None,
        }
    }

    /// Notes how a publish sent at `sent` ended; starts replacing the producer after
    /// [`FAILURES_BEFORE_RECONNECT`] failures in a row.
    pub(crate) fn observe(&mut self, sent: Instant, outcome: &PublishOutcome) {
        if sent < self.since {
            return;
        }
        match outcome {
            PublishOutcome::Ok | PublishOutcome::Duplicate => self.failing = 0,
            PublishOutcome::Failed(_) | PublishOutcome::Unknown => {
                self.failing += 1;
                if self.failing >= FAILURES_BEFORE_RECONNECT && self.pending.is_none() {
                    self.attempt();
                }
            }
        }
    }

    /// Whether a replacement is being made.
    pub(crate) fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Waits for the replacement under way: `Some` producer when it connected; `None`
    /// when it failed (another attempt starts after a pause).
    pub(crate) async fn next(&mut self) -> Option<Producer> {
        let handle = self.pending.as_mut()?;
        let result = handle.await;
        self.pending = None;
        match result {
            Ok(Ok(producer)) => {
                self.failing = 0;
                self.pause = Duration::ZERO;
                self.since = Instant::now();
                Some(producer)
            }
            _ => {
                self.pause = (self.pause * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
                self.attempt();
                None
            }
        }
    }

    fn attempt(&mut self) {
        let backend = self.backend.clone();
        // Spread the first attempts of producers cut at the same moment.
        let pause = self.pause + FIRST_PAUSE.mul_f64(fastrand::f64());
        self.pending = Some(tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let Ok(_turn) = CONNECT_TURNS.acquire().await else {
                unreachable!("the connect semaphore is never closed")
            };
            match tokio::time::timeout(CONNECT_DEADLINE, backend.producer()).await {
                Ok(result) => result,
                Err(_) => Err(AdapterError::new(
                    brokerbench_adapters::ErrorKind::Timeout,
                    "connecting a new producer took too long",
                )),
            }
        }));
    }
}

impl Drop for Reconnect {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
    }
}

/// `publish`, counted as unknown when it has no outcome within `deadline`.
pub(crate) fn bounded(
    publish: BoxFuture<'static, PublishOutcome>,
    deadline: Option<Duration>,
) -> BoxFuture<'static, PublishOutcome> {
    match deadline {
        None => publish,
        Some(deadline) => Box::pin(async move {
            tokio::time::timeout(deadline, publish)
                .await
                .unwrap_or(PublishOutcome::Unknown)
        }),
    }
}

/// Subscribes `spec` again until it works (backing off from 50 ms to 1 s between tries)
/// or `stop` fires. Returns the subscription and how long it took.
pub(crate) async fn resubscribe_until(
    backend: &Arc<dyn Backend>,
    spec: &SubscriptionSpec,
    stop: &CancellationToken,
) -> Option<(Subscription, Duration)> {
    let began = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let attempt = tokio::time::timeout(CONNECT_DEADLINE, backend.subscribe(spec.clone()));
        tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            got = attempt => {
                if let Ok(Ok(s)) = got {
                    return Some((s, began.elapsed()));
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// `publish_batch` of `count` messages, every one counted as unknown when the batch has
/// no outcome within `deadline`.
pub(crate) fn bounded_batch(
    publish: BoxFuture<'static, Vec<PublishOutcome>>,
    count: usize,
    deadline: Option<Duration>,
) -> BoxFuture<'static, Vec<PublishOutcome>> {
    match deadline {
        None => publish,
        Some(deadline) => Box::pin(async move {
            tokio::time::timeout(deadline, publish)
                .await
                .unwrap_or_else(|_| vec![PublishOutcome::Unknown; count])
        }),
    }
}
