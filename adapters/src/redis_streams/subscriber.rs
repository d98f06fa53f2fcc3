//! Subscriptions: a consumer group, a dedicated reading connection, and the task that
//! reads, reclaims and finally leaves.
//!
//! ```text
//! subscribe:   XGROUP CREATE <topic> <group> <$ | 0 | id> MKSTREAM      (ready on "OK")
//! read loop:   XREADGROUP GROUP <group> <consumer> COUNT n BLOCK 1000 [NOACK] STREAMS <topic> >
//! manual ack:  XACK <topic> <group> <id> ...                           (batched, control connection)
//! ack wait:    XAUTOCLAIM <topic> <group> <consumer> <ack-wait-ms> <cursor> COUNT 256
//!              XPENDING <topic> <group> <id> <id> 1                     (the delivery count)
//! nack:        XCLAIM <topic> <group> <consumer> 0 <id> ... IDLE <ack-wait-ms> JUSTID
//! leave:       XGROUP DESTROY <topic> <group>                           (fan-out)
//!              XGROUP DELCONSUMER <topic> <group> <consumer>            (competing)
//! ```
//!
//! **Groups.** Fan-out (`group == None`) gets a consumer group of its own, named like its
//! consumer (`bb-<pid>-<nonce>-<n>`); competing subscribers share the group they name.
//! `XGROUP CREATE` positions a new group atomically on the server: at `$` (the last entry
//! now) for `Latest`, at `0` for `Beginning`, at the entry id of the sequence for
//! `AfterSequence`. Every entry appended after the `OK` has a larger id and is delivered
//! to the group, however late its first read comes, so a subscription is ready as soon as
//! its group exists. (A plain `XREAD BLOCK $` loop would not be exact: entries appended
//! between two reads are missed unless each read continues from the last id seen.) A
//! competing subscriber whose group already exists (created by
//! [`prepare`](crate::Backend::prepare) or an earlier member) joins it where it stands:
//! the group's position is shared, so its own start position does not apply.
//!
//! **Reading.** Each subscription reads on its own connection, because a blocked
//! `XREADGROUP` holds up every later command on its connection until it returns (and the
//! redis crate's default 500 ms response timeout would cut it short; it is off here, our
//! own timeout is the block time plus the request timeout). The read blocks at most
//! [`READ_BLOCK`] on the server; when an unsubscribe, a drop or a nack needs the reader
//! sooner, the task sends `CLIENT UNBLOCK <id>` on the control connection, which makes
//! the server end the blocked read at once, empty, and then it still collects that read's
//! answer: nothing the server handed out is left behind.
//!
//! **Acks.** With [`AckMode::Auto`] the read uses `NOACK`: entries are not added to the
//! group's pending list, the cheapest at-most-once there is. With [`AckMode::Manual`]
//! entries stay pending until `XACK`, which a small per-subscription task sends in batches
//! on the control connection (so an ack resolves when queued, never waiting for a round
//! trip). Every ack-wait / 5 (100 ms to 1 s) the reader runs `XAUTOCLAIM` with the ack
//! wait as the minimum idle time: entries any member of the group left unacknowledged
//! that long (including its own, and those of members that went away) move to this
//! consumer and are delivered with `redelivered = true`. `XAUTOCLAIM` increments the
//! entry's delivery count; `XPENDING` then reads it, so `attempt` is the server's own
//! count (1 for a fresh read, 2 after one redelivery, ...).
//!
//! **Nack.** Redis has no nack. The equivalent here makes the entry immediately eligible
//! for redelivery by the normal path: `XCLAIM ... IDLE <ack wait> JUSTID` keeps it
//! pending but marks it as idle for the whole ack wait (`JUSTID` leaves the delivery count
//! alone), and the nacking subscription then runs `XAUTOCLAIM` at once. Whichever member
//! of the group claims first gets it (usually the nacking one, since it claims
//! immediately; the others within their next claim round), counted as a new attempt.
//!
//! **Leaving.** Unsubscribe stops the reader (as above), then removes the consumer: a
//! fan-out subscriber's group is destroyed; a competing member is deleted from its group
//! with `XGROUP DELCONSUMER`. A manual-ack member first flushes its queued acks; if it
//! still holds unacknowledged entries it is not deleted (that would silently drop them
//! from the pending list): they are released with `XCLAIM ... IDLE <ack wait>`, so the
//! remaining members claim and redeliver them within one claim round. Dropping a
//! [`Subscription`] does the same in the background.
//!
//! **Lost connections.** When the reading connection is lost, the subscription ends with
//! an error item and leaves as above (the control connection is dialled again if it was
//! lost too), so its unacknowledged entries go to the rest of the group at once; when the
//! server cannot be reached to release them, they stay pending and are claimed after the
//! ack wait. It does not resume reading on a new connection: entries handed out in
//! between would be missed or delivered twice without the subscriber knowing. A lost
//! control connection alone does not end a subscription: its acks, nacks and interrupts
//! go out on the new one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::{Cmd, Value, cmd};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::RedisBackend;
use super::entries::{self, Entry};
use super::link::{Control, Failure, Link, Role, request, request_pipe};
use crate::error::AdapterError;
use crate::subscription::{
    AckMode, AckToken, AckTokenRepr, Batch, Delivery, StartPosition, Subscription,
    SubscriptionControl, SubscriptionSpec,
};

