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
use std::path::PathBuf;

use brokerbench_results::RunRecord;

use crate::evaluate::{Severity, evaluate};
use crate::rule::{Direction, Rule};
use crate::signal::{Signal, Unit};
use crate::units::{format_value, parse_threshold};

mod history;
mod render;

pub use history::{History, SkippedRun, read_history};
pub use render::{render_text, render_toml};

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

#[cfg(test)]
mod tests;
