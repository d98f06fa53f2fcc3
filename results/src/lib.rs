//! Results: the measurement core of brokerbench.
//!
//! - [`histogram`]: [`LatencyHistogram`], HdrHistogram of nanoseconds (1 ns .. 1 h, 3
//!   significant digits), clamping counted, V2 base64 round trip, [`Summary`] in µs.
//! - [`recorder`]: the per-task [`Recorder`] used on hot paths; hands finished 1-second
//!   intervals to the collector without blocking or locking.
//! - [`collector`]: the [`Collector`] merging snapshots per interval and for the run into
//!   [`RunFigures`].
//! - [`sequence`]: the [`SequenceTracker`] classifying deliveries (first, reordered,
//!   duplicate) and counting lost messages with per-producer bitsets.
//! - [`record`]: the [`RunRecord`] JSON document (schema version 1), written atomically.
//! - [`summary`]: the terminal summary of a record.
//!
//! The JSON schema is documented in `results/README.md`.

pub mod collector;
pub mod histogram;
pub mod record;
pub mod recorder;
pub mod sequence;
pub mod summary;

pub use collector::{Collector, CollectorError};
pub use histogram::{HistogramError, LatencyHistogram, Summary};
pub use record::{
    BackendInfo, HostFacts, RecordError, RunFigures, RunInfo, RunRecord, SCHEMA_VERSION,
    default_record_path,
};
pub use recorder::{IntervalSnapshot, LatencySet, Recorder, RecorderError, snapshot_channel};
pub use sequence::{Delivery, SequenceSet, SequenceTracker};
pub use summary::render_summary;

/// Compiles the examples of `README.md` as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
