//! Merging run records of one scenario made by several load generators into one record.
//!
//! Several machines (or processes) run the same scenario against the same broker at the
//! same time, each writing its own record; [`merge`] combines them into the record of the
//! whole load:
//!
//! - **Histograms** — whole-run and per-interval — are decoded and added: the merged
//!   percentiles are exactly those of all samples together, not an average of
//!   percentiles. Clamped counts add up.
//! - **Intervals** are aligned by index (each generator's interval `k` covers
//!   `[k s, k+1 s)` of its own measured phase); a shorter series counts as empty beyond
//!   its end.
//! - **Counts** (volume, correctness) are summed; **rates** are summed too, because
//!   concurrent generators' throughputs add up; `saturated` is recomputed from the
//!   merged rates.
//! - **Availability** is recomputed from the summed counts, per interval and for the run;
//!   an interval is unavailable when it is in any input.
//! - **Broker CPU and RSS** describe the one broker every generator measured: they are
//!   averaged (weighted by sample count for the run), never summed.
//! - `duration_s` is the longest input's; `started_at`/`ended_at` span all inputs; the
//!   record is partial when any input is; `verdicts` are dropped (they judged the inputs,
//!   evaluate the merged record again); `notes` say what was merged.

use std::collections::BTreeSet;

use crate::collector::{interval_figures, is_saturated, run_availability};
use crate::compare::{ScenarioMismatch, same_scenario};
use crate::histogram::HistogramError;
use crate::record::{
    ComputeFigures, CorrectnessFigures, EncodedHistograms, IntervalCompute, LatencySummaries,
    RunFigures, RunRecord, SCHEMA_VERSION, VolumeFigures,
};
use crate::recorder::{Counters, LatencySet};
use crate::shard::{ShardSetError, annotate_merged, check_shard_set, interval_shifts};

/// Why records could not be merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no run records to merge")]
    Empty,
    /// The records ran different scenarios.
    #[error("cannot merge {0}")]
    DifferentScenarios(#[from] ScenarioMismatch),
    /// The records measured different backends.
    #[error(
        "cannot merge runs of different backends: run {first} measured `{first_backend}`, run {other} measured `{other_backend}`"
    )]
    DifferentBackends {
        /// Index of the first record.
        first: usize,
        /// Its backend.
        first_backend: String,
        /// Index of the first record with another backend.
        other: usize,
        /// That record's backend.
        other_backend: String,
    },
    /// The records are shards that do not make up exactly one whole run.
    #[error("cannot merge: {0}")]
    Shards(#[from] ShardSetError),
    /// A stored histogram could not be decoded or the merged one encoded.
    #[error("run {run} ({run_id}): {what} histogram")]
    Histogram {
        /// Index of the record (or of the merged record, for encoding).
        run: usize,
        /// Its run id.
        run_id: String,
        /// Which histogram (`run` or `interval 12`).
        what: String,
        /// The histogram error.
        #[source]
        source: HistogramError,
    },
}

/// Sums optional means: the mean of the present values, `None` if there is none.
fn mean_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u64), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Adds the counts and rates of `other` into `into`; `saturated` is left to the caller.
fn add_volume(into: &mut VolumeFigures, other: &VolumeFigures) {
    into.offered += other.offered;
    into.attempted += other.attempted;
    into.published += other.published;
    into.publish_failed += other.publish_failed;
    into.publish_unknown += other.publish_unknown;
    into.delivered += other.delivered;
    into.offered_rate += other.offered_rate;
    into.achieved_publish_rate += other.achieved_publish_rate;
    into.achieved_delivery_rate += other.achieved_delivery_rate;
}

fn add_correctness(into: &mut CorrectnessFigures, other: &CorrectnessFigures) {
    into.lost += other.lost;
    into.duplicated += other.duplicated;
    into.reordered += other.reordered;
    into.phantom += other.phantom;
    into.late += other.late;
    into.recovered += other.recovered;
    into.replayed += other.replayed;
    into.undelivered += other.undelivered;
}

