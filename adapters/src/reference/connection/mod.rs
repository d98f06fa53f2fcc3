//! One pipelined connection to the reference broker.
//!
//! ```text
//!  publish, publish_batch (caller's task) ──stage + write──┐
//!  other requests ──queue──> writer task ──stage + write──> Outgoing ──bytes──> socket
//!                                  (leftovers)      │ pending FIFO (same order as the bytes)
//!                                                   v
//!  Subscription streams <──deliveries── reader task <──lines── socket
//!  publish / request futures <──oneshot replies──┘
//! ```
//!
//! The broker answers requests in the order it received them, and interleaves pushed
//! messages (`"command":"send"`) with the answers (`"success"`). So each request's
//! pending entry is queued for the reader *before* its bytes reach the socket, and the
//! reader pops one entry per answer: no ids. Queueing the entry and appending the bytes
//! happen in one step under [`Outgoing`]'s lock, whoever stages. A publish, or a
//! [`publish_batch`](Connection::publish_batch), is staged and written by the caller's
//! own task, one write for the whole batch, with no hop through the writer task; the
//! writer task stages the other requests, several per write, and finishes writes the
//! socket could not take at once. A batch is one pending entry however many messages it
//! holds: one oneshot and one timer for the whole batch. The reader reads 64 KiB at a
//! time, splits off all complete lines as one `Bytes`, decodes them without copying (a
//! delivery's payload is a slice of that `Bytes`) and hands each subscription one batch
//! per read.
//!
//! Timeouts: every request (publish, subscribe, unsubscribe, stats) and every socket
//! write has one. The reader's wait for the next line has none on purpose: a subscriber
//! may legitimately hear nothing for a long time; a dead peer shows up as the next
//! request's timeout, or as the kernel's connection reset.

mod reader;
mod subscription;
mod writer;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::reader::Reader;
use self::subscription::ReferenceSubscription;
use self::writer::{Link, Outgoing, Staged, Writer};
use crate::backend::ConnectOptions;
use crate::error::AdapterError;
use crate::net;
use crate::publish::{PublishOutcome, PublishRequest, Publisher};
use crate::subscription::{Batch, Subscription, SubscriptionSpec};

/// Capacity of the queue between the connection's handles and its writer task. Large
/// enough that 64 publishes in flight per producer never wait for it; when it is full,
/// callers wait (backpressure), bounded by their timeout.
const REQUEST_QUEUE_CAPACITY: usize = 1024;

/// Most requests written to the broker and not yet answered (the pending FIFO's
/// capacity). The writer waits for answers beyond it.
pub(super) const MAX_IN_FLIGHT: usize = 16 * 1024;

/// Most requests the writer takes off its queue at once (they are then staged and
/// written, in as many writes as [`WRITE_BATCH_BYTES`] asks for).
const REQUESTS_PER_WRITE: usize = 256;

/// Most pending entries the reader takes off the writer's FIFO at once; it holds them
/// until their answers arrive, so up to this many requests may be in flight beyond
/// [`MAX_IN_FLIGHT`].
const PENDING_PER_TAKE: usize = 256;

/// Read buffer size: one read can carry hundreds of small messages.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// The writer writes its buffer once it holds this much, even if more requests are
/// queued, so one batch never grows without bound.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Longest line accepted from the broker. Its pushes are client lines (at most 1 MiB
/// by default) plus an index, so this only trips on a broken peer.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Most deliveries the reader gathers for one subscription before handing them over;
/// it also hands them over after every read, so this only bounds a batch's size. Large
/// enough for a whole read buffer of small messages (64 KiB of ~100-byte pushes), so a
/// subscriber at full speed gets one channel send and one wake-up per read.
const MAX_DELIVERY_BATCH: usize = 1024;

/// How long the reader waits for the writer's pending entry of an answer that arrived.
/// The entry is queued before the request's bytes are written, so it is always there
/// already; a missing one means the broker answered something never asked.
const PENDING_ENTRY_GRACE: Duration = Duration::from_secs(1);

