//! Producing: a producer task follows its open-loop schedule.
//!
//! Message `i` is due at a time fixed before the run (the [`Schedule`]); the task sleeps
//! on the [`Pacer`] until the next due time, then sends **every message due by then** as
//! one batch, so the cost of a wake-up, a boxed future and a queue entry is paid once per
//! batch. A message is never sent before it is due. When the task falls behind (a slow
//! broker, a full in-flight window) the messages keep their due times, so the delay is
//! measured from when each should have gone out (coordinated omission corrected).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brokerbench_adapters::{Backend, Producer, PublishRequest};
use brokerbench_results::Recorder;
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::outbox::{Outbox, Pending};
use super::shared::{ProducerResult, Shared};
use crate::envelope::{Envelope, HEADER_LEN};
use crate::pacer::Pacer;
use crate::plan::{ProducerPlan, RateSchedule};
use crate::resilience::{Reconnect, bounded, bounded_batch};
use crate::schedule::Schedule;

/// Most messages sent as one batch. Past this a producer that fell far behind sends in
/// several batches, so the first confirmations (and their latencies) are not held back
/// by the last.
const MAX_BATCH: usize = 256;

/// A batch holds at most this share of the in-flight window (`1/WINDOW_SHARE`), so a
/// producer whose window is full has several batches in flight and sends the next as
/// soon as the oldest is answered. One batch filling the window would drain the pipe:
/// nothing could go out until its last answer came back, and a round trip per window
/// would cap the rate far below the broker's (a plain client refills per reply).
const WINDOW_SHARE: usize = 4;

/// Publishes `plan`'s schedule; every request is a copy of `template` (topic, delivery,
/// cache) with its own payload and key.
#[allow(clippy::too_many_arguments)]
pub(super) async fn produce(
    shared: Arc<Shared>,
    id: u32,
    (backend, mut producer): (Arc<dyn Backend>, Producer),
    template: PublishRequest,
    plan: ProducerPlan,
    pacer: Arc<Pacer>,
    mut recorder: Recorder,
    stop: CancellationToken,
) -> ProducerResult {
    let info = &shared.producers[id as usize];
    let schedule = info.schedule.clone().unwrap_or_else(|| {
        Schedule::new(
            &RateSchedule::constant(0.0),
            Duration::ZERO,
            Duration::ZERO,
            1,
        )
    });
    let clock = shared.clock();
    let mut batcher = Batcher::new(&shared, id, template, &plan);
    let mut reconnect = Reconnect::new(backend);
    let mut outbox = Outbox::new(id, Some(schedule.clone()));
    if shared.record_timeline {
        outbox.result.events = Some(Vec::new());
    }
    let max_in_flight = shared.max_in_flight;
    let max_batch = (max_in_flight / WINDOW_SHARE).clamp(1, MAX_BATCH);
    let mut seq = 0u64;
    // Made once, not per wake-up: see `consume`.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    'schedule: while let Some(due_ns) = schedule.due_ns(seq) {
        let due = clock.epoch + Duration::from_nanos(due_ns);
        let sleep = pacer.sleep_until(due);
        tokio::pin!(sleep);
        let mut slept = false;
        loop {
            let full = outbox.messages >= max_in_flight;
            if slept && !full {
                break;
            }
            tokio::select! {
                biased;
                _ = &mut stopped => break 'schedule,
                Some(done) = outbox.in_flight.next(), if !outbox.in_flight.is_empty() => {
                    for outcome in done.outcomes.as_slice() {
                        reconnect.observe(done.sent, outcome);
                    }
                    outbox.settle(&shared, &clock, &mut recorder, done);
                }
                fresh = reconnect.next(), if reconnect.pending() => {
                    if let Some(fresh) = fresh {
                        producer = fresh;
                    }
                }
                _ = &mut sleep, if !slept => slept = true,
            }
        }
        // Every message due by now goes out together, as far as the window allows.
        let sent = Instant::now();
        let sent_ns = clock.since_epoch(sent);
        let room = (max_in_flight - outbox.messages).clamp(1, max_batch);
        // Each due time is read off the schedule once, here; the batch's envelopes use it.
        let mut dues = std::mem::take(&mut batcher.dues);
        dues.clear();
        dues.push(due_ns);
        while dues.len() < room {
            match schedule.due_ns(seq + dues.len() as u64) {
                Some(d) if d <= sent_ns => dues.push(d),
                _ => break,
            }
        }
        let count = dues.len();
        batcher.dues = dues;
        info.next_seq.store(seq + count as u64, Ordering::Release);
        let pending = if count == 1 {
            let request = batcher.one(seq, due_ns, sent_ns);
            Pending::One(bounded(producer.publish(request), shared.publish_deadline))
        } else {
            let requests = batcher.many(seq, sent_ns);
            Pending::Many(bounded_batch(
                producer.publish_batch(requests),
                count,
                shared.publish_deadline,
            ))
        };
        outbox.push(seq, due_ns, count, sent, pending);
        seq += count as u64;
    }
    let result = outbox.finish(&shared, &clock, &mut recorder).await;
    let _ = recorder.finish().await;
    result
}

