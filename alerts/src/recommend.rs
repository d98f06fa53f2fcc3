//! Threshold recommendation from a history of run records of one scenario on one backend.
//!
//! One value per run (the whole run's figure) and per signal. The method, stated in the
//! output next to the numbers it used (`h` = headroom, default 0.2; `k` = 3):
//!
//! - **upper bound** (latencies, CPU, memory): warning = p95 × (1 + h);
//!   critical = max(median + k·IQR, max × (1 + 2h)). Critical is at least warning.
//! - **lower bound** (throughput): warning = p5 × (1 − h);
//!   critical = min(median − k·IQR, min × (1 − 2h)), not below 0.
//! - **availability** (a lower bound near 1): the method works on the error ratio
//!   e = 1 − availability as an upper bound, with floors because a history of perfect
//!   runs cannot show a budget: warning = 1 − max(p95(e) × (1 + h), 0.01 %),
//!   critical = 1 − max(median(e) + k·IQR(e), max(e) × (1 + 2h), 0.1 %).
//!
//! An SLA (`--sla-critical e2e.p99=20ms`) caps the critical level: an upper critical is
//! at most the SLA, a lower one at least the SLA; the warning then stays on the sensitive
//! side of critical. Percentiles interpolate linearly between order statistics. The
//! proposed thresholds are rounded as they are printed, and the false-alarm counts are
//! those of the rounded rules, evaluated by [`evaluate`](crate::evaluate()) over every
//! historical record (run and intervals, with the proposed `for`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use brokerbench_results::RunRecord;

use crate::evaluate::{Severity, evaluate};
use crate::rule::{Direction, Rule};
use crate::signal::{Signal, Unit};
use crate::units::{format_value, parse_threshold};

/// The signals a recommendation covers, in output order.
pub const RECOMMENDED_SIGNALS: [&str; 10] = [
    "e2e.p50",
    "e2e.p99",
    "e2e.p999",
    "publish.p99",
    "delivery.availability",
    "publish.availability",
    "throughput",
    "delivery.throughput",
    "cpu",
    "rss",
];

/// The multiplier of the interquartile range (Tukey's far-out fence).
const IQR_K: f64 = 3.0;
/// The smallest error budget an availability warning gets (0.01 %).
const AVAILABILITY_WARNING_FLOOR: f64 = 1e-4;
/// The smallest error budget an availability critical gets (0.1 %).
const AVAILABILITY_CRITICAL_FLOOR: f64 = 1e-3;

/// Settings of a recommendation.
#[derive(Clone, Debug)]
pub struct RecommendOptions {
    /// Fewer usable runs than this is refused (default 5).
    pub min_runs: usize,
    /// The relative headroom `h` above the history (default 0.2 = 20 %).
    pub headroom: f64,
    /// `for` of the proposed rules: consecutive intervals before an interval breach
    /// fires (default 3).
    pub for_intervals: u32,
    /// SLA per signal, in the signal's base unit: caps the critical level.
    pub sla: BTreeMap<String, f64>,
}

impl Default for RecommendOptions {
    fn default() -> Self {
        Self {
            min_runs: 5,
            headroom: 0.2,
            for_intervals: 3,
            sla: BTreeMap::new(),
        }
    }
}

/// Why a recommendation cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecommendError {
    /// The history directory cannot be read.
    #[error("cannot read the history directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Too few usable runs.
    #[error(
        "only {usable} usable run{} of scenario {scenario:?} on backend {backend:?} under {} (need at least {min_runs}; {skipped} skipped); run more, or lower --min-runs knowing the thresholds will be rough",
        if *usable == 1 { "" } else { "s" },
        dir.display()
    )]
    TooFewRuns {
        /// The directory searched.
        dir: PathBuf,
        /// The scenario.
        scenario: String,
        /// The backend.
        backend: String,
        /// Usable runs found.
        usable: usize,
        /// Runs skipped (partial, shards or unreadable).
        skipped: usize,
        /// The minimum asked for.
        min_runs: usize,
    },
    /// An `--sla-critical` entry is invalid.
    #[error("SLA {entry:?}: {message}")]
    Sla {
        /// The entry as given.
        entry: String,
        /// What is wrong.
        message: String,
    },
}

