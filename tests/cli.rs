//! `brokerbench` as a user types it: the real binary, temp dirs, exit codes.

mod common;

use common::{brokerbench, text};

/// Every built-in scenario runs against the embedded reference broker (at a reduced rate
/// and duration) and writes a complete, loss-free run record.
#[test]
fn every_builtin_scenario_runs_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let list = brokerbench(&["scenarios"], dir.path());
    assert!(list.status.success());
    let names: Vec<String> = text(&list.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    // chat-under-faults restarts the broker, which loses what it held by design: it has
    // its own tests (tests/faults.rs) and runs on every backend in scripts/all-backends.
    for name in names.iter().filter(|n| *n != "chat-under-faults") {
        let out = dir.path().join(format!("{name}.json"));
        // Long enough for offline-catchup's subscriber to drop off and come back.
        let duration = if name == "offline-catchup" {
            "5s"
        } else {
            "2s"
        };
        let run = brokerbench(
            &[
                "run",
                name,
                "--fail-on",
                "never",
                "--rate",
                "300",
                "--duration",
                duration,
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
        );
        let stderr = text(&run.stderr);
        assert!(
            run.status.success(),
            "{name}: {stderr}\n{}",
            text(&run.stdout)
        );
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(record["schema_version"], 1, "{name}");
        assert_eq!(record["scenario_name"], name.as_str());
        assert_eq!(record["partial"], false, "{name}: {record:#}");
        let published = record["volume"]["published"].as_u64().unwrap();
        let delivered = record["volume"]["delivered"].as_u64().unwrap();
        assert!(
            published > 0 && delivered > 0,
            "{name}: {}",
            record["volume"]
        );
        assert_eq!(
            record["correctness"]["lost"], 0,
            "{name}: {}",
            record["correctness"]
        );
        assert_eq!(record["correctness"]["phantom"], 0, "{name}");
        assert!(record["latency"]["e2e"]["p99_us"].as_f64().unwrap() > 0.0);
        assert!(record["histograms"]["e2e"].as_str().unwrap().len() > 10);
        assert!(!record["intervals"].as_array().unwrap().is_empty());
        assert!(
            text(&run.stdout).contains("latency"),
            "{name}: summary missing"
        );
    }
}

#[test]
fn a_broken_scenario_file_is_reported_with_its_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\ndescription = \"x\"\nduration = \"2s\"\n\n[[workload]]\nname = \"w\"\ntopics = 1\nproducers_per_topic = 1\nsubscribers_per_topic = 1\ndelivery = \"sometimes\"\nsize = 100\nrate = 10\n",
    )
    .unwrap();
    let run = brokerbench(&["run", file.to_str().unwrap()], dir.path());
    assert_eq!(run.status.code(), Some(2));
    let stderr = text(&run.stderr);
    assert!(stderr.contains("bad.toml:10"), "{stderr}");
    assert!(stderr.contains("delivery"), "{stderr}");
}

#[test]
fn an_unreachable_broker_is_named_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("tcp://127.0.0.1:{port}");
    let run = brokerbench(
        &["run", "--backend", "reference", "--url", &url],
        dir.path(),
    );
    assert_eq!(run.status.code(), Some(2));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_scenario_lists_the_builtins() {
    let dir = tempfile::tempdir().unwrap();
    let run = brokerbench(&["run", "no-such-scenario"], dir.path());
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("group-chat"));
}

/// A workload with no subscriber measures publishing alone: every offered message is
/// published and confirmed, nothing is due for delivery, nothing is lost, and the record
/// says so (delivery availability has no value rather than a made-up 100 %).
#[test]
fn a_publish_only_workload_measures_publishing_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("publish-only.toml");
    std::fs::write(
        &file,
        "name = \"publish-only\"\ndescription = \"x\"\nwarmup = \"200ms\"\nduration = \"2s\"\ndrain = \"500ms\"\n\n[[workload]]\nname = \"w\"\ntopics = 2\nproducers_per_topic = 1\nsubscribers_per_topic = 0\ndelivery = \"all\"\nsize = 100\nrate = 500\n",
    )
    .unwrap();
    let record = run_record(&["run", file.to_str().unwrap()], dir.path());
    assert_eq!(record["volume"]["published"], 1000, "{record:#}");
    assert_eq!(record["volume"]["delivered"], 0);
    assert_eq!(record["correctness"]["lost"], 0);
    assert_eq!(record["availability"]["publish"], 1.0);
    assert!(record["availability"]["delivery"].is_null(), "{record:#}");
    // Without --workers, one runtime worker per core.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        record["host"]["harness_workers"], cores,
        "{}",
        record["host"]
    );
}

/// `--workers` sets the harness's runtime threads; zero is refused before anything runs.
#[test]
fn the_worker_count_can_be_set_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = brokerbench(&["run", "--workers", "0"], dir.path());
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("--workers"),
        "{}",
        text(&refused.stderr)
    );
    let record = run_record(
        &[
            "run",
            "chat-1to1",
            "--workers",
            "3",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--fail-on",
            "never",
        ],
        dir.path(),
    );
    assert_eq!(record["host"]["harness_workers"], 3, "{}", record["host"]);
}

/// Runs `brokerbench ARGS --out DIR/record.json`, expects exit code 0, returns the record.
fn run_record(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = dir.join("record.json");
    let mut args = args.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    let run = brokerbench(&args, dir);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}
