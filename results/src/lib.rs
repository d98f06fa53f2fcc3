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
//! - [`report`]: the self-contained HTML report of one or more records (plots in SVG).
//! - [`compare`]: the side-by-side comparison table of records (text and markdown).
//! - [`merge`](mod@merge): several load generators' records of one run merged into one record.
//! - [`shard`]: a record's place in a sharded run and the checks that shard records make
//!   up exactly one run.
//! - [`hlog`]: HdrHistogram interval logs of a record's per-interval histograms.
//! - [`openmetrics`]: a record's figures as OpenMetrics / Prometheus text.
//! - [`conformance`]: the conformance matrix (checks × backends), its JSON document and
//!   its terminal, markdown and JUnit renderings.
//! - [`faults`]: what each fault injected during a run did (the record's `faults` list).
//! - [`xml`]: escaping for the JUnit documents.
//!
//! The JSON schema is documented in `results/README.md`.

pub mod collector;
pub mod compare;
pub mod conformance;
pub mod faults;
pub mod histogram;
pub mod hlog;
mod human;
pub mod merge;
pub mod openmetrics;
pub mod record;
pub mod recorder;
pub mod report;
pub mod sequence;
pub mod shard;
pub mod summary;
pub mod xml;

pub use collector::{Collector, CollectorError};
pub use compare::{Comparison, ScenarioMismatch, same_scenario};
pub use conformance::{
    BackendColumn, Cell, ConformanceReport, Counts, Expectation, Gate,
    Verdict as ConformanceVerdict,
};
pub use faults::{FaultDelivery, FaultFigures, FaultLatency, FaultPublish, Outage, OutsideFaults};
pub use histogram::{HistogramError, LatencyHistogram, Summary};
pub use hlog::{HlogError, read_interval_log, write_interval_log};
pub use merge::{MergeError, merge};
pub use openmetrics::{MetricsError, MetricsFormat, render_metrics};
pub use record::{
    BackendInfo, HostFacts, RecordError, RunFigures, RunInfo, RunRecord, SCHEMA_VERSION,
    default_record_path,
};
pub use recorder::{IntervalSnapshot, LatencySet, Recorder, RecorderError, snapshot_channel};
pub use report::{ReportError, ReportRun, render_report};
pub use sequence::{Delivery, SequenceSet, SequenceTracker};
pub use shard::{ShardInfo, ShardSet, ShardSetError, StartTiming, check_shard_set};
pub use summary::render_summary;

/// Compiles the examples of `README.md` as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
