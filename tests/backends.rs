//! `brokerbench run` against every real backend, as a user runs it: the binary, a local
//! broker, a record on disk. A broker that is not running skips its test with a SKIPPED
//! line on stderr, unless `BROKERBENCH_REQUIRE_BACKENDS` (`all` or a comma list) requires it.

use std::io::Write;
use std::time::{Duration, Instant};

mod common;

use common::{backend_required, brokerbench, command, text};

const REAL_BACKENDS: [&str; 5] = ["nats", "jetstream", "rabbitmq", "redis", "kafka"];

/// Every real backend: a short chat-1to1 run completes with exit 0, loses nothing, and its
/// record names the backend, its version and the broker's resource use when the broker
/// runs on this machine.
#[test]
fn a_scenario_runs_on_every_real_backend() {
    let dir = tempfile::tempdir().unwrap();
    for backend in REAL_BACKENDS {
        let out = dir.path().join(format!("{backend}.json"));
        let run = brokerbench(
            &[
                "run",
                "chat-1to1",
                "--fail-on",
                "never",
                "--backend",
                backend,
                "--rate",
                "400",
                "--duration",
                "1s",
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
        );
        let stderr = text(&run.stderr);
        if !run.status.success() && stderr.contains("cannot connect") && !backend_required(backend)
        {
            let line = format!(
                "SKIPPED {backend} run test: {} (start the brokers with `scripts/services up`)\n",
                stderr
                    .lines()
                    .find(|l| l.starts_with("error:"))
                    .unwrap_or("unreachable")
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            continue;
        }
        assert!(
            run.status.success(),
            "{backend}: {stderr}\n{}",
            text(&run.stdout)
        );
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(record["backend"]["name"], backend);
        assert_eq!(
            record["partial"], false,
            "{backend}: {}",
            record["partial_reason"]
        );
        assert!(
            record["backend"]["version"].is_string(),
            "{backend}: no broker version in {}",
            record["backend"]
        );
        let correctness = &record["correctness"];
        assert_eq!(correctness["lost"], 0, "{backend}: {correctness}");
        assert_eq!(correctness["phantom"], 0, "{backend}: {correctness}");
        let delivered = record["volume"]["delivered"].as_u64().unwrap_or(0);
        assert!(delivered > 0, "{backend}: {}", record["volume"]);
        let url = record["backend"]["url"].as_str().unwrap();
        assert!(
            !url.contains("guest:guest"),
            "password in the record: {url}"
        );
    }
}

/// An unreachable broker of each kind is reported within a few seconds, naming the URL,
/// with exit 2. Needs no broker.
#[test]
fn unreachable_brokers_are_named_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        ("reference", "tcp://127.0.0.1:1"),
        ("nats", "nats://127.0.0.1:1"),
        ("jetstream", "nats://127.0.0.1:1"),
        ("rabbitmq", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("redis", "redis://127.0.0.1:1"),
        ("kafka", "kafka://127.0.0.1:1"),
    ];
    for (backend, url) in urls {
        let started = Instant::now();
        // The adapters' own connect timeout (5 s), not the longer one tests' runs get.
        let run = command(dir.path())
            .env_remove("BROKERBENCH_CONNECT_TIMEOUT")
            .args([
                "run",
                "--backend",
                backend,
                "--url",
                url,
                "--duration",
                "1s",
            ])
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{backend}: {stderr}");
        let shown = url.replace("guest:guest", "guest:***");
        assert!(
            stderr.contains(&shown) || stderr.contains(url),
            "{backend}: the URL is not named: {stderr}"
        );
        assert!(stderr.contains("127.0.0.1:1"), "{backend}: {stderr}");
        assert!(
            !stderr.contains("guest:guest"),
            "{backend}: password shown: {stderr}"
        );
        // The connect timeout is 5 s; allow for process start and a slow machine.
        assert!(took < Duration::from_secs(30), "{backend}: took {took:?}");
    }
}

/// A connect timeout that is not a duration is refused before anything connects, with
/// exit 2 and the variable named; a longer one still reports a refused connection at once.
#[test]
fn the_connect_timeout_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let run = |timeout: &str| {
        command(dir.path())
            .env("BROKERBENCH_CONNECT_TIMEOUT", timeout)
            .args(["run", "--backend", "nats", "--url", "nats://127.0.0.1:1"])
            .args(["--duration", "1s"])
            .output()
            .unwrap()
    };
    for bad in ["soon", "0s", "-5s"] {
        let out = run(bad);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("BROKERBENCH_CONNECT_TIMEOUT") && stderr.contains(bad),
            "{bad}: {stderr}"
        );
    }
    let out = run("2m");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nats://127.0.0.1:1"), "{stderr}");
}
