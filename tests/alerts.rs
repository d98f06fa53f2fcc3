//! Alert rules end to end, as a user types them: real runs on the embedded reference
//! broker, `check` of the stored records, JUnit files, exit codes, and the Prometheus
//! export checked by promtool.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

mod common;

use common::{brokerbench, text};

/// A small scenario (one topic, 200 msgs/s) with the given `[[alerts]]` tables.
fn scenario(dir: &Path, name: &str, alerts: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ndescription = \"alerts test\"\nwarmup = \"1s\"\nduration = \"1s\"\ndrain = \"1s\"\n\n\
             [[workload]]\nname = \"w\"\ntopics = 2\nproducers_per_topic = 1\nsubscribers_per_topic = 2\n\
             delivery = \"all\"\nsize = 100\nrate = 200\n\n{alerts}"
        ),
    )
    .expect("write scenario");
    path.to_str().expect("utf-8 path").to_owned()
}

const MUST_FIRE: &str = r#"
[[alerts]]
name = "median latency"
signal = "e2e.p50"
direction = "upper"
critical = "1us"

[[alerts]]
name = "no loss"
signal = "lost"
direction = "upper"
critical = 0
"#;

const MUST_PASS: &str = r#"
[[alerts]]
name = "median latency"
signal = "e2e.p50"
direction = "upper"
warning = "5s"
critical = "10s"

[[alerts]]
name = "delivery availability"
signal = "availability"
direction = "lower"
warning = "50%"
critical = 0.1
"#;

fn record_verdicts(path: &Path) -> Vec<serde_json::Value> {
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("record")).expect("json");
    record["verdicts"]
        .as_array()
        .expect("verdicts array")
        .clone()
}

#[test]
fn a_firing_rule_fails_the_run_and_the_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path(), "must-fire", MUST_FIRE);
    let run = brokerbench(
        &[
            "run",
            &file,
            "--duration",
            "1s",
            "--out",
            "fire.json",
            "--junit",
            "fire.xml",
        ],
        dir.path(),
    );
    let stdout = text(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&run.stderr)
    );
    assert!(
        stdout.contains("CRITICAL  median latency: e2e.p50 "),
        "{stdout}"
    );
    assert!(stdout.contains("> critical 1us over the run"), "{stdout}");
    assert!(
        stdout.contains("OK        no loss: lost 0 <= critical 0"),
        "{stdout}"
    );

    let verdicts = record_verdicts(&dir.path().join("fire.json"));
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0]["rule"], "median latency");
    assert_eq!(verdicts[0]["severity"], "critical");
    assert_eq!(verdicts[0]["threshold"], "1us");
    assert!(verdicts[0]["observed_value"].as_f64().expect("observed") > 1e-6);
    assert_eq!(verdicts[1]["severity"], "ok");

    let junit = std::fs::read_to_string(dir.path().join("fire.xml")).expect("junit");
    assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
    assert!(
        junit.contains("<testcase classname=\"alerts.e2e.p50\" name=\"median latency\">"),
        "{junit}"
    );
    assert!(junit.contains("<failure message=\"e2e.p50 "), "{junit}");

    // The stored record, evaluated again: the same verdict and exit code.
    let check = brokerbench(&["check", "fire.json", "--junit", "check.xml"], dir.path());
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("CRITICAL  median latency"));
    let junit = std::fs::read_to_string(dir.path().join("check.xml")).expect("junit");
    assert!(junit.contains("failures=\"1\""), "{junit}");

    // `--fail-on never` reports without failing.
    let never = brokerbench(&["check", "fire.json", "--fail-on", "never"], dir.path());
    assert_eq!(never.status.code(), Some(0), "{}", text(&never.stderr));

    // Other rules for the same record, from a file: a warning only.
    std::fs::write(
        dir.path().join("warn.toml"),
        "[[alerts]]\nname = \"median\"\nsignal = \"e2e.p50\"\ndirection = \"upper\"\nwarning = \"1us\"\ncritical = \"1h\"\n",
    )
    .expect("write rules");
    let lenient = brokerbench(
        &[
            "check",
            "fire.json",
            "--rules",
            "warn.toml",
            "--junit",
            "warn.xml",
        ],
        dir.path(),
    );
    assert_eq!(lenient.status.code(), Some(0), "{}", text(&lenient.stderr));
    assert!(text(&lenient.stdout).contains("WARNING   median: e2e.p50"));
    let junit = std::fs::read_to_string(dir.path().join("warn.xml")).expect("junit");
    assert!(
        junit.contains("failures=\"0\"") && junit.contains("<system-out>WARNING: e2e.p50"),
        "{junit}"
    );
    let strict = brokerbench(
        &[
            "check",
            "fire.json",
            "--rules",
            "warn.toml",
            "--fail-on",
            "warning",
            "--junit",
            "strict.xml",
        ],
        dir.path(),
    );
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stderr));
    let junit = std::fs::read_to_string(dir.path().join("strict.xml")).expect("junit");
    assert!(
        junit.contains("<failure message=\"e2e.p50 ") && junit.contains("type=\"warning\""),
        "{junit}"
    );
}

