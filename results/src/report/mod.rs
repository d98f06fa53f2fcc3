//! The HTML report of one or more run records: one self-contained page (inline CSS and
//! SVG, no script, nothing fetched) that a person can read at a glance, offline or as a
//! CI artefact.
//!
//! Sections, in order:
//! 1. **Runs**: which backend, endpoint, run id, start, measured length, partial or not,
//!    one colour per run used by every chart.
//! 2. **Summary**: the key figures of [`crate::compare::KEY_FIGURES`] side by side, the
//!    best value of each ranked row highlighted, differences against the first run.
//! 3. **Latency distribution**: end-to-end and publish-ack latency by percentile on
//!    HdrHistogram's log scale (`x = log10(1/(1-p))`: 90 %, 99 %, … 99.999 %), corrected
//!    (solid) and uncorrected (dashed), every run overlaid.
//! 4. **Timelines** per 1-second interval: offered (dashed) vs achieved publish rate,
//!    deliveries per second, end-to-end p99 (solid) and p50 (dashed), delivery (solid) and
//!    publish (dashed) availability, broker CPU and RSS; the drain after the measured
//!    phase is shaded.
//! 5. **Alert verdicts**, where the records have them. (A conformance report has a page of
//!    its own: [`crate::conformance::html`].)
//! 6. **Scenario** and **host** facts, and the records' notes.
//!
//! The charts are drawn with plotters' SVG back-end. The page depends only on the
//! records, so rendering the same records again gives the same bytes.

mod faults;
pub(crate) mod html;
mod plots;

use std::fmt::Write as _;

use plotters::style::RGBColor;
use serde_json::Value;

use crate::compare::{Best, Comparison, run_labels};
use crate::histogram::{HistogramError, LatencyHistogram};
use crate::human;
use crate::record::{IntervalFigures, RunRecord};
use html::{escape, objects_table};
pub use plots::PlotError;
use plots::{Chart, Line, PERCENTILE_AXIS_END, XAxis, YAxis, quantile_at};

/// One colour per run, in record order (Tableau 10: distinct, colour-blind aware).
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// Points per percentile curve (before flat stretches are collapsed).
const PERCENTILE_STEPS: u32 = 500;

/// Why the report could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No records were given.
    #[error("no run records to report on")]
    Empty,
    /// A record's stored histograms do not decode.
    #[error("run {label} ({run_id}): cannot decode its histograms")]
    Histogram {
        /// The run's label in the report.
        label: String,
        /// Its run id.
        run_id: String,
        /// The histogram error.
        #[source]
        source: HistogramError,
    },
    /// A chart could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// One run in a report: its record and, optionally, where it was read from (shown in the
/// runs table).
#[derive(Clone, Copy, Debug)]
pub struct ReportRun<'a> {
    /// The run record.
    pub record: &'a RunRecord,
    /// The record's file name or path, as the reader should see it.
    pub source: Option<&'a str>,
}