/// A file of the history that was not used, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedRun {
    /// The file.
    pub path: PathBuf,
    /// Why: `partial: <reason>`, or why it cannot be read.
    pub reason: String,
}

/// The run records of one scenario and backend found under a directory.
#[derive(Clone, Debug)]
pub struct History {
    /// The directory searched (recursively).
    pub dir: PathBuf,
    /// The scenario.
    pub scenario: String,
    /// The backend.
    pub backend: String,
    /// Complete records of that scenario and backend, oldest first.
    pub runs: Vec<(PathBuf, RunRecord)>,
    /// Records of that scenario and backend that were not used (partial runs), and
    /// `.json` files that are not readable run records.
    pub skipped: Vec<SkippedRun>,
    /// Readable records of other scenarios or backends (ignored).
    pub other: usize,
}

/// Reads every `*.json` under `dir` (recursively), keeping the complete records of
/// `scenario` on `backend`.
///
/// # Errors
/// [`RecommendError::Io`] when `dir` (or a directory below it) cannot be listed.
pub fn read_history(dir: &Path, scenario: &str, backend: &str) -> Result<History, RecommendError> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    files.sort();
    let mut history = History {
        dir: dir.to_owned(),
        scenario: scenario.to_owned(),
        backend: backend.to_owned(),
        runs: Vec::new(),
        skipped: Vec::new(),
        other: 0,
    };
    for path in files {
        match RunRecord::read(&path) {
            Err(e) => history.skipped.push(SkippedRun {
                path,
                reason: format!("not a readable run record: {e}"),
            }),
            Ok(r) if r.scenario_name != scenario || r.backend.name != backend => {
                history.other += 1;
            }
            Ok(r) if r.partial => history.skipped.push(SkippedRun {
                path,
                reason: format!(
                    "partial run: {}",
                    r.partial_reason.as_deref().unwrap_or("no reason given")
                ),
            }),
            // A shard carries part of the load; its run is the merged record.
            Ok(r) if r.shard.is_some() => history.skipped.push(SkippedRun {
                path,
                reason: format!(
                    "shard {} of run {}: part of the load (its merged record is the run)",
                    r.shard.as_ref().map_or(String::new(), ToString::to_string),
                    r.run_id
                ),
            }),
            Ok(r) => history.runs.push((path, r)),
        }
    }
    history.runs.sort_by_key(|(_, r)| r.started_at);
    Ok(history)
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RecommendError> {
    let io = |source| RecommendError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses `SIGNAL=VALUE` (`e2e.p99=20ms`, `availability=99.9%`) into the signal's
/// canonical name and the value in its base unit.
///
/// # Errors
/// [`RecommendError::Sla`] naming the entry and what is wrong.
pub fn parse_sla(entry: &str) -> Result<(String, f64), RecommendError> {
    let err = |message: String| RecommendError::Sla {
        entry: entry.to_owned(),
        message,
    };
    let (name, value) = entry
        .split_once('=')
        .ok_or_else(|| err("expected SIGNAL=VALUE, e.g. e2e.p99=20ms".into()))?;
    let signal = Signal::parse(name).ok_or_else(|| {
        err(format!(
            "unknown signal {:?}; one of {}",
            name.trim(),
            RECOMMENDED_SIGNALS.join(", ")
        ))
    })?;
    // A bare number is read as a TOML number would be (and refused for a latency).
    let value = value.trim();
    let value = match value.parse::<f64>() {
        Ok(n) => toml::Value::Float(n),
        Err(_) => toml::Value::String(value.to_owned()),
    };
    let v = parse_threshold(&value, signal.unit()).map_err(err)?;
    Ok((signal.to_string(), v))
}

/// The figures of one signal over the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Runs with a value.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 25th percentile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// 75th percentile.
    pub q3: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest value.
    pub max: f64,
}

