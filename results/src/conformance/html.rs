//! The conformance matrix as one self-contained HTML page (`brokerbench report
//! conformance.json`): the same stylesheet as the run report, no script, nothing fetched.

use std::fmt::Write as _;

use super::render::{detail_line, ordered_cells, verdict_line};
use super::{ConformanceReport, Verdict};
use crate::human::utc_seconds;
use crate::report::html::{STYLE, escape};

/// The CSS class of a verdict's cell.
fn class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "ok",
        Verdict::Fail | Verdict::Error => "bad",
        Verdict::Unsupported => "muted",
    }
}

/// The page.
pub fn render_html(report: &ConformanceReport) -> String {
    let title = format!(
        "brokerbench conformance: {} checks × {} backends",
        report.checks.len(),
        report.backends.len()
    );
    let mut out = String::with_capacity(64 * 1024);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>",
        escape(&title),
        STYLE,
        escape(&title)
    );
    let _ = write!(
        out,
        "<p class=\"lead\">Started {}, last cell {}. {}",
        utc_seconds(report.started_at),
        utc_seconds(report.ended_at),
        escape(verdict_line(report).trim_end())
    );
    if report.partial {
        out.push_str(
            " <span class=\"partial\">The suite did not finish: this is a partial report.</span>",
        );
    }
    out.push_str("</p>\n");

    out.push_str("<section id=\"matrix\"><h2>Matrix</h2>\n<p class=\"note\">Each cell: the verdict, <code>!</code> when it differs from the expected matrix; hover for the reason. <code>unsupported</code>: the backend has no mechanism for the guarantee.</p>\n<div class=\"scroll\"><table class=\"data\"><thead><tr><th>check</th>");
    for backend in &report.backends {
        let _ = write!(out, "<th>{}</th>", escape(&backend.name));
    }
    out.push_str("</tr></thead><tbody>\n");
    for check in &report.checks {
        let _ = write!(out, "<tr><td>{}</td>", escape(check));
        for backend in &report.backends {
            match report.cell(check, &backend.name) {
                None => out.push_str("<td class=\"muted\">not run</td>"),
                Some(cell) => {
                    let mark = if cell.is_unexpected() { "!" } else { "" };
                    let _ = write!(
                        out,
                        "<td class=\"{}\" title=\"{}\">{}{mark}</td>",
                        class(cell.verdict),
                        escape(&cell.reason),
                        escape(cell.verdict.label())
                    );
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div></section>\n");

    let details: Vec<String> = ordered_cells(report).filter_map(detail_line).collect();
    if !details.is_empty() {
        out.push_str("<section id=\"details\"><h2>Cells that are not a plain pass</h2>\n<ul class=\"notes\">\n");
        for line in details {
            let _ = writeln!(out, "<li>{}</li>", escape(&line));
        }
        out.push_str("</ul></section>\n");
    }

    out.push_str("<section id=\"cells\"><h2>Every cell</h2>\n<div class=\"scroll\"><table class=\"data\"><thead><tr><th>backend</th><th>check</th><th>verdict</th><th>expected</th><th>published</th><th>confirmed</th><th>delivered</th><th>anomalies</th><th>seconds</th><th>reason</th></tr></thead><tbody>\n");
    for cell in ordered_cells(report) {
        let c = &cell.counts;
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            escape(&cell.backend),
            escape(&cell.check),
            class(cell.verdict),
            escape(cell.verdict.label()),
            escape(cell.expected_verdict().label()),
            c.published,
            c.confirmed,
            c.delivered,
            escape(&c.anomaly_summary()),
            cell.duration_s,
            escape(&cell.reason)
        );
    }
    out.push_str("</tbody></table></div></section>\n");

    out.push_str("<section id=\"backends\"><h2>Backends</h2>\n<table class=\"data\"><thead><tr><th>backend</th><th>endpoint</th><th>version</th></tr></thead><tbody>\n");
    for b in &report.backends {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&b.name),
            escape(b.url.as_deref().unwrap_or("-")),
            escape(b.version.as_deref().unwrap_or("-"))
        );
    }
    out.push_str("</tbody></table></section>\n");

    let parameters = serde_json::to_string_pretty(&report.parameters).unwrap_or_default();
    let host = serde_json::to_string_pretty(&report.host).unwrap_or_default();
    let _ = writeln!(
        out,
        "<section id=\"setup\"><h2>Parameters and host</h2>\n<pre>{}</pre>\n<pre>{}</pre></section>",
        escape(&parameters),
        escape(&host)
    );
    let _ = writeln!(
        out,
        "<footer>Rendered by brokerbench-results {} from the conformance report alone: no script, nothing fetched.</footer>\n</main>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{BackendColumn, Cell, Counts};
    use crate::record::HostFacts;

    #[test]
    fn the_page_shows_the_matrix_and_every_cell() {
        let mut report = ConformanceReport::new(
            vec!["fanout".into(), "dedup".into()],
            vec![BackendColumn {
                name: "nats".into(),
                url: Some("nats://127.0.0.1:4222".into()),
                version: Some("nats-server 2.9.10".into()),
            }],
            serde_json::json!({"messages": 200}),
            HostFacts::detect("0"),
        );
        let counts = Counts {
            lost: 2,
            ..Counts::default()
        };
        report.push(Cell {
            check: "fanout".into(),
            backend: "nats".into(),
            verdict: Verdict::Fail,
            reason: "subscriber 2 <missed> 2".into(),
            counts,
            duration_s: 1.5,
            backend_version: None,
            expected: None,
        });
        let html = render_html(&report);
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("<td class=\"bad\" title=\"subscriber 2 &lt;missed&gt; 2\">FAIL!</td>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"muted\">not run</td>"), "{html}");
        assert!(html.contains("<td>lost 2</td>"), "{html}");
        assert!(html.contains("nats-server 2.9.10"), "{html}");
        assert!(html.contains("partial report"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }
}
