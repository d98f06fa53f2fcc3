//! Publishing: one `XADD` per message, pipelined on the producer's own connection.
//!
//! ```text
//! XADD <topic> [MAXLEN = <max_messages>] * payload <bytes> [key <key>]
//!   -> "1700000000000-0"        the entry id: the broker's confirmation
//! ```
//!
//! ```text
//!  publish / publish_batch futures ──(first poll: joins the queue, synchronously)──> order queue (unbounded)
//!                                                                                          │
//!  forwarder task: takes what has queued up (up to 1024 commands / 1 MiB; a batch is never
//!  split) as one redis pipeline, and keeps up to 32 such pipelines in flight ──> MultiplexedConnection
//!                                                                                          │
//!  publish futures <──(one reply each, or one per batch: entry ids or errors)── pipeline replies ┘
//! ```
//!
//! A [`publish_batch`](Publisher::publish_batch) is one reply channel and one timer for
//! all its messages, and its commands go out together in one pipeline (one write, one
//! round trip). When nothing waits in the order queue (and fewer than 32 batches are in
//! flight that way), the batch's own future puts its pipeline on the connection at its
//! first poll, under the same lock the forwarder holds to put one there: two task
//! switches fewer per round trip, and still in the order of first polls. Otherwise it is
//! one queue entry, joined by whatever single publishes or small batches queued up behind
//! it while there is room. A single [`publish`](Publisher::publish) costs one
//! encoded command, one reply channel and one timer.
//!
//! Why not simply one `send_packed_command` per publish on the multiplexed connection:
//! its queue is a bounded tokio channel, and tokio's cooperative budget can make a send
//! return `Pending` on its first poll *after* taking a slot but *before* placing the
//! command, so under `FuturesUnordered` a later publish overtakes an earlier one (seen
//! in the 5,000-publish test: message 4096 arrived 128th). Joining an unbounded queue is
//! synchronous, so the order of first polls is the order on the wire; the queue holds
//! no more than the publish futures already in flight hold (their encoded commands
//! move into it). The forwarder puts each batch on the connection before it takes the
//! next (its first poll, with the cooperative budget off, and never more batches in
//! flight than the connection's queue holds), so batches stay in order too.
//!
//! Outcomes: the entry id is `Ok`; an error reply (`WRONGTYPE`, `OOM`, ...) is `Failed`;
//! no reply within the publish timeout is `Unknown`, and so is a connection that breaks
//! while the command may already have been written. Once the connection is known to be
//! gone, later publishes fail at once without being sent (`Failed`): the redis crate's
//! `MultiplexedConnection` does not reconnect, and neither does the producer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{Cmd, Value};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::entries::{FIELD_KEY, FIELD_PAYLOAD};
use super::link::{Failure, Link, request_pipe};
use super::topics::Topics;
use crate::publish::{PublishOutcome, PublishRequest, Publisher};

/// Most commands in one pipeline.
const MAX_BATCH: usize = 1024;

/// A pipeline stops growing once its payloads reach this many bytes (so 1 MiB messages
/// go one at a time).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Most pipelines written and not yet answered. Far below the connection's own queue
/// (4096), so putting a batch on it never waits.
const MAX_BATCHES_IN_FLIGHT: usize = 32;

/// A producer: the order queue's sender, and what its publishes share.
pub(super) struct RedisPublisher {
    queue: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

/// What one publish, or one [`publish_batch`](Publisher::publish_batch), hands the
/// forwarder: its commands, in order, and where their answers go.
enum Queued {
    One {
        cmd: Cmd,
        bytes: usize,
        reply: oneshot::Sender<Answer>,
    },
    Many {
        cmds: Vec<Cmd>,
        bytes: usize,
        reply: oneshot::Sender<Vec<Answer>>,
    },
}

/// One `XADD`'s answer: the entry id (not kept), or why there is none.
type Answer = Result<(), Failure>;

impl Queued {
    /// Commands.
    fn len(&self) -> usize {
        match self {
            Queued::One { .. } => 1,
            Queued::Many { cmds, .. } => cmds.len(),
        }
    }

