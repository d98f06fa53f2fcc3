//! Scenarios: the TOML workload model and the built-in scenario library.
//!
//! A [`Scenario`] says which topics exist, who publishes and subscribes, how messages are
//! delivered (`all` fan-out or `one` competing consumers), how big they are, at what pace
//! (open loop: a [`Schedule`]), for how long, and which alert rules judge the run. Load one
//! from a file or from the built-in library:
//!
//! ```
//! use brokerbench_scenarios::{DEFAULT_SCENARIO, Scenario, builtin};
//!
//! let scenario = builtin::get(DEFAULT_SCENARIO)?;
//! let scenario = scenario.with_rate(1000.0)?;
//! assert_eq!(scenario.peak_offered_rate(), 1000.0);
//! # Ok::<(), brokerbench_scenarios::ScenarioError>(())
//! ```
//!
//! The file format is documented in the crate's README and in the comments of every
//! built-in file.

mod error;
mod file;
mod fingerprint;
mod locate;
mod model;
mod plan;
mod scenario;
mod schedule;
mod shard;
mod units;
mod validate;

pub mod builtin;
pub mod conformance;

use std::time::Duration;

pub use brokerbench_faults::{FaultKind, FaultSpec};
pub use error::{ErrorKind, Position, ScenarioError};
pub use model::{
    CatchUp, Delivery, KeyDistribution, Keys, LateSubscribers, MessageSize, Reply, ReplyTopic,
    Scenario, Workload,
};
pub use schedule::{RateStep, Schedule};
pub use shard::{Shard, ShardError};
pub use units::{format_duration, parse_duration, parse_rate};

/// The built-in scenario `brokerbench run` uses when given none: light enough for a 2-core
/// laptop, about 10 s in all.
pub const DEFAULT_SCENARIO: &str = "chat-1to1";

/// The smallest message, in bytes: the engine's envelope (run id, producer id, sequence
/// number, intended send time, ASCII-encoded) must fit.
pub const MIN_MESSAGE_SIZE: u32 = 64;

/// The largest message, in bytes: half the reference broker's default line limit (1 MiB),
/// leaving room for the JSON framing and escaping around the payload.
pub const MAX_MESSAGE_SIZE: u32 = 512 * 1024;

/// Warm-up when a file does not set `warmup`.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);

/// Drain deadline when a file does not set `drain`.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);

/// Zipf exponent when `keys.distribution = "zipf"` gives none (classic Zipf).
pub const DEFAULT_ZIPF_EXPONENT: f64 = 1.0;
