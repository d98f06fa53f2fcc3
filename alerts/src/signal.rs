//! Signals: the figures of a run record a rule can watch, for the whole run and for each
//! interval, and the metric each one is exported as.

use std::fmt;

use brokerbench_results::record::{
    CorrectnessFigures, IntervalFigures, LatencySummaries, VolumeFigures,
};
use brokerbench_results::{RunRecord, Summary};

/// The unit of a signal's values (thresholds are converted to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds (latencies).
    Seconds,
    /// A ratio in `0..=1` (availabilities).
    Ratio,
    /// Messages per second.
    Rate,
    /// Cores: 1.0 is one core busy (the record's `cpu_percent` / 100).
    Cores,
    /// Bytes.
    Bytes,
    /// A count of messages.
    Count,
}

impl Unit {
    /// What a threshold of this unit looks like, for error messages.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Unit::Seconds => "a duration such as \"5ms\", \"250us\" or \"1.5s\"",
            Unit::Ratio => "a ratio such as \"99.9%\" or 0.999",
            Unit::Rate => "a rate such as \"20k/s\", \"1500/s\" or 1500",
            Unit::Cores => "a CPU share such as \"150%\" or 1.5 (cores)",
            Unit::Bytes => "a size such as \"512MiB\", \"2GiB\" or a number of bytes",
            Unit::Count => "a non-negative number of messages",
        }
    }
}

/// Which latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// End-to-end, from the intended send time (`e2e`).
    E2e,
    /// End-to-end, from the actual send time (`e2e_uncorrected`).
    E2eUncorrected,
    /// Publish to confirmation, from the intended send time (`publish`).
    PublishAck,
    /// Publish to confirmation, from the actual send time (`publish_uncorrected`).
    PublishAckUncorrected,
    /// Actual minus intended send time (`send_delay`).
    SendDelay,
}

/// Which point of a latency distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    /// 50th percentile.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// The maximum.
    Max,
}

/// Which correctness counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Confirmed messages a subscriber never received.
    Lost,
    /// Deliveries of a message the subscriber already had.
    Duplicated,
    /// First deliveries after a higher sequence of the same producer.
    Reordered,
    /// Deliveries never sent, for another subscriber, or corrupted.
    Phantom,
    /// Deliveries after the deadline or after unsubscribe.
    Late,
}

/// A figure of a fault window (the record's `faults` list), the worst over the run's
/// faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultFigure {
    /// `fault.publish.recovery`: from the heal to the first confirmed publish due after it.
    PublishRecovery,
    /// `fault.delivery.recovery`: from the heal to the first delivery due after it.
    DeliveryRecovery,
    /// `fault.publish.unavailable`: the longest stretch with publishes due, none confirmed.
    PublishUnavailable,
    /// `fault.delivery.unavailable`: the longest stretch with deliveries due, none made.
    DeliveryUnavailable,
    /// `fault.lost`: confirmed messages of a window some subscriber never got.
    Lost,
    /// `fault.duplicated`: duplicate deliveries of a window's messages.
    Duplicated,
}

const FAULT_FIGURES: [(&str, FaultFigure); 6] = [
    ("fault.publish.recovery", FaultFigure::PublishRecovery),
    ("fault.delivery.recovery", FaultFigure::DeliveryRecovery),
    ("fault.publish.unavailable", FaultFigure::PublishUnavailable),
    (
        "fault.delivery.unavailable",
        FaultFigure::DeliveryUnavailable,
    ),
    ("fault.lost", FaultFigure::Lost),
    ("fault.duplicated", FaultFigure::Duplicated),
];

/// A figure of a run record that a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A latency percentile, e.g. `e2e.p99`, `publish.p50`, `send_delay.max`.
    Latency(Latency, Quantile),
    /// `availability` or `delivery.availability`: delivered / (delivered + lost + late +
    /// undelivered).
    DeliveryAvailability,
    /// `publish.availability`: confirmed / attempted publishes.
    PublishAvailability,
    /// `throughput`: the achieved publish rate.
    PublishThroughput,
    /// `delivery.throughput`: the achieved delivery rate (per subscriber).
    DeliveryThroughput,
    /// `cpu`: broker CPU, in cores.
    Cpu,
    /// `rss`: broker resident memory, bytes.
    Rss,
    /// A correctness counter: `lost`, `duplicated`, `reordered`, `phantom`, `late`.
    Correctness(Counter),
    /// A figure of the fault windows, worst over the faults (`fault.publish.recovery`,
    /// ...); no data for a run without faults. Whole-run only: an interval has none.
    Fault(FaultFigure),
}

