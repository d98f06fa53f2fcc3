//! Expanding a scenario into the engine's concrete [`Plan`]: every group of topics into
//! named topics, every "N producers at R msgs/s for the group" into producers with their
//! own share of the schedule.

use std::time::Duration;

use brokerbench_adapters::{DeliveryMode, StartPosition};
use brokerbench_bench::plan::{
    DEFAULT_MAX_IN_FLIGHT, Join, KeyDistribution as PlanKeys, Plan, ProducerPlan, RateSchedule,
    RateSegment, ReplyPlan, SizeDistribution, SubscriberPlan, TopicPlan,
};

use crate::model::{CatchUp, Delivery, KeyDistribution, MessageSize, Scenario, Workload};
use crate::schedule::Schedule;

impl Scenario {
    /// The concrete plan of a run of this scenario with id `run_id`.
    pub fn plan(&self, run_id: &str) -> Plan {
        let mut topics = Vec::new();
        for workload in &self.workloads {
            let producers_in_group =
                u64::from(workload.topics) * u64::from(workload.producers_per_topic);
            let mut producer_index = 0u64;
            for t in 0..workload.topics {
                let producers = (0..workload.producers_per_topic)
                    .map(|_| {
                        let plan = producer_plan(workload, producer_index, producers_in_group);
                        producer_index += 1;
                        plan
                    })
                    .collect();
                let mut subscribers: Vec<SubscriberPlan> = (0..workload.subscribers_per_topic)
                    .map(|_| SubscriberPlan {
                        join: Join::AtStart,
                        ack: workload.ack,
                        reply: reply_plan(workload),
                    })
                    .collect();
                if let Some(late) = &workload.late_subscribers {
                    let join_at = self.warmup + late.join_after;
                    let join = match &late.from {
                        CatchUp::LastSeen { offline_after } => Join::Returning {
                            offline_after: self.warmup + *offline_after,
                            rejoin_after: join_at,
                        },
                        CatchUp::Beginning => Join::Late {
                            after: join_at,
                            from: StartPosition::Beginning,
                        },
                        CatchUp::Latest => Join::Late {
                            after: join_at,
                            from: StartPosition::Latest,
                        },
                    };
                    subscribers.extend((0..late.count).map(|_| SubscriberPlan {
                        join,
                        ack: workload.ack,
                        reply: reply_plan(workload),
                    }));
                }
                topics.push(TopicPlan {
                    name: workload.topic_name(t),
                    delivery: match workload.delivery {
                        Delivery::All => DeliveryMode::All,
                        Delivery::One => DeliveryMode::One,
                    },
                    cache: workload.cache,
                    producers,
                    subscribers,
                });
            }
        }
        Plan {
            run_id: run_id.to_string(),
            warmup: self.warmup,
            duration: self.duration,
            drain: self.drain,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            topics,
        }
    }
}

fn reply_plan(workload: &Workload) -> Option<ReplyPlan> {
    workload.reply.as_ref().map(|r| ReplyPlan {
        size: r.size as usize,
        count: r.count,
    })
}

/// Producer `index` of `count` in the group gets `1/count` of the group's schedule; in a
/// burst schedule the group's burst is dealt out among the producers.
fn producer_plan(workload: &Workload, index: u64, count: u64) -> ProducerPlan {
    let share = 1.0 / count.max(1) as f64;
    // Stagger the group's producers so its aggregate load is evenly spaced: producer k
    // starts k/R after the first (R = the group's initial rate). Bursts stay together.
    let group_rate = workload.schedule.initial_rate();
    let phase = match workload.schedule {
        Schedule::Bursts { .. } => Duration::ZERO,
        _ if group_rate > 0.0 => Duration::from_secs_f64(index as f64 / group_rate),
        _ => Duration::ZERO,
    };
    let (rate, burst) = match &workload.schedule {
        Schedule::Constant { rate } => (RateSchedule::constant(rate * share), 1),
        Schedule::Steps { steps } => (
            RateSchedule {
                segments: steps
                    .iter()
                    .map(|s| RateSegment {
                        duration: s.duration,
                        from: s.rate * share,
                        to: s.rate * share,
                    })
                    .collect(),
            },
            1,
        ),
        Schedule::Ramp { from, to, over } => (
            RateSchedule {
                segments: vec![RateSegment {
                    duration: *over,
                    from: from * share,
                    to: to * share,
                }],
            },
            1,
        ),
        Schedule::Bursts { every, size } => {
            let size = u64::from(*size);
            let mine = size / count.max(1) + u64::from(index < size % count.max(1));
            let rate = mine as f64 / every.as_secs_f64().max(f64::MIN_POSITIVE);
            (RateSchedule::constant(rate), mine.max(1) as u32)
        }
    };
    ProducerPlan {
        rate,
        size: match &workload.size {
            MessageSize::Fixed(n) => SizeDistribution::Fixed(*n as usize),
            MessageSize::Uniform { min, max } => SizeDistribution::Uniform {
                min: *min as usize,
                max: *max as usize,
            },
            MessageSize::Weighted { sizes } => SizeDistribution::Weighted(
                sizes
                    .iter()
                    .map(|(bytes, weight)| (*bytes as usize, f64::from(*weight)))
                    .collect(),
            ),
        },
        keys: workload.keys.as_ref().map(|k| PlanKeys {
            count: k.count,
            zipf_exponent: match k.distribution {
                KeyDistribution::Uniform => None,
                KeyDistribution::Zipf { exponent } => Some(exponent),
            },
        }),
        burst,
        phase,
    }
}