/// Longest a read blocks on the server before it returns empty (`BLOCK`). Only matters
/// when the stream is idle: entries are handed to a blocked reader as soon as they are
/// appended. An idle subscription costs one round trip per this period.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// Most entries one read asks for (`COUNT`).
const MAX_READ_COUNT: usize = 1024;

/// Entries the first read asks for, before the entry size is known.
const FIRST_READ_COUNT: usize = 8;

/// About how many payload bytes one read may bring: the read count follows the size of
/// the entries seen (1024 entries of 200 bytes, 1 entry of 1 MiB), so one reply never
/// holds hundreds of megabytes.
const READ_BATCH_BYTES: usize = 1 << 20;

/// Entries one `XAUTOCLAIM` call may claim.
const CLAIM_COUNT: usize = 256;

/// `XAUTOCLAIM` calls per claim round at most; the rest waits for the next round.
const MAX_CLAIM_CALLS: usize = 16;

/// How often an interrupted read's `CLIENT UNBLOCK` is repeated, in case it reached the
/// server before the read did.
const UNBLOCK_RETRY: Duration = Duration::from_millis(25);

/// Capacity of the queue of acks and nacks waiting to be sent; when it is full, an ack
/// waits for room (bounded by the request timeout).
const ACK_QUEUE_CAPACITY: usize = 4096;

/// Most acks sent in one `XACK`.
const ACK_BATCH: usize = 1024;

/// Pending entries released per `XPENDING` / `XCLAIM` pair when a member leaves.
const RELEASE_PAGE: usize = 1000;

/// Claim rounds happen every ack wait divided by this (within the bounds below).
const CLAIM_ROUNDS_PER_ACK_WAIT: u32 = 5;
const MIN_CLAIM_INTERVAL: Duration = Duration::from_millis(100);
const MAX_CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// The group membership a subscription holds, shared by its reader and acker tasks.
struct Member {
    key: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
    /// A group of its own (destroyed on leaving) rather than a shared one.
    fan_out: bool,
    control: Control,
    url: Arc<str>,
    ack_wait: Duration,
}

impl Member {
    fn ack_wait_ms(&self) -> u64 {
        u64::try_from(self.ack_wait.as_millis()).unwrap_or(u64::MAX)
    }

    /// `XCLAIM <key> <group> <consumer> 0 <ids> IDLE <ack-wait> JUSTID`: keeps the entries
    /// pending for this consumer but makes them look idle for the whole ack wait, so the
    /// next `XAUTOCLAIM` of any member takes them; the delivery count is left alone.
    fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Cmd {
        let mut release = cmd("XCLAIM");
        release
            .arg(&*self.key)
            .arg(&*self.group)
            .arg(&*self.consumer)
            .arg(0);
        for id in ids {
            release.arg(id);
        }
        release.arg("IDLE").arg(self.ack_wait_ms()).arg("JUSTID");
        release
    }