/// Builds a producer's requests: an envelope padded to a size drawn from the plan, a key
/// drawn from the plan, the rest copied from the template.
struct Batcher<'a> {
    plan: &'a ProducerPlan,
    template: PublishRequest,
    run: u32,
    id: u32,
    rng: fastrand::Rng,
    /// Shared, so drawing a key for a message copies a pointer, not the string.
    keys: Vec<Arc<str>>,
    /// Due time (ns since the epoch) of each message of the batch being built.
    dues: Vec<u64>,
    /// End of each message of a batch in its buffer.
    ends: Vec<usize>,
}

impl<'a> Batcher<'a> {
    fn new(shared: &Shared, id: u32, template: PublishRequest, plan: &'a ProducerPlan) -> Self {
        let keys = plan
            .keys
            .as_ref()
            .map(|k| (0..k.count).map(|i| Arc::from(format!("k{i}"))).collect())
            .unwrap_or_default();
        Self {
            plan,
            template,
            run: shared.run_tag,
            id,
            rng: fastrand::Rng::new(),
            keys,
            dues: Vec::new(),
            ends: Vec::new(),
        }
    }

    fn envelope(&self, seq: u64, intended_ns: u64, sent_ns: u64) -> Envelope {
        Envelope {
            run: self.run,
            producer: self.id,
            seq,
            intended_ns,
            sent_ns,
        }
    }

    fn size(&mut self) -> usize {
        self.plan.size.sample(&mut self.rng).max(HEADER_LEN)
    }

    fn request(&mut self, payload: Bytes) -> PublishRequest {
        let mut request = self.template.clone();
        request.payload = payload;
        if let Some(k) = &self.plan.keys {
            request = request.key(self.keys[k.sample(&mut self.rng) as usize].clone());
        }
        request
    }

    /// The request of message `seq`, due at `due_ns`.
    fn one(&mut self, seq: u64, due_ns: u64, sent_ns: u64) -> PublishRequest {
        let size = self.size();
        let mut payload = Vec::with_capacity(size);
        self.envelope(seq, due_ns, sent_ns)
            .encode_into(size, &mut payload);
        self.request(Bytes::from(payload))
    }

    /// The requests of messages `first..`, one per due time in [`dues`](Self::dues);
    /// their payloads are slices of one buffer, so a batch costs one allocation for all.
    fn many(&mut self, first: u64, sent_ns: u64) -> Vec<PublishRequest> {
        let count = self.dues.len();
        self.ends.clear();
        let mut buffer = Vec::new();
        for i in 0..count {
            let size = self.size();
            if i == 0 {
                buffer.reserve(size * count);
            }
            self.envelope(first + i as u64, self.dues[i], sent_ns)
                .encode_into(size, &mut buffer);
            self.ends.push(buffer.len());
        }
        let buffer = Bytes::from(buffer);
        let mut requests = Vec::with_capacity(count);
        let mut start = 0;
        for i in 0..count {
            let end = self.ends[i];
            requests.push(self.request(buffer.slice(start..end)));
            start = end;
        }
        requests
    }
}
