//! Publishes in flight and their settling, for scheduled producers and receipt senders.
//!
//! A producer sends every message that is due together as one batch
//! ([`Producer::publish_batch`](brokerbench_adapters::Producer::publish_batch)), so what
//! is in flight is a queue of batches: one boxed future, one queue entry and one wake-up
//! per batch rather than per message. The in-flight limit still counts messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use brokerbench_adapters::PublishOutcome;
use brokerbench_results::{Recorder, SequenceSet};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::shared::{Clock, ProducerResult, ProgressCount, Shared};
use crate::schedule::Schedule;
use crate::timeline::{PublishEvent, Settle};

/// The broker's answer to one publish or to one batch.
pub(super) enum Pending {
    /// A single message.
    One(BoxFuture<'static, PublishOutcome>),
    /// A batch, answered in order.
    Many(BoxFuture<'static, Vec<PublishOutcome>>),
}

/// Outcomes of one entry of the queue, in sequence order.
pub(super) enum Outcomes {
    One(PublishOutcome),
    Many(Vec<PublishOutcome>),
}

impl Outcomes {
    /// The outcomes, in sequence order.
    pub(super) fn as_slice(&self) -> &[PublishOutcome] {
        match self {
            Outcomes::One(o) => std::slice::from_ref(o),
            Outcomes::Many(v) => v,
        }
    }
}

/// A settled entry: the first sequence of its messages, the first one's due time (ns
/// since the epoch), when they were sent, and how they went.
pub(super) struct Settled {
    pub(super) first_seq: u64,
    pub(super) first_due_ns: u64,
    pub(super) count: usize,
    pub(super) sent: Instant,
    pub(super) outcomes: Outcomes,
}

/// Messages `first_seq..first_seq + count` in flight. A named future, so the queue of
/// a producer and that of a receipt sender have one type.
pub(super) struct InFlight {
    first_seq: u64,
    first_due_ns: u64,
    count: usize,
    sent: Instant,
    pending: Pending,
}

impl Future for InFlight {
    type Output = Settled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        let this = &mut *self;
        let outcomes = match &mut this.pending {
            Pending::One(f) => match f.poll_unpin(cx) {
                Poll::Ready(o) => Outcomes::One(o),
                Poll::Pending => return Poll::Pending,
            },
            Pending::Many(f) => match f.poll_unpin(cx) {
                Poll::Ready(v) => Outcomes::Many(v),
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Settled {
            first_seq: this.first_seq,
            first_due_ns: this.first_due_ns,
            count: this.count,
            sent: this.sent,
            outcomes,
        })
    }
}

/// The publishes of one producer id (scheduled producer or receipt sender) that are in
/// flight, and the tally of those settled.
pub(super) struct Outbox {
    pub(super) in_flight: FuturesUnordered<InFlight>,
    /// Messages in flight (a batch counts each of its messages).
    pub(super) messages: usize,
    pub(super) result: ProducerResult,
    progress: ProgressCount,
    /// Due times of a batch's later messages come from the producer's schedule.
    schedule: Option<Schedule>,
}

impl Outbox {
    /// An empty outbox for producer `id`; `schedule` gives the due times of batched
    /// messages (a receipt sender publishes one at a time and has none).
    pub(super) fn new(id: u32, schedule: Option<Schedule>) -> Self {
        Self {
            in_flight: FuturesUnordered::new(),
            messages: 0,
            result: ProducerResult {
                id,
                confirmed: SequenceSet::new(),
                unconfirmed: SequenceSet::new(),
                events: None,
            },
            progress: ProgressCount::new(),
            schedule,
        }
    }

    /// Queues messages `first_seq..first_seq + count`, sent at `sent`, the first due at
    /// `first_due_ns`.
    pub(super) fn push(
        &mut self,
        first_seq: u64,
        first_due_ns: u64,
        count: usize,
        sent: Instant,
        pending: Pending,
    ) {
        self.messages += count;
        self.in_flight.push(InFlight {
            first_seq,
            first_due_ns,
            count,
            sent,
            pending,
        });
    }

    fn due_ns(&self, first_seq: u64, first_due_ns: u64, seq: u64) -> u64 {
        if seq == first_seq {
            return first_due_ns;
        }
        self.schedule
            .as_ref()
            .and_then(|s| s.due_ns(seq))
            .unwrap_or(first_due_ns)
    }

    /// Records the outcomes of one settled entry.
    pub(super) fn settle(
        &mut self,
        shared: &Shared,
        clock: &Clock,
        recorder: &mut Recorder,
        settled: Settled,
    ) {
        self.messages -= settled.count;
        let now = Instant::now();
        let mut confirmed = 0u64;
        for (i, outcome) in settled.outcomes.as_slice().iter().enumerate() {
            let seq = settled.first_seq + i as u64;
            let due_ns = self.due_ns(settled.first_seq, settled.first_due_ns, seq);
            let message = (seq, due_ns, settled.sent);
            if self.settle_one(shared, clock, recorder, now, message, outcome) {
                confirmed += 1;
            }
        }
        // The drain waits on this count: one update per entry, not per message.
        if confirmed > 0 {
            shared.producers[self.result.id as usize]
                .confirmed
                .fetch_add(confirmed, Ordering::Relaxed);
        }
    }

    /// Records the outcome of one publish: `(seq, due_ns, sent)`. True when it is a
    /// confirmed publish of the measured phase (the caller counts those).
    #[must_use]
    fn settle_one(
        &mut self,
        shared: &Shared,
        clock: &Clock,
        recorder: &mut Recorder,
        now: Instant,
        (seq, due_ns, sent): (u64, u64, Instant),
        outcome: &PublishOutcome,
    ) -> bool {
        let Some(intended) = due_ns.checked_sub(clock.warmup_ns) else {
            return false; // a warm-up message
        };
        let now_ns = clock.measured(now).unwrap_or(0);
        // A message is never sent before it is due, so `sent` is in the measured phase.
        let sent_ns = clock.measured(sent).unwrap_or(intended).max(intended);
        if let Some(events) = self.result.events.as_mut() {
            events.push(PublishEvent {
                producer: self.result.id,
                seq,
                intended_ns: intended,
                settled_ns: now_ns,
                outcome: match outcome {
                    PublishOutcome::Ok | PublishOutcome::Duplicate => Settle::Confirmed,
                    PublishOutcome::Failed(_) => Settle::Failed,
                    PublishOutcome::Unknown => Settle::Unknown,
                },
            });
        }
        match outcome {
            PublishOutcome::Ok | PublishOutcome::Duplicate => {
                recorder.record_publish_ok(now_ns, intended, sent_ns);
                let _ = self.result.confirmed.insert(seq);
                self.progress.add(&shared.live.published, now);
                return true;
            }
            PublishOutcome::Failed(_) => {
                recorder.record_publish_failed(now_ns, intended, sent_ns);
                let _ = self.result.unconfirmed.insert(seq);
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
            }
            PublishOutcome::Unknown => {
                recorder.record_publish_unknown(now_ns, intended, sent_ns);
                let _ = self.result.unconfirmed.insert(seq);
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        false
    }

    /// Waits for every publish still in flight, then hands back the tally.
    pub(super) async fn finish(
        mut self,
        shared: &Shared,
        clock: &Clock,
        recorder: &mut Recorder,
    ) -> ProducerResult {
        // Under faults a broker may never answer: what is still in flight at the drain
        // deadline counts as unknown, so the run ends on time.
        let give_up = shared.publish_deadline.map(|_| clock.deadline);
        loop {
            let next = match give_up {
                None => self.in_flight.next().await,
                Some(at) => match tokio::time::timeout_at(at.into(), self.in_flight.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let left: Vec<Settled> = std::mem::take(&mut self.in_flight)
                            .into_iter()
                            .map(|f| Settled {
                                first_seq: f.first_seq,
                                first_due_ns: f.first_due_ns,
                                count: f.count,
                                sent: f.sent,
                                outcomes: Outcomes::Many(vec![PublishOutcome::Unknown; f.count]),
                            })
                            .collect();
                        for unknown in left {
                            self.settle(shared, clock, recorder, unknown);
                        }
                        None
                    }
                },
            };
            let Some(done) = next else { break };
            self.settle(shared, clock, recorder, done);
        }
        self.progress.flush(&shared.live.published);
        self.result
    }
}
