//! The validated scenario model: what a run needs to know, with serde derives so the resolved
//! scenario is stored in the run record as JSON.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;
use crate::units::duration_text;

/// A messaging workload: who publishes what, how fast, to whom, for how long, and which
/// alert rules judge the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Short identifier (`group-chat`), also used in file names of results.
    pub name: String,
    /// One line saying what the scenario models.
    pub description: String,
    /// Sending before measuring starts, so connections, caches and JITs are warm.
    #[serde(with = "duration_text")]
    pub warmup: Duration,
    /// Length of the measured phase.
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// How long, after the last send, deliveries may still arrive and count.
    #[serde(with = "duration_text")]
    pub drain: Duration,
    /// The workload groups, run side by side (`[[workload]]` in TOML).
    pub workloads: Vec<Workload>,
    /// Alert rules, kept as written (`[[alerts]]` in TOML); the alerts crate reads them.
    pub alerts: Vec<toml::Table>,
    /// Faults injected during the measured phase (`[[fault]]` in TOML, `--fault`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<brokerbench_faults::FaultSpec>,
}

/// One group of identical topics with their producers and subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Group name; topic `i` of the group is named `<name>.<i>` (see [`Workload::topic_name`]).
    pub name: String,
    /// Number of topics (rooms, queues) in the group.
    pub topics: u32,
    /// Publishing clients per topic.
    pub producers_per_topic: u32,
    /// Subscribing clients per topic, present from the start. 0 without late subscribers
    /// is a publish-only workload: publishing is measured alone, no delivery is due.
    pub subscribers_per_topic: u32,
    /// Fan-out (`all`) or competing consumers (`one`).
    pub delivery: Delivery,
    /// Whether sends are cached by the broker for replay (`cache: false` when not).
    pub cache: bool,
    /// Payload size, envelope included.
    pub size: MessageSize,
    /// Message keys, for per-key ordering under competing consumers.
    pub keys: Option<Keys>,
    /// The pace of the whole group.
    pub schedule: Schedule,
    /// Subscribers that join after the start and catch up.
    pub late_subscribers: Option<LateSubscribers>,
    /// Receipts sent back to the producer by every receiver.
    pub reply: Option<Reply>,
    /// At-least-once subscriptions: every delivery is acknowledged.
    pub ack: bool,
}

impl Workload {
    /// The name of topic `index` of this group: `<group>.<index>`.
    pub fn topic_name(&self, index: u32) -> String {
        format!("{}.{index}", self.name)
    }

    /// All producers of the group (`topics × producers_per_topic`).
    pub fn producers(&self) -> u64 {
        u64::from(self.topics) * u64::from(self.producers_per_topic)
    }

    /// All subscribers present from the start (`topics × subscribers_per_topic`).
    pub fn subscribers(&self) -> u64 {
        u64::from(self.topics) * u64::from(self.subscribers_per_topic)
    }
}

/// How a topic hands a message to its subscribers (the protocol's `delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Fan-out: every subscriber of the topic gets every message.
    All,
    /// Competing consumers: each message goes to exactly one subscriber.
    One,
}

impl Delivery {
    /// The protocol value: `"all"` or `"one"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::One => "one",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload size in bytes, envelope included.
///
/// In TOML: an integer (`size = 200`), `{ distribution = "uniform", min = 100, max = 300 }`
/// or `{ distribution = "weighted", sizes = [[120, 6], [300, 3], [1000, 1]] }` (bytes and
/// relative integer weight).
#[derive(Debug, Clone, PartialEq)]
pub enum MessageSize {
    /// Every message has this many bytes.
    Fixed(u32),
    /// Uniform over `min..=max` bytes.
    Uniform {
        /// Smallest size, bytes.
        min: u32,
        /// Largest size, bytes.
        max: u32,
    },
    /// One of the listed sizes, chosen with probability proportional to its weight.
    Weighted {
        /// `(bytes, weight)` pairs.
        sizes: Vec<(u32, u32)>,
    },
}

impl MessageSize {
    /// The smallest size a message can have.
    pub fn min(&self) -> u32 {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform { min, .. } => *min,
            Self::Weighted { sizes } => sizes.iter().map(|s| s.0).min().unwrap_or(0),
        }
    }

    /// The largest size a message can have.
    pub fn max(&self) -> u32 {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform { max, .. } => *max,
            Self::Weighted { sizes } => sizes.iter().map(|s| s.0).max().unwrap_or(0),
        }
    }

    /// The mean size in bytes.
    pub fn mean(&self) -> f64 {
        match self {
            Self::Fixed(n) => f64::from(*n),
            Self::Uniform { min, max } => (f64::from(*min) + f64::from(*max)) / 2.0,
            Self::Weighted { sizes } => {
                let total: f64 = sizes.iter().map(|s| f64::from(s.1)).sum();
                if total == 0.0 {
                    return 0.0;
                }
                sizes
                    .iter()
                    .map(|s| f64::from(s.0) * f64::from(s.1))
                    .sum::<f64>()
                    / total
            }
        }
    }
}

