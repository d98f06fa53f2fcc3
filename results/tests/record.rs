//! Run record: atomic write, read back equal, partial records, clear read errors,
//! and the terminal summary.

use std::path::Path;
use std::time::Duration;

use brokerbench_results::record::RunInfo;
use brokerbench_results::recorder::INTERVAL_NS;
use brokerbench_results::{
    BackendInfo, Collector, Delivery, HostFacts, RecordError, Recorder, RunFigures, RunRecord,
    default_record_path, render_summary, snapshot_channel,
};
use serde_json::json;
use time::macros::datetime;

fn figures() -> RunFigures {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        for i in 0..2_000u64 {
            let intended = i * (INTERVAL_NS / 1_000);
            let sent = intended + 700 + i % 13;
            r.record_publish_ok(sent + 150_000, intended, sent);
            r.record_delivery(sent + 1_234_567 + i * 101, intended, sent, Delivery::First);
        }
        r.record_publish_unknown(INTERVAL_NS + 5, INTERVAL_NS, INTERVAL_NS);
        r.record_delivery(INTERVAL_NS + 10, 0, 0, Delivery::Duplicate);
        r.finish().await.unwrap();
        let mut c = Collector::new();
        c.collect(&mut rx).await;
        c.record_offered(0, 1_000);
        c.record_offered(1, 1_001);
        c.record_lost(1, 1);
        c.record_broker_sample(0, 12.5, 48 * 1024 * 1024);
        c.record_broker_sample(1, 20.25, 50 * 1024 * 1024);
        c.finish(Duration::from_secs(2)).unwrap()
    })
}

fn record() -> RunRecord {
    let info = RunInfo {
        run_id: "r-42".into(),
        scenario_name: "group-chat".into(),
        scenario: json!({"name": "group-chat", "rate": 1000, "payload_bytes": 256}),
        alert_rules: json!([{"metric": "latency.e2e.p99_us", "warning": 5000.0}]),
        backend: BackendInfo {
            name: "reference".into(),
            url: Some("tcp://127.0.0.1:40000".into()),
            version: None,
        },
        host: HostFacts::detect("0.1.0"),
        started_at: datetime!(2026-11-22 10:15:00.123456789 UTC),
        ended_at: datetime!(2026-11-22 10:15:03 UTC),
    };
    RunRecord::new(info, figures())
}

#[test]
fn write_atomically_then_read_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let rec = record();
    let path = default_record_path(
        &dir.path().join("results"),
        rec.started_at,
        "group chat",
        "reference",
    );
    assert!(path.ends_with("20261122T101500Z-group-chat-reference.json"));
    rec.write(&path).unwrap();
    // Only the record is left in the directory: the temp file was renamed.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [path.file_name().unwrap()]);
    let back = RunRecord::read(&path).unwrap();
    assert_eq!(back, rec);
    // Overwriting is atomic too and leaves one file.
    rec.write(&path).unwrap();
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn json_paths_scripts_rely_on() {
    let rec = record();
    let v = serde_json::to_value(&rec).unwrap();
    let num = |p: &str| {
        v.pointer(p)
            .unwrap_or_else(|| panic!("missing {p}"))
            .clone()
    };
    assert_eq!(num("/schema_version"), json!(1));
    assert!(num("/latency/e2e/p99_us").is_f64());
    assert!(num("/latency/e2e_uncorrected/p99_us").is_f64());
    assert!(num("/latency/publish_ack/p50_us").is_f64());
    assert!(num("/latency/publish_ack_uncorrected/p999_us").is_f64());
    assert!(num("/latency/send_delay/max_us").is_f64());
    assert_eq!(num("/availability/publish"), json!(2_000.0 / 2_001.0));
    assert_eq!(num("/availability/delivery"), json!(2_000.0 / 2_001.0));
    // Interval 1 has the loss; the unknown publish, observed after the recorder moved
    // on to interval 2, counts in interval 2.
    assert_eq!(num("/availability/unavailable_intervals"), json!(2));
    assert_eq!(num("/volume/offered_rate"), json!(1000.5));
    assert_eq!(num("/volume/achieved_publish_rate"), json!(1000.0));
    assert_eq!(num("/volume/saturated"), json!(false));
    assert_eq!(num("/correctness/lost"), json!(1));
    assert_eq!(num("/correctness/duplicated"), json!(1));
    assert_eq!(num("/compute/cpu_percent"), json!(16.375));
    assert_eq!(num("/started_at"), json!("2026-11-22T10:15:00.123456789Z"));
    assert_eq!(num("/partial"), json!(false));
    assert_eq!(num("/verdicts"), json!([]));
    assert_eq!(num("/alert_rules/0/metric"), json!("latency.e2e.p99_us"));
    assert!(num("/histograms/e2e").is_string());
    assert!(num("/intervals/1/histograms/send_delay").is_string());
    assert_eq!(num("/intervals/1/availability/unavailable"), json!(true));
    // Sub-microsecond precision: send delay is 700..712 ns.
    let p50 = num("/latency/send_delay/p50_us").as_f64().unwrap();
    assert!((0.7..0.72).contains(&p50), "{p50}");
}

