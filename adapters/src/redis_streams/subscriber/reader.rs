//! The read loop: `XREADGROUP ... BLOCK` on the subscription's own connection, deliveries
//! handed to the subscription in batches, `CLIENT UNBLOCK` when it must stop sooner.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::redis::{Value, cmd};
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::Member;
use super::acker::AckRequest;
use super::handle::Stop;
use crate::error::AdapterError;
use crate::redis_streams::entries::{self, Entry};
use crate::redis_streams::link::Failure;
use crate::redis_streams::resp::{self, Head, put_array, put_bulk, put_bulk_decimal};
use crate::redis_streams::wire::Wire;
use crate::subscription::{AckToken, AckTokenRepr, Batch, Delivery};

/// Longest a read blocks on the server before it returns empty (`BLOCK`). Only matters
/// when the stream is idle: entries are handed to a blocked reader as soon as they are
/// appended. An idle subscription costs one round trip per this period.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// Most entries one read asks for (`COUNT`).
const MAX_READ_COUNT: usize = 1024;

/// Entries the first read asks for, before the entry size is known.
pub(super) const FIRST_READ_COUNT: usize = 8;

/// About how many payload bytes one read may bring: the read count follows the size of
/// the entries seen (1024 entries of 200 bytes, 1 entry of 1 MiB), so one reply never
/// holds hundreds of megabytes.
const READ_BATCH_BYTES: usize = 1 << 20;

/// How often an interrupted read's `CLIENT UNBLOCK` is repeated, in case it reached the
/// server before the read did.
const UNBLOCK_RETRY: Duration = Duration::from_millis(25);

/// A read that timed out on the server: a nil array.
const NIL: &[u8] = b"*-1\r\n";

/// How the read loop ended.
enum End {
    Unsubscribe(Stop),
    /// The [`Subscription`](crate::Subscription) was dropped.
    Dropped,
    Failed(AdapterError),
}

/// One `XREADGROUP` on the reading connection, and its answer.
/// Its answer is the whole reply, as read (see [`Wire::request`]).
type Read = Pin<Box<dyn Future<Output = Result<Bytes, Failure>> + Send>>;

/// What woke the read loop.
enum Event {
    Read(Result<Bytes, Failure>),
    Stop(Option<Stop>),
    ClaimNow,
}

/// The task that reads one subscription.
pub(super) struct Reader {
    pub(super) member: Arc<Member>,
    /// The reading connection, spoken directly (the reads' replies are most of what a
    /// subscription receives).
    pub(super) wire: Arc<Wire>,
    pub(super) client_id: i64,
    pub(super) manual: bool,
    /// Taken (so the stream ends) once the loop is over.
    pub(super) tx: Option<mpsc::Sender<Batch>>,
    pub(super) stops: mpsc::Receiver<Stop>,
    /// Nacks wake the loop to claim at once.
    pub(super) claim_now: Arc<Notify>,
    /// To flush queued acks before leaving (manual acks only).
    pub(super) acks: Option<mpsc::Sender<AckRequest>>,
    /// `COUNT` of the next read.
    pub(super) count: usize,
    pub(super) claim_interval: Duration,
    pub(super) next_claim: Instant,
    pub(super) request_timeout: Duration,
}

impl Reader {
    pub(super) async fn run(mut self) {
        let end = self.pump().await;
        let stop = match end {
            End::Unsubscribe(stop) => Some(stop),
            End::Dropped => None,
            End::Failed(error) => {
                if let Some(tx) = &self.tx {
                    let _ = tx.send(Batch::Error(error)).await;
                }
                None
            }
        };
        // The stream ends here; leaving the group only concerns the broker.
        self.tx = None;
        let left = self.leave().await;
        if let Some(stop) = stop {
            let _ = stop.send(left);
        }
    }

