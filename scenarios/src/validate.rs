//! The rules a scenario must follow to be runnable, each broken rule reported with the TOML
//! key path it is about.

use std::time::Duration;

use crate::model::{CatchUp, Delivery, KeyDistribution, MessageSize, Scenario, Workload};
use crate::schedule::Schedule;
use crate::units::format_duration;
use crate::{MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE};

/// A broken rule: the key path (`workload[1].rate`, as written in TOML) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl Violation {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

type Checked = Result<(), Violation>;

/// Checks every rule; the first broken one is returned.
pub(crate) fn check(scenario: &Scenario) -> Checked {
    brokerbench_faults::check_all(&scenario.faults, scenario.duration).map_err(|(i, e)| {
        let key = e.key.map_or_else(String::new, |k| format!(".{k}"));
        Violation::new(format!("fault[{i}]{key}"), e.message)
    })?;
    check_name("name", &scenario.name, "._-")?;
    if scenario.description.contains('\n') {
        return Err(Violation::new(
            "description",
            "the description must fit on one line (`brokerbench scenarios` lists it); explain details in comments",
        ));
    }
    if scenario.duration.is_zero() {
        return Err(Violation::new(
            "duration",
            "the measured duration must be longer than 0s",
        ));
    }
    if scenario.drain.is_zero() {
        return Err(Violation::new(
            "drain",
            "the drain deadline must be longer than 0s: messages still in flight at the last send need time to arrive",
        ));
    }
    if scenario.workloads.is_empty() {
        return Err(Violation::new(
            "workload",
            "a scenario needs at least one [[workload]] table",
        ));
    }
    for (i, workload) in scenario.workloads.iter().enumerate() {
        let at = format!("workload[{i}]");
        if let Some(first) = scenario.workloads[..i]
            .iter()
            .position(|w| w.name == workload.name)
        {
            return Err(Violation::new(
                format!("{at}.name"),
                format!(
                    "workload name `{}` is already used by workload[{first}]; topic names `<name>.<i>` must not collide",
                    workload.name
                ),
            ));
        }
        check_workload(&at, workload, scenario.duration)?;
    }
    Ok(())
}