    fn error(&self, what: &str, failure: Failure) -> AdapterError {
        failure.into_error(
            &format!("{what} on {} (group '{}')", self.key, self.group),
            &self.url,
        )
    }
}

/// Subscribes `spec` on `backend`; see the module documentation.
pub(super) async fn subscribe(
    backend: &RedisBackend,
    spec: SubscriptionSpec,
) -> Result<Subscription, AdapterError> {
    let url = backend.target.shown.clone();
    let consumer: Arc<str> = format!("{}-{}", backend.prefix, backend.next_number()).into();
    let key = spec.topic.clone();
    let (group, fan_out): (Arc<str>, bool) = match &spec.group {
        Some(group) => (group.as_str().into(), false),
        None => (consumer.clone(), true),
    };
    let start = match spec.start {
        StartPosition::Latest => "$".to_owned(),
        StartPosition::Beginning => "0".to_owned(),
        StartPosition::AfterSequence(sequence) => entries::id_of(sequence),
    };
    let link = Link::open(
        &backend.target,
        &backend.prefix,
        Role::Reader(&consumer),
        &backend.options,
    )
    .await?;
    let client_id = link.client_id.unwrap_or_default();
    backend.topics.touch(&key);
    let mut create = cmd("XGROUP");
    create
        .arg("CREATE")
        .arg(&*key)
        .arg(&*group)
        .arg(&start)
        .arg("MKSTREAM");
    // Sent again once if the control connection is lost on the way (see `Control`). A
    // fan-out group is named after this subscription alone, so `BUSYGROUP` in answer to
    // the second sending means the first one created it (at the position asked for).
    let created = match backend.control.raw_once(&create).await {
        Err(Failure::Lost(_)) => match backend.control.raw_once(&create).await {
            Err(failure) if fan_out && failure.is_code("BUSYGROUP") => Ok(Value::Okay),
            second => second,
        },
        first => first,
    };
    match created {
        Ok(_) => {}
        // The shared group exists already: join it where it stands.
        Err(failure) if !fan_out && failure.is_code("BUSYGROUP") => {}
        Err(failure) => {
            link.close();
            return Err(failure.into_error(
                &format!("subscribe to {key}: creating consumer group '{group}' at {start}"),
                &url,
            ));
        }
    }

    let manual = spec.ack == AckMode::Manual;
    let ack_wait = backend.ack_wait;
    let member = Arc::new(Member {
        key: key.clone(),
        group,
        consumer,
        fan_out,
        control: backend.control.clone(),
        url: url.clone(),
        ack_wait,
    });
    let claim_now = Arc::new(Notify::new());
    let rejected = Arc::new(AtomicU64::new(0));
    let ack_failure = Arc::new(Mutex::new(None));
    let acks = manual.then(|| {
        let (tx, rx) = mpsc::channel(ACK_QUEUE_CAPACITY);
        let acker = Acker {
            member: member.clone(),
            rx,
            rejected: rejected.clone(),
            failure: ack_failure.clone(),
            claim_now: claim_now.clone(),
        };
        tokio::spawn(acker.run());
        tx
    });
    let (stops, stops_rx) = mpsc::channel(1);
    let control = RedisControl {
        topic: key.clone(),
        stops,
        acks: acks.clone(),
        rejected,
        ack_failure,
        timeout: backend.options.request_timeout,
    };
    let (tx, subscription) = Subscription::channel(&spec, Box::new(control));
    let claim_interval =
        (ack_wait / CLAIM_ROUNDS_PER_ACK_WAIT).clamp(MIN_CLAIM_INTERVAL, MAX_CLAIM_INTERVAL);
    let reader = Reader {
        member,
        link,
        client_id,
        manual,
        tx: Some(tx),
        stops: stops_rx,
        claim_now,
        acks,
        count: FIRST_READ_COUNT,
        claim_interval,
        next_claim: Instant::now() + claim_interval,
        request_timeout: backend.options.request_timeout,
    };
    tokio::spawn(reader.run());
    Ok(subscription)
}