impl Stats {
    /// The statistics of `values` (at least one).
    fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Some(Self {
            n: v.len(),
            min: v[0],
            p5: q(0.05),
            q1: q(0.25),
            median: q(0.5),
            q3: q(0.75),
            p95: q(0.95),
            max: v[v.len() - 1],
        })
    }

    /// The interquartile range.
    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// A proposed rule with the numbers behind it.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The rule (rounded thresholds, as printed).
    pub rule: Rule,
    /// The history of the signal (for availability: of the availability itself).
    pub stats: Stats,
    /// How the warning was computed, with the numbers.
    pub warning_basis: String,
    /// How the critical was computed, with the numbers (and the SLA cap, if it applied).
    pub critical_basis: String,
    /// Historical runs on which the warning (or a worse level) would have fired.
    pub warning_fired: usize,
    /// Historical runs on which the critical would have fired.
    pub critical_fired: usize,
}

/// A recommendation: proposals, and the signals left out with the reason.
#[derive(Clone, Debug)]
pub struct Recommendation {
    /// The history used.
    pub history: History,
    /// The options used.
    pub options: RecommendOptions,
    /// One proposal per signal with enough data.
    pub proposals: Vec<Proposal>,
    /// Signals without a proposal, and why.
    pub left_out: Vec<(String, String)>,
}

/// Proposes warning and critical thresholds for [`RECOMMENDED_SIGNALS`] from `history`.
///
/// # Errors
/// [`RecommendError::TooFewRuns`] when the history has fewer than `min_runs` runs;
/// [`RecommendError::Sla`] when an SLA names a signal that is not recommended.
pub fn recommend(
    history: History,
    options: RecommendOptions,
) -> Result<Recommendation, RecommendError> {
    if history.runs.len() < options.min_runs.max(1) {
        return Err(RecommendError::TooFewRuns {
            dir: history.dir.clone(),
            scenario: history.scenario.clone(),
            backend: history.backend.clone(),
            usable: history.runs.len(),
            skipped: history.skipped.len(),
            min_runs: options.min_runs.max(1),
        });
    }
    if let Some(name) = options
        .sla
        .keys()
        .find(|k| !RECOMMENDED_SIGNALS.contains(&k.as_str()))
    {
        return Err(RecommendError::Sla {
            entry: name.clone(),
            message: format!(
                "no threshold is recommended for this signal; one of {}",
                RECOMMENDED_SIGNALS.join(", ")
            ),
        });
    }
    let records: Vec<&RunRecord> = history.runs.iter().map(|(_, r)| r).collect();
    let mut proposals = Vec::new();
    let mut left_out = Vec::new();
    for name in RECOMMENDED_SIGNALS {
        let Some(signal) = Signal::parse(name) else {
            continue;
        };
        let values: Vec<f64> = records
            .iter()
            .filter_map(|r| {
                let o = signal.of_run(r);
                o.value.filter(|_| o.samples > 0)
            })
            .collect();
        if values.len() < options.min_runs.max(1) {
            left_out.push((
                name.to_owned(),
                format!(
                    "{} of {} runs have a value (need {})",
                    values.len(),
                    records.len(),
                    options.min_runs.max(1)
                ),
            ));
            continue;
        }
        let Some(stats) = Stats::of(&values) else {
            continue;
        };
        let mut proposal = propose(signal, stats, &values, &options);
        let verdicts: Vec<Severity> = records
            .iter()
            .map(|r| {
                evaluate(r, std::slice::from_ref(&proposal.rule))
                    .first()
                    .map_or(Severity::Ok, |v| v.severity)
            })
            .collect();
        proposal.warning_fired = verdicts.iter().filter(|s| **s >= Severity::Warning).count();
        proposal.critical_fired = verdicts
            .iter()
            .filter(|s| **s == Severity::Critical)
            .count();
        proposals.push(proposal);
    }
    Ok(Recommendation {
        history,
        options,
        proposals,
        left_out,
    })
}

/// Rounds `v` the way it is printed, so the rule holds what the user reads.
fn rounded(v: f64, unit: Unit) -> f64 {
    let text = format_value(v, unit);
    parse_threshold(&toml::Value::String(text), unit).unwrap_or(v)
}

