//! `brokerbench conform` as a user and a CI job run it: the real binary, its exit codes,
//! its matrix, JSON, JUnit and markdown.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ReferenceBroker, brokerbench, command, text};

/// Quick parameters for the reference broker (the checks are the same, smaller).
const QUICK: &[&str] = &[
    "--messages",
    "50",
    "--order-messages",
    "200",
    "--slow-messages",
    "500",
    "--reconnect-messages",
    "300",
    "--nack-within",
    "5s",
    "--slow-max-latency",
    "10s",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["conform"];
    all.extend_from_slice(extra);
    all.extend_from_slice(QUICK);
    all
}

/// The whole suite on the embedded reference broker: every check passes, exit 0, and
/// the matrix comes out as text, JSON, JUnit and markdown.
#[test]
fn the_reference_broker_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let run = brokerbench(
        &args(&["--json", "m.json", "--junit", "m.xml", "--markdown", "m.md"]),
        dir.path(),
    );
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
    assert!(
        stdout.contains("check           reference\nfanout          pass\n"),
        "{stdout}"
    );
    assert!(stdout.contains("15 cells, all as expected"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["kind"], "conformance");
    assert_eq!(json["partial"], false);
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 15);
    for cell in cells {
        assert_eq!(cell["verdict"], "pass", "{cell:#}");
        assert_eq!(cell["backend"], "reference");
        assert!(cell["duration_s"].as_f64().unwrap() > 0.0);
        assert!(!cell["reason"].as_str().unwrap().is_empty());
        assert_eq!(cell["counts"]["lost"], 0, "{cell:#}");
        assert_eq!(cell["expected"]["verdict"], "pass");
    }
    assert_eq!(json["parameters"]["messages"], 50);
    assert_eq!(json["backends"][0]["name"], "reference");

    let junit = std::fs::read_to_string(dir.path().join("m.xml")).unwrap();
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(junit.contains("<testsuite name=\"conformance.reference\" tests=\"15\" failures=\"0\" errors=\"0\" skipped=\"0\""), "{junit}");
    assert_eq!(junit.matches("<testcase ").count(), 15);

    let page = brokerbench(&["report", "m.json", "--out", "m.html"], dir.path());
    assert!(page.status.success(), "{}", text(&page.stderr));
    let html = std::fs::read_to_string(dir.path().join("m.html")).unwrap();
    assert!(
        html.contains("<h1>brokerbench conformance: 15 checks × 1 backends</h1>"),
        "{html}"
    );
    assert_eq!(
        html.matches("<td class=\"ok\"").count(),
        30,
        "matrix and cell list"
    );

    let markdown = std::fs::read_to_string(dir.path().join("m.md")).unwrap();
    assert!(
        markdown.starts_with("| check | reference |\n|---|---|\n| `fanout` | pass |"),
        "{markdown}"
    );
}

/// An external reference broker with a smaller cache than the suite expects retains less
/// than the check demands: retention-trim and late-replay FAIL with their counts, exit 1.
#[test]
fn a_broker_that_keeps_less_than_promised_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ReferenceBroker::start(&["--cache-size", "10"]);
    let run = brokerbench(
        &args(&[
            "--url",
            &broker.url,
            "--check",
            "retention-trim,late-replay,fanout",
            "--junit",
            "m.xml",
        ]),
        dir.path(),
    );
    drop(broker);
    let stdout = text(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&run.stderr)
    );
    assert!(stdout.contains("retention-trim  FAIL!"), "{stdout}");
    assert!(stdout.contains("late-replay     FAIL!"), "{stdout}");
    assert!(stdout.contains("fanout          pass"), "{stdout}");
    assert!(
        stdout.contains("reference retention-trim: FAIL (lost 90, trimmed 50)"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(dir.path().join("m.xml")).unwrap();
    assert!(junit.contains("failures=\"2\""), "{junit}");
    assert!(junit.contains("lost=90"), "{junit}");
}

#[test]
fn an_unreachable_broker_is_exit_2_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let run = brokerbench(
        &[
            "conform", "--url", &url, "--check", "fanout", "--json", "m.json",
        ],
        dir.path(),
    );
    let stderr = text(&run.stderr);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stdout.contains("fanout  error!"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(json["cells"][0]["verdict"], "error");
    assert!(
        json["cells"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{json:#}"
    );
}

#[test]
fn a_broken_expected_matrix_names_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("expected.toml"),
        "[redis.dedup]\nverdict = \"unsupported\"\nreason = \"no ids\"\n\n[redis.dedupe]\nverdict = \"fail\"\nreason = \"x\"\n",
    )
    .unwrap();
    let run = brokerbench(
        &[
            "conform",
            "--expected",
            "expected.toml",
            "--check",
            "fanout",
        ],
        dir.path(),
    );
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expected.toml:5:8: redis.dedupe: unknown check 'dedupe'"),
        "{stderr}"
    );
}

#[test]
fn list_and_help_name_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let list = brokerbench(&["conform", "--list"], dir.path());
    assert!(list.status.success());
    let help = brokerbench(&["conform", "--help"], dir.path());
    assert!(help.status.success());
    for out in [text(&list.stdout), text(&help.stdout)] {
        for check in [
            "fanout",
            "compete",
            "key-order",
            "total-order",
            "late-replay",
            "live-only",
            "unsubscribe",
            "ack-redelivery",
            "nack-requeue",
            "dead-letter",
            "dedup",
            "slow-consumer",
            "retention-trim",
            "large-message",
            "reconnect",
        ] {
            assert!(out.contains(&format!("  {check} ")), "{check}: {out}");
        }
    }
    let help = text(&help.stdout);
    for flag in [
        "--redelivery-timeout",
        "--grace",
        "--large-sizes",
        "--strict",
        "[default: 200]",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

/// Ctrl-C mid-suite: the JSON written so far is a valid, partial report, exit 2.
#[test]
fn an_interrupted_suite_leaves_a_valid_partial_report() {
    let dir = tempfile::tempdir().unwrap();
    let child = command(dir.path())
        .args(args(&["--json", "m.json"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first finished cell, then interrupt.
    let started = Instant::now();
    let path = dir.path().join("m.json");
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no cell finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["partial"], true);
    let cells = json["cells"].as_array().unwrap().len();
    assert!((1..15).contains(&cells), "{cells} cells");
}
