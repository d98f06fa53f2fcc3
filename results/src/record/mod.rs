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

use crate::histogram::HistogramError;
use crate::recorder::LatencySet;

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

mod figures;
mod host;

pub use self::figures::{
    AvailabilityFigures, ComputeFigures, CorrectnessFigures, EncodedHistograms,
    IntervalAvailability, IntervalCompute, IntervalFigures, LatencySummaries, RunFigures,
    VolumeFigures,
};
pub use self::host::{BackendInfo, HostFacts};

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
mod tests;
