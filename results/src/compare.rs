//! Side-by-side comparison of run records: the key figures of each run, the relative
//! difference of each against the first run (the baseline), and which run is better per
//! figure.
//!
//! ```text
//! chat-1to1: 2 runs, baseline reference
//!   reference  run 20261122t101315-1a2b  2026-11-22T10:13:15Z  measured 6.0 s
//!   nats       run 20261122t101402-9c3d  2026-11-22T10:14:02Z  measured 6.0 s
//!
//! figure                     reference        nats     Δ nats  better
//! e2e p50                     188.9 µs    210.4 µs    +11.4 %  reference
//! delivery availability      100.000 %   100.000 %        0 %  tie
//! ```
//!
//! Lower is better for latencies, losses and resource use; higher is better for
//! availability and achieved rates; the offered rate is the same workload on both sides
//! and is not ranked.

use std::fmt::Write as _;

use crate::human;
use crate::record::RunRecord;

/// Which direction of a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Lower is better (latency, loss, resource use).
    Lower,
    /// Higher is better (availability, achieved rate).
    Higher,
    /// Not ranked (the offered rate: the workload, not a result).
    Neither,
}

/// How a figure's value is expressed and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds, shown as ns/µs/ms/s.
    LatencyUs,
    /// A ratio in `0..=1`, shown as a percentage.
    Ratio,
    /// Messages per second.
    Rate,
    /// A plain count.
    Count,
    /// CPU, percent of one core.
    CpuPercent,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// `value` in this unit for a human (`-` when absent).
    pub fn format(self, value: Option<f64>) -> String {
        match self {
            Unit::LatencyUs => human::latency_us(value),
            Unit::Ratio => human::percent(value),
            Unit::Rate => human::rate(value),
            Unit::Count => human::count(value),
            Unit::CpuPercent => human::cpu(value),
            Unit::Bytes => human::bytes(value),
        }
    }
}

/// One figure compared across runs: a name, its unit, which direction is better and
/// where it is read from in a record.
#[derive(Clone, Copy, Debug)]
pub struct KeyFigure {
    /// Row name, e.g. `e2e p99`.
    pub name: &'static str,
    /// How the value is expressed.
    pub unit: Unit,
    /// Which direction is better.
    pub better: Better,
    /// Reads the value from a record; `None` when the record has no such figure.
    pub value: fn(&RunRecord) -> Option<f64>,
}

macro_rules! figure {
    ($name:literal, $unit:ident, $better:ident, |$r:ident| $value:expr) => {
        KeyFigure {
            name: $name,
            unit: Unit::$unit,
            better: Better::$better,
            value: |$r: &RunRecord| $value,
        }
    };
}

/// The figures `compare` and the report's summary table show, in order.
pub const KEY_FIGURES: &[KeyFigure] = &[
    figure!("e2e p50", LatencyUs, Lower, |r| r
        .figures
        .latency
        .e2e
        .p50_us),
    figure!("e2e p90", LatencyUs, Lower, |r| r
        .figures
        .latency
        .e2e
        .p90_us),
    figure!("e2e p99", LatencyUs, Lower, |r| r
        .figures
        .latency
        .e2e
        .p99_us),
    figure!("e2e p99.9", LatencyUs, Lower, |r| r
        .figures
        .latency
        .e2e
        .p999_us),
    figure!("e2e max", LatencyUs, Lower, |r| r
        .figures
        .latency
        .e2e
        .max_us),
    figure!("e2e uncorrected p99", LatencyUs, Lower, |r| r
        .figures
        .latency
        .e2e_uncorrected
        .p99_us),
    figure!("publish-ack p50", LatencyUs, Lower, |r| r
        .figures
        .latency
        .publish_ack
        .p50_us),
    figure!("publish-ack p99", LatencyUs, Lower, |r| r
        .figures
        .latency
        .publish_ack
        .p99_us),
    figure!("send delay p99", LatencyUs, Lower, |r| r
        .figures
        .latency
        .send_delay
        .p99_us),
    figure!("publish availability", Ratio, Higher, |r| r
        .figures
        .availability
        .publish),
    figure!("delivery availability", Ratio, Higher, |r| r
        .figures
        .availability
        .delivery),
    figure!("unavailable intervals", Count, Lower, |r| Some(
        r.figures.availability.unavailable_intervals as f64
    )),
    figure!("offered rate", Rate, Neither, |r| Some(
        r.figures.volume.offered_rate
    )),
    figure!("achieved publish rate", Rate, Higher, |r| Some(
        r.figures.volume.achieved_publish_rate
    )),
    figure!("achieved delivery rate", Rate, Higher, |r| Some(
        r.figures.volume.achieved_delivery_rate
    )),
    figure!("lost", Count, Lower, |r| Some(
        r.figures.correctness.lost as f64
    )),
    figure!("duplicated", Count, Lower, |r| Some(
        r.figures.correctness.duplicated as f64
    )),
    figure!("reordered", Count, Lower, |r| Some(
        r.figures.correctness.reordered as f64
    )),
    figure!("phantom", Count, Lower, |r| Some(
        r.figures.correctness.phantom as f64
    )),
    figure!("late", Count, Lower, |r| Some(
        r.figures.correctness.late as f64
    )),
    figure!("broker cpu (mean)", CpuPercent, Lower, |r| r
        .figures
        .compute
        .cpu_percent),
    figure!("broker cpu (max)", CpuPercent, Lower, |r| r
        .figures
        .compute
        .cpu_percent_max),
    figure!("broker rss (mean)", Bytes, Lower, |r| r
        .figures
        .compute
        .rss_bytes
        .map(|b| b as f64)),
    figure!("broker rss (max)", Bytes, Lower, |r| r
        .figures
        .compute
        .rss_bytes_max
        .map(|b| b as f64)),
];

