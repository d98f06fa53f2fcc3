//! The per-task recorder that producers and consumers call on their hot paths.
//!
//! Each task owns one [`Recorder`]: plain histograms and counters, no lock, no atomics.
//! Samples are bucketed into 1-second intervals of the run clock (nanoseconds since the
//! run epoch, passed in by the caller). When a task records into a newer interval, the
//! finished interval is handed to the [`Collector`](crate::Collector) as an owned
//! [`IntervalSnapshot`] with a non-blocking `try_send` on a bounded channel. If the
//! channel is full the snapshot waits in the recorder's backlog and is retried at the
//! next hand-off; [`Recorder::finish`] delivers whatever is left. Nothing is dropped
//! silently: a snapshot that cannot be delivered because the collector is gone is
//! counted and reported by `finish` as an error.
//!
//! # Which timestamp
//! Pass the time the event was *observed* (ack received, publish failed or timed out,
//! message delivered), read from the run's monotonic clock. Timestamps of one recorder
//! are expected not to go backwards; a sample older than the recorder's current
//! interval is counted in the current interval (a finished interval is never reopened
//! by the recorder).

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::histogram::LatencyHistogram;
use crate::sequence::Delivery;

/// Length of one interval in nanoseconds (1 s).
pub const INTERVAL_NS: u64 = 1_000_000_000;

/// Capacity of the snapshot channel from recorders to the collector. Each task sends at
/// most one snapshot per interval (1 s), so 1024 slots absorb about ten seconds of a
/// stalled collector with a hundred tasks before snapshots queue in the recorders'
/// backlogs (which never block and never drop).
pub const SNAPSHOT_CHANNEL_CAPACITY: usize = 1024;

/// The interval index of a run-clock timestamp (nanoseconds since the run epoch).
#[inline]
pub fn interval_of(ns: u64) -> u64 {
    ns / INTERVAL_NS
}

/// Creates the bounded channel that carries snapshots from recorders to the collector.
pub fn snapshot_channel() -> (
    mpsc::Sender<IntervalSnapshot>,
    mpsc::Receiver<IntervalSnapshot>,
) {
    mpsc::channel(SNAPSHOT_CHANNEL_CAPACITY)
}

/// Event counters of one interval (or of a whole run once merged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Publishes the broker confirmed within the timeout.
    pub published: u64,
    /// Publishes the broker rejected or that failed with an error.
    pub publish_failed: u64,
    /// Publishes whose outcome is unknown (no confirmation before the timeout).
    pub publish_unknown: u64,
    /// First deliveries of a message to this subscriber (in order or reordered).
    pub delivered: u64,
    /// Deliveries of a message this subscriber had already received.
    pub duplicated: u64,
    /// First deliveries that arrived after a higher sequence of the same producer.
    pub reordered: u64,
    /// Deliveries of messages never sent, meant for another subscriber, or corrupted.
    pub phantom: u64,
    /// Deliveries after the deadline or after unsubscribe (not counted as delivered).
    pub late: u64,
}

impl Counters {
    /// Publish attempts: confirmed + failed + unknown.
    pub fn attempted(&self) -> u64 {
        self.published + self.publish_failed + self.publish_unknown
    }

    /// Adds every counter of `other`.
    pub fn add(&mut self, other: &Counters) {
        self.published += other.published;
        self.publish_failed += other.publish_failed;
        self.publish_unknown += other.publish_unknown;
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.phantom += other.phantom;
        self.late += other.late;
    }

    fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// The five latency histograms brokerbench keeps, all in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySet {
    /// End-to-end latency from the intended send time (coordinated-omission corrected).
    pub e2e: LatencyHistogram,
    /// End-to-end latency from the actual send time (uncorrected).
    pub e2e_uncorrected: LatencyHistogram,
    /// Publish-ack latency from the intended send time.
    pub publish_ack: LatencyHistogram,
    /// Publish-ack latency from the actual send time (uncorrected).
    pub publish_ack_uncorrected: LatencyHistogram,
    /// Send delay: actual send time minus intended send time.
    pub send_delay: LatencyHistogram,
}

