//! Evaluation of synthetic run records: whole-run and per-interval breaches, `for`,
//! `min_samples`, and the verdict JSON the HTML report shows.

use brokerbench_alerts::{Severity, evaluate, parse_rules, worst};
use brokerbench_results::record::IntervalFigures;
use brokerbench_results::{BackendInfo, HostFacts, RunFigures, RunInfo, RunRecord};

/// A record of `p99_ms.len()` measured seconds whose interval `i` has e2e p99 `p99_ms[i]`,
/// 100 samples each, and a whole-run p99 of `run_p99_ms`.
fn record(run_p99_ms: f64, p99_ms: &[f64]) -> RunRecord {
    let mut figures = RunFigures {
        duration_s: p99_ms.len() as f64,
        ..RunFigures::default()
    };
    figures.latency.e2e.count = 100 * p99_ms.len() as u64;
    figures.latency.e2e.p99_us = Some(run_p99_ms * 1000.0);
    figures.availability.delivery = Some(1.0);
    figures.volume.delivered = 100 * p99_ms.len() as u64;
    figures.volume.achieved_delivery_rate = 100.0;
    for (i, p99) in p99_ms.iter().enumerate() {
        let mut interval = IntervalFigures {
            index: i as u64,
            ..IntervalFigures::default()
        };
        interval.latency.e2e.count = if *p99 < 0.0 { 0 } else { 100 };
        interval.latency.e2e.p99_us = (*p99 >= 0.0).then_some(p99 * 1000.0);
        interval.volume.delivered = 100;
        interval.volume.achieved_delivery_rate = 100.0;
        interval.availability.delivery = Some(1.0);
        figures.intervals.push(interval);
    }
    // A drain interval after the measured phase, which must not count.
    figures.intervals.push(IntervalFigures {
        index: p99_ms.len() as u64,
        ..IntervalFigures::default()
    });
    let now = time::OffsetDateTime::now_utc();
    RunRecord::new(
        RunInfo {
            run_id: "t".into(),
            scenario_name: "s".into(),
            scenario: serde_json::json!({}),
            alert_rules: serde_json::json!([]),
            backend: BackendInfo {
                name: "reference".into(),
                url: None,
                version: None,
            },
            host: HostFacts::default(),
            started_at: now,
            ended_at: now,
        },
        figures,
    )
}

fn rules(extra: &str) -> Vec<brokerbench_alerts::Rule> {
    let text = format!(
        "[[alerts]]\nname = \"latency\"\nsignal = \"e2e.p99\"\ndirection = \"upper\"\nwarning = \"5ms\"\ncritical = \"10ms\"\n{extra}\n\
         [[alerts]]\nname = \"availability\"\nsignal = \"availability\"\ndirection = \"lower\"\nwarning = \"99.9%\"\ncritical = 0.99\n\
         [[alerts]]\nname = \"throughput\"\nsignal = \"delivery.throughput\"\ndirection = \"lower\"\ncritical = \"50/s\"\n"
    );
    brokerbench_alerts::parse_rules_text(&text, std::path::Path::new("rules.toml")).expect("rules")
}

#[test]
fn healthy_run_is_ok() {
    let r = record(3.0, &[2.0, 3.0, 4.0]);
    let v = evaluate(&r, &rules(""));
    assert_eq!(worst(&v), Severity::Ok, "{v:#?}");
    assert_eq!(
        v[0].message,
        "e2e.p99 3ms <= warning 5ms (no interval of 3 breached)"
    );
    assert_eq!(v[0].intervals_judged, 3);
}

