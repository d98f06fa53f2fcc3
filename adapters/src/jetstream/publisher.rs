//! Publishing to JetStream: a publish is confirmed by the stream's `PubAck`.
//!
//! ```text
//!  publish futures ──jobs (in first-poll order)──> sender task ──PUB──> async-nats client
//!        ^                                             │ (stream set up on a topic's first use)
//!        └───────── PubAck futures ────────────────────┘
//!  each publish (or batch) future then awaits its PubAcks, in order, by one deadline
//! ```
//!
//! A batch ([`publish_batch`](crate::Producer::publish_batch)) is one job: the sender task hands
//! all its messages to the client before passing their ack futures back together, so a
//! batch costs one queue entry, one oneshot and one deadline however many messages it
//! holds.
//!
//! The sender task hands messages to the client one after another and does not wait for
//! acks, so up to [`MAX_ACKS_IN_FLIGHT`] publishes are pipelined on one producer; it is
//! also where a topic's stream is created on its first use, without letting later
//! messages overtake earlier ones. A `PubAck` with `duplicate` set (a `Nats-Msg-Id` seen
//! inside the stream's dedup window) resolves [`PublishOutcome::Duplicate`].
//!
//! A publish whose ack has not come back when the connection is lost resolves
//! [`PublishOutcome::Unknown`] at once: the server's answer to the old connection is gone
//! even if the message was stored.

use std::collections::HashSet;
use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, Subject};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::client::{self, Connection, Health};
use super::topology::Topology;
use crate::error::fmt_duration;
use crate::publish::{BatchPublisher, PublishOutcome, PublishRequest};

/// Publishes handed to the client whose `PubAck` has not arrived yet, per producer. Beyond
/// it the sender task waits for acks (backpressure). The library's default is 5,000.
const MAX_ACKS_IN_FLIGHT: usize = 16 * 1024;

/// Publishes queued for the sender task. When full, a publish waits (within its timeout).
const JOB_QUEUE_CAPACITY: usize = 4096;

/// A batch of publishes (one, for [`Producer::publish`](crate::Producer::publish)) on its
/// way to the sender task.
struct Job {
    requests: Vec<PublishRequest>,
    /// One [`Sent`] per request, in order; fewer when the batch's future gave up waiting
    /// (then the rest were not sent).
    reply: oneshot::Sender<Vec<Sent>>,
}

/// What the sender task did with one message of a job.
enum Sent {
    /// Handed to the client; the ack will come through this future. `disconnects` is the
    /// connection's count of lost connections at that moment.
    Queued {
        ack: PublishAckFuture,
        disconnects: u64,
    },
    /// Not sent, for this reason.
    Refused(PublishOutcome),
}

/// The [`BatchPublisher`] of a JetStream producer: one connection, one sender task.
pub(super) struct JetStreamPublisher {
    shared: Arc<Shared>,
}

/// What every publish future of a producer needs.
struct Shared {
    jobs: mpsc::Sender<Job>,
    health: watch::Receiver<Health>,
    url: Arc<str>,
    timeout: Duration,
    /// Told when the server says a topic's stream is gone.
    topology: Arc<Topology>,
}

impl JetStreamPublisher {
    /// Starts the sender task for `connection` on the current runtime; streams are set up
    /// through `topology`.
    pub(super) fn start(
        connection: Connection,
        topology: Arc<Topology>,
        timeout: Duration,
    ) -> Self {
        let js = jetstream::context::ContextBuilder::new()
            .timeout(timeout)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(connection.client.clone());
        let url: Arc<str> = topology.url().into();
        let (jobs, jobs_rx) = mpsc::channel(JOB_QUEUE_CAPACITY);
        tokio::spawn(send_loop(
            jobs_rx,
            js,
            topology.clone(),
            connection.health.clone(),
            url.clone(),
        ));
        JetStreamPublisher {
            shared: Arc::new(Shared {
                jobs,
                health: connection.health,
                url,
                timeout,
                topology,
            }),
        }
    }
}

impl BatchPublisher for JetStreamPublisher {
    /// The batch goes to the sender task as one job, which hands every message to the
    /// client before the acks are awaited, together, with one deadline for the batch.
    fn publish_all(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.publish_all(requests).await })
    }
}