    async fn pump(&mut self) -> End {
        // A read already sent, whose answer is still to come.
        let mut upcoming: Option<Read> = None;
        loop {
            let mut read = match upcoming.take() {
                Some(read) => read,
                None => {
                    if self.claim_due() {
                        match self.claim().await {
                            Ok(true) => {}
                            Ok(false) => return End::Dropped,
                            Err(error) => return End::Failed(error),
                        }
                    }
                    self.start_read()
                }
            };
            let event = tokio::select! {
                biased;
                stop = self.stops.recv() => Event::Stop(stop),
                () = self.claim_now.notified(), if self.manual => Event::ClaimNow,
                result = &mut read => Event::Read(result),
            };
            let result = match event {
                Event::Read(result) => result,
                Event::ClaimNow => {
                    self.next_claim = Instant::now();
                    self.interrupt(&mut read).await
                }
                Event::Stop(stop) => {
                    // What the interrupted read still brought was handed to this consumer:
                    // it belongs to the subscriber (or, if dropped, is as good as read).
                    let result = self.interrupt(&mut read).await;
                    let received_at = std::time::Instant::now();
                    if result.is_ok() {
                        let _ = self.handle_read(result, received_at).await;
                    }
                    return match stop {
                        Some(stop) => End::Unsubscribe(stop),
                        None => End::Dropped,
                    };
                }
            };
            let received_at = std::time::Instant::now();
            // Entries came: the next read goes out before these are decoded and handed
            // over, so the server gathers the next batch meanwhile (one read ahead, on
            // the same connection, so in order). Not when a claim round is due first, and
            // not for a subscription already dropped: entries read for nobody would be
            // lost to the rest of a competing group.
            if matches!(&result, Ok(reply) if &reply[..] != NIL)
                && !self.claim_due()
                && self.is_open()
            {
                upcoming = Some(self.send_read().await);
            }
            match self.handle_read(result, received_at).await {
                Ok(true) => {}
                Ok(false) => return End::Dropped,
                Err(error) => return End::Failed(error),
            }
        }
    }

