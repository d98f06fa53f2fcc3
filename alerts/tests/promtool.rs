//! The exported Prometheus rules pass `promtool check rules`, and the exported unit tests
//! pass `promtool test rules` (both severities of every rule). Skipped when promtool is
//! not installed, unless `BROKERBENCH_REQUIRE_TOOLS` is `all` or names `promtool`.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use brokerbench_alerts::{export_prometheus, parse_rules_text};

const RULES: &str = r#"
[[alerts]]
name = "end-to-end latency"
signal = "e2e.p99"
direction = "upper"
warning = "5ms"
critical = "20ms"
for = 3
labels = { team = "chat" }
annotations = { runbook_url = "https://runbooks.example/brokerbench/e2e-latency" }

[[alerts]]
name = "delivery availability"
signal = "availability"
direction = "lower"
warning = "99.9%"
critical = 0.99

[[alerts]]
name = "publish rate"
signal = "throughput"
direction = "lower"
warning = "1.5k/s"
critical = "1k/s"

[[alerts]]
name = "no loss"
signal = "lost"
direction = "upper"
critical = 0
summary = "Messages were lost in {{ $labels.scenario }} (it's bad)"

[[alerts]]
name = "broker memory"
signal = "rss"
direction = "upper"
warning = "256MiB"
critical = "512MiB"

[[alerts]]
name = "broker cpu"
signal = "cpu"
direction = "upper"
warning = "80%"
critical = "150%"

[[alerts]]
name = "ack max"
signal = "publish.max"
direction = "upper"
warning = "250us"
critical = "250us"
"#;

fn promtool_required() -> bool {
    std::env::var("BROKERBENCH_REQUIRE_TOOLS").is_ok_and(|v| {
        v.split(',')
            .any(|t| t.trim() == "all" || t.trim() == "promtool")
    })
}

fn promtool() -> Option<&'static str> {
    let path = "/usr/bin/promtool";
    let found =
        Path::new(path).exists() || Command::new("promtool").arg("--version").output().is_ok();
    if found {
        return Some(if Path::new(path).exists() {
            path
        } else {
            "promtool"
        });
    }
    assert!(
        !promtool_required(),
        "promtool is required (BROKERBENCH_REQUIRE_TOOLS) but not installed"
    );
    let _ = std::io::stderr().write_all(b"SKIPPED: promtool is not installed\n");
    None
}

fn run(tool: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_rules_and_tests() {
    let Some(tool) = promtool() else { return };
    let rules = parse_rules_text(RULES, Path::new("rules.toml")).expect("valid rules");
    let export = export_prometheus(&rules, Some("chat-1to1"), "rules.yml");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yml"), &export.rules_yaml).expect("write rules");
    std::fs::write(dir.path().join("rules.test.yml"), &export.tests_yaml).expect("write tests");

    let checked = run(tool, &["check", "rules", "rules.yml"], dir.path());
    // 6 rules with two thresholds, one with a single threshold.
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = run(tool, &["test", "rules", "rules.test.yml"], dir.path());
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Both severities are exercised.
    assert!(export.tests_yaml.matches("severity: 'critical'").count() >= 6);
    assert!(export.tests_yaml.matches("severity: 'warning'").count() >= 6);
}

#[test]
fn promtool_catches_a_wrong_expectation() {
    // The test file is a real test: flip one expected severity and promtool must fail.
    let Some(tool) = promtool() else { return };
    let rules = parse_rules_text(RULES, Path::new("rules.toml")).expect("valid rules");
    let export = export_prometheus(&rules, None, "rules.yml");
    let broken = export
        .tests_yaml
        .replacen("severity: 'warning'", "severity: 'critical'", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yml"), &export.rules_yaml).expect("write rules");
    std::fs::write(dir.path().join("broken.test.yml"), broken).expect("write tests");
    let out = Command::new(tool)
        .args(["test", "rules", "broken.test.yml"])
        .current_dir(dir.path())
        .output()
        .expect("run promtool");
    assert!(
        !out.status.success(),
        "promtool accepted a wrong expectation"
    );
}
