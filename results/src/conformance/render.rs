//! The conformance matrix as text: for the terminal (optionally coloured) and as markdown.
//!
//! Rows are checks, columns backends. A cell shows its verdict; `!` marks a cell that
//! differs from the expected matrix. Below the matrix, every cell that is not a plain pass
//! gets one line: its verdict, its anomaly counts, its reason, and what was expected.

use std::fmt::Write as _;

use super::{Cell, ConformanceReport, Verdict};

/// ANSI colours of the verdicts on a terminal.
fn colour(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "\x1b[32m",
        Verdict::Fail => "\x1b[1;31m",
        Verdict::Unsupported => "\x1b[33m",
        Verdict::Error => "\x1b[35m",
    }
}

const RESET: &str = "\x1b[0m";

/// The text of a cell in the matrix: the verdict, `!` when it differs from the expected
/// matrix, `-` when the cell did not run.
fn cell_text(cell: Option<&Cell>) -> String {
    match cell {
        None => "-".to_owned(),
        Some(c) if c.is_unexpected() => format!("{}!", c.verdict.label()),
        Some(c) => c.verdict.label().to_owned(),
    }
}

/// The detail line of a cell that is not a plain, expected pass; `None` for those.
pub(crate) fn detail_line(cell: &Cell) -> Option<String> {
    if cell.verdict == Verdict::Pass && !cell.is_unexpected() {
        return None;
    }
    let mut line = format!("{} {}: {}", cell.backend, cell.check, cell.verdict.label());
    if cell.verdict == Verdict::Fail {
        let _ = write!(line, " ({})", cell.counts.anomaly_summary());
    }
    let _ = write!(line, " - {}", cell.reason);
    match &cell.expected {
        Some(expected) if cell.is_unexpected() => {
            let _ = write!(line, " [expected {}", expected.verdict.label());
            if let Some(reason) = &expected.reason {
                let _ = write!(line, ": {reason}");
            }
            line.push(']');
        }
        // An expected gap: what the broker documents about it.
        Some(expected) => {
            if let Some(reason) = &expected.reason {
                let _ = write!(line, " [as documented: {reason}]");
            }
        }
        None if cell.is_unexpected() => line.push_str(" [expected pass]"),
        None => {}
    }
    Some(line)
}

