//! The writer task: drains queued requests into one buffer, queues each one's pending
//! entry for the reader, and writes the buffer with one call.

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
use crate::publish::PublishOutcome;
use crate::reference::codec;

/// The writer task.
pub(super) struct Writer {
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) pending: mpsc::Sender<Pending>,
    pub(super) io: WriterIo,
    /// Requests received and not yet staged.
    pub(super) inbox: Vec<Request>,
    /// Dropped when the writer ends, which tells the reader.
    pub(super) _alive: oneshot::Sender<()>,
}

/// The writer's socket and buffer, apart from its queues so both can be borrowed at once.
pub(super) struct WriterIo {
    pub(super) wr: OwnedWriteHalf,
    pub(super) buf: Vec<u8>,
    pub(super) state: Arc<ConnState>,
}

impl Writer {
    pub(super) async fn run(mut self) {
        match self.pump().await {
            Ok(()) => {
                // Every handle is gone: say goodbye, the reader collects the last answers.
                let timeout = self.io.state.options.request_timeout;
                let _ = tokio::time::timeout(timeout, self.io.wr.shutdown()).await;
            }
            Err(error) => self.io.state.fail(error),
        }
        // Whatever is still queued was never sent.
        self.requests.close();
        let reason = self.io.state.reason();
        for request in self.inbox.drain(..) {
            request.fail(&reason);
        }
        while let Ok(request) = self.requests.try_recv() {
            request.fail(&reason);
        }
    }

    async fn pump(&mut self) -> Result<(), AdapterError> {
        loop {
            // Everything queued (up to a bound) in one receive, so the queue's lock is
            // taken once per write rather than once per request.
            let received = tokio::select! {
                biased;
                () = self.io.state.closed.cancelled() => return Err(self.io.state.reason()),
                n = self.requests.recv_many(&mut self.inbox, REQUESTS_PER_WRITE) => n,
            };
            if received == 0 {
                return self.io.flush().await;
            }
            // Oldest last, so that on an error what is left stays in the inbox, to be failed.
            self.inbox.reverse();
            while let Some(request) = self.inbox.pop() {
                stage(&self.pending, &mut self.io, request).await?;
                if self.io.buf.len() >= WRITE_BATCH_BYTES {
                    self.io.flush().await?;
                }
            }
            self.io.flush().await?;
        }
    }
}

/// Encodes one request into the write buffer, after queueing its pending entry.
async fn stage(
    pending: &mpsc::Sender<Pending>,
    io: &mut WriterIo,
    request: Request,
) -> Result<(), AdapterError> {
    let permit = match pending.try_reserve() {
        Ok(permit) => permit,
        Err(TrySendError::Closed(())) => return Err(io.state.reason()),
        Err(TrySendError::Full(())) => {
            // The broker must see what is buffered before it can answer and free slots.
            io.flush().await?;
            let timeout = io.state.options.request_timeout;
            tokio::select! {
                biased;
                () = io.state.closed.cancelled() => return Err(io.state.reason()),
                reserved = tokio::time::timeout(timeout, pending.reserve()) => match reserved {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(io.state.reason()),
                    Err(_) => {
                        return Err(AdapterError::timeout(
                            &format!(
                                "{MAX_IN_FLIGHT} requests in flight to the reference broker at {}",
                                io.state.url
                            ),
                            timeout,
                        ));
                    }
                },
            }
        }
    };
    let buf = &mut io.buf;
    let entry = match request {
        Request::Publish { request, reply } => match codec::encode_send(buf, &request) {
            Ok(()) => Pending::Publish(reply),
            Err(e) => {
                let _ = reply.send(PublishOutcome::Failed(e.to_string()));
                return Ok(());
            }
        },
        Request::PublishBatch { requests, reply } => {
            let mut outcomes = Vec::with_capacity(requests.len());
            let mut awaiting = 0;
            for request in &requests {
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
            if awaiting == 0 {
                // Nothing was sent; dropping the entry hands the failures over.
                return Ok(());
            }
            Pending::PublishBatch(batch)
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
    };
    permit.send(entry);
    Ok(())
}

impl WriterIo {
    /// Writes the buffer, within the request timeout.
    async fn flush(&mut self) -> Result<(), AdapterError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let timeout = self.state.options.request_timeout;
        let result = tokio::select! {
            biased;
            () = self.state.closed.cancelled() => Err(self.state.reason()),
            written = tokio::time::timeout(timeout, self.wr.write_all(&self.buf)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(AdapterError::closed(format!(
                    "writing to the reference broker at {} failed: {}",
                    self.state.url,
                    net::os_error(&e)
                ))),
                Err(_) => Err(AdapterError::timeout(
                    &format!("writing to the reference broker at {}", self.state.url),
                    timeout,
                )),
            },
        };
        self.buf.clear();
        if self.buf.capacity() > 4 * WRITE_BATCH_BYTES {
            // One huge message must not pin a huge buffer for the connection's life.
            self.buf.shrink_to(WRITE_BATCH_BYTES + 1024);
        }
        result
    }
}
