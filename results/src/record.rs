//! The run record: one JSON document per run, versioned, written atomically.
//!
//! The schema is documented field by field in `results/README.md`. Figures carry their
//! unit in the key (`p99_us`, `rss_bytes`, `cpu_percent`); rates are messages per
//! second; availabilities are ratios in `0.0..=1.0`; a figure that does not exist (no
//! sample, nothing attempted) is `null`, never a misleading 0.

use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::histogram::{HistogramError, LatencyHistogram, Summary};
use crate::recorder::{Counters, LatencySet};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a run record could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Reading, writing or renaming the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON, or not a run record of the expected shape.
    #[error("{}: not a valid brokerbench document (run record or conformance report): {source}", path.display())]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The JSON error (names the offending field).
        #[source]
        source: serde_json::Error,
    },
    /// The file has no numeric `schema_version`.
    #[error("{}: not a brokerbench run record or conformance report (no numeric `schema_version` field)", path.display())]
    MissingSchemaVersion {
        /// The file concerned.
        path: PathBuf,
    },
    /// The file was written with a schema version this build does not read.
    #[error(
        "{}: schema_version {found} is not supported (this brokerbench reads version {supported})",
        path.display()
    )]
    UnsupportedSchemaVersion {
        /// The file concerned.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The version this crate reads.
        supported: u32,
    },
}

/// RFC 3339 UTC timestamps for serde (`2026-11-22T10:15:00.123456789Z`).
pub(crate) mod rfc3339_utc {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(de::Error::custom)
    }
}

/// Summaries of the five latencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummaries {
    /// End-to-end, from the intended send time (coordinated-omission corrected).
    pub e2e: Summary,
    /// End-to-end, from the actual send time.
    pub e2e_uncorrected: Summary,
    /// Publish to broker confirmation, from the intended send time.
    pub publish_ack: Summary,
    /// Publish to broker confirmation, from the actual send time.
    pub publish_ack_uncorrected: Summary,
    /// Actual send time minus intended send time.
    pub send_delay: Summary,
}

impl LatencySummaries {
    /// Summarises each histogram of `set`.
    pub fn of(set: &LatencySet) -> Self {
        Self {
            e2e: set.e2e.summary(),
            e2e_uncorrected: set.e2e_uncorrected.summary(),
            publish_ack: set.publish_ack.summary(),
            publish_ack_uncorrected: set.publish_ack_uncorrected.summary(),
            send_delay: set.send_delay.summary(),
        }
    }
}

/// The five histograms, each as base64 of an HdrHistogram V2 compressed payload of
/// nanosecond values (see [`LatencyHistogram::to_base64`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedHistograms {
    /// See [`LatencySummaries::e2e`].
    pub e2e: String,
    /// See [`LatencySummaries::e2e_uncorrected`].
    pub e2e_uncorrected: String,
    /// See [`LatencySummaries::publish_ack`].
    pub publish_ack: String,
    /// See [`LatencySummaries::publish_ack_uncorrected`].
    pub publish_ack_uncorrected: String,
    /// See [`LatencySummaries::send_delay`].
    pub send_delay: String,
}

impl EncodedHistograms {
    /// Encodes each histogram of `set`.
    ///
    /// # Errors
    /// [`HistogramError::Encode`] if a histogram cannot be serialised.
    pub fn encode(set: &LatencySet) -> Result<Self, HistogramError> {
        Ok(Self {
            e2e: set.e2e.to_base64()?,
            e2e_uncorrected: set.e2e_uncorrected.to_base64()?,
            publish_ack: set.publish_ack.to_base64()?,
            publish_ack_uncorrected: set.publish_ack_uncorrected.to_base64()?,
            send_delay: set.send_delay.to_base64()?,
        })
    }

    /// Decodes the histograms, restoring each one's clamped count from `summaries`
    /// (the V2 payload does not carry it).
    ///
    /// # Errors
    /// A [`HistogramError`] if a payload is malformed.
    pub fn decode(&self, summaries: &LatencySummaries) -> Result<LatencySet, HistogramError> {
        let one = |text: &str, summary: &Summary| -> Result<LatencyHistogram, HistogramError> {
            let mut h = LatencyHistogram::from_base64(text)?;
            h.set_clamped(summary.clamped);
            Ok(h)
        };
        Ok(LatencySet {
            e2e: one(&self.e2e, &summaries.e2e)?,
            e2e_uncorrected: one(&self.e2e_uncorrected, &summaries.e2e_uncorrected)?,
            publish_ack: one(&self.publish_ack, &summaries.publish_ack)?,
            publish_ack_uncorrected: one(
                &self.publish_ack_uncorrected,
                &summaries.publish_ack_uncorrected,
            )?,
            send_delay: one(&self.send_delay, &summaries.send_delay)?,
        })
    }
}