impl LatencySet {
    /// Adds every histogram of `other` to the matching one here.
    pub fn add(&mut self, other: &LatencySet) {
        self.e2e.add(&other.e2e);
        self.e2e_uncorrected.add(&other.e2e_uncorrected);
        self.publish_ack.add(&other.publish_ack);
        self.publish_ack_uncorrected
            .add(&other.publish_ack_uncorrected);
        self.send_delay.add(&other.send_delay);
    }
}

/// Raw samples a task keeps before it pays for a dense histogram: 16 KiB of values
/// against ~270 KiB of counts. A run with hundreds of lightly loaded connections (one task
/// each) would otherwise allocate, zero and merge hundreds of dense histograms a second.
pub const SPARSE_SAMPLES: usize = 2048;

/// The samples of one latency for one task and interval: raw values while few, a dense
/// histogram once there are [`SPARSE_SAMPLES`].
#[derive(Clone, Debug)]
enum Samples {
    Sparse(Vec<u64>),
    Dense(LatencyHistogram),
}

/// Histograms of one task for one interval, allocated on first use: a consumer never
/// pays for producer histograms and vice versa.
#[derive(Clone, Debug, Default)]
struct LazySet {
    e2e: Option<Samples>,
    e2e_uncorrected: Option<Samples>,
    publish_ack: Option<Samples>,
    publish_ack_uncorrected: Option<Samples>,
    send_delay: Option<Samples>,
}

#[inline]
fn record_into(slot: &mut Option<Samples>, ns: u64) {
    match slot.get_or_insert_with(|| Samples::Sparse(Vec::new())) {
        Samples::Dense(h) => h.record(ns),
        Samples::Sparse(values) => {
            values.push(ns);
            if values.len() >= SPARSE_SAMPLES {
                densify(slot);
            }
        }
    }
}

#[cold]
fn densify(slot: &mut Option<Samples>) {
    if let Some(Samples::Sparse(values)) = slot.take() {
        let mut h = LatencyHistogram::new();
        for v in values {
            h.record(v);
        }
        *slot = Some(Samples::Dense(h));
    }
}

fn add_into(target: &mut LatencyHistogram, source: Option<&Samples>) {
    match source {
        Some(Samples::Dense(h)) => target.add(h),
        Some(Samples::Sparse(values)) => {
            for &v in values {
                target.record(v);
            }
        }
        None => {}
    }
}

impl LazySet {
    fn is_empty(&self) -> bool {
        self.e2e.is_none()
            && self.e2e_uncorrected.is_none()
            && self.publish_ack.is_none()
            && self.publish_ack_uncorrected.is_none()
            && self.send_delay.is_none()
    }
}

/// What one task recorded during one interval; handed from a [`Recorder`] to the
/// [`Collector`](crate::Collector).
#[derive(Clone, Debug)]
pub struct IntervalSnapshot {
    interval: u64,
    histograms: LazySet,
    counters: Counters,
}

impl IntervalSnapshot {
    fn empty(interval: u64) -> Self {
        Self {
            interval,
            histograms: LazySet::default(),
            counters: Counters::default(),
        }
    }

    /// The interval index (seconds since the run epoch).
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The counters of this interval.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.counters.is_zero() && self.histograms.is_empty()
    }

    /// Adds this snapshot's histograms to `target`.
    pub fn add_latencies_to(&self, target: &mut LatencySet) {
        let h = &self.histograms;
        add_into(&mut target.e2e, h.e2e.as_ref());
        add_into(&mut target.e2e_uncorrected, h.e2e_uncorrected.as_ref());
        add_into(&mut target.publish_ack, h.publish_ack.as_ref());
        add_into(
            &mut target.publish_ack_uncorrected,
            h.publish_ack_uncorrected.as_ref(),
        );
        add_into(&mut target.send_delay, h.send_delay.as_ref());
    }
}

/// Why [`Recorder::finish`] could not deliver everything to the collector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// The collector's receiver was dropped before every snapshot was delivered.
    #[error(
        "collector is gone: {undelivered} interval snapshot(s) of this task were not delivered"
    )]
    CollectorGone {
        /// Number of snapshots that could not be delivered.
        undelivered: u64,
    },
}

