//! The Kubernetes manifests of a sharded run (`deploy/kubernetes/render`) validated
//! offline against the Kubernetes API schema with `kubernetes-validate` (PyPI; installed
//! into /var/tmp/brokerbench-tools-venv by `scripts/services deps`). Without the tool
//! the validation prints SKIPPED, unless `BROKERBENCH_REQUIRE_TOOLS` requires it. No
//! cluster is used or needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{text, tool_required};

/// The API version validated against: batch/v1 `podFailurePolicy` is GA since 1.31.
const KUBERNETES_VERSION: &str = "1.33.0";
const VENV_TOOL: &str = "/var/tmp/brokerbench-tools-venv/bin/kubernetes-validate";

fn render(args: &[&str]) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/render"))
        .args(args)
        .output()
        .expect("the render script runs (bash)")
}

fn validator() -> Option<PathBuf> {
    if Path::new(VENV_TOOL).exists() {
        return Some(VENV_TOOL.into());
    }
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    on_path
        .is_ok_and(|o| o.status.success())
        .then(|| "kubernetes-validate".into())
}

#[test]
fn rendered_manifests_are_valid_kubernetes_objects() {
    let out = render(&[
        "--shards",
        "3",
        "--backend",
        "nats",
        "--url",
        "nats://nats.bench.svc:4222",
        "--start-at",
        "2026-12-06T21:00:00Z",
        "--run-id",
        "nightly-42",
        "--namespace",
        "bench",
        "--rate",
        "3000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    // What the run depends on, in the manifests.
    for needle in [
        "completionMode: Indexed",
        "completions: 3\n",
        "parallelism: 3\n",
        "backoffLimit: 0",
        "restartPolicy: Never",
        "action: FailJob",
        "values: [2, 3]",
        "accessModes: [ReadWriteMany]",
        "value: \"2026-12-06T21:00:00Z\"",
        "name: BROKERBENCH_SHARDS\n              value: \"3\"",
        "name: BROKERBENCH_RUN_ID\n              value: \"nightly-42\"",
        "/records/nightly-42/shard-$(SHARD_INDEX).json",
        "brokerbench merge \"$dir\"/shard-*.json",
        "name = \"group-chat\"",
        "namespace: bench",
    ] {
        assert!(yaml.contains(needle), "missing `{needle}` in:\n{yaml}");
    }
    let Some(tool) = validator() else {
        assert!(
            !tool_required("kubernetes-validate"),
            "kubernetes-validate is required (BROKERBENCH_REQUIRE_TOOLS) but missing: run scripts/services deps"
        );
        eprintln!(
            "SKIPPED Kubernetes schema validation: kubernetes-validate not found (scripts/services deps installs it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let check = Command::new(&tool)
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .unwrap();
    let report = text(&check.stdout) + &text(&check.stderr);
    assert!(check.status.success(), "{report}");
    for object in [
        "configmap/brokerbench-nightly-42-scenario",
        "persistentvolumeclaim/brokerbench-nightly-42-records",
        "job/brokerbench-nightly-42-shards",
        "job/brokerbench-nightly-42-merge",
    ] {
        assert!(
            report.contains(&format!("passed for resource {object}")),
            "{report}"
        );
    }
    // The validator does reject what the API does not know.
    std::fs::write(&file, yaml.replace("backoffLimit: 0", "backofLimit: 0")).unwrap();
    let bad = Command::new(&tool)
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn render_refuses_bad_options_naming_them() {
    let base = [
        "--backend",
        "nats",
        "--url",
        "nats://n:4222",
        "--start-at",
        "+60",
    ];
    for (extra, message) in [
        (
            vec!["--shards", "0"],
            "--shards must be a whole number from 1",
        ),
        (
            vec!["--shards", "2", "--backend", "mqtt"],
            "--backend must be",
        ),
        (
            vec!["--shards", "2", "--start-at", "9pm"],
            "--start-at must be RFC 3339",
        ),
        (
            vec!["--shards", "2", "--run-id", "Big_Run"],
            "--run-id must be",
        ),
        (
            vec!["--shards", "2", "--scenario", "nope"],
            "--scenario 'nope' is neither",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra);
        let out = render(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
    }
}