const LATENCIES: [(&str, Latency); 5] = [
    ("e2e", Latency::E2e),
    ("e2e_uncorrected", Latency::E2eUncorrected),
    ("publish", Latency::PublishAck),
    ("publish_uncorrected", Latency::PublishAckUncorrected),
    ("send_delay", Latency::SendDelay),
];
const QUANTILES: [(&str, Quantile); 5] = [
    ("p50", Quantile::P50),
    ("p90", Quantile::P90),
    ("p99", Quantile::P99),
    ("p999", Quantile::P999),
    ("max", Quantile::Max),
];
const COUNTERS: [(&str, Counter); 5] = [
    ("lost", Counter::Lost),
    ("duplicated", Counter::Duplicated),
    ("reordered", Counter::Reordered),
    ("phantom", Counter::Phantom),
    ("late", Counter::Late),
];

/// The name `x` has in `table` (every variant is in its table).
fn name_in<T: PartialEq>(table: &[(&'static str, T)], x: T) -> &'static str {
    table.iter().find(|(_, t)| *t == x).map_or("?", |(n, _)| n)
}

/// The signal names a rule may use, for error messages.
pub const SIGNAL_NAMES: &str = "e2e.p50|p90|p99|p999|max, e2e_uncorrected.*, publish.*, \
publish_uncorrected.*, send_delay.*, availability, delivery.availability, \
publish.availability, throughput, delivery.throughput, cpu, rss, lost, duplicated, \
reordered, phantom, late, fault.publish.recovery, fault.delivery.recovery, \
fault.publish.unavailable, fault.delivery.unavailable, fault.lost, fault.duplicated";

/// One value of a signal and the number of samples behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The value in the signal's unit; `None` when there is no figure (no sample).
    pub value: Option<f64>,
    /// How many samples the value stands on (latency samples, operations, CPU samples).
    pub samples: u64,
}

/// The figures a signal reads, the same for the whole run and for one interval.
struct Figures<'a> {
    latency: &'a LatencySummaries,
    volume: &'a VolumeFigures,
    correctness: &'a CorrectnessFigures,
    publish_availability: Option<f64>,
    delivery_availability: Option<f64>,
    cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
    /// CPU samples behind `cpu_percent` (an interval has at most one).
    cpu_samples: u64,
    /// Memory samples behind `rss_bytes` (an interval has at most one).
    rss_samples: u64,
}

impl Signal {
    /// Parses a signal name such as `e2e.p99` or `delivery.availability`.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        match name {
            "availability" | "delivery.availability" => return Some(Self::DeliveryAvailability),
            "publish.availability" => return Some(Self::PublishAvailability),
            "throughput" | "publish.throughput" => return Some(Self::PublishThroughput),
            "delivery.throughput" => return Some(Self::DeliveryThroughput),
            "cpu" => return Some(Self::Cpu),
            "rss" => return Some(Self::Rss),
            _ => {}
        }
        if let Some((_, c)) = COUNTERS.iter().find(|(n, _)| *n == name) {
            return Some(Self::Correctness(*c));
        }
        if let Some((_, f)) = FAULT_FIGURES.iter().find(|(n, _)| *n == name) {
            return Some(Self::Fault(*f));
        }
        let (stem, q) = name.split_once('.')?;
        let latency = LATENCIES.iter().find(|(n, _)| *n == stem)?.1;
        let quantile = QUANTILES.iter().find(|(n, _)| *n == q)?.1;
        Some(Self::Latency(latency, quantile))
    }

    /// The unit of the signal's values.
    pub fn unit(self) -> Unit {
        match self {
            Self::Latency(..) => Unit::Seconds,
            Self::DeliveryAvailability | Self::PublishAvailability => Unit::Ratio,
            Self::PublishThroughput | Self::DeliveryThroughput => Unit::Rate,
            Self::Cpu => Unit::Cores,
            Self::Rss => Unit::Bytes,
            Self::Correctness(_) => Unit::Count,
            Self::Fault(FaultFigure::Lost | FaultFigure::Duplicated) => Unit::Count,
            Self::Fault(_) => Unit::Seconds,
        }
    }

    /// The whole run's value.
    pub fn of_run(self, record: &RunRecord) -> Observation {
        if let Self::Fault(which) = self {
            return fault_figure(record, which);
        }
        let f = &record.figures;
        self.observe(&Figures {
            latency: &f.latency,
            volume: &f.volume,
            correctness: &f.correctness,
            publish_availability: f.availability.publish,
            delivery_availability: f.availability.delivery,
            cpu_percent: f.compute.cpu_percent,
            rss_bytes: f.compute.rss_bytes,
            cpu_samples: f.compute.samples,
            rss_samples: f.compute.samples,
        })
    }

    /// One interval's value.
    pub fn of_interval(self, i: &IntervalFigures) -> Observation {
        self.observe(&Figures {
            latency: &i.latency,
            volume: &i.volume,
            correctness: &i.correctness,
            publish_availability: i.availability.publish,
            delivery_availability: i.availability.delivery,
            cpu_percent: i.compute.cpu_percent,
            rss_bytes: i.compute.rss_bytes,
            cpu_samples: u64::from(i.compute.cpu_percent.is_some()),
            rss_samples: u64::from(i.compute.rss_bytes.is_some()),
        })
    }

    fn observe(self, f: &Figures<'_>) -> Observation {
        if let Self::Fault(_) = self {
            return Observation {
                value: None,
                samples: 0,
            };
        }
        // Deliveries a subscriber was owed: what delivery availability and the
        // correctness counters stand on.
        let owed = f.volume.delivered
            + f.correctness.lost
            + f.correctness.late
            + f.correctness.undelivered;
        let (value, samples) = match self {
            Self::Latency(l, q) => return latency(f.latency, l, q),
            Self::DeliveryAvailability => (f.delivery_availability, owed),
            Self::PublishAvailability => (f.publish_availability, f.volume.attempted),
            Self::PublishThroughput => (Some(f.volume.achieved_publish_rate), f.volume.published),
            Self::DeliveryThroughput => (Some(f.volume.achieved_delivery_rate), f.volume.delivered),
            Self::Cpu => (f.cpu_percent.map(|p| p / 100.0), f.cpu_samples),
            Self::Rss => (f.rss_bytes.map(|b| b as f64), f.rss_samples),
            Self::Correctness(c) => (Some(counter(f.correctness, c)), owed),
            Self::Fault(_) => (None, 0),
        };
        Observation { value, samples }
    }

    /// The Prometheus selector of the metric the signal is exported as (see
    /// `results/README.md`, "OpenMetrics"), without the scenario matcher:
    /// `(metric name, label matchers)`.
    pub fn metric(self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        match self {
            Self::Latency(l, q) => {
                let name = match l {
                    Latency::E2e => "brokerbench_e2e_latency_quantile_seconds",
                    Latency::E2eUncorrected => {
                        "brokerbench_e2e_uncorrected_latency_quantile_seconds"
                    }
                    Latency::PublishAck => "brokerbench_publish_ack_latency_quantile_seconds",
                    Latency::PublishAckUncorrected => {
                        "brokerbench_publish_ack_uncorrected_latency_quantile_seconds"
                    }
                    Latency::SendDelay => "brokerbench_send_delay_quantile_seconds",
                };
                let quantile = match q {
                    Quantile::P50 => "0.5",
                    Quantile::P90 => "0.9",
                    Quantile::P99 => "0.99",
                    Quantile::P999 => "0.999",
                    Quantile::Max => "1.0",
                };
                (name, vec![("quantile", quantile)])
            }
            Self::DeliveryAvailability => (
                "brokerbench_availability_ratio",
                vec![("operation", "delivery")],
            ),
            Self::PublishAvailability => (
                "brokerbench_availability_ratio",
                vec![("operation", "publish")],
            ),
            Self::PublishThroughput => ("brokerbench_publish_rate", vec![]),
            Self::DeliveryThroughput => ("brokerbench_delivery_rate", vec![]),
            Self::Cpu => ("brokerbench_broker_cpu_ratio", vec![]),
            Self::Rss => ("brokerbench_broker_resident_memory_bytes", vec![]),
            Self::Correctness(c) => (
                "brokerbench_correctness_anomalies_total",
                vec![("kind", name_in(&COUNTERS, c))],
            ),
            Self::Fault(f) => match f {
                FaultFigure::PublishRecovery => (
                    "brokerbench_fault_recovery_seconds",
                    vec![("operation", "publish")],
                ),
                FaultFigure::DeliveryRecovery => (
                    "brokerbench_fault_recovery_seconds",
                    vec![("operation", "delivery")],
                ),
                FaultFigure::PublishUnavailable => (
                    "brokerbench_fault_unavailable_seconds",
                    vec![("operation", "publish")],
                ),
                FaultFigure::DeliveryUnavailable => (
                    "brokerbench_fault_unavailable_seconds",
                    vec![("operation", "delivery")],
                ),
                FaultFigure::Lost => ("brokerbench_fault_anomalies_total", vec![("kind", "lost")]),
                FaultFigure::Duplicated => (
                    "brokerbench_fault_anomalies_total",
                    vec![("kind", "duplicated")],
                ),
            },
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latency(l, q) => {
                write!(f, "{}.{}", name_in(&LATENCIES, *l), name_in(&QUANTILES, *q))
            }
            Self::DeliveryAvailability => f.write_str("delivery.availability"),
            Self::PublishAvailability => f.write_str("publish.availability"),
            Self::PublishThroughput => f.write_str("throughput"),
            Self::DeliveryThroughput => f.write_str("delivery.throughput"),
            Self::Cpu => f.write_str("cpu"),
            Self::Rss => f.write_str("rss"),
            Self::Correctness(c) => f.write_str(name_in(&COUNTERS, *c)),
            Self::Fault(x) => f.write_str(name_in(&FAULT_FIGURES, *x)),
        }
    }
}

