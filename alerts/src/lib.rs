//! Alerts: rules with two severities, evaluation of run records, JUnit XML and Prometheus
//! alerting-rule export.
//!
//! - [`rule`]: [`Rule`] from a scenario's `[[alerts]]` tables ([`parse_rules`]) or a rules
//!   file ([`read_rules_file`]), validated, errors naming the rule, the field and the line.
//! - [`signal`]: the record figures a rule can watch ([`Signal`]) and their metric names.
//! - [`evaluate`](mod@evaluate): [`evaluate()`] a [`RunRecord`](brokerbench_results::RunRecord)
//!   into one [`Verdict`] per rule (OK / WARNING / CRITICAL).
//! - [`junit`]: the verdicts as a JUnit XML report.
//! - [`prometheus`]: the rules as Prometheus alerting rules and a `promtool test rules` file.
//! - [`recommend`](mod@recommend): warning and critical thresholds proposed from a history
//!   of run records, with the method, the numbers and the false-alarm counts.
//! - [`notify`]: firing verdicts posted to an Alertmanager or an Alertmanager-shaped webhook.

pub mod evaluate;
pub mod junit;
pub mod notify;
pub mod prometheus;
pub mod recommend;
pub mod rule;
pub mod signal;
mod units;

pub use evaluate::{Severity, Verdict, evaluate, render_verdicts, worst};
pub use junit::render_junit;
pub use notify::{Notifier, NotifyError, NotifyFormat};
pub use prometheus::{PrometheusExport, export_prometheus};
pub use recommend::{
    RecommendError, RecommendOptions, Recommendation, read_history, recommend, render_text,
    render_toml,
};
pub use rule::{
    Direction, Rule, RuleError, parse_rules, parse_rules_text, read_rules_file, rules_from_json,
};
pub use signal::Signal;
pub use units::format_value;

/// Compiles the example of `README.md` as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
