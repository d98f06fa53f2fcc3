//! The expected matrix: for each backend, the checks that are expected not to pass, with
//! the reason drawn from what the broker documents.
//!
//! The committed file is `scenarios/conformance/expected.toml`, built into the binary
//! ([`ExpectedMatrix::builtin`]); `brokerbench conform --expected FILE` reads another. One
//! table per backend and check; every cell not listed is expected to pass:
//!
//! ```toml
//! [nats.late-replay]
//! verdict = "unsupported"
//! reason = "core NATS stores nothing: a subscriber sees only what is published while it is subscribed"
//! ```
//!
//! The reference broker is the definition of every semantic: it must pass every check, so
//! the file may not expect anything else of it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use brokerbench_adapters::BackendKind;
use brokerbench_results::{ConformanceVerdict as Verdict, Expectation};
use toml_edit::{ImDocument, Item};

use super::Check;
use crate::error::{ErrorKind, ScenarioError};

/// The committed expected matrix.
const BUILTIN: &str = include_str!("../../conformance/expected.toml");

/// Where [`ExpectedMatrix::builtin`] comes from, for messages.
pub const BUILTIN_ORIGIN: &str = "scenarios/conformance/expected.toml";

/// Expected verdicts by backend and check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedMatrix {
    cells: BTreeMap<(String, Check), Expectation>,
}

impl ExpectedMatrix {
    /// The committed matrix.
    ///
    /// # Panics
    /// Never for the committed file: a test parses it.
    pub fn builtin() -> ExpectedMatrix {
        match Self::parse(BUILTIN, BUILTIN_ORIGIN) {
            Ok(matrix) => matrix,
            Err(err) => panic!("the built-in expected matrix is invalid: {err}"),
        }
    }

    /// The committed file's text.
    pub fn builtin_source() -> &'static str {
        BUILTIN
    }

    /// Reads a matrix from a file.
    ///
    /// # Errors
    /// A [`ScenarioError`] naming the file, the line and the key for unreadable files,
    /// TOML syntax errors, unknown backends, checks, verdicts or keys, and missing reasons.
    pub fn load(path: &Path) -> Result<ExpectedMatrix, ScenarioError> {
        let origin = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ScenarioError::read(&origin, e))?;
        Self::parse(&source, &origin)
    }

    /// Parses a matrix; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`load`](Self::load), without the read error.
    pub fn parse(source: &str, origin: &str) -> Result<ExpectedMatrix, ScenarioError> {
        let document = ImDocument::parse(source).map_err(|e| {
            ScenarioError::located(
                ErrorKind::Syntax,
                origin,
                source,
                e.span(),
                None,
                e.message().trim().to_owned(),
            )
        })?;
        let error = |span: Option<Range<usize>>, key: String, message: String| {
            ScenarioError::located(ErrorKind::Schema, origin, source, span, Some(key), message)
        };
        let mut matrix = ExpectedMatrix::default();
        for (backend, item) in document.as_table().iter() {
            let Some(table) = item.as_table_like() else {
                return Err(error(
                    item.span(),
                    backend.to_owned(),
                    "expected a table of checks, one per backend".into(),
                ));
            };
            let kind: BackendKind = backend
                .parse()
                .ok()
                .filter(|k| *k != BackendKind::Null)
                .ok_or_else(|| {
                    error(
                        document.as_table().key(backend).and_then(|k| k.span()),
                        backend.to_owned(),
                        format!("unknown backend '{backend}' (expected reference, nats, jetstream, rabbitmq, redis or kafka)"),
                    )
                })?;
            for (check_name, cell) in table.iter() {
                let path = format!("{backend}.{check_name}");
                let check: Check = check_name.parse().map_err(|e: String| {
                    error(
                        table.key(check_name).and_then(|k| k.span()),
                        path.clone(),
                        e,
                    )
                })?;
                let expectation =
                    cell_expectation(cell, &path).map_err(|(span, key, message)| {
                        error(span.or_else(|| cell.span()), key, message)
                    })?;
                if kind == BackendKind::Reference && expectation.verdict != Verdict::Pass {
                    return Err(error(
                        cell.span(),
                        path,
                        "the reference broker is the definition of every semantic: it must pass every check".into(),
                    ));
                }
                matrix
                    .cells
                    .insert((kind.as_str().to_owned(), check), expectation);
            }
        }
        Ok(matrix)
    }

    /// What is expected of `check` on `backend` (a pass unless the matrix says otherwise).
    pub fn expectation(&self, backend: BackendKind, check: Check) -> Expectation {
        self.cells
            .get(&(backend.as_str().to_owned(), check))
            .cloned()
            .unwrap_or(Expectation {
                verdict: Verdict::Pass,
                reason: None,
            })
    }

    /// Every cell the matrix lists, by backend then check.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Check, &Expectation)> {
        self.cells
            .iter()
            .map(|((backend, check), e)| (backend.as_str(), *check, e))
    }
}