fn latency(set: &LatencySummaries, l: Latency, q: Quantile) -> Observation {
    let s: &Summary = match l {
        Latency::E2e => &set.e2e,
        Latency::E2eUncorrected => &set.e2e_uncorrected,
        Latency::PublishAck => &set.publish_ack,
        Latency::PublishAckUncorrected => &set.publish_ack_uncorrected,
        Latency::SendDelay => &set.send_delay,
    };
    let us = match q {
        Quantile::P50 => s.p50_us,
        Quantile::P90 => s.p90_us,
        Quantile::P99 => s.p99_us,
        Quantile::P999 => s.p999_us,
        Quantile::Max => s.max_us,
    };
    Observation {
        value: us.map(|us| us / 1e6),
        samples: s.count,
    }
}

/// The worst value of a fault figure over the injected faults of `record`; samples are
/// the faults judged. A side that never recovered counts its whole unavailable stretch
/// (or the time from the heal to the end of the run) as its recovery.
fn fault_figure(record: &RunRecord, which: FaultFigure) -> Observation {
    let mut worst: Option<f64> = None;
    let mut samples = 0;
    for f in record.faults.iter().filter(|f| f.injected_s.is_some()) {
        let value = match which {
            FaultFigure::PublishRecovery => f.publish.outage.recovery_s(),
            FaultFigure::DeliveryRecovery => f.delivery.outage.recovery_s(),
            FaultFigure::PublishUnavailable => f.publish.outage.unavailable_ms / 1e3,
            FaultFigure::DeliveryUnavailable => f.delivery.outage.unavailable_ms / 1e3,
            FaultFigure::Lost => f.delivery.lost as f64,
            FaultFigure::Duplicated => f.delivery.duplicated as f64,
        };
        samples += 1;
        worst = Some(worst.map_or(value, |w: f64| w.max(value)));
    }
    Observation {
        value: worst,
        samples,
    }
}

fn counter(c: &CorrectnessFigures, which: Counter) -> f64 {
    (match which {
        Counter::Lost => c.lost,
        Counter::Duplicated => c.duplicated,
        Counter::Reordered => c.reordered,
        Counter::Phantom => c.phantom,
        Counter::Late => c.late,
    }) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "e2e.p99",
            "e2e_uncorrected.max",
            "publish.p50",
            "send_delay.p999",
            "delivery.availability",
            "publish.availability",
            "throughput",
            "delivery.throughput",
            "cpu",
            "rss",
            "lost",
            "late",
            "fault.publish.recovery",
            "fault.delivery.unavailable",
            "fault.lost",
        ] {
            let s = Signal::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(s.to_string(), name);
        }
        assert_eq!(
            Signal::parse("availability"),
            Some(Signal::DeliveryAvailability)
        );
        assert_eq!(Signal::parse("e2e.p98"), None);
        assert_eq!(Signal::parse("latency"), None);
    }
}