/// A request on its way to the writer task.
enum Request {
    Publish {
        request: PublishRequest,
        reply: oneshot::Sender<PublishOutcome>,
    },
    /// Several publishes encoded into one write, answered together.
    PublishBatch {
        requests: Vec<PublishRequest>,
        reply: oneshot::Sender<Vec<PublishOutcome>>,
    },
    Subscribe {
        spec: SubscriptionSpec,
        route: mpsc::Sender<Batch>,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
    Unsubscribe {
        topic: Arc<str>,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
    Ack {
        topic: Arc<str>,
        index: i64,
        nack: bool,
        rejected: Arc<AtomicU64>,
    },
    Stats {
        reply: oneshot::Sender<Result<serde_json::Value, AdapterError>>,
    },
}

impl Request {
    /// Resolves a request that will never be sent.
    fn fail(self, error: &AdapterError) {
        match self {
            Request::Publish { reply, .. } => {
                let _ = reply.send(PublishOutcome::Failed(format!("not sent: {error}")));
            }
            Request::PublishBatch { requests, reply } => {
                let _ = reply.send(failed_batch(requests.len(), error));
            }
            Request::Subscribe { reply, .. } | Request::Unsubscribe { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Request::Stats { reply } => {
                let _ = reply.send(Err(error.clone()));
            }
            // The broker will redeliver the message; nothing waits for this.
            Request::Ack { .. } => {}
        }
    }
}

/// What the reader does with the answer to a request that was written.
enum Pending {
    Publish(oneshot::Sender<PublishOutcome>),
    /// One entry for a whole batch: it takes as many answers as the batch sent.
    PublishBatch(BatchOutcomes),
    Subscribe {
        topic: Arc<str>,
        route: mpsc::Sender<Batch>,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
    Unsubscribe {
        topic: Arc<str>,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
    Ack {
        rejected: Arc<AtomicU64>,
    },
    Stats(oneshot::Sender<Result<serde_json::Value, AdapterError>>),
}

/// The outcomes of one batch of publishes, filled in by the reader one answer at a time
/// and handed to the batch's caller, all together, with the last one.
struct BatchOutcomes {
    /// One slot per request, in order: `Some` once known (a request that could not be
    /// encoded is known at once), `None` while its answer is awaited.
    outcomes: Vec<Option<PublishOutcome>>,
    /// No slot before this one awaits an answer.
    next: usize,
    /// Slots still awaiting an answer.
    awaiting: usize,
    /// Taken when the outcomes are handed over.
    reply: Option<oneshot::Sender<Vec<PublishOutcome>>>,
}

impl BatchOutcomes {
    /// Records the answer to the oldest request still awaiting one. Returns `true` when
    /// that was the batch's last (and hands the outcomes over).
    fn answer(&mut self, outcome: PublishOutcome) -> bool {
        while self.outcomes.get(self.next).is_some_and(Option::is_some) {
            self.next += 1;
        }
        if let Some(slot) = self.outcomes.get_mut(self.next) {
            *slot = Some(outcome);
            self.next += 1;
            self.awaiting -= 1;
        }
        if self.awaiting == 0 {
            self.hand_over();
            return true;
        }
        false
    }

    /// Sends the outcomes to the caller; requests still awaiting an answer are
    /// [`PublishOutcome::Unknown`].
    fn hand_over(&mut self) {
        if let Some(reply) = self.reply.take() {
            let outcomes = std::mem::take(&mut self.outcomes)
                .into_iter()
                .map(|o| o.unwrap_or(PublishOutcome::Unknown))
                .collect();
            let _ = reply.send(outcomes);
        }
    }
}

impl Drop for BatchOutcomes {
    /// A batch dropped before all its answers arrived (the connection ended): the
    /// confirmations that did arrive stand, the rest are unknown.
    fn drop(&mut self) {
        self.hand_over();
    }
}

/// `n` outcomes saying the batch was not sent, and why.
fn failed_batch(n: usize, error: &AdapterError) -> Vec<PublishOutcome> {
    vec![PublishOutcome::Failed(format!("not sent: {error}")); n]
}

/// Sends a publish or a batch of them: staged and written by the caller when it may be
/// ([`Outgoing::publish`]), else through the writer task's queue. Resolves once it is
/// staged or queued.
async fn send_publish(
    queue: &mpsc::Sender<Request>,
    state: &ConnState,
    deadline: Instant,
    request: Request,
) -> Result<(), AdapterError> {
    let staged = state.out.lock().publish(request);
    let request = match staged {
        Staged::Sent { leftover } => {
            if leftover {
                state.leftover.notify_one();
            }
            return Ok(());
        }
        Staged::Closed => return Err(state.reason()),
        Staged::Queue(request) => request,
    };
    // `unconstrained`: with tokio's cooperative budget spent, a plain `send` can return
    // Pending on its first poll without taking its place in the queue, and a publish
    // polled later could overtake it. Unconstrained, the first poll either sends or
    // joins the channel's FIFO of waiting senders.
    let sent = tokio::time::timeout_at(deadline, tokio::task::unconstrained(queue.send(request)));
    let why = match sent.await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(_)) => state.reason(),
        Err(_) => AdapterError::timeout(
            "the connection's request queue stayed full",
            state.options.publish_timeout,
        ),
    };
    // It never reached the writer task, which counted on staging it.
    state.out.lock().queued_publishes -= 1;
    Err(why)
}

/// What the handles and both tasks share.
struct ConnState {
    url: String,
    peer: Option<SocketAddr>,
    options: ConnectOptions,
    /// Cancelled when either task hits a fatal error; the other stops too.
    closed: CancellationToken,
    /// The first fatal error, reported to everything that was waiting.
    reason: Mutex<Option<AdapterError>>,
    /// Staged bytes and the socket they go to; publishing handles write here directly.
    out: Mutex<Outgoing>,
    /// Tells the writer task that a handle's write left bytes the socket did not take.
    leftover: Notify,
}

impl ConnState {
    fn fail(&self, error: AdapterError) {
        {
            let mut reason = self.reason.lock();
            if reason.is_none() {
                *reason = Some(error);
            }
        }
        self.closed.cancel();
    }

    fn reason(&self) -> AdapterError {
        self.reason.lock().clone().unwrap_or_else(|| {
            AdapterError::closed(format!(
                "the connection to the reference broker at {} is closed",
                self.url
            ))
        })
    }
}

/// A pipelined connection to the reference broker: publish, subscribe, stats.
///
/// A cheap `Clone` handle; the connection closes when the last handle (including those
/// inside [`Subscription`]s made from it) is dropped — after the answers to requests
/// already written have arrived, or the request timeout.
///
/// [`ReferenceBackend`](super::ReferenceBackend) opens one per producer and one per
/// subscription, which is what the broker's fan-out and competing semantics are defined
/// over. Opening one yourself (with
/// [`ReferenceBackend::connection`](super::ReferenceBackend::connection)) lets one
/// connection both publish and subscribe; then read its subscriptions steadily, because
/// replies and pushes share the connection and an unread subscription stalls the
/// replies behind it.
#[derive(Clone)]
pub struct Connection {
    requests: mpsc::Sender<Request>,
    state: Arc<ConnState>,
}

impl Connection {
    /// Connects to `host_port` (named `url` in messages) and starts the connection's
    /// reader and writer tasks on the current Tokio runtime.
    pub(crate) async fn open(
        url: &str,
        host_port: &str,
        options: &ConnectOptions,
    ) -> Result<Connection, AdapterError> {
        let stream = net::dial("reference broker", url, host_port, options.connect_timeout).await?;
        Ok(Connection::start(stream, url, options.clone()))
    }

    /// Runs the protocol over an already connected stream.
    pub(crate) fn start(stream: TcpStream, url: &str, options: ConnectOptions) -> Connection {
        let peer = stream.peer_addr().ok();
        let (rd, wr) = stream.into_split();
        let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE_CAPACITY);
        let (pending_tx, pending_rx) = mpsc::channel(MAX_IN_FLIGHT);
        let (writer_alive, writer_gone) = oneshot::channel::<()>();
        let link = Link {
            wr: Arc::new(wr),
            pending: pending_tx,
        };
        let state = Arc::new(ConnState {
            url: url.to_owned(),
            peer,
            options,
            closed: CancellationToken::new(),
            reason: Mutex::new(None),
            out: Mutex::new(Outgoing {
                link: Some(link.clone()),
                buf: Vec::with_capacity(WRITE_BATCH_BYTES + 1024),
                queued_publishes: 0,
            }),
            leftover: Notify::new(),
        });
        let writer = Writer {
            requests: requests_rx,
            link,
            state: state.clone(),
            inbox: Vec::with_capacity(REQUESTS_PER_WRITE),
            _alive: writer_alive,
        };
        let reader = Reader {
            rd,
            buf: BytesMut::with_capacity(READ_BUFFER_SIZE),
            scanned: 0,
            pending: pending_rx,
            taken: Vec::with_capacity(PENDING_PER_TAKE),
            read_at: std::time::Instant::now(),
            batch: None,
            routes: FxHashMap::default(),
            state: state.clone(),
        };
        tokio::spawn(writer.run());
        tokio::spawn(reader.run(writer_gone));
        Connection { requests, state }
    }

    /// The URL this connection was opened with.
    pub fn url(&self) -> &str {
        &self.state.url
    }

    /// The broker's address, as connected.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.state.peer
    }

    /// Whether the connection has failed or been closed by the broker.
    pub fn is_closed(&self) -> bool {
        self.state.closed.is_cancelled()
    }

    /// Publishes one message; see [`Producer::publish`](crate::Producer::publish) for the
    /// outcome and the ordering rules. Nothing is sent until the future is polled.
    pub fn publish(
        &self,
        request: PublishRequest,
    ) -> impl Future<Output = PublishOutcome> + Send + 'static {
        let requests = self.requests.clone();
        let state = self.state.clone();
        async move {
            let deadline = Instant::now() + state.options.publish_timeout;
            let (reply, answer) = oneshot::channel();
            let request = Request::Publish { request, reply };
            if let Err(why) = send_publish(&requests, &state, deadline, request).await {
                return PublishOutcome::Failed(format!("not sent: {why}"));
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(outcome)) => outcome,
                // Sent, and then no answer: the timeout, or the connection dropped.
                Ok(Err(_)) | Err(_) => PublishOutcome::Unknown,
            }
        }
    }

    /// Publishes `requests` in order as one batch; see
    /// [`Producer::publish_batch`](crate::Producer::publish_batch). The batch is encoded
    /// into the connection's write buffer and written by the caller's task itself, with
    /// one call (the writer task only finishes a write the socket could not take at
    /// once), and waits for its answers as one pending entry; the future resolves once
    /// the last answer arrived. The publish timeout applies to the batch as a whole: when
    /// it expires, every outcome of the batch is [`PublishOutcome::Unknown`].
    pub fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> impl Future<Output = Vec<PublishOutcome>> + Send + 'static {
        let sender = self.requests.clone();
        let state = self.state.clone();
        async move {
            let n = requests.len();
            if n == 0 {
                return Vec::new();
            }
            let deadline = Instant::now() + state.options.publish_timeout;
            let (reply, answer) = oneshot::channel();
            let request = Request::PublishBatch { requests, reply };
            if let Err(why) = send_publish(&sender, &state, deadline, request).await {
                return failed_batch(n, &why);
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(_)) | Err(_) => vec![PublishOutcome::Unknown; n],
            }
        }
    }

    /// Subscribes this connection to `spec.topic` and returns once the broker confirmed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if the broker refused, [`ErrorKind::InvalidInput`] if this
    /// connection is already subscribed to the topic, [`ErrorKind::Timeout`] or
    /// [`ErrorKind::Closed`] otherwise.
    ///
    /// [`ErrorKind::Rejected`]: crate::ErrorKind::Rejected
    /// [`ErrorKind::InvalidInput`]: crate::ErrorKind::InvalidInput
    /// [`ErrorKind::Timeout`]: crate::ErrorKind::Timeout
    /// [`ErrorKind::Closed`]: crate::ErrorKind::Closed
    pub async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<Subscription, AdapterError> {
        let control = ReferenceSubscription {
            conn: self.clone(),
            topic: spec.topic.clone(),
            rejected: Arc::new(AtomicU64::new(0)),
        };
        let (route, subscription) = Subscription::channel(spec, Box::new(control));
        let what = format!("subscribe to {}", spec.topic);
        self.call(what, |reply| Request::Subscribe {
            spec: spec.clone(),
            route,
            reply,
        })
        .await?;
        Ok(subscription)
    }

    /// Leaves `topic`; resolves when the broker confirmed.
    fn unsubscribe(
        &self,
        topic: Arc<str>,
    ) -> impl Future<Output = Result<(), AdapterError>> + Send + 'static {
        let conn = self.clone();
        async move {
            let what = format!("unsubscribe from {topic}");
            conn.call(what, |reply| Request::Unsubscribe { topic, reply })
                .await
        }
    }

    /// Queues an ack or nack of message `index` of `topic`; resolves once queued.
    fn ack(
        &self,
        topic: Arc<str>,
        index: i64,
        nack: bool,
        rejected: Arc<AtomicU64>,
    ) -> impl Future<Output = Result<(), AdapterError>> + Send + 'static {
        let requests = self.requests.clone();
        let state = self.state.clone();
        async move {
            let timeout = state.options.request_timeout;
            let request = Request::Ack {
                topic: topic.clone(),
                index,
                nack,
                rejected,
            };
            match tokio::time::timeout(timeout, requests.send(request)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(state.reason()),
                Err(_) => Err(AdapterError::timeout(
                    &format!(
                        "{} of {topic} #{index} (request queue full)",
                        if nack { "nack" } else { "ack" }
                    ),
                    timeout,
                )),
            }
        }
    }

    /// The broker's counters (the `stats` extension): the `stats` object of the reply.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if the broker does not support it, [`ErrorKind::Timeout`]
    /// or [`ErrorKind::Closed`] otherwise.
    ///
    /// [`ErrorKind::Rejected`]: crate::ErrorKind::Rejected
    /// [`ErrorKind::Timeout`]: crate::ErrorKind::Timeout
    /// [`ErrorKind::Closed`]: crate::ErrorKind::Closed
    pub async fn stats(&self) -> Result<serde_json::Value, AdapterError> {
        self.call("stats".to_owned(), |reply| Request::Stats { reply })
            .await
    }

    /// Sends a request and waits for its answer, both within the request timeout.
    async fn call<T>(
        &self,
        what: String,
        make: impl FnOnce(oneshot::Sender<Result<T, AdapterError>>) -> Request,
    ) -> Result<T, AdapterError> {
        let timeout = self.state.options.request_timeout;
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.requests.send(make(reply))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let reason = self.state.reason();
                return Err(AdapterError::new(
                    reason.kind(),
                    format!("{what}: {reason}"),
                ));
            }
            Err(_) => {
                return Err(AdapterError::timeout(
                    &format!("{what} (request queue full)"),
                    timeout,
                ));
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                let reason = self.state.reason();
                Err(AdapterError::new(
                    reason.kind(),
                    format!("{what}: {reason}"),
                ))
            }
            Err(_) => Err(AdapterError::timeout(&what, timeout)),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.state.url)
            .field("peer", &self.state.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Publisher for Connection {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        Box::pin(Connection::publish(self, request))
    }

    fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        Box::pin(Connection::publish_batch(self, requests))
    }
}
