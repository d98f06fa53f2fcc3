//! `brokerbench capacity`: step the offered rate up with real runs until the SLA breaks,
//! bisect between the last healthy and the first broken rate, and recommend call-volume
//! thresholds a margin below the break point.
//!
//! A step is **broken** when its e2e p99 is above the limit (`--p99`, else the critical
//! threshold of the scenario's `e2e.p99` rule), its delivery or publish availability is
//! under the target (`--availability`, else the critical threshold of the scenario's
//! availability rule, else 99.9 %), or its achieved publish rate is more than 5 % behind
//! the offered rate (the record's `saturated`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use brokerbench_adapters::BackendKind;
use brokerbench_alerts::signal::{Latency, Quantile, Unit};
use brokerbench_alerts::{Direction, Signal, format_value, parse_rules};
use brokerbench_bench::RunOptions;
use brokerbench_results::RunRecord;
use brokerbench_results::collector::SATURATION_TOLERANCE;
use brokerbench_scenarios::Scenario;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::exit;
use crate::run::run_id;
use crate::workers;

/// The availability target without a flag or a rule.
const DEFAULT_AVAILABILITY: f64 = 0.999;

/// Flags of `brokerbench capacity`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in scenario name or a TOML path; its workloads are scaled to each rate.
    scenario: String,
    /// Broker to measure. Without --url, `reference` starts an embedded reference broker.
    #[arg(long, default_value = "reference")]
    backend: BackendKind,
    /// Broker endpoint (default: the backend's BROKERBENCH_<BACKEND>_URL, else its usual
    /// localhost address).
    #[arg(long)]
    url: Option<String>,
    /// Runtime worker threads of the harness [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// First offered rate [default: the scenario's rate].
    #[arg(long, value_parser = brokerbench_scenarios::parse_rate)]
    start: Option<f64>,
    /// Highest offered rate to try.
    #[arg(long, value_parser = brokerbench_scenarios::parse_rate, default_value = "1M")]
    max: f64,
    /// Factor between steps while no step has broken (> 1).
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Bisection steps between the last healthy and the first broken rate.
    #[arg(long, default_value_t = 3)]
    bisect: u32,
    /// Measured phase of each step (warm-up and drain as in the scenario).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    step_duration: Duration,
    /// e2e p99 limit (e.g. 20ms) [default: the scenario's e2e.p99 critical threshold].
    #[arg(long, value_parser = parse_latency)]
    p99: Option<f64>,
    /// Availability target (e.g. 99.9%) [default: the scenario's availability critical
    /// threshold, else 99.9%].
    #[arg(long, value_parser = parse_ratio)]
    availability: Option<f64>,
    /// Warning threshold as a share of the break point.
    #[arg(long, default_value_t = 0.70)]
    warning_share: f64,
    /// Critical threshold as a share of the break point.
    #[arg(long, default_value_t = 0.85)]
    critical_share: f64,
    /// Write the curve and the result as JSON here.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

fn parse_sla(text: &str, signal: &str) -> Result<f64, String> {
    brokerbench_alerts::recommend::parse_sla(&format!("{signal}={text}"))
        .map(|(_, v)| v)
        .map_err(|e| e.to_string())
}

fn parse_latency(text: &str) -> Result<f64, String> {
    parse_sla(text, "e2e.p99")
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    parse_sla(text, "availability")
}

/// What makes a step broken.
#[derive(Clone, Debug, PartialEq)]
struct Criteria {
    /// e2e p99 limit, seconds; `None`: latency is not judged.
    p99: Option<f64>,
    /// Availability target, ratio.
    availability: f64,
}

/// One measured step of the curve.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    offered: f64,
    achieved: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    availability: Option<f64>,
    /// Why the step is broken; empty when healthy.
    reasons: Vec<String>,
}