/// Availability of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityFigures {
    /// Confirmed publishes / attempted publishes; `null` when nothing was attempted.
    pub publish: Option<f64>,
    /// Successful deliveries / (successful + lost + late); `null` when none was due.
    pub delivery: Option<f64>,
    /// Intervals with at least one failed or unknown publish, or one lost or late delivery.
    pub unavailable_intervals: u64,
}

/// Availability of one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalAvailability {
    /// Confirmed / attempted publishes observed in the interval; `null` if none.
    pub publish: Option<f64>,
    /// Delivered / (delivered + lost + late) attributed to the interval; `null` if none.
    pub delivery: Option<f64>,
    /// At least one failed or unknown publish, or one lost or late delivery.
    pub unavailable: bool,
}

/// Call volume: counts and rates (messages per second).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeFigures {
    /// Messages the schedule offered.
    pub offered: u64,
    /// Publish attempts (confirmed + failed + unknown).
    pub attempted: u64,
    /// Publishes confirmed by the broker within the timeout.
    pub published: u64,
    /// Publishes that failed.
    pub publish_failed: u64,
    /// Publishes with no confirmation before the timeout.
    pub publish_unknown: u64,
    /// First deliveries, counted per subscriber.
    pub delivered: u64,
    /// `offered` / duration, msg/s.
    pub offered_rate: f64,
    /// `published` / duration, msg/s.
    pub achieved_publish_rate: f64,
    /// `delivered` / duration, msg/s (per-subscriber deliveries).
    pub achieved_delivery_rate: f64,
    /// The achieved publish rate fell more than 5 % behind the offered rate.
    pub saturated: bool,
}

impl VolumeFigures {
    /// Volume figures over `duration_s` seconds: counts from `totals`, achieved rates (and
    /// `saturated`) from `in_phase`, what completed within the measured phase. Publishes
    /// and deliveries that only complete during the drain count in `published` and
    /// `delivered`, not in the rates, so a backlog shows as saturation. For one interval
    /// both are that interval's counters. Rates are 0 when the duration is not positive.
    pub fn new(totals: &Counters, in_phase: &Counters, offered: u64, duration_s: f64) -> Self {
        let rate = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        let offered_rate = rate(offered);
        let achieved_publish_rate = rate(in_phase.published);
        Self {
            offered,
            attempted: totals.attempted(),
            published: totals.published,
            publish_failed: totals.publish_failed,
            publish_unknown: totals.publish_unknown,
            delivered: totals.delivered,
            offered_rate,
            achieved_publish_rate,
            achieved_delivery_rate: rate(in_phase.delivered),
            saturated: crate::collector::is_saturated(offered_rate, achieved_publish_rate),
        }
    }
}

/// Correctness counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectnessFigures {
    /// Confirmed messages an eligible subscriber never received.
    pub lost: u64,
    /// Deliveries of a message the subscriber already had.
    pub duplicated: u64,
    /// First deliveries after a higher sequence of the same producer.
    pub reordered: u64,
    /// Deliveries never sent, for another subscriber, or corrupted.
    pub phantom: u64,
    /// Deliveries after the deadline or after unsubscribe.
    pub late: u64,
    /// Publishes whose outcome was failed or unknown that were delivered all the same.
    #[serde(default)]
    pub recovered: u64,
    /// Messages sent before a late subscriber joined that it received by replay (not
    /// counted as deliveries).
    #[serde(default)]
    pub replayed: u64,
    /// Deliveries due for publishes that failed or got no answer and never came: not
    /// lost (the publisher knew), but delivery availability counts them. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undelivered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CorrectnessFigures {
    /// Correctness figures from counters and a lost count.
    pub fn new(counters: &Counters, lost: u64) -> Self {
        Self {
            lost,
            duplicated: counters.duplicated,
            reordered: counters.reordered,
            phantom: counters.phantom,
            late: counters.late,
            recovered: 0,
            replayed: 0,
            undelivered: 0,
        }
    }
}

/// Broker resource use over the run; `null` figures when the process was not sampled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeFigures {
    /// Mean broker CPU over all samples, percent of one core (may exceed 100).
    pub cpu_percent: Option<f64>,
    /// Highest per-interval mean CPU, percent of one core.
    pub cpu_percent_max: Option<f64>,
    /// Mean resident set size over all samples, bytes.
    pub rss_bytes: Option<u64>,
    /// Highest per-interval resident set size, bytes.
    pub rss_bytes_max: Option<u64>,
    /// Number of samples taken.
    pub samples: u64,
}

