//! Consuming: a subscriber task reads its subscription, classifies and records each
//! delivery, acknowledges, answers with receipts, goes away and comes back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AdapterError, Backend, Delivery, StartPosition, Subscription, SubscriptionSpec,
};
use brokerbench_results::sequence::Delivery as SeqDelivery;
use brokerbench_results::{Recorder, SequenceTracker};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::receipts::Replier;
use super::shared::{ConsumerResult, Shared};
use crate::envelope::Envelope;
use crate::resilience::resubscribe_until;
use crate::timeline::{Arrival, DeliveryEvent};

/// Most deliveries a subscriber task takes in a row without looking at anything else.
const READY_RUN: usize = 256;

/// Adds a task's measured first deliveries to the drain's and the progress line's counts.
fn flush(shared: &Shared, topic: usize, unflushed: &mut u64) {
    let n = std::mem::take(unflushed);
    if n > 0 {
        shared.live.delivered_per_topic[topic].fetch_add(n, Ordering::Relaxed);
        shared.live.delivered.fetch_add(n, Ordering::Relaxed);
    }
}

/// A returning subscriber's time away: when it drops off and when it rejoins (after the
/// last message it saw), through `backend` with `spec`.
pub(super) struct Absence {
    pub(super) offline_after: Duration,
    pub(super) rejoin_after: Duration,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) spec: SubscriptionSpec,
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn next_delivery(
    subscription: &mut Option<Subscription>,
) -> Option<Result<Delivery, AdapterError>> {
    match subscription.as_mut() {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// What a subscriber task does besides reading its subscription.
#[derive(Default)]
pub(super) struct Role {
    /// Acknowledge every delivery.
    pub(super) ack: bool,
    /// Answers each measured first delivery with receipts.
    pub(super) replier: Option<Replier>,
    /// First sequence it is eligible for, per producer id (empty: all of them).
    pub(super) first_eligible: Vec<u64>,
    /// Goes away and comes back (a returning subscriber).
    pub(super) absence: Option<Absence>,
    /// How to subscribe again when the subscription ends under it (the broker restarted,
    /// the connection was cut).
    pub(super) resubscribe: Option<(Arc<dyn Backend>, SubscriptionSpec)>,
}

pub(super) async fn consume(
    shared: Arc<Shared>,
    topic: usize,
    subscription: Subscription,
    role: Role,
    mut recorder: Recorder,
    stop: CancellationToken,
) -> ConsumerResult {
    let Role {
        ack,
        mut replier,
        first_eligible,
        absence,
        resubscribe,
    } = role;
    // A returning subscriber's absence is timed on the run clock, which only starts once
    // every subscriber is ready: wait for it (nothing is published before it starts).
    if absence.is_some() {
        tokio::select! {
            _ = shared.started.cancelled() => {}
            _ = stop.cancelled() => {}
        }
    }
    let clock = shared.clock();
    let topic_name: Arc<str> = Arc::from(subscription.topic());
    let mut subscription = Some(subscription);
    let mut last_sequence: Option<i64> = None;
    let offline_at = absence.as_ref().map(|a| clock.epoch + a.offline_after);
    let mut gone_offline = false;
    let mut tracker = SequenceTracker::new();
    let mut result = ConsumerResult {
        topic,
        tracker: SequenceTracker::new(),
        first_eligible,
        replayed: 0,
        error: None,
        joined: true,
        receipts: None,
        events: Vec::new(),
        notes: Vec::new(),
    };
    let mut reestablished = 0u64;
    // Measured first deliveries not yet added to the shared counters.
    let mut unflushed = 0u64;
    // Deliveries taken in a row without the select below.
    let mut ready_run = 0usize;
    // Made once: a fresh `cancelled()` per delivery would register (and remove) a waker
    // under the token's lock each time, shared by every subscriber task.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let in_flight = replier
            .as_ref()
            .is_some_and(|r| !r.outbox.in_flight.is_empty());
        let goes_offline = !gone_offline && offline_at.is_some();
        // A delivery that is already there is taken at once; the select (and a flush of
        // the counts, which the drain waits on) only when there is none, or now and then
        // so a stop is seen under a flood.
        let ready = if in_flight || goes_offline || ready_run >= READY_RUN {
            None
        } else {
            next_delivery(&mut subscription).now_or_never()
        };
        let item = if let Some(item) = ready {
            ready_run += 1;
            item
        } else {
            ready_run = 0;
            flush(&shared, topic, &mut unflushed);
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                Some(done) = async { replier.as_mut()?.outbox.in_flight.next().await }, if in_flight => {
                    if let Some(r) = replier.as_mut() {
                        r.outbox.settle(&shared, &shared.clock(), &mut recorder, done);
                    }
                    continue;
                }
                _ = sleep_until_opt(offline_at), if goes_offline => {
                    gone_offline = true;
                    let Some(absence) = absence.as_ref() else { continue };
                    // Drop off (the connection closes), stay away, then come back after the
                    // last message seen so the broker replays only what was missed.
                    drop(subscription.take());
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until((clock.epoch + absence.rejoin_after).into()) => {}
                    }
                    let start = match last_sequence {
                        Some(seq) => StartPosition::AfterSequence(seq),
                        None => StartPosition::Beginning,
                    };
                    match absence.backend.subscribe(absence.spec.clone().start(start)).await {
                        Ok(s) => subscription = Some(s),
                        Err(err) => {
                            result.error = Some(format!(
                                "returning subscriber to {topic_name} could not rejoin: {err}"
                            ));
                            break;
                        }
                    }
                    continue;
                }
                item = next_delivery(&mut subscription) => item,
            }
        };
        let delivery = match item {
            Some(Ok(delivery)) => delivery,
            None if resubscribe.is_none() => break,
            ended => {
                let why = match ended {
                    Some(Err(err)) => err.to_string(),
                    _ => "the broker closed it".to_owned(),
                };
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
                drop(subscription.take());
                let again = match &resubscribe {
                    Some((backend, spec)) => resubscribe_until(backend, spec, &stop).await,
                    None => None,
                };
                match again {
                    Some((s, after)) => {
                        subscription = Some(s);
                        reestablished += 1;
                        if reestablished == 1 {
                            result.notes.push(format!(
                                "subscription to {topic_name} ended ({why}) and was re-established after {} ms",
                                after.as_millis()
                            ));
                        }
                        continue;
                    }
                    None => {
                        result.error = Some(format!(
                            "subscription to {topic_name} ended: {why}{}",
                            if resubscribe.is_some() {
                                "; it could not be re-established before the end of the run"
                            } else {
                                ""
                            }
                        ));
                        break;
                    }
                }
            }
        };
        if delivery.sequence.is_some() {
            last_sequence = delivery.sequence;
        }
        if ack {
            if let Some(s) = subscription.as_ref() {
                let _ = s.ack(&delivery).await;
            }
        }
        if let Some(sender) = handle_delivery(
            &shared,
            topic,
            &delivery,
            &mut tracker,
            &mut result,
            &mut recorder,
        ) {
            unflushed += 1;
            if let Some(r) = replier.as_mut() {
                for _ in 0..r.plan.count.max(1) {
                    r.send(&shared, sender, delivery.received_at, &mut recorder)
                        .await;
                }
            }
        }
    }
    flush(&shared, topic, &mut unflushed);
    if reestablished > 1 {
        result.notes.push(format!(
            "subscription to {topic_name} was re-established {reestablished} times in all"
        ));
    }
    if let Some(r) = replier {
        let receipts = r
            .outbox
            .finish(&shared, &shared.clock(), &mut recorder)
            .await;
        result.receipts = Some(receipts);
    }
    drop(subscription);
    let _ = recorder.finish().await;
    result.tracker = tracker;
    result
}