#[test]
fn a_healthy_run_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path(), "must-pass", MUST_PASS);
    let run = brokerbench(
        &[
            "run",
            &file,
            "--duration",
            "1s",
            "--out",
            "pass.json",
            "--fail-on",
            "warning",
            "--junit",
            "pass.xml",
        ],
        dir.path(),
    );
    let stdout = text(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&run.stderr)
    );
    assert!(
        stdout.contains("OK        median latency: e2e.p50 "),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("OK        delivery availability: delivery.availability 100% >= warning 50%"),
        "{stdout}"
    );
    let verdicts = record_verdicts(&dir.path().join("pass.json"));
    assert!(
        verdicts.iter().all(|v| v["severity"] == "ok"),
        "{verdicts:#?}"
    );
    let junit = std::fs::read_to_string(dir.path().join("pass.xml")).expect("junit");
    assert!(
        junit.contains("tests=\"2\" failures=\"0\"") && !junit.contains("<failure"),
        "{junit}"
    );
    let check = brokerbench(&["check", "pass.json", "--fail-on", "warning"], dir.path());
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
}

#[test]
fn invalid_rules_are_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    // In a scenario: refused before anything runs, naming the rule and the field.
    let file = scenario(
        dir.path(),
        "bad-rules",
        "[[alerts]]\nname = \"latency\"\nsignal = \"e2e.p99\"\ndirection = \"upper\"\nwarning = \"20ms\"\ncritical = \"5ms\"\n",
    );
    let run = brokerbench(
        &["run", &file, "--duration", "1s", "--out", "x.json"],
        dir.path(),
    );
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("alert rule #1 \"latency\", field `warning`"),
        "{stderr}"
    );
    assert!(stderr.contains("more sensitive"), "{stderr}");
    assert!(!dir.path().join("x.json").exists());

    // In a rules file: with the line.
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[alerts]]\nname = \"ok\"\nsignal = \"lost\"\ndirection = \"upper\"\ncritical = 0\n\n[[alerts]]\nname = \"typo\"\nsignal = \"e2e.p99\"\ndirecton = \"upper\"\n",
    )
    .expect("write rules");
    let export = brokerbench(&["alerts", "export", "--rules", "rules.toml"], dir.path());
    let stderr = text(&export.stderr);
    assert_eq!(export.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rules.toml:10: alert rule #2 \"typo\", field `directon`: unknown field"),
        "{stderr}"
    );
}