fn check_name(path: &str, name: &str, allowed: &str) -> Checked {
    if name.is_empty() {
        return Err(Violation::new(path, "the name must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || allowed.contains(c)))
    {
        let shown: String = allowed.chars().map(|a| format!(" `{a}`")).collect();
        return Err(Violation::new(
            path,
            format!("the name `{name}` contains {c:?}; use ASCII letters, digits and{shown}"),
        ));
    }
    Ok(())
}

fn at_least_one(path: String, value: u32, what: &str) -> Checked {
    if value == 0 {
        return Err(Violation::new(
            path,
            format!("{what} must be at least 1 (got 0)"),
        ));
    }
    Ok(())
}

fn check_workload(at: &str, w: &Workload, duration: Duration) -> Checked {
    // Dots are left out: they separate the group name from the topic index.
    check_name(&format!("{at}.name"), &w.name, "_-")?;
    at_least_one(format!("{at}.topics"), w.topics, "the number of topics")?;
    at_least_one(
        format!("{at}.producers_per_topic"),
        w.producers_per_topic,
        "producers_per_topic",
    )?;
    // subscribers_per_topic = 0 (and no late subscribers) is a publish-only workload: it
    // measures publishing alone, as a broker's own producer benchmark does.
    check_size(&format!("{at}.size"), &w.size)?;
    if let Some(keys) = &w.keys {
        at_least_one(format!("{at}.keys.count"), keys.count, "the number of keys")?;
        if let KeyDistribution::Zipf { exponent } = keys.distribution {
            if !(exponent.is_finite() && exponent > 0.0) {
                return Err(Violation::new(
                    format!("{at}.keys.exponent"),
                    format!("the zipf exponent must be a number greater than 0 (got {exponent})"),
                ));
            }
        }
    }
    check_schedule(at, &w.schedule)?;
    if let Some(late) = &w.late_subscribers {
        let path = |key: &str| format!("{at}.late_subscribers.{key}");
        at_least_one(path("count"), late.count, "the number of late subscribers")?;
        if late.join_after >= duration {
            return Err(Violation::new(
                path("join_after"),
                format!(
                    "late subscribers join after {} but the measured phase lasts {}: they would never join",
                    format_duration(late.join_after),
                    format_duration(duration)
                ),
            ));
        }
        if let CatchUp::LastSeen { offline_after } = late.from {
            if offline_after >= late.join_after {
                return Err(Violation::new(
                    path("offline_after"),
                    format!(
                        "late subscribers go offline at {} and rejoin at {}: offline_after must come before join_after",
                        format_duration(offline_after),
                        format_duration(late.join_after)
                    ),
                ));
            }
        }
        if late.from.replays() && !w.cache {
            return Err(Violation::new(
                path("from"),
                format!(
                    "from = \"{}\" replays the broker's cache, but this workload sends with cache = false, so \
                     there is nothing to catch up from; set cache = true or use from = \"latest\"",
                    late.from.as_str()
                ),
            ));
        }
        if late.from.replays() && w.delivery == Delivery::One && w.subscribers_per_topic > 0 {
            return Err(Violation::new(
                path("from"),
                format!(
                    "from = \"{}\" replays the broker's cache, but under delivery = \"one\" a message handed \
                     to a subscriber is never cached, so there is nothing to catch up from; use \
                     delivery = \"all\", subscribers_per_topic = 0 or from = \"latest\"",
                    late.from.as_str()
                ),
            ));
        }
    }
    if let Some(reply) = &w.reply {
        check_bytes(&format!("{at}.reply.size"), reply.size)?;
        at_least_one(
            format!("{at}.reply.count"),
            reply.count,
            "the number of receipts per message",
        )?;
    }
    Ok(())
}

fn check_bytes(path: &str, bytes: u32) -> Checked {
    if bytes < MIN_MESSAGE_SIZE {
        return Err(Violation::new(
            path,
            format!(
                "{bytes} bytes is below the minimum message size of {MIN_MESSAGE_SIZE} bytes, \
                 which the envelope (run id, producer, sequence, send time) needs"
            ),
        ));
    }
    if bytes > MAX_MESSAGE_SIZE {
        return Err(Violation::new(
            path,
            format!(
                "{bytes} bytes is above the maximum message size of {MAX_MESSAGE_SIZE} bytes \
                 (the reference broker's line limit, with room for framing)"
            ),
        ));
    }
    Ok(())
}

fn check_size(path: &str, size: &MessageSize) -> Checked {
    match size {
        MessageSize::Fixed(bytes) => check_bytes(path, *bytes),
        MessageSize::Uniform { min, max } => {
            check_bytes(&format!("{path}.min"), *min)?;
            check_bytes(&format!("{path}.max"), *max)?;
            if min > max {
                return Err(Violation::new(
                    format!("{path}.min"),
                    format!("min ({min} bytes) is larger than max ({max} bytes)"),
                ));
            }
            Ok(())
        }
        MessageSize::Weighted { sizes } => {
            if sizes.is_empty() {
                return Err(Violation::new(
                    format!("{path}.sizes"),
                    "a weighted size needs at least one [bytes, weight] pair",
                ));
            }
            for (k, (bytes, weight)) in sizes.iter().enumerate() {
                check_bytes(&format!("{path}.sizes[{k}]"), *bytes)?;
                if *weight == 0 {
                    return Err(Violation::new(
                        format!("{path}.sizes[{k}]"),
                        "a weight must be at least 1 (leave out sizes that never occur)",
                    ));
                }
            }
            Ok(())
        }
    }
}

fn rate_ok(path: String, rate: f64, zero_allowed: bool) -> Checked {
    let ok = rate.is_finite() && (rate > 0.0 || (zero_allowed && rate == 0.0));
    if !ok {
        let bound = if zero_allowed {
            "0 or more"
        } else {
            "greater than 0"
        };
        return Err(Violation::new(
            path,
            format!("the rate must be {bound} msgs/s (got {rate})"),
        ));
    }
    Ok(())
}

fn check_schedule(at: &str, schedule: &Schedule) -> Checked {
    match schedule {
        Schedule::Constant { rate } => rate_ok(format!("{at}.rate"), *rate, false),
        Schedule::Steps { steps } => {
            let path = format!("{at}.schedule.steps");
            if steps.is_empty() {
                return Err(Violation::new(
                    path,
                    "a step schedule needs at least one [rate, \"duration\"] step",
                ));
            }
            for (k, step) in steps.iter().enumerate() {
                rate_ok(format!("{path}[{k}][0]"), step.rate, true)?;
                if step.duration.is_zero() {
                    return Err(Violation::new(
                        format!("{path}[{k}][1]"),
                        "a step must last longer than 0s",
                    ));
                }
            }
            if steps.iter().all(|s| s.rate == 0.0) {
                return Err(Violation::new(
                    path,
                    "every step has rate 0: nothing would be sent",
                ));
            }
            Ok(())
        }
        Schedule::Ramp { from, to, over } => {
            let path = format!("{at}.schedule.ramp");
            rate_ok(format!("{path}.from"), *from, true)?;
            rate_ok(format!("{path}.to"), *to, true)?;
            if *from == 0.0 && *to == 0.0 {
                return Err(Violation::new(
                    path,
                    "a ramp from 0 to 0 msgs/s sends nothing",
                ));
            }
            if over.is_zero() {
                return Err(Violation::new(
                    format!("{path}.over"),
                    "a ramp must last longer than 0s",
                ));
            }
            Ok(())
        }
        Schedule::Bursts { every, size } => {
            if every.is_zero() {
                return Err(Violation::new(
                    format!("{at}.bursts.every"),
                    "the time between bursts must be longer than 0s",
                ));
            }
            at_least_one(format!("{at}.bursts.size"), *size, "the burst size")
        }
    }
}
