//! The reader task: splits the broker's lines, hands pushes to subscriptions in batches
//! and resolves each answer with the oldest pending request.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use rustc_hash::FxHashMap;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{
    BatchOutcomes, ConnState, MAX_DELIVERY_BATCH, MAX_LINE_BYTES, PENDING_ENTRY_GRACE,
    PENDING_PER_TAKE, Pending, READ_BUFFER_SIZE,
};
use crate::error::{AdapterError, ErrorKind};
use crate::net;
use crate::publish::PublishOutcome;
use crate::reference::codec::{self, Reply, ServerLine};
use crate::subscription::{AckToken, AckTokenRepr, Batch, Delivery};

/// Where pushes for one subscribed topic go.
pub(super) struct Route {
    topic: Arc<str>,
    tx: mpsc::Sender<Batch>,
    /// Deliveries parsed but not yet handed over.
    batch: Vec<Delivery>,
}

impl Route {
    /// Hands the gathered deliveries to the subscription, waiting for room. Returns
    /// `false` if the subscription is gone.
    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return !self.tx.is_closed();
        }
        // Size the next batch like this one: small at low rates, full at high rates.
        let next = Vec::with_capacity(self.batch.len());
        let batch = std::mem::replace(&mut self.batch, next);
        self.tx.send(Batch::Many(batch)).await.is_ok()
    }
}

/// The reader task.
pub(super) struct Reader {
    pub(super) rd: OwnedReadHalf,
    pub(super) buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    pub(super) scanned: usize,
    pub(super) pending: mpsc::Receiver<Pending>,
    /// Entries taken off `pending` together, newest first (the next answer's is last).
    pub(super) taken: Vec<Pending>,
    /// When the lines being handled were read: every push of one read is received then.
    pub(super) read_at: std::time::Instant,
    /// The batch whose answers are arriving, once its first one did.
    pub(super) batch: Option<BatchOutcomes>,
    /// Looked up once per push: Fx-hashed, not SipHash (topics come from our own broker).
    pub(super) routes: FxHashMap<Arc<str>, Route>,
    pub(super) state: Arc<ConnState>,
}

impl Reader {
    pub(super) async fn run(mut self, mut writer_gone: oneshot::Receiver<()>) {
        let error = match self.pump(&mut writer_gone).await {
            Ok(()) => None,
            Err(error) => {
                self.state.fail(error);
                Some(self.state.reason())
            }
        };
        // Deliver what was parsed, then the error, so no stream just stops silently.
        for route in self.routes.values_mut() {
            if route.flush().await
                && let Some(error) = &error
            {
                let _ = route.tx.send(Batch::Error(error.clone())).await;
            }
        }
        // Dropping the pending entries resolves unanswered publishes as Unknown and
        // other requests as closed.
    }