/// The event counters stored figures were made from, so the summed counts go through
/// the collector's own rules again.
fn counters_of(v: &VolumeFigures, c: &CorrectnessFigures) -> Counters {
    Counters {
        published: v.published,
        publish_failed: v.publish_failed,
        publish_unknown: v.publish_unknown,
        delivered: v.delivered,
        duplicated: c.duplicated,
        reordered: c.reordered,
        phantom: c.phantom,
        late: c.late,
    }
}

/// Merges `records`, made by concurrent load generators running the same scenario
/// against the same backend, into one record (see the module documentation for every
/// rule).
///
/// # Errors
/// [`MergeError::Empty`] for no records, [`MergeError::DifferentScenarios`] or
/// [`MergeError::DifferentBackends`] for records that do not belong together,
/// [`MergeError::Histogram`] for a malformed stored histogram.
pub fn merge(records: &[RunRecord]) -> Result<RunRecord, MergeError> {
    let first = records.first().ok_or(MergeError::Empty)?;
    let refs: Vec<&RunRecord> = records.iter().collect();
    same_scenario(&refs)?;
    let shards = check_shard_set(records)?;
    let shifts = interval_shifts(records, shards.as_ref());
    if let Some(other) = records
        .iter()
        .position(|r| r.backend.name != first.backend.name)
    {
        return Err(MergeError::DifferentBackends {
            first: 0,
            first_backend: first.backend.name.clone(),
            other,
            other_backend: records[other].backend.name.clone(),
        });
    }
    let decode = |run: usize, what: String, encoded: &EncodedHistograms, s: &LatencySummaries| {
        encoded.decode(s).map_err(|source| MergeError::Histogram {
            run,
            run_id: records[run].run_id.clone(),
            what,
            source,
        })
    };
    let encode = |what: String, set: &LatencySet| {
        EncodedHistograms::encode(set).map_err(|source| MergeError::Histogram {
            run: 0,
            run_id: "merged".to_owned(),
            what,
            source,
        })
    };

    // Whole-run histograms.
    let mut run_set = LatencySet::default();
    for (i, r) in records.iter().enumerate() {
        run_set.add(&decode(
            i,
            "run".to_owned(),
            &r.figures.histograms,
            &r.figures.latency,
        )?);
    }

    // The interval series, aligned by index (shifted by whole seconds for shards that
    // started apart without a shared start instant).
    let length = records
        .iter()
        .zip(&shifts)
        .map(|(r, shift)| r.figures.intervals.len() + shift)
        .max()
        .unwrap_or(0);
    let mut intervals = Vec::with_capacity(length);
    for index in 0..length {
        let mut set = LatencySet::default();
        let mut volume = VolumeFigures::default();
        let mut correctness = CorrectnessFigures::default();
        let (mut cpu, mut rss) = (Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            let Some(interval) = index
                .checked_sub(shifts[i])
                .and_then(|k| r.figures.intervals.get(k))
            else {
                continue;
            };
            set.add(&decode(
                i,
                format!("interval {index}"),
                &interval.histograms,
                &interval.latency,
            )?);
            add_volume(&mut volume, &interval.volume);
            add_correctness(&mut correctness, &interval.correctness);
            cpu.extend(interval.compute.cpu_percent);
            rss.extend(interval.compute.rss_bytes);
        }
        // Interval rates are counts over 1 s: recomputed from the summed counts, they
        // equal the summed rates.
        intervals.push(interval_figures(
            index as u64,
            &counters_of(&volume, &correctness),
            volume.offered,
            correctness.lost,
            correctness.undelivered,
            LatencySummaries::of(&set),
            encode(format!("interval {index}"), &set)?,
            IntervalCompute {
                cpu_percent: mean_of(cpu.into_iter()),
                rss_bytes: mean_of(rss.iter().map(|&b| b as f64)).map(|b| b.round() as u64),
            },
        ));
    }

    // Run-level counts and rates.
    let mut volume = VolumeFigures::default();
    let mut correctness = CorrectnessFigures::default();
    for r in records {
        add_volume(&mut volume, &r.figures.volume);
        add_correctness(&mut correctness, &r.figures.correctness);
    }
    volume.saturated = is_saturated(volume.offered_rate, volume.achieved_publish_rate);

    // Broker resources: one broker, so a sample-weighted mean, never a sum.
    let samples: u64 = records.iter().map(|r| r.figures.compute.samples).sum();
    let weighted = |get: fn(&ComputeFigures) -> Option<f64>| {
        let (sum, weight) = records.iter().fold((0.0, 0u64), |(s, w), r| {
            let c = &r.figures.compute;
            match get(c) {
                Some(v) if c.samples > 0 => (s + v * c.samples as f64, w + c.samples),
                _ => (s, w),
            }
        });
        (weight > 0).then(|| sum / weight as f64)
    };
    let cpu_max = intervals
        .iter()
        .filter_map(|i| i.compute.cpu_percent)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let rss_max = intervals.iter().filter_map(|i| i.compute.rss_bytes).max();
    let compute = ComputeFigures {
        cpu_percent: weighted(|c| c.cpu_percent),
        cpu_percent_max: cpu_max,
        rss_bytes: weighted(|c| c.rss_bytes.map(|b| b as f64)).map(|b| b.round() as u64),
        rss_bytes_max: rss_max,
        samples,
    };

    let figures = RunFigures {
        duration_s: records
            .iter()
            .map(|r| r.figures.duration_s)
            .fold(0.0, f64::max),
        latency: LatencySummaries::of(&run_set),
        availability: run_availability(
            &counters_of(&volume, &correctness),
            correctness.lost,
            correctness.undelivered,
            intervals
                .iter()
                .filter(|i| i.availability.unavailable)
                .count() as u64,
        ),
        volume,
        correctness,
        compute,
        histograms: encode("run".to_owned(), &run_set)?,
        intervals,
    };

    let run_ids: Vec<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
    let distinct: BTreeSet<&str> = run_ids.iter().copied().collect();
    let run_id = if distinct.len() == 1 {
        first.run_id.clone()
    } else {
        run_ids.join("+")
    };
    let mut notes = vec![format!(
        "merged from {} run records ({}): histograms added, counts and rates summed, broker cpu/rss averaged",
        records.len(),
        run_ids.join(", ")
    )];
    let started_at = records
        .iter()
        .map(|r| r.started_at)
        .min()
        .unwrap_or(first.started_at);
    let ended_at = records
        .iter()
        .map(|r| r.ended_at)
        .max()
        .unwrap_or(first.ended_at);
    let latest_start = records
        .iter()
        .map(|r| r.started_at)
        .max()
        .unwrap_or(first.started_at);
    let spread = (latest_start - started_at).as_seconds_f64();
    if spread >= 2.0 && shards.is_none() {
        notes.push(format!(
            "the merged runs started {spread:.1} s apart; their intervals are aligned by index, each from its own measured phase"
        ));
    }
    if records.iter().any(|r| r.scenario != first.scenario) {
        notes.push(
            "the merged runs' scenario documents differ (e.g. a different --rate or --duration); `scenario` is the first run's".to_owned(),
        );
    }
    let urls: BTreeSet<Option<&str>> = records.iter().map(|r| r.backend.url.as_deref()).collect();
    if urls.len() > 1 {
        notes.push(format!(
            "the runs reached the broker at different URLs ({}); `backend.url` is the first run's",
            urls.iter()
                .map(|u| u.unwrap_or("none"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if records.iter().any(|r| r.host != first.host) {
        notes.push("the runs come from different hosts; `host` is the first run's".to_owned());
    }
    let dropped: usize = records.iter().map(|r| r.verdicts.len()).sum();
    if dropped > 0 {
        notes.push(format!(
            "{dropped} verdict(s) of the merged runs were dropped: they judged the single runs; evaluate this record again"
        ));
    }
    for r in records {
        for note in &r.notes {
            notes.push(format!("{}: {note}", r.run_id));
        }
    }
    let partial_reasons: Vec<String> = records
        .iter()
        .filter(|r| r.partial)
        .map(|r| {
            format!(
                "{}: {}",
                r.run_id,
                r.partial_reason.as_deref().unwrap_or("interrupted")
            )
        })
        .collect();
    let versions: BTreeSet<Option<&str>> = records
        .iter()
        .map(|r| r.backend.version.as_deref())
        .collect();
    let mut backend = first.backend.clone();
    if versions.len() > 1 {
        backend.version = None;
        notes.push(
            "the runs report different broker versions; `backend.version` is left empty".to_owned(),
        );
    }

    let mut merged = RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id,
        scenario_name: first.scenario_name.clone(),
        scenario: first.scenario.clone(),
        backend,
        host: first.host.clone(),
        started_at,
        ended_at,
        partial: !partial_reasons.is_empty(),
        partial_reason: (!partial_reasons.is_empty()).then(|| partial_reasons.join("; ")),
        figures,
        alert_rules: first.alert_rules.clone(),
        verdicts: Vec::new(),
        notes,
        scenario_hash: None,
        shard: None,
        start: None,
        // Fault windows are per run: the merged record keeps each shard's in its own file.
        faults: Vec::new(),
        faults_outside: None,
    };
    if let Some(set) = &shards {
        annotate_merged(records, set, &mut merged);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{BackendInfo, HostFacts, IntervalFigures, RunInfo};
    use crate::recorder::IntervalSnapshot;
    use crate::{Collector, Delivery, Recorder, snapshot_channel};

    /// One generator's events: (now_ns, intended_ns, kind), kind 0 publish ok, 1
    /// publish failed, 2 delivery, 3 duplicate, 4 late.
    type Events = Vec<(u64, u64, u8)>;

    fn events(seed: u64, n: usize) -> Events {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| {
                let intended = rng.u64(0..2_900_000_000);
                let latency = match rng.u8(0..10) {
                    0 => rng.u64(0..6_000_000_000), // a stall, sometimes past the 2 s run
                    _ => rng.u64(1_000..3_000_000),
                };
                let kind = match rng.u8(0..20) {
                    0 => 1,
                    1 => 3,
                    2 => 4,
                    k if k < 10 => 0,
                    _ => 2,
                };
                (intended + latency, intended, kind)
            })
            .collect()
    }

    /// Feeds `generators`' events into one collector (with its own recorder per
    /// generator), with one broker sample per interval each, as a single process
    /// recording all of them would.
    fn collect(generators: &[(&Events, f64, u64)]) -> RunFigures {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = snapshot_channel();
            let mut collector = Collector::new();
            let mut snapshots: Vec<IntervalSnapshot> = Vec::new();
            for (events, cpu, rss) in generators {
                let mut recorder = Recorder::new(tx.clone());
                let mut sorted = (*events).clone();
                sorted.sort_by_key(|e| e.0);
                for &(now, intended, kind) in &sorted {
                    match kind {
                        0 => recorder.record_publish_ok(now, intended, intended + 500),
                        1 => recorder.record_publish_failed(now, intended, intended + 500),
                        2 => {
                            recorder.record_delivery(now, intended, intended + 500, Delivery::First)
                        }
                        3 => recorder.record_delivery(
                            now,
                            intended,
                            intended + 500,
                            Delivery::Duplicate,
                        ),
                        _ => recorder.record_late(now),
                    }
                    while let Ok(s) = rx.try_recv() {
                        snapshots.push(s);
                    }
                }
                recorder.finish().await.unwrap();
                while let Ok(s) = rx.try_recv() {
                    snapshots.push(s);
                }
                for interval in 0..3 {
                    collector.record_broker_sample(interval, *cpu, *rss);
                    collector.record_offered(interval, 10);
                }
                collector.record_lost(1, 2);
            }
            for s in snapshots {
                collector.ingest(s);
            }
            collector.finish(Duration::from_secs(2)).unwrap()
        })
    }

    fn record(run_id: &str, figures: RunFigures) -> RunRecord {
        let t = time::macros::datetime!(2026-11-22 10:00:00 UTC);
        RunRecord::new(
            RunInfo {
                run_id: run_id.into(),
                scenario_name: "chat".into(),
                scenario: serde_json::json!({"name": "chat"}),
                alert_rules: serde_json::json!([]),
                backend: BackendInfo {
                    name: "reference".into(),
                    url: Some("tcp://127.0.0.1:7000".into()),
                    version: None,
                },
                host: HostFacts::default(),
                started_at: t,
                ended_at: t + time::Duration::seconds(8),
            },
            figures,
        )
    }

    /// Merging two generators' records gives exactly the figures of one collector that
    /// recorded both: histograms, percentiles, counts, rates, availability, per interval
    /// and for the run.
    #[test]
    fn merge_equals_recording_everything_in_one_collector() {
        let a = events(1, 3_000);
        let b = events(2, 1_000);
        let ra = record("a", collect(&[(&a, 10.0, 100 << 20)]));
        let rb = record("b", collect(&[(&b, 20.0, 200 << 20)]));
        let together = collect(&[(&a, 10.0, 100 << 20), (&b, 20.0, 200 << 20)]);
        // The inputs differ in length: b's stalls reach fewer intervals.
        let merged = merge(&[ra.clone(), rb.clone()]).unwrap();
        assert_eq!(merged.figures, together);
        assert!(merged.figures.latency.e2e.count > 0);
        assert!(merged.figures.availability.unavailable_intervals > 0);
        assert_eq!(
            merged.figures.volume.published,
            ra.figures.volume.published + rb.figures.volume.published
        );
        assert_eq!(merged.run_id, "a+b");
        assert_eq!(merged.scenario_name, "chat");
        assert!(merged.notes[0].starts_with("merged from 2 run records (a, b)"));
        // Merging is associative: (a + b) + a == a + (b + a) in every figure.
        let left = merge(&[merge(&[ra.clone(), rb.clone()]).unwrap(), ra.clone()]).unwrap();
        let right = merge(&[ra.clone(), merge(&[rb.clone(), ra.clone()]).unwrap()]).unwrap();
        assert_eq!(left.figures.histograms, right.figures.histograms);
        assert_eq!(left.figures.latency, right.figures.latency);
        assert_eq!(left.figures.volume, right.figures.volume);
    }

    #[test]
    fn clamped_counts_add_up() {
        // One interval holding a 4000 s stall, clamped at 1 h (built directly: through a
        // collector it would take 4000 intervals).
        let mut set = LatencySet::default();
        set.e2e.record(4_000_000_000_000);
        set.e2e.record(1_000);
        let latency = LatencySummaries::of(&set);
        let histograms = EncodedHistograms::encode(&set).unwrap();
        let figures = RunFigures {
            duration_s: 1.0,
            latency: latency.clone(),
            histograms: histograms.clone(),
            intervals: vec![IntervalFigures {
                index: 0,
                latency,
                histograms,
                ..IntervalFigures::default()
            }],
            ..RunFigures::default()
        };
        let ra = record("a", figures);
        let merged = merge(&[ra.clone(), ra]).unwrap();
        assert_eq!(merged.figures.latency.e2e.clamped, 2);
        assert_eq!(merged.figures.latency.e2e.count, 4);
        assert_eq!(merged.figures.intervals[0].latency.e2e.clamped, 2);
        assert_eq!(merged.latency_histograms().unwrap().e2e.clamped(), 2);
    }

    /// Figures of a run that recorded nothing (valid, encoded empty histograms).
    fn empty() -> RunFigures {
        RunFigures {
            histograms: EncodedHistograms::encode(&LatencySet::default()).unwrap(),
            ..RunFigures::default()
        }
    }

    #[test]
    fn refuses_records_that_do_not_belong_together() {
        let a = record("a", empty());
        let mut b = record("b", empty());
        b.scenario_name = "group-chat".into();
        let err = merge(&[a.clone(), b]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot merge runs of different scenarios: run 0 is `chat`, run 1 is `group-chat`"
        );
        let mut c = record("c", empty());
        c.backend.name = "nats".into();
        assert!(matches!(
            merge(&[a, c]),
            Err(MergeError::DifferentBackends { other: 1, .. })
        ));
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }

    #[test]
    fn partial_and_verdicts_are_carried_over_honestly() {
        let a = record("a", empty());
        let mut b = record("b", empty());
        b.mark_partial("interrupted by Ctrl-C");
        b.verdicts
            .push(serde_json::json!({"rule": "p99", "severity": "OK"}));
        let merged = merge(&[a, b]).unwrap();
        assert!(merged.partial);
        assert_eq!(
            merged.partial_reason.as_deref(),
            Some("b: interrupted by Ctrl-C")
        );
        assert!(merged.verdicts.is_empty());
        assert!(merged.notes.iter().any(|n| n.contains("1 verdict(s)")));
    }
}