#[test]
fn exported_rules_pass_promtool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let export = brokerbench(
        &[
            "alerts",
            "export",
            "--format",
            "prometheus",
            "--scenario",
            "chat-1to1",
            "--out",
            "prom",
        ],
        dir.path(),
    );
    assert!(export.status.success(), "{}", text(&export.stderr));
    let prom = dir.path().join("prom");
    let rules =
        std::fs::read_to_string(prom.join("brokerbench-chat-1to1.rules.yml")).expect("rules");
    assert!(rules.contains("expr: 'brokerbench_e2e_latency_quantile_seconds{quantile=\"0.99\",scenario=\"chat-1to1\"} > 0.02'"), "{rules}");
    assert!(rules.contains("expr: 'brokerbench_availability_ratio{operation=\"delivery\",scenario=\"chat-1to1\"} < 0.999'"), "{rules}");

    let required = common::tool_required("promtool");
    let promtool = ["/usr/bin/promtool", "promtool"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(promtool) = promtool else {
        assert!(
            !required,
            "promtool is required (BROKERBENCH_REQUIRE_TOOLS) but not installed"
        );
        let _ = std::io::stderr().write_all(b"SKIPPED: promtool is not installed\n");
        return;
    };
    for args in [
        ["check", "rules", "brokerbench-chat-1to1.rules.yml"],
        ["test", "rules", "brokerbench-chat-1to1.rules.test.yml"],
    ] {
        let out = Command::new(promtool)
            .args(args)
            .current_dir(&prom)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn thresholds_are_recommended_from_history_and_round_trip_through_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path(), "rec-history", "");
    let history = dir.path().join("history");
    for i in 0..5 {
        let out = format!("history/run{i}.json");
        let run = brokerbench(
            &["run", &file, "--duration", "1s", "--out", &out],
            dir.path(),
        );
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    }
    // A partial run and a file that is not a record are skipped, and said so.
    let mut partial: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(history.join("run0.json")).expect("record"))
            .expect("json");
    partial["partial"] = true.into();
    partial["partial_reason"] = "interrupted by the test".into();
    std::fs::write(history.join("partial.json"), partial.to_string()).expect("write");
    std::fs::write(history.join("notes.json"), "{\"x\": 1}").expect("write");

    let args = [
        "alerts",
        "recommend",
        "--history",
        "history",
        "--scenario",
        "rec-history",
        "--backend",
        "reference",
        "--sla-critical",
        "e2e.p99=1us",
    ];
    let out = brokerbench(&args, dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("from 5 runs under history"), "{stdout}");
    assert!(stdout.contains("2 skipped"), "{stdout}");
    assert!(
        stdout.contains("partial run: interrupted by the test"),
        "{stdout}"
    );
    assert!(stdout.contains("warning = p95 x (1+h)"), "{stdout}");
    for signal in [
        "e2e.p50",
        "e2e.p99",
        "e2e.p999",
        "publish.p99",
        "delivery.availability",
        "throughput",
    ] {
        assert!(
            stdout.contains(&format!("\n{signal} (")),
            "{signal}: {stdout}"
        );
    }
    // Broker CPU and memory are sampled once a second: a 1 s run may have no sample, and
    // then the signal is listed with the reason instead of a rule.
    for signal in ["cpu", "rss"] {
        assert!(
            stdout.contains(&format!("\n{signal} ("))
                || stdout.contains(&format!("\n{signal}: no rule proposed: ")),
            "{signal}: {stdout}"
        );
    }
    // The SLA caps critical (and warning) below every run: it would have fired on all.
    assert!(stdout.contains("critical 1us        = SLA 1us"), "{stdout}");
    assert!(
        stdout.contains("would have fired on: warning or worse 5 of 5 runs, critical 5 of 5 runs"),
        "{stdout}"
    );

    // TOML out, read back by `check --rules`: every proposed rule is evaluated.
    let mut toml_args = args.to_vec();
    toml_args.extend(["--format", "toml"]);
    let out = brokerbench(&toml_args, dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("proposed.toml"), &out.stdout).expect("write");
    let check = brokerbench(
        &[
            "check",
            "history/run1.json",
            "--rules",
            "proposed.toml",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    let verdicts: Vec<serde_json::Value> =
        serde_json::from_slice(&check.stdout).expect("verdicts json");
    let names: Vec<&str> = verdicts.iter().filter_map(|v| v["rule"].as_str()).collect();
    assert!(names.len() >= 8, "{names:?}");
    let p99 = verdicts
        .iter()
        .find(|v| v["rule"] == "e2e.p99")
        .expect("e2e.p99 rule");
    assert_eq!(p99["severity"], "critical", "{p99}");
    assert_eq!(p99["threshold"], "1us", "{p99}");

    // Below --min-runs: refused with exit 2 and a reason.
    let mut few = args.to_vec();
    few.extend(["--min-runs", "6"]);
    let out = brokerbench(&few, dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("only 5 usable runs") && stderr.contains("need at least 6"),
        "{stderr}"
    );
}
