//! The flags of `brokerbench run` that make one process a shard of a larger run:
//! `--shard`, `--run-id`, `--start-at`, and what they put in the record.

use std::time::SystemTime;

use brokerbench_bench::Plan;
use brokerbench_bench::RunOutcome;
use brokerbench_results::{RunRecord, ShardInfo, StartTiming};
use brokerbench_scenarios::{Scenario, Shard};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Environment variable holding the shard count; the index comes from
/// `JOB_COMPLETION_INDEX`, which Kubernetes sets in every pod of an Indexed Job.
pub const SHARDS_ENV: &str = "BROKERBENCH_SHARDS";
/// Kubernetes' index of a pod in an Indexed Job (from 0).
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Longest run id: it goes into every topic name, and broker names have limits.
const MAX_RUN_ID: usize = 48;

/// Flags of a sharded or coordinated run.
#[derive(Debug, Clone, clap::Args)]
pub struct ShardArgs {
    /// Run only shard I of N (I from 0 to N-1) of the scenario: the topics at positions
    /// I, I+N, I+2N, ... with all their publishers and subscribers, at their full share
    /// of the rate, so the shards' loads add up exactly to the scenario's and every
    /// latency is measured in one process. A workload with fewer topics than N is
    /// refused. Default: JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job) of
    /// BROKERBENCH_SHARDS, when BROKERBENCH_SHARDS is set.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// The run id, the same for every shard of a run ([a-z0-9-], at most 48
    /// characters). Without it, a sharded run derives it from --start-at and the
    /// scenario's fingerprint (so all shards agree) and refuses to start without
    /// --start-at; a whole run gets a fresh one.
    #[arg(long, env = "BROKERBENCH_RUN_ID", value_name = "ID")]
    run_id: Option<String>,
    /// Begin the measured phase at this instant (RFC 3339, e.g. 2026-12-06T21:00:00Z):
    /// connect, set up, start the warm-up that long before it, then measure. A process
    /// not set up in time exits 3 without measuring. The record keeps the actual start
    /// offset. Clocks of the machines must be in sync (NTP).
    #[arg(long, env = "BROKERBENCH_START_AT", value_name = "TIME", value_parser = parse_start)]
    start_at: Option<OffsetDateTime>,
}

fn parse_start(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|err| {
        format!("`{text}` is not an RFC 3339 time such as 2026-12-06T21:00:00Z: {err}")
    })
}

/// The resolved identity of this process in its run.
#[derive(Debug, Clone)]
pub struct Coordination {
    /// The shard, if this is one.
    pub shard: Option<Shard>,
    /// The run id shared by every shard (the record's `run_id`).
    pub run_id: String,
    /// The start instant, if one was given.
    pub start_at: Option<OffsetDateTime>,
}

impl ShardArgs {
    /// Resolves the flags and the environment for `scenario`.
    ///
    /// # Errors
    /// A message naming the flag or variable that is wrong, or the scenario that cannot
    /// be split.
    pub fn resolve(&self, scenario: &Scenario) -> Result<Coordination, String> {
        let shard = match self.shard {
            Some(shard) => Some(shard),
            None => shard_from_env()?,
        };
        if let Some(shard) = shard {
            scenario
                .check_split(shard.count)
                .map_err(|e| e.to_string())?;
        }
        let run_id = match (&self.run_id, shard, self.start_at) {
            (Some(id), _, _) => check_run_id(id)?,
            (None, Some(_), Some(at)) => derived_run_id(at, scenario)?,
            (None, Some(shard), None) => {
                return Err(format!(
                    "shard {shard} needs the run id its sibling shards use: give --run-id (or BROKERBENCH_RUN_ID), or --start-at (or BROKERBENCH_START_AT), from which every shard derives the same run id"
                ));
            }
            (None, None, _) => crate::run::run_id(),
        };
        Ok(Coordination {
            shard,
            run_id,
            start_at: self.start_at,
        })
    }
}

/// `BROKERBENCH_SHARDS` with `JOB_COMPLETION_INDEX`.
fn shard_from_env() -> Result<Option<Shard>, String> {
    let Some(count) = std::env::var(SHARDS_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let count: u32 = count.trim().parse().map_err(|_| {
        format!("{SHARDS_ENV}=`{count}` is not a shard count (a whole number from 1)")
    })?;
    let index = std::env::var(INDEX_ENV).map_err(|_| {
        format!(
            "{SHARDS_ENV}={count} is set but {INDEX_ENV} is not: it gives this shard's index (from 0; a Kubernetes Indexed Job sets it), or pass --shard I/{count}"
        )
    })?;
    let index: u32 = index
        .trim()
        .parse()
        .map_err(|_| format!("{INDEX_ENV}=`{index}` is not a shard index (from 0)"))?;
    Shard::new(index, count)
        .map(Some)
        .map_err(|e| format!("{INDEX_ENV}={index} with {SHARDS_ENV}={count}: {e}"))
}

/// A run id is part of every topic name: lowercase letters, digits and `-` only.
fn check_run_id(id: &str) -> Result<String, String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_RUN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "run id `{id}` must be 1 to {MAX_RUN_ID} characters of a-z, 0-9 and `-` (it goes into every topic name)"
        ))
    }
}

