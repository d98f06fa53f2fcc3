//! The way out: [`Outgoing`], where requests are staged (their pending entry queued for
//! the reader, their bytes appended) and written, and the writer task, which stages the
//! requests that came through the queue and writes whatever a publishing handle's own
//! write left over.

use std::io;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::{
    BatchOutcomes, ConnState, MAX_IN_FLIGHT, Pending, REQUESTS_PER_WRITE, Request,
    WRITE_BATCH_BYTES,
};
use crate::error::AdapterError;
use crate::net;
use crate::publish::{PublishOutcome, PublishRequest};
use crate::reference::codec;

/// The bytes on their way to the socket, and what keeps them in the order of the
/// reader's pending entries: under its lock a request's entry is queued and its bytes
/// appended in one step, and only the lock's holder writes, always from the front.
///
/// A publishing handle stages its publish (or batch) here and writes it itself, in the
/// caller's task: no hop through the writer task, whose wake-up (and the wake-ups of idle
/// runtime workers it set off) cost more per round trip than the rest of the client's
/// work. The writer task stages the other requests (and publishes that had to queue)
/// and finishes writes the socket could not take at once.
pub(super) struct Outgoing {
    /// Taken away by the writer task when it ends (every handle is gone).
    pub(super) link: Option<Link>,
    /// Staged bytes not yet written.
    pub(super) buf: Vec<u8>,
    /// Publishes handed to the writer task's queue and not yet staged. While there are
    /// any, later publishes queue behind them instead of overtaking them.
    pub(super) queued_publishes: usize,
}

/// Where staged requests go: the socket's write half, and the reader's FIFO of pending
/// entries, in the same order.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) wr: Arc<OwnedWriteHalf>,
    pub(super) pending: mpsc::Sender<Pending>,
}

/// What [`Outgoing::publish`] did with a publish.
pub(super) enum Staged {
    /// Staged, and written or left for the writer task. `true` when bytes were left.
    Sent { leftover: bool },
    /// Not staged: it must go through the writer task's queue (which now counts it).
    Queue(Request),
    /// The connection is closed; the request was dropped.
    Closed,
}

impl Outgoing {
    /// Stages a publish (or a batch of them) and writes what it can without waiting.
    pub(super) fn publish(&mut self, request: Request) -> Staged {
        let Some(link) = &self.link else {
            return Staged::Closed;
        };
        if self.queued_publishes > 0 {
            self.queued_publishes += 1;
            return Staged::Queue(request);
        }
        let permit = match link.pending.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Closed(())) => return Staged::Closed,
            Err(TrySendError::Full(())) => {
                // MAX_IN_FLIGHT unanswered: the writer task waits for room.
                self.queued_publishes += 1;
                return Staged::Queue(request);
            }
        };
        match encode(&mut self.buf, request) {
            Some(entry) => permit.send(entry),
            None => drop(permit),
        }
        match self.write_now() {
            Ok(done) => Staged::Sent { leftover: !done },
            // The writer task meets the same error on its next write and fails the
            // connection; the entry is queued, so the reader resolves the publish.
            Err(_) => Staged::Sent { leftover: true },
        }
    }

    /// Writes from the front of the buffer as much as the socket takes now; `true` when
    /// nothing is left.
    fn write_now(&mut self) -> io::Result<bool> {
        let Some(link) = &self.link else {
            return Ok(self.buf.is_empty());
        };
        while !self.buf.is_empty() {
            match link.wr.try_write(&self.buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if self.buf.capacity() > 4 * WRITE_BATCH_BYTES {
            // One huge message must not pin a huge buffer for the connection's life.
            self.buf.shrink_to(WRITE_BATCH_BYTES + 1024);
        }
        Ok(true)
    }
}

/// The writer task.
pub(super) struct Writer {
    pub(super) requests: mpsc::Receiver<Request>,
    /// Its own copy of [`Outgoing`]'s, to wait for the socket and for room in the
    /// reader's FIFO outside the lock, and to shut the socket down at the end.
    pub(super) link: Link,
    pub(super) state: Arc<ConnState>,
    /// Requests received and not yet staged.
    pub(super) inbox: Vec<Request>,
    /// Dropped when the writer ends, which tells the reader.
    pub(super) _alive: oneshot::Sender<()>,
}

impl Writer {
    pub(super) async fn run(mut self) {
        let outcome = self.pump().await;
        // Nothing is staged any more: a handle that comes after finds the connection closed.
        self.state.out.lock().link = None;
        let Writer {
            mut requests,
            link,
            state,
            mut inbox,
            ..
        } = self;
        match outcome {
            Ok(()) => {
                // Every handle is gone: say goodbye, the reader collects the last answers.
                // The write half is this task's alone now (handles only borrow it under
                // the lock, and the lock's copy is gone).
                if let Ok(mut wr) = Arc::try_unwrap(link.wr) {
                    let timeout = state.options.request_timeout;
                    let _ = tokio::time::timeout(timeout, wr.shutdown()).await;
                }
            }
            Err(error) => state.fail(error),
        }
        // Whatever is still queued was never sent.
        requests.close();
        let reason = state.reason();
        for request in inbox.drain(..) {
            request.fail(&reason);
        }
        while let Ok(request) = requests.try_recv() {
            request.fail(&reason);
        }
    }

    async fn pump(&mut self) -> Result<(), AdapterError> {
        loop {
            // Everything queued (up to a bound) in one receive, so the queue's lock is
            // taken once per write rather than once per request.
            let received = tokio::select! {
                biased;
                () = self.state.closed.cancelled() => return Err(self.state.reason()),
                n = self.requests.recv_many(&mut self.inbox, REQUESTS_PER_WRITE) => Some(n),
                // A handle's write left bytes the socket did not take.
                () = self.state.leftover.notified() => None,
            };
            if received == Some(0) {
                // Every handle is gone and the queue is empty.
                return self.flush().await;
            }
            // Oldest last, so that on an error what is left stays in the inbox, to be failed.
            self.inbox.reverse();
            while let Some(request) = self.inbox.pop() {
                self.stage(request).await?;
            }
            self.flush().await?;
        }
    }

    /// Stages one request from the queue, after waiting for room in the reader's FIFO
    /// if it is full.
    async fn stage(&mut self, request: Request) -> Result<(), AdapterError> {
        let publish = matches!(
            request,
            Request::Publish { .. } | Request::PublishBatch { .. }
        );
        let permit = match self.link.pending.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Closed(())) => return Err(self.state.reason()),
            Err(TrySendError::Full(())) => {
                // The broker must see what is buffered before it can answer and free slots.
                self.flush().await?;
                let timeout = self.state.options.request_timeout;
                tokio::select! {
                    biased;
                    () = self.state.closed.cancelled() => return Err(self.state.reason()),
                    reserved = tokio::time::timeout(timeout, self.link.pending.reserve()) => match reserved {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) => return Err(self.state.reason()),
                        Err(_) => {
                            return Err(AdapterError::timeout(
                                &format!(
                                    "{MAX_IN_FLIGHT} requests in flight to the reference broker at {}",
                                    self.state.url
                                ),
                                timeout,
                            ));
                        }
                    },
                }
            }
        };
        let full = {
            let mut out = self.state.out.lock();
            if publish {
                out.queued_publishes -= 1;
            }
            if let Some(entry) = encode(&mut out.buf, request) {
                permit.send(entry);
            }
            out.buf.len() >= WRITE_BATCH_BYTES
        };
        if full {
            self.flush().await?;
        }
        Ok(())
    }

    fn write_failed(&self, e: &io::Error) -> AdapterError {
        AdapterError::closed(format!(
            "writing to the reference broker at {} failed: {}",
            self.state.url,
            net::os_error(e)
        ))
    }

    /// Writes every staged byte, waiting for the socket as needed, within the request
    /// timeout.
    async fn flush(&self) -> Result<(), AdapterError> {
        let timeout = self.state.options.request_timeout;
        loop {
            let written = self.state.out.lock().write_now();
            match written {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(self.write_failed(&e)),
            }
            tokio::select! {
                biased;
                () = self.state.closed.cancelled() => return Err(self.state.reason()),
                ready = tokio::time::timeout(timeout, self.link.wr.writable()) => match ready {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(self.write_failed(&e)),
                    Err(_) => {
                        return Err(AdapterError::timeout(
                            &format!("writing to the reference broker at {}", self.state.url),
                            timeout,
                        ));
                    }
                },
            }
        }
    }
}