/// Two records of different scenarios where one scenario was required.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "runs of different scenarios: run {first} is `{first_scenario}`, run {other} is `{other_scenario}`"
)]
pub struct ScenarioMismatch {
    /// Index of the first record.
    pub first: usize,
    /// Its scenario name.
    pub first_scenario: String,
    /// Index of the first record whose scenario differs.
    pub other: usize,
    /// That record's scenario name.
    pub other_scenario: String,
}

/// Checks that every record ran the same scenario (by name).
///
/// # Errors
/// A [`ScenarioMismatch`] naming the first record and the first one that differs.
pub fn same_scenario(records: &[&RunRecord]) -> Result<(), ScenarioMismatch> {
    let Some(first) = records.first() else {
        return Ok(());
    };
    match records
        .iter()
        .position(|r| r.scenario_name != first.scenario_name)
    {
        None => Ok(()),
        Some(other) => Err(ScenarioMismatch {
            first: 0,
            first_scenario: first.scenario_name.clone(),
            other,
            other_scenario: records[other].scenario_name.clone(),
        }),
    }
}

/// A short, unique label per record: the backend name; where a backend appears more than
/// once, `backend #n` with `n` the record's position (1-based).
pub fn run_labels(records: &[&RunRecord]) -> Vec<String> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = &r.backend.name;
            if records.iter().filter(|o| &o.backend.name == name).count() > 1 {
                format!("{name} #{}", i + 1)
            } else {
                name.clone()
            }
        })
        .collect()
}

/// Which run is best on a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Best {
    /// This run (index) has the best value, alone.
    Run(usize),
    /// Several runs share the best value.
    Tie,
    /// The figure is not ranked, or fewer than two runs have it.
    NotRanked,
}

/// One row of a comparison.
#[derive(Clone, Debug)]
pub struct ComparisonRow {
    /// The figure compared.
    pub figure: KeyFigure,
    /// Its value in each run, in the order of the records.
    pub values: Vec<Option<f64>>,
    /// `(value - baseline) / |baseline|` for each run; `None` for the baseline itself
    /// and where either value is missing or the baseline is 0 and the value is not.
    pub relative: Vec<Option<f64>>,
    /// Which run is best.
    pub best: Best,
}

/// The comparison of several runs, the first being the baseline.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The scenario of the first run.
    pub scenario: String,
    /// A label per run (see [`run_labels`]).
    pub labels: Vec<String>,
    /// One line per run describing it (run id, start, measured duration, partial).
    pub runs: Vec<String>,
    /// One row per [`KEY_FIGURES`] entry.
    pub rows: Vec<ComparisonRow>,
}

/// `(value - baseline) / |baseline|`; 0 when both are 0; `None` when the baseline is 0
/// and the value is not (an infinite relative change says nothing).
fn relative(baseline: f64, value: f64) -> Option<f64> {
    if baseline == value {
        Some(0.0)
    } else if baseline == 0.0 {
        None
    } else {
        Some((value - baseline) / baseline.abs())
    }
}

fn best_of(better: Better, values: &[Option<f64>]) -> Best {
    let present: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .collect();
    if present.len() < 2 {
        return Best::NotRanked;
    }
    let target = match better {
        Better::Neither => return Best::NotRanked,
        Better::Lower => present.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        Better::Higher => present
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max),
    };
    let mut winners = present.iter().filter(|p| p.1 == target);
    match (winners.next(), winners.next()) {
        (Some(&(i, _)), None) => Best::Run(i),
        _ => Best::Tie,
    }
}

/// A relative change as a signed percentage: one decimal (`+11.4 %`), two below 1 %
/// (`-0.02 %`) so a small change does not read as `-0.0 %`, `0 %` for none.
pub(crate) fn format_percent_change(rel: f64) -> String {
    let pct = rel * 100.0;
    if pct == 0.0 {
        "0 %".to_owned()
    } else if pct.abs() < 1.0 {
        format!("{pct:+.2} %")
    } else {
        format!("{pct:+.1} %")
    }
}

