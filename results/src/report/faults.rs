//! The report's fault windows (shaded on the timelines) and its fault table.

use std::fmt::Write as _;

use super::html::escape;
use crate::faults::{FaultFigures, Outage};
use crate::record::RunRecord;

/// Narrowest a shaded window is drawn, in seconds (a reset takes no time).
const MIN_WIDTH_S: f64 = 0.15;

/// The windows (injected, healed) of every injected fault of `records`, in seconds of the
/// measured phase; a fault never healed runs to the end of its run's intervals.
pub(super) fn windows<'a>(records: impl Iterator<Item = &'a RunRecord>) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for record in records {
        let end = record.figures.intervals.len() as f64;
        for f in &record.faults {
            if let Some(from) = f.injected_s {
                let to = f.healed_s.unwrap_or(end).max(from + MIN_WIDTH_S);
                out.push((from, to));
            }
        }
    }
    out
}

/// The fault table: one row per fault of each run; nothing when no run had faults.
pub(super) fn section<'a>(out: &mut String, runs: impl Iterator<Item = (String, &'a RunRecord)>) {
    let runs: Vec<(String, &RunRecord)> = runs.filter(|(_, r)| !r.faults.is_empty()).collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("<section id=\"faults\"><h2>Faults</h2>\n<p class=\"note\">Times from the start of the measured phase. Unavailable: the longest stretch with messages due and none confirmed (publish) or delivered. Recover: from the heal to the first success for a message due after it. Lost and duplicated among the messages due in the window; e2e p50 in the window beside the rest of the run.</p>\n");
    for (swatch, record) in runs {
        let _ = writeln!(
            out,
            "<h3>{swatch}</h3>\n<table>\n<tr><th>fault</th><th>injected</th><th>healed</th><th>publish unavailable</th><th>publish recover</th><th>failed / unknown</th><th>delivery unavailable</th><th>delivery recover</th><th>lost</th><th>duplicated</th><th>e2e p50 in window</th><th>e2e p50 outside</th></tr>"
        );
        for f in &record.faults {
            row(out, f);
        }
        if let Some(o) = &record.faults_outside {
            let _ = writeln!(
                out,
                "<tr><td colspan=\"3\">outside every fault window</td><td>{}</td><td></td><td></td><td>{}</td><td colspan=\"5\"></td></tr>",
                ms(Some(o.publish_unavailable_ms)),
                ms(Some(o.delivery_unavailable_ms))
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</section>\n");
}

fn row(out: &mut String, f: &FaultFigures) {
    let name = format!("{} {}", f.kind, f.parameters);
    let name = if f.targets == "all" {
        name
    } else {
        format!("{name} [{}]", f.targets)
    };
    if let Some(why) = &f.skipped {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td colspan=\"11\">skipped: {}</td></tr>",
            escape(name.trim()),
            escape(why)
        );
        return;
    }
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(name.trim()),
        secs(f.injected_s),
        secs(f.healed_s),
        ms(Some(f.publish.outage.unavailable_ms)),
        recover(&f.publish.outage),
        f.publish.failed,
        f.publish.unknown,
        ms(Some(f.delivery.outage.unavailable_ms)),
        recover(&f.delivery.outage),
        f.delivery.lost,
        f.delivery.duplicated,
        ms(f.latency.e2e_p50_ms),
        ms(f.latency.outside_e2e_p50_ms),
    );
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "–".to_owned(), |s| format!("{s:.2} s"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1} ms"))
}

fn recover(o: &Outage) -> String {
    if o.recovered {
        ms(o.recover_ms)
    } else {
        "never".to_owned()
    }
}
