//! Sharded runs as a user runs them: three `brokerbench run --shard I/3` processes with
//! one `--start-at`, against one real broker (the reference broker, and NATS when it
//! runs), then `brokerbench merge`. The merged record must be exactly the scenario's
//! volume; a set with a shard missing must be refused. NATS not running skips its half
//! with a SKIPPED line unless `BROKERBENCH_REQUIRE_BACKENDS` requires it.
//!
//! Rates are not asserted here: on a loaded CI machine three shards and a broker share
//! two cores, so the achieved rate is a measurement, not a property. `scripts/shards-local`
//! measures it against a single process and reports it (README, "Sharded runs").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use brokerbench_scenarios::Scenario;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod common;

use common::{ReferenceBroker, backend_required, brokerbench, command, text};

const SHARDS: u32 = 3;
/// The measured phase of each shard.
const DURATION: &str = "3s";
/// Time given to set-up before the shared start instant; one retry with a longer lead
/// when a loaded machine was not ready in time (exit 3).
const LEADS: [i64; 2] = [15, 45];

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Starts shard `index` of group-chat; shard 2 takes its identity from the environment
/// as a Kubernetes Indexed Job pod does.
fn spawn_shard(dir: &Path, backend: &str, url: &str, index: u32, start: &str) -> Child {
    let out = dir.join(format!("shard-{index}.json"));
    let mut cmd = command(dir);
    cmd.args([
        "run",
        "group-chat",
        "--fail-on",
        "never",
        "--duration",
        DURATION,
    ])
    .args(["--backend", backend, "--url", url, "--start-at", start])
    .args(["--out", out.to_str().unwrap()])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if index == 2 {
        cmd.env("BROKERBENCH_SHARDS", SHARDS.to_string())
            .env("JOB_COMPLETION_INDEX", index.to_string());
    } else {
        cmd.args(["--shard", &format!("{index}/{SHARDS}")]);
    }
    cmd.spawn().expect("brokerbench runs")
}

/// Runs the three shards; `None` when the broker cannot be reached.
fn run_shards(dir: &Path, backend: &str, url: &str) -> Option<Vec<PathBuf>> {
    for lead in LEADS {
        let start = (OffsetDateTime::now_utc() + time::Duration::seconds(lead))
            .replace_nanosecond(0)
            .unwrap()
            .format(&Rfc3339)
            .unwrap();
        let children: Vec<Child> = (0..SHARDS)
            .map(|i| spawn_shard(dir, backend, url, i, &start))
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let stderr: Vec<String> = outputs.iter().map(|o| text(&o.stderr)).collect();
        if stderr.iter().any(|e| e.contains("cannot connect")) && !backend_required(backend) {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {backend} sharded run: {url} does not answer (start it with `scripts/services up`)"
            );
            return None;
        }
        if outputs.iter().any(|o| o.status.code() == Some(3)) {
            let _ = writeln!(
                std::io::stderr(),
                "{backend}: a shard was not ready {lead} s ahead of --start-at; retrying with a longer lead"
            );
            continue;
        }
        for (i, o) in outputs.iter().enumerate() {
            assert!(
                o.status.success(),
                "{backend} shard {i}: {}\n{}",
                stderr[i],
                text(&o.stdout)
            );
            assert!(
                stderr[i].contains(&format!("shard {i}/3 of run ")),
                "{}",
                stderr[i]
            );
        }
        return Some(
            (0..SHARDS)
                .map(|i| dir.join(format!("shard-{i}.json")))
                .collect(),
        );
    }
    panic!("{backend}: shards not ready even {} s ahead", LEADS[1]);
}