/// What a recorder did with its snapshots, returned by [`Recorder::finish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Snapshots delivered to the collector.
    pub delivered: u64,
    /// Times a snapshot found the channel full and waited in the backlog.
    pub backlogged: u64,
}

/// The per-task recorder. Owned by one task; every `record_*` call is a few histogram
/// increments and never blocks.
#[derive(Debug)]
pub struct Recorder {
    current: IntervalSnapshot,
    /// End (exclusive) of the current interval in run-clock ns. Starts at 0 so the first
    /// sample opens its interval.
    current_end_ns: u64,
    sink: mpsc::Sender<IntervalSnapshot>,
    backlog: VecDeque<IntervalSnapshot>,
    stats: RecorderStats,
    undelivered: u64,
}

impl Recorder {
    /// A recorder that hands its snapshots to `sink` (see [`snapshot_channel`]).
    pub fn new(sink: mpsc::Sender<IntervalSnapshot>) -> Self {
        Self {
            current: IntervalSnapshot::empty(0),
            current_end_ns: 0,
            sink,
            backlog: VecDeque::new(),
            stats: RecorderStats::default(),
            undelivered: 0,
        }
    }

    /// Moves to the interval of `now_ns` if it is newer than the current one.
    #[inline]
    fn at(&mut self, now_ns: u64) -> &mut IntervalSnapshot {
        if now_ns >= self.current_end_ns {
            self.advance(now_ns);
        }
        &mut self.current
    }

    #[cold]
    #[inline(never)]
    fn advance(&mut self, now_ns: u64) {
        let interval = interval_of(now_ns);
        let finished = std::mem::replace(&mut self.current, IntervalSnapshot::empty(interval));
        self.current_end_ns = interval.saturating_add(1).saturating_mul(INTERVAL_NS);
        if !finished.is_empty() {
            self.backlog.push_back(finished);
        }
        self.flush_backlog();
    }