    async fn pump(&mut self, writer_gone: &mut oneshot::Receiver<()>) -> Result<(), AdapterError> {
        // Set once the writer has ended (every handle dropped): wait for the answers to
        // what was written, up to the request timeout, then stop.
        let mut draining: Option<Instant> = None;
        loop {
            self.process_lines().await?;
            self.flush_routes().await;
            if draining.is_some()
                && self.pending.is_empty()
                && self.taken.is_empty()
                && self.batch.is_none()
            {
                return Ok(());
            }
            if self.buf.capacity() - self.buf.len() < READ_BUFFER_SIZE / 4 {
                self.buf.reserve(READ_BUFFER_SIZE);
            }
            let linger = async {
                match draining {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = self.state.closed.cancelled() => return Err(self.state.reason()),
                _ = &mut *writer_gone, if draining.is_none() => {
                    draining = Some(Instant::now() + self.state.options.request_timeout);
                }
                () = linger => return Ok(()),
                read = self.rd.read_buf(&mut self.buf) => match read {
                    Ok(0) if draining.is_some() => return Ok(()),
                    Ok(0) => {
                        // A cut line is what a slow-consumer disconnect usually leaves when
                        // the broker could not get its notice through; say so.
                        let cut = if self.buf.is_empty() {
                            String::new()
                        } else {
                            format!(" in the middle of a line ({} bytes unfinished)", self.buf.len())
                        };
                        return Err(AdapterError::closed(format!(
                            "the reference broker at {} closed the connection{cut}",
                            self.state.url
                        )));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(AdapterError::closed(format!(
                            "reading from the reference broker at {} failed: {}",
                            self.state.url,
                            net::os_error(&e)
                        )));
                    }
                },
            }
        }
    }

    /// Handles every complete line in the buffer. The complete lines are split off the
    /// buffer in one piece, so every payload of this read is a slice of one `Bytes`,
    /// and of no other read's.
    async fn process_lines(&mut self) -> Result<(), AdapterError> {
        let Some(last) = memchr::memrchr(b'\n', &self.buf[self.scanned..]) else {
            self.scanned = self.buf.len();
            if self.scanned > MAX_LINE_BYTES {
                return Err(AdapterError::protocol(format!(
                    "the reference broker at {} sent a line longer than {} MiB",
                    self.state.url,
                    MAX_LINE_BYTES >> 20
                )));
            }
            return Ok(());
        };
        let lines = self.buf.split_to(self.scanned + last + 1).freeze();
        self.read_at = std::time::Instant::now();
        // What is left is the start of a line: it holds no newline. On a subscribed
        // connection it moves to a buffer of its own, so the next read's payloads do not
        // share `lines`' reference count: the consumer drops this read's deliveries (on
        // whichever thread it runs) while this task counts the next read's, and one
        // shared count would move its cache line between the two threads for every
        // delivery. Replies keep no slice, so a connection without subscriptions reuses
        // its buffer (the next `reserve` reclaims it).
        if !self.routes.is_empty() {
            let mut rest = BytesMut::with_capacity(READ_BUFFER_SIZE.max(self.buf.len() * 2));
            rest.extend_from_slice(&self.buf);
            self.buf = rest;
        }
        self.scanned = self.buf.len();
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &lines) {
            let mut end = newline;
            if end > start && lines[end - 1] == b'\r' {
                end -= 1;
            }
            if end > start {
                self.handle_line(&lines, start..end).await?;
            }
            start = newline + 1;
        }
        Ok(())
    }

    /// Handles the line at `range` of `lines` (without its line end).
    async fn handle_line(
        &mut self,
        lines: &Bytes,
        range: std::ops::Range<usize>,
    ) -> Result<(), AdapterError> {
        let text = &lines[range];
        let decoded = codec::decode_line(text).map_err(|e| {
            AdapterError::protocol(format!(
                "the reference broker at {} sent an unexpected line: {e}: {}",
                self.state.url,
                snippet(text)
            ))
        })?;
        match decoded {
            ServerLine::Push(push) => {
                let Some(route) = self.routes.get_mut(&*push.topic) else {
                    // A push for a topic nobody here reads any more (its subscription was
                    // dropped while the connection lives on): nothing to deliver it to.
                    return Ok(());
                };
                let payload = match push.msg {
                    Cow::Borrowed(msg) => lines.slice_ref(msg.as_bytes()),
                    Cow::Owned(msg) => Bytes::from(msg),
                };
                route.batch.push(Delivery {
                    topic: route.topic.clone(),
                    payload,
                    key: push.key.map(Cow::into_owned),
                    redelivered: push.redelivered,
                    attempt: push.attempt,
                    sequence: push.index,
                    received_at: self.read_at,
                    ack_token: AckToken(match push.index {
                        Some(index) => AckTokenRepr::Index(index),
                        None => AckTokenRepr::None,
                    }),
                });
                if route.batch.len() >= MAX_DELIVERY_BATCH && !route.flush().await {
                    self.routes.remove(&*push.topic);
                }
                Ok(())
            }
            ServerLine::Reply(reply) => {
                if reply.is_slow_consumer() {
                    return Err(AdapterError::new(
                        ErrorKind::SlowConsumer,
                        format!(
                            "the reference broker at {} disconnected this subscriber: {} (it did not read fast enough)",
                            self.state.url,
                            codec::SLOW_CONSUMER_REASON
                        ),
                    ));
                }
                if let Some(batch) = &mut self.batch {
                    if batch.answer(publish_outcome(&reply)) {
                        self.batch = None;
                    }
                    return Ok(());
                }
                let entry = self.next_pending(text).await?;
                self.resolve(entry, &reply, text).await;
                Ok(())
            }
        }
    }