/// `<start yyyymmddThhmmss>-<8 hex digits of the scenario fingerprint>`: the same in
/// every shard given the same start instant and scenario.
fn derived_run_id(at: OffsetDateTime, scenario: &Scenario) -> Result<String, String> {
    let hash = scenario
        .fingerprint()
        .map_err(|e| format!("cannot fingerprint the scenario: {e}"))?;
    let at = at.to_offset(time::UtcOffset::UTC);
    Ok(format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}-{}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        &hash["sha256:".len().."sha256:".len() + 8]
    ))
}

impl Coordination {
    /// The plan this process runs. A shard's engine runs under `<run id>-s<index>`, so
    /// the names it creates (receipt inboxes, topics) never meet another shard's.
    ///
    /// # Errors
    /// When the scenario cannot be split (checked already by [`ShardArgs::resolve`]).
    pub fn plan(&self, scenario: &Scenario) -> Result<Plan, String> {
        match self.shard {
            None => Ok(scenario.plan(&self.run_id)),
            Some(shard) => scenario
                .shard_plan(&format!("{}-s{}", self.run_id, shard.index), shard)
                .map_err(|e| e.to_string()),
        }
    }

    /// The wall-clock instant for the engine.
    pub fn start_instant(&self) -> Option<SystemTime> {
        self.start_at.map(SystemTime::from)
    }

    /// One line for the terminal: which shard, how many topics, which start.
    pub fn describe(&self, plan: &Plan, scenario: &Scenario) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(shard) = self.shard {
            parts.push(format!(
                "shard {shard} of run {}: {} of the scenario's {} topics, offering {:.1} msgs/s of {:.1}",
                self.run_id,
                plan.topics.len(),
                scenario.topic_count(),
                plan.offered_rate_at(std::time::Duration::ZERO),
                scenario.plan(&self.run_id).offered_rate_at(std::time::Duration::ZERO),
            ));
        }
        if let Some(at) = self.start_at.and_then(|t| t.format(&Rfc3339).ok()) {
            parts.push(format!("measured phase starts at {at}"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Writes the shard identity and the start timing into `record`.
    pub fn annotate(
        &self,
        record: &mut RunRecord,
        plan: &Plan,
        scenario: &Scenario,
        outcome: &Timing,
    ) {
        record.shard = self.shard.map(|s| ShardInfo {
            index: s.index,
            count: s.count,
            topics: plan.topics.len() as u64,
            scenario_topics: scenario.topic_count(),
        });
        record.start = Some(StartTiming {
            measured_from: outcome.measured_from,
            requested: self.start_at,
            offset_s: self
                .start_at
                .map(|at| (outcome.measured_from - at).as_seconds_f64()),
            slack_s: outcome.slack.map(|s| s.as_secs_f64()),
        });
    }
}

/// What the engine said about its start, kept before the outcome is consumed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wall-clock start of the measured phase.
    pub measured_from: OffsetDateTime,
    /// Time left before the warm-up, with a start instant.
    pub slack: Option<std::time::Duration>,
}

impl Timing {
    /// The timing of `outcome`.
    pub fn of(outcome: &RunOutcome) -> Self {
        Self {
            measured_from: outcome.measured_from,
            slack: outcome.slack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_checked_and_derived_alike() {
        assert!(check_run_id("nightly-42").is_ok());
        for bad in ["", "Upper", "a.b", "a b", &"x".repeat(49)] {
            assert!(check_run_id(bad).unwrap_err().contains("a-z, 0-9"), "{bad}");
        }
        let scenario = brokerbench_scenarios::builtin::get("group-chat").unwrap();
        let at = parse_start("2026-12-06T21:00:00+01:00").unwrap();
        let id = derived_run_id(at, &scenario).unwrap();
        assert!(id.starts_with("20261206t200000-"), "{id}");
        assert_eq!(id.len(), "20261206t200000-".len() + 8);
        assert_eq!(id, derived_run_id(at, &scenario.clone()).unwrap());
        assert!(check_run_id(&id).is_ok());
        assert!(parse_start("tomorrow").unwrap_err().contains("RFC 3339"));
    }
}