    /// Sends backlogged snapshots in order until the channel is full.
    fn flush_backlog(&mut self) {
        while let Some(snapshot) = self.backlog.pop_front() {
            match self.sink.try_send(snapshot) {
                Ok(()) => self.stats.delivered += 1,
                Err(mpsc::error::TrySendError::Full(snapshot)) => {
                    self.stats.backlogged += 1;
                    self.backlog.push_front(snapshot);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.undelivered += 1,
            }
        }
    }

    /// Hands off the current interval if `now_ns` is past it, without recording a
    /// sample. Call it from an idle task (e.g. on a timer) so the collector sees its
    /// intervals promptly; it is never needed for correctness.
    pub fn tick(&mut self, now_ns: u64) {
        self.at(now_ns);
    }

    /// A publish the broker confirmed at `now_ns`: records send delay, publish-ack latency
    /// from the intended send time and from the actual send time.
    #[inline]
    pub fn record_publish_ok(&mut self, now_ns: u64, intended_ns: u64, sent_ns: u64) {
        let s = self.at(now_ns);
        s.counters.published += 1;
        record_into(
            &mut s.histograms.send_delay,
            sent_ns.saturating_sub(intended_ns),
        );
        record_into(
            &mut s.histograms.publish_ack,
            now_ns.saturating_sub(intended_ns),
        );
        record_into(
            &mut s.histograms.publish_ack_uncorrected,
            now_ns.saturating_sub(sent_ns),
        );
    }

    /// A publish that failed (rejected or errored) at `now_ns`: counts it and records its
    /// send delay.
    #[inline]
    pub fn record_publish_failed(&mut self, now_ns: u64, intended_ns: u64, sent_ns: u64) {
        let s = self.at(now_ns);
        s.counters.publish_failed += 1;
        record_into(
            &mut s.histograms.send_delay,
            sent_ns.saturating_sub(intended_ns),
        );
    }

    /// A publish whose confirmation did not arrive before the timeout (outcome unknown),
    /// observed at `now_ns`: counts it and records its send delay.
    #[inline]
    pub fn record_publish_unknown(&mut self, now_ns: u64, intended_ns: u64, sent_ns: u64) {
        let s = self.at(now_ns);
        s.counters.publish_unknown += 1;
        record_into(
            &mut s.histograms.send_delay,
            sent_ns.saturating_sub(intended_ns),
        );
    }

    /// A delivery received at `now_ns`, classified by a
    /// [`SequenceTracker`](crate::SequenceTracker).
    ///
    /// - [`Delivery::First`]: counted as delivered; e2e latency recorded from the intended
    ///   send time and, uncorrected, from the actual send time.
    /// - [`Delivery::Reordered`]: as `First`, and counted as reordered.
    /// - [`Delivery::Duplicate`]: counted as duplicated only (no latency).
    /// - [`Delivery::OutOfRange`]: counted as phantom only.
    #[inline]
    pub fn record_delivery(
        &mut self,
        now_ns: u64,
        intended_ns: u64,
        sent_ns: u64,
        delivery: Delivery,
    ) {
        let s = self.at(now_ns);
        match delivery {
            Delivery::First | Delivery::Reordered => {
                s.counters.delivered += 1;
                if delivery == Delivery::Reordered {
                    s.counters.reordered += 1;
                }
                record_into(&mut s.histograms.e2e, now_ns.saturating_sub(intended_ns));
                record_into(
                    &mut s.histograms.e2e_uncorrected,
                    now_ns.saturating_sub(sent_ns),
                );
            }
            Delivery::Duplicate => s.counters.duplicated += 1,
            Delivery::OutOfRange => s.counters.phantom += 1,
        }
    }

    /// A phantom delivery at `now_ns`: never sent, meant for another subscriber, from
    /// another run, or corrupted.
    #[inline]
    pub fn record_phantom(&mut self, now_ns: u64) {
        self.at(now_ns).counters.phantom += 1;
    }

    /// A late delivery at `now_ns` (after the deadline or after unsubscribe). It is not
    /// counted as delivered and its latency is not recorded; observe it in the
    /// `SequenceTracker` anyway so it is not also counted as lost.
    #[inline]
    pub fn record_late(&mut self, now_ns: u64) {
        self.at(now_ns).counters.late += 1;
    }

    /// Hands off the current interval and every backlogged snapshot, waiting for channel
    /// space as needed. Call it once when the task ends.
    ///
    /// # Errors
    /// [`RecorderError::CollectorGone`] if the collector's receiver was dropped before
    /// every snapshot of this recorder was delivered.
    pub async fn finish(mut self) -> Result<RecorderStats, RecorderError> {
        let last = std::mem::replace(&mut self.current, IntervalSnapshot::empty(0));
        if !last.is_empty() {
            self.backlog.push_back(last);
        }
        while let Some(snapshot) = self.backlog.pop_front() {
            match self.sink.send(snapshot).await {
                Ok(()) => self.stats.delivered += 1,
                Err(_) => self.undelivered += 1,
            }
        }
        if self.undelivered > 0 {
            return Err(RecorderError::CollectorGone {
                undelivered: self.undelivered,
            });
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<IntervalSnapshot>) -> Vec<IntervalSnapshot> {
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s);
        }
        out
    }

