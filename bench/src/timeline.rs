//! The samples a run with faults keeps besides its histograms: every measured publish's
//! outcome and every delivery, timed on the recorder clock (ns since the start of the
//! measured phase). They are the same events the recorders count; the figures of each
//! fault window ([`crate::fault_figures`]) are read from them, so nothing is measured
//! twice.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::Backend;
use tokio::sync::watch;

/// What a run with faults needs from the engine besides its plan.
#[derive(Clone)]
pub struct FaultHooks {
    /// Subscriptions (and receipt senders) connect through this backend instead of the
    /// run's, e.g. one connected through the subscribers' fault proxy.
    pub subscriber_backend: Option<Arc<dyn Backend>>,
    /// Told the instant the measured phase starts, once the clock starts: faults are
    /// timed from it.
    pub measure_start: watch::Sender<Option<Instant>>,
    /// A publish without an outcome after this long counts as unknown (a hung call never
    /// holds up the schedule's tally). The adapters' own publish timeout is shorter.
    pub publish_deadline: Duration,
}

impl fmt::Debug for FaultHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultHooks")
            .field("subscriber_backend", &self.subscriber_backend.is_some())
            .field("publish_deadline", &self.publish_deadline)
            .finish_non_exhaustive()
    }
}

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Confirmed by the broker.
    Confirmed,
    /// Refused or failed.
    Failed,
    /// No answer in time.
    Unknown,
}

/// One measured publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishEvent {
    /// Producer id.
    pub producer: u32,
    /// Sequence number.
    pub seq: u64,
    /// When it was due, ns on the recorder clock.
    pub intended_ns: u64,
    /// When its outcome came, ns on the recorder clock.
    pub settled_ns: u64,
    /// The outcome.
    pub outcome: Settle,
}

/// How a delivery was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The subscriber's first copy, in order.
    First,
    /// The subscriber's first copy, after a later message of the same producer.
    Reordered,
    /// A copy the subscriber already had.
    Duplicate,
    /// After the drain deadline.
    Late,
}

/// One measured delivery to one subscriber.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryEvent {
    /// Producer id of the message.
    pub producer: u32,
    /// Its sequence number.
    pub seq: u64,
    /// When it was due, ns on the recorder clock.
    pub intended_ns: u64,
    /// When it arrived, ns on the recorder clock.
    pub received_ns: u64,
    /// How it was classified.
    pub arrival: Arrival,
}

/// Every measured publish and delivery of a run, with what the fault figures need to
/// know about the plan.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Publishes of the scheduled producers (receipts are left out).
    pub publishes: Vec<PublishEvent>,
    /// Deliveries of their messages.
    pub deliveries: Vec<DeliveryEvent>,
    /// Deliveries each message of a producer is due (its topic's start-time
    /// subscribers, or 1 for competing consumers), by producer id.
    pub fanout: Vec<u32>,
    /// The measured phase, ns.
    pub measured_ns: u64,
    /// The end of the drain, ns on the recorder clock: nothing is observed after it.
    pub observed_until_ns: u64,
}
