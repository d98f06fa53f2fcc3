//! The collector: merges every task's interval snapshots per interval and for the run.
//!
//! The collector is plain data, driven by one task: feed it snapshots with
//! [`Collector::ingest`] (or let [`Collector::collect`] drain the snapshot channel), add
//! what only the run controller knows — the offered schedule, losses found at the end,
//! broker CPU/RSS samples — and call [`Collector::finish`] for the figures of the run.
//!
//! # Interval semantics
//! Interval `k` covers `[k s, (k+1) s)` of the run clock. Latencies and counters belong
//! to the interval in which the task *observed* the event (see [`crate::recorder`]);
//! offered counts and losses belong to the interval the caller names (normally that of
//! the intended send time). An interval is **unavailable** when at least one publish of
//! it failed or timed out, or at least one delivery attributed to it was lost or late.
//!
//! # Memory
//! An interval stays open (full histograms) until the collector has seen a snapshot
//! [`SEAL_LAG_INTERVALS`] intervals newer; then it is *sealed*: its summaries are
//! computed and its histograms kept only in compressed V2 form (a few hundred bytes
//! each). A snapshot that arrives for a sealed interval reopens it, is merged, and the
//! interval is sealed again, so late snapshots are never lost; memory stays bounded for
//! runs of any length.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::histogram::HistogramError;
use crate::record::{
    AvailabilityFigures, ComputeFigures, CorrectnessFigures, EncodedHistograms,
    IntervalAvailability, IntervalCompute, IntervalFigures, LatencySummaries, RunFigures,
    VolumeFigures,
};
use crate::recorder::{Counters, IntervalSnapshot, LatencySet};

/// How many intervals behind the newest one an interval stays open before it is sealed.
/// Tasks hand an interval off when they first record into a later one, so a few
/// intervals of slack catch nearly every snapshot before sealing.
pub const SEAL_LAG_INTERVALS: u64 = 3;

/// Longest interval series a run may have (one week of 1-second intervals). An interval
/// index beyond it can only come from a wrong timestamp, and a dense series that long
/// would not fit in memory.
pub const MAX_INTERVALS: u64 = 7 * 24 * 3_600;

/// Why [`Collector::finish`] could not produce the figures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// A histogram could not be encoded, or a sealed one decoded.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    /// Something was recorded in an interval beyond [`MAX_INTERVALS`].
    #[error(
        "interval {index} is beyond the longest supported run ({MAX_INTERVALS} intervals): \
         a timestamp is not nanoseconds since the run epoch"
    )]
    IntervalOutOfRange {
        /// The offending interval index.
        index: u64,
    },
}

/// A run whose achieved publish rate is more than this fraction below the offered rate
/// is saturated (5 %).
pub const SATURATION_TOLERANCE: f64 = 0.05;

/// True when `achieved` falls more than [`SATURATION_TOLERANCE`] behind `offered`.
pub fn is_saturated(offered_rate: f64, achieved_rate: f64) -> bool {
    achieved_rate < offered_rate * (1.0 - SATURATION_TOLERANCE)
}

/// `numerator / denominator`, or `None` when nothing was attempted.
fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Publish availability: confirmed / attempted; `None` when nothing was attempted.
pub fn publish_availability(counters: &Counters) -> Option<f64> {
    ratio(counters.published, counters.attempted())
}

/// Delivery availability: delivered / (delivered + missing + late), where missing is the
/// lost deliveries plus those due for failed or unanswered publishes; `None` when no
/// delivery was due.
pub fn delivery_availability(delivered: u64, lost: u64, late: u64) -> Option<f64> {
    ratio(delivered, delivered + lost + late)
}

/// An interval is unavailable when a publish of it failed or timed out, or a delivery
/// attributed to it was lost or late.
fn is_unavailable(counters: &Counters, lost: u64) -> bool {
    counters.publish_failed + counters.publish_unknown > 0 || lost + counters.late > 0
}

/// The figures of one interval from what was counted in it: `offered` scheduled,
/// `lost` deliveries attributed to it. The one rule for the collector and for
/// [`merge`](crate::merge()), which sums its inputs' counts and applies it again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn interval_figures(
    index: u64,
    counters: &Counters,
    offered: u64,
    lost: u64,
    undelivered: u64,
    latency: LatencySummaries,
    histograms: EncodedHistograms,
    compute: IntervalCompute,
) -> IntervalFigures {
    IntervalFigures {
        index,
        latency,
        availability: IntervalAvailability {
            publish: publish_availability(counters),
            delivery: delivery_availability(counters.delivered, lost + undelivered, counters.late),
            unavailable: is_unavailable(counters, lost + undelivered),
        },
        volume: VolumeFigures::new(counters, counters, offered, 1.0),
        correctness: CorrectnessFigures {
            undelivered,
            ..CorrectnessFigures::new(counters, lost)
        },
        compute,
        histograms,
    }
}

