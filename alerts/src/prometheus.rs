//! Rules as Prometheus alerting rules (YAML for `rule_files`) over the metric names of
//! `brokerbench export --format prometheus` (see `results/README.md`, "OpenMetrics"), and
//! a `promtool test rules` file that checks each rule at both severities.
//!
//! Each rule becomes one alert per threshold, both named after the rule
//! (`BrokerbenchEndToEndLatency`) and told apart by `labels.severity`, so Alertmanager can
//! inhibit the warning while the critical fires (`equal: [alertname]`). `for = N`
//! intervals becomes `for: Ns` (a record's interval is 1 s); `for = 1` has no `for`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::rule::{Direction, Rule};
use crate::signal::Unit;

/// The two files of an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusExport {
    /// The alerting rules (`promtool check rules` reads it).
    pub rules_yaml: String,
    /// Unit tests of the rules (`promtool test rules` reads it); it names the rules file.
    pub tests_yaml: String,
}

/// A YAML scalar, quoted: single quotes (PromQL's double quotes need no escaping), or
/// double quotes with escapes when the text has line breaks or control characters.
fn q(text: &str) -> String {
    if text.chars().any(|c| c.is_control()) {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// A PromQL string literal.
fn promql_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `BrokerbenchEndToEndLatency` from `end-to-end latency`.
fn alert_name(rule: &Rule) -> String {
    alert_name_of(&rule.name)
}

/// `BrokerbenchEndToEndLatency` from a rule name `end-to-end latency`.
pub(crate) fn alert_name_of(name: &str) -> String {
    let mut out = String::from("Brokerbench");
    for word in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// A float as PromQL and promtool read it (Rust's shortest round-trip form, no exponent).
fn number(v: f64) -> String {
    format!("{v}")
}

struct Alert<'a> {
    rule: &'a Rule,
    name: String,
    threshold: f64,
    matchers: Vec<(String, String)>,
    metric: &'static str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn alerts<'a>(rules: &'a [Rule], scenario: Option<&str>) -> Vec<Alert<'a>> {
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for rule in rules {
        let mut name = alert_name(rule);
        if names.contains(&name) {
            let mut n = 2;
            while names.contains(&format!("{name}{n}")) {
                n += 1;
            }
            name = format!("{name}{n}");
        }
        names.push(name.clone());
        let (metric, fixed) = rule.signal.metric();
        let mut matchers: Vec<(String, String)> = fixed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(s) = scenario {
            matchers.push(("scenario".into(), s.to_owned()));
        }
        for (severity, threshold) in rule.levels().into_iter().rev() {
            let mut labels = rule.labels.clone();
            labels.insert("severity".into(), severity.to_string());
            labels.insert("signal".into(), rule.signal.to_string());
            let mut annotations = rule.annotations.clone();
            let shown = rule.format(threshold);
            annotations.entry("summary".into()).or_insert_with(|| {
                format!(
                    "{}: {} {} {severity} threshold {shown} in {{{{ $labels.scenario }}}} on {{{{ $labels.backend }}}}",
                    rule.name,
                    rule.signal,
                    rule.direction.sign(),
                )
            });
            annotations.entry("description".into()).or_insert_with(|| {
                format!(
                    "brokerbench rule {:?}: {} ({} bound) breached the {severity} threshold {shown} ({} {} {}) in run {{{{ $labels.run_id }}}}.",
                    rule.name,
                    rule.signal,
                    rule.direction,
                    metric,
                    rule.direction.sign(),
                    number(threshold),
                )
            });
            out.push(Alert {
                rule,
                name: name.clone(),
                threshold,
                matchers: matchers.clone(),
                metric,
                labels,
                annotations,
            });
        }
    }
    out
}

fn expr(alert: &Alert<'_>) -> String {
    let matchers: Vec<String> = alert
        .matchers
        .iter()
        .map(|(k, v)| format!("{k}={}", promql_string(v)))
        .collect();
    format!(
        "{}{{{}}} {} {}",
        alert.metric,
        matchers.join(","),
        alert.rule.direction.sign(),
        number(alert.threshold)
    )
}

fn push_map(out: &mut String, indent: &str, key: &str, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for (k, v) in map {
        let _ = writeln!(out, "{indent}  {k}: {}", q(v));
    }
}

/// The alerting rules and their unit tests. `scenario` (when the rules are a scenario's)
/// restricts every expression to that scenario's series; `rules_file` is the file name the
/// tests load the rules from (relative to the tests file).
pub fn export_prometheus(
    rules: &[Rule],
    scenario: Option<&str>,
    rules_file: &str,
) -> PrometheusExport {
    let alerts = alerts(rules, scenario);
    let group = format!("brokerbench-{}", scenario.unwrap_or("rules"));

    let mut y = String::new();
    y.push_str("# Prometheus alerting rules generated by `brokerbench alerts export`.\n");
    y.push_str("# Metrics: `brokerbench export --format prometheus` (results/README.md, \"OpenMetrics\").\n");
    y.push_str("groups:\n");
    let _ = writeln!(y, "  - name: {}", q(&group));
    y.push_str("    rules:\n");
    for a in &alerts {
        let _ = writeln!(y, "      - alert: {}", q(&a.name));
        let _ = writeln!(y, "        expr: {}", q(&expr(a)));
        if a.rule.for_intervals > 1 {
            let _ = writeln!(y, "        for: {}s", a.rule.for_intervals);
        }
        push_map(&mut y, "        ", "labels", &a.labels);
        push_map(&mut y, "        ", "annotations", &a.annotations);
    }

    let mut t = String::new();
    t.push_str("# `promtool test rules` unit tests generated by `brokerbench alerts export`:\n");
    t.push_str("# each rule is fed a healthy value, a value between its thresholds and one past\n");
    t.push_str("# its critical threshold, and must fire exactly the expected severities.\n");
    let _ = writeln!(t, "rule_files:\n  - {}", q(rules_file));
    t.push_str("evaluation_interval: 1s\ntests:\n");
    let scenario_label = scenario.unwrap_or("promtool-test");
    for rule in rules {
        let rule_alerts: Vec<&Alert<'_>> = alerts
            .iter()
            .filter(|a| std::ptr::eq(a.rule, rule))
            .collect();
        let Some(first) = rule_alerts.first() else {
            continue;
        };
        let mut series_labels: BTreeMap<String, String> = first.matchers.iter().cloned().collect();
        series_labels.insert("scenario".into(), scenario_label.into());
        series_labels.insert("backend".into(), "reference".into());
        series_labels.insert("run_id".into(), "promtool".into());
        let series = format!(
            "{}{{{}}}",
            first.metric,
            series_labels
                .iter()
                .map(|(k, v)| format!("{k}={}", promql_string(v)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let eval_s = 60.max(u64::from(rule.for_intervals) + 10);
        for (case, value) in cases(rule) {
            let _ = writeln!(
                t,
                "  # {}: {case} ({} = {})",
                rule.name,
                rule.signal,
                rule.format(value)
            );
            t.push_str("  - interval: 1s\n    input_series:\n");
            let _ = writeln!(t, "      - series: {}", q(&series));
            let _ = writeln!(
                t,
                "        values: {}",
                q(&format!("{}+0x{}", number(value), eval_s + 10))
            );
            t.push_str("    alert_rule_test:\n");
            let _ = writeln!(t, "      - eval_time: {eval_s}s");
            let _ = writeln!(t, "        alertname: {}", q(&first.name));
            let firing: Vec<&&Alert<'_>> = rule_alerts
                .iter()
                .filter(|a| a.rule.direction.breaches(value, a.threshold))
                .collect();
            if firing.is_empty() {
                t.push_str("        exp_alerts: []\n");
                continue;
            }
            t.push_str("        exp_alerts:\n");
            for a in firing {
                let mut labels = series_labels.clone();
                labels.extend(a.labels.clone());
                let annotations: BTreeMap<String, String> = a
                    .annotations
                    .iter()
                    .map(|(k, v)| {
                        let v = v
                            .replace("{{ $labels.scenario }}", scenario_label)
                            .replace("{{ $labels.backend }}", "reference")
                            .replace("{{ $labels.run_id }}", "promtool");
                        (k.clone(), v)
                    })
                    .collect();
                let mut first_line = true;
                for (key, map) in [("exp_labels", &labels), ("exp_annotations", &annotations)] {
                    let lead = if first_line {
                        "          - "
                    } else {
                        "            "
                    };
                    first_line = false;
                    let _ = writeln!(t, "{lead}{key}:");
                    for (k, v) in map {
                        let _ = writeln!(t, "                {k}: {}", q(v));
                    }
                }
            }
        }
    }
    PrometheusExport {
        rules_yaml: y,
        tests_yaml: t,
    }
}

/// Test values for a rule: healthy, between the thresholds, past critical — each only
/// when it exists (a lower bound of 0 cannot be undershot).
fn cases(rule: &Rule) -> Vec<(&'static str, f64)> {
    let sensitive = rule.warning.or(rule.critical).unwrap_or_default();
    let severe = rule.critical.or(rule.warning).unwrap_or_default();
    let mut out = Vec::new();
    match rule.direction {
        Direction::Upper => {
            out.push(("healthy", sensitive / 2.0));
            if let (Some(w), Some(c)) = (rule.warning, rule.critical) {
                if w < c {
                    out.push(("warning only", (w + c) / 2.0));
                }
            }
            let past = if severe > 0.0 { severe * 2.0 } else { 1.0 };
            let past = if rule.signal.unit() == Unit::Ratio {
                past.min(1.0)
            } else {
                past
            };
            if rule.direction.breaches(past, severe) {
                out.push(("critical", past));
            }
        }
        Direction::Lower => {
            let healthy = match rule.signal.unit() {
                Unit::Ratio => (1.0 + sensitive) / 2.0,
                _ if sensitive > 0.0 => sensitive * 2.0,
                _ => 1.0,
            };
            out.push(("healthy", healthy));
            if let (Some(w), Some(c)) = (rule.warning, rule.critical) {
                if w > c {
                    out.push(("warning only", (w + c) / 2.0));
                }
            }
            if severe > 0.0 {
                out.push(("critical", severe / 2.0));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_rules;

    #[test]
    fn rules_have_expr_for_and_severity() {
        let rules = parse_rules(&[toml::from_str(
            r#"name = "end-to-end latency"
signal = "e2e.p99"
direction = "upper"
warning = "5ms"
critical = "20ms"
for = 3
runbook_url = "https://runbooks.example/it's"
"#,
        )
        .expect("toml")])
        .expect("rules");
        let e = export_prometheus(&rules, Some("chat-1to1"), "rules.yml");
        let y = &e.rules_yaml;
        assert!(y.contains("- alert: 'BrokerbenchEndToEndLatency'"), "{y}");
        assert!(y.contains("expr: 'brokerbench_e2e_latency_quantile_seconds{quantile=\"0.99\",scenario=\"chat-1to1\"} > 0.02'"), "{y}");
        assert!(y.contains("for: 3s"), "{y}");
        assert!(
            y.contains("severity: 'warning'") && y.contains("severity: 'critical'"),
            "{y}"
        );
        assert!(
            y.contains("runbook_url: 'https://runbooks.example/it''s'"),
            "{y}"
        );
        assert!(
            e.tests_yaml.contains("values: '0.0125+0x"),
            "{}",
            e.tests_yaml
        );
    }

    #[test]
    fn quotes_yaml() {
        assert_eq!(q("a'b"), "'a''b'");
        assert_eq!(q("a\nb\"c"), "\"a\\nb\\\"c\"");
    }
}
