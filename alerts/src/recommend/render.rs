//! Rendering a recommendation: the text for people and the rules file (`[[alerts]]`
//! tables), both headed by what was read and the method.

use std::fmt::Write as _;

use super::{IQR_K, Proposal, Recommendation};

/// The headline of a recommendation: what was read, used and skipped, and the method.
fn header(r: &Recommendation, comment: &str) -> String {
    let h = &r.history;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{comment}threshold recommendation for scenario {:?} on backend {:?} from {} runs under {}",
        h.scenario,
        h.backend,
        h.runs.len(),
        h.dir.display()
    );
    if let (Some((_, first)), Some((_, last))) = (h.runs.first(), h.runs.last()) {
        let _ = writeln!(
            out,
            "{comment}runs from {} to {}; {} skipped; {} records of other scenarios/backends ignored",
            first.started_at.date(),
            last.started_at.date(),
            h.skipped.len(),
            h.other
        );
    }
    for s in &h.skipped {
        let _ = writeln!(out, "{comment}  skipped {}: {}", s.path.display(), s.reason);
    }
    let hp = r.options.headroom * 100.0;
    let _ = writeln!(
        out,
        "{comment}method: one value per run (the whole run's figure); headroom h = {hp:.0}%, k = {IQR_K}"
    );
    let _ = writeln!(
        out,
        "{comment}  upper bound: warning = p95 x (1+h); critical = max(median + k*IQR, max x (1+2h))"
    );
    let _ = writeln!(
        out,
        "{comment}  lower bound: warning = p5 x (1-h); critical = min(median - k*IQR, min x (1-2h))"
    );
    let _ = writeln!(
        out,
        "{comment}  availability: the same upper-bound method on the error ratio 1 - availability, floors 0.01% (warning) and 0.1% (critical)"
    );
    let _ = writeln!(
        out,
        "{comment}  an SLA caps critical; warning stays on the sensitive side of critical; false alarms = historical runs the rule (for = {}) fires on",
        r.options.for_intervals.max(1)
    );
    out
}

/// The recommendation for people: per signal, the history, each threshold with its
/// basis, and how many historical runs each level would have fired on.
pub fn render_text(r: &Recommendation) -> String {
    let mut out = header(r, "");
    let n = r.history.runs.len();
    for p in &r.proposals {
        let f = |v: f64| p.rule.format(v);
        let s = &p.stats;
        let _ = writeln!(
            out,
            "\n{} ({} bound, {} runs): min {}  p5 {}  median {}  p95 {}  max {}  IQR {}",
            p.rule.name,
            p.rule.direction,
            s.n,
            f(s.min),
            f(s.p5),
            f(s.median),
            f(s.p95),
            f(s.max),
            f(s.iqr())
        );
        let level = |v: Option<f64>| v.map_or("-".into(), f);
        let _ = writeln!(
            out,
            "  warning  {:<10} = {}",
            level(p.rule.warning),
            p.warning_basis
        );
        let _ = writeln!(
            out,
            "  critical {:<10} = {}",
            level(p.rule.critical),
            p.critical_basis
        );
        let _ = writeln!(out, "  {}", fired_on(p, n));
    }
    for (name, why) in &r.left_out {
        let _ = writeln!(out, "\n{name}: no rule proposed: {why}");
    }
    out
}

/// The recommendation as a rules file: `[[alerts]]` tables that `brokerbench check
/// --rules` reads, with the method and the numbers as comments.
pub fn render_toml(r: &Recommendation) -> String {
    let mut out = header(r, "# ");
    let n = r.history.runs.len();
    for p in &r.proposals {
        let rule = &p.rule;
        let _ = writeln!(out, "\n[[alerts]]");
        let _ = writeln!(out, "name = {}", toml_string(&rule.name));
        let _ = writeln!(out, "signal = {}", toml_string(&rule.signal.to_string()));
        let _ = writeln!(out, "direction = \"{}\"", rule.direction);
        if let Some(w) = rule.warning {
            let _ = writeln!(
                out,
                "warning = {}    # {}",
                toml_string(&rule.format(w)),
                p.warning_basis
            );
        }
        if let Some(c) = rule.critical {
            let _ = writeln!(
                out,
                "critical = {}    # {}",
                toml_string(&rule.format(c)),
                p.critical_basis
            );
        }
        let _ = writeln!(out, "for = {}", rule.for_intervals);
        if let Some(summary) = rule.annotations.get("summary") {
            let _ = writeln!(out, "summary = {}", toml_string(summary));
        }
        let _ = writeln!(out, "# {}", fired_on(p, n));
    }
    for (name, why) in &r.left_out {
        let _ = writeln!(out, "\n# {name}: no rule proposed: {why}");
    }
    out
}

/// How many of the `n` historical runs each level of `p` would have fired on.
fn fired_on(p: &Proposal, n: usize) -> String {
    format!(
        "would have fired on: warning or worse {} of {n} runs, critical {} of {n} runs",
        p.warning_fired, p.critical_fired
    )
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
