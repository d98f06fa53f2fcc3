//! Conformance reports: which delivery guarantees each backend kept, check by check.
//!
//! A [`ConformanceReport`] is the matrix `brokerbench conform` produces: one [`Cell`] per
//! check and backend, each with a [`Verdict`] (`pass`, `FAIL`, `unsupported`, `error`), a
//! one-line reason, the anomaly [`Counts`] in the vocabulary of the design notes (lost,
//! duplicated, reordered, phantom, late, recovered, trimmed), how long it took, and what
//! the committed expected matrix says the cell should be. It is written as JSON
//! (`schema_version` [`CONFORMANCE_SCHEMA_VERSION`], atomically, after every cell so an
//! interrupted suite still leaves a valid, `partial` document) and rendered as a terminal
//! matrix, a markdown matrix, JUnit XML and an HTML page ([`render`], [`junit`],
//! [`html`]).

pub mod html;
pub mod junit;
pub mod render;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::record::{HostFacts, RecordError, read_json_document, write_json_atomically};

/// The schema version of the conformance report this crate writes and reads.
pub const CONFORMANCE_SCHEMA_VERSION: u32 = 1;

/// The outcome of one check on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The guarantee held.
    Pass,
    /// The guarantee did not hold: the counts and the reason say how.
    Fail,
    /// The backend has no mechanism for this guarantee (never a silent pass).
    Unsupported,
    /// The harness could not run the check (unreachable broker, set-up refused, ...).
    Error,
}

impl Verdict {
    /// Every verdict.
    pub const ALL: [Verdict; 4] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Unsupported,
        Verdict::Error,
    ];

    /// The lowercase name used in JSON and in the expected-matrix file.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Unsupported => "unsupported",
            Verdict::Error => "error",
        }
    }

    /// The label shown in matrices: `pass`, `FAIL`, `unsupported`, `error`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Fail => "FAIL",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                format!("unknown verdict '{wanted}' (expected pass, fail, unsupported or error)")
            })
    }
}

/// What a check published and what came back, in the conformance vocabulary.
///
/// `published`, `confirmed` and `delivered` give the scale; the other seven are anomalies:
/// **lost** (a confirmed message an eligible subscriber never got), **duplicated** (got
/// again where once was the rule), **reordered** (got before one that should have come
/// first), **phantom** (never sent, sent to someone else, or corrupted), **late** (after
/// the deadline or after the unsubscribe), **recovered** (a publish whose outcome was
/// unknown and that showed up anyway), **trimmed** (removed by a retention limit, not
/// lost). `details` holds a check's own figures (`signalled_drops`, `attempts`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Publishes attempted.
    pub published: u64,
    /// Publishes the broker confirmed.
    pub confirmed: u64,
    /// Deliveries received, all subscribers together, duplicates included.
    pub delivered: u64,
    /// Confirmed messages an eligible subscriber never got.
    pub lost: u64,
    /// Deliveries beyond the one that was due.
    pub duplicated: u64,
    /// Deliveries that came before an earlier message of the same order.
    pub reordered: u64,
    /// Deliveries of something never sent, sent elsewhere, or corrupted.
    pub phantom: u64,
    /// Deliveries after the deadline or after the unsubscribe took effect.
    pub late: u64,
    /// Publishes with an unknown outcome that were delivered after all.
    pub recovered: u64,
    /// Messages removed by the retention limit (expected, not lost).
    pub trimmed: u64,
    /// The check's own figures, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, u64>,
}

impl Counts {
    /// The seven anomaly counts with their names, in vocabulary order.
    pub fn anomalies(&self) -> [(&'static str, u64); 7] {
        [
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("reordered", self.reordered),
            ("phantom", self.phantom),
            ("late", self.late),
            ("recovered", self.recovered),
            ("trimmed", self.trimmed),
        ]
    }

    /// The anomalies that are not zero, as `lost 3, phantom 1` (`none` when all are 0).
    pub fn anomaly_summary(&self) -> String {
        let parts: Vec<String> = self
            .anomalies()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// Adds `other` into `self`, detail by detail.
    pub fn add(&mut self, other: &Counts) {
        self.published += other.published;
        self.confirmed += other.confirmed;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.phantom += other.phantom;
        self.late += other.late;
        self.recovered += other.recovered;
        self.trimmed += other.trimmed;
        for (name, n) in &other.details {
            *self.details.entry(name.clone()).or_default() += n;
        }
    }

    /// Sets the detail `name` to `value`.
    pub fn detail(&mut self, name: &str, value: u64) {
        self.details.insert(name.to_owned(), value);
    }
}

/// What the committed expected matrix says a cell should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// The expected verdict.
    pub verdict: Verdict,
    /// Why a cell is expected to be `unsupported` or `FAIL`, from the broker's own
    /// documentation; `None` for an expected pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One check on one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The check (`fanout`, `compete`, ...).
    pub check: String,
    /// The backend (`reference`, `kafka`, ...).
    pub backend: String,
    /// The outcome.
    pub verdict: Verdict,
    /// One line: what held, or what went wrong and how often.
    pub reason: String,
    /// What was published and what came back.
    pub counts: Counts,
    /// How long the check took, seconds.
    pub duration_s: f64,
    /// The broker's name and version as it reported it, where it does.
    pub backend_version: Option<String>,
    /// The expected verdict, when the expected matrix has one for this cell.
    #[serde(default)]
    pub expected: Option<Expectation>,
}

impl Cell {
    /// Whether the cell differs from its expectation (a cell with none is expected to
    /// pass).
    pub fn is_unexpected(&self) -> bool {
        self.verdict != self.expected_verdict()
    }