    /// Topic and payload bytes.
    fn bytes(&self) -> usize {
        match self {
            Queued::One { bytes, .. } | Queued::Many { bytes, .. } => *bytes,
        }
    }
}

struct Shared {
    /// The producer's connection.
    con: MultiplexedConnection,
    /// Held while a pipeline is put on the connection (one synchronous poll), so that
    /// the forwarder and a batch sent directly never overtake each other.
    gate: Mutex<()>,
    /// Publishes and batches in the order queue, or taken off it and not yet on the
    /// connection. A batch goes straight onto the connection only when this is 0.
    queued: AtomicUsize,
    /// Batches sent straight onto the connection and not yet answered.
    direct: AtomicUsize,
    topics: Arc<Topics>,
    timeout: Duration,
    url: Arc<str>,
    /// Set once a batch found the connection broken; `lost_reason` says how.
    lost: AtomicBool,
    lost_reason: Mutex<Option<String>>,
    /// Cleared when the connection's driver task ends.
    alive: Arc<AtomicBool>,
}

impl Shared {
    /// Why nothing can be sent any more, if that is known.
    fn gone(&self) -> Option<String> {
        if self.lost.load(Ordering::Acquire) {
            return self.lost_reason.lock().clone();
        }
        (!self.alive.load(Ordering::Acquire))
            .then(|| format!("the connection to redis at {} is closed", self.url))
    }

    fn note_lost(&self, why: &str) {
        let mut reason = self.lost_reason.lock();
        if reason.is_none() {
            *reason = Some(format!(
                "the connection to redis at {} failed: {why}",
                self.url
            ));
        }
        self.lost.store(true, Ordering::Release);
    }

    /// The outcome of one publish to `topic` from its answer; `None` when there was no
    /// answer (in time, or at all).
    fn outcome(&self, topic: &str, answer: Option<Answer>) -> PublishOutcome {
        match answer {
            Some(Ok(())) => PublishOutcome::Ok,
            Some(Err(Failure::Server { text, .. })) => PublishOutcome::Failed(format!(
                "redis at {} refused the XADD to {topic}: {text}",
                self.url
            )),
            // Written, perhaps, and then the connection broke; or no answer in time.
            Some(Err(_)) | None => PublishOutcome::Unknown,
        }
    }

    fn stopped(&self) -> PublishOutcome {
        PublishOutcome::Failed(format!(
            "not sent: the producer's connection to redis at {} has stopped",
            self.url
        ))
    }
}

impl RedisPublisher {
    /// A producer publishing on `link`; starts its forwarder task.
    pub(super) fn start(
        link: Link,
        topics: Arc<Topics>,
        timeout: Duration,
        url: Arc<str>,
    ) -> RedisPublisher {
        let (queue, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            con: link.con,
            gate: Mutex::new(()),
            queued: AtomicUsize::new(0),
            direct: AtomicUsize::new(0),
            topics,
            timeout,
            url,
            lost: AtomicBool::new(false),
            lost_reason: Mutex::new(None),
            alive: link.alive.clone(),
        });
        let forwarder = Forwarder {
            rx,
            held: None,
            shared: shared.clone(),
        };
        tokio::spawn(forwarder.run());
        RedisPublisher { queue, shared }
    }
}

impl Publisher for RedisPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let max_len = self.shared.topics.touch(&request.topic);
        let cmd = xadd(&request, max_len);
        let bytes = request.payload.len() + request.topic.len();
        let queue = self.queue.clone();
        let shared = self.shared.clone();
        let topic = request.topic;
        Box::pin(async move {
            if let Some(reason) = shared.gone() {
                return PublishOutcome::Failed(format!("not sent: {reason}"));
            }
            let deadline = Instant::now() + shared.timeout;
            let (reply, answer) = oneshot::channel();
            shared.queued.fetch_add(1, Ordering::AcqRel);
            if queue.send(Queued::One { cmd, bytes, reply }).is_err() {
                return shared.stopped();
            }
            let answer = tokio::time::timeout_at(deadline, answer).await;
            shared.outcome(&topic, answer.ok().and_then(Result::ok))
        })
    }

    /// One pipeline for the whole batch: the commands join the order queue together and
    /// go out in one write (one round trip), with one timer and one reply channel for all.
    fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        let mut bytes = 0;
        let mut cmds = Vec::with_capacity(requests.len());
        let mut topics = Vec::with_capacity(requests.len());
        // Batches usually go to one topic: its limit is looked up once.
        let mut limit: Option<(Arc<str>, Option<u64>)> = None;
        for request in requests {
            let max_len = match &limit {
                Some((topic, max_len)) if Arc::ptr_eq(topic, &request.topic) => *max_len,
                _ => {
                    let max_len = self.shared.topics.touch(&request.topic);
                    limit = Some((request.topic.clone(), max_len));
                    max_len
                }
            };
            cmds.push(xadd(&request, max_len));
            bytes += request.payload.len() + request.topic.len();
            topics.push(request.topic);
        }
        let queue = self.queue.clone();
        let shared = self.shared.clone();
        let shared_for_send = self.shared.clone();
        Box::pin(async move {
            let every = |outcome: PublishOutcome| vec![outcome; topics.len()];
            if cmds.is_empty() {
                return Vec::new();
            }
            if let Some(reason) = shared.gone() {
                return every(PublishOutcome::Failed(format!("not sent: {reason}")));
            }
            let deadline = Instant::now() + shared.timeout;
            let (reply, answer) = oneshot::channel();
            let batch = Queued::Many { cmds, bytes, reply };
            let answer = async move {
                match send_directly(&shared_for_send, batch).await {
                    Ok(()) => {}
                    Err(batch) => {
                        shared_for_send.queued.fetch_add(1, Ordering::AcqRel);
                        if queue.send(batch).is_err() {
                            return None;
                        }
                    }
                }
                answer.await.ok()
            };
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(None) => every(shared.stopped()),
                Ok(Some(answers)) => topics
                    .iter()
                    .zip(answers)
                    .map(|(topic, answer)| shared.outcome(topic, Some(answer)))
                    .collect(),
                Err(_) => every(PublishOutcome::Unknown),
            }
        })
    }
}

