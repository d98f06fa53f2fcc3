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
//! `READ_BLOCK` (1 s) on the server; when an unsubscribe, a drop or a nack needs the
//! reader sooner, the task sends `CLIENT UNBLOCK <id>` on the control connection, which
//! makes the server end the blocked read at once, empty, and then it still collects that
//! read's answer: nothing the server handed out is left behind. A read that brought
//! entries is followed at once by the next one, sent before those entries are decoded
//! and handed to the subscription (as one `Batch::Many`), so the server gathers the next
//! batch meanwhile; there is never more than one read ahead, on the same connection, so
//! the order holds. `COUNT` follows the entry size: up to 1024 entries or about 1 MiB.
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
//!
//! The rooms: this module (the group and the tasks of one subscription), [`reader`] (the
//! read loop), [`claim`] (redelivery after the ack wait), [`leave`] (unsubscribing),
//! [`acker`] (batched acks and nacks) and [`handle`] (what the [`Subscription`] holds).

mod acker;
mod claim;
mod handle;
mod leave;
mod reader;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ::redis::{Cmd, Value, cmd};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use self::acker::Acker;
use self::handle::RedisControl;
use self::reader::{FIRST_READ_COUNT, Reader};
use super::RedisBackend;
use super::entries;
use super::link::{self, Control, Failure, Role};
use super::wire::Wire;
use crate::error::AdapterError;
use crate::subscription::{AckMode, StartPosition, Subscription, SubscriptionSpec};

/// Capacity of the queue of acks and nacks waiting to be sent; when it is full, an ack
/// waits for room (bounded by the request timeout).
const ACK_QUEUE_CAPACITY: usize = 4096;

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
    let (stream, client_id) = link::open_stream(
        &backend.target,
        &backend.prefix,
        Role::Reader(&consumer),
        &backend.options,
    )
    .await?;
    let client_id = client_id.unwrap_or_default();
    let wire = Wire::start(stream);
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
            wire.end();
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
        wire,
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