    /// The expected verdict: the expectation's, else `pass`.
    pub fn expected_verdict(&self) -> Verdict {
        self.expected.as_ref().map_or(Verdict::Pass, |e| e.verdict)
    }

    /// Whether this cell fails the suite: it was expected to pass and did not, or it
    /// failed where something else was expected. A cell that does better than expected
    /// (passes where a FAIL was expected) is only a difference; see [`Gate`].
    pub fn is_regression(&self) -> bool {
        match (self.expected_verdict(), self.verdict) {
            (expected, actual) if expected == actual => false,
            (Verdict::Pass, _) => true,
            (_, Verdict::Fail) => true,
            _ => false,
        }
    }
}

/// A backend column of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendColumn {
    /// The backend's name.
    pub name: String,
    /// The endpoint, credentials redacted (`None` for an embedded broker).
    pub url: Option<String>,
    /// The broker's name and version as it reported it.
    pub version: Option<String>,
}

/// The whole matrix of one `brokerbench conform` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformanceReport {
    /// [`CONFORMANCE_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// A constant tag telling this document from a run record: `conformance`.
    pub kind: String,
    /// When the suite started, RFC 3339 UTC.
    #[serde(with = "crate::record::rfc3339_utc")]
    pub started_at: OffsetDateTime,
    /// When the last cell finished, RFC 3339 UTC.
    #[serde(with = "crate::record::rfc3339_utc")]
    pub ended_at: OffsetDateTime,
    /// True until every cell asked for has run (an interrupted suite leaves it true).
    pub partial: bool,
    /// The host that ran the suite.
    pub host: HostFacts,
    /// The checks' parameters (counts, timeouts, grace periods) as used.
    pub parameters: serde_json::Value,
    /// The checks, in row order.
    pub checks: Vec<String>,
    /// The backends, in column order.
    pub backends: Vec<BackendColumn>,
    /// The cells run so far, in the order they ran.
    pub cells: Vec<Cell>,
}

/// Whether a suite passed, as the exit code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Cells that could not run (`error`): the harness could not do its job.
    pub errors: Vec<String>,
    /// Cells that regressed: expected to pass and did not, or failed unexpectedly.
    pub regressions: Vec<String>,
    /// Every other difference from the expected matrix (better than expected, or
    /// unsupported where a FAIL was expected); fails the suite only when strict.
    pub other_differences: Vec<String>,
}

impl Gate {
    /// Whether nothing differs from the expectations at all.
    pub fn is_exact(&self) -> bool {
        self.errors.is_empty() && self.regressions.is_empty() && self.other_differences.is_empty()
    }
}

impl ConformanceReport {
    /// An empty report for `checks` × `backends`, started now, partial until
    /// [`finish`](Self::finish).
    pub fn new(
        checks: Vec<String>,
        backends: Vec<BackendColumn>,
        parameters: serde_json::Value,
        host: HostFacts,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        ConformanceReport {
            schema_version: CONFORMANCE_SCHEMA_VERSION,
            kind: "conformance".to_owned(),
            started_at: now,
            ended_at: now,
            partial: true,
            host,
            parameters,
            checks,
            backends,
            cells: Vec::new(),
        }
    }

    /// Adds a finished cell (and moves `ended_at` to now).
    pub fn push(&mut self, cell: Cell) {
        self.ended_at = OffsetDateTime::now_utc();
        self.cells.push(cell);
    }

    /// Marks the suite complete.
    pub fn finish(&mut self) {
        self.ended_at = OffsetDateTime::now_utc();
        self.partial = false;
    }

