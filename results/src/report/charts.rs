//! The report's charts: what each one plots, and the data drawn from the runs
//! (percentile curves of the histograms, per-interval timelines).

use super::Run;
use super::faults;
use super::plots::{Chart, Line, PERCENTILE_AXIS_END, XAxis, YAxis, quantile_at};
use crate::histogram::LatencyHistogram;
use crate::record::IntervalFigures;

/// Points per percentile curve (before flat stretches are collapsed).
pub(super) const PERCENTILE_STEPS: u32 = 500;

/// The percentile curve of a histogram in (axis position, µs), the values exactly those
/// of [`LatencyHistogram::value_at_quantile_ns`], computed in one pass over the buckets;
/// flat stretches keep only their ends, so the SVG stays small and steps stay square.
pub(super) fn percentile_curve(h: &LatencyHistogram) -> Vec<(f64, Option<f64>)> {
    let hdr = h.as_hdr();
    let total = hdr.len();
    if total == 0 {
        return Vec::new();
    }
    // (highest equivalent value, count) of each recorded bucket, ascending.
    let mut buckets = hdr
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()));
    let (mut cumulative, mut value) = (0u64, 0u64);
    let mut points: Vec<(f64, Option<f64>)> = Vec::new();
    let mut pending: Option<(f64, u64)> = None;
    let mut last: Option<u64> = None;
    let y = |ns: u64| Some((ns as f64 / 1_000.0).max(1e-3));
    for i in 0..=PERCENTILE_STEPS {
        let x = PERCENTILE_AXIS_END * f64::from(i) / f64::from(PERCENTILE_STEPS);
        let q = quantile_at(x).min(1.0);
        // HdrHistogram's rule: the first bucket whose cumulative count reaches
        // ceil(q × total) (at least 1); its lowest equivalent for q = 0, else its highest.
        let target = ((q * total as f64).ceil() as u64).max(1);
        while cumulative < target {
            match buckets.next() {
                Some((v, count)) => {
                    cumulative += count;
                    value = v;
                }
                None => break,
            }
        }
        let ns = if q == 0.0 {
            hdr.lowest_equivalent(value)
        } else {
            value
        };
        if last == Some(ns) {
            if i == PERCENTILE_STEPS {
                points.push((x, y(ns)));
            } else {
                pending = Some((x, ns));
            }
            continue;
        }
        if let Some((px, pns)) = pending.take() {
            points.push((px, y(pns)));
        }
        points.push((x, y(ns)));
        last = Some(ns);
    }
    points
}

/// The midpoint of each interval on the run clock, with a figure of it.
fn timeline(
    intervals: &[IntervalFigures],
    value: impl Fn(&IntervalFigures) -> Option<f64>,
) -> Vec<(f64, Option<f64>)> {
    intervals
        .iter()
        .map(|i| (i.index as f64 + 0.5, value(i)))
        .collect()
}

