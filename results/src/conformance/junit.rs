//! The conformance matrix as JUnit XML, the format CI systems display.
//!
//! One `<testsuite>` per backend (`conformance.<backend>`), one `<testcase>` per check.
//! A cell that was not expected to be what it is and does worse fails: `<failure>` (a
//! FAIL, or a regression such as `unsupported` where a pass was expected) or `<error>`
//! (the check could not run). `unsupported` is `<skipped>`; a known, expected FAIL is
//! `<skipped>` too, with the documented reason, so CI shows it without failing. The
//! message carries the anomaly counts and the reason.

use std::fmt::Write as _;

use super::{Cell, ConformanceReport, Verdict};
use crate::xml::escape;

/// How a cell shows in JUnit.
enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
    Errored(String),
}

fn outcome(cell: &Cell) -> Outcome {
    let counts = cell.counts.anomaly_summary();
    let expected = cell
        .expected
        .as_ref()
        .and_then(|e| e.reason.as_deref())
        .map(|r| format!(" (expected: {r})"))
        .unwrap_or_default();
    match cell.verdict {
        Verdict::Error => Outcome::Errored(cell.reason.clone()),
        _ if cell.is_regression() => Outcome::Failed(format!(
            "{} where {} was expected; anomalies: {counts}; {}",
            cell.verdict.label(),
            cell.expected_verdict().label(),
            cell.reason
        )),
        Verdict::Pass => Outcome::Passed,
        Verdict::Unsupported => Outcome::Skipped(format!("unsupported: {}{expected}", cell.reason)),
        Verdict::Fail => Outcome::Skipped(format!(
            "known FAIL, anomalies: {counts}; {}{expected}",
            cell.reason
        )),
    }
}

/// The JUnit XML document of `report`.
pub fn render_junit(report: &ConformanceReport) -> String {
    let outcomes: Vec<(&Cell, Outcome)> = report.cells.iter().map(|c| (c, outcome(c))).collect();
    let count = |cells: &[&(&Cell, Outcome)]| {
        let mut n = [0usize; 3];
        for (_, o) in cells {
            match o {
                Outcome::Failed(_) => n[0] += 1,
                Outcome::Errored(_) => n[1] += 1,
                Outcome::Skipped(_) => n[2] += 1,
                Outcome::Passed => {}
            }
        }
        n
    };
    let all: Vec<&(&Cell, Outcome)> = outcomes.iter().collect();
    let [failures, errors, _] = count(&all);
    let total_time: f64 = report.cells.iter().map(|c| c.duration_s).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"brokerbench conformance\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total_time:.3}\">",
        report.cells.len()
    );
    for backend in &report.backends {
        let cells: Vec<&(&Cell, Outcome)> = outcomes
            .iter()
            .filter(|(c, _)| c.backend == backend.name)
            .collect();
        let [failures, errors, skipped] = count(&cells);
        let time: f64 = cells.iter().map(|(c, _)| c.duration_s).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"conformance.{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            escape(&backend.name),
            cells.len()
        );
        if let Some(version) = &backend.version {
            let _ = writeln!(
                out,
                "    <properties><property name=\"backend_version\" value=\"{}\"/></properties>",
                escape(version)
            );
        }
        for (cell, outcome) in cells {
            let _ = write!(
                out,
                "    <testcase classname=\"conformance.{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&cell.backend),
                escape(&cell.check),
                cell.duration_s
            );
            match outcome {
                Outcome::Passed => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        escape(&cell.reason)
                    );
                }
                Outcome::Skipped(message) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        escape(message)
                    );
                }
                Outcome::Failed(message) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                        escape(message),
                        cell.verdict.as_str(),
                        escape(&counts_text(cell))
                    );
                }
                Outcome::Errored(message) => {
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\" type=\"error\"/>\n    </testcase>",
                        escape(message)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Every count of a cell, one `name=value` per line, for the failure's body.
fn counts_text(cell: &Cell) -> String {
    let c = &cell.counts;
    let mut text = format!(
        "published={} confirmed={} delivered={}\n",
        c.published, c.confirmed, c.delivered
    );
    for (name, n) in c.anomalies() {
        let _ = writeln!(text, "{name}={n}");
    }
    for (name, n) in &c.details {
        let _ = writeln!(text, "{name}={n}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{BackendColumn, Expectation};
    use crate::record::HostFacts;

    #[test]
    fn suites_per_backend_with_failures_skips_and_errors() {
        let backend = |name: &str| BackendColumn {
            name: name.into(),
            url: None,
            version: Some(format!("{name} <1.0>")),
        };
        let mut report = ConformanceReport::new(
            vec!["fanout".into(), "dedup".into()],
            vec![backend("reference"), backend("kafka")],
            serde_json::json!({}),
            HostFacts::detect("0"),
        );
        let cell = |check: &str, backend: &str, verdict| Cell {
            check: check.into(),
            backend: backend.into(),
            verdict,
            reason: format!("{check} & co"),
            counts: Default::default(),
            duration_s: 1.25,
            backend_version: None,
            expected: None,
        };
        report.push(cell("fanout", "reference", Verdict::Pass));
        let mut lost = cell("dedup", "reference", Verdict::Fail);
        lost.counts.duplicated = 5;
        report.push(lost);
        report.push(cell("fanout", "kafka", Verdict::Error));
        let mut known = cell("dedup", "kafka", Verdict::Unsupported);
        known.expected = Some(Expectation {
            verdict: Verdict::Unsupported,
            reason: Some("idempotence is per producer".into()),
        });
        report.push(known);
        let xml = render_junit(&report);
        assert!(xml.contains("<testsuites name=\"brokerbench conformance\" tests=\"4\" failures=\"1\" errors=\"1\" time=\"5.000\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"conformance.reference\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\""), "{xml}");
        assert!(xml.contains("<testsuite name=\"conformance.kafka\" tests=\"2\" failures=\"0\" errors=\"1\" skipped=\"1\""), "{xml}");
        assert!(xml.contains("value=\"kafka &lt;1.0&gt;\""), "{xml}");
        assert!(xml.contains("<failure message=\"FAIL where pass was expected; anomalies: duplicated 5; dedup &amp; co\" type=\"fail\">"), "{xml}");
        assert!(xml.contains("duplicated=5&#10;"), "{xml}");
        assert!(xml.contains("<skipped message=\"unsupported: dedup &amp; co (expected: idempotence is per producer)\"/>"), "{xml}");
        assert!(
            xml.contains("<error message=\"fanout &amp; co\" type=\"error\"/>"),
            "{xml}"
        );
    }
}