impl Serialize for MessageSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(n) => serializer.serialize_u32(*n),
            Self::Uniform { min, max } => {
                let mut s = serializer.serialize_struct("MessageSize", 3)?;
                s.serialize_field("distribution", "uniform")?;
                s.serialize_field("min", min)?;
                s.serialize_field("max", max)?;
                s.end()
            }
            Self::Weighted { sizes } => {
                let mut s = serializer.serialize_struct("MessageSize", 2)?;
                s.serialize_field("distribution", "weighted")?;
                s.serialize_field("sizes", sizes)?;
                s.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for MessageSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Distribution {
            Uniform,
            Weighted,
        }

        /// The table form; read field by field so errors keep their place in the file.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SizeTable {
            distribution: Distribution,
            min: Option<u32>,
            max: Option<u32>,
            sizes: Option<Vec<(u32, u32)>>,
        }

        struct SizeVisitor;

        impl<'de> Visitor<'de> for SizeVisitor {
            type Value = MessageSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size in bytes or a table { distribution = \"uniform\" | \"weighted\", … }",
                )
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageSize, E> {
                u32::try_from(v).map(MessageSize::Fixed).map_err(|_| {
                    E::custom(format!(
                        "a size must be a number of bytes between 0 and {}, got {v}",
                        u32::MAX
                    ))
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageSize, E> {
                u32::try_from(v).map(MessageSize::Fixed).map_err(|_| {
                    E::custom(format!(
                        "a size must be a number of bytes between 0 and {}, got {v}",
                        u32::MAX
                    ))
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MessageSize, A::Error> {
                let table = SizeTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match table.distribution {
                    Distribution::Uniform => match (table.min, table.max, table.sizes) {
                        (Some(min), Some(max), None) => Ok(MessageSize::Uniform { min, max }),
                        (_, _, Some(_)) => Err(de::Error::custom(
                            "`sizes` belongs to distribution = \"weighted\"; a uniform size takes `min` and `max`",
                        )),
                        _ => Err(de::Error::custom(
                            "distribution = \"uniform\" needs both `min` and `max` (bytes)",
                        )),
                    },
                    Distribution::Weighted => match (table.min, table.max, table.sizes) {
                        (None, None, Some(sizes)) => Ok(MessageSize::Weighted { sizes }),
                        (None, None, None) => Err(de::Error::custom(
                            "distribution = \"weighted\" needs `sizes = [[bytes, weight], …]`",
                        )),
                        _ => Err(de::Error::custom(
                            "`min` and `max` belong to distribution = \"uniform\"; a weighted size takes only `sizes`",
                        )),
                    },
                }
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Message keys: each message carries one of `count` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keys {
    /// Number of distinct keys (`key-0` … `key-<count-1>`).
    pub count: u32,
    /// How often each key is picked.
    pub distribution: KeyDistribution,
}

/// How message keys are picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Key of rank `k` (from 1) picked with probability ∝ `1 / k^exponent`: a few hot keys.
    Zipf {
        /// Skew; 1.0 is classic Zipf, larger is more skewed.
        exponent: f64,
    },
}

/// Subscribers that join a topic after the start and catch up from the broker's cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateSubscribers {
    /// Late subscribers per topic, on top of `subscribers_per_topic`.
    pub count: u32,
    /// When they (re)join, from the start of the measured phase.
    #[serde(with = "duration_text")]
    pub join_after: Duration,
    /// What they ask the broker to replay when they join.
    pub from: CatchUp,
}

/// What a late subscriber asks the broker to replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CatchUp {
    /// A returning client: subscribed from the start, offline from `offline_after` until
    /// `join_after`, then resubscribes with `last_seen` = the last index it received, so
    /// the broker replays only what it missed.
    LastSeen {
        /// When it goes offline, from the start of the measured phase.
        #[serde(with = "duration_text")]
        offline_after: Duration,
    },
    /// A new client that wants the whole cached history (no `last_seen`).
    Beginning,
    /// A new client that wants only new messages (`cache: false` on subscribe).
    Latest,
}

impl CatchUp {
    /// The TOML spelling: `last_seen`, `beginning` or `latest`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::LastSeen { .. } => "last_seen",
            Self::Beginning => "beginning",
            Self::Latest => "latest",
        }
    }

    /// Whether this catch-up needs the broker's cache (everything but `latest`).
    pub fn replays(&self) -> bool {
        !matches!(self, Self::Latest)
    }
}

/// Receipts: every subscriber that receives a message publishes `count` small messages back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Receipt size in bytes, envelope included.
    pub size: u32,
    /// Where receipts go.
    #[serde(default)]
    pub topic: ReplyTopic,
    /// Receipts per received message (2 = a "delivered" and a "read" receipt).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// Where a receipt is published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyTopic {
    /// The inbox topic of the producer that sent the original message.
    #[default]
    Sender,
}