/// A relative difference for a table cell: [`format_percent_change`]; `n/a` when it does
/// not exist (baseline 0), `-` when a value is missing.
fn format_relative(rel: Option<f64>, has_value: bool) -> String {
    match rel {
        _ if !has_value => "-".to_owned(),
        None => "n/a".to_owned(),
        Some(r) => format_percent_change(r),
    }
}

impl Comparison {
    /// Compares `records`; the first is the baseline. Check [`same_scenario`] first: a
    /// comparison of different scenarios is allowed (`--force`) but rarely meaningful.
    pub fn new(records: &[&RunRecord]) -> Self {
        let labels = run_labels(records);
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let runs = records
            .iter()
            .zip(&labels)
            .map(|(r, label)| {
                let mut line = format!(
                    "{label:<width$}  {} run {}  {}  measured {:.1} s",
                    r.scenario_name,
                    r.run_id,
                    human::utc_seconds(r.started_at),
                    r.figures.duration_s
                );
                if r.partial {
                    let _ = write!(
                        line,
                        "  PARTIAL: {}",
                        r.partial_reason.as_deref().unwrap_or("interrupted")
                    );
                }
                line
            })
            .collect();
        let rows = KEY_FIGURES
            .iter()
            .map(|figure| {
                let values: Vec<Option<f64>> = records.iter().map(|r| (figure.value)(r)).collect();
                let baseline = values.first().copied().flatten();
                let relative = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match (i, baseline, v) {
                        (0, _, _) => None,
                        (_, Some(b), Some(v)) => relative(b, *v),
                        _ => None,
                    })
                    .collect();
                ComparisonRow {
                    figure: *figure,
                    best: best_of(figure.better, &values),
                    values,
                    relative,
                }
            })
            .collect();
        Self {
            scenario: records
                .first()
                .map(|r| r.scenario_name.clone())
                .unwrap_or_default(),
            labels,
            runs,
            rows,
        }
    }

    /// The table as text cells: header, then one row per figure. Columns: figure, the
    /// baseline's value, then for every other run its value and its difference.
    fn cells(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = vec!["figure".to_owned()];
        for (i, label) in self.labels.iter().enumerate() {
            header.push(label.clone());
            if i > 0 {
                header.push(format!("Δ {label}"));
            }
        }
        header.push("better".to_owned());
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let mut cells = vec![row.figure.name.to_owned()];
                for (i, value) in row.values.iter().enumerate() {
                    cells.push(row.figure.unit.format(*value));
                    if i > 0 {
                        cells.push(format_relative(
                            row.relative[i],
                            value.is_some() && row.values[0].is_some(),
                        ));
                    }
                }
                cells.push(match row.best {
                    Best::Run(i) => self.labels[i].clone(),
                    Best::Tie => "tie".to_owned(),
                    Best::NotRanked => "-".to_owned(),
                });
                cells
            })
            .collect();
        (header, rows)
    }

    fn title(&self) -> String {
        format!(
            "{}: {} runs, baseline {}",
            self.scenario,
            self.labels.len(),
            self.labels.first().map_or("-", String::as_str)
        )
    }

    /// The comparison as an aligned plain-text table for a terminal.
    pub fn render_text(&self) -> String {
        let (header, rows) = self.cells();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let last = header.len() - 1;
        let line = |out: &mut String, cells: &[String]| {
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    out.push_str("  ");
                }
                if i == 0 || i == last {
                    out.push_str(cell);
                    if i != last {
                        out.push_str(&" ".repeat(pad));
                    }
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.push('\n');
        };
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title());
        for run in &self.runs {
            let _ = writeln!(out, "  {run}");
        }
        out.push('\n');
        line(&mut out, &header);
        for row in &rows {
            line(&mut out, row);
        }
        out
    }

    /// The comparison as a GitHub-flavoured markdown table; the best value of each ranked
    /// row is in bold.
    pub fn render_markdown(&self) -> String {
        let (header, rows) = self.cells();
        let escape = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        let _ = writeln!(out, "**{}**\n", escape(&self.title()));
        for run in &self.runs {
            let _ = writeln!(
                out,
                "- `{}`",
                run.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "| {} |",
            header
                .iter()
                .map(|h| escape(h))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let aligns: Vec<&str> = (0..header.len())
            .map(|i| {
                if i == 0 || i == header.len() - 1 {
                    "---"
                } else {
                    "---:"
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", aligns.join(" | "));
        for (row, data) in rows.iter().zip(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(col, cell)| {
                    let bold = match data.best {
                        Best::Run(i) => value_column(i) == col,
                        _ => false,
                    };
                    if bold {
                        format!("**{}**", escape(cell))
                    } else {
                        escape(cell)
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// The column of run `i`'s value in [`Comparison::cells`]: the baseline at 1, then two
/// columns (value, difference) per other run.
fn value_column(i: usize) -> usize {
    if i == 0 { 1 } else { 2 * i }
}

#[cfg(test)]
mod tests;
