//! Evaluation of a run record against rules: over the whole run and over the interval
//! series of the measured phase.
//!
//! A level (warning or critical) fires when the whole run's value breaches it, or when
//! `for` consecutive judged intervals breach it. An interval is judged when it has a
//! value and at least `min_samples` samples; one that is not judged breaks a streak, so
//! "consecutive" means consecutive in time. Only intervals inside the measured phase are
//! judged (the drain has no offered load, so its throughput says nothing).

use std::fmt;
use std::str::FromStr;

use brokerbench_results::RunRecord;
use serde::Serialize;
use serde_json::Value;

use crate::rule::Rule;
use crate::signal::Observation;

/// How bad a verdict is; ordered `Ok < Warning < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing fired.
    Ok,
    /// The early-warning threshold fired.
    Warning,
    /// The SLA threshold fired.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ok" => Ok(Severity::Ok),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!("{s:?} is not a severity (ok, warning, critical)")),
        }
    }
}

/// The verdict of one rule on one record; serialised into the record's `verdicts`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The rule's name.
    pub rule: String,
    /// The signal watched (`e2e.p99`).
    pub signal: String,
    /// The highest level that fired, or `ok`.
    pub severity: Severity,
    /// The value that fired (the run's, or the worst breaching interval's), else the
    /// run's value, for people (`12.3ms`); `null` without data.
    pub observed: Option<String>,
    /// The threshold that fired, else the most sensitive one, for people (`10ms`).
    pub threshold: Option<String>,
    /// One sentence: `e2e.p99 12.3ms > critical 10ms for 4 intervals (from t=2s)`.
    pub message: String,
    /// `upper` or `lower`.
    pub direction: String,
    /// What fired: `run`, `intervals`, `run+intervals`; `null` when nothing fired.
    pub fired_by: Option<String>,
    /// `observed` in the signal's base unit (seconds, ratio, msg/s, cores, bytes, count).
    pub observed_value: Option<f64>,
    /// `threshold` in the signal's base unit.
    pub threshold_value: Option<f64>,
    /// The whole run's value in the base unit.
    pub run_value: Option<f64>,
    /// Intervals of the measured phase that were judged (enough samples).
    pub intervals_judged: usize,
    /// Judged intervals breaching the reported threshold.
    pub intervals_breached: usize,
    /// The longest run of consecutive breaching intervals.
    pub longest_breach: usize,
    /// Start of the first breaching interval, seconds from the start of the measured phase.
    pub first_breach_s: Option<u64>,
    /// The rule's `for` (consecutive intervals).
    #[serde(rename = "for")]
    pub for_intervals: u32,
    /// The rule's labels.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The rule's annotations (summary, runbook_url).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Verdict {
    /// The verdict as a JSON object for the record's `verdicts`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| {
            serde_json::json!({"rule": self.rule, "severity": self.severity, "message": self.message, "error": e.to_string()})
        })
    }
}

/// What one threshold did over the record.
#[derive(Clone, Copy, Debug, Default)]
struct LevelOutcome {
    run_breach: bool,
    judged: usize,
    breached: usize,
    longest: usize,
    first: Option<u64>,
    /// The worst value among the breaching intervals.
    worst: Option<f64>,
}

impl LevelOutcome {
    fn fires(&self, for_intervals: u32) -> bool {
        self.run_breach || self.longest >= for_intervals as usize
    }
}

/// Evaluates every rule on `record`, in order.
pub fn evaluate(record: &RunRecord, rules: &[Rule]) -> Vec<Verdict> {
    rules.iter().map(|r| evaluate_rule(record, r)).collect()
}

