//! A run record's figures as an OpenMetrics (or Prometheus text) exposition.
//!
//! Metric names start with `brokerbench_`; every sample carries the labels `scenario`,
//! `backend` and `run_id`. These are the names the alert rules export refers to; the
//! full list, with units, is in `results/README.md`.
//!
//! - **Histograms** of the five latencies (`brokerbench_e2e_latency_seconds`, …), with
//!   the fixed bucket boundaries [`FIXED_BUCKETS_NS`] plus every duration threshold
//!   found in the record's `alert_rules`, so `le="0.005"` answers "how many were over
//!   the 5 ms alert" exactly as the run record does.
//! - **Summaries** of the same latencies (`brokerbench_e2e_latency_quantile_seconds`)
//!   with HdrHistogram's exact p50, p90, p99, p99.9 and max (`quantile="1.0"`).
//! - **Gauges** for availability, rates, saturation and broker resources.
//! - **Counters** for volumes and correctness anomalies.
//!
//! Two syntaxes of the same metrics: [`MetricsFormat::OpenMetrics`] (OpenMetrics 1.0:
//! `# UNIT`, counter families named without `_total`, `# EOF`) and
//! [`MetricsFormat::Prometheus`] (text format 0.0.4, counters' `# HELP`/`# TYPE` on the
//! `_total` name), which `promtool check metrics` lints clean.

use std::fmt::Write as _;

use serde_json::Value;

use crate::histogram::{HistogramError, LatencyHistogram};
use crate::record::RunRecord;

/// Which exposition syntax to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsFormat {
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
}

