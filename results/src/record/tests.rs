//! The run record's own tests: names and paths, and the host facts.

use super::host::{parse_cpu_model, parse_mem_total};
use super::*;

#[test]
fn sanitizes_names() {
    assert_eq!(sanitize("group-chat"), "group-chat");
    assert_eq!(sanitize("../etc/passwd"), "etc-passwd");
    assert_eq!(sanitize("a b  c"), "a-b-c");
    assert_eq!(sanitize("fan out/Ü"), "fan-out");
    assert_eq!(sanitize("///"), "unnamed");
}

#[test]
fn default_path_is_utc() {
    let t = time::macros::datetime!(2026-11-22 11:15:00 +1);
    let p = default_record_path(Path::new("results"), t, "group chat", "reference");
    assert_eq!(
        p,
        Path::new("results/20261122T101500Z-group-chat-reference.json")
    );
}

#[test]
fn parses_proc_files() {
    let meminfo = "MemTotal:       16314228 kB\nMemFree:         1000 kB\n";
    assert_eq!(parse_mem_total(meminfo), Some(16_314_228 * 1024));
    assert_eq!(parse_mem_total("nothing"), None);
    let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n";
    assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
}

#[test]
fn detect_finds_basics() {
    let h = HostFacts::detect("0.1.0");
    assert!(h.cores.unwrap_or(1) >= 1);
    assert!(!h.os.is_empty());
    assert_eq!(h.brokerbench_version, "0.1.0");
}
