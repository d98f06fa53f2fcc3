//! Tests of the HTML report.

use super::charts::{PERCENTILE_STEPS, percentile_curve};
use super::plots::{PERCENTILE_AXIS_END, quantile_at};
use super::*;
use crate::record::{
    BackendInfo, EncodedHistograms, HostFacts, IntervalAvailability, IntervalCompute,
    IntervalFigures, LatencySummaries, RunFigures, RunInfo, VolumeFigures,
};
use crate::recorder::LatencySet;

fn record(backend: &str, scale: u64) -> RunRecord {
    let mut rng = fastrand::Rng::with_seed(scale);
    let mut run = LatencySet::default();
    let mut intervals = Vec::new();
    for index in 0..8u64 {
        let mut set = LatencySet::default();
        if index < 6 {
            for _ in 0..2_000 {
                set.e2e.record(rng.u64(50_000..400_000) * scale);
                set.e2e_uncorrected.record(rng.u64(40_000..200_000) * scale);
                set.publish_ack.record(rng.u64(30_000..300_000) * scale);
                set.publish_ack_uncorrected
                    .record(rng.u64(20_000..100_000) * scale);
                set.send_delay.record(rng.u64(0..50_000));
            }
        }
        run.add(&set);
        intervals.push(IntervalFigures {
            index,
            latency: LatencySummaries::of(&set),
            histograms: EncodedHistograms::encode(&set).unwrap(),
            availability: IntervalAvailability {
                publish: Some(1.0),
                delivery: Some(if index == 3 { 0.998 } else { 1.0 }),
                unavailable: index == 3,
            },
            volume: VolumeFigures {
                offered_rate: if index < 6 { 2_000.0 } else { 0.0 },
                achieved_publish_rate: if index < 6 { 1_990.0 } else { 0.0 },
                achieved_delivery_rate: if index < 6 { 3_980.0 } else { 0.0 },
                ..VolumeFigures::default()
            },
            compute: IntervalCompute {
                cpu_percent: Some(10.0 + index as f64),
                rss_bytes: Some((14 + index) << 20),
            },
            ..IntervalFigures::default()
        });
    }
    let t = time::macros::datetime!(2026-11-22 10:00:00 UTC);
    let mut record = RunRecord::new(
        RunInfo {
            run_id: format!("run-{backend}"),
            scenario_name: "chat-1to1".into(),
            scenario: serde_json::json!({
                "name": "chat-1to1",
                "duration": "6s",
                "workloads": [{"name": "dm", "topics": 200, "schedule": {"kind": "constant", "rate": 2000.0}}],
                "alerts": [{"signal": "e2e.p99", "warning": "5ms", "critical": "20ms"}],
            }),
            alert_rules: serde_json::json!([]),
            backend: BackendInfo {
                name: backend.into(),
                url: Some("tcp://127.0.0.1:7000".into()),
                version: None,
            },
            host: HostFacts::detect("0.1.0"),
            started_at: t,
            ended_at: t,
        },
        RunFigures {
            duration_s: 6.0,
            latency: LatencySummaries::of(&run),
            histograms: EncodedHistograms::encode(&run).unwrap(),
            intervals,
            ..RunFigures::default()
        },
    );
    record.notes.push("a <note> with markup".into());
    record
}