#[test]
fn whole_run_breach_fires_critical() {
    let r = record(12.3, &[12.0, 13.0, 11.0, 12.0, 4.0]);
    let v = evaluate(&r, &rules(""));
    assert_eq!(v[0].severity, Severity::Critical);
    assert_eq!(
        v[0].message,
        "e2e.p99 12.3ms > critical 10ms over the run (4 of 5 intervals breached, longest 4 in a row from t=0s)"
    );
    assert_eq!(v[0].observed.as_deref(), Some("12.3ms"));
    assert_eq!(v[0].threshold.as_deref(), Some("10ms"));
    assert_eq!(v[0].fired_by.as_deref(), Some("run+intervals"));
    assert_eq!(v[1].severity, Severity::Ok);
    let json = v[0].to_json();
    for key in [
        "rule",
        "signal",
        "severity",
        "observed",
        "threshold",
        "message",
    ] {
        assert!(json.get(key).is_some(), "{key} missing in {json}");
    }
    assert_eq!(json["severity"], "critical");
    assert!(json.get("check").is_none());
}

#[test]
fn interval_breaches_need_for_consecutive_intervals() {
    // Whole run fine (4ms); two separate 1-interval spikes over critical, then 3 in a row
    // between warning and critical.
    let r = record(4.0, &[20.0, 1.0, 20.0, 1.0, 7.0, 8.0, 6.0, 1.0]);
    let once = evaluate(&r, &rules(""));
    assert_eq!(once[0].severity, Severity::Critical);
    assert_eq!(once[0].fired_by.as_deref(), Some("intervals"));
    assert_eq!(
        once[0].message,
        "e2e.p99 20ms > critical 10ms for 1 interval from t=0s (worst interval; whole run 4ms)"
    );
    let for3 = evaluate(&r, &rules("for = 3"));
    assert_eq!(for3[0].severity, Severity::Warning, "{:#?}", for3[0]);
    assert_eq!(for3[0].longest_breach, 3);
    assert_eq!(for3[0].intervals_breached, 5);
    assert_eq!(for3[0].first_breach_s, Some(0));
    let for4 = evaluate(&r, &rules("for = 4"));
    assert_eq!(for4[0].severity, Severity::Ok, "{:#?}", for4[0]);
    assert!(
        for4[0].message.contains("fewer than for = 4"),
        "{}",
        for4[0].message
    );
}

#[test]
fn min_samples_skips_thin_intervals_and_breaks_streaks() {
    // -1 = an interval with no samples: not judged, and it breaks the streak.
    let r = record(4.0, &[7.0, -1.0, 7.0, 7.0]);
    let v = evaluate(&r, &rules("for = 3"));
    assert_eq!(v[0].severity, Severity::Ok, "{:#?}", v[0]);
    assert_eq!(v[0].intervals_judged, 3);
    let v = evaluate(&r, &rules("for = 2\nmin_samples = 101"));
    assert_eq!(v[0].intervals_judged, 0);
    assert!(
        v[0].message.contains("no interval of 0 breached"),
        "{}",
        v[0].message
    );
    let v = evaluate(&r, &rules("min_samples = 1000"));
    assert_eq!(v[0].severity, Severity::Ok);
    assert_eq!(
        v[0].message,
        "e2e.p99: no data to judge (400 samples over the run, min_samples 1000)"
    );
}

#[test]
fn lower_bounds_and_counters() {
    let mut r = record(1.0, &[1.0, 1.0]);
    r.figures.availability.delivery = Some(0.995);
    r.figures.correctness.lost = 3;
    let rules = parse_rules(&[
        toml::from_str("signal = \"availability\"\ndirection = \"lower\"\nwarning = \"99.9%\"\ncritical = \"99%\"").expect("toml"),
        toml::from_str("signal = \"lost\"\ndirection = \"upper\"\nwarning = 0\ncritical = 10").expect("toml"),
    ])
    .expect("rules");
    let v = evaluate(&r, &rules);
    assert_eq!(v[0].severity, Severity::Warning);
    assert_eq!(
        v[0].message,
        "delivery.availability 99.5% < warning 99.9% over the run (0 of 2 intervals breached, longest 0 in a row)"
    );
    assert_eq!(v[1].severity, Severity::Warning);
    assert_eq!(v[1].rule, "lost");
}
