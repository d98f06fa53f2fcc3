//! What came back: a [`Reader`] task per subscription records every delivery (decoded,
//! with its flags and arrival time), and the error that ended the stream if one did.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brokerbench_adapters::{AdapterError, Delivery, Subscription};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::message::{Message, MessageError, MessageId};

/// One delivery as a subscriber saw it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The decoded message, or why the payload is not a good one.
    pub message: Result<Message, MessageError>,
    /// Whether the broker marked it as a redelivery.
    pub redelivered: bool,
    /// The delivery attempt, where the broker exposes it.
    pub attempt: Option<u32>,
    /// The broker's sequence for it, where it has one.
    pub sequence: Option<i64>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The message id, when the payload is a good message of run `run`.
    pub fn id(&self, run: u32) -> Option<MessageId> {
        match &self.message {
            Ok(m) if m.run == run => Some(m.id),
            _ => None,
        }
    }
}

/// Everything one subscription delivered.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Every delivery, in arrival order.
    pub received: Vec<Received>,
    /// The distinct good messages of this run among them.
    pub distinct: HashSet<MessageId>,
    /// The error item that ended the stream, and when it came.
    pub error: Option<(AdapterError, Instant)>,
    /// When the stream ended (after an error, an unsubscribe, or the broker closing it).
    pub ended: Option<Instant>,
}

impl Log {
    /// Records `delivery`, decoding it as a message of run `run`.
    pub fn record(&mut self, delivery: &Delivery, run: u32) {
        let message = Message::decode(&delivery.payload);
        if let Ok(m) = &message {
            if m.run == run {
                self.distinct.insert(m.id);
            }
        }
        self.received.push(Received {
            message,
            redelivered: delivery.redelivered,
            attempt: delivery.attempt,
            sequence: delivery.sequence,
            at: delivery.received_at,
        });
    }
}

/// Whether and how a reader acknowledges what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acking {
    /// It does not (automatic acks).
    Never,
    /// It acks every delivery as soon as it is read.
    Each,
}

/// A task reading one subscription into a [`Log`]. Dropping it stops the task and drops
/// the subscription (a check that stops early leaves nothing reading behind it).
pub(crate) struct Reader {
    log: Arc<Mutex<Log>>,
    stop: CancellationToken,
    task: Option<JoinHandle<Subscription>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Slows a reader down while it is set: a pause before each read.
#[derive(Debug)]
pub(crate) struct Pace {
    slow: AtomicBool,
    pause: Duration,
}

impl Pace {
    /// A pace of `per_second` reads per second, slow until [`release`](Self::release)d.
    pub fn new(per_second: f64) -> Arc<Pace> {
        Arc::new(Pace {
            slow: AtomicBool::new(true),
            pause: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
        })
    }

    /// Lets the reader go at full speed from now on.
    pub fn release(&self) {
        self.slow.store(false, Ordering::Release);
    }
}

impl Reader {
    /// Starts reading `subscription`, decoding messages of run `run`.
    pub fn spawn(subscription: Subscription, run: u32, acking: Acking) -> Reader {
        Reader::spawn_paced(subscription, run, acking, None)
    }

    /// [`spawn`](Self::spawn), pausing before each read while `pace` is slow.
    pub fn spawn_paced(
        mut subscription: Subscription,
        run: u32,
        acking: Acking,
        pace: Option<Arc<Pace>>,
    ) -> Reader {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let log = log.clone();
            let stop = stop.clone();
            async move {
                loop {
                    if let Some(pace) = &pace {
                        if pace.slow.load(Ordering::Acquire) {
                            tokio::select! {
                                () = stop.cancelled() => break,
                                () = tokio::time::sleep(pace.pause) => {}
                            }
                        }
                    }
                    let item = tokio::select! {
                        () = stop.cancelled() => break,
                        item = subscription.next() => item,
                    };
                    match item {
                        Some(Ok(delivery)) => {
                            if acking == Acking::Each {
                                // Failures show up as missing redeliveries or rejected
                                // acks, which the checks count.
                                let _ = subscription.ack(&delivery).await;
                            }
                            log.lock().record(&delivery, run);
                        }
                        Some(Err(error)) => {
                            log.lock().error = Some((error, Instant::now()));
                        }
                        None => {
                            log.lock().ended = Some(Instant::now());
                            // Park until stopped so the subscription can be handed back.
                            stop.cancelled().await;
                            break;
                        }
                    }
                }
                subscription
            }
        });
        Reader {
            log,
            stop,
            task: Some(task),
        }
    }

    /// How many distinct good messages of the run it has got so far.
    pub fn distinct(&self) -> usize {
        self.log.lock().distinct.len()
    }

    /// Whether the stream has ended.
    pub fn ended(&self) -> bool {
        self.log.lock().ended.is_some()
    }

    /// Whether it has got message `id`.
    pub fn has(&self, id: &MessageId) -> bool {
        self.log.lock().distinct.contains(id)
    }

    /// Runs `f` on the log as it is now.
    pub fn with_log<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.log.lock())
    }

    /// Stops reading and hands back the subscription and what it delivered.
    pub async fn stop(mut self) -> (Option<Subscription>, Log) {
        self.stop.cancel();
        let subscription = match self.task.take() {
            Some(task) => task.await.ok(),
            None => None,
        };
        let log = std::mem::take(&mut *self.log.lock());
        (subscription, log)
    }

    /// Stops reading, drops the subscription, and returns what it delivered.
    pub async fn finish(self) -> Log {
        self.stop().await.1
    }
}

/// Waits until `done` holds, checking every few milliseconds, or until `deadline`.
/// Returns whether it held.
pub(crate) async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Stops every reader and returns their logs in order.
pub(crate) async fn finish_all(readers: Vec<Reader>) -> Vec<Log> {
    let mut logs = Vec::with_capacity(readers.len());
    for reader in readers {
        logs.push(reader.finish().await);
    }
    logs
}