#[test]
fn histograms_decode_and_merge_across_runs() {
    let rec = record();
    let mut a = rec.latency_histograms().unwrap();
    assert_eq!(a.e2e.summary(), rec.figures.latency.e2e);
    let b = rec.latency_histograms().unwrap();
    a.e2e.add(&b.e2e);
    assert_eq!(a.e2e.count(), 2 * rec.figures.latency.e2e.count);
}

#[test]
fn partial_record_is_valid_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record();
    rec.mark_partial("interrupted by Ctrl-C after 2 s");
    let path = dir.path().join("partial.json");
    rec.write(&path).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["partial"], json!(true));
    assert_eq!(
        v["partial_reason"],
        json!("interrupted by Ctrl-C after 2 s")
    );
    for key in [
        "latency",
        "availability",
        "volume",
        "correctness",
        "compute",
        "intervals",
        "histograms",
        "host",
        "backend",
    ] {
        assert!(v.get(key).is_some(), "partial record lacks {key}");
    }
    let back = RunRecord::read(&path).unwrap();
    assert!(back.partial);
    assert_eq!(back, rec);
}

#[test]
fn read_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };

    let err = RunRecord::read(&dir.path().join("absent.json")).unwrap_err();
    assert!(matches!(err, RecordError::Io { .. }), "{err}");

    let p = write("garbage.json", "{ not json");
    assert!(matches!(
        RunRecord::read(&p).unwrap_err(),
        RecordError::Json { .. }
    ));

    let p = write("other.json", r#"{"name": "something else"}"#);
    let err = RunRecord::read(&p).unwrap_err();
    assert!(matches!(err, RecordError::MissingSchemaVersion { .. }));
    assert!(err.to_string().contains("schema_version"), "{err}");

    let mut v = serde_json::to_value(record()).unwrap();
    v["schema_version"] = json!(2);
    let p = write("future.json", &v.to_string());
    let err = RunRecord::read(&p).unwrap_err();
    assert!(matches!(
        err,
        RecordError::UnsupportedSchemaVersion {
            found: 2,
            supported: 1,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("schema_version 2 is not supported"),
        "{err}"
    );

    let mut v = serde_json::to_value(record()).unwrap();
    v["volume"]["offered"] = json!("many");
    let p = write("shape.json", &v.to_string());
    let err = RunRecord::read(&p).unwrap_err();
    assert!(matches!(err, RecordError::Json { .. }));
    assert!(err.to_string().contains("shape.json"), "{err}");
}

#[test]
fn summary_renders_expected_rows() {
    let mut rec = record();
    rec.mark_partial("interrupted");
    let text = render_summary(&rec, Some(Path::new("results/x.json")));
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "group-chat on reference, 2026-11-22T10:15:00.123456789Z, measured 2.0 s"
    );
    assert_eq!(lines[1], "PARTIAL RUN: interrupted");
    let header = lines.iter().position(|l| l.starts_with("latency")).unwrap();
    assert!(
        lines[header]
            .split_whitespace()
            .eq(["latency", "p50", "p90", "p99", "p99.9", "max", "count"])
    );
    let rows: Vec<&str> = lines[header + 1..header + 6]
        .iter()
        .map(|l| l[..20].trim_end())
        .collect();
    assert_eq!(
        rows,
        [
            "e2e",
            "e2e uncorrected",
            "publish-ack",
            "publish-ack uncorr.",
            "send delay"
        ]
    );
    // Columns are aligned: every latency row has the header's width.
    for l in &lines[header..header + 6] {
        assert_eq!(l.chars().count(), lines[header].chars().count(), "{l:?}");
    }
    assert!(
        lines[header + 1].contains(" ms"),
        "e2e is in milliseconds: {}",
        lines[header + 1]
    );
    assert!(
        lines[header + 5].contains(" µs"),
        "send delay is in microseconds"
    );
    assert!(text.contains(
        "availability   publish 99.950 %   delivery 99.950 %   unavailable intervals 2 of 3"
    ));
    assert!(text.contains(
        "volume         offered 1000.5/s   published 1000.0/s   delivered 999.5/s   saturated no"
    ));
    assert!(
        text.contains("correctness    lost 1   duplicated 1   reordered 0   phantom 0   late 0")
    );
    assert!(text.contains("broker         cpu 16.4 % (max 20.2 %)   rss 49.0 MiB (max 50.0 MiB)"));
    assert!(text.contains("record         results/x.json"));
}