/// Encodes `request` into `buf` and returns the reader's entry for its answer, or
/// `None` when nothing was sent (its caller has been told why).
fn encode(buf: &mut Vec<u8>, request: Request) -> Option<Pending> {
    Some(match request {
        Request::Publish { request, reply } => match codec::encode_send(buf, &request) {
            Ok(()) => Pending::Publish(reply),
            Err(e) => {
                let _ = reply.send(PublishOutcome::Failed(e.to_string()));
                return None;
            }
        },
        Request::PublishBatch { requests, reply } => {
            Pending::PublishBatch(encode_batch(buf, &requests, reply)?)
        }
        Request::Subscribe { spec, route, reply } => {
            codec::encode_subscribe(buf, &spec.topic, spec.start, spec.ack);
            Pending::Subscribe {
                topic: spec.topic,
                route,
                reply,
            }
        }
        Request::Unsubscribe { topic, reply } => {
            codec::encode_unsubscribe(buf, &topic);
            Pending::Unsubscribe { topic, reply }
        }
        Request::Ack {
            topic,
            index,
            nack,
            rejected,
        } => {
            codec::encode_ack(buf, &topic, index, nack);
            Pending::Ack { rejected }
        }
        Request::Stats { reply } => {
            codec::encode_stats(buf);
            Pending::Stats(reply)
        }
    })
}

/// Encodes a batch of publishes; `None` when none could be (the outcomes are handed
/// over at once).
fn encode_batch(
    buf: &mut Vec<u8>,
    requests: &[PublishRequest],
    reply: oneshot::Sender<Vec<PublishOutcome>>,
) -> Option<BatchOutcomes> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut awaiting = 0;
    for request in requests {
        match codec::encode_send(buf, request) {
            Ok(()) => {
                outcomes.push(None);
                awaiting += 1;
            }
            Err(e) => outcomes.push(Some(PublishOutcome::Failed(e.to_string()))),
        }
    }
    let batch = BatchOutcomes {
        outcomes,
        next: 0,
        awaiting,
        reply: Some(reply),
    };
    // Nothing was sent: dropping the entry hands the failures over.
    (awaiting > 0).then_some(batch)
}
