//! `brokerbench capacity` on the embedded reference broker: short steps, a low --max.

use std::path::Path;

mod common;

use common::{brokerbench, text};

fn scenario(dir: &Path) -> String {
    let path = dir.join("cap.toml");
    std::fs::write(
        &path,
        "name = \"cap\"\ndescription = \"capacity test\"\nwarmup = \"1s\"\nduration = \"1s\"\ndrain = \"1s\"\n\n\
         [[workload]]\nname = \"w\"\ntopics = 1\nproducers_per_topic = 1\nsubscribers_per_topic = 1\n\
         delivery = \"all\"\nsize = 100\nrate = 100\n",
    )
    .expect("write scenario");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn the_rate_climbs_to_max_and_the_curve_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path());
    let out = brokerbench(
        &[
            "capacity",
            &file,
            "--start",
            "200",
            "--max",
            "800",
            "--step-duration",
            "1s",
            "--p99",
            "10s",
            "--out",
            "curve.json",
        ],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout
            .contains("broken when p99 > 10s, availability < 99.9%, or achieved < 95% of offered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no break point up to --max 800/s: last healthy 800/s"),
        "{stdout}"
    );
    let curve: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("curve.json")).expect("curve file"),
    )
    .expect("json");
    let steps = curve["curve"].as_array().expect("curve");
    let rates: Vec<f64> = steps
        .iter()
        .map(|s| s["offered_rate"].as_f64().expect("rate"))
        .collect();
    assert_eq!(rates, [200.0, 400.0, 800.0]);
    for s in steps {
        assert_eq!(s["healthy"], true, "{s}");
        let achieved = s["achieved_rate"].as_f64().expect("achieved");
        let offered = s["offered_rate"].as_f64().expect("offered");
        assert!(achieved >= offered * 0.95, "{s}");
        assert!(s["p99_s"].as_f64().expect("p99") > 0.0, "{s}");
        assert_eq!(s["availability"].as_f64(), Some(1.0), "{s}");
    }
    assert_eq!(curve["last_healthy_rate"].as_f64(), Some(800.0));
    assert!(curve["break_point_rate"].is_null());
    assert!(curve["thresholds"].is_null());
}

#[test]
fn a_broken_first_step_is_reported_without_thresholds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path());
    let out = brokerbench(
        &[
            "capacity",
            &file,
            "--start",
            "200",
            "--max",
            "800",
            "--step-duration",
            "1s",
            "--p99",
            "1us",
        ],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("BROKEN: p99 "), "{stdout}");
    assert!(
        stdout.contains(
            "break point: at or below 200/s (the first step already broke; lower --start)"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("recommended call-volume thresholds"),
        "{stdout}"
    );

    let bad = brokerbench(
        &["capacity", &file, "--start", "900", "--max", "800"],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("at most --max"),
        "{}",
        text(&bad.stderr)
    );
}