/// The run's data a chart needs.
struct Run<'a> {
    record: &'a RunRecord,
    label: String,
    color: RGBColor,
    e2e: LatencyHistogram,
    e2e_uncorrected: LatencyHistogram,
    publish_ack: LatencyHistogram,
    publish_ack_uncorrected: LatencyHistogram,
}

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// The percentile curve of a histogram in (axis position, µs), the values exactly those
/// of [`LatencyHistogram::value_at_quantile_ns`], computed in one pass over the buckets;
/// flat stretches keep only their ends, so the SVG stays small and steps stay square.
fn percentile_curve(h: &LatencyHistogram) -> Vec<(f64, Option<f64>)> {
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
fn charts(runs: &[Run<'_>]) -> Vec<(&'static str, Chart, &'static str)> {
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

fn swatch(run: &Run<'_>) -> String {
    format!(
        "<span class=\"swatch\" style=\"background:{}\"></span>{}",
        hex(run.color),
        escape(&run.label)
    )
}

fn section_runs(out: &mut String, runs: &[Run<'_>], sources: &[Option<&str>]) {
    out.push_str("<section id=\"runs\"><h2>Runs</h2>\n<div class=\"scroll\"><table class=\"data runs\"><thead><tr>");
    for h in [
        "run",
        "scenario",
        "backend",
        "endpoint",
        "broker version",
        "run id",
        "started (UTC)",
        "measured",
        "intervals",
        "status",
        "record",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    for (run, source) in runs.iter().zip(sources) {
        let r = run.record;
        let status = if r.partial {
            format!(
                "<span class=\"partial\">PARTIAL: {}</span>",
                escape(r.partial_reason.as_deref().unwrap_or("interrupted"))
            )
        } else {
            "complete".to_owned()
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            swatch(run),
            escape(&r.scenario_name),
            escape(&r.backend.name),
            escape(r.backend.url.as_deref().unwrap_or("-")),
            escape(r.backend.version.as_deref().unwrap_or("-")),
            escape(&r.run_id),
            escape(&human::utc_seconds(r.started_at)),
            r.figures.duration_s,
            r.figures.intervals.len(),
            status,
            escape(source.unwrap_or("-")),
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn section_summary(out: &mut String, runs: &[Run<'_>]) {
    let records: Vec<&RunRecord> = runs.iter().map(|r| r.record).collect();
    let comparison = Comparison::new(&records);
    out.push_str("<section id=\"summary\"><h2>Summary</h2>\n");
    if runs.len() > 1 {
        let _ = writeln!(
            out,
            "<p class=\"note\">Best value per row highlighted (lower latency, loss and resource use; higher availability and achieved rate). Differences are against {}.</p>",
            escape(&runs[0].label)
        );
    }
    out.push_str("<div class=\"scroll\"><table class=\"figures\"><thead><tr><th>figure</th>");
    for run in runs {
        let _ = write!(out, "<th>{}</th>", swatch(run));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in &comparison.rows {
        let _ = write!(out, "<tr><td>{}</td>", escape(row.figure.name));
        for (i, value) in row.values.iter().enumerate() {
            let class = if row.best == Best::Run(i) {
                "num best"
            } else {
                "num"
            };
            let _ = write!(
                out,
                "<td class=\"{class}\">{}",
                escape(&row.figure.unit.format(*value))
            );
            if i > 0 && value.is_some() {
                if let Some(rel) = row.relative[i].filter(|r| *r != 0.0) {
                    let _ = write!(
                        out,
                        "<span class=\"rel\">{}</span>",
                        crate::compare::format_percent_change(rel)
                    );
                }
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn figure(out: &mut String, id: &str, chart: &Chart, caption: &str) -> Result<(), ReportError> {
    let _ = write!(out, "<figure id=\"{id}\">");
    if chart.is_empty() {
        let _ = write!(
            out,
            "<p class=\"note\"><strong>{}</strong>: not measured in these runs.</p>",
            escape(&chart.title)
        );
    } else {
        out.push_str(&chart.to_svg()?);
    }
    let _ = writeln!(out, "<figcaption>{}</figcaption></figure>", escape(caption));
    Ok(())
}

fn section_verdicts(out: &mut String, runs: &[Run<'_>]) {
    out.push_str("<section id=\"verdicts\"><h2>Alert verdicts</h2>\n");
    let mut any = false;
    for run in runs {
        let alerts: Vec<&Value> = run.record.verdicts.iter().collect();
        if alerts.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(out, "<h3>{}</h3>", swatch(run));
        objects_table(out, &alerts);
    }
    if !any {
        out.push_str("<p class=\"note\">These records carry no alert verdicts (their <code>verdicts</code> list is empty).</p>\n");
    }
    out.push_str("</section>\n");
}

fn section_scenarios(out: &mut String, runs: &[Run<'_>]) {
    out.push_str("<section id=\"scenario\"><h2>Scenario</h2>\n");
    let mut seen: Vec<&Value> = Vec::new();
    for run in runs {
        let scenario = &run.record.scenario;
        if seen.contains(&scenario) {
            continue;
        }
        seen.push(scenario);
        let users: Vec<String> = runs
            .iter()
            .filter(|r| &r.record.scenario == scenario)
            .map(swatch)
            .collect();
        let _ = writeln!(
            out,
            "<h3>{}</h3><p class=\"note\">Used by: {}</p>",
            escape(&run.record.scenario_name),
            users.join(", ")
        );
        let Some(map) = scenario.as_object() else {
            let _ = writeln!(out, "<pre>{}</pre>", escape(&scenario.to_string()));
            continue;
        };
        out.push_str("<div class=\"scroll\"><table class=\"data\"><tbody>\n");
        for (key, value) in map {
            let is_table = value
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object));
            if !is_table {
                let _ = writeln!(
                    out,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(key),
                    escape(&html::cell_text(value))
                );
            }
        }
        out.push_str("</tbody></table></div>\n");
        for (key, value) in map {
            if let Some(rows) = value
                .as_array()
                .filter(|a| !a.is_empty() && a.iter().all(Value::is_object))
            {
                let _ = writeln!(out, "<h3>{}</h3>", escape(key));
                let rows: Vec<&Value> = rows.iter().collect();
                objects_table(out, &rows);
            }
        }
        let pretty = serde_json::to_string_pretty(scenario).unwrap_or_default();
        let _ = writeln!(
            out,
            "<details><summary>The scenario as recorded (JSON)</summary><pre>{}</pre></details>",
            escape(&pretty)
        );
    }
    out.push_str("</section>\n");
}

fn section_host(out: &mut String, runs: &[Run<'_>]) {
    out.push_str("<section id=\"host\"><h2>Host</h2>\n<div class=\"scroll\"><table class=\"data\"><thead><tr><th>fact</th>");
    for run in runs {
        let _ = write!(out, "<th>{}</th>", swatch(run));
    }
    out.push_str("</tr></thead><tbody>\n");
    type Fact = fn(&RunRecord) -> String;
    let facts: [(&str, Fact); 7] = [
        ("logical CPUs", |r| {
            r.host.cores.map_or("-".to_owned(), |c| c.to_string())
        }),
        ("memory", |r| {
            human::bytes(r.host.memory_bytes.map(|b| b as f64))
        }),
        ("CPU model", |r| {
            r.host.cpu_model.clone().unwrap_or_else(|| "-".to_owned())
        }),
        ("OS", |r| r.host.os.clone()),
        ("kernel", |r| {
            r.host.kernel.clone().unwrap_or_else(|| "-".to_owned())
        }),
        ("architecture", |r| r.host.arch.clone()),
        ("brokerbench", |r| r.host.brokerbench_version.clone()),
    ];
    for (name, fact) in facts {
        let _ = write!(out, "<tr><th>{name}</th>");
        for run in runs {
            let _ = write!(out, "<td>{}</td>", escape(&fact(run.record)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn section_notes(out: &mut String, runs: &[Run<'_>]) {
    if runs.iter().all(|r| r.record.notes.is_empty()) {
        return;
    }
    out.push_str("<section id=\"notes\"><h2>Notes</h2>\n");
    for run in runs.iter().filter(|r| !r.record.notes.is_empty()) {
        let _ = writeln!(out, "<h3>{}</h3><ul class=\"notes\">", swatch(run));
        for note in &run.record.notes {
            let _ = writeln!(out, "<li>{}</li>", escape(note));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
}

/// Renders the report of `runs` (overlaid in one page, in this order; the first is the
/// baseline of the summary's differences).
///
/// # Errors
/// [`ReportError::Empty`] without runs, [`ReportError::Histogram`] for a record whose
/// histograms do not decode, [`ReportError::Plot`] if a chart cannot be drawn.
pub fn render_report(runs: &[ReportRun<'_>]) -> Result<String, ReportError> {
    if runs.is_empty() {
        return Err(ReportError::Empty);
    }
    let records: Vec<&RunRecord> = runs.iter().map(|r| r.record).collect();
    let labels = run_labels(&records);
    let mut data = Vec::with_capacity(runs.len());
    for (i, (run, label)) in runs.iter().zip(labels).enumerate() {
        let set = run
            .record
            .latency_histograms()
            .map_err(|source| ReportError::Histogram {
                label: label.clone(),
                run_id: run.record.run_id.clone(),
                source,
            })?;
        data.push(Run {
            record: run.record,
            label,
            color: PALETTE[i % PALETTE.len()],
            e2e: set.e2e,
            e2e_uncorrected: set.e2e_uncorrected,
            publish_ack: set.publish_ack,
            publish_ack_uncorrected: set.publish_ack_uncorrected,
        });
    }
    let sources: Vec<Option<&str>> = runs.iter().map(|r| r.source).collect();

    let mut scenarios: Vec<&str> = Vec::new();
    for r in &records {
        if !scenarios.contains(&r.scenario_name.as_str()) {
            scenarios.push(&r.scenario_name);
        }
    }
    let backends: Vec<&str> = data.iter().map(|r| r.label.as_str()).collect();
    let title = format!(
        "brokerbench report: {} on {}",
        scenarios.join(", "),
        backends.join(", ")
    );

    let mut out = String::with_capacity(256 * 1024);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{}</style>\n</head>\n<body>\n<main>",
        escape(&title),
        html::STYLE
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        out,
        "<p class=\"lead\">{} run record(s). Latencies are end to end unless named otherwise, measured from the intended send time (coordinated-omission corrected) with the uncorrected figure beside them.</p>",
        runs.len()
    );
    section_runs(&mut out, &data, &sources);
    section_summary(&mut out, &data);

    let charts = charts(&data);
    out.push_str("<section id=\"latency\"><h2>Latency distribution</h2>\n<p class=\"note\">Percentile on HdrHistogram's log scale: each step right is one more nine (90 %, 99 %, 99.9 %, …). A flat line at the right end is the maximum.</p>\n<div class=\"grid\">\n");
    for (id, chart, caption) in charts.iter().take(2) {
        figure(&mut out, id, chart, caption)?;
    }
    out.push_str("</div></section>\n<section id=\"timelines\"><h2>Timelines</h2>\n<p class=\"note\">One point per 1-second interval of the run clock. The shaded part is the drain after the measured phase: nothing new is sent, late completions still count. Fault windows, when the runs had faults, are shaded in red.</p>\n<div class=\"grid\">\n");
    for (id, chart, caption) in charts.iter().skip(2) {
        figure(&mut out, id, chart, caption)?;
    }
    out.push_str("</div></section>\n");

    faults::section(&mut out, data.iter().map(|r| (swatch(r), r.record)));
    section_verdicts(&mut out, &data);
    section_scenarios(&mut out, &data);
    section_host(&mut out, &data);
    section_notes(&mut out, &data);
    let _ = writeln!(
        out,
        "<footer>Rendered by brokerbench-results {} from the run records alone: no script, nothing fetched.</footer>\n</main>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{
        BackendInfo, EncodedHistograms, HostFacts, IntervalAvailability, IntervalCompute,
        LatencySummaries, RunFigures, RunInfo, VolumeFigures,
    };
    use crate::recorder::LatencySet;

    fn record(backend: &str, scale: u64) -> RunRecord {
        let mut rng = fastrand::Rng::with_seed(scale);
        let mut run = LatencySet::default();
        let mut intervals = Vec::new();
        for index in 0..8u64 {
            let mut set = LatencySet::default();
            if index < 6 {
                for _ in 0..2_000 {
                    set.e2e.record(rng.u64(50_000..400_000) * scale);
                    set.e2e_uncorrected.record(rng.u64(40_000..200_000) * scale);
                    set.publish_ack.record(rng.u64(30_000..300_000) * scale);
                    set.publish_ack_uncorrected
                        .record(rng.u64(20_000..100_000) * scale);
                    set.send_delay.record(rng.u64(0..50_000));
                }
            }
            run.add(&set);
            intervals.push(IntervalFigures {
                index,
                latency: LatencySummaries::of(&set),
                histograms: EncodedHistograms::encode(&set).unwrap(),
                availability: IntervalAvailability {
                    publish: Some(1.0),
                    delivery: Some(if index == 3 { 0.998 } else { 1.0 }),
                    unavailable: index == 3,
                },
                volume: VolumeFigures {
                    offered_rate: if index < 6 { 2_000.0 } else { 0.0 },
                    achieved_publish_rate: if index < 6 { 1_990.0 } else { 0.0 },
                    achieved_delivery_rate: if index < 6 { 3_980.0 } else { 0.0 },
                    ..VolumeFigures::default()
                },
                compute: IntervalCompute {
                    cpu_percent: Some(10.0 + index as f64),
                    rss_bytes: Some((14 + index) << 20),
                },
                ..IntervalFigures::default()
            });
        }
        let t = time::macros::datetime!(2026-11-22 10:00:00 UTC);
        let mut record = RunRecord::new(
            RunInfo {
                run_id: format!("run-{backend}"),
                scenario_name: "chat-1to1".into(),
                scenario: serde_json::json!({
                    "name": "chat-1to1",
                    "duration": "6s",
                    "workloads": [{"name": "dm", "topics": 200, "schedule": {"kind": "constant", "rate": 2000.0}}],
                    "alerts": [{"signal": "e2e.p99", "warning": "5ms", "critical": "20ms"}],
                }),
                alert_rules: serde_json::json!([]),
                backend: BackendInfo {
                    name: backend.into(),
                    url: Some("tcp://127.0.0.1:7000".into()),
                    version: None,
                },
                host: HostFacts::detect("0.1.0"),
                started_at: t,
                ended_at: t,
            },
            RunFigures {
                duration_s: 6.0,
                latency: LatencySummaries::of(&run),
                histograms: EncodedHistograms::encode(&run).unwrap(),
                intervals,
                ..RunFigures::default()
            },
        );
        record.notes.push("a <note> with markup".into());
        record
    }

    #[test]
    fn report_of_two_runs_has_every_section_and_plot() {
        let a = record("reference", 1);
        let mut b = record("nats", 2);
        b.verdicts = vec![
            serde_json::json!({"rule": "end-to-end latency", "severity": "WARNING", "observed": "6.1ms"}),
        ];
        let html = render_report(&[
            ReportRun {
                record: &a,
                source: Some("a.json"),
            },
            ReportRun {
                record: &b,
                source: None,
            },
        ])
        .unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>brokerbench report: chat-1to1 on reference, nats</title>"));
        for id in [
            "runs",
            "summary",
            "latency",
            "timelines",
            "verdicts",
            "scenario",
            "host",
            "notes",
        ] {
            assert!(
                html.contains(&format!("<section id=\"{id}\">")),
                "section {id}"
            );
        }
        for (id, _, _) in charts(&[]) {
            let start = html
                .find(&format!("<figure id=\"{id}\">"))
                .unwrap_or_else(|| panic!("{id}"));
            let figure = &html[start..start + html[start..].find("</figure>").unwrap()];
            assert!(figure.contains("<svg"), "{id} has a plot");
            assert!(
                figure.contains("reference") && figure.contains("nats"),
                "{id}: legend names both runs"
            );
        }
        assert_eq!(html.matches("<svg").count(), 8);
        // Colours: one per run, in the swatches and in the plots.
        assert!(html.contains("#4e79a7") && html.contains("#f28e2b"));
        assert!(
            html.contains("stroke=\"#4E79A7\"") || html.contains("stroke=\"#4e79a7\""),
            "run colour in the SVG"
        );
        // Summary: lower latency wins.
        let p99 = html.find("<td>e2e p99</td>").unwrap();
        let row = &html[p99..p99 + html[p99..].find("</tr>").unwrap()];
        assert!(
            row.find("num best").unwrap() < row.find("<span class=\"rel\">").unwrap(),
            "{row}"
        );
        // Verdicts from `verdicts`.
        assert!(html.contains("<td class=\"warn\">WARNING</td>"));
        // Scenario facts, workloads table, escaped notes.
        assert!(html.contains("<h3>workloads</h3>") && html.contains("<td>dm</td>"));
        assert!(html.contains("a &lt;note&gt; with markup"));
        // Self-contained: nothing to fetch, nothing to run.
        for forbidden in ["<script", "<link", "<img", "src=", "url(", "@import"] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        // The same records give the same bytes.
        let again = render_report(&[
            ReportRun {
                record: &a,
                source: Some("a.json"),
            },
            ReportRun {
                record: &b,
                source: None,
            },
        ])
        .unwrap();
        assert_eq!(html, again);
    }

    #[test]
    fn a_single_run_without_samples_still_renders() {
        let mut r = record("reference", 1);
        for i in &mut r.figures.intervals {
            i.compute = IntervalCompute::default();
        }
        let html = render_report(&[ReportRun {
            record: &r,
            source: None,
        }])
        .unwrap();
        assert!(html.contains("<strong>Broker CPU</strong>: not measured in these runs."));
        assert!(html.contains("These records carry no alert verdicts"));
        assert!(matches!(render_report(&[]), Err(ReportError::Empty)));
    }

    #[test]
    fn percentile_curve_is_monotonic_and_compact() {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let curve = percentile_curve(&h);
        assert!(curve.len() > 50 && curve.len() <= PERCENTILE_STEPS as usize + 1);
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(curve.first().unwrap().0, 0.0);
        assert_eq!(curve.last().unwrap().0, PERCENTILE_AXIS_END);
        assert!(
            (curve.last().unwrap().1.unwrap() - 10_000.0).abs() < 10.0,
            "ends at the max"
        );
        let mut flat = LatencyHistogram::new();
        flat.record(5_000);
        // The minimum (quantile 0 is the lowest value), then one flat stretch to the end.
        assert_eq!(
            percentile_curve(&flat).len(),
            3,
            "{:?}",
            percentile_curve(&flat)
        );
        assert!(percentile_curve(&LatencyHistogram::new()).is_empty());
    }

    /// The one-pass curve gives exactly HdrHistogram's `value_at_quantile` at every step.
    #[test]
    fn percentile_curve_matches_value_at_quantile() {
        let mut rng = fastrand::Rng::with_seed(3);
        for n in [1usize, 7, 1_000, 50_000] {
            let mut h = LatencyHistogram::new();
            for _ in 0..n {
                h.record(rng.u64(1..5_000) * rng.u64(1..2_000));
            }
            let curve = percentile_curve(&h);
            for (x, y) in curve {
                let expected = h.value_at_quantile_ns(quantile_at(x).min(1.0)).unwrap();
                let expected = (expected as f64 / 1_000.0).max(1e-3);
                assert_eq!(y, Some(expected), "n={n} x={x}");
            }
        }
    }
}