    #[test]
    fn buckets_samples_by_interval_across_boundaries() {
        let (tx, mut rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        r.record_delivery(999_999_999, 0, 0, Delivery::First); // interval 0, last ns
        assert!(drain(&mut rx).is_empty(), "interval 0 still open");
        r.record_delivery(1_000_000_000, 0, 0, Delivery::First); // interval 1, first ns
        r.record_delivery(1_500_000_000, 0, 0, Delivery::Duplicate);
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].interval(), 0);
        assert_eq!(sent[0].counters().delivered, 1);
        // Skip intervals 2..4 entirely: no empty snapshots are sent for them.
        r.record_publish_ok(5_200_000_000, 5_000_000_000, 5_100_000_000);
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].interval(), 1);
        assert_eq!(sent[0].counters().delivered, 1);
        assert_eq!(sent[0].counters().duplicated, 1);
        // An older timestamp lands in the current interval (5).
        r.record_late(4_000_000_000);
        r.tick(6_000_000_000);
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].interval(), 5);
        assert_eq!(sent[0].counters().published, 1);
        assert_eq!(sent[0].counters().late, 1);
        let mut set = LatencySet::default();
        sent[0].add_latencies_to(&mut set);
        let send_delay = set.send_delay.max_ns().unwrap();
        assert!(set.send_delay.as_hdr().equivalent(send_delay, 100_000_000));
        assert_eq!(set.publish_ack.count(), 1);
        assert_eq!(set.e2e.count(), 0);
    }

    #[test]
    fn backlog_when_channel_full_then_finish_delivers_all() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut r = Recorder::new(tx);
        for i in 0..5u64 {
            r.record_phantom(i * INTERVAL_NS);
        }
        // Intervals 0..3 are finished; only one fits in the channel.
        assert_eq!(rx.try_recv().unwrap().interval(), 0);
        assert!(rx.try_recv().is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async move {
            let finisher = tokio::spawn(r.finish());
            let mut got = vec![0];
            while let Some(s) = rx.recv().await {
                got.push(s.interval());
            }
            let stats = finisher.await.unwrap().unwrap();
            assert_eq!(stats.delivered, 5);
            assert!(stats.backlogged >= 1);
            got
        });
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn finish_reports_undeliverable_snapshots() {
        let (tx, rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        r.record_phantom(0);
        drop(rx);
        // Interval 0 is handed off to a closed channel, interval 1 at finish.
        r.record_phantom(INTERVAL_NS);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(r.finish()).unwrap_err();
        assert!(matches!(
            err,
            RecorderError::CollectorGone { undelivered: 2 }
        ));
    }

    #[test]
    fn publish_outcomes_are_counted() {
        let (tx, mut rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        r.record_publish_ok(10, 0, 5);
        r.record_publish_failed(20, 0, 5);
        r.record_publish_unknown(30, 0, 5);
        r.tick(INTERVAL_NS);
        let s = rx.try_recv().unwrap();
        assert_eq!(s.counters().attempted(), 3);
        assert_eq!(s.counters().published, 1);
        assert_eq!(s.counters().publish_failed, 1);
        assert_eq!(s.counters().publish_unknown, 1);
        let mut set = LatencySet::default();
        s.add_latencies_to(&mut set);
        assert_eq!(set.send_delay.count(), 3);
        assert_eq!(set.publish_ack.value_at_quantile_ns(1.0), Some(10));
        assert_eq!(
            set.publish_ack_uncorrected.value_at_quantile_ns(1.0),
            Some(5)
        );
    }
}

#[cfg(test)]
mod sparse_tests {
    use super::*;

    /// Crossing from raw samples to a dense histogram loses nothing: the merged histogram
    /// equals one built directly from the same latencies.
    #[tokio::test]
    async fn sparse_and_dense_samples_merge_to_the_same_histogram() {
        let now = 999_999_999; // stays in interval 0
        let (tx, mut rx) = snapshot_channel();
        let mut small = Recorder::new(tx.clone());
        let mut large = Recorder::new(tx);
        let mut direct = LatencyHistogram::new();
        let n = SPARSE_SAMPLES as u64 * 2 + 7;
        for i in 0..n {
            let latency = 1_000 + i * 37;
            direct.record(latency);
            let recorder = if i % 100 == 0 { &mut small } else { &mut large };
            recorder.record_delivery(
                now,
                now - latency,
                now - latency,
                crate::sequence::Delivery::First,
            );
        }
        small.finish().await.unwrap();
        large.finish().await.unwrap();
        let mut merged = LatencySet::default();
        while let Ok(snapshot) = rx.try_recv() {
            snapshot.add_latencies_to(&mut merged);
        }
        assert_eq!(merged.e2e.count(), n);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.e2e.value_at_quantile_ns(q),
                direct.value_at_quantile_ns(q),
                "q={q}"
            );
        }
    }
}