/// The matrix for a terminal: aligned columns, verdicts coloured when `colour` is set,
/// then one line per cell that is not a plain pass, then whether the matrix matches the
/// expected one.
pub fn render_matrix(report: &ConformanceReport, colour_output: bool) -> String {
    let names: Vec<&str> = report.backends.iter().map(|b| b.name.as_str()).collect();
    let check_width = report
        .checks
        .iter()
        .map(String::len)
        .chain(std::iter::once("check".len()))
        .max()
        .unwrap_or(5);
    let widths: Vec<usize> = names
        .iter()
        .map(|name| {
            report
                .checks
                .iter()
                .map(|check| cell_text(report.cell(check, name)).len())
                .chain(std::iter::once(name.len()))
                .max()
                .unwrap_or(name.len())
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:<check_width$}", "check");
    for (name, width) in names.iter().zip(&widths) {
        let _ = write!(out, "  {name:<width$}");
    }
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
    out.push('\n');
    for check in &report.checks {
        let _ = write!(out, "{check:<check_width$}");
        for (name, width) in names.iter().zip(&widths) {
            let cell = report.cell(check, name);
            let text = cell_text(cell);
            out.push_str("  ");
            match cell {
                Some(c) if colour_output => {
                    let _ = write!(out, "{}{text}{RESET}", colour(c.verdict));
                    out.push_str(&" ".repeat(width.saturating_sub(text.len())));
                }
                _ => {
                    let _ = write!(out, "{text:<width$}");
                }
            }
        }
        // No trailing blanks on the line.
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
    let details: Vec<String> = ordered_cells(report).filter_map(detail_line).collect();
    if !details.is_empty() {
        out.push('\n');
        for line in details {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&verdict_line(report));
    out
}

/// The cells in matrix order: backend by backend, check by check.
pub(crate) fn ordered_cells(report: &ConformanceReport) -> impl Iterator<Item = &Cell> {
    report.backends.iter().flat_map(move |b| {
        report
            .checks
            .iter()
            .filter_map(move |check| report.cell(check, &b.name))
    })
}

/// One line saying how the matrix compares with the expected one.
pub(crate) fn verdict_line(report: &ConformanceReport) -> String {
    let gate = report.gate();
    let ran = report.cells.len();
    let mut line = if gate.is_exact() {
        format!("{ran} cells, all as expected")
    } else {
        format!(
            "{ran} cells: {} regressed, {} could not run, {} other differences from the expected matrix (marked !)",
            gate.regressions.len(),
            gate.errors.len(),
            gate.other_differences.len()
        )
    };
    if report.partial {
        line.push_str("; the suite did not finish (partial)");
    }
    line.push('\n');
    line
}

/// The matrix as a markdown table (for docs and READMEs), with the reasons of the cells
/// that are not a plain pass listed under it.
pub fn render_markdown(report: &ConformanceReport) -> String {
    let mut out = String::from("| check |");
    for backend in &report.backends {
        let _ = write!(out, " {} |", backend.name);
    }
    out.push_str("\n|---|");
    for _ in &report.backends {
        out.push_str("---|");
    }
    out.push('\n');
    for check in &report.checks {
        let _ = write!(out, "| `{check}` |");
        for backend in &report.backends {
            let text = match report.cell(check, &backend.name) {
                None => "-".to_owned(),
                Some(c) => {
                    let label = match c.verdict {
                        Verdict::Fail => "**FAIL**".to_owned(),
                        v => v.label().to_owned(),
                    };
                    if c.is_unexpected() {
                        format!("{label} (expected {})", c.expected_verdict().label())
                    } else {
                        label
                    }
                }
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    let versions: Vec<String> = report
        .backends
        .iter()
        .map(|b| {
            format!(
                "{}: {}",
                b.name,
                b.version.as_deref().unwrap_or("version unknown")
            )
        })
        .collect();
    let _ = writeln!(out, "\nBackends: {}.", versions.join("; "));
    let details: Vec<String> = ordered_cells(report)
        .filter_map(detail_line)
        .map(|line| format!("- {}", line.replace('|', "\\|")))
        .collect();
    if !details.is_empty() {
        out.push('\n');
        for line in details {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{BackendColumn, Expectation};
    use crate::record::HostFacts;

    fn report() -> ConformanceReport {
        let backend = |name: &str| BackendColumn {
            name: name.into(),
            url: None,
            version: Some(format!("{name} 1.0")),
        };
        let mut report = ConformanceReport::new(
            vec!["fanout".into(), "dedup".into()],
            vec![backend("reference"), backend("nats")],
            serde_json::json!({}),
            HostFacts::detect("0"),
        );
        let cell = |check: &str, backend: &str, verdict, reason: &str| Cell {
            check: check.into(),
            backend: backend.into(),
            verdict,
            reason: reason.into(),
            counts: Default::default(),
            duration_s: 0.1,
            backend_version: None,
            expected: None,
        };
        report.push(cell(
            "fanout",
            "reference",
            Verdict::Pass,
            "3 × 200 delivered",
        ));
        report.push(cell(
            "dedup",
            "reference",
            Verdict::Pass,
            "20 ids, each once",
        ));
        let mut lossy = cell("fanout", "nats", Verdict::Fail, "subscriber 2 missed 4");
        lossy.counts.lost = 4;
        report.push(lossy);
        let mut unsupported = cell(
            "dedup",
            "nats",
            Verdict::Unsupported,
            "the nats backend does not support dedup",
        );
        unsupported.expected = Some(Expectation {
            verdict: Verdict::Unsupported,
            reason: Some("core NATS has no message ids".into()),
        });
        report.push(unsupported);
        report.finish();
        report
    }

    #[test]
    fn terminal_matrix_aligns_and_explains() {
        let text = render_matrix(&report(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "check   reference  nats");
        assert_eq!(lines[1], "fanout  pass       FAIL!");
        assert_eq!(lines[2], "dedup   pass       unsupported");
        assert!(
            text.contains("nats fanout: FAIL (lost 4) - subscriber 2 missed 4 [expected pass]"),
            "{text}"
        );
        assert!(
            text.contains("nats dedup: unsupported - the nats backend does not support dedup [as documented: core NATS has no message ids]\n"),
            "{text}"
        );
        assert!(text.ends_with("4 cells: 1 regressed, 0 could not run, 0 other differences from the expected matrix (marked !)\n"), "{text}");
    }

    #[test]
    fn colours_do_not_break_alignment() {
        let text = render_matrix(&report(), true);
        assert!(text.contains("\x1b[1;31mFAIL!\x1b[0m"), "{text}");
        let plain = text.replace("\x1b[32m", "").replace("\x1b[1;31m", "");
        let plain = plain.replace("\x1b[33m", "").replace("\x1b[0m", "");
        assert_eq!(plain, render_matrix(&report(), false));
    }

    #[test]
    fn markdown_table() {
        let md = render_markdown(&report());
        assert!(
            md.starts_with("| check | reference | nats |\n|---|---|---|\n"),
            "{md}"
        );
        assert!(
            md.contains("| `fanout` | pass | **FAIL** (expected pass) |"),
            "{md}"
        );
        assert!(md.contains("| `dedup` | pass | unsupported |"), "{md}");
        assert!(
            md.contains("Backends: reference: reference 1.0; nats: nats 1.0."),
            "{md}"
        );
        assert!(md.contains("- nats fanout: FAIL (lost 4)"), "{md}");
    }
}
