//! The TOML file format as written by people, and its translation into the model.
//!
//! These types mirror the file exactly (unknown keys are refused); the checks that need more
//! than one key at a time (exactly one of `rate`, `schedule`, `bursts`; `exponent` only with
//! zipf; a schedule that fits in the measured phase) happen in [`ScenarioFile::into_scenario`].

use serde::Deserialize;

use crate::model::{
    CatchUp, Delivery, KeyDistribution, Keys, LateSubscribers, MessageSize, Reply, Scenario,
    Workload,
};
use crate::schedule::{RateStep, Schedule};
use crate::units::{DurationText, RateValue, format_duration};
use crate::validate::Violation;
use crate::{DEFAULT_DRAIN, DEFAULT_WARMUP};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    warmup: Option<DurationText>,
    duration: DurationText,
    drain: Option<DurationText>,
    #[serde(default)]
    workload: Vec<WorkloadTable>,
    #[serde(default)]
    alerts: Vec<toml::Table>,
    #[serde(default)]
    fault: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadTable {
    name: String,
    topics: u32,
    producers_per_topic: u32,
    subscribers_per_topic: u32,
    delivery: Delivery,
    #[serde(default = "yes")]
    cache: bool,
    size: MessageSize,
    keys: Option<KeysTable>,
    rate: Option<RateValue>,
    schedule: Option<ScheduleTable>,
    bursts: Option<BurstsTable>,
    late_subscribers: Option<LateTable>,
    reply: Option<Reply>,
    #[serde(default)]
    ack: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysTable {
    count: u32,
    #[serde(default)]
    distribution: KeyDistributionName,
    exponent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KeyDistributionName {
    #[default]
    Uniform,
    Zipf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleTable {
    steps: Option<Vec<(RateValue, DurationText)>>,
    ramp: Option<RampTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RampTable {
    from: RateValue,
    to: RateValue,
    over: DurationText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstsTable {
    every: DurationText,
    size: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LateTable {
    count: u32,
    join_after: DurationText,
    from: CatchUpName,
    offline_after: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CatchUpName {
    LastSeen,
    Beginning,
    Latest,
}

impl ScenarioFile {
    /// The model, or the first rule about combinations of keys that the file breaks.
    pub(crate) fn into_scenario(self) -> Result<Scenario, Violation> {
        let duration = self.duration.0;
        let workloads = self
            .workload
            .into_iter()
            .enumerate()
            .map(|(i, w)| w.into_workload(&format!("workload[{i}]"), duration))
            .collect::<Result<_, _>>()?;
        Ok(Scenario {
            name: self.name,
            description: self.description,
            warmup: self.warmup.map_or(DEFAULT_WARMUP, |d| d.0),
            duration,
            drain: self.drain.map_or(DEFAULT_DRAIN, |d| d.0),
            workloads,
            alerts: self.alerts,
            faults: self
                .fault
                .into_iter()
                .enumerate()
                .map(|(i, table)| into_fault(&format!("fault[{i}]"), table))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// One `[[fault]]` table: every value as the text the fault reads (strings as they are,
/// integers in decimal).
fn into_fault(at: &str, table: toml::Table) -> Result<brokerbench_faults::FaultSpec, Violation> {
    let mut fields = Vec::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            other => {
                return Err(Violation::new(
                    format!("{at}.{key}"),
                    format!(
                        "expected a string (\"2s\", \"latency\") or an integer, found a {}",
                        other.type_str()
                    ),
                ));
            }
        };
        fields.push((key, text));
    }
    brokerbench_faults::FaultSpec::from_fields(fields).map_err(|e| {
        let path = e
            .key
            .as_ref()
            .map_or_else(|| at.to_owned(), |key| format!("{at}.{key}"));
        Violation::new(path, e.message)
    })
}

impl WorkloadTable {
    fn into_workload(self, at: &str, duration: std::time::Duration) -> Result<Workload, Violation> {
        let schedule = match (self.rate, self.schedule, self.bursts) {
            (Some(rate), None, None) => Schedule::Constant { rate: rate.0 },
            (None, Some(table), None) => table.into_schedule(at)?,
            (None, None, Some(bursts)) => Schedule::Bursts {
                every: bursts.every.0,
                size: bursts.size,
            },
            (None, None, None) => {
                return Err(Violation::new(
                    at,
                    "the workload has no pace: set one of `rate` (msgs/s), `schedule` (steps or ramp) or `bursts`",
                ));
            }
            (rate, schedule, _) => {
                // Point at the second of the keys given, in the order the format lists them.
                let second = if rate.is_some() && schedule.is_some() {
                    "schedule"
                } else {
                    "bursts"
                };
                return Err(Violation::new(
                    format!("{at}.{second}"),
                    "`rate`, `schedule` and `bursts` are alternatives: give exactly one of them",
                ));
            }
        };
        if let Some(length) = schedule.shaped_length() {
            if length > duration {
                let path = match schedule {
                    Schedule::Ramp { .. } => format!("{at}.schedule.ramp.over"),
                    _ => format!("{at}.schedule.steps"),
                };
                return Err(Violation::new(
                    path,
                    format!(
                        "the schedule lasts {} but the measured phase lasts {}: shorten the schedule or raise `duration`",
                        format_duration(length),
                        format_duration(duration)
                    ),
                ));
            }
        }
        let keys = self.keys.map(|k| k.into_keys(at)).transpose()?;
        let late_subscribers = self.late_subscribers.map(|l| l.into_late(at)).transpose()?;
        Ok(Workload {
            name: self.name,
            topics: self.topics,
            producers_per_topic: self.producers_per_topic,
            subscribers_per_topic: self.subscribers_per_topic,
            delivery: self.delivery,
            cache: self.cache,
            size: self.size,
            keys,
            schedule,
            late_subscribers,
            reply: self.reply,
            ack: self.ack,
        })
    }
}

impl ScheduleTable {
    fn into_schedule(self, at: &str) -> Result<Schedule, Violation> {
        match (self.steps, self.ramp) {
            (Some(steps), None) => Ok(Schedule::Steps {
                steps: steps
                    .into_iter()
                    .map(|(rate, duration)| RateStep {
                        rate: rate.0,
                        duration: duration.0,
                    })
                    .collect(),
            }),
            (None, Some(ramp)) => Ok(Schedule::Ramp {
                from: ramp.from.0,
                to: ramp.to.0,
                over: ramp.over.0,
            }),
            (Some(_), Some(_)) => Err(Violation::new(
                format!("{at}.schedule.ramp"),
                "a schedule has either `steps` or `ramp`, not both",
            )),
            (None, None) => Err(Violation::new(
                format!("{at}.schedule"),
                "a schedule needs `steps = [[rate, \"duration\"], …]` or `ramp = { from, to, over }`",
            )),
        }
    }
}

impl KeysTable {
    fn into_keys(self, at: &str) -> Result<Keys, Violation> {
        let distribution = match (self.distribution, self.exponent) {
            (KeyDistributionName::Uniform, None) => KeyDistribution::Uniform,
            (KeyDistributionName::Uniform, Some(_)) => {
                return Err(Violation::new(
                    format!("{at}.keys.exponent"),
                    "`exponent` only applies to distribution = \"zipf\"",
                ));
            }
            (KeyDistributionName::Zipf, exponent) => KeyDistribution::Zipf {
                exponent: exponent.unwrap_or(crate::DEFAULT_ZIPF_EXPONENT),
            },
        };
        Ok(Keys {
            count: self.count,
            distribution,
        })
    }
}

impl LateTable {
    fn into_late(self, at: &str) -> Result<LateSubscribers, Violation> {
        let from = match (self.from, self.offline_after) {
            (CatchUpName::LastSeen, offline_after) => CatchUp::LastSeen {
                offline_after: offline_after.map_or(std::time::Duration::ZERO, |d| d.0),
            },
            (_, Some(_)) => {
                return Err(Violation::new(
                    format!("{at}.late_subscribers.offline_after"),
                    "`offline_after` only applies to from = \"last_seen\" (a client that was online, left and returns)",
                ));
            }
            (CatchUpName::Beginning, None) => CatchUp::Beginning,
            (CatchUpName::Latest, None) => CatchUp::Latest,
        };
        Ok(LateSubscribers {
            count: self.count,
            join_after: self.join_after.0,
            from,
        })
    }
}