impl Step {
    fn of(offered: f64, record: &RunRecord, criteria: &Criteria) -> Self {
        let f = &record.figures;
        let availability = match (f.availability.delivery, f.availability.publish) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (a, b) => a.or(b),
        };
        let p99 = f.latency.e2e.p99_us.map(|us| us / 1e6);
        let mut reasons = Vec::new();
        if let (Some(limit), Some(v)) = (criteria.p99, p99) {
            if v > limit {
                reasons.push(format!(
                    "p99 {} > {}",
                    format_value(v, Unit::Seconds),
                    format_value(limit, Unit::Seconds)
                ));
            }
        }
        match availability {
            Some(a) if a < criteria.availability => reasons.push(format!(
                "availability {} < {}",
                format_value(a, Unit::Ratio),
                format_value(criteria.availability, Unit::Ratio)
            )),
            None => reasons.push("no availability figure (nothing was published)".into()),
            _ => {}
        }
        let achieved = f.volume.achieved_publish_rate;
        if f.volume.saturated {
            reasons.push(format!(
                "achieved {} < 95% of offered {}",
                format_value(achieved, Unit::Rate),
                format_value(f.volume.offered_rate, Unit::Rate)
            ));
        }
        Self {
            offered,
            achieved,
            p50: f.latency.e2e.p50_us.map(|us| us / 1e6),
            p99,
            availability,
            reasons,
        }
    }

    fn healthy(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The rate search: multiply by `factor` until a step breaks or `max` is passed, then
/// bisect `bisect` times between the last healthy and the first broken rate.
#[derive(Clone, Debug)]
struct Search {
    next: Option<f64>,
    max: f64,
    factor: f64,
    bisect_left: u32,
    healthy: Option<f64>,
    broken: Option<f64>,
}

impl Search {
    fn new(start: f64, max: f64, factor: f64, bisect: u32) -> Self {
        Self {
            next: Some(start.min(max)),
            max,
            factor,
            bisect_left: bisect,
            healthy: None,
            broken: None,
        }
    }

    /// The next rate to try; `None` when the search is over.
    fn next(&self) -> Option<f64> {
        self.next
    }

    /// Records the outcome of the step at `rate` and picks the next rate.
    fn record(&mut self, rate: f64, healthy: bool) {
        if healthy {
            self.healthy = Some(self.healthy.map_or(rate, |h| h.max(rate)));
        } else {
            self.broken = Some(self.broken.map_or(rate, |b| b.min(rate)));
        }
        self.next = match (self.healthy, self.broken) {
            // Still climbing.
            (Some(h), None) if h < self.max => Some((h * self.factor).min(self.max)),
            (Some(_), None) => None,
            // Broken at the first rate: nothing healthy to bisect from.
            (None, Some(_)) => None,
            (Some(h), Some(b)) if self.bisect_left > 0 && b - h > h * 0.01 => {
                self.bisect_left -= 1;
                Some((h + b) / 2.0)
            }
            _ => None,
        };
    }
}

/// Runs the command.
impl Args {
    /// The harness's runtime worker threads (see [`crate::workers`]).
    pub fn worker_threads(&self) -> usize {
        workers::count(self.workers)
    }
}

pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let fail = |message: String| {
        eprintln!("error: {message}");
        Ok(exit::harness_failure())
    };
    let scenario = match Scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(err) => return fail(err.to_string()),
    };
    if args.factor <= 1.0 {
        return fail(format!("--factor {} must be above 1", args.factor));
    }
    if !(0.0 < args.warning_share
        && args.warning_share <= args.critical_share
        && args.critical_share <= 1.0)
    {
        return fail(format!(
            "--warning-share {} and --critical-share {} must satisfy 0 < warning <= critical <= 1",
            args.warning_share, args.critical_share
        ));
    }
    let rules = match parse_rules(&scenario.alerts) {
        Ok(r) => r,
        Err(err) => return fail(format!("scenario {}: {err}", scenario.name)),
    };
    let rule_threshold = |signals: &[Signal]| {
        rules
            .iter()
            .filter(|r| signals.contains(&r.signal))
            .find_map(|r| r.critical)
    };
    let criteria = Criteria {
        p99: args
            .p99
            .or_else(|| rule_threshold(&[Signal::Latency(Latency::E2e, Quantile::P99)])),
        availability: args
            .availability
            .or_else(|| {
                rule_threshold(&[Signal::DeliveryAvailability, Signal::PublishAvailability])
            })
            .unwrap_or(DEFAULT_AVAILABILITY),
    };
    let start = args
        .start
        .unwrap_or_else(|| scenario.offered_rate_at(Duration::ZERO));
    if !(start > 0.0 && start <= args.max) {
        return fail(format!(
            "the start rate {start} must be above 0 and at most --max {}",
            args.max
        ));
    }

    let connection = match Connection::open(args.backend, args.url.as_deref(), false).await {
        Ok(c) => c,
        Err(err) => return fail(format!("{err:#}")),
    };
    eprintln!(
        "capacity of {} on {} ({}): from {} up to {}, x{} per step, {:?} per step; broken when {}",
        scenario.name,
        args.backend,
        connection.url,
        format_value(start, Unit::Rate),
        format_value(args.max, Unit::Rate),
        args.factor,
        args.step_duration,
        describe(&criteria)
    );
    let mut search = Search::new(start, args.max, args.factor, args.bisect);
    let mut steps: Vec<Step> = Vec::new();
    let mut failure = None;
    while let Some(rate) = search.next() {
        match step(&connection, &scenario, rate, args.step_duration, &criteria).await {
            Ok(step) => {
                eprintln!("  {}", step_line(&step));
                search.record(rate, step.healthy());
                steps.push(step);
            }
            Err(err) => {
                failure = Some(format!("{err:#}"));
                break;
            }
        }
    }
    if let Some(died) = connection.close().await {
        failure.get_or_insert(died);
    }
    if let Some(err) = failure {
        return fail(format!("capacity search stopped: {err}"));
    }
    steps.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    let result = CapacityResult {
        scenario: scenario.name.clone(),
        backend: args.backend.to_string(),
        criteria,
        steps,
        last_healthy: search.healthy,
        break_point: search.broken,
        warning_share: args.warning_share,
        critical_share: args.critical_share,
        max: args.max,
    };
    print!("{}", result.render());
    if let Some(path) = &args.out {
        crate::report::write_output(
            path,
            serde_json::to_string_pretty(&result.json())?.as_bytes(),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote the curve to {}", path.display());
    }
    Ok(exit::PASSED)
}

