//! What every task of a run shares: the run clock, the producers' table, the live
//! counters, and what each task hands back when it ends.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brokerbench_results::{SequenceSet, SequenceTracker};
use tokio_util::sync::CancellationToken;

use crate::schedule::Schedule;
use crate::timeline::{DeliveryEvent, PublishEvent};

/// Tasks publish their counts for the progress display every this many events (and at
/// least every [`PROGRESS_EVERY`]).
const PROGRESS_BATCH: u64 = 256;
/// Longest a task keeps its progress counts to itself.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Counts a task has not yet added to the shared progress counters.
#[derive(Debug)]
pub(super) struct ProgressCount {
    pub(super) count: u64,
    pub(super) due: Instant,
}

impl ProgressCount {
    pub(super) fn new() -> Self {
        Self {
            count: 0,
            due: Instant::now() + PROGRESS_EVERY,
        }
    }

    /// Counts one event, publishing the tally every so often.
    pub(super) fn add(&mut self, shared: &AtomicU64, now: Instant) {
        self.count += 1;
        if self.count >= PROGRESS_BATCH || now >= self.due {
            self.flush(shared);
            self.due = now + PROGRESS_EVERY;
        }
    }

    pub(super) fn flush(&mut self, shared: &AtomicU64) {
        shared.fetch_add(std::mem::take(&mut self.count), Ordering::Relaxed);
    }
}

/// Who sent what: one entry per producer id.
#[derive(Debug)]
pub(super) struct ProducerInfo {
    /// Index of the topic it publishes to; `None` for receipt producers (any inbox).
    pub(super) topic: Option<usize>,
    /// Next sequence number it will use (read by late subscribers when they join).
    pub(super) next_seq: AtomicU64,
    /// Confirmed publishes of the measured phase.
    pub(super) confirmed: AtomicU64,
    /// The schedule, for attributing lost messages to intervals.
    pub(super) schedule: Option<Schedule>,
}

/// Counters for the progress display, shared by every task.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Measured first deliveries per topic, for the drain's completion check.
    pub(super) delivered_per_topic: Vec<AtomicU64>,
}

/// The run's clock: the epoch is the start of the warm-up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) epoch: Instant,
    pub(super) warmup_ns: u64,
    /// Deliveries after this are late.
    pub(super) deadline: Instant,
}

impl Clock {
    /// ns since the epoch.
    pub(super) fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// ns on the recorder clock (since the start of the measured phase); `None` during
    /// the warm-up.
    pub(super) fn measured(&self, at: Instant) -> Option<u64> {
        self.since_epoch(at).checked_sub(self.warmup_ns)
    }
}

/// Everything a task needs, shared.
pub(super) struct Shared {
    pub(super) run_tag: u32,
    pub(super) producers: Vec<ProducerInfo>,
    pub(super) live: Live,
    /// Set once when the clock starts; read lock-free on every delivery.
    pub(super) clock: OnceLock<Clock>,
    pub(super) max_in_flight: usize,
    /// Inbox topic per original producer id (receipts); empty when no receipts.
    pub(super) inboxes: Vec<Option<Arc<str>>>,
    /// Cancelled (that is, fired) once the clock has started.
    pub(super) started: CancellationToken,
    /// Topics of the plan; receipt inboxes come after them.
    pub(super) scheduled_topics: usize,
    /// Producer ids of each topic of the plan.
    pub(super) topic_producers: Vec<Vec<u32>>,
    /// Keep every measured publish and delivery (a run with faults).
    pub(super) record_timeline: bool,
    /// A publish without an outcome after this long counts as unknown.
    pub(super) publish_deadline: Option<Duration>,
}

impl Shared {
    pub(super) fn clock(&self) -> Clock {
        self.clock.get().copied().unwrap_or_else(|| Clock {
            epoch: Instant::now(),
            warmup_ns: 0,
            deadline: Instant::now() + Duration::from_secs(3600),
        })
    }
}

/// What a subscriber task hands back.
pub(super) struct ConsumerResult {
    pub(super) topic: usize,
    pub(super) tracker: SequenceTracker,
    /// First sequence it was eligible for, per producer id.
    pub(super) first_eligible: Vec<u64>,
    pub(super) replayed: u64,
    pub(super) error: Option<String>,
    pub(super) joined: bool,
    pub(super) receipts: Option<ProducerResult>,
    /// Its deliveries, for the timeline.
    pub(super) events: Vec<DeliveryEvent>,
    /// What happened to it on the way (re-established subscriptions).
    pub(super) notes: Vec<String>,
}

/// What a producer task hands back.
pub(super) struct ProducerResult {
    pub(super) id: u32,
    pub(super) confirmed: SequenceSet,
    /// Sequences whose outcome was failed or unknown (delivered anyway = recovered).
    pub(super) unconfirmed: SequenceSet,
    /// Its publishes, for the timeline (scheduled producers of a run with faults).
    pub(super) events: Option<Vec<PublishEvent>>,
}

/// The consumer group shared by the competing consumers of a `one` topic.
pub(super) fn group_name(topic: &str) -> String {
    format!("{topic}.workers")
}

/// A 32-bit tag of the run id, carried in every envelope.
pub(super) fn run_tag(run_id: &str) -> u32 {
    run_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