/// The sharded runs take the machine's cores: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn three_shards_merge_exactly(backend: &str, url: &str) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let Some(paths) = run_shards(dir.path(), backend, url) else {
        return;
    };
    let shards: Vec<Value> = paths.iter().map(|p| read(p)).collect();
    let scenario = Scenario::load("group-chat")
        .unwrap()
        .with_duration(Duration::from_secs(3))
        .unwrap();
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"]["index"], i as u64);
        assert_eq!(s["shard"]["count"], 3);
        assert_eq!(s["run_id"], shards[0]["run_id"]);
        assert_eq!(s["scenario_hash"], shards[0]["scenario_hash"]);
        assert!(
            s["start"]["offset_s"].as_f64().unwrap().abs() < 0.01,
            "{}",
            s["start"]
        );
    }
    // group-chat's 20 rooms: 7, 7 and 6.
    let topics: Vec<u64> = shards.iter().map(|s| u(&s["shard"]["topics"])).collect();
    assert_eq!(topics, [7, 7, 6]);

    let merged_path = dir.path().join("merged.json");
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--out", merged_path.to_str().unwrap()]);
    let merge = brokerbench(&args, dir.path());
    assert!(merge.status.success(), "{}", text(&merge.stderr));
    let merged = read(&merged_path);
    let sum = |f: &dyn Fn(&Value) -> u64| shards.iter().map(f).sum::<u64>();
    let volume = &merged["volume"];
    // The scenario's volume, exactly: every room's messages, offered once.
    assert_eq!(u(&volume["offered"]), scenario.expected_measured_messages());
    assert_eq!(u(&volume["offered"]), sum(&|s| u(&s["volume"]["offered"])));
    assert_eq!(
        u(&volume["published"]),
        sum(&|s| u(&s["volume"]["published"]))
    );
    assert_eq!(u(&volume["published"]), u(&volume["offered"]), "{backend}");
    assert_eq!(u(&merged["correctness"]["lost"]), 0, "{backend}: lost");
    // Every member of every room got every message: in time (`delivered`) or, on a
    // machine too loaded to keep up, after the drain deadline (`late`); none is lost.
    let late = u(&merged["correctness"]["late"]);
    assert_eq!(
        u(&volume["delivered"]) + late,
        50 * u(&volume["published"]),
        "{backend}: {volume} {}",
        merged["correctness"]
    );
    if late > 0 {
        eprintln!("{backend}: {late} deliveries after the drain deadline (machine loaded)");
    }
    assert_eq!(
        u(&merged["latency"]["e2e"]["count"]),
        sum(&|s| u(&s["latency"]["e2e"]["count"]))
    );
    assert_eq!(merged["run_id"], shards[0]["run_id"]);
    assert!(merged.get("shard").is_none());
    // The merged record is an ordinary record for the other subcommands.
    let check = brokerbench(
        &["check", merged_path.to_str().unwrap(), "--fail-on", "never"],
        dir.path(),
    );
    assert!(check.status.success(), "{}", text(&check.stderr));
    let report = dir.path().join("report.html");
    let html = brokerbench(
        &[
            "report",
            merged_path.to_str().unwrap(),
            "--out",
            report.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(html.status.success(), "{}", text(&html.stderr));
    // A history of runs counts the merged record once, never its shards.
    let recommend = brokerbench(
        &[
            "alerts",
            "recommend",
            "--history",
            dir.path().to_str().unwrap(),
            "--scenario",
            "group-chat",
            "--backend",
            backend,
            "--min-runs",
            "1",
        ],
        dir.path(),
    );
    let said = text(&recommend.stdout) + &text(&recommend.stderr);
    assert!(recommend.status.success(), "{said}");
    assert!(
        said.contains("from 1 runs") || said.contains("from 1 run "),
        "{said}"
    );
    assert!(said.contains("3 skipped"), "{said}");
    assert!(said.contains("shard 2/3 of run"), "{said}");

    // A shard missing: refused, naming what is missing.
    let incomplete = brokerbench(
        &[
            "merge",
            paths[0].to_str().unwrap(),
            paths[1].to_str().unwrap(),
            "--out",
            dir.path().join("incomplete.json").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(incomplete.status.code(), Some(2));
    let err = text(&incomplete.stderr);
    assert!(err.contains("shard(s) 2/3 are missing"), "{err}");
    assert!(!dir.path().join("incomplete.json").exists());
}

#[test]
fn three_shards_of_group_chat_on_the_reference_broker() {
    let broker = ReferenceBroker::start(&[]);
    three_shards_merge_exactly("reference", &broker.url);
}

#[test]
fn three_shards_of_group_chat_on_nats() {
    three_shards_merge_exactly("nats", "nats://127.0.0.1:4222");
}

#[test]
fn a_scenario_that_cannot_be_split_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = brokerbench(&["run", "work-queue", "--shard", "0/5"], dir.path());
    assert_eq!(run.status.code(), Some(2));
    let err = text(&run.stderr);
    assert!(
        err.contains("scenario `work-queue` cannot be split by topic into 5 shards")
            && err.contains("has 4 topic(s)"),
        "{err}"
    );
    // A shard needs a run id its siblings share.
    let run = brokerbench(&["run", "group-chat", "--shard", "1/3"], dir.path());
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("--run-id"),
        "{}",
        text(&run.stderr)
    );
    // JOB_COMPLETION_INDEX without a count is not enough, and a bad index is named.
    let run = command(dir.path())
        .args(["run", "group-chat"])
        .env("BROKERBENCH_SHARDS", "3")
        .env("JOB_COMPLETION_INDEX", "3")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("JOB_COMPLETION_INDEX=3 with BROKERBENCH_SHARDS=3"),
        "{}",
        text(&run.stderr)
    );
}

/// A start instant that leaves no time for the warm-up: exit 3, nothing measured, no
/// record written.
#[test]
fn a_shard_not_ready_in_time_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let start = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    let out = dir.path().join("late.json");
    let run = brokerbench(
        &[
            "run",
            "chat-1to1",
            "--start-at",
            &start,
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(run.status.code(), Some(3), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("not ready in time"));
    assert!(!out.exists());
}
