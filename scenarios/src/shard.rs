//! Sharded runs: one scenario split across several processes by whole topics.
//!
//! Shard `I` of `N` (indices from 0, as Kubernetes' `JOB_COMPLETION_INDEX`) runs the
//! topics whose position in the scenario's topic list is `I` modulo `N`, each topic with
//! **all** its producers and subscribers. So every message is published and received in
//! one process, on one clock: end-to-end latency never crosses machines and no clock skew
//! can enter it.
//!
//! The shards' plans are a partition of the single-process plan: every producer keeps the
//! schedule it has there (its share of its group's rate, its stagger, its part of a
//! burst), so the shards' offered rates and message counts add up to the scenario's
//! exactly, whatever `N` is. Nothing divides a rate by the number of shards, so no
//! rounding can lose or add messages (the trap of OpenMessaging Benchmark's issue #171).
//!
//! A workload with fewer topics than shards cannot be split this way: some shards would
//! carry none of its load while one carries a whole topic's. Splitting a topic's
//! producers and consumers across processes would put the two ends of a message on two
//! clocks, so such a split is refused ([`ShardError::TooFewTopics`]) rather than measured
//! with skewed latencies. Since every workload then has at least `N` topics, every shard
//! gets at least one topic of every workload.

use std::fmt;
use std::str::FromStr;

use brokerbench_bench::plan::Plan;

use crate::model::Scenario;

/// Which part of a sharded run a process runs: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// From 0 to `count - 1`.
    pub index: u32,
    /// Number of shards of the run, at least 1.
    pub count: u32,
}

/// Why a shard identity or a split is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// `--shard` text that is not `I/N` with `0 <= I < N`.
    #[error("invalid shard `{text}`: {reason} (expected I/N with 0 <= I < N, e.g. 0/3)")]
    Syntax {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A workload has fewer topics than there are shards.
    #[error(
        "scenario `{scenario}` cannot be split by topic into {shards} shards: its workload `{workload}` has {topics} topic(s), fewer than the {shards} shards (a topic's publishers and subscribers stay in one process so latency is measured on one clock); run at most {topics} shard(s), or give the workload more topics"
    )]
    TooFewTopics {
        /// The scenario.
        scenario: String,
        /// The workload with too few topics.
        workload: String,
        /// Its topic count.
        topics: u32,
        /// The requested shard count.
        shards: u32,
    },
}

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`ShardError::Syntax`] when `count` is 0 or `index >= count`.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        let text = format!("{index}/{count}");
        if count == 0 {
            return Err(ShardError::Syntax {
                text,
                reason: "the shard count must be at least 1".into(),
            });
        }
        if index >= count {
            return Err(ShardError::Syntax {
                text,
                reason: format!(
                    "the index counts from 0, so it must be below the shard count {count}"
                ),
            });
        }
        Ok(Self { index, count })
    }

    /// Whether this is the whole run (`0/1`).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// Parses `I/N`, e.g. `0/3`.
    fn from_str(text: &str) -> Result<Self, ShardError> {
        let syntax = |reason: &str| ShardError::Syntax {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (index, count) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| syntax("no `/`"))?;
        let index = index
            .trim()
            .parse()
            .map_err(|_| syntax("the index is not a whole number"))?;
        let count = count
            .trim()
            .parse()
            .map_err(|_| syntax("the shard count is not a whole number"))?;
        Shard::new(index, count).map_err(|err| match err {
            ShardError::Syntax { reason, .. } => syntax(&reason),
            other => other,
        })
    }
}

impl Scenario {
    /// Number of topics of the whole scenario, all workloads together.
    pub fn topic_count(&self) -> u64 {
        self.workloads.iter().map(|w| u64::from(w.topics)).sum()
    }

    /// Refuses a split into `shards` shards when a workload has fewer topics than that.
    ///
    /// # Errors
    /// [`ShardError::TooFewTopics`] naming the scenario, the workload and both counts.
    pub fn check_split(&self, shards: u32) -> Result<(), ShardError> {
        if shards <= 1 {
            return Ok(());
        }
        match self.workloads.iter().find(|w| w.topics < shards) {
            Some(w) => Err(ShardError::TooFewTopics {
                scenario: self.name.clone(),
                workload: w.name.clone(),
                topics: w.topics,
                shards,
            }),
            None => Ok(()),
        }
    }

