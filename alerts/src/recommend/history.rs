//! Reading the history: the complete run records of one scenario on one backend under a
//! directory, and the files left out with the reason.

use std::path::{Path, PathBuf};

use brokerbench_results::RunRecord;

use super::RecommendError;

/// A file of the history that was not used, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedRun {
    /// The file.
    pub path: PathBuf,
    /// Why: `partial: <reason>`, or why it cannot be read.
    pub reason: String,
}

/// The run records of one scenario and backend found under a directory.
#[derive(Clone, Debug)]
pub struct History {
    /// The directory searched (recursively).
    pub dir: PathBuf,
    /// The scenario.
    pub scenario: String,
    /// The backend.
    pub backend: String,
    /// Complete records of that scenario and backend, oldest first.
    pub runs: Vec<(PathBuf, RunRecord)>,
    /// Records of that scenario and backend that were not used (partial runs), and
    /// `.json` files that are not readable run records.
    pub skipped: Vec<SkippedRun>,
    /// Readable records of other scenarios or backends (ignored).
    pub other: usize,
}

/// Reads every `*.json` under `dir` (recursively), keeping the complete records of
/// `scenario` on `backend`.
///
/// # Errors
/// [`RecommendError::Io`] when `dir` (or a directory below it) cannot be listed.
pub fn read_history(dir: &Path, scenario: &str, backend: &str) -> Result<History, RecommendError> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    files.sort();
    let mut history = History {
        dir: dir.to_owned(),
        scenario: scenario.to_owned(),
        backend: backend.to_owned(),
        runs: Vec::new(),
        skipped: Vec::new(),
        other: 0,
    };
    for path in files {
        match RunRecord::read(&path) {
            Err(e) => history.skipped.push(SkippedRun {
                path,
                reason: format!("not a readable run record: {e}"),
            }),
            Ok(r) if r.scenario_name != scenario || r.backend.name != backend => {
                history.other += 1;
            }
            Ok(r) if r.partial => history.skipped.push(SkippedRun {
                path,
                reason: format!(
                    "partial run: {}",
                    r.partial_reason.as_deref().unwrap_or("no reason given")
                ),
            }),
            // A shard carries part of the load; its run is the merged record.
            Ok(r) if r.shard.is_some() => history.skipped.push(SkippedRun {
                path,
                reason: format!(
                    "shard {} of run {}: part of the load (its merged record is the run)",
                    r.shard.as_ref().map_or(String::new(), ToString::to_string),
                    r.run_id
                ),
            }),
            Ok(r) => history.runs.push((path, r)),
        }
    }
    history.runs.sort_by_key(|(_, r)| r.started_at);
    Ok(history)
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RecommendError> {
    let io = |source| RecommendError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