fn describe(c: &Criteria) -> String {
    let mut out = String::new();
    if let Some(p99) = c.p99 {
        let _ = write!(out, "p99 > {}, ", format_value(p99, Unit::Seconds));
    }
    let _ = write!(
        out,
        "availability < {}, or achieved < 95% of offered",
        format_value(c.availability, Unit::Ratio)
    );
    out
}

/// One run of `scenario` scaled to `rate`, measured for `duration`.
async fn step(
    connection: &Connection,
    scenario: &Scenario,
    rate: f64,
    duration: Duration,
    criteria: &Criteria,
) -> anyhow::Result<Step> {
    let scaled = scenario.clone().with_rate(rate)?.with_duration(duration)?;
    let id = run_id();
    let plan = scaled.plan(&id);
    let outcome = brokerbench_bench::run(
        &plan,
        connection.backend.clone(),
        RunOptions {
            broker_pid: connection.broker_pid,
            cancel: CancellationToken::new(),
            progress: None,
            start_at: None,
            faults: None,
        },
    )
    .await
    .with_context(|| format!("the step at {} failed", format_value(rate, Unit::Rate)))?;
    let record = connection.record(id, &scaled, outcome)?;
    if let Some(reason) = record.partial_reason.as_deref().filter(|_| record.partial) {
        anyhow::bail!(
            "the step at {} is incomplete: {reason}",
            format_value(rate, Unit::Rate)
        );
    }
    Ok(Step::of(rate, &record, criteria))
}

fn opt(v: Option<f64>, unit: Unit) -> String {
    v.map_or("-".into(), |v| format_value(v, unit))
}

fn step_line(s: &Step) -> String {
    format!(
        "{:>10}  achieved {:>10}  p50 {:>9}  p99 {:>9}  availability {:>8}  {}",
        format_value(s.offered, Unit::Rate),
        format_value(s.achieved, Unit::Rate),
        opt(s.p50, Unit::Seconds),
        opt(s.p99, Unit::Seconds),
        opt(s.availability, Unit::Ratio),
        if s.healthy() {
            "healthy".to_owned()
        } else {
            format!("BROKEN: {}", s.reasons.join("; "))
        }
    )
}

/// The outcome of a search.
struct CapacityResult {
    scenario: String,
    backend: String,
    criteria: Criteria,
    steps: Vec<Step>,
    last_healthy: Option<f64>,
    break_point: Option<f64>,
    warning_share: f64,
    critical_share: f64,
    max: f64,
}

