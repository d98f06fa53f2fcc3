//! A record's place in a sharded run, its start timing, and the checks that a set of
//! shard records is exactly one whole run before [`merge`](crate::merge()) adds them up.
//!
//! A sharded run is one scenario split by topic across `N` processes (shards `0..N`),
//! all with the same run id and the same resolved scenario (its fingerprint,
//! `scenario_hash`). A set of records merges as a sharded run only when every one of
//! those holds; otherwise [`check_shard_set`] says which files do not belong together.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::record::{RunRecord, rfc3339_utc};

/// Which part of a sharded run a record measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Shard index, from 0 to `count - 1`.
    pub index: u32,
    /// Number of shards of the run.
    pub count: u32,
    /// Topics this shard ran (each with all its publishers and subscribers).
    pub topics: u64,
    /// Topics of the whole scenario.
    pub scenario_topics: u64,
}

/// When the measured phase began, and how that compares with the instant asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartTiming {
    /// Wall-clock start of the measured phase on this process's clock, RFC 3339 UTC.
    #[serde(with = "rfc3339_utc")]
    pub measured_from: OffsetDateTime,
    /// The start instant asked for (`--start-at`), RFC 3339 UTC; `null` without one.
    #[serde(default, with = "optional_rfc3339_utc")]
    pub requested: Option<OffsetDateTime>,
    /// `measured_from` minus `requested`, seconds (positive: late); `null` without
    /// `--start-at`.
    #[serde(default)]
    pub offset_s: Option<f64>,
    /// How long before the start of the warm-up the set-up was done, seconds: the
    /// margin the shard had; `null` without `--start-at`.
    #[serde(default)]
    pub slack_s: Option<f64>,
}

mod optional_rfc3339_utc {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339_utc::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::rfc3339_utc")] OffsetDateTime);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// Why a set of records is not one whole sharded run. Indices are positions in the
/// slice given to [`check_shard_set`]; [`ShardSetError::describe`] names them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardSetError {
    /// Some records are shards and some are not.
    #[error("{}", self.describe(&[]))]
    Mixed {
        /// A shard record.
        shard: usize,
        /// A record that is not a shard.
        whole: usize,
    },
    /// The shards carry different run ids.
    #[error("{}", self.describe(&[]))]
    RunIds {
        /// The first record.
        first: usize,
        /// The first record with another run id.
        other: usize,
    },
    /// The shards ran different resolved scenarios (or one has no fingerprint).
    #[error("{}", self.describe(&[]))]
    ScenarioHashes {
        /// The first record.
        first: usize,
        /// The first record with another fingerprint.
        other: usize,
    },
    /// The shards disagree on the number of shards.
    #[error("{}", self.describe(&[]))]
    Counts {
        /// The first record.
        first: usize,
        /// The first record with another count.
        other: usize,
    },
    /// The shards asked for different start instants.
    #[error("{}", self.describe(&[]))]
    StartTimes {
        /// The first record.
        first: usize,
        /// The first record with another start instant.
        other: usize,
    },
    /// One shard index appears twice.
    #[error("{}", self.describe(&[]))]
    Duplicate {
        /// The first record with that index.
        first: usize,
        /// The second one.
        other: usize,
    },
    /// Shards are missing.
    #[error("{}", self.describe(&[]))]
    Missing {
        /// The run id of the set.
        run_id: String,
        /// Number of shards of the run.
        count: u32,
        /// The indices given.
        given: Vec<u32>,
        /// The missing indices.
        missing: Vec<u32>,
    },
}