    /// The oldest unanswered request.
    async fn next_pending(&mut self, line: &[u8]) -> Result<Pending, AdapterError> {
        if self.taken.is_empty() {
            // Several at once, so the FIFO's lock is taken once per many answers.
            if self
                .pending
                .recv_many(&mut self.taken, PENDING_PER_TAKE)
                .now_or_never()
                .is_some()
            {
                self.taken.reverse();
            }
        }
        let entry = match self.taken.pop() {
            Some(entry) => Some(entry),
            None => tokio::time::timeout(PENDING_ENTRY_GRACE, self.pending.recv())
                .await
                .ok()
                .flatten(),
        };
        entry.ok_or_else(|| {
            AdapterError::protocol(format!(
                "the reference broker at {} answered a request that was never sent: {}",
                self.state.url,
                snippet(line)
            ))
        })
    }

    async fn resolve(&mut self, entry: Pending, reply: &Reply<'_>, line: &[u8]) {
        match entry {
            Pending::Publish(tx) => {
                let _ = tx.send(publish_outcome(reply));
            }
            Pending::PublishBatch(mut batch) => {
                if !batch.answer(publish_outcome(reply)) {
                    self.batch = Some(batch);
                }
            }
            Pending::Subscribe {
                topic,
                route,
                reply: tx,
            } => {
                let result = if !reply.success {
                    Err(AdapterError::rejected(format!(
                        "subscribe to {topic}: {}",
                        reply.reason_text()
                    )))
                } else if self.routes.contains_key(&topic) {
                    Err(AdapterError::invalid_input(format!(
                        "subscribe to {topic}: this connection is already subscribed to it"
                    )))
                } else {
                    // Two copies of the name, not the caller's `Arc`, which other
                    // connections read on other threads may share: the key is read by
                    // every push's lookup, the route's is cloned into every delivery and
                    // dropped in the consumer. Apart, the lookup does not read a line
                    // whose count another thread keeps changing.
                    self.routes.insert(
                        Arc::from(&*topic),
                        Route {
                            topic: Arc::from(&*topic),
                            tx: route,
                            batch: Vec::new(),
                        },
                    );
                    Ok(())
                };
                let _ = tx.send(result);
            }
            Pending::Unsubscribe { topic, reply: tx } => {
                let result = if reply.success {
                    // Pushes read before the confirmation still belong to the subscriber;
                    // then dropping the route ends its stream.
                    if let Some(mut route) = self.routes.remove(&topic) {
                        route.flush().await;
                    }
                    Ok(())
                } else {
                    Err(AdapterError::rejected(format!(
                        "unsubscribe from {topic}: {}",
                        reply.reason_text()
                    )))
                };
                let _ = tx.send(result);
            }
            Pending::Ack { rejected } => {
                if !reply.success {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Pending::Stats(tx) => {
                let result = if reply.success {
                    codec::decode_stats(line).map_err(|e| {
                        AdapterError::protocol(format!("stats: {e}: {}", snippet(line)))
                    })
                } else {
                    Err(AdapterError::rejected(format!(
                        "stats: {}",
                        reply.reason_text()
                    )))
                };
                let _ = tx.send(result);
            }
        }
    }

    /// Hands every gathered batch over; forgets routes whose subscription is gone.
    async fn flush_routes(&mut self) {
        let mut gone = Vec::new();
        for (topic, route) in &mut self.routes {
            if !route.flush().await {
                gone.push(topic.clone());
            }
        }
        for topic in gone {
            self.routes.remove(&topic);
        }
    }
}

/// What a reply to a `send` says about it.
fn publish_outcome(reply: &Reply<'_>) -> PublishOutcome {
    match (reply.success, reply.duplicate) {
        (true, false) => PublishOutcome::Ok,
        (true, true) => PublishOutcome::Duplicate,
        (false, _) => PublishOutcome::Failed(reply.reason_text().to_owned()),
    }
}

/// The start of a line, for error messages.
fn snippet(line: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]);
    if line.len() > MAX {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}