/// Classifies one delivery and records it. Returns the sender's producer id for a
/// measured first delivery, in order or not: the one that counts as delivered (the
/// caller adds it to the shared counts) and deserves a receipt.
pub(super) fn handle_delivery(
    shared: &Shared,
    topic: usize,
    delivery: &Delivery,
    tracker: &mut SequenceTracker,
    result: &mut ConsumerResult,
    recorder: &mut Recorder,
) -> Option<u32> {
    let clock = shared.clock();
    let now_ns = clock.measured(delivery.received_at).unwrap_or(0);
    let envelope = match Envelope::decode(&delivery.payload) {
        Ok(e) if e.run == shared.run_tag => e,
        _ => {
            recorder.record_phantom(now_ns);
            shared.live.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    let Some(info) = shared.producers.get(envelope.producer as usize) else {
        recorder.record_phantom(now_ns);
        return None;
    };
    // A message of a scheduled producer must arrive on that producer's topic; a receipt
    // on an inbox (the envelope does not say which producer it answers).
    let right_topic = match info.topic {
        Some(t) => t == topic,
        None => topic >= shared.scheduled_topics,
    };
    if !right_topic {
        recorder.record_phantom(now_ns);
        shared.live.errors.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let Some(intended) = envelope.intended_ns.checked_sub(clock.warmup_ns) else {
        return None; // warm-up traffic
    };
    if result
        .first_eligible
        .get(envelope.producer as usize)
        .is_some_and(|first| envelope.seq < *first)
    {
        result.replayed += 1;
        return None;
    }
    let sent = envelope
        .sent_ns
        .saturating_sub(clock.warmup_ns)
        .max(intended);
    let class = tracker.observe(u64::from(envelope.producer), envelope.seq);
    let late = delivery.received_at > clock.deadline;
    let arrival = match class {
        _ if late => Some(Arrival::Late),
        SeqDelivery::First => Some(Arrival::First),
        SeqDelivery::Reordered => Some(Arrival::Reordered),
        SeqDelivery::Duplicate => Some(Arrival::Duplicate),
        SeqDelivery::OutOfRange => None,
    };
    if let Some(arrival) = arrival.filter(|_| shared.record_timeline) {
        if topic < shared.scheduled_topics {
            result.events.push(DeliveryEvent {
                producer: envelope.producer,
                seq: envelope.seq,
                intended_ns: intended,
                received_ns: now_ns,
                arrival,
            });
        }
    }
    if late {
        recorder.record_late(now_ns);
        return None;
    }
    recorder.record_delivery(now_ns, intended, sent, class);
    match class {
        SeqDelivery::First | SeqDelivery::Reordered => Some(envelope.producer),
        _ => None,
    }
}
