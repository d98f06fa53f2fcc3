//! The compact terminal summary of a run record (plain text, aligned columns).
//!
//! ```text
//! group-chat on reference, 2026-11-22T10:15:00Z, measured 60.0 s
//!
//! latency                    p50        p90        p99      p99.9        max      count
//! e2e                    1.24 ms    2.10 ms    4.98 ms    9.01 ms   12.03 ms     119841
//! ...
//! availability   publish 100.000 %   delivery 99.998 %   unavailable intervals 1 of 60
//! ```

use std::fmt::Write as _;
use std::path::Path;

use crate::histogram::Summary;
use crate::human::{self, percent};
use crate::record::RunRecord;

/// A latency for the terminal: [`human::latency_us`], except that a value under 1 µs
/// stays in µs (`0.51 µs`).
fn latency(us: Option<f64>) -> String {
    match us {
        Some(v) if v < 1.0 => format!("{v:.2} µs"),
        other => human::latency_us(other),
    }
}

/// Bytes for the terminal: [`human::bytes`], except that a value under 1 MiB stays in
/// MiB (`0.5 MiB`).
fn bytes(b: Option<u64>) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    match b.map(|b| b as f64) {
        Some(b) if b < MIB => format!("{:.1} MiB", b / MIB),
        other => human::bytes(other),
    }
}

fn latency_row(out: &mut String, name: &str, s: &Summary) {
    let _ = write!(out, "{name:<20}");
    for v in [s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us] {
        let _ = write!(out, " {:>10}", latency(v));
    }
    let _ = write!(out, " {:>10}", s.count);
    if s.clamped > 0 {
        let _ = write!(out, "  ({} clamped at 1 h)", s.clamped);
    }
    out.push('\n');
}

/// Renders the terminal summary of `record`; `path` is where it was written, if it was.
pub fn render_summary(record: &RunRecord, path: Option<&Path>) -> String {
    let f = &record.figures;
    let mut out = String::new();
    let started = time::format_description::well_known::Rfc3339;
    let started = record
        .started_at
        .to_offset(time::UtcOffset::UTC)
        .format(&started)
        .unwrap_or_else(|_| "?".to_owned());
    let _ = writeln!(
        out,
        "{} on {}, {}, measured {:.1} s",
        record.scenario_name, record.backend.name, started, f.duration_s
    );
    if record.partial {
        let _ = writeln!(
            out,
            "PARTIAL RUN: {}",
            record.partial_reason.as_deref().unwrap_or("interrupted")
        );
    }
    out.push('\n');

    let _ = write!(out, "{:<20}", "latency");
    for h in ["p50", "p90", "p99", "p99.9", "max", "count"] {
        let _ = write!(out, " {h:>10}");
    }
    out.push('\n');
    let l = &f.latency;
    latency_row(&mut out, "e2e", &l.e2e);
    latency_row(&mut out, "e2e uncorrected", &l.e2e_uncorrected);
    latency_row(&mut out, "publish-ack", &l.publish_ack);
    latency_row(&mut out, "publish-ack uncorr.", &l.publish_ack_uncorrected);
    latency_row(&mut out, "send delay", &l.send_delay);
    out.push('\n');

    let a = &f.availability;
    let _ = writeln!(
        out,
        "{:<14} publish {}   delivery {}   unavailable intervals {} of {}",
        "availability",
        percent(a.publish),
        percent(a.delivery),
        a.unavailable_intervals,
        f.intervals.len()
    );
    let v = &f.volume;
    let _ = writeln!(
        out,
        "{:<14} offered {:.1}/s   published {:.1}/s   delivered {:.1}/s   saturated {}",
        "volume",
        v.offered_rate,
        v.achieved_publish_rate,
        v.achieved_delivery_rate,
        if v.saturated { "YES" } else { "no" }
    );
    let c = &f.correctness;
    let _ = writeln!(
        out,
        "{:<14} lost {}   duplicated {}   reordered {}   phantom {}   late {}",
        "correctness", c.lost, c.duplicated, c.reordered, c.phantom, c.late
    );
    if c.undelivered > 0 {
        let _ = writeln!(
            out,
            "{:<14} {} deliveries due for failed or unanswered publishes never came",
            "undelivered", c.undelivered
        );
    }
    let m = &f.compute;
    if m.samples == 0 {
        let _ = writeln!(out, "{:<14} not sampled", "broker");
    } else {
        let _ = writeln!(
            out,
            "{:<14} cpu {} (max {})   rss {} (max {})",
            "broker",
            human::cpu(m.cpu_percent),
            human::cpu(m.cpu_percent_max),
            bytes(m.rss_bytes),
            bytes(m.rss_bytes_max)
        );
    }
    out.push_str(&crate::faults::render_faults(
        &record.faults,
        record.faults_outside.as_ref(),
    ));
    if let Some(p) = path {
        let _ = writeln!(out, "{:<14} {}", "record", p.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(0.512)), "0.51 µs");
        assert_eq!(latency(Some(123.45)), "123.5 µs");
        assert_eq!(latency(Some(1_234.0)), "1.23 ms");
        assert_eq!(latency(Some(2_500_000.0)), "2.50 s");
        assert_eq!(percent(Some(0.99998)), "99.998 %");
        assert_eq!(bytes(Some(3 * 1024 * 1024)), "3.0 MiB");
        assert_eq!(bytes(Some(2 * 1024 * 1024 * 1024)), "2.00 GiB");
    }
}