/// An unsubscribe request: the answer goes back once the broker confirmed.
type Stop = oneshot::Sender<Result<(), AdapterError>>;

/// How the read loop ended.
enum End {
    Unsubscribe(Stop),
    /// The [`Subscription`] was dropped.
    Dropped,
    Failed(AdapterError),
}

/// What woke the read loop.
enum Event {
    Read(Result<Value, Failure>),
    Stop(Option<Stop>),
    ClaimNow,
}

/// The task that reads one subscription.
struct Reader {
    member: Arc<Member>,
    link: Link,
    client_id: i64,
    manual: bool,
    /// Taken (so the stream ends) once the loop is over.
    tx: Option<mpsc::Sender<Batch>>,
    stops: mpsc::Receiver<Stop>,
    /// Nacks wake the loop to claim at once.
    claim_now: Arc<Notify>,
    /// To flush queued acks before leaving (manual acks only).
    acks: Option<mpsc::Sender<AckRequest>>,
    /// `COUNT` of the next read.
    count: usize,
    claim_interval: Duration,
    next_claim: Instant,
    request_timeout: Duration,
}

impl Reader {
    async fn run(mut self) {
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
        loop {
            if self.manual && Instant::now() >= self.next_claim {
                match self.claim().await {
                    Ok(true) => {}
                    Ok(false) => return End::Dropped,
                    Err(error) => return End::Failed(error),
                }
            }
            let block = if self.manual {
                (self.next_claim.saturating_duration_since(Instant::now()))
                    .clamp(Duration::from_millis(1), READ_BLOCK)
            } else {
                READ_BLOCK
            };
            let read_cmd = self.read_cmd(block);
            let mut con = self.link.con.clone();
            let limit = block + self.request_timeout;
            let read = async move { request(&mut con, &read_cmd, limit).await };
            tokio::pin!(read);
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
                    self.interrupt(read.as_mut()).await
                }
                Event::Stop(stop) => {
                    // What the interrupted read still brought was handed to this consumer:
                    // it belongs to the subscriber (or, if dropped, is as good as read).
                    let result = self.interrupt(read.as_mut()).await;
                    if result.is_ok() {
                        let _ = self.handle_read(result).await;
                    }
                    return match stop {
                        Some(stop) => End::Unsubscribe(stop),
                        None => End::Dropped,
                    };
                }
            };
            match self.handle_read(result).await {
                Ok(true) => {}
                Ok(false) => return End::Dropped,
                Err(error) => return End::Failed(error),
            }
        }
    }

    /// `XREADGROUP GROUP <group> <consumer> COUNT <n> BLOCK <ms> [NOACK] STREAMS <key> >`.
    fn read_cmd(&self, block: Duration) -> Cmd {
        let m = &self.member;
        let mut read = cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(&*m.group)
            .arg(&*m.consumer)
            .arg("COUNT")
            .arg(self.count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1).max(1));
        if !self.manual {
            read.arg("NOACK");
        }
        read.arg("STREAMS").arg(&*m.key).arg(">");
        read
    }

    /// Ends the blocked read now (`CLIENT UNBLOCK`, which the server answers as a timeout:
    /// an empty reply) and returns its result, within the request timeout.
    async fn interrupt(
        &self,
        mut read: Pin<&mut impl Future<Output = Result<Value, Failure>>>,
    ) -> Result<Value, Failure> {
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
    async fn handle_read(&mut self, result: Result<Value, Failure>) -> Result<bool, AdapterError> {
        let received_at = std::time::Instant::now();
        let value = result.map_err(|failure| self.read_error(failure))?;
        let entries = entries::parse_read(value).map_err(|e| self.garbled("XREADGROUP", &e))?;
        if entries.is_empty() {
            return Ok(self.tx.as_ref().is_some_and(|tx| !tx.is_closed()));
        }
        let bytes: usize = entries.iter().map(|e| e.payload.len() + 64).sum();
        self.count = (READ_BATCH_BYTES / (bytes / entries.len()).max(1)).clamp(1, MAX_READ_COUNT);
        let batch = entries
            .into_iter()
            .map(|entry| self.delivery(entry, received_at, false, Some(1)))
            .collect();
        Ok(self.send(Batch::Many(batch)).await)
    }

    /// One claim round: moves entries idle for the ack wait to this consumer and delivers
    /// them as redeliveries. `Ok(false)`: the subscription is gone.
    async fn claim(&mut self) -> Result<bool, AdapterError> {
        self.next_claim = Instant::now() + self.claim_interval;
        let m = self.member.clone();
        let mut con = self.link.con.clone();
        let mut cursor = String::from("0-0");
        for _ in 0..MAX_CLAIM_CALLS {
            let mut autoclaim = cmd("XAUTOCLAIM");
            autoclaim
                .arg(&*m.key)
                .arg(&*m.group)
                .arg(&*m.consumer)
                .arg(m.ack_wait_ms())
                .arg(&cursor)
                .arg("COUNT")
                .arg(CLAIM_COUNT);
            let value = request(&mut con, &autoclaim, self.request_timeout)
                .await
                .map_err(|failure| self.read_error(failure))?;
            let received_at = std::time::Instant::now();
            let claimed =
                entries::parse_autoclaim(value).map_err(|e| self.garbled("XAUTOCLAIM", &e))?;
            if !claimed.entries.is_empty() {
                // The delivery count, which XAUTOCLAIM just incremented.
                let mut pending = ::redis::pipe();
                for entry in &claimed.entries {
                    pending
                        .cmd("XPENDING")
                        .arg(&*m.key)
                        .arg(&*m.group)
                        .arg(&*entry.id)
                        .arg(&*entry.id)
                        .arg(1);
                }
                let counts = request_pipe(&mut con, &pending, self.request_timeout)
                    .await
                    .map_err(|failure| m.error("XPENDING", failure))?;
                let batch = claimed
                    .entries
                    .into_iter()
                    .zip(counts.iter().map(Some).chain(std::iter::repeat(None)))
                    .map(|(entry, count)| {
                        let attempt = count
                            .and_then(entries::parse_delivery_count)
                            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
                        self.delivery(entry, received_at, true, attempt)
                    })
                    .collect();
                if !self.send(Batch::Many(batch)).await {
                    return Ok(false);
                }
            }
            if claimed.cursor == "0-0" {
                break;
            }
            cursor = claimed.cursor;
        }
        Ok(true)
    }

    fn delivery(
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
    async fn send(&self, batch: Batch) -> bool {
        match &self.tx {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        }
    }

    fn read_error(&self, failure: Failure) -> AdapterError {
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

    fn garbled(&self, command: &str, why: &str) -> AdapterError {
        AdapterError::protocol(format!(
            "redis at {} answered {command} on {} with something unexpected: {why}",
            self.member.url, self.member.key
        ))
    }

    /// Removes this subscription's consumer from the broker; see the module documentation.
    async fn leave(&mut self) -> Result<(), AdapterError> {
        self.link.close();
        let m = self.member.clone();
        // Acks queued before the unsubscribe still count (and must not meet a group
        // that is already gone).
        if let Some(acks) = self.acks.take() {
            let (done, flushed) = oneshot::channel();
            let flush = async move {
                if acks.send(AckRequest::Flush(done)).await.is_ok() {
                    let _ = flushed.await;
                }
            };
            let _ = tokio::time::timeout(self.request_timeout, flush).await;
        }
        if m.fan_out {
            let mut destroy = cmd("XGROUP");
            destroy.arg("DESTROY").arg(&*m.key).arg(&*m.group);
            return match m.control.raw(&destroy).await {
                Ok(_) => Ok(()),
                Err(failure) if failure.is_gone() => Ok(()),
                Err(failure) => Err(m.error("unsubscribe: XGROUP DESTROY", failure)),
            };
        }
        if self.manual && self.release_pending().await? > 0 {
            // Deleting the consumer would drop its pending entries; they are released to
            // the other members instead, and the empty consumer stays until the stream is
            // deleted.
            return Ok(());
        }
        let mut delete = cmd("XGROUP");
        delete
            .arg("DELCONSUMER")
            .arg(&*m.key)
            .arg(&*m.group)
            .arg(&*m.consumer);
        match m.control.raw(&delete).await {
            Ok(_) => Ok(()),
            Err(failure) if failure.is_gone() => Ok(()),
            Err(failure) => Err(m.error("unsubscribe: XGROUP DELCONSUMER", failure)),
        }
    }

    /// Makes this consumer's pending entries claimable by the other members now. Returns
    /// how many there were.
    async fn release_pending(&self) -> Result<usize, AdapterError> {
        let m = &self.member;
        let mut start = String::from("-");
        let mut released = 0;
        loop {
            let mut pending = cmd("XPENDING");
            pending
                .arg(&*m.key)
                .arg(&*m.group)
                .arg(&start)
                .arg("+")
                .arg(RELEASE_PAGE)
                .arg(&*m.consumer);
            let value = match m.control.raw(&pending).await {
                Ok(value) => value,
                Err(failure) if failure.is_gone() => return Ok(released),
                Err(failure) => return Err(m.error("unsubscribe: XPENDING", failure)),
            };
            let ids =
                entries::parse_pending_ids(&value).map_err(|e| self.garbled("XPENDING", &e))?;
            let Some(last) = ids.last() else {
                break;
            };
            let release = m.release(ids.iter().map(String::as_str));
            match m.control.raw(&release).await {
                Ok(_) => {}
                Err(failure) if failure.is_gone() => return Ok(released),
                Err(failure) => return Err(m.error("unsubscribe: XCLAIM", failure)),
            }
            released += ids.len();
            if ids.len() < RELEASE_PAGE {
                break;
            }
            start = format!("({last}");
        }
        Ok(released)
    }
}

/// What the acker task sends.
enum AckRequest {
    Ack(Arc<str>),
    Nack(Arc<str>),
    /// Answered once everything queued before it was sent and answered.
    Flush(oneshot::Sender<()>),
}

/// The task that sends a manual-ack subscription's acks and nacks, in batches, on the
/// control connection.
struct Acker {
    member: Arc<Member>,
    rx: mpsc::Receiver<AckRequest>,
    rejected: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<AdapterError>>>,
    claim_now: Arc<Notify>,
}

impl Acker {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(ACK_BATCH);
        let mut ids: Vec<Arc<str>> = Vec::new();
        let mut nacking = false;
        while self.rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
            for request in batch.drain(..) {
                let (id, nack) = match request {
                    AckRequest::Ack(id) => (id, false),
                    AckRequest::Nack(id) => (id, true),
                    AckRequest::Flush(done) => {
                        self.send(&mut ids, nacking).await;
                        let _ = done.send(());
                        continue;
                    }
                };
                // Acks and nacks go out in the order they were made.
                if nack != nacking || ids.len() >= ACK_BATCH {
                    self.send(&mut ids, nacking).await;
                }
                nacking = nack;
                ids.push(id);
            }
            self.send(&mut ids, nacking).await;
        }
    }

    /// `XACK <key> <group> <ids>`, or the nack's `XCLAIM ... IDLE ... JUSTID`; counts the
    /// ids the server did not hold as pending (any more) as rejected.
    async fn send(&self, ids: &mut Vec<Arc<str>>, nack: bool) {
        if ids.is_empty() {
            return;
        }
        let m = &self.member;
        let command = if nack {
            m.release(ids.iter().map(|id| &**id))
        } else {
            let mut ack = cmd("XACK");
            ack.arg(&*m.key).arg(&*m.group);
            for id in ids.iter() {
                ack.arg(&**id);
            }
            ack
        };
        let sent = ids.len() as u64;
        // Sent again once if the control connection is lost on the way (see `Control`).
        // Whether the lost sending reached the server is unknown, so the ids the second
        // one finds no longer pending are not counted as rejected: the first may have
        // acknowledged them.
        let mut answer = m.control.raw_once(&command).await;
        let resent = matches!(answer, Err(Failure::Lost(_)));
        if resent {
            answer = m.control.raw_once(&command).await;
        }
        match answer {
            Ok(value) => {
                let done = match (&value, nack) {
                    (Value::Int(n), false) => u64::try_from(*n).unwrap_or(0),
                    (value, true) => entries::count_ids(value) as u64,
                    _ => 0,
                };
                if !resent {
                    self.rejected
                        .fetch_add(sent.saturating_sub(done), Ordering::Relaxed);
                }
                if nack {
                    self.claim_now.notify_one();
                }
            }
            Err(Failure::Server { .. }) => {
                self.rejected.fetch_add(sent, Ordering::Relaxed);
            }
            Err(failure) => {
                let what = if nack { "nack" } else { "ack" };
                let mut slot = self.failure.lock();
                if slot.is_none() {
                    *slot = Some(m.error(what, failure));
                }
            }
        }
        ids.clear();
    }
}