fn propose(signal: Signal, stats: Stats, values: &[f64], o: &RecommendOptions) -> Proposal {
    let unit = signal.unit();
    let f = |v: f64| format_value(v, unit);
    let h = o.headroom;
    let name = signal.to_string();
    let sla = o.sla.get(&name).copied();
    let (direction, warning, critical, warning_basis, mut critical_basis) = match signal {
        Signal::DeliveryAvailability | Signal::PublishAvailability => {
            let errors: Vec<f64> = values.iter().map(|a| (1.0 - a).max(0.0)).collect();
            let e = Stats::of(&errors).unwrap_or_else(|| stats.clone());
            let ew = (e.p95 * (1.0 + h)).max(AVAILABILITY_WARNING_FLOOR);
            let fence = e.median + IQR_K * e.iqr();
            let scaled = e.max * (1.0 + 2.0 * h);
            let ec = fence.max(scaled).max(AVAILABILITY_CRITICAL_FLOOR).max(ew);
            let pct = |v: f64| format_value(v, Unit::Ratio);
            (
                Direction::Lower,
                1.0 - ew,
                1.0 - ec,
                format!(
                    "1 - max(p95 error {} x {:.2}, floor {})",
                    pct(e.p95),
                    1.0 + h,
                    pct(AVAILABILITY_WARNING_FLOOR)
                ),
                format!(
                    "1 - max(median error {} + {IQR_K}xIQR {} = {}, max error {} x {:.2} = {}, floor {})",
                    pct(e.median),
                    pct(e.iqr()),
                    pct(fence),
                    pct(e.max),
                    1.0 + 2.0 * h,
                    pct(scaled),
                    pct(AVAILABILITY_CRITICAL_FLOOR)
                ),
            )
        }
        Signal::PublishThroughput | Signal::DeliveryThroughput => {
            let w = stats.p5 * (1.0 - h);
            let fence = stats.median - IQR_K * stats.iqr();
            let scaled = stats.min * (1.0 - 2.0 * h);
            let c = fence.min(scaled).min(w).max(0.0);
            (
                Direction::Lower,
                w.max(0.0),
                c,
                format!("p5 {} x {:.2}", f(stats.p5), 1.0 - h),
                format!(
                    "min(median {} - {IQR_K}xIQR {} = {}, min {} x {:.2} = {})",
                    f(stats.median),
                    f(stats.iqr()),
                    f(fence),
                    f(stats.min),
                    1.0 - 2.0 * h,
                    f(scaled)
                ),
            )
        }
        _ => {
            let w = stats.p95 * (1.0 + h);
            let fence = stats.median + IQR_K * stats.iqr();
            let scaled = stats.max * (1.0 + 2.0 * h);
            (
                Direction::Upper,
                w,
                fence.max(scaled).max(w),
                format!("p95 {} x {:.2}", f(stats.p95), 1.0 + h),
                format!(
                    "max(median {} + {IQR_K}xIQR {} = {}, max {} x {:.2} = {})",
                    f(stats.median),
                    f(stats.iqr()),
                    f(fence),
                    f(stats.max),
                    1.0 + 2.0 * h,
                    f(scaled)
                ),
            )
        }
    };
    let mut critical = rounded(critical, unit);
    let mut warning = rounded(warning, unit);
    if let Some(sla) = sla {
        let capped = match direction {
            Direction::Upper => sla < critical,
            Direction::Lower => sla > critical,
        };
        if capped {
            critical = sla;
            critical_basis = format!("SLA {} (history gave {critical_basis})", f(sla));
        } else {
            critical_basis.push_str(&format!(", within the SLA {}", f(sla)));
        }
    }
    let mut warning_basis = warning_basis;
    let beyond = match direction {
        Direction::Upper => warning > critical,
        Direction::Lower => warning < critical,
    };
    if beyond {
        warning = critical;
        warning_basis = format!("capped at critical (history gave {warning_basis})");
    }
    let summary = format!(
        "{name} {} the level recommended from {} runs of history",
        match direction {
            Direction::Upper => "above",
            Direction::Lower => "below",
        },
        stats.n
    );
    let rule = Rule {
        name: name.clone(),
        signal,
        direction,
        warning: Some(warning),
        critical: Some(critical),
        for_intervals: o.for_intervals.max(1),
        min_samples: 1,
        labels: BTreeMap::new(),
        annotations: BTreeMap::from([("summary".to_owned(), summary)]),
    };
    Proposal {
        rule,
        stats,
        warning_basis,
        critical_basis,
        warning_fired: 0,
        critical_fired: 0,
    }
}

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
        let _ = writeln!(
            out,
            "  would have fired on: warning or worse {} of {n} runs, critical {} of {n} runs",
            p.warning_fired, p.critical_fired
        );
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
        let _ = writeln!(
            out,
            "# would have fired on: warning or worse {} of {n} runs, critical {} of {n} runs",
            p.warning_fired, p.critical_fired
        );
    }
    for (name, why) in &r.left_out {
        let _ = writeln!(out, "\n# {name}: no rule proposed: {why}");
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_interpolate() {
        let s = Stats::of(&[1.0, 2.0, 3.0, 4.0, 5.0]).expect("stats");
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        assert!((s.p95 - 4.8).abs() < 1e-9, "{}", s.p95);
        assert!((s.p5 - 1.2).abs() < 1e-9, "{}", s.p5);
        assert_eq!(Stats::of(&[]), None);
    }

    fn options(sla: &[(&str, f64)]) -> RecommendOptions {
        RecommendOptions {
            sla: sla.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..RecommendOptions::default()
        }
    }

    #[test]
    fn upper_bound_method_and_sla_cap() {
        let values = [0.001, 0.0011, 0.0012, 0.0013, 0.002];
        let stats = Stats::of(&values).expect("stats");
        let signal = Signal::parse("e2e.p99").expect("signal");
        let p = propose(signal, stats.clone(), &values, &options(&[]));
        let w = p.rule.warning.expect("warning");
        let c = p.rule.critical.expect("critical");
        // p95 = 1.3ms + 0.8 x 0.7ms = 1.86ms, x1.2 = 2.232ms, printed as 2.23ms.
        assert!((w - 0.00223).abs() < 1e-9, "{w}");
        // max 2ms x 1.4 = 2.8ms beats median 1.2ms + 3 x 0.2ms = 1.8ms.
        assert!((c - 0.0028).abs() < 1e-9, "{c}");
        assert!(
            p.critical_basis.contains("max 2ms x 1.40 = 2.8ms"),
            "{}",
            p.critical_basis
        );

        let capped = propose(signal, stats, &values, &options(&[("e2e.p99", 0.002)]));
        assert_eq!(capped.rule.critical, Some(0.002));
        assert_eq!(
            capped.rule.warning,
            Some(0.002),
            "warning stays <= critical"
        );
        assert!(
            capped.critical_basis.starts_with("SLA 2ms"),
            "{}",
            capped.critical_basis
        );
    }

    #[test]
    fn availability_has_floors_and_lower_bounds() {
        let values = [1.0; 5];
        let stats = Stats::of(&values).expect("stats");
        let signal = Signal::parse("availability").expect("signal");
        let p = propose(signal, stats.clone(), &values, &options(&[]));
        assert_eq!(p.rule.direction, Direction::Lower);
        assert!((p.rule.warning.expect("w") - 0.9999).abs() < 1e-12);
        assert!((p.rule.critical.expect("c") - 0.999).abs() < 1e-12);
        // An SLA stricter than the history's critical raises critical (lower bound).
        let sla = propose(
            signal,
            stats,
            &values,
            &options(&[("delivery.availability", 0.99995)]),
        );
        assert_eq!(sla.rule.critical, Some(0.99995));
        assert_eq!(sla.rule.warning, Some(0.99995));
    }

    #[test]
    fn throughput_is_a_lower_bound() {
        let values = [200.0, 199.0, 201.0, 200.0, 198.0];
        let stats = Stats::of(&values).expect("stats");
        let p = propose(Signal::PublishThroughput, stats, &values, &options(&[]));
        let (w, c) = (p.rule.warning.expect("w"), p.rule.critical.expect("c"));
        assert!(c <= w && w < 198.0, "{w} {c}");
    }

    #[test]
    fn sla_entries_parse() {
        assert_eq!(
            parse_sla("e2e.p99=20ms").expect("sla"),
            ("e2e.p99".into(), 0.02)
        );
        let (name, v) = parse_sla("availability=99.9%").expect("sla");
        assert_eq!(name, "delivery.availability");
        assert!((v - 0.999).abs() < 1e-12);
        assert!(parse_sla("e2e.p99").is_err());
        assert!(parse_sla("e2e.p98=1ms").is_err());
        assert!(
            parse_sla("e2e.p99=20")
                .unwrap_err()
                .to_string()
                .contains("needs a unit")
        );
    }
}
