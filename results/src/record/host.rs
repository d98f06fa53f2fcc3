//! What a run was measured on: the backend, and the host's facts (cores, memory, CPU
//! model, OS, brokerbench's version).

use std::fs;

use serde::{Deserialize, Serialize};

/// The backend a run measured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Backend name (`reference`, `nats`, `jetstream`, `rabbitmq`, `redis`, `kafka`).
    pub name: String,
    /// Endpoint URL, if any (the embedded broker has its loopback address).
    pub url: Option<String>,
    /// Broker version, if known.
    pub version: Option<String>,
}

/// Facts about the machine that ran the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Logical CPUs available to the process.
    pub cores: Option<u32>,
    /// Total memory, bytes (`MemTotal` of `/proc/meminfo`).
    pub memory_bytes: Option<u64>,
    /// Operating system (`/proc/sys/kernel/ostype`, else the target OS).
    pub os: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// CPU architecture.
    pub arch: String,
    /// CPU model (`model name` of `/proc/cpuinfo`).
    pub cpu_model: Option<String>,
    /// Version of brokerbench that produced the record.
    pub brokerbench_version: String,
    /// Worker threads of the harness's runtime (fewer than `cores` when the broker shared
    /// the machine); absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_workers: Option<u32>,
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub(super) fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

pub(super) fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl HostFacts {
    /// Detects the facts of this host; what cannot be found is `None`.
    pub fn detect(brokerbench_version: &str) -> Self {
        Self {
            cores: std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok()),
            memory_bytes: fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| parse_mem_total(&t)),
            os: read_trimmed("/proc/sys/kernel/ostype")
                .unwrap_or_else(|| std::env::consts::OS.to_owned()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            arch: std::env::consts::ARCH.to_owned(),
            cpu_model: fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|t| parse_cpu_model(&t)),
            brokerbench_version: brokerbench_version.to_owned(),
            harness_workers: None,
        }
    }
}
