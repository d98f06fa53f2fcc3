//! The checks' bodies, grouped by the guarantee they probe.

mod acks;
mod dedup;
mod delivery;
mod large;
mod order;
mod position;
mod reconnect;
mod retention;
mod slow;

use super::{Check, Ctx, Finding, Stop};

/// Runs the body of `check`.
pub(crate) async fn run(check: Check, ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    match check {
        Check::Fanout => delivery::fanout(ctx).await,
        Check::Compete => delivery::compete(ctx).await,
        Check::KeyOrder => order::key_order(ctx).await,
        Check::TotalOrder => order::total_order(ctx).await,
        Check::LateReplay => position::late_replay(ctx).await,
        Check::LiveOnly => position::live_only(ctx).await,
        Check::Unsubscribe => position::unsubscribe(ctx).await,
        Check::AckRedelivery => acks::ack_redelivery(ctx).await,
        Check::NackRequeue => acks::nack_requeue(ctx).await,
        Check::DeadLetter => acks::dead_letter(ctx).await,
        Check::Dedup => dedup::dedup(ctx).await,
        Check::SlowConsumer => slow::slow_consumer(ctx).await,
        Check::RetentionTrim => retention::retention_trim(ctx).await,
        Check::LargeMessage => large::large_message(ctx).await,
        Check::Reconnect => reconnect::reconnect(ctx).await,
    }
}

use std::sync::Arc;
use std::time::Instant;

use brokerbench_adapters::{DeliveryMode, Producer, PublishRequest, SubscriptionSpec};

use super::During;
use super::ledger::{Ledger, key_name};
use super::message::MessageId;
use super::reader::{Acking, Reader, wait_until};

/// `n` ready subscriptions of `spec`, each read by its own [`Reader`].
async fn readers(
    ctx: &Ctx<'_>,
    spec: &SubscriptionSpec,
    n: u32,
    acking: Acking,
) -> Result<Vec<Reader>, Stop> {
    let mut readers = Vec::with_capacity(n as usize);
    for i in 0..n {
        let sub = ctx.backend.subscribe(spec.clone()).await.during(&format!(
            "subscribing subscriber {} to {}",
            i + 1,
            spec.topic
        ))?;
        readers.push(Reader::spawn(sub, ctx.run, acking));
    }
    Ok(readers)
}

/// The publishing side of a check: one producer and the ledger of what it published.
struct Outbox {
    producer: Producer,
    ledger: Ledger,
}

impl Outbox {
    /// A producer of its own on the check's backend, and an empty ledger.
    async fn open(ctx: &Ctx<'_>) -> Result<Outbox, Stop> {
        let producer = ctx.backend.producer().await.during("creating a producer")?;
        Ok(Outbox {
            producer,
            ledger: ctx.ledger(),
        })
    }

    /// Publishes `n` messages of `size` bytes to `topic` with `mode`, message `i` keyed
    /// `key(i)`, up to `window` in flight; returns their ids once every publish resolved.
    async fn send_keyed(
        &mut self,
        topic: &Arc<str>,
        n: u32,
        (size, mode, window): (usize, DeliveryMode, usize),
        key: impl Fn(u32) -> Option<u16>,
    ) -> Vec<MessageId> {
        let messages = batch(&mut self.ledger, topic, n, size, mode, key);
        let ids = messages.iter().map(|(id, _)| *id).collect();
        self.ledger.publish(&self.producer, messages, window).await;
        ids
    }

    /// [`send_keyed`](Self::send_keyed) without keys.
    async fn send(
        &mut self,
        topic: &Arc<str>,
        n: u32,
        shape: (usize, DeliveryMode, usize),
    ) -> Vec<MessageId> {
        self.send_keyed(topic, n, shape, |_| None).await
    }

    /// Publishes `n` messages open loop at `rate` per second.
    async fn send_paced(
        &mut self,
        topic: &Arc<str>,
        n: u32,
        (size, mode): (usize, DeliveryMode),
        rate: f64,
    ) -> Vec<MessageId> {
        let messages = batch(&mut self.ledger, topic, n, size, mode, |_| None);
        let ids = messages.iter().map(|(id, _)| *id).collect();
        self.ledger
            .publish_paced(&self.producer, messages, rate)
            .await;
        ids
    }

    /// Publishes one message and insists that it is confirmed.
    async fn send_one(
        &mut self,
        topic: &Arc<str>,
        size: usize,
        mode: DeliveryMode,
    ) -> Result<MessageId, Stop> {
        let id = self.send(topic, 1, (size, mode, 1)).await[0];
        if self.ledger.is_confirmed(&id) {
            Ok(id)
        } else {
            Err(Stop::Broken(format!(
                "the message was not confirmed: {}",
                confirmed_text(&self.ledger)
            )))
        }
    }
}

/// `n` messages (of producer 0) to `topic` with `mode`, the key of message `i` being
/// `key(i)` (an index into the check's key set), recorded in `ledger` once published.
fn batch(
    ledger: &mut Ledger,
    topic: &Arc<str>,
    n: u32,
    size: usize,
    mode: DeliveryMode,
    key: impl Fn(u32) -> Option<u16>,
) -> Vec<(MessageId, PublishRequest)> {
    (0..n)
        .map(|i| {
            let k = key(i);
            let (id, payload) = ledger.message(0, k, size);
            let mut request = PublishRequest::new(topic.clone(), payload).delivery(mode);
            if let Some(k) = k {
                request = request.key(key_name(k));
            }
            (id, request)
        })
        .collect()
}

/// Waits until every reader has `want` distinct messages or `deadline` passes; true when
/// they all have.
async fn all_have(readers: &[Reader], want: usize, deadline: Instant) -> bool {
    wait_until(deadline, || readers.iter().all(|r| r.distinct() >= want)).await
}

/// Waits until the readers together have `want` distinct messages or `deadline` passes.
async fn together_have(readers: &[Reader], want: usize, deadline: Instant) -> bool {
    wait_until(deadline, || {
        let mut union = std::collections::HashSet::new();
        for r in readers {
            r.with_log(|log| union.extend(log.distinct.iter().copied()));
        }
        union.len() >= want
    })
    .await
}

/// Keeps listening for `settle` so that duplicates and strays show up before the count.
async fn settle(ctx: &Ctx<'_>) {
    tokio::time::sleep(ctx.params.settle).await;
}

/// `published`, `confirmed` from the ledger into `counts`.
fn volume(counts: &mut brokerbench_results::Counts, ledger: &Ledger) {
    counts.published = ledger.published();
    counts.confirmed = ledger.confirmed();
}

/// `n of m confirmed` with the refusals' reasons when some were refused: for reason lines.
fn confirmed_text(ledger: &Ledger) -> String {
    let mut text = format!("{} of {} confirmed", ledger.confirmed(), ledger.published());
    if let Some((reason, n)) = ledger.failures().first() {
        text.push_str(&format!(" ({n} refused: {reason})"));
    }
    text
}
