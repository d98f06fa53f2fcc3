use super::*;
use crate::record::{BackendInfo, HostFacts, RunFigures, RunInfo};

fn record(backend: &str, scenario: &str, p99_us: f64, rate: f64) -> RunRecord {
    let mut figures = RunFigures {
        duration_s: 6.0,
        ..RunFigures::default()
    };
    figures.latency.e2e.p99_us = Some(p99_us);
    figures.latency.e2e.p50_us = Some(100.0);
    figures.volume.offered_rate = 1_000.0;
    figures.volume.achieved_publish_rate = rate;
    figures.availability.delivery = Some(1.0);
    let t = time::macros::datetime!(2026-11-22 10:00:00 UTC);
    RunRecord::new(
        RunInfo {
            run_id: format!("run-{backend}"),
            scenario_name: scenario.into(),
            scenario: serde_json::json!({}),
            alert_rules: serde_json::json!([]),
            backend: BackendInfo {
                name: backend.into(),
                url: None,
                version: None,
            },
            host: HostFacts::default(),
            started_at: t,
            ended_at: t,
        },
        figures,
    )
}

fn row<'a>(c: &'a Comparison, name: &str) -> &'a ComparisonRow {
    c.rows.iter().find(|r| r.figure.name == name).unwrap()
}

#[test]
fn relative_differences_and_winners() {
    let a = record("reference", "chat", 1_000.0, 1_000.0);
    let b = record("nats", "chat", 1_500.0, 990.0);
    let c = Comparison::new(&[&a, &b]);
    let p99 = row(&c, "e2e p99");
    assert_eq!(p99.relative, vec![None, Some(0.5)]);
    assert_eq!(p99.best, Best::Run(0), "lower latency wins");
    let rate = row(&c, "achieved publish rate");
    assert_eq!(rate.best, Best::Run(0), "higher rate wins");
    assert!((rate.relative[1].unwrap() + 0.01).abs() < 1e-12);
    assert_eq!(row(&c, "e2e p50").best, Best::Tie);
    assert_eq!(row(&c, "offered rate").best, Best::NotRanked);
    assert_eq!(row(&c, "e2e max").best, Best::NotRanked, "no values");
    assert_eq!(row(&c, "lost").best, Best::Tie);
}

#[test]
fn relative_edge_cases() {
    assert_eq!(relative(0.0, 0.0), Some(0.0));
    assert_eq!(relative(0.0, 3.0), None);
    assert_eq!(relative(2.0, 1.0), Some(-0.5));
    assert_eq!(format_relative(Some(0.114), true), "+11.4 %");
    assert_eq!(format_relative(None, true), "n/a");
    assert_eq!(format_relative(None, false), "-");
    assert_eq!(format_relative(Some(-0.00021), true), "-0.02 %");
    assert_eq!(format_relative(Some(0.0), true), "0 %");
}

#[test]
fn text_and_markdown_tables() {
    let a = record("reference", "chat", 1_000.0, 1_000.0);
    let b = record("nats", "chat", 1_500.0, 990.0);
    let c = Comparison::new(&[&a, &b]);
    let text = c.render_text();
    let p99 = text.lines().find(|l| l.starts_with("e2e p99 ")).unwrap();
    assert!(p99.contains("1.00 ms") && p99.contains("1.50 ms"), "{p99}");
    assert!(
        p99.contains("+50.0 %") && p99.ends_with("reference"),
        "{p99}"
    );
    let header = text.lines().find(|l| l.starts_with("figure")).unwrap();
    assert!(header.contains("Δ nats"), "{header}");
    // Every table line has the same layout as the header: values right-aligned.
    let md = c.render_markdown();
    assert!(
        md.contains("| figure | reference | nats | Δ nats | better |"),
        "{md}"
    );
    assert!(
        md.contains("| e2e p99 | **1.00 ms** | 1.50 ms | +50.0 % | reference |"),
        "{md}"
    );
    assert!(md.contains("| --- | ---: | ---: | ---: | --- |"), "{md}");
}

#[test]
fn scenario_mismatch_is_named() {
    let a = record("reference", "chat", 1.0, 1.0);
    let b = record("nats", "chat", 1.0, 1.0);
    let c = record("redis", "group-chat", 1.0, 1.0);
    assert!(same_scenario(&[&a, &b]).is_ok());
    let err = same_scenario(&[&a, &b, &c]).unwrap_err();
    assert_eq!(err.other, 2);
    assert_eq!(err.first_scenario, "chat");
    assert_eq!(err.other_scenario, "group-chat");
}

#[test]
fn labels_are_unique() {
    let a = record("reference", "chat", 1.0, 1.0);
    let b = record("reference", "chat", 1.0, 1.0);
    let c = record("nats", "chat", 1.0, 1.0);
    assert_eq!(
        run_labels(&[&a, &b, &c]),
        vec!["reference #1", "reference #2", "nats"]
    );
    assert_eq!(run_labels(&[&c, &a]), vec!["nats", "reference"]);
}
