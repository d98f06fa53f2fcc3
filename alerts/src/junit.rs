//! Verdicts as a JUnit XML report: one `<testcase>` per rule.
//!
//! A rule at or above the failing severity is a `<failure>` whose message is the
//! verdict's sentence; a rule that fired below it (a warning with `--fail-on critical`)
//! passes with the sentence in `<system-out>`, so CI shows it without failing.

use std::fmt::Write as _;

use brokerbench_results::xml::escape;

use crate::evaluate::{Severity, Verdict};

/// The JUnit XML document of `verdicts` for the run `suite` (e.g. `chat-1to1 on
/// reference`); verdicts at or above `fail_on` are failures (none with `None`).
pub fn render_junit(suite: &str, verdicts: &[Verdict], fail_on: Option<Severity>) -> String {
    let fails =
        |v: &Verdict| v.severity != Severity::Ok && fail_on.is_some_and(|f| v.severity >= f);
    let failures = verdicts.iter().filter(|v| fails(v)).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"brokerbench alerts\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        verdicts.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">",
        escape(suite),
        verdicts.len()
    );
    for v in verdicts {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            escape(&format!("alerts.{}", v.signal)),
            escape(&v.rule)
        );
        // A verdict that fired says so in its text, whether it fails or not.
        let text = if v.severity == Severity::Ok {
            v.message.clone()
        } else {
            format!("{}: {}", v.severity.to_string().to_uppercase(), v.message)
        };
        if fails(v) {
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                escape(&v.message),
                v.severity,
                escape(&text)
            );
        } else {
            let _ = writeln!(
                out,
                ">\n      <system-out>{}</system-out>\n    </testcase>",
                escape(&text)
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(rule: &str, severity: Severity, message: &str) -> Verdict {
        Verdict {
            rule: rule.into(),
            signal: "e2e.p99".into(),
            severity,
            observed: None,
            threshold: None,
            message: message.into(),
            direction: "upper".into(),
            fired_by: None,
            observed_value: None,
            threshold_value: None,
            run_value: None,
            intervals_judged: 0,
            intervals_breached: 0,
            longest_breach: 0,
            first_breach_s: None,
            for_intervals: 1,
            labels: Default::default(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn failures_follow_fail_on() {
        let vs = [
            verdict("a & b", Severity::Critical, "e2e.p99 12ms > critical 10ms"),
            verdict("c", Severity::Warning, "e2e.p99 6ms > warning 5ms"),
            verdict("d", Severity::Ok, "fine"),
        ];
        let xml = render_junit("s on reference", &vs, Some(Severity::Critical));
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"a &amp; b\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"e2e.p99 12ms &gt; critical 10ms\" type=\"critical\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<system-out>WARNING: e2e.p99 6ms &gt; warning 5ms</system-out>"),
            "{xml}"
        );
        let xml = render_junit("s", &vs, Some(Severity::Warning));
        assert!(xml.contains("failures=\"2\""), "{xml}");
        assert!(xml.contains("type=\"warning\""), "{xml}");
        let xml = render_junit("s", &vs, None);
        assert!(
            xml.contains("failures=\"0\"") && !xml.contains("<failure"),
            "{xml}"
        );
        assert!(xml.contains("<system-out>CRITICAL: e2e.p99 12ms"), "{xml}");
    }
}