/// Broker resource use in one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalCompute {
    /// Broker CPU, percent of one core; `null` if not sampled.
    pub cpu_percent: Option<f64>,
    /// Broker resident set size, bytes; `null` if not sampled.
    pub rss_bytes: Option<u64>,
}

/// The figures of one 1-second interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalFigures {
    /// Interval index: the interval covers `[index s, index+1 s)` of the run clock.
    pub index: u64,
    /// Latency summaries of events observed in the interval.
    pub latency: LatencySummaries,
    /// Availability of the interval.
    pub availability: IntervalAvailability,
    /// Counts and rates of the interval (rates over 1 s).
    pub volume: VolumeFigures,
    /// Correctness counters of the interval.
    pub correctness: CorrectnessFigures,
    /// Broker resource use in the interval.
    pub compute: IntervalCompute,
    /// The interval's histograms (for `.hlog` output and re-analysis).
    pub histograms: EncodedHistograms,
}

/// Everything the collector measured: the run figures and the interval series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Length of the measured phase, seconds; run-level rates are over it.
    pub duration_s: f64,
    /// Latency summaries of the whole run.
    pub latency: LatencySummaries,
    /// Availability of the whole run.
    pub availability: AvailabilityFigures,
    /// Call volume of the whole run.
    pub volume: VolumeFigures,
    /// Correctness counters of the whole run.
    pub correctness: CorrectnessFigures,
    /// Broker resource use of the whole run.
    pub compute: ComputeFigures,
    /// The 1-second interval series, dense from index 0.
    pub intervals: Vec<IntervalFigures>,
    /// The run's merged histograms.
    pub histograms: EncodedHistograms,
}

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
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
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

/// What identifies a run, given by the caller when building its record.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Run id (the one carried in every envelope).
    pub run_id: String,
    /// Scenario name.
    pub scenario_name: String,
    /// The scenario as resolved (all defaults filled in).
    pub scenario: Value,
    /// The scenario's alert rules, as given.
    pub alert_rules: Value,
    /// The backend measured.
    pub backend: BackendInfo,
    /// The host that ran the benchmark.
    pub host: HostFacts,
    /// When the run started.
    pub started_at: OffsetDateTime,
    /// When the run ended.
    pub ended_at: OffsetDateTime,
}

/// One run, as written to `results/<UTC time>-<scenario>-<backend>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Schema version of this document ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Run id.
    pub run_id: String,
    /// Scenario name.
    pub scenario_name: String,
    /// The scenario as resolved.
    pub scenario: Value,
    /// The backend measured.
    pub backend: BackendInfo,
    /// The host that ran the benchmark.
    pub host: HostFacts,
    /// Start of the run, RFC 3339 UTC.
    #[serde(with = "rfc3339_utc")]
    pub started_at: OffsetDateTime,
    /// End of the run, RFC 3339 UTC.
    #[serde(with = "rfc3339_utc")]
    pub ended_at: OffsetDateTime,
    /// True when the run was interrupted; the figures cover what was measured.
    pub partial: bool,
    /// Why the run is partial; `null` when it is not.
    pub partial_reason: Option<String>,
    /// The measured figures (`duration_s`, `latency`, `availability`, `volume`,
    /// `correctness`, `compute`, `intervals`, `histograms` at the top level).
    #[serde(flatten)]
    pub figures: RunFigures,
    /// The scenario's alert rules, as given.
    pub alert_rules: Value,
    /// Verdicts of the alert rules, filled in by the alerts crate.
    pub verdicts: Vec<Value>,
    /// What a reader should know about the run (subscription errors, clean-up failures).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Fingerprint of the resolved scenario (`sha256:...`, see `Scenario::fingerprint`);
    /// absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_hash: Option<String>,
    /// This record's part of a sharded run; absent for a whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::ShardInfo>,
    /// When the measured phase began and how that compares with `--start-at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<crate::shard::StartTiming>,
    /// What each fault injected during the run did (absent for a run without faults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<crate::faults::FaultFigures>,
    /// Unavailability outside every fault window (absent for a run without faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults_outside: Option<crate::faults::OutsideFaults>,
}