impl ShardSetError {
    /// The error in words, naming record `i` by `names[i]` (a file name) when given,
    /// else `run i`.
    pub fn describe(&self, names: &[String]) -> String {
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("run {i}"));
        match self {
            Self::Mixed { shard, whole } => format!(
                "{} is a shard of a sharded run but {} is not; merge the shards of one run only",
                name(*shard),
                name(*whole)
            ),
            Self::RunIds { first, other } => format!(
                "the shards belong to different runs: {} and {} carry different run ids",
                name(*first),
                name(*other)
            ),
            Self::ScenarioHashes { first, other } => format!(
                "the shards ran different scenarios: {} and {} have different scenario hashes (the resolved scenario, --rate and --duration included, must be the same)",
                name(*first),
                name(*other)
            ),
            Self::Counts { first, other } => format!(
                "the shards disagree on the number of shards: {} and {}",
                name(*first),
                name(*other)
            ),
            Self::StartTimes { first, other } => format!(
                "the shards were given different start instants (--start-at): {} and {}",
                name(*first),
                name(*other)
            ),
            Self::Duplicate { first, other } => format!(
                "the same shard appears twice: {} and {}",
                name(*first),
                name(*other)
            ),
            Self::Missing {
                run_id,
                count,
                given,
                missing,
            } => {
                let list = |l: &[u32]| {
                    l.iter()
                        .map(|i| format!("{i}/{count}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "run {run_id} has {count} shards but shard(s) {} are missing: the records given hold only {} (a sharded run merges only with every shard)",
                    list(missing),
                    list(given)
                )
            }
        }
    }
}

impl fmt::Display for ShardInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The whole run a set of shard records makes up.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSet {
    /// Number of shards.
    pub count: u32,
    /// The start instant they shared, if any.
    pub requested_start: Option<OffsetDateTime>,
}

/// Checks that `records` are exactly the shards `0..N` of one run: all shards, one run
/// id, one scenario hash, one shard count, one start instant, each index once.
/// `Ok(None)` when no record is a shard (a merge of concurrent whole runs).
///
/// # Errors
/// A [`ShardSetError`] naming the first records that do not fit.
pub fn check_shard_set(records: &[RunRecord]) -> Result<Option<ShardSet>, ShardSetError> {
    let shard_at = records.iter().position(|r| r.shard.is_some());
    let whole_at = records.iter().position(|r| r.shard.is_none());
    let (first, shard) = match (shard_at, whole_at) {
        (None, _) => return Ok(None),
        (Some(shard), Some(whole)) => return Err(ShardSetError::Mixed { shard, whole }),
        (Some(i), None) => (i, records[i].shard.as_ref().expect("a shard")),
    };
    let head = &records[first];
    let requested = |r: &RunRecord| r.start.as_ref().and_then(|s| s.requested);
    let differs = |f: &dyn Fn(&RunRecord) -> bool| records.iter().position(|r| !f(r));
    if let Some(other) = differs(&|r| r.run_id == head.run_id) {
        return Err(ShardSetError::RunIds { first, other });
    }
    if let Some(other) =
        differs(&|r| r.scenario_hash.is_some() && r.scenario_hash == head.scenario_hash)
    {
        return Err(ShardSetError::ScenarioHashes { first, other });
    }
    if let Some(other) = differs(&|r| r.shard.as_ref().map(|s| s.count) == Some(shard.count)) {
        return Err(ShardSetError::Counts { first, other });
    }
    if let Some(other) = differs(&|r| requested(r) == requested(head)) {
        return Err(ShardSetError::StartTimes { first, other });
    }
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let index = r.shard.as_ref().map_or(0, |s| s.index);
        if let Some(&earlier) = seen.get(&index) {
            return Err(ShardSetError::Duplicate {
                first: earlier,
                other: i,
            });
        }
        seen.insert(index, i);
    }
    let missing: Vec<u32> = (0..shard.count).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(ShardSetError::Missing {
            run_id: head.run_id.clone(),
            count: shard.count,
            given: seen.keys().copied().collect(),
            missing,
        });
    }
    Ok(Some(ShardSet {
        count: shard.count,
        requested_start: requested(head),
    }))
}

/// How many whole seconds after the earliest measured start each record's measured
/// phase began (0 for records without start timing or with a shared `--start-at`):
/// interval `k` of record `i` is interval `k + shift[i]` of the merged series.
pub fn interval_shifts(records: &[RunRecord], set: Option<&ShardSet>) -> Vec<usize> {
    let starts: Option<Vec<OffsetDateTime>> = records
        .iter()
        .map(|r| r.start.as_ref().map(|s| s.measured_from))
        .collect();
    match (starts, set) {
        (Some(starts), Some(set)) if set.requested_start.is_none() => {
            let earliest = starts.iter().min().copied();
            starts
                .iter()
                .map(|s| {
                    let ahead = earliest.map_or(0.0, |e| (*s - e).as_seconds_f64());
                    ahead.round().max(0.0) as usize
                })
                .collect()
        }
        _ => vec![0; records.len()],
    }
}

/// Fills in what a merged sharded run says about itself: the scenario hash, the shared
/// start instant (the latest shard's offset), and a note naming the shards.
pub fn annotate_merged(records: &[RunRecord], set: &ShardSet, merged: &mut RunRecord) {
    let Some(head) = records.first() else {
        return;
    };
    merged.scenario_hash = head.scenario_hash.clone();
    merged.shard = None;
    merged.start = records
        .iter()
        .filter_map(|r| r.start.clone())
        .max_by(|a, b| a.measured_from.cmp(&b.measured_from))
        .map(|latest| StartTiming {
            measured_from: latest.measured_from,
            requested: set.requested_start,
            offset_s: latest.offset_s,
            slack_s: records
                .iter()
                .filter_map(|r| r.start.as_ref().and_then(|s| s.slack_s))
                .reduce(f64::min),
        });
    let (mut names, mut lines) = (Vec::new(), Vec::new());
    let mut sorted: Vec<&RunRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.shard.as_ref().map_or(0, |s| s.index));
    for r in sorted {
        if let Some(s) = &r.shard {
            names.push(s.to_string());
            let offset = r
                .start
                .as_ref()
                .and_then(|t| t.offset_s)
                .map_or(String::new(), |o| {
                    format!(", start offset {:+.3} ms", o * 1e3)
                });
            lines.push(format!(
                "shard {s}: {} topic(s), {} published{offset}",
                s.topics, r.figures.volume.published
            ));
        }
    }
    merged.notes.insert(
        0,
        format!(
            "sharded run {} of {} shards ({}) merged exactly: every shard present once, same run id and scenario hash; {}",
            head.run_id,
            set.count,
            names.join(", "),
            match set.requested_start {
                Some(_) => "intervals aligned on the shared --start-at instant",
                None => "no --start-at: intervals aligned on each shard's measured start, to the nearest second",
            }
        ),
    );
    for (i, line) in lines.into_iter().enumerate() {
        merged.notes.insert(1 + i, line);
    }
}