impl CapacityResult {
    /// Call-volume thresholds: shares of the break point (upper bounds on throughput);
    /// only when the break was bracketed by a healthy step (a break at the first step
    /// only bounds the break point from above).
    fn thresholds(&self) -> Option<(f64, f64)> {
        self.last_healthy?;
        let b = self.break_point?;
        Some((b * self.warning_share, b * self.critical_share))
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "capacity of {} on {}: broken when {}",
            self.scenario,
            self.backend,
            describe(&self.criteria)
        );
        let _ = writeln!(out, "curve (offered rate -> figures):");
        for s in &self.steps {
            let _ = writeln!(out, "  {}", step_line(s));
        }
        let rate = |v: f64| format_value(v, Unit::Rate);
        match (self.last_healthy, self.break_point) {
            (Some(h), Some(b)) => {
                let _ = writeln!(out, "break point: {} (last healthy {})", rate(b), rate(h));
            }
            (None, Some(b)) => {
                let _ = writeln!(
                    out,
                    "break point: at or below {} (the first step already broke; lower --start)",
                    rate(b)
                );
            }
            (Some(h), None) => {
                let _ = writeln!(
                    out,
                    "no break point up to --max {}: last healthy {}",
                    rate(self.max),
                    rate(h)
                );
            }
            (None, None) => {
                let _ = writeln!(out, "no step was measured");
            }
        }
        if let Some((w, c)) = self.thresholds() {
            let _ = writeln!(
                out,
                "recommended call-volume thresholds: warning {} ({:.0}% of the break point), critical {} ({:.0}%)",
                rate(w),
                self.warning_share * 100.0,
                rate(c),
                self.critical_share * 100.0
            );
            let _ = writeln!(
                out,
                "\n[[alerts]]\nname = \"call volume near capacity\"\nsignal = \"throughput\"\ndirection = \"{}\"\nwarning = \"{}\"\ncritical = \"{}\"\nsummary = \"offered load approaches the measured break point {} of {} on {}\"",
                Direction::Upper,
                rate(w),
                rate(c),
                rate(self.break_point.unwrap_or_default()),
                self.scenario,
                self.backend
            );
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let thresholds = self
            .thresholds()
            .map(|(w, c)| json!({"signal": "throughput", "direction": "upper", "warning_rate": w, "critical_rate": c}));
        json!({
            "scenario": self.scenario,
            "backend": self.backend,
            "criteria": {
                "p99_s": self.criteria.p99,
                "availability": self.criteria.availability,
                "max_saturation": SATURATION_TOLERANCE,
            },
            "curve": self.steps.iter().map(|s| json!({
                "offered_rate": s.offered,
                "achieved_rate": s.achieved,
                "p50_s": s.p50,
                "p99_s": s.p99,
                "availability": s.availability,
                "healthy": s.healthy(),
                "reasons": s.reasons,
            })).collect::<Vec<_>>(),
            "last_healthy_rate": self.last_healthy,
            "break_point_rate": self.break_point,
            "max_rate": self.max,
            "thresholds": thresholds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(breaks_at: f64, start: f64, max: f64) -> (Vec<f64>, Search) {
        let mut s = Search::new(start, max, 2.0, 3);
        let mut tried = Vec::new();
        while let Some(rate) = s.next() {
            tried.push(rate);
            s.record(rate, rate < breaks_at);
            assert!(tried.len() < 50, "the search ends");
        }
        (tried, s)
    }

    #[test]
    fn steps_up_then_bisects() {
        let (tried, s) = walk(1000.0, 100.0, 1e6);
        assert_eq!(
            tried,
            [100.0, 200.0, 400.0, 800.0, 1600.0, 1200.0, 1000.0, 900.0]
        );
        assert_eq!((s.healthy, s.broken), (Some(900.0), Some(1000.0)));
    }

    #[test]
    fn stops_at_max_and_at_a_broken_start() {
        let (tried, s) = walk(f64::INFINITY, 100.0, 500.0);
        assert_eq!(tried, [100.0, 200.0, 400.0, 500.0]);
        assert_eq!((s.healthy, s.broken), (Some(500.0), None));
        let (tried, s) = walk(10.0, 100.0, 500.0);
        assert_eq!(tried, [100.0]);
        assert_eq!((s.healthy, s.broken), (None, Some(100.0)));
    }
}
