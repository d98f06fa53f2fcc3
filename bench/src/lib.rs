//! The load engine of brokerbench.
//!
//! - [`plan`]: the concrete description of a run (topics, producers, subscribers).
//! - [`schedule`]: open-loop due times: message `i` is due at a time fixed in advance.
//! - [`hex`]: the fixed-width hex the envelopes are written in.
//! - [`pacer`]: precise wake-ups for those due times (tokio's timer is 1 ms coarse).
//! - [`envelope`]: what every payload carries (producer, sequence, intended and actual
//!   send time), padded to size.
//! - [`engine`]: runs a plan against a backend and measures it.
//! - [`start`]: starting the measured phase at a wall-clock instant shared by shards.
//! - [`resources`]: CPU and memory of the broker process.
//! - [`timeline`]: every publish and delivery of a run with faults, and the engine's
//!   fault hooks; [`fault_figures`]: the figures of each fault window, read from it.

pub mod engine;
pub mod envelope;
pub mod fault_figures;
pub mod hex;
pub mod pacer;
pub mod plan;
mod resilience;
pub mod resources;
pub mod schedule;
pub mod start;
pub mod timeline;

pub use engine::{
    EngineError, Phase, Progress, RunOptions, RunOutcome, required_capabilities, run,
};
pub use envelope::{Envelope, EnvelopeError};
pub use plan::{
    DEFAULT_MAX_IN_FLIGHT, Join, KeyDistribution, Plan, ProducerPlan, RateSchedule, RateSegment,
    ReplyPlan, SizeDistribution, SubscriberPlan, TopicPlan,
};
