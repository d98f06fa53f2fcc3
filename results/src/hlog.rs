//! HdrHistogram interval logs (`.hlog`) of a run record's per-interval histograms.
//!
//! The log is what Java's `HistogramLogWriter` writes and `HistogramLogReader`,
//! `HistogramLogProcessor` and HdrHistogram's plotting tools read:
//!
//! ```text
//! #[Histogram log format version 1.3]
//! #brokerbench 0.1.0: scenario chat-1to1, backend reference, run 20261122t101315-1a2b
//! #Values are nanoseconds. Interval timestamps are seconds since the start of the measured phase.
//! #Untagged: end-to-end latency from the intended send time (coordinated-omission corrected).
//! #Tags: e2e_uncorrected, publish_ack, publish_ack_uncorrected, send_delay.
//! #[StartTime: 1795342395.754 (seconds since epoch)]
//! "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
//! #[MaxValueDivisor: 1000000.000]
//! 0.000,1.000,3.113,HISTFAAAAEx4nJNpmSzMwMDAxQABzFCaEUzmM9gzgAEA...
//! Tag=e2e_uncorrected,0.000,1.000,1.081,HISTFAAAAEN4nJNpmSzMwMDAwwAB...
//! ```
//!
//! - One line per interval and latency, in interval order; an interval with no samples
//!   still has its (empty) lines, so the series has no holes.
//! - The end-to-end latency is **untagged**, so `HistogramLogProcessor -i run.hlog`
//!   shows it by default; the other four latencies are tagged
//!   (`HistogramLogProcessor -i run.hlog -tag publish_ack`).
//! - Histograms are V2 compressed (`HISTF...`), values in nanoseconds; the max column is
//!   in milliseconds (`MaxValueDivisor` 10⁶, as Java's writer does by default).
//! - `StartTime` is the record's `started_at` (the start of the run, set-up included);
//!   interval timestamps count from the start of the measured phase.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, IntervalLogWriterError, LogEntry, Tag,
};
use hdrhistogram::serialization::{V2DeflateSerializeError, V2DeflateSerializer};

use crate::histogram::{HistogramError, LatencyHistogram};
use crate::record::RunRecord;
use crate::recorder::LatencySet;

/// The tag of each latency in the log, in the order written per interval; `None` is the
/// untagged end-to-end latency.
pub const TAGS: [(Option<&str>, &str); 5] = [
    (None, "e2e"),
    (Some("e2e_uncorrected"), "e2e_uncorrected"),
    (Some("publish_ack"), "publish_ack"),
    (Some("publish_ack_uncorrected"), "publish_ack_uncorrected"),
    (Some("send_delay"), "send_delay"),
];

/// Divisor of the max column: nanoseconds shown as milliseconds, as Java's writer does.
const MAX_VALUE_DIVISOR: f64 = 1_000_000.0;

/// Why an interval log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HlogError {
    /// Writing the log failed.
    #[error("cannot write the interval log")]
    Io(#[source] io::Error),
    /// A stored histogram could not be decoded.
    #[error("interval {interval}: cannot decode the stored histograms")]
    Histogram {
        /// The interval index.
        interval: u64,
        /// The histogram error.
        #[source]
        source: HistogramError,
    },
    /// A histogram could not be serialised.
    #[error("cannot encode a histogram for the interval log")]
    Encode(#[source] V2DeflateSerializeError),
    /// The log text is not an HdrHistogram interval log.
    #[error("not an HdrHistogram interval log: parse error at byte {offset}")]
    Parse {
        /// Byte offset of the line that does not parse.
        offset: usize,
    },
    /// A line's histogram could not be decoded.
    #[error("interval log line at {start_s:.3} s: cannot decode its histogram")]
    Decode {
        /// The line's start timestamp, seconds.
        start_s: f64,
        /// The histogram error.
        #[source]
        source: HistogramError,
    },
}

fn write_error(e: IntervalLogWriterError<V2DeflateSerializeError>) -> HlogError {
    match e {
        IntervalLogWriterError::IoError(e) => HlogError::Io(e),
        IntervalLogWriterError::SerializeError(e) => HlogError::Encode(e),
    }
}

fn histogram_of<'a>(set: &'a LatencySet, name: &str) -> &'a Histogram<u64> {
    match name {
        "e2e_uncorrected" => set.e2e_uncorrected.as_hdr(),
        "publish_ack" => set.publish_ack.as_hdr(),
        "publish_ack_uncorrected" => set.publish_ack_uncorrected.as_hdr(),
        "send_delay" => set.send_delay.as_hdr(),
        _ => set.e2e.as_hdr(),
    }
}