/// The worst severity of `verdicts` (`Ok` when there are none).
pub fn worst(verdicts: &[Verdict]) -> Severity {
    verdicts
        .iter()
        .map(|v| v.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

/// The interval indices of the measured phase: whole 1 s intervals inside `duration_s`.
fn in_measured_phase(index: u64, duration_s: f64) -> bool {
    (index as f64) + 1.0 <= duration_s + 1e-3
}

fn level(record: &RunRecord, rule: &Rule, run: Observation, threshold: f64) -> LevelOutcome {
    let mut out = LevelOutcome {
        run_breach: run.samples >= rule.min_samples
            && run
                .value
                .is_some_and(|v| rule.direction.breaches(v, threshold)),
        ..LevelOutcome::default()
    };
    let mut streak = 0usize;
    for interval in &record.figures.intervals {
        if !in_measured_phase(interval.index, record.figures.duration_s) {
            continue;
        }
        let obs = rule.signal.of_interval(interval);
        let value = match obs.value {
            Some(v) if obs.samples >= rule.min_samples => v,
            _ => {
                streak = 0;
                continue;
            }
        };
        out.judged += 1;
        if rule.direction.breaches(value, threshold) {
            out.breached += 1;
            streak += 1;
            out.longest = out.longest.max(streak);
            out.first.get_or_insert(interval.index);
            let worse = match (out.worst, rule.direction) {
                (None, _) => true,
                (Some(w), d) => d.breaches(value, w),
            };
            if worse {
                out.worst = Some(value);
            }
        } else {
            streak = 0;
        }
    }
    out
}

fn evaluate_rule(record: &RunRecord, rule: &Rule) -> Verdict {
    let run = rule.signal.of_run(record);
    let signal = rule.signal.to_string();
    let mut verdict = Verdict {
        rule: rule.name.clone(),
        signal: signal.clone(),
        severity: Severity::Ok,
        observed: run.value.map(|v| rule.format(v)),
        threshold: None,
        message: String::new(),
        direction: rule.direction.to_string(),
        fired_by: None,
        observed_value: run.value,
        threshold_value: None,
        run_value: run.value,
        intervals_judged: 0,
        intervals_breached: 0,
        longest_breach: 0,
        first_breach_s: None,
        for_intervals: rule.for_intervals,
        labels: rule.labels.clone(),
        annotations: rule.annotations.clone(),
    };
    let levels = rule.levels();
    for &(severity, threshold) in &levels {
        let outcome = level(record, rule, run, threshold);
        verdict.intervals_judged = outcome.judged;
        verdict.intervals_breached = outcome.breached;
        verdict.longest_breach = outcome.longest;
        verdict.first_breach_s = outcome.first;
        verdict.threshold = Some(rule.format(threshold));
        verdict.threshold_value = Some(threshold);
        if !outcome.fires(rule.for_intervals) {
            continue;
        }
        verdict.severity = severity;
        let by_intervals = outcome.longest >= rule.for_intervals as usize && outcome.breached > 0;
        let sign = rule.direction.sign();
        let intervals = format!(
            "{} of {} intervals breached, longest {} in a row{}",
            outcome.breached,
            outcome.judged,
            outcome.longest,
            outcome
                .first
                .map(|t| format!(" from t={t}s"))
                .unwrap_or_default()
        );
        if outcome.run_breach {
            let value = run.value.unwrap_or_default();
            verdict.fired_by = Some(if by_intervals { "run+intervals" } else { "run" }.into());
            verdict.message = format!(
                "{signal} {} {sign} {severity} {} over the run ({intervals})",
                rule.format(value),
                rule.format(threshold)
            );
        } else {
            let worst = outcome.worst.unwrap_or_default();
            verdict.fired_by = Some("intervals".into());
            verdict.observed = Some(rule.format(worst));
            verdict.observed_value = Some(worst);
            verdict.message = format!(
                "{signal} {} {sign} {severity} {} for {} interval{}{} (worst interval; whole run {})",
                rule.format(worst),
                rule.format(threshold),
                outcome.longest,
                if outcome.longest == 1 { "" } else { "s" },
                outcome
                    .first
                    .map(|t| format!(" from t={t}s"))
                    .unwrap_or_default(),
                run.value.map_or("no data".into(), |v| rule.format(v))
            );
        }
        return verdict;
    }
    // Nothing fired: the figures were against the most sensitive threshold (the last).
    match (run.value, levels.last()) {
        (Some(v), Some(&(severity, threshold))) if run.samples >= rule.min_samples => {
            let streak_note = if verdict.intervals_breached > 0 {
                format!(
                    "{} of {} intervals breached, longest {} in a row, fewer than for = {}",
                    verdict.intervals_breached,
                    verdict.intervals_judged,
                    verdict.longest_breach,
                    rule.for_intervals
                )
            } else {
                format!("no interval of {} breached", verdict.intervals_judged)
            };
            verdict.message = format!(
                "{signal} {} {} {severity} {} ({streak_note})",
                rule.format(v),
                rule.direction.ok_sign(),
                rule.format(threshold)
            );
        }
        _ => {
            verdict.message = format!(
                "{signal}: no data to judge ({} samples over the run, min_samples {})",
                run.samples, rule.min_samples
            );
        }
    }
    verdict
}

/// One line per verdict for the terminal: `CRITICAL  name: message`.
pub fn render_verdicts(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    if verdicts.is_empty() {
        out.push_str("alerts: no rules\n");
        return out;
    }
    out.push_str("alerts:\n");
    for v in verdicts {
        let tag = v.severity.to_string().to_ascii_uppercase();
        out.push_str(&format!("  {tag:<8}  {}: {}\n", v.rule, v.message));
    }
    out
}
