//! Publishing to JetStream: a publish is confirmed by the stream's `PubAck`.
//!
//! ```text
//!  publish futures ──jobs (in first-poll order)──> sender task ──PUB──> async-nats client
//!        ^                                             │ (stream set up on a topic's first use)
//!        └───────── PubAck future ─────────────────────┘
//!  each publish future then awaits its own PubAck
//! ```
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
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, Subject};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::client::{self, Connection, Health};
use super::topology::Topology;
use crate::error::fmt_duration;
use crate::publish::{PublishOutcome, PublishRequest, Publisher};

/// Publishes handed to the client whose `PubAck` has not arrived yet, per producer. Beyond
/// it the sender task waits for acks (backpressure). The library's default is 5,000.
const MAX_ACKS_IN_FLIGHT: usize = 16 * 1024;

/// Publishes queued for the sender task. When full, a publish waits (within its timeout).
const JOB_QUEUE_CAPACITY: usize = 4096;

/// A publish on its way to the sender task.
struct Job {
    request: PublishRequest,
    reply: oneshot::Sender<Sent>,
}

/// What the sender task did with a job.
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

/// The [`Publisher`] of a JetStream producer: one connection, one sender task.
pub(super) struct JetStreamPublisher {
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
            jobs,
            health: connection.health,
            url,
            timeout,
            topology,
        }
    }
}

impl Publisher for JetStreamPublisher {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'static, PublishOutcome> {
        let jobs = self.jobs.clone();
        let mut health = self.health.clone();
        let url = self.url.clone();
        let timeout = self.timeout;
        let topology = self.topology.clone();
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            let topic = request.topic.clone();
            let (reply, sent) = oneshot::channel();
            // `unconstrained`: with Tokio's cooperative budget spent, the queue would answer
            // "not now" at the first poll without taking a place in line, and a publish
            // polled later could overtake this one.
            let queued = tokio::task::unconstrained(tokio::time::timeout_at(
                deadline,
                jobs.send(Job { request, reply }),
            ))
            .await;
            match queued {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return PublishOutcome::Failed(format!(
                        "not sent: the producer's connection to jetstream at {url} is closed"
                    ));
                }
                Err(_) => {
                    return PublishOutcome::Failed(format!(
                        "not sent: the producer's queue stayed full for {}",
                        fmt_duration(timeout)
                    ));
                }
            }
            let confirmed = async {
                let (ack, disconnects) = match sent.await {
                    Ok(Sent::Queued { ack, disconnects }) => (ack, disconnects),
                    Ok(Sent::Refused(outcome)) => return outcome,
                    // The sender task stopped before handling it.
                    Err(_) => return PublishOutcome::Unknown,
                };
                tokio::select! {
                    biased;
                    result = ack => match result {
                        Ok(ack) if ack.duplicate => PublishOutcome::Duplicate,
                        Ok(_) => PublishOutcome::Ok,
                        Err(error) => match error.kind() {
                            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                                PublishOutcome::Unknown
                            }
                            PublishErrorKind::StreamNotFound => {
                                // Lost in a restart: the next publish creates it again.
                                topology.stream_lost(&topic);
                                PublishOutcome::Failed(format!(
                                    "no stream at jetstream {url} stores this subject (the server answered: no responders)"
                                ))
                            }
                            _ => PublishOutcome::Failed(format!(
                                "jetstream at {url} refused it: {}",
                                client::cause(&error)
                            )),
                        },
                    },
                    // The connection was lost: the ack to the old one will never come.
                    _ = health.wait_for(|h| h.disconnects > disconnects) => PublishOutcome::Unknown,
                }
            };
            tokio::time::timeout_at(deadline, confirmed)
                .await
                .unwrap_or(PublishOutcome::Unknown)
        })
    }
}

/// The sender task: sets up each topic's stream on first use, then hands messages to the
/// client in order and passes each ack future back.
async fn send_loop(
    mut jobs: mpsc::Receiver<Job>,
    js: Context,
    topology: Arc<Topology>,
    health: watch::Receiver<Health>,
    url: Arc<str>,
) {
    let mut ready: HashSet<Arc<str>> = HashSet::new();
    let mut losses = topology.losses();
    while let Some(Job { request, reply }) = jobs.recv().await {
        if reply.is_closed() {
            continue; // its publish timed out waiting in the queue: not sent
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
                    let _ = reply.send(Sent::Refused(PublishOutcome::Failed(format!(
                        "not sent: {error}"
                    ))));
                    continue;
                }
            }
        }
        let _ = reply.send(send(&js, request, &health, &url).await);
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