impl RunRecord {
    /// A complete (not partial) record with no verdicts yet.
    pub fn new(info: RunInfo, figures: RunFigures) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            run_id: info.run_id,
            scenario_name: info.scenario_name,
            scenario: info.scenario,
            backend: info.backend,
            host: info.host,
            started_at: info.started_at,
            ended_at: info.ended_at,
            partial: false,
            partial_reason: None,
            figures,
            alert_rules: info.alert_rules,
            verdicts: Vec::new(),
            notes: Vec::new(),
            scenario_hash: None,
            shard: None,
            start: None,
            faults: Vec::new(),
            faults_outside: None,
        }
    }

    /// Marks the record as partial (the run was interrupted) with a reason.
    pub fn mark_partial(&mut self, reason: impl Into<String>) {
        self.partial = true;
        self.partial_reason = Some(reason.into());
    }

    /// The run's merged histograms, decoded (clamped counts restored), e.g. to merge
    /// several runs or compute other percentiles.
    ///
    /// # Errors
    /// A [`HistogramError`] if a payload is malformed.
    pub fn latency_histograms(&self) -> Result<LatencySet, HistogramError> {
        self.figures.histograms.decode(&self.figures.latency)
    }

    /// Writes the record as pretty JSON to `path` atomically: a temporary file in the
    /// same directory, flushed and synced, then renamed over `path`. Creates the
    /// directory if needed; replaces an existing file.
    ///
    /// # Errors
    /// [`RecordError::Io`] on any file-system failure, [`RecordError::Json`] if the
    /// record cannot be serialised (a timestamp outside years 0..=9999).
    pub fn write(&self, path: &Path) -> Result<(), RecordError> {
        write_json_atomically(self, path)
    }

    /// Reads a record, checking its `schema_version` before its shape.
    ///
    /// # Errors
    /// [`RecordError::Io`] if the file cannot be read, [`RecordError::MissingSchemaVersion`]
    /// or [`RecordError::UnsupportedSchemaVersion`] for a foreign or newer document,
    /// [`RecordError::Json`] for malformed JSON or a field of the wrong shape.
    pub fn read(path: &Path) -> Result<Self, RecordError> {
        read_json_document(path, SCHEMA_VERSION)
    }

    /// Parses a record from JSON text; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`RunRecord::read`], without the I/O case.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, RecordError> {
        parse_json_document(text, origin, SCHEMA_VERSION)
    }
}

/// Writes `value` as pretty JSON to `path` atomically: a temporary file in the same
/// directory, flushed and synced, then renamed over `path`. Creates the directory if
/// needed; replaces an existing file. Run records and conformance reports are written
/// this way, so a reader never sees half a document.
pub(crate) fn write_json_atomically<T: Serialize>(
    value: &T,
    path: &Path,
) -> Result<(), RecordError> {
    let io = |source| RecordError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".brokerbench-record-")
        .suffix(".json.tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        serde_json::to_writer_pretty(&mut out, value).map_err(|source| RecordError::Json {
            path: path.to_owned(),
            source,
        })?;
        out.write_all(b"\n").map_err(io)?;
        out.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable. Best effort: some file systems refuse to fsync a
    // directory, and the document is already complete either way.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a JSON document of schema version `version` from `path`.
pub(crate) fn read_json_document<T: serde::de::DeserializeOwned>(
    path: &Path,
    version: u32,
) -> Result<T, RecordError> {
    let text = fs::read_to_string(path).map_err(|source| RecordError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_json_document(&text, path, version)
}

/// Parses a JSON document, checking its `schema_version` before its shape; `origin` names
/// it in errors.
fn parse_json_document<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
    version: u32,
) -> Result<T, RecordError> {
    let json = |source| RecordError::Json {
        path: origin.to_owned(),
        source,
    };
    let value: Value = serde_json::from_str(text).map_err(json)?;
    match value.get("schema_version").and_then(Value::as_u64) {
        None => {
            return Err(RecordError::MissingSchemaVersion {
                path: origin.to_owned(),
            });
        }
        Some(v) if v != u64::from(version) => {
            return Err(RecordError::UnsupportedSchemaVersion {
                path: origin.to_owned(),
                found: v,
                supported: version,
            });
        }
        Some(_) => {}
    }
    serde_json::from_value(value).map_err(json)
}

/// Replaces anything but ASCII letters, digits, `-` and `_` by `-`, collapses runs of
/// `-`, trims them at both ends; an empty result becomes `unnamed`.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("unnamed");
    }
    out
}

/// The default record path: `<dir>/<YYYYMMDDTHHMMSSZ>-<scenario>-<backend>.json`, time
/// in UTC, names sanitised to `[A-Za-z0-9_-]`, e.g.
/// `results/20261122T101500Z-group-chat-reference.json`.
pub fn default_record_path(
    dir: &Path,
    started_at: OffsetDateTime,
    scenario: &str,
    backend: &str,
) -> PathBuf {
    let t = started_at.to_offset(time::UtcOffset::UTC);
    let name = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}-{}.json",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        sanitize(scenario),
        sanitize(backend),
    );
    dir.join(name)
}

#[cfg(test)]
mod tests {
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
}