/// The availability of a whole run from its total counts (shared with
/// [`merge`](crate::merge())).
pub(crate) fn run_availability(
    totals: &Counters,
    lost: u64,
    undelivered: u64,
    unavailable_intervals: u64,
) -> AvailabilityFigures {
    AvailabilityFigures {
        publish: publish_availability(totals),
        delivery: delivery_availability(totals.delivered, lost + undelivered, totals.late),
        unavailable_intervals,
    }
}

/// The summarised, compressed histograms of a sealed interval.
#[derive(Debug)]
struct Sealed {
    summaries: LatencySummaries,
    encoded: EncodedHistograms,
}

/// Everything known about one interval. Its histograms are either open (mergeable),
/// sealed (summarised and compressed), or absent (nothing recorded yet).
#[derive(Debug, Default)]
struct IntervalState {
    open: Option<Box<LatencySet>>,
    sealed: Option<Sealed>,
    counters: Counters,
    offered: u64,
    lost: u64,
    undelivered: u64,
    cpu_sum: f64,
    cpu_samples: u64,
    rss_sum: u128,
    rss_samples: u64,
}

impl IntervalState {
    /// The open histograms, reopening a sealed interval if needed.
    fn open(&mut self) -> Result<&mut LatencySet, HistogramError> {
        if self.open.is_none() {
            let set = match self.sealed.take() {
                None => LatencySet::default(),
                Some(sealed) => match sealed.encoded.decode(&sealed.summaries) {
                    Ok(set) => set,
                    Err(e) => {
                        self.sealed = Some(sealed);
                        return Err(e);
                    }
                },
            };
            self.open = Some(Box::new(set));
        }
        Ok(self.open.get_or_insert_with(Box::default))
    }

    fn seal(&mut self) -> Result<(), HistogramError> {
        if let Some(set) = &self.open {
            self.sealed = Some(Sealed {
                summaries: LatencySummaries::of(set),
                encoded: EncodedHistograms::encode(set)?,
            });
            self.open = None;
        }
        Ok(())
    }
}