/// Writes the per-interval histograms of `record` as an HdrHistogram interval log.
///
/// # Errors
/// [`HlogError::Histogram`] for a malformed stored histogram, [`HlogError::Io`] or
/// [`HlogError::Encode`] if writing fails.
pub fn write_interval_log<W: Write>(record: &RunRecord, out: &mut W) -> Result<(), HlogError> {
    let mut serializer = V2DeflateSerializer::new();
    let started: SystemTime = record.started_at.into();
    {
        // The header: comments and StartTime, then the legend line Java's writer adds
        // (the Rust writer has no call for it, so it goes between two writers), then the
        // second writer's MaxValueDivisor line, which readers skip as a comment.
        let mut header = IntervalLogWriterBuilder::new();
        header
            .add_comment("[Histogram log format version 1.3]")
            .add_comment(&format!(
                "brokerbench {}: scenario {}, backend {}, run {}",
                record.host.brokerbench_version,
                record.scenario_name,
                record.backend.name,
                record.run_id
            ))
            .add_comment(
                "Values are nanoseconds. Interval timestamps are seconds since the start of the measured phase.",
            )
            .add_comment(
                "Untagged: end-to-end latency from the intended send time (coordinated-omission corrected).",
            )
            .add_comment("Tags: e2e_uncorrected, publish_ack, publish_ack_uncorrected, send_delay.")
            .with_start_time(started);
        header
            .begin_log_with(out, &mut serializer)
            .map_err(HlogError::Io)?;
    }
    out.write_all(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    )
    .map_err(HlogError::Io)?;
    let mut log = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(MAX_VALUE_DIVISOR)
        .begin_log_with(out, &mut serializer)
        .map_err(HlogError::Io)?;
    for interval in &record.figures.intervals {
        let set = interval
            .histograms
            .decode(&interval.latency)
            .map_err(|source| HlogError::Histogram {
                interval: interval.index,
                source,
            })?;
        let start = Duration::from_secs(interval.index);
        for (tag, name) in TAGS {
            log.write_histogram(
                histogram_of(&set, name),
                start,
                Duration::from_secs(1),
                tag.and_then(Tag::new),
            )
            .map_err(write_error)?;
        }
    }
    Ok(())
}

/// One histogram line of an interval log.
#[derive(Clone, Debug)]
pub struct LoggedInterval {
    /// The line's tag; `None` for untagged lines (brokerbench's end-to-end latency).
    pub tag: Option<String>,
    /// Interval start, as written (seconds since the measured phase for brokerbench logs).
    pub start: Duration,
    /// Interval length.
    pub duration: Duration,
    /// The decoded histogram (nanoseconds).
    pub histogram: LatencyHistogram,
}