impl MetricsFormat {
    /// The HTTP content type of this syntax.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
            MetricsFormat::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Bucket upper bounds of every latency histogram, in nanoseconds: 10 µs to 60 s in
/// 1-2.5-5 steps (with 20 ms, 30 s), covering the alert thresholds people commonly
/// set. Thresholds of the record's alert rules are added to these.
pub const FIXED_BUCKETS_NS: [u64; 21] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Why the exposition could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A stored histogram could not be decoded.
    #[error("cannot decode the run's histograms")]
    Histogram(#[source] HistogramError),
}

/// Every duration threshold (`warning`, `critical`: text such as `"5ms"`) of the alert
/// rules, in nanoseconds. Numbers (availability ratios, rates) are not durations and are
/// skipped, as is text that is not a duration.
pub fn alert_thresholds_ns(alert_rules: &Value) -> Vec<u64> {
    let mut out = Vec::new();
    for rule in alert_rules.as_array().into_iter().flatten() {
        for key in ["warning", "critical"] {
            let Some(text) = rule.get(key).and_then(Value::as_str) else {
                continue;
            };
            if let Ok(d) = humantime::parse_duration(text.trim()) {
                if let Ok(ns) = u64::try_from(d.as_nanos()) {
                    if ns > 0 {
                        out.push(ns);
                    }
                }
            }
        }
    }
    out
}

/// The bucket bounds of a record's histograms: [`FIXED_BUCKETS_NS`] and the alert
/// thresholds, sorted, without duplicates (`+Inf` is implied).
pub fn bucket_bounds_ns(alert_rules: &Value) -> Vec<u64> {
    let mut bounds: Vec<u64> = FIXED_BUCKETS_NS.to_vec();
    bounds.extend(alert_thresholds_ns(alert_rules));
    bounds.sort_unstable();
    bounds.dedup();
    bounds
}

/// A float as exposition text: integral values keep a `.0` (`1.0`, `0.005`), so label
/// values such as `le` are canonical floats.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Nanoseconds as seconds text.
fn seconds(ns: u64) -> String {
    float(ns as f64 / 1e9)
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Extra labels of one sample, beside the common ones.
type Labels<'a> = &'a [(&'a str, &'a str)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// Writes families and samples in either syntax.
struct Exposition {
    format: MetricsFormat,
    out: String,
    /// `scenario="…",backend="…",run_id="…"`.
    labels: String,
}

impl Exposition {
    /// Starts a family. `name` is the OpenMetrics family name (counters without
    /// `_total`); `unit` must be its suffix.
    fn family(&mut self, name: &str, kind: Kind, unit: Option<&str>, help: &str) {
        match self.format {
            MetricsFormat::OpenMetrics => {
                let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
                if let Some(unit) = unit {
                    let _ = writeln!(self.out, "# UNIT {name} {unit}");
                }
                let _ = writeln!(self.out, "# HELP {name} {help}");
            }
            MetricsFormat::Prometheus => {
                let name = if kind == Kind::Counter {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                let _ = writeln!(self.out, "# HELP {name} {help}");
                let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
            }
        }
    }

    /// One sample: the common labels, then `extra`.
    fn sample(&mut self, name: &str, extra: Labels<'_>, value: &str) {
        let _ = write!(self.out, "{name}{{{}", self.labels);
        for (k, v) in extra {
            let _ = write!(self.out, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, values: &[(Labels<'_>, u64)]) {
        self.family(name, Kind::Counter, None, help);
        for (labels, value) in values {
            self.sample(&format!("{name}_total"), labels, &value.to_string());
        }
    }

    fn gauge(
        &mut self,
        name: &str,
        unit: Option<&str>,
        help: &str,
        values: &[(Labels<'_>, Option<f64>)],
    ) {
        if values.iter().all(|(_, v)| v.is_none()) {
            return;
        }
        self.family(name, Kind::Gauge, unit, help);
        for (labels, value) in values {
            if let Some(v) = value {
                self.sample(name, labels, &float(*v));
            }
        }
    }

    /// Sum of the values in seconds: each bucket's count times its median-equivalent
    /// value, as HdrHistogram computes its mean (exact to its 0.1 % resolution).
    fn sum_seconds(h: &LatencyHistogram) -> f64 {
        let hdr = h.as_hdr();
        let ns: f64 = hdr
            .iter_recorded()
            .map(|v| {
                v.count_at_value() as f64 * hdr.median_equivalent(v.value_iterated_to()) as f64
            })
            .sum();
        ns / 1e9
    }

    fn histogram(&mut self, name: &str, help: &str, h: &LatencyHistogram, bounds: &[u64]) {
        self.family(name, Kind::Histogram, Some("seconds"), help);
        // A value is counted under `le` when its bucket's highest equivalent value —
        // the figure percentiles report — is at most `le`.
        let mut recorded = h.as_hdr().iter_recorded().peekable();
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for &bound in bounds {
            while let Some(v) = recorded.next_if(|v| v.value_iterated_to() <= bound) {
                cumulative += v.count_at_value();
            }
            self.sample(&bucket, &[("le", &seconds(bound))], &cumulative.to_string());
        }
        self.sample(&bucket, &[("le", "+Inf")], &h.count().to_string());
        self.sample(&format!("{name}_count"), &[], &h.count().to_string());
        self.sample(&format!("{name}_sum"), &[], &float(Self::sum_seconds(h)));
    }

    fn summary(&mut self, name: &str, help: &str, h: &LatencyHistogram) {
        self.family(name, Kind::Summary, Some("seconds"), help);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            if let Some(ns) = h.value_at_quantile_ns(q) {
                self.sample(name, &[("quantile", &float(q))], &seconds(ns));
            }
        }
        self.sample(&format!("{name}_count"), &[], &h.count().to_string());
        self.sample(&format!("{name}_sum"), &[], &float(Self::sum_seconds(h)));
    }
}

/// The latencies: metric name stem, help text.
const LATENCIES: [(&str, &str); 5] = [
    (
        "brokerbench_e2e_latency",
        "End-to-end latency per delivery, from the intended send time (coordinated-omission corrected).",
    ),
    (
        "brokerbench_e2e_uncorrected_latency",
        "End-to-end latency per delivery, from the actual send time (not corrected for coordinated omission).",
    ),
    (
        "brokerbench_publish_ack_latency",
        "Publish to broker confirmation, from the intended send time (coordinated-omission corrected).",
    ),
    (
        "brokerbench_publish_ack_uncorrected_latency",
        "Publish to broker confirmation, from the actual send time.",
    ),
    (
        "brokerbench_send_delay",
        "Actual minus intended send time of each publish (how far the load generator fell behind its schedule).",
    ),
];

/// Renders the figures of `record` in `format`.
///
/// # Errors
/// [`MetricsError::Histogram`] if the stored run histograms do not decode.
pub fn render_metrics(record: &RunRecord, format: MetricsFormat) -> Result<String, MetricsError> {
    let set = record
        .latency_histograms()
        .map_err(MetricsError::Histogram)?;
    let f = &record.figures;
    let mut x = Exposition {
        format,
        out: String::new(),
        labels: format!(
            "scenario=\"{}\",backend=\"{}\",run_id=\"{}\"",
            escape_label(&record.scenario_name),
            escape_label(&record.backend.name),
            escape_label(&record.run_id)
        ),
    };
    let bounds = bucket_bounds_ns(&record.alert_rules);
    let histograms = [
        &set.e2e,
        &set.e2e_uncorrected,
        &set.publish_ack,
        &set.publish_ack_uncorrected,
        &set.send_delay,
    ];
    for ((stem, help), h) in LATENCIES.iter().zip(histograms) {
        x.histogram(&format!("{stem}_seconds"), help, h, &bounds);
    }
    for ((stem, help), h) in LATENCIES.iter().zip(histograms) {
        x.summary(
            &format!("{stem}_quantile_seconds"),
            &format!(
                "{} Exact HdrHistogram quantiles; quantile 1.0 is the maximum.",
                help
            ),
            h,
        );
    }

    let a = &f.availability;
    x.gauge(
        "brokerbench_availability_ratio",
        Some("ratio"),
        "Availability: confirmed/attempted publishes (operation=publish), delivered/(delivered+lost+late) (operation=delivery).",
        &[
            (&[("operation", "publish")], a.publish),
            (&[("operation", "delivery")], a.delivery),
        ],
    );
    let v = &f.volume;
    x.gauge(
        "brokerbench_offered_rate",
        None,
        "Rate the open-loop schedule offered, messages per second.",
        &[(&[], Some(v.offered_rate))],
    );
    x.gauge(
        "brokerbench_publish_rate",
        None,
        "Publishes confirmed within the measured phase, messages per second.",
        &[(&[], Some(v.achieved_publish_rate))],
    );
    x.gauge(
        "brokerbench_delivery_rate",
        None,
        "First deliveries within the measured phase, per subscriber, messages per second.",
        &[(&[], Some(v.achieved_delivery_rate))],
    );
    x.gauge(
        "brokerbench_saturated",
        None,
        "1 when the achieved publish rate fell more than 5 percent behind the offered rate, else 0.",
        &[(&[], Some(f64::from(u8::from(v.saturated))))],
    );
    x.gauge(
        "brokerbench_run_duration_seconds",
        Some("seconds"),
        "Length of the measured phase.",
        &[(&[], Some(f.duration_s))],
    );
    x.gauge(
        "brokerbench_run_start_timestamp_seconds",
        Some("seconds"),
        "Start of the run (set-up included), seconds since the Unix epoch.",
        &[(
            &[],
            Some(record.started_at.unix_timestamp_nanos() as f64 / 1e9),
        )],
    );
    x.gauge(
        "brokerbench_run_partial",
        None,
        "1 when the run was interrupted and its figures cover only part of it, else 0.",
        &[(&[], Some(f64::from(u8::from(record.partial))))],
    );
    let c = &f.compute;
    x.gauge(
        "brokerbench_broker_cpu_ratio",
        Some("ratio"),
        "Mean broker CPU over the run, in cores (1.0 is one core fully busy).",
        &[(&[], c.cpu_percent.map(|p| p / 100.0))],
    );
    x.gauge(
        "brokerbench_broker_cpu_max_ratio",
        Some("ratio"),
        "Highest per-interval broker CPU, in cores.",
        &[(&[], c.cpu_percent_max.map(|p| p / 100.0))],
    );
    x.gauge(
        "brokerbench_broker_resident_memory_bytes",
        Some("bytes"),
        "Mean resident set size of the broker process.",
        &[(&[], c.rss_bytes.map(|b| b as f64))],
    );
    x.gauge(
        "brokerbench_broker_resident_memory_max_bytes",
        Some("bytes"),
        "Highest per-interval resident set size of the broker process.",
        &[(&[], c.rss_bytes_max.map(|b| b as f64))],
    );

    x.counter(
        "brokerbench_offered_messages",
        "Messages the open-loop schedule offered.",
        &[(&[], v.offered)],
    );
    x.counter(
        "brokerbench_publishes",
        "Publish attempts by outcome: confirmed within the timeout, failed, or unknown (no confirmation before the timeout).",
        &[
            (&[("outcome", "confirmed")], v.published),
            (&[("outcome", "failed")], v.publish_failed),
            (&[("outcome", "unknown")], v.publish_unknown),
        ],
    );
    x.counter(
        "brokerbench_deliveries",
        "First deliveries, counted per subscriber.",
        &[(&[], v.delivered)],
    );
    let k = &f.correctness;
    x.counter(
        "brokerbench_correctness_anomalies",
        "Correctness anomalies by kind: lost, duplicated, reordered, phantom, late.",
        &[
            (&[("kind", "lost")], k.lost),
            (&[("kind", "duplicated")], k.duplicated),
            (&[("kind", "reordered")], k.reordered),
            (&[("kind", "phantom")], k.phantom),
            (&[("kind", "late")], k.late),
        ],
    );
    x.counter(
        "brokerbench_recovered_messages",
        "Publishes whose outcome was failed or unknown that were delivered all the same.",
        &[(&[], k.recovered)],
    );
    x.counter(
        "brokerbench_replayed_messages",
        "Messages sent before a late subscriber joined that it received by replay.",
        &[(&[], k.replayed)],
    );
    x.counter(
        "brokerbench_intervals",
        "1-second intervals in the run's interval series.",
        &[(&[], f.intervals.len() as u64)],
    );
    x.counter(
        "brokerbench_unavailable_intervals",
        "Intervals with a failed or unknown publish, or a lost or late delivery.",
        &[(&[], a.unavailable_intervals)],
    );
    faults(&mut x, &record.faults);
    if format == MetricsFormat::OpenMetrics {
        x.out.push_str("# EOF\n");
    }
    Ok(x.out)
}

/// One series per injected fault (`fault` its position in the record, `kind`), what the
/// `fault.*` alert signals watch; nothing for a run without faults.
fn faults(x: &mut Exposition, faults: &[crate::faults::FaultFigures]) {
    let injected: Vec<(String, &crate::faults::FaultFigures)> = faults
        .iter()
        .enumerate()
        .filter(|(_, f)| f.injected_s.is_some())
        .map(|(i, f)| (i.to_string(), f))
        .collect();
    if injected.is_empty() {
        return;
    }
    let labelled = |op: &'static str, value: &dyn Fn(&crate::faults::FaultFigures) -> f64| {
        injected
            .iter()
            .map(|(i, f)| {
                (
                    [
                        ("fault", i.as_str()),
                        ("fault_kind", f.kind.as_str()),
                        ("operation", op),
                    ],
                    value(f),
                )
            })
            .collect::<Vec<_>>()
    };
    let sides = |value: &dyn Fn(&crate::faults::Outage) -> f64| {
        let mut rows = labelled("publish", &|f| value(&f.publish.outage));
        rows.extend(labelled("delivery", &|f| value(&f.delivery.outage)));
        rows
    };
    let recovery = sides(&crate::faults::Outage::recovery_s);
    let unavailable = sides(&|o| o.unavailable_ms / 1e3);
    for (name, help, rows) in [
        (
            "brokerbench_fault_recovery_seconds",
            "Per fault: from the heal to the first success for a message due after it (never recovered: at least the unavailable window).",
            &recovery,
        ),
        (
            "brokerbench_fault_unavailable_seconds",
            "Per fault: the longest stretch with messages due and none confirmed or delivered.",
            &unavailable,
        ),
    ] {
        let values: Vec<(Labels<'_>, Option<f64>)> =
            rows.iter().map(|(l, v)| (&l[..], Some(*v))).collect();
        x.gauge(name, Some("seconds"), help, &values);
    }
    let counts: Vec<([(&str, &str); 3], u64)> = injected
        .iter()
        .flat_map(|(i, f)| {
            [
                (
                    [
                        ("fault", i.as_str()),
                        ("kind", "lost"),
                        ("fault_kind", f.kind.as_str()),
                    ],
                    f.delivery.lost,
                ),
                (
                    [
                        ("fault", i.as_str()),
                        ("kind", "duplicated"),
                        ("fault_kind", f.kind.as_str()),
                    ],
                    f.delivery.duplicated,
                ),
            ]
        })
        .collect();
    let values: Vec<(Labels<'_>, u64)> = counts.iter().map(|(l, v)| (&l[..], *v)).collect();
    x.counter(
        "brokerbench_fault_anomalies",
        "Per fault: lost and duplicated messages among those due in its window.",
        &values,
    );
}

#[cfg(test)]
mod tests;