/// The [`SubscriptionControl`] of a Redis subscription.
struct RedisControl {
    topic: Arc<str>,
    stops: mpsc::Sender<Stop>,
    acks: Option<mpsc::Sender<AckRequest>>,
    rejected: Arc<AtomicU64>,
    /// Set when an ack or nack got no answer (the control connection was lost and could
    /// not be dialled again, or the request timed out); reported once, by the next ack or
    /// nack, which is then not queued. Later ones are sent as usual (on a new control
    /// connection if need be).
    ack_failure: Arc<Mutex<Option<AdapterError>>>,
    timeout: Duration,
}

impl RedisControl {
    /// Queues an ack or nack; resolves once queued.
    fn queue(
        &self,
        delivery: &Delivery,
        nack: bool,
    ) -> BoxFuture<'static, Result<(), AdapterError>> {
        let verb = if nack { "nack" } else { "ack" };
        let ready = |result| -> BoxFuture<'static, Result<(), AdapterError>> {
            Box::pin(std::future::ready(result))
        };
        let AckTokenRepr::StreamId(id) = &delivery.ack_token.0 else {
            return ready(Err(AdapterError::invalid_input(format!(
                "{verb} on {}: the delivery carries no stream entry id (it did not come from a manual-ack redis subscription)",
                self.topic
            ))));
        };
        let Some(acks) = &self.acks else {
            return ready(Err(AdapterError::unsupported(format!(
                "{verb} on {}: the subscription uses automatic acks",
                self.topic
            ))));
        };
        if let Some(error) = self.ack_failure.lock().take() {
            return ready(Err(error));
        }
        let request = if nack {
            AckRequest::Nack(id.clone())
        } else {
            AckRequest::Ack(id.clone())
        };
        let gone = move |topic: &str, id: &str| {
            AdapterError::closed(format!(
                "{verb} of {id} on {topic}: the subscription's acknowledger has stopped"
            ))
        };
        match acks.try_send(request) {
            Ok(()) => ready(Ok(())),
            Err(TrySendError::Closed(_)) => ready(Err(gone(&self.topic, id))),
            Err(TrySendError::Full(request)) => {
                let acks = acks.clone();
                let timeout = self.timeout;
                let topic = self.topic.clone();
                let id = id.clone();
                Box::pin(async move {
                    match tokio::time::timeout(timeout, acks.send(request)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(gone(&topic, &id)),
                        Err(_) => Err(AdapterError::timeout(
                            &format!("{verb} of {id} on {topic} (ack queue full)"),
                            timeout,
                        )),
                    }
                })
            }
        }
    }
}

impl SubscriptionControl for RedisControl {
    fn ack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.queue(delivery, false)
    }

    fn nack(&self, delivery: &Delivery) -> BoxFuture<'static, Result<(), AdapterError>> {
        self.queue(delivery, true)
    }

    fn unsubscribe(&self) -> BoxFuture<'static, Result<(), AdapterError>> {
        let stops = self.stops.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            let ended = || {
                AdapterError::closed(format!(
                    "unsubscribe from {topic}: the subscription had already ended"
                ))
            };
            let (stop, answer) = oneshot::channel();
            if stops.send(stop).await.is_err() {
                return Err(ended());
            }
            // The reader answers after bounded steps (each within the request timeout).
            answer.await.unwrap_or_else(|_| Err(ended()))
        })
    }

    fn rejected_acks(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}