/// The expectation of one `[backend.check]` table.
fn cell_expectation(
    cell: &Item,
    path: &str,
) -> Result<Expectation, (Option<Range<usize>>, String, String)> {
    let Some(table) = cell.as_table_like() else {
        return Err((
            cell.span(),
            path.to_owned(),
            "expected a table with `verdict` and `reason`".into(),
        ));
    };
    for (key, item) in table.iter() {
        if key != "verdict" && key != "reason" {
            return Err((
                table
                    .key(key)
                    .and_then(|k| k.span())
                    .or_else(|| item.span()),
                format!("{path}.{key}"),
                format!("unknown key `{key}` (expected `verdict` and `reason`)"),
            ));
        }
    }
    let verdict_item = table.get("verdict").ok_or_else(|| {
        (
            cell.span(),
            path.to_owned(),
            "missing key `verdict`".to_owned(),
        )
    })?;
    let verdict: Verdict = verdict_item
        .as_str()
        .ok_or_else(|| "`verdict` must be a string".to_owned())
        .and_then(|v| v.parse())
        .map_err(|message| (verdict_item.span(), format!("{path}.verdict"), message))?;
    let reason = match table.get("reason") {
        None => None,
        Some(item) => Some(
            item.as_str()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    (
                        item.span(),
                        format!("{path}.reason"),
                        "`reason` must be a non-empty string".to_owned(),
                    )
                })?,
        ),
    };
    if verdict == Verdict::Error {
        return Err((
            verdict_item.span(),
            format!("{path}.verdict"),
            "`error` cannot be expected: it means the harness could not run the check".into(),
        ));
    }
    if verdict != Verdict::Pass && reason.is_none() {
        return Err((
            cell.span(),
            path.to_owned(),
            format!("an expected `{verdict}` needs a `reason` (what the broker documents)"),
        ));
    }
    Ok(Expectation { verdict, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_matrix_parses_and_names_a_reason_for_every_gap() {
        let matrix = ExpectedMatrix::builtin();
        for (backend, check, expectation) in matrix.entries() {
            assert_ne!(backend, "reference", "{check}");
            if expectation.verdict != Verdict::Pass {
                assert!(expectation.reason.is_some(), "{backend}.{check}");
            }
        }
        assert_eq!(
            matrix
                .expectation(BackendKind::Reference, Check::Dedup)
                .verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn cells_default_to_pass() {
        let matrix = ExpectedMatrix::parse(
            "[nats.dedup]\nverdict = \"unsupported\"\nreason = \"no ids\"\n",
            "x.toml",
        )
        .unwrap();
        let e = matrix.expectation(BackendKind::Nats, Check::Dedup);
        assert_eq!(
            (e.verdict, e.reason.as_deref()),
            (Verdict::Unsupported, Some("no ids"))
        );
        assert_eq!(
            matrix.expectation(BackendKind::Nats, Check::Fanout).verdict,
            Verdict::Pass
        );
        assert_eq!(
            matrix.expectation(BackendKind::Redis, Check::Dedup).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases = [
            (
                "[nats.dedup]\nverdict = \"maybe\"\n",
                "x.toml:2:11: nats.dedup.verdict: unknown verdict 'maybe'",
            ),
            (
                "[nats.dedupe]\nverdict = \"fail\"\n",
                "x.toml:1:7: nats.dedupe: unknown check 'dedupe'",
            ),
            (
                "[pulsar.dedup]\nverdict = \"fail\"\n",
                "x.toml:1:2: pulsar: unknown backend 'pulsar'",
            ),
            (
                "[nats.dedup]\nverdict = \"fail\"\n",
                "nats.dedup: an expected `FAIL` needs a `reason`",
            ),
            (
                "[nats.dedup]\nverdict = \"fail\"\nreason = \"x\"\nwhy = 1\n",
                "x.toml:4:1: nats.dedup.why: unknown key `why`",
            ),
            (
                "[reference.dedup]\nverdict = \"unsupported\"\nreason = \"x\"\n",
                "reference.dedup: the reference broker is the definition",
            ),
            (
                "[nats.dedup]\nverdict = \"error\"\nreason = \"x\"\n",
                "nats.dedup.verdict: `error` cannot be expected",
            ),
            ("[nats.dedup\n", "x.toml:1:"),
        ];
        for (source, wanted) in cases {
            let err = ExpectedMatrix::parse(source, "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{source:?}: {err}");
        }
    }
}