impl Shared {
    /// Publishes `requests` as one job and collects their outcomes, in order, by one
    /// deadline: a message whose ack has not come by then, or whose connection was lost
    /// before it came, is unknown.
    async fn publish_all(&self, requests: Vec<PublishRequest>) -> Vec<PublishOutcome> {
        let deadline = Instant::now() + self.timeout;
        let count = requests.len();
        let topics: Vec<Arc<str>> = requests.iter().map(|r| r.topic.clone()).collect();
        let (reply, sent) = oneshot::channel();
        // `unconstrained`: with Tokio's cooperative budget spent, the queue would answer
        // "not now" at the first poll without taking a place in line, and a publish polled
        // later could overtake this one.
        let queued = tokio::task::unconstrained(tokio::time::timeout_at(
            deadline,
            self.jobs.send(Job { requests, reply }),
        ))
        .await;
        let refused = match queued {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(format!(
                "not sent: the producer's connection to jetstream at {} is closed",
                self.url
            )),
            Err(_) => Some(format!(
                "not sent: the producer's queue stayed full for {}",
                fmt_duration(self.timeout)
            )),
        };
        if let Some(reason) = refused {
            return vec![PublishOutcome::Failed(reason); count];
        }
        let late = tokio::time::sleep_until(deadline);
        tokio::pin!(late);
        let sent = tokio::select! {
            biased;
            sent = sent => sent.unwrap_or_default(),
            () = &mut late => Vec::new(),
        };
        // What the sender task did not report on (it stopped, or time ran out) may or may
        // not have been sent.
        let mut outcomes = vec![PublishOutcome::Unknown; count];
        let mut acks = Vec::with_capacity(sent.len());
        for (index, sent) in sent.into_iter().enumerate() {
            match sent {
                Sent::Queued { ack, disconnects } => {
                    acks.push((index, disconnects, ack.into_future()));
                }
                Sent::Refused(outcome) => outcomes[index] = outcome,
            }
        }
        // The acks in order, under the batch's one deadline. Acks come back in the order
        // the messages went out, so awaiting them in turn costs no extra wait.
        let mut health = self.health.clone();
        let mut timed_out = false;
        for (index, disconnects, mut ack) in acks {
            let result = if timed_out {
                ack.now_or_never()
            } else {
                tokio::select! {
                    biased;
                    result = &mut ack => Some(result),
                    // The connection was lost: the ack to the old one will never come
                    // (unless it already did).
                    _ = health.wait_for(|h| h.disconnects > disconnects) => ack.now_or_never(),
                    () = &mut late => {
                        timed_out = true;
                        ack.now_or_never()
                    }
                }
            };
            if let Some(result) = result {
                outcomes[index] = self.outcome(result, &topics[index]);
            }
        }
        outcomes
    }

    /// The outcome of a message whose ack future ended with `result`.
    fn outcome(&self, result: Result<PublishAck, PublishError>, topic: &str) -> PublishOutcome {
        match result {
            Ok(ack) if ack.duplicate => PublishOutcome::Duplicate,
            Ok(_) => PublishOutcome::Ok,
            Err(error) => match error.kind() {
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    PublishOutcome::Unknown
                }
                PublishErrorKind::StreamNotFound => {
                    // Lost in a restart: the next publish creates it again.
                    self.topology.stream_lost(topic);
                    PublishOutcome::Failed(format!(
                        "no stream at jetstream {} stores this subject (the server answered: no responders)",
                        self.url
                    ))
                }
                _ => PublishOutcome::Failed(format!(
                    "jetstream at {} refused it: {}",
                    self.url,
                    client::cause(&error)
                )),
            },
        }
    }
}

/// The sender task: sets up each topic's stream on first use, then hands messages to the
/// client in order and passes each ack future back, a job's all at once.
async fn send_loop(
    mut jobs: mpsc::Receiver<Job>,
    js: Context,
    topology: Arc<Topology>,
    health: watch::Receiver<Health>,
    url: Arc<str>,
) {
    let mut ready: HashSet<Arc<str>> = HashSet::new();
    let mut losses = topology.losses();
    while let Some(Job { requests, reply }) = jobs.recv().await {
        let mut sent = Vec::with_capacity(requests.len());
        for request in requests {
            if reply.is_closed() {
                break; // its publish timed out: the rest are not sent
            }
            if topology.losses() != losses {
                // A stream was lost (a restarted server): set each topic's up again.
                losses = topology.losses();
                ready.clear();
            }
            let topic = request.topic.clone();
            if !ready.contains(&topic) {
                match topology.stream(&topic, None).await {
                    Ok(_) => {
                        ready.insert(topic.clone());
                    }
                    Err(error) => {
                        sent.push(Sent::Refused(PublishOutcome::Failed(format!(
                            "not sent: {error}"
                        ))));
                        continue;
                    }
                }
            }
            sent.push(send(&js, request, &health, &url).await);
        }
        let _ = reply.send(sent);
    }
}

/// Hands one message to the client (waiting while [`MAX_ACKS_IN_FLIGHT`] acks are out).
async fn send(
    js: &Context,
    request: PublishRequest,
    health: &watch::Receiver<Health>,
    url: &str,
) -> Sent {
    let mut message = PublishMessage::build().payload(request.payload);
    if request.key.is_some() || request.id.is_some() {
        let mut headers = HeaderMap::new();
        if let Some(key) = request.key.as_deref() {
            if let Err(reason) = client::key_headers(&mut headers, key) {
                return Sent::Refused(PublishOutcome::Failed(format!("not sent: {reason}")));
            }
        }
        if let Some(id) = request.id.as_deref() {
            match id.parse::<async_nats::HeaderValue>() {
                Ok(value) => headers.insert(async_nats::header::NATS_MESSAGE_ID, value),
                Err(_) => {
                    return Sent::Refused(PublishOutcome::Failed(format!(
                        "not sent: the message id {id:?} cannot travel in a NATS header (it contains CR or LF)"
                    )));
                }
            }
        }
        message = message.headers(headers);
    }
    let disconnects = health.borrow().disconnects;
    match js
        .send_publish(Subject::from(&*request.topic), message)
        .await
    {
        Ok(ack) => Sent::Queued { ack, disconnects },
        Err(error) => Sent::Refused(PublishOutcome::Failed(match error.kind() {
            PublishErrorKind::MaxPayloadExceeded => format!(
                "not sent: the message is larger than jetstream at {url} accepts: {}",
                client::cause(&error)
            ),
            PublishErrorKind::TimedOut => format!(
                "not sent: the connection to jetstream at {url} took no message within the publish timeout (it is reconnecting, or its queue stayed full)"
            ),
            _ => format!("not sent: {}", client::cause(&error)),
        })),
    }
}
