//! The figures of a run: latency summaries and histograms, availability, volume,
//! correctness and compute, for the whole measured phase and per interval.

use serde::{Deserialize, Serialize};

use crate::histogram::{HistogramError, LatencyHistogram, Summary};
use crate::recorder::{Counters, LatencySet};

/// Summaries of the five latencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummaries {
    /// End-to-end, from the intended send time (coordinated-omission corrected).
    pub e2e: Summary,
    /// End-to-end, from the actual send time.
    pub e2e_uncorrected: Summary,
    /// Publish to broker confirmation, from the intended send time.
    pub publish_ack: Summary,
    /// Publish to broker confirmation, from the actual send time.
    pub publish_ack_uncorrected: Summary,
    /// Actual send time minus intended send time.
    pub send_delay: Summary,
}

impl LatencySummaries {
    /// Summarises each histogram of `set`.
    pub fn of(set: &LatencySet) -> Self {
        Self {
            e2e: set.e2e.summary(),
            e2e_uncorrected: set.e2e_uncorrected.summary(),
            publish_ack: set.publish_ack.summary(),
            publish_ack_uncorrected: set.publish_ack_uncorrected.summary(),
            send_delay: set.send_delay.summary(),
        }
    }
}

/// The five histograms, each as base64 of an HdrHistogram V2 compressed payload of
/// nanosecond values (see [`LatencyHistogram::to_base64`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedHistograms {
    /// See [`LatencySummaries::e2e`].
    pub e2e: String,
    /// See [`LatencySummaries::e2e_uncorrected`].
    pub e2e_uncorrected: String,
    /// See [`LatencySummaries::publish_ack`].
    pub publish_ack: String,
    /// See [`LatencySummaries::publish_ack_uncorrected`].
    pub publish_ack_uncorrected: String,
    /// See [`LatencySummaries::send_delay`].
    pub send_delay: String,
}

impl EncodedHistograms {
    /// Encodes each histogram of `set`.
    ///
    /// # Errors
    /// [`HistogramError::Encode`] if a histogram cannot be serialised.
    pub fn encode(set: &LatencySet) -> Result<Self, HistogramError> {
        Ok(Self {
            e2e: set.e2e.to_base64()?,
            e2e_uncorrected: set.e2e_uncorrected.to_base64()?,
            publish_ack: set.publish_ack.to_base64()?,
            publish_ack_uncorrected: set.publish_ack_uncorrected.to_base64()?,
            send_delay: set.send_delay.to_base64()?,
        })
    }

    /// Decodes the histograms, restoring each one's clamped count from `summaries`
    /// (the V2 payload does not carry it).
    ///
    /// # Errors
    /// A [`HistogramError`] if a payload is malformed.
    pub fn decode(&self, summaries: &LatencySummaries) -> Result<LatencySet, HistogramError> {
        let one = |text: &str, summary: &Summary| -> Result<LatencyHistogram, HistogramError> {
            let mut h = LatencyHistogram::from_base64(text)?;
            h.set_clamped(summary.clamped);
            Ok(h)
        };
        Ok(LatencySet {
            e2e: one(&self.e2e, &summaries.e2e)?,
            e2e_uncorrected: one(&self.e2e_uncorrected, &summaries.e2e_uncorrected)?,
            publish_ack: one(&self.publish_ack, &summaries.publish_ack)?,
            publish_ack_uncorrected: one(
                &self.publish_ack_uncorrected,
                &summaries.publish_ack_uncorrected,
            )?,
            send_delay: one(&self.send_delay, &summaries.send_delay)?,
        })
    }
}

/// Availability of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityFigures {
    /// Confirmed publishes / attempted publishes; `null` when nothing was attempted.
    pub publish: Option<f64>,
    /// Successful deliveries / (successful + lost + late); `null` when none was due.
    pub delivery: Option<f64>,
    /// Intervals with at least one failed or unknown publish, or one lost or late delivery.
    pub unavailable_intervals: u64,
}

/// Availability of one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalAvailability {
    /// Confirmed / attempted publishes observed in the interval; `null` if none.
    pub publish: Option<f64>,
    /// Delivered / (delivered + lost + late) attributed to the interval; `null` if none.
    pub delivery: Option<f64>,
    /// At least one failed or unknown publish, or one lost or late delivery.
    pub unavailable: bool,
}

/// Call volume: counts and rates (messages per second).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeFigures {
    /// Messages the schedule offered.
    pub offered: u64,
    /// Publish attempts (confirmed + failed + unknown).
    pub attempted: u64,
    /// Publishes confirmed by the broker within the timeout.
    pub published: u64,
    /// Publishes that failed.
    pub publish_failed: u64,
    /// Publishes with no confirmation before the timeout.
    pub publish_unknown: u64,
    /// First deliveries, counted per subscriber.
    pub delivered: u64,
    /// `offered` / duration, msg/s.
    pub offered_rate: f64,
    /// `published` / duration, msg/s.
    pub achieved_publish_rate: f64,
    /// `delivered` / duration, msg/s (per-subscriber deliveries).
    pub achieved_delivery_rate: f64,
    /// The achieved publish rate fell more than 5 % behind the offered rate.
    pub saturated: bool,
}