#[test]
fn report_of_two_runs_has_every_section_and_plot() {
    let a = record("reference", 1);
    let mut b = record("nats", 2);
    b.verdicts = vec![
        serde_json::json!({"rule": "end-to-end latency", "severity": "WARNING", "observed": "6.1ms"}),
    ];
    let render = || {
        render_report(&[
            ReportRun {
                record: &a,
                source: Some("a.json"),
            },
            ReportRun {
                record: &b,
                source: None,
            },
        ])
        .unwrap()
    };
    let html = render();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<title>brokerbench report: chat-1to1 on reference, nats</title>"));
    for id in [
        "runs",
        "summary",
        "latency",
        "timelines",
        "verdicts",
        "scenario",
        "host",
        "notes",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    for (id, _, _) in charts(&[]) {
        let start = html
            .find(&format!("<figure id=\"{id}\">"))
            .unwrap_or_else(|| panic!("{id}"));
        let figure = &html[start..start + html[start..].find("</figure>").unwrap()];
        assert!(figure.contains("<svg"), "{id} has a plot");
        assert!(
            figure.contains("reference") && figure.contains("nats"),
            "{id}: legend names both runs"
        );
    }
    assert_eq!(html.matches("<svg").count(), 8);
    // Colours: one per run, in the swatches and in the plots.
    assert!(html.contains("#4e79a7") && html.contains("#f28e2b"));
    assert!(
        html.contains("stroke=\"#4E79A7\"") || html.contains("stroke=\"#4e79a7\""),
        "run colour in the SVG"
    );
    // Summary: lower latency wins.
    let p99 = html.find("<td>e2e p99</td>").unwrap();
    let row = &html[p99..p99 + html[p99..].find("</tr>").unwrap()];
    assert!(
        row.find("num best").unwrap() < row.find("<span class=\"rel\">").unwrap(),
        "{row}"
    );
    // Verdicts from `verdicts`.
    assert!(html.contains("<td class=\"warn\">WARNING</td>"));
    // Scenario facts, workloads table, escaped notes.
    assert!(html.contains("<h3>workloads</h3>") && html.contains("<td>dm</td>"));
    assert!(html.contains("a &lt;note&gt; with markup"));
    // Self-contained: nothing to fetch, nothing to run.
    for forbidden in ["<script", "<link", "<img", "src=", "url(", "@import"] {
        assert!(!html.contains(forbidden), "{forbidden}");
    }
    // The same records give the same bytes.
    let again = render();
    assert_eq!(html, again);
}

#[test]
fn a_single_run_without_samples_still_renders() {
    let mut r = record("reference", 1);
    for i in &mut r.figures.intervals {
        i.compute = IntervalCompute::default();
    }
    let html = render_report(&[ReportRun {
        record: &r,
        source: None,
    }])
    .unwrap();
    assert!(html.contains("<strong>Broker CPU</strong>: not measured in these runs."));
    assert!(html.contains("These records carry no alert verdicts"));
    assert!(matches!(render_report(&[]), Err(ReportError::Empty)));
}

#[test]
fn percentile_curve_is_monotonic_and_compact() {
    let mut h = LatencyHistogram::new();
    for v in 1..=10_000u64 {
        h.record(v * 1_000);
    }
    let curve = percentile_curve(&h);
    assert!(curve.len() > 50 && curve.len() <= PERCENTILE_STEPS as usize + 1);
    assert!(
        curve
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    assert_eq!(curve.first().unwrap().0, 0.0);
    assert_eq!(curve.last().unwrap().0, PERCENTILE_AXIS_END);
    assert!(
        (curve.last().unwrap().1.unwrap() - 10_000.0).abs() < 10.0,
        "ends at the max"
    );
    let mut flat = LatencyHistogram::new();
    flat.record(5_000);
    // The minimum (quantile 0 is the lowest value), then one flat stretch to the end.
    assert_eq!(
        percentile_curve(&flat).len(),
        3,
        "{:?}",
        percentile_curve(&flat)
    );
    assert!(percentile_curve(&LatencyHistogram::new()).is_empty());
}

/// The one-pass curve gives exactly HdrHistogram's `value_at_quantile` at every step.
#[test]
fn percentile_curve_matches_value_at_quantile() {
    let mut rng = fastrand::Rng::with_seed(3);
    for n in [1usize, 7, 1_000, 50_000] {
        let mut h = LatencyHistogram::new();
        for _ in 0..n {
            h.record(rng.u64(1..5_000) * rng.u64(1..2_000));
        }
        let curve = percentile_curve(&h);
        for (x, y) in curve {
            let expected = h.value_at_quantile_ns(quantile_at(x).min(1.0)).unwrap();
            let expected = (expected as f64 / 1_000.0).max(1e-3);
            assert_eq!(y, Some(expected), "n={n} x={x}");
        }
    }
}
