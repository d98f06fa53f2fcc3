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

mod charts;
mod faults;
pub(crate) mod html;
mod plots;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use plotters::style::RGBColor;
use serde_json::Value;

use crate::compare::{Best, Comparison, run_labels};
use crate::histogram::{HistogramError, LatencyHistogram};
use crate::human;
use crate::record::RunRecord;
use charts::charts;
use html::{escape, objects_table};
use plots::Chart;
pub use plots::PlotError;

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