/// The task that moves queued publishes onto the connection, in batches.
struct Forwarder {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// Taken off the queue but left for the next pipeline: it did not fit the last one.
    held: Option<Queued>,
    shared: Arc<Shared>,
}

type InFlight = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Forwarder {
    async fn run(mut self) {
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let mut open = true;
        loop {
            let room = in_flight.len() < MAX_BATCHES_IN_FLIGHT;
            if room && let Some(first) = self.held.take() {
                self.forward(first, &mut in_flight).await;
                continue;
            }
            tokio::select! {
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                first = self.rx.recv(), if open && room => match first {
                    Some(first) => self.forward(first, &mut in_flight).await,
                    // Every producer handle and unsent publish is gone.
                    None => open = false,
                },
                else => break,
            }
        }
    }

    /// Sends `first` and what queued up behind it as one pipeline.
    async fn forward(&mut self, first: Queued, in_flight: &mut FuturesUnordered<InFlight>) {
        let shared = self.shared.clone();
        let mut first = Some(first);
        let send = std::future::poll_fn(|cx| {
            let _gate = shared.gate.lock();
            let batch = self.gather(first.take().expect("polled once"));
            let forwarded = batch.len();
            let mut send: InFlight = Box::pin(tokio::task::unconstrained(send_batch(
                shared.con.clone(),
                batch,
                shared.clone(),
            )));
            // The first poll puts the whole pipeline on the connection's queue, before
            // any later one.
            let pending = send.as_mut().poll(cx).is_pending();
            shared.queued.fetch_sub(forwarded, Ordering::AcqRel);
            Poll::Ready(pending.then_some(send))
        })
        .await;
        if let Some(send) = send {
            in_flight.push(send);
        }
    }

    /// `first` and whatever else is queued, up to the batch limits. A batch from
    /// `publish_batch` is never split: one that would overflow the pipeline waits for the
    /// next (one larger than the limits goes alone).
    fn gather(&mut self, first: Queued) -> Vec<Queued> {
        let mut commands = first.len();
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while commands < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(next) if commands + next.len() > MAX_BATCH => {
                    self.held = Some(next);
                    break;
                }
                Ok(next) => {
                    commands += next.len();
                    bytes += next.bytes();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        batch
    }
}

/// Sends `batch` (a `publish_batch`) straight onto the connection, from the caller's own
/// task, when nothing is queued before it and few batches are in flight that way: two
/// task switches fewer per round trip than going through the forwarder. `Err(batch)`:
/// it must take the queue.
async fn send_directly(shared: &Arc<Shared>, batch: Queued) -> Result<(), Queued> {
    let mut batch = Some(batch);
    let send = std::future::poll_fn(|cx| {
        let _gate = shared.gate.lock();
        if shared.queued.load(Ordering::Acquire) > 0
            || shared.direct.load(Ordering::Acquire) >= MAX_BATCHES_IN_FLIGHT
        {
            return Poll::Ready(Err(batch.take().expect("polled once")));
        }
        let in_flight = Direct::enter(shared);
        let mut send: InFlight = Box::pin(tokio::task::unconstrained(send_batch(
            shared.con.clone(),
            vec![batch.take().expect("polled once")],
            shared.clone(),
        )));
        // As in the forwarder: the first poll puts the pipeline on the connection.
        Poll::Ready(Ok(send
            .as_mut()
            .poll(cx)
            .is_pending()
            .then_some((send, in_flight))))
    })
    .await?;
    if let Some((send, _in_flight)) = send {
        send.await;
    }
    Ok(())
}

/// Counts a batch sent directly while it is in flight (also when its publish gives up).
struct Direct(Arc<Shared>);

impl Direct {
    fn enter(shared: &Arc<Shared>) -> Direct {
        shared.direct.fetch_add(1, Ordering::AcqRel);
        Direct(shared.clone())
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.0.direct.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `batch` as one pipeline and hands each publish its own answer.
async fn send_batch(mut con: MultiplexedConnection, batch: Vec<Queued>, shared: Arc<Shared>) {
    let commands = batch.iter().map(Queued::len).sum();
    let mut pipe = ::redis::Pipeline::with_capacity(commands);
    let mut replies = Vec::with_capacity(batch.len());
    for queued in batch {
        match queued {
            Queued::One { cmd, reply, .. } => {
                pipe.add_command(cmd);
                replies.push(Reply::One(reply));
            }
            Queued::Many { cmds, reply, .. } => {
                let n = cmds.len();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                replies.push(Reply::Many(n, reply));
            }
        }
    }
    match request_pipe(&mut con, &pipe, shared.timeout).await {
        Ok(values) => {
            let mut answers = values.into_iter().map(|value| match value {
                Value::ServerError(e) => Err(Failure::from_server(&e)),
                _ => Ok(()),
            });
            let mut next = || {
                answers.next().unwrap_or_else(|| {
                    Err(Failure::Lost("the pipeline's answer was cut short".into()))
                })
            };
            for reply in replies {
                match reply {
                    Reply::One(reply) => {
                        let _ = reply.send(next());
                    }
                    Reply::Many(n, reply) => {
                        let _ = reply.send((0..n).map(|_| next()).collect());
                    }
                }
            }
        }
        Err(failure) => {
            if let Failure::Lost(why) = &failure {
                shared.note_lost(why);
            }
            for reply in replies {
                match reply {
                    Reply::One(reply) => {
                        let _ = reply.send(Err(failure.clone()));
                    }
                    Reply::Many(n, reply) => {
                        let _ = reply.send(vec![Err(failure.clone()); n]);
                    }
                }
            }
        }
    }
}

/// Where the answers of one queued publish (or batch of `n`) go.
enum Reply {
    One(oneshot::Sender<Answer>),
    Many(usize, oneshot::Sender<Vec<Answer>>),
}

/// `XADD <topic> [MAXLEN = n] * payload <bytes> [key <key>]`.
///
/// Trimming is exact (`=`), not approximate (`~`): with `~` Redis only drops whole radix
/// tree nodes (100 entries each by default), so a stream may hold noticeably more than
/// the limit, and a late reader would see more than "the retained tail". Exact trimming
/// costs a little more per append once the stream is full; the limit is only set when a
/// scenario asks for one.
fn xadd(request: &PublishRequest, max_len: Option<u64>) -> Cmd {
    let key_len = request
        .key
        .as_ref()
        .map_or(0, |k| k.len() + FIELD_KEY.len());
    let mut cmd = Cmd::with_capacity(
        10,
        request.topic.len() + request.payload.len() + key_len + 48,
    );
    cmd.arg("XADD").arg(&*request.topic);
    if let Some(max) = max_len {
        cmd.arg("MAXLEN").arg("=").arg(max);
    }
    cmd.arg("*").arg(FIELD_PAYLOAD).arg(&request.payload[..]);
    if let Some(key) = &request.key {
        cmd.arg(FIELD_KEY).arg(&**key);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                ::redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".to_owned(),
            })
            .collect()
    }

    #[test]
    fn xadd_carries_payload_key_and_exact_trim() {
        let req = PublishRequest::new("bb.r.t", "hi").key("k1");
        assert_eq!(
            args(&xadd(&req, Some(10))),
            [
                "XADD", "bb.r.t", "MAXLEN", "=", "10", "*", "payload", "hi", "key", "k1"
            ]
        );
        let req = PublishRequest::new("bb.r.t", &b"\x00\xff"[..]);
        let cmd = xadd(&req, None);
        assert_eq!(args(&cmd)[..4], ["XADD", "bb.r.t", "*", "payload"]);
        assert_eq!(cmd.args_iter().count(), 5);
    }
}