impl VolumeFigures {
    /// Volume figures over `duration_s` seconds: counts from `totals`, achieved rates (and
    /// `saturated`) from `in_phase`, what completed within the measured phase. Publishes
    /// and deliveries that only complete during the drain count in `published` and
    /// `delivered`, not in the rates, so a backlog shows as saturation. For one interval
    /// both are that interval's counters. Rates are 0 when the duration is not positive.
    pub fn new(totals: &Counters, in_phase: &Counters, offered: u64, duration_s: f64) -> Self {
        let rate = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        let offered_rate = rate(offered);
        let achieved_publish_rate = rate(in_phase.published);
        Self {
            offered,
            attempted: totals.attempted(),
            published: totals.published,
            publish_failed: totals.publish_failed,
            publish_unknown: totals.publish_unknown,
            delivered: totals.delivered,
            offered_rate,
            achieved_publish_rate,
            achieved_delivery_rate: rate(in_phase.delivered),
            saturated: crate::collector::is_saturated(offered_rate, achieved_publish_rate),
        }
    }
}

/// Correctness counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectnessFigures {
    /// Confirmed messages an eligible subscriber never received.
    pub lost: u64,
    /// Deliveries of a message the subscriber already had.
    pub duplicated: u64,
    /// First deliveries after a higher sequence of the same producer.
    pub reordered: u64,
    /// Deliveries never sent, for another subscriber, or corrupted.
    pub phantom: u64,
    /// Deliveries after the deadline or after unsubscribe.
    pub late: u64,
    /// Publishes whose outcome was failed or unknown that were delivered all the same.
    #[serde(default)]
    pub recovered: u64,
    /// Messages sent before a late subscriber joined that it received by replay (not
    /// counted as deliveries).
    #[serde(default)]
    pub replayed: u64,
    /// Deliveries due for publishes that failed or got no answer and never came: not
    /// lost (the publisher knew), but delivery availability counts them. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undelivered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CorrectnessFigures {
    /// Correctness figures from counters and a lost count.
    pub fn new(counters: &Counters, lost: u64) -> Self {
        Self {
            lost,
            duplicated: counters.duplicated,
            reordered: counters.reordered,
            phantom: counters.phantom,
            late: counters.late,
            recovered: 0,
            replayed: 0,
            undelivered: 0,
        }
    }
}

/// Broker resource use over the run; `null` figures when the process was not sampled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeFigures {
    /// Mean broker CPU over all samples, percent of one core (may exceed 100).
    pub cpu_percent: Option<f64>,
    /// Highest per-interval mean CPU, percent of one core.
    pub cpu_percent_max: Option<f64>,
    /// Mean resident set size over all samples, bytes.
    pub rss_bytes: Option<u64>,
    /// Highest per-interval resident set size, bytes.
    pub rss_bytes_max: Option<u64>,
    /// Number of samples taken.
    pub samples: u64,
}

/// Broker resource use in one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalCompute {
    /// Broker CPU, percent of one core; `null` if not sampled.
    pub cpu_percent: Option<f64>,
    /// Broker resident set size, bytes; `null` if not sampled.
    pub rss_bytes: Option<u64>,
}

/// The figures of one 1-second interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalFigures {
    /// Interval index: the interval covers `[index s, index+1 s)` of the run clock.
    pub index: u64,
    /// Latency summaries of events observed in the interval.
    pub latency: LatencySummaries,
    /// Availability of the interval.
    pub availability: IntervalAvailability,
    /// Counts and rates of the interval (rates over 1 s).
    pub volume: VolumeFigures,
    /// Correctness counters of the interval.
    pub correctness: CorrectnessFigures,
    /// Broker resource use in the interval.
    pub compute: IntervalCompute,
    /// The interval's histograms (for `.hlog` output and re-analysis).
    pub histograms: EncodedHistograms,
}

/// Everything the collector measured: the run figures and the interval series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Length of the measured phase, seconds; run-level rates are over it.
    pub duration_s: f64,
    /// Latency summaries of the whole run.
    pub latency: LatencySummaries,
    /// Availability of the whole run.
    pub availability: AvailabilityFigures,
    /// Call volume of the whole run.
    pub volume: VolumeFigures,
    /// Correctness counters of the whole run.
    pub correctness: CorrectnessFigures,
    /// Broker resource use of the whole run.
    pub compute: ComputeFigures,
    /// The 1-second interval series, dense from index 0.
    pub intervals: Vec<IntervalFigures>,
    /// The run's merged histograms.
    pub histograms: EncodedHistograms,
}