    /// The plan of shard `shard` of a run with id `run_id`: the topics at positions
    /// `shard.index`, `shard.index + N`, ... of [`Scenario::plan`]'s list, each with all
    /// its clients and their unchanged schedules (see the module documentation).
    ///
    /// # Errors
    /// [`ShardError::TooFewTopics`] when the scenario cannot be split into `shard.count`.
    pub fn shard_plan(&self, run_id: &str, shard: Shard) -> Result<Plan, ShardError> {
        self.check_split(shard.count)?;
        let mut plan = self.plan(run_id);
        let count = shard.count as usize;
        let index = shard.index as usize;
        plan.topics = plan
            .topics
            .into_iter()
            .enumerate()
            .filter(|(position, _)| position % count == index)
            .map(|(_, topic)| topic)
            .collect();
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::builtin;

    #[test]
    fn parses_shards() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>().map(Shard::is_whole), Ok(true));
        for bad in ["3/3", "1/0", "a/2", "1", "-1/2", ""] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert!(
            "3/3"
                .parse::<Shard>()
                .unwrap_err()
                .to_string()
                .contains("below the shard count 3")
        );
    }

    /// The union of the shards' plans is the single-process plan, topic for topic and
    /// producer for producer, for counts that do and do not divide the topics.
    #[test]
    fn shards_partition_the_plan_exactly() {
        for name in builtin::names() {
            let scenario = builtin::get(name).unwrap().with_rate(997.0).unwrap();
            let whole = scenario.plan("r");
            let topics = scenario.workloads.iter().map(|w| w.topics).min().unwrap();
            for count in 1..=topics.min(7) {
                let mut union = Vec::new();
                for index in 0..count {
                    let plan = scenario.shard_plan("r", Shard::new(index, count).unwrap());
                    let plan = plan.unwrap();
                    assert!(!plan.topics.is_empty(), "{name} {index}/{count}");
                    union.extend(plan.topics);
                }
                assert_eq!(union.len(), whole.topics.len(), "{name} /{count}");
                for topic in &whole.topics {
                    let mine: Vec<_> = union.iter().filter(|t| t.name == topic.name).collect();
                    assert_eq!(mine.len(), 1, "{name}: {} in one shard", topic.name);
                    assert_eq!(mine[0].producers.len(), topic.producers.len());
                    assert_eq!(mine[0].subscribers.len(), topic.subscribers.len());
                    for (a, b) in mine[0].producers.iter().zip(&topic.producers) {
                        assert_eq!(a.rate, b.rate);
                        assert_eq!(a.phase, b.phase);
                        assert_eq!(a.burst, b.burst);
                    }
                }
                // The offered rates add up to the scenario's (same producers, same order
                // of summation per shard, so compare with a relative tolerance of f64).
                let t = Duration::from_millis(1500);
                let sum: f64 = (0..count)
                    .map(|i| {
                        scenario
                            .shard_plan("r", Shard::new(i, count).unwrap())
                            .unwrap()
                            .offered_rate_at(t)
                    })
                    .sum();
                let want = whole.offered_rate_at(t);
                assert!((sum - want).abs() <= want * 1e-12, "{name} /{count}");
            }
        }
    }

    #[test]
    fn refuses_a_workload_with_fewer_topics_than_shards() {
        let scenario = builtin::get("work-queue").unwrap();
        let err = scenario
            .shard_plan("r", Shard::new(0, 5).unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            ShardError::TooFewTopics {
                scenario: "work-queue".into(),
                workload: "jobs".into(),
                topics: 4,
                shards: 5
            }
        );
        assert!(err.to_string().contains("scenario `work-queue`"));
        assert!(
            err.to_string()
                .contains("4 topic(s), fewer than the 5 shards")
        );
        assert!(scenario.shard_plan("r", Shard::new(3, 4).unwrap()).is_ok());
    }
}
