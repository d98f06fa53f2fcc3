//! The concrete plan of a run: every topic with its producers and subscribers.
//!
//! A scenario (the `scenarios` crate) describes a workload by groups ("100 rooms of 2
//! members at 5 msgs/s each"); it expands into a [`Plan`], which names each topic,
//! producer and subscriber the engine will create.

use std::time::Duration;

use brokerbench_adapters::{DeliveryMode, StartPosition};
use serde::Serialize;

/// Default publishes in flight per producer: deep enough to saturate a broker over
/// loopback, shallow enough that a stall is visible at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Everything one run does.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Unique id of the run; part of every topic name and every envelope.
    pub run_id: String,
    /// Load before the measured phase, not recorded.
    pub warmup: Duration,
    /// The measured phase.
    pub duration: Duration,
    /// After the last send, how long deliveries may still arrive.
    pub drain: Duration,
    /// Publishes in flight per producer.
    pub max_in_flight: usize,
    /// The topics and their clients.
    pub topics: Vec<TopicPlan>,
}

/// One topic and the clients that use it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicPlan {
    /// Scenario-level name; the backend makes it unique per run.
    pub name: String,
    /// Fan-out or competing consumers.
    #[serde(serialize_with = "serialize_delivery")]
    pub delivery: DeliveryMode,
    /// Whether messages are kept for late subscribers (`cache:false` when not).
    pub cache: bool,
    /// Who publishes here.
    pub producers: Vec<ProducerPlan>,
    /// Who listens here.
    pub subscribers: Vec<SubscriberPlan>,
}

fn serialize_delivery<S: serde::Serializer>(d: &DeliveryMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

/// One publisher: its own connection, its own open-loop schedule.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerPlan {
    /// Messages per second over time (for this producer alone).
    pub rate: RateSchedule,
    /// Payload sizes.
    pub size: SizeDistribution,
    /// Message keys, if any.
    pub keys: Option<KeyDistribution>,
    /// Messages come in bursts of this many with the same due time (1 = evenly spaced).
    pub burst: u32,
    /// Shift of this producer's schedule. Producers of a group are staggered (producer k
    /// of a group offering R msgs/s starts k/R later), so the group's load is evenly
    /// spaced rather than arriving in synchronized clumps.
    pub phase: Duration,
}

/// One subscriber: its own connection.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberPlan {
    /// When it joins.
    pub join: Join,
    /// At-least-once: acknowledge every delivery explicitly.
    pub ack: bool,
    /// Receipts: answer each message with a small message to the sender's inbox.
    pub reply: Option<ReplyPlan>,
}

/// When a subscriber joins the topic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Join {
    /// Before the clock starts (every such subscriber is ready before the first send).
    AtStart,
    /// `after` into the run (warm-up included), from `from`.
    Late {
        /// Time since the start of the warm-up.
        after: Duration,
        /// Where it starts reading.
        #[serde(serialize_with = "serialize_start")]
        from: StartPosition,
    },
    /// A returning client: subscribed from the start, offline from `offline_after` until
    /// `rejoin_after` (both since the start of the warm-up), then subscribed again after
    /// the last sequence it received, so the broker replays what it missed. It is
    /// expected to receive every message, the missed ones included.
    Returning {
        /// When it drops off.
        offline_after: Duration,
        /// When it comes back.
        rejoin_after: Duration,
    },
}

fn serialize_start<S: serde::Serializer>(p: &StartPosition, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{p:?}").to_lowercase())
}

/// Receipts sent back by a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplyPlan {
    /// Payload size of each receipt.
    pub size: usize,
    /// Receipts per received message (e.g. 2: "delivered", then "read").
    pub count: u32,
}

/// Offered rate over the measured phase, in messages per second. The warm-up runs at the
/// rate of the first segment; after the last segment the last rate holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateSchedule {
    /// Consecutive segments.
    pub segments: Vec<RateSegment>,
}

/// A stretch of the schedule with a rate going linearly from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateSegment {
    /// How long it lasts.
    pub duration: Duration,
    /// Rate at its start (msgs/s).
    pub from: f64,
    /// Rate at its end (msgs/s).
    pub to: f64,
}

impl RateSchedule {
    /// A constant rate.
    pub fn constant(rate: f64) -> Self {
        Self {
            segments: vec![RateSegment {
                duration: Duration::from_secs(3600 * 24 * 365),
                from: rate,
                to: rate,
            }],
        }
    }

    /// The rate at `t` into the measured phase.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for seg in &self.segments {
            if t < start + seg.duration {
                let f =
                    (t - start).as_secs_f64() / seg.duration.as_secs_f64().max(f64::MIN_POSITIVE);
                return seg.from + (seg.to - seg.from) * f;
            }
            start += seg.duration;
        }
        self.segments.last().map_or(0.0, |s| s.to)
    }
}

/// Payload sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SizeDistribution {
    /// Always this size.
    Fixed(usize),
    /// Uniform between the bounds, inclusive.
    Uniform {
        /// Smallest.
        min: usize,
        /// Largest.
        max: usize,
    },
    /// One of several sizes with the given weights.
    Weighted(Vec<(usize, f64)>),
}

impl SizeDistribution {
    /// Draws a size.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        match self {
            SizeDistribution::Fixed(n) => *n,
            SizeDistribution::Uniform { min, max } => rng.usize(*min..=(*max).max(*min)),
            SizeDistribution::Weighted(choices) => {
                let total: f64 = choices.iter().map(|(_, w)| w.max(0.0)).sum();
                let mut x = rng.f64() * total;
                for (size, weight) in choices {
                    x -= weight.max(0.0);
                    if x <= 0.0 {
                        return *size;
                    }
                }
                choices.last().map_or(0, |(s, _)| *s)
            }
        }
    }
}

/// Message keys: one of `count` keys per message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyDistribution {
    /// Number of distinct keys.
    pub count: u32,
    /// `None` for uniform; `Some(s)` for Zipf with exponent `s`.
    pub zipf_exponent: Option<f64>,
}

impl KeyDistribution {
    /// Draws a key index in `0..count`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        let n = self.count.max(1);
        match self.zipf_exponent {
            None => rng.u32(..n),
            Some(s) => {
                // Inverse-CDF over the (small) key space.
                let norm: f64 = (1..=n).map(|k| 1.0 / f64::from(k).powf(s)).sum();
                let mut x = rng.f64() * norm;
                for k in 1..=n {
                    x -= 1.0 / f64::from(k).powf(s);
                    if x <= 0.0 {
                        return k - 1;
                    }
                }
                n - 1
            }
        }
    }
}

impl Plan {
    /// Total offered messages per second at `t` into the measured phase.
    pub fn offered_rate_at(&self, t: Duration) -> f64 {
        self.topics
            .iter()
            .flat_map(|topic| &topic.producers)
            .map(|p| p.rate.rate_at(t))
            .sum()
    }

    /// Number of producers.
    pub fn producer_count(&self) -> usize {
        self.topics.iter().map(|t| t.producers.len()).sum()
    }

    /// Number of subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.topics.iter().map(|t| t.subscribers.len()).sum()
    }
}