/// Merges interval snapshots from every task, per interval and for the whole run.
#[derive(Debug, Default)]
pub struct Collector {
    run: LatencySet,
    intervals: BTreeMap<u64, IntervalState>,
    /// Every interval below this index is sealed.
    sealed_below: u64,
    reopened: u64,
    /// First error met while sealing; reported by `finish`.
    error: Option<HistogramError>,
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one task's snapshot into its interval and into the run.
    pub fn ingest(&mut self, snapshot: IntervalSnapshot) {
        let index = snapshot.interval();
        snapshot.add_latencies_to(&mut self.run);
        let sealed = index < self.sealed_below;
        let state = self.intervals.entry(index).or_default();
        state.counters.add(snapshot.counters());
        match state.open() {
            Ok(set) => snapshot.add_latencies_to(set),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        if sealed {
            self.reopened += 1;
            if let Err(e) = state.seal() {
                self.error.get_or_insert(e);
            }
        }
        self.seal_before(index.saturating_sub(SEAL_LAG_INTERVALS));
    }

    /// Seals every open interval below `limit`.
    fn seal_before(&mut self, limit: u64) {
        if limit <= self.sealed_below {
            return;
        }
        for (_, state) in self.intervals.range_mut(self.sealed_below..limit) {
            if let Err(e) = state.seal() {
                self.error.get_or_insert(e);
            }
        }
        self.sealed_below = limit;
    }

    /// Receives snapshots until every sender (every recorder) is gone.
    pub async fn collect(&mut self, receiver: &mut mpsc::Receiver<IntervalSnapshot>) {
        while let Some(snapshot) = receiver.recv().await {
            self.ingest(snapshot);
        }
    }

    /// Adds `count` messages to the offered schedule of `interval` (those whose intended
    /// send time falls in it).
    pub fn record_offered(&mut self, interval: u64, count: u64) {
        self.intervals.entry(interval).or_default().offered += count;
    }

    /// Adds `count` lost deliveries attributed to `interval` (normally the interval of
    /// the lost message's intended send time).
    pub fn record_lost(&mut self, interval: u64, count: u64) {
        self.intervals.entry(interval).or_default().lost += count;
    }

    /// Adds `count` deliveries attributed to `interval` that were due for a publish that
    /// failed or got no answer and never came (see `CorrectnessFigures::undelivered`).
    pub fn record_undelivered(&mut self, interval: u64, count: u64) {
        self.intervals.entry(interval).or_default().undelivered += count;
    }

    /// Records one broker resource sample for `interval`. Several samples in one
    /// interval are averaged. A non-finite or negative CPU figure is ignored.
    pub fn record_broker_sample(&mut self, interval: u64, cpu_percent: f64, rss_bytes: u64) {
        let state = self.intervals.entry(interval).or_default();
        if cpu_percent.is_finite() && cpu_percent >= 0.0 {
            state.cpu_sum += cpu_percent;
            state.cpu_samples += 1;
        }
        state.rss_sum += u128::from(rss_bytes);
        state.rss_samples += 1;
    }

    /// How many snapshots arrived after their interval was sealed (and were merged by
    /// reopening it). A diagnostic: nothing is lost either way.
    pub fn reopened_intervals(&self) -> u64 {
        self.reopened
    }

    /// The figures of the run. `measured` is the length of the measured phase; run-level
    /// rates are totals divided by it (0 when it is zero). The interval series is dense
    /// from interval 0 to the last interval that received anything.
    ///
    /// # Errors
    /// [`CollectorError::Histogram`] if a histogram could not be encoded (or a sealed one
    /// decoded); [`CollectorError::IntervalOutOfRange`] if an interval index is at or
    /// beyond [`MAX_INTERVALS`].
    pub fn finish(mut self, measured: Duration) -> Result<RunFigures, CollectorError> {
        if let Some(e) = self.error.take() {
            return Err(e.into());
        }
        let duration_s = measured.as_secs_f64();
        let last = self.intervals.keys().next_back().copied();
        if let Some(index) = last.filter(|&l| l >= MAX_INTERVALS) {
            return Err(CollectorError::IntervalOutOfRange { index });
        }
        let mut intervals = Vec::new();
        let mut totals = Counters::default();
        // What completed inside the measured phase: the basis of the achieved rates, so a
        // run whose publishes only complete in the drain shows as saturated.
        let mut in_phase = Counters::default();
        let measured_intervals = measured.as_secs() + u64::from(measured.subsec_nanos() > 0);
        let (mut offered, mut lost, mut undelivered) = (0u64, 0u64, 0u64);
        let mut unavailable_intervals = 0u64;
        let (mut cpu_sum, mut cpu_samples, mut cpu_max) = (0.0f64, 0u64, None::<f64>);
        let (mut rss_sum, mut rss_samples, mut rss_max) = (0u128, 0u64, None::<u64>);

        let empty_set = LatencySet::default();
        let empty = Sealed {
            summaries: LatencySummaries::of(&empty_set),
            encoded: EncodedHistograms::encode(&empty_set)?,
        };
        let no_state = IntervalState::default();
        for index in last.map_or(0..0, |l| 0..l.saturating_add(1)) {
            let mut owned = self.intervals.remove(&index);
            if let Some(state) = owned.as_mut() {
                state.seal()?;
            }
            let state = owned.as_ref().unwrap_or(&no_state);
            let sealed = state.sealed.as_ref().unwrap_or(&empty);
            let c = state.counters;
            totals.add(&c);
            if index < measured_intervals {
                in_phase.add(&c);
            }
            offered += state.offered;
            lost += state.lost;
            undelivered += state.undelivered;

            unavailable_intervals += u64::from(is_unavailable(&c, state.lost + state.undelivered));

            let cpu = (state.cpu_samples > 0).then(|| state.cpu_sum / state.cpu_samples as f64);
            let rss = (state.rss_samples > 0).then(|| {
                u64::try_from(state.rss_sum / u128::from(state.rss_samples)).unwrap_or(u64::MAX)
            });
            cpu_sum += state.cpu_sum;
            cpu_samples += state.cpu_samples;
            if let Some(v) = cpu {
                cpu_max = Some(cpu_max.map_or(v, |m| m.max(v)));
            }
            rss_sum += state.rss_sum;
            rss_samples += state.rss_samples;
            if let Some(v) = rss {
                rss_max = Some(rss_max.map_or(v, |m| m.max(v)));
            }

            intervals.push(interval_figures(
                index,
                &c,
                state.offered,
                state.lost,
                state.undelivered,
                sealed.summaries.clone(),
                sealed.encoded.clone(),
                IntervalCompute {
                    cpu_percent: cpu,
                    rss_bytes: rss,
                },
            ));
        }

        Ok(RunFigures {
            duration_s,
            latency: LatencySummaries::of(&self.run),
            availability: run_availability(&totals, lost, undelivered, unavailable_intervals),
            volume: VolumeFigures::new(&totals, &in_phase, offered, duration_s),
            correctness: CorrectnessFigures {
                undelivered,
                ..CorrectnessFigures::new(&totals, lost)
            },
            compute: ComputeFigures {
                cpu_percent: (cpu_samples > 0).then(|| cpu_sum / cpu_samples as f64),
                cpu_percent_max: cpu_max,
                rss_bytes: (rss_samples > 0)
                    .then(|| u64::try_from(rss_sum / u128::from(rss_samples)).unwrap_or(u64::MAX)),
                rss_bytes_max: rss_max,
                samples: rss_samples,
            },
            intervals,
            histograms: EncodedHistograms::encode(&self.run)?,
        })
    }
}