    /// Whether the [`Subscription`](crate::Subscription) still takes deliveries.
    fn is_open(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Whether a claim round is due (manual acks only).
    fn claim_due(&self) -> bool {
        self.manual && Instant::now() >= self.next_claim
    }

    /// The next read, not sent yet: it goes out when first polled.
    fn start_read(&self) -> Read {
        let block = if self.manual {
            (self.next_claim.saturating_duration_since(Instant::now()))
                .clamp(Duration::from_millis(1), READ_BLOCK)
        } else {
            READ_BLOCK
        };
        let read_cmd = self.read_cmd(block);
        let wire = self.wire.clone();
        let limit = block + self.request_timeout;
        Box::pin(tokio::task::unconstrained(async move {
            let replies = wire
                .request(1, |out| out.extend_from_slice(&read_cmd))
                .map_err(Failure::Lost)?;
            match tokio::time::timeout(limit, replies).await {
                Ok(Ok(Ok(mut replies))) => {
                    let reply = replies.pop().unwrap_or_default();
                    match resp::frame(&reply) {
                        Ok(Some(frame)) => match frame.head {
                            Head::Error(line) => Err(crate::redis_streams::wire::refusal(line)),
                            Head::Value => Ok(reply),
                        },
                        _ => Err(Failure::Lost("an unreadable reply".to_owned())),
                    }
                }
                Ok(Ok(Err(why))) => Err(Failure::Lost(why)),
                Ok(Err(_)) => Err(Failure::Lost("the connection is closed".to_owned())),
                Err(_) => Err(Failure::Timeout(limit)),
            }
        }))
    }

    /// The next read, put on the connection's queue now.
    async fn send_read(&self) -> Read {
        let mut read = self.start_read();
        match futures::poll!(read.as_mut()) {
            Poll::Ready(result) => Box::pin(std::future::ready(result)),
            Poll::Pending => read,
        }
    }

    /// `XREADGROUP GROUP <group> <consumer> COUNT <n> BLOCK <ms> [NOACK] STREAMS <key> >`,
    /// encoded.
    fn read_cmd(&self, block: Duration) -> Vec<u8> {
        let m = &self.member;
        let mut out = Vec::with_capacity(128 + m.group.len() + m.consumer.len() + m.key.len());
        put_array(&mut out, if self.manual { 11 } else { 12 });
        put_bulk(&mut out, b"XREADGROUP");
        put_bulk(&mut out, b"GROUP");
        put_bulk(&mut out, m.group.as_bytes());
        put_bulk(&mut out, m.consumer.as_bytes());
        put_bulk(&mut out, b"COUNT");
        put_bulk_decimal(&mut out, self.count as u64);
        put_bulk(&mut out, b"BLOCK");
        put_bulk_decimal(
            &mut out,
            u64::try_from(block.as_millis()).unwrap_or(1).max(1),
        );
        if !self.manual {
            put_bulk(&mut out, b"NOACK");
        }
        put_bulk(&mut out, b"STREAMS");
        put_bulk(&mut out, m.key.as_bytes());
        put_bulk(&mut out, b">");
        out
    }

    /// One command on the reading connection, its reply as the redis crate's value
    /// (claims); an error reply is [`Failure::Server`].
    pub(super) async fn request(&self, cmd: ::redis::Cmd) -> Result<Value, Failure> {
        let mut pipe = ::redis::Pipeline::with_capacity(1);
        pipe.add_command(cmd);
        match self
            .wire
            .request_values(&pipe, self.request_timeout)
            .await?
            .pop()
        {
            Some(Value::ServerError(e)) => Err(Failure::from_server(&e)),
            Some(value) => Ok(value),
            None => Err(Failure::Lost("no reply".to_owned())),
        }
    }

    /// Ends the blocked read now (`CLIENT UNBLOCK`, which the server answers as a timeout:
    /// an empty reply) and returns its result, within the request timeout.
    async fn interrupt(&self, read: &mut Read) -> Result<Bytes, Failure> {
        let deadline = Instant::now() + self.request_timeout;
        let mut unblock = cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(self.client_id);
        loop {
            // Answered 0 if the read is not blocked (yet): then try again shortly. This
            // loop sends it again anyway, so no resending after a lost control connection
            // (and no dial may outlast the deadline).
            let _ = tokio::time::timeout_at(deadline, self.member.control.raw_once(&unblock)).await;
            match tokio::time::timeout(UNBLOCK_RETRY, read.as_mut()).await {
                Ok(result) => return result,
                Err(_) if Instant::now() >= deadline => {
                    return Err(Failure::Timeout(self.request_timeout));
                }
                Err(_) => {}
            }
        }
    }

    /// Delivers what a read brought. `Ok(false)`: the subscription is gone.
    async fn handle_read(
        &mut self,
        result: Result<Bytes, Failure>,
        received_at: std::time::Instant,
    ) -> Result<bool, AdapterError> {
        let value = result.map_err(|failure| self.read_error(failure))?;
        let entries =
            entries::parse_read_reply(&value).map_err(|e| self.garbled("XREADGROUP", &e))?;
        if entries.is_empty() {
            return Ok(self.is_open());
        }
        let bytes: usize = entries.iter().map(|e| e.payload.len() + 64).sum();
        self.count = (READ_BATCH_BYTES / (bytes / entries.len()).max(1)).clamp(1, MAX_READ_COUNT);
        let batch = entries
            .into_iter()
            .map(|entry| self.delivery(entry, received_at, false, Some(1)))
            .collect();
        Ok(self.send(Batch::Many(batch)).await)
    }

    pub(super) fn delivery(
        &self,
        entry: Entry,
        received_at: std::time::Instant,
        redelivered: bool,
        attempt: Option<u32>,
    ) -> Delivery {
        let sequence = entries::sequence_of(&entry.id);
        Delivery {
            topic: self.member.key.clone(),
            payload: entry.payload,
            key: entry.key,
            redelivered,
            attempt,
            sequence,
            received_at,
            ack_token: AckToken(if self.manual {
                AckTokenRepr::StreamId(entry.id)
            } else {
                AckTokenRepr::None
            }),
        }
    }

    /// Hands a batch to the subscription, waiting for room. `false`: it is gone.
    pub(super) async fn send(&self, batch: Batch) -> bool {
        match &self.tx {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        }
    }

    pub(super) fn read_error(&self, failure: Failure) -> AdapterError {
        let m = &self.member;
        match failure {
            Failure::Server { code, text } if code == "NOGROUP" => AdapterError::closed(format!(
                "the consumer group '{}' of {} on redis at {} no longer exists ({text}): the stream was deleted or the group destroyed",
                m.group, m.key, m.url
            )),
            Failure::Lost(why) => AdapterError::closed(format!(
                "lost the connection to redis at {} while reading {}: {why}",
                m.url, m.key
            )),
            other => m.error("reading", other),
        }
    }

    pub(super) fn garbled(&self, command: &str, why: &str) -> AdapterError {
        AdapterError::protocol(format!(
            "redis at {} answered {command} on {} with something unexpected: {why}",
            self.member.url, self.member.key
        ))
    }
}
