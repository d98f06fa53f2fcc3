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
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::record::{
        BackendInfo, EncodedHistograms, HostFacts, LatencySummaries, RunFigures, RunInfo,
    };
    use crate::recorder::LatencySet;

    fn record() -> RunRecord {
        let mut set = LatencySet::default();
        for v in [
            90_000u64,
            150_000,
            400_000,
            2_900_000,
            3_000_000,
            3_100_000,
            7_000_000,
            90_000_000_000,
        ] {
            set.e2e.record(v);
        }
        set.publish_ack.record(200_000);
        let mut figures = RunFigures {
            duration_s: 6.0,
            latency: LatencySummaries::of(&set),
            histograms: EncodedHistograms::encode(&set).unwrap(),
            ..RunFigures::default()
        };
        figures.availability.publish = Some(1.0);
        figures.availability.delivery = None;
        figures.volume.offered = 12_000;
        figures.volume.published = 11_990;
        figures.volume.publish_unknown = 10;
        figures.volume.offered_rate = 2_000.0;
        figures.volume.achieved_publish_rate = 1_998.3;
        figures.correctness.lost = 3;
        figures.compute.cpu_percent = Some(11.8);
        figures.compute.rss_bytes = Some(15 << 20);
        let t = time::macros::datetime!(2026-11-22 10:13:15 UTC);
        RunRecord::new(
            RunInfo {
                run_id: "r\"1".into(),
                scenario_name: "chat-1to1".into(),
                scenario: serde_json::json!({}),
                alert_rules: serde_json::json!([
                    {"signal": "e2e.p99", "warning": "3ms", "critical": "20ms"},
                    {"signal": "availability", "warning": 0.999, "critical": 0.99},
                    {"signal": "e2e.p50", "warning": "not a duration"},
                ]),
                backend: BackendInfo {
                    name: "reference".into(),
                    url: None,
                    version: None,
                },
                host: HostFacts::default(),
                started_at: t,
                ended_at: t,
            },
            figures,
        )
    }

    /// A metric family as a strict OpenMetrics 1.0 reader sees it.
    #[derive(Debug, Default)]
    struct Family {
        kind: String,
        unit: Option<String>,
        help: Option<String>,
        samples: Vec<(String, BTreeMap<String, String>, f64)>,
    }

    fn parse_labels(text: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (name, after) = rest.split_once("=\"").expect("label name=\"value\"");
            assert!(
                name.chars().enumerate().all(|(i, c)| c == '_'
                    || c.is_ascii_alphabetic()
                    || (i > 0 && c.is_ascii_digit())),
                "label name {name:?}"
            );
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("closing quote");
                match c {
                    '\\' => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c}"),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            assert!(
                labels.insert(name.to_owned(), value).is_none(),
                "duplicate label {name}"
            );
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        labels
    }

    /// Parses and validates strict OpenMetrics 1.0: metadata before samples, one block
    /// per family, sample names matching their family's type, `# EOF` last, histogram
    /// buckets cumulative with `+Inf` equal to `_count`, no duplicate series.
    fn parse_openmetrics(text: &str) -> BTreeMap<String, Family> {
        assert!(text.ends_with("# EOF\n"), "must end with # EOF");
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut series = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut seen_sample = false;
        for line in text.lines() {
            if line == "# EOF" {
                break;
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let mut parts = meta.splitn(3, ' ');
                let (what, name, value) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap_or(""),
                );
                if current.as_deref() != Some(name) {
                    assert!(
                        !order.contains(&name.to_owned()),
                        "family {name} split in two blocks"
                    );
                    order.push(name.to_owned());
                    current = Some(name.to_owned());
                    seen_sample = false;
                }
                assert!(!seen_sample, "{name}: metadata after samples");
                let family = families.entry(name.to_owned()).or_default();
                match what {
                    "TYPE" => family.kind = value.to_owned(),
                    "UNIT" => {
                        assert!(
                            name.ends_with(&format!("_{value}")),
                            "unit {value} not a suffix of {name}"
                        );
                        family.unit = Some(value.to_owned());
                    }
                    "HELP" => family.help = Some(value.to_owned()),
                    other => panic!("unknown metadata {other}"),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            let (labels, value) = match line[name_end..].strip_prefix('{') {
                Some(rest) => {
                    let close = rest.rfind("} ").expect("closing brace");
                    (parse_labels(&rest[..close]), &rest[close + 2..])
                }
                None => (BTreeMap::new(), line[name_end..].trim_start()),
            };
            let family_name = current.clone().expect("sample before any metadata");
            let family = families.get_mut(&family_name).unwrap();
            let suffix = name
                .strip_prefix(family_name.as_str())
                .unwrap_or_else(|| panic!("{name} outside family {family_name}"));
            let allowed: &[&str] = match family.kind.as_str() {
                "counter" => &["_total", "_created"],
                "gauge" => &[""],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                "summary" => &["", "_count", "_sum", "_created"],
                k => panic!("unexpected type {k}"),
            };
            assert!(
                allowed.contains(&suffix),
                "{name} in {} family {family_name}",
                family.kind
            );
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value {v}")),
            };
            assert!(
                series.insert(format!("{name}{labels:?}")),
                "duplicate series {line}"
            );
            seen_sample = true;
            family.samples.push((name.to_owned(), labels, value));
        }
        for (name, family) in &families {
            assert!(
                !family.kind.is_empty() && family.help.is_some(),
                "{name}: TYPE and HELP"
            );
            if family.kind == "histogram" {
                let buckets: Vec<(f64, f64)> = family
                    .samples
                    .iter()
                    .filter(|s| s.0.ends_with("_bucket"))
                    .map(|s| (s.1["le"].parse::<f64>().unwrap_or(f64::INFINITY), s.2))
                    .collect();
                assert!(
                    buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{name}: buckets"
                );
                let count = family
                    .samples
                    .iter()
                    .find(|s| s.0.ends_with("_count"))
                    .unwrap()
                    .2;
                assert_eq!(
                    buckets.last().unwrap(),
                    &(f64::INFINITY, count),
                    "{name}: +Inf == _count"
                );
            }
        }
        families
    }

    fn value(f: &Family, labels: &[(&str, &str)]) -> f64 {
        f.samples
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.1.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no sample {labels:?}"))
            .2
    }

    #[test]
    fn openmetrics_parses_strictly_with_the_expected_figures() {
        let text = render_metrics(&record(), MetricsFormat::OpenMetrics).unwrap();
        let families = parse_openmetrics(&text);
        let e2e = &families["brokerbench_e2e_latency_seconds"];
        assert_eq!(e2e.kind, "histogram");
        assert_eq!(e2e.unit.as_deref(), Some("seconds"));
        // Fixed bounds and the 3 ms alert threshold (20 ms is already fixed).
        assert_eq!(value(e2e, &[("le", "0.0001")]), 1.0);
        assert_eq!(value(e2e, &[("le", "0.0025")]), 3.0);
        // 3.0 ms itself is not counted under 3 ms: HdrHistogram reports it as its bucket's
        // highest equivalent (3.001 ms), and the buckets agree with the reported figures.
        assert_eq!(value(e2e, &[("le", "0.003")]), 4.0);
        assert_eq!(value(e2e, &[("le", "0.005")]), 6.0);
        assert_eq!(value(e2e, &[("le", "60.0")]), 7.0);
        assert_eq!(
            value(e2e, &[("le", "+Inf")]),
            8.0,
            "the 90 s stall only under +Inf"
        );
        let sum = e2e
            .samples
            .iter()
            .find(|s| s.0.ends_with("_sum"))
            .unwrap()
            .2;
        assert!((sum - 90.0126).abs() < 0.1, "{sum}");
        for (_, labels, _) in &e2e.samples {
            assert_eq!(labels["scenario"], "chat-1to1");
            assert_eq!(labels["backend"], "reference");
            assert_eq!(labels["run_id"], "r\"1", "escaped and read back");
        }
        let q = &families["brokerbench_e2e_latency_quantile_seconds"];
        assert_eq!(q.kind, "summary");
        let p50 = value(q, &[("quantile", "0.5")]);
        assert!((p50 - 0.002_9).abs() < 0.000_01, "{p50}");
        assert!(value(q, &[("quantile", "1.0")]) > 89.0);
        let availability = &families["brokerbench_availability_ratio"];
        assert_eq!(value(availability, &[("operation", "publish")]), 1.0);
        assert_eq!(
            availability.samples.len(),
            1,
            "null delivery availability is left out"
        );
        let publishes = &families["brokerbench_publishes"];
        assert_eq!(publishes.kind, "counter");
        assert_eq!(value(publishes, &[("outcome", "confirmed")]), 11_990.0);
        assert_eq!(value(publishes, &[("outcome", "unknown")]), 10.0);
        assert_eq!(
            value(
                &families["brokerbench_correctness_anomalies"],
                &[("kind", "lost")]
            ),
            3.0
        );
        assert_eq!(value(&families["brokerbench_publish_rate"], &[]), 1_998.3);
        assert!((value(&families["brokerbench_broker_cpu_ratio"], &[]) - 0.118).abs() < 1e-12);
        assert!(
            !families.contains_key("brokerbench_broker_cpu_max_ratio"),
            "null figure, no family"
        );
        assert!(families.keys().all(|k| k.starts_with("brokerbench_")));
    }

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let text = render_metrics(&record(), MetricsFormat::Prometheus).unwrap();
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(text.contains("# HELP brokerbench_publishes_total "));
        assert!(text.contains("# TYPE brokerbench_publishes_total counter\n"));
        assert!(text.contains("# TYPE brokerbench_e2e_latency_seconds histogram\n"));
        // Every sample line belongs to the family announced before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line} after TYPE {family}");
            }
        }
    }

    #[test]
    fn thresholds_become_buckets() {
        let rules = serde_json::json!([
            {"warning": "5ms", "critical": "1m 30s"},
            {"warning": 0.999},
            {"critical": "250us"},
        ]);
        assert_eq!(
            alert_thresholds_ns(&rules),
            vec![5_000_000, 90_000_000_000, 250_000]
        );
        let bounds = bucket_bounds_ns(&rules);
        assert_eq!(
            bounds.len(),
            FIXED_BUCKETS_NS.len() + 1,
            "5ms and 250us are already fixed"
        );
        assert!(bounds.contains(&90_000_000_000));
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            bucket_bounds_ns(&serde_json::json!(null)),
            FIXED_BUCKETS_NS.to_vec()
        );
    }

    #[test]
    fn numbers_are_canonical() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(seconds(2_500_000), "0.0025");
        assert_eq!(seconds(60_000_000_000), "60.0");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