/// Reads every histogram line of an interval log (any HdrHistogram writer's), in order.
/// `StartTime`/`BaseTime` headers and comments are skipped.
///
/// # Errors
/// [`HlogError::Parse`] for text that is not an interval log, [`HlogError::Decode`] for a
/// histogram that does not decode or holds values above one hour.
pub fn read_interval_log(text: &[u8]) -> Result<Vec<LoggedInterval>, HlogError> {
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text) {
        let line = match entry {
            Ok(LogEntry::Interval(line)) => line,
            Ok(LogEntry::StartTime(_) | LogEntry::BaseTime(_)) => continue,
            Err(hdrhistogram::serialization::interval_log::LogIteratorError::ParseError {
                offset,
            }) => return Err(HlogError::Parse { offset }),
        };
        // HdrHistogram's own deserializer, range-checked against one hour.
        let histogram =
            LatencyHistogram::from_base64(line.encoded_histogram()).map_err(|source| {
                HlogError::Decode {
                    start_s: line.start_timestamp().as_secs_f64(),
                    source,
                }
            })?;
        out.push(LoggedInterval {
            tag: line.tag().map(|t| t.as_str().to_owned()),
            start: line.start_timestamp(),
            duration: line.duration(),
            histogram,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{
        BackendInfo, EncodedHistograms, HostFacts, IntervalFigures, LatencySummaries, RunFigures,
        RunInfo,
    };

    fn record() -> RunRecord {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut intervals = Vec::new();
        for index in 0..4u64 {
            let mut set = LatencySet::default();
            // Interval 2 is empty: its lines must still be there.
            if index != 2 {
                for _ in 0..500 {
                    set.e2e.record(rng.u64(10_000..50_000_000));
                    set.e2e_uncorrected.record(rng.u64(10_000..5_000_000));
                    set.publish_ack.record(rng.u64(5_000..40_000_000));
                    set.publish_ack_uncorrected
                        .record(rng.u64(5_000..4_000_000));
                    set.send_delay.record(rng.u64(0..1_000_000));
                }
            }
            intervals.push(IntervalFigures {
                index,
                latency: LatencySummaries::of(&set),
                histograms: EncodedHistograms::encode(&set).unwrap(),
                ..IntervalFigures::default()
            });
        }
        let t = time::macros::datetime!(2026-11-22 10:13:15.754 UTC);
        RunRecord::new(
            RunInfo {
                run_id: "r1".into(),
                scenario_name: "chat-1to1".into(),
                scenario: serde_json::json!({}),
                alert_rules: serde_json::json!([]),
                backend: BackendInfo {
                    name: "reference".into(),
                    url: None,
                    version: None,
                },
                host: HostFacts {
                    brokerbench_version: "0.1.0".into(),
                    ..HostFacts::default()
                },
                started_at: t,
                ended_at: t,
            },
            RunFigures {
                duration_s: 4.0,
                intervals,
                ..RunFigures::default()
            },
        )
    }

    /// Written with hdrhistogram's interval log writer, read back with its iterator and
    /// deserializer: every interval's every histogram comes back equal, in order, with
    /// its tag and timestamps.
    #[test]
    fn round_trip_through_hdrhistograms_reader() {
        let record = record();
        let mut log = Vec::new();
        write_interval_log(&record, &mut log).unwrap();
        let lines = read_interval_log(&log).unwrap();
        assert_eq!(lines.len(), 4 * TAGS.len());
        for (i, interval) in record.figures.intervals.iter().enumerate() {
            let set = interval.histograms.decode(&interval.latency).unwrap();
            for (j, (tag, name)) in TAGS.iter().enumerate() {
                let line = &lines[i * TAGS.len() + j];
                assert_eq!(line.tag.as_deref(), *tag);
                assert_eq!(line.start, Duration::from_secs(interval.index));
                assert_eq!(line.duration, Duration::from_secs(1));
                assert_eq!(
                    line.histogram.as_hdr(),
                    histogram_of(&set, name),
                    "{i} {name}"
                );
            }
        }
        assert!(lines[2 * TAGS.len()].histogram.is_empty());
    }

    #[test]
    fn header_is_what_java_tools_expect() {
        let mut log = Vec::new();
        write_interval_log(&record(), &mut log).unwrap();
        let text = String::from_utf8(log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#[Histogram log format version 1.3]");
        assert!(
            text.contains("\n#[StartTime: 1795342395.754 (seconds since epoch)]\n"),
            "{text}"
        );
        assert!(text.contains("\n#[MaxValueDivisor: 1000000.000]\n"));
        let legend = lines
            .iter()
            .position(|l| l.starts_with("\"StartTimestamp\""))
            .unwrap();
        assert_eq!(lines[legend + 1], "#[MaxValueDivisor: 1000000.000]");
        let first = lines[legend + 2];
        assert!(first.starts_with("0.000,1.000,"), "{first}");
        assert!(
            first.split(',').nth(3).unwrap().starts_with("HISTF"),
            "{first}"
        );
        assert!(lines[legend + 3].starts_with("Tag=e2e_uncorrected,0.000,1.000,"));
        // The max column is in milliseconds: interval 0's e2e max is below 50 ms.
        let max_ms: f64 = first.split(',').nth(2).unwrap().parse().unwrap();
        assert!(max_ms > 0.0 && max_ms < 50.1, "{max_ms}");
        // No line is indented or blank: Java's reader is line-oriented.
        assert!(lines.iter().all(|l| !l.is_empty() && !l.starts_with(' ')));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            read_interval_log(b"0.000,1.000,1.0,not-base64!\n"),
            Err(HlogError::Decode { .. })
        ));
        assert!(matches!(
            read_interval_log(b"hello\n"),
            Err(HlogError::Parse { offset: 0 })
        ));
    }
}