    /// The cell of `check` on `backend`, if it ran.
    pub fn cell(&self, check: &str, backend: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.check == check && c.backend == backend)
    }

    /// The backend column named `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendColumn> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// Sorts the cells' differences from their expectations into a [`Gate`].
    pub fn gate(&self) -> Gate {
        let mut gate = Gate {
            errors: Vec::new(),
            regressions: Vec::new(),
            other_differences: Vec::new(),
        };
        for cell in &self.cells {
            if !cell.is_unexpected() {
                continue;
            }
            let line = format!(
                "{} on {}: {} (expected {}): {}",
                cell.check,
                cell.backend,
                cell.verdict,
                cell.expected_verdict(),
                cell.reason
            );
            if cell.verdict == Verdict::Error {
                gate.errors.push(line);
            } else if cell.is_regression() {
                gate.regressions.push(line);
            } else {
                gate.other_differences.push(line);
            }
        }
        gate
    }

    /// Writes the report as pretty JSON to `path` atomically (creating the directory).
    ///
    /// # Errors
    /// [`RecordError::Io`] on a file-system failure, [`RecordError::Json`] if it cannot be
    /// serialised.
    pub fn write(&self, path: &Path) -> Result<(), RecordError> {
        write_json_atomically(self, path)
    }

    /// Reads a report written by [`write`](Self::write).
    ///
    /// # Errors
    /// [`RecordError`] when the file cannot be read, is not JSON, has no or another
    /// `schema_version`, or is not a conformance report.
    pub fn read(path: &Path) -> Result<Self, RecordError> {
        read_json_document(path, CONFORMANCE_SCHEMA_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cell(check: &str, backend: &str, verdict: Verdict) -> Cell {
        Cell {
            check: check.into(),
            backend: backend.into(),
            verdict,
            reason: format!("{check} on {backend}"),
            counts: Counts::default(),
            duration_s: 0.5,
            backend_version: None,
            expected: None,
        }
    }

    fn expect(verdict: Verdict) -> Option<Expectation> {
        Some(Expectation {
            verdict,
            reason: Some("documented".into()),
        })
    }

    #[test]
    fn verdict_names_round_trip() {
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), v);
            assert_eq!(v.label().parse::<Verdict>().unwrap(), v);
        }
        assert_eq!(Verdict::Fail.to_string(), "FAIL");
        assert!("maybe".parse::<Verdict>().unwrap_err().contains("maybe"));
        assert_eq!(
            serde_json::to_string(&Verdict::Unsupported).unwrap(),
            "\"unsupported\""
        );
    }

    #[test]
    fn anomaly_summary_lists_what_is_not_zero() {
        let mut counts = Counts::default();
        assert_eq!(counts.anomaly_summary(), "none");
        counts.lost = 3;
        counts.phantom = 1;
        assert_eq!(counts.anomaly_summary(), "lost 3, phantom 1");
        let mut total = Counts::default();
        counts.detail("attempts", 4);
        total.add(&counts);
        total.add(&counts);
        assert_eq!((total.lost, total.details["attempts"]), (6, 8));
    }

    #[test]
    fn gate_sorts_differences() {
        let mut report = ConformanceReport::new(
            vec!["fanout".into(), "dedup".into()],
            vec![],
            serde_json::json!({}),
            HostFacts::detect("0"),
        );
        report.push(cell("fanout", "reference", Verdict::Pass));
        let mut known = cell("dedup", "kafka", Verdict::Unsupported);
        known.expected = expect(Verdict::Unsupported);
        report.push(known);
        assert!(report.gate().is_exact());

        report.push(cell("fanout", "nats", Verdict::Fail));
        let mut better = cell("dedup", "nats", Verdict::Pass);
        better.expected = expect(Verdict::Fail);
        report.push(better);
        let mut worse = cell("dedup", "redis", Verdict::Fail);
        worse.expected = expect(Verdict::Unsupported);
        report.push(worse);
        report.push(cell("fanout", "redis", Verdict::Error));
        let gate = report.gate();
        assert_eq!(gate.regressions.len(), 2, "{gate:?}");
        assert!(gate.regressions[0].starts_with("fanout on nats: FAIL (expected pass)"));
        assert_eq!(gate.other_differences.len(), 1);
        assert_eq!(gate.errors.len(), 1);
        assert!(!gate.is_exact());
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/conformance.json");
        let mut report = ConformanceReport::new(
            vec!["fanout".into()],
            vec![BackendColumn {
                name: "reference".into(),
                url: None,
                version: Some("reference-broker 0.1.0".into()),
            }],
            serde_json::json!({"messages": 200}),
            HostFacts::detect("0"),
        );
        let mut c = cell("fanout", "reference", Verdict::Pass);
        c.counts.detail("subscribers", 3);
        report.push(c);
        report.finish();
        report.write(&path).unwrap();
        let back = ConformanceReport::read(&path).unwrap();
        assert_eq!(back, report);
        assert!(!back.partial);

        std::fs::write(&path, r#"{"schema_version": 7}"#).unwrap();
        let err = ConformanceReport::read(&path).unwrap_err();
        assert!(err.to_string().contains("schema_version 7"), "{err}");
    }
}