fn seconds_axis(runs: &[Run<'_>]) -> XAxis {
    let end = runs
        .iter()
        .map(|r| r.record.figures.intervals.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut drain_from: Vec<f64> = runs.iter().map(|r| r.record.figures.duration_s).collect();
    drain_from.sort_by(f64::total_cmp);
    drain_from.dedup();
    XAxis::Seconds {
        end,
        drain_from,
        faults: faults::windows(runs.iter().map(|r| r.record)),
    }
}

/// One line per run of a timeline: legend suffix, dashed, the figure of an interval.
type Series = (&'static str, bool, fn(&IntervalFigures) -> Option<f64>);

/// The charts, each with an id and a caption.
pub(super) fn charts(runs: &[Run<'_>]) -> Vec<(&'static str, Chart, &'static str)> {
    let percentile =
        |title: &str,
         corrected: for<'r> fn(&'r Run<'_>) -> &'r LatencyHistogram,
         uncorrected: for<'r> fn(&'r Run<'_>) -> &'r LatencyHistogram| {
            let mut lines = Vec::new();
            for r in runs {
                lines.push(Line::from_optional(
                    r.label.clone(),
                    r.color,
                    false,
                    percentile_curve(corrected(r)),
                ));
                lines.push(Line::from_optional(
                    format!("{} uncorrected", r.label),
                    r.color,
                    true,
                    percentile_curve(uncorrected(r)),
                ));
            }
            Chart {
                title: title.to_owned(),
                x: XAxis::Percentile,
                y: YAxis::LatencyUs,
                x_desc: "percentile".to_owned(),
                y_desc: "latency (log scale)".to_owned(),
                lines,
            }
        };
    let time = |title: &str, y: YAxis, y_desc: &str, series: &[Series]| {
        let mut lines = Vec::new();
        for r in runs {
            for (suffix, dashed, value) in series {
                let label = if suffix.is_empty() {
                    r.label.clone()
                } else {
                    format!("{} {suffix}", r.label)
                };
                lines.push(Line::from_optional(
                    label,
                    r.color,
                    *dashed,
                    timeline(&r.record.figures.intervals, value),
                ));
            }
        }
        Chart {
            title: title.to_owned(),
            x: seconds_axis(runs),
            y,
            x_desc: "seconds since the start of the measured phase".to_owned(),
            y_desc: y_desc.to_owned(),
            lines,
        }
    };
    vec![
        (
            "plot-e2e-percentiles",
            percentile(
                "End-to-end latency by percentile",
                |r| &r.e2e,
                |r| &r.e2e_uncorrected,
            ),
            "Solid: from the intended send time (coordinated-omission corrected). Dashed: from the actual send time.",
        ),
        (
            "plot-publish-ack-percentiles",
            percentile(
                "Publish-ack latency by percentile",
                |r| &r.publish_ack,
                |r| &r.publish_ack_uncorrected,
            ),
            "Publish to broker confirmation. Solid: corrected; dashed: uncorrected.",
        ),
        (
            "plot-rates",
            time(
                "Offered vs achieved publish rate",
                YAxis::Rate,
                "messages per second",
                &[
                    ("published", false, |i| Some(i.volume.achieved_publish_rate)),
                    ("offered", true, |i| Some(i.volume.offered_rate)),
                ],
            ),
            "Solid: publishes confirmed in the interval. Dashed: what the open-loop schedule offered. Shaded: the drain after the measured phase.",
        ),
        (
            "plot-deliveries",
            time(
                "Deliveries per second",
                YAxis::Rate,
                "deliveries per second",
                &[("", false, |i| Some(i.volume.achieved_delivery_rate))],
            ),
            "First deliveries per subscriber in each interval.",
        ),
        (
            "plot-latency-timeline",
            time(
                "End-to-end latency per interval",
                YAxis::LatencyUs,
                "latency (log scale)",
                &[
                    ("p99", false, |i| i.latency.e2e.p99_us),
                    ("p50", true, |i| i.latency.e2e.p50_us),
                ],
            ),
            "Solid: p99. Dashed: p50. Corrected for coordinated omission; gaps are intervals without deliveries.",
        ),
        (
            "plot-availability",
            time(
                "Availability per interval",
                YAxis::Percent,
                "availability",
                &[
                    ("delivery", false, |i| {
                        i.availability.delivery.map(|a| a * 100.0)
                    }),
                    ("publish", true, |i| {
                        i.availability.publish.map(|a| a * 100.0)
                    }),
                ],
            ),
            "Solid: delivered / (delivered + lost + late). Dashed: confirmed / attempted publishes.",
        ),
        (
            "plot-cpu",
            time(
                "Broker CPU",
                YAxis::Cpu,
                "percent of one core",
                &[("", false, |i| i.compute.cpu_percent)],
            ),
            "Mean CPU of the broker process in each interval.",
        ),
        (
            "plot-rss",
            time(
                "Broker memory (RSS)",
                YAxis::MiB,
                "resident set size",
                &[("", false, |i| {
                    i.compute.rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0))
                })],
            ),
            "Resident set size of the broker process.",
        ),
    ]
}
