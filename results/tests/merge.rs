//! Merging per-task histograms gives exactly the histogram of all samples.

use brokerbench_results::histogram::HIGHEST_NS;
use brokerbench_results::recorder::INTERVAL_NS;
use brokerbench_results::{Collector, Delivery, LatencyHistogram, Recorder, snapshot_channel};
use proptest::prelude::*;

const QUANTILES: [f64; 9] = [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0, 0.75];

fn sample() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..2_048,
        0u64..10_000_000,
        0u64..HIGHEST_NS,
        (HIGHEST_NS - 10)..u64::MAX, // some clamped
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merged_equals_recorded_at_once(
        samples in prop::collection::vec((sample(), 0usize..8), 0..2_000)
    ) {
        let mut all = LatencyHistogram::new();
        let mut tasks = vec![LatencyHistogram::new(); 8];
        for &(value, task) in &samples {
            all.record(value);
            tasks[task].record(value);
        }
        let mut merged = LatencyHistogram::new();
        for t in &tasks {
            merged.add(t);
        }
        prop_assert_eq!(merged.count(), all.count());
        prop_assert_eq!(merged.clamped(), all.clamped());
        prop_assert_eq!(merged.max_ns(), all.max_ns());
        for q in QUANTILES {
            prop_assert_eq!(merged.value_at_quantile_ns(q), all.value_at_quantile_ns(q));
        }
        prop_assert_eq!(merged.summary(), all.summary());
        prop_assert_eq!(merged.as_hdr(), all.as_hdr());
        // And the encoded form carries exactly the same counts.
        let back = LatencyHistogram::from_base64(&merged.to_base64().unwrap()).unwrap();
        prop_assert_eq!(back.as_hdr(), all.as_hdr());
    }

    /// The full path: samples spread over tasks and intervals, through recorders, the
    /// bounded channel and the collector, give the run histogram of all samples, and each
    /// interval the histogram of its own samples.
    #[test]
    fn collector_run_and_intervals_equal_direct_recording(
        samples in prop::collection::vec((0u64..50_000_000, 0u64..5_000_000_000, 0usize..4), 1..500)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (figures, all, per_interval) = rt.block_on(async {
            let (tx, mut rx) = snapshot_channel();
            let mut recorders: Vec<Recorder> = (0..4).map(|_| Recorder::new(tx.clone())).collect();
            drop(tx);
            // Each task observes its events in time order: sort by (task, arrival time).
            let mut sorted = samples.clone();
            sorted.sort_by_key(|&(latency, at, task)| (task, at + latency));
            let mut all = LatencyHistogram::new();
            let mut per_interval = vec![LatencyHistogram::new(); 6];
            for &(latency, at, task) in &sorted {
                let now = at + latency;
                recorders[task].record_delivery(now, at, at, Delivery::First);
                all.record(latency);
                per_interval[(now / INTERVAL_NS) as usize].record(latency);
            }
            let collecting = tokio::spawn(async move {
                let mut c = Collector::new();
                c.collect(&mut rx).await;
                c
            });
            for r in recorders {
                r.finish().await.unwrap();
            }
            let collector = collecting.await.unwrap();
            let figures = collector.finish(std::time::Duration::from_secs(5)).unwrap();
            (figures, all, per_interval)
        });
        prop_assert_eq!(figures.latency.e2e, all.summary());
        prop_assert_eq!(figures.latency.e2e_uncorrected, all.summary());
        prop_assert_eq!(figures.volume.delivered, samples.len() as u64);
        let decoded = LatencyHistogram::from_base64(&figures.histograms.e2e).unwrap();
        prop_assert_eq!(decoded.as_hdr(), all.as_hdr());
        for interval in &figures.intervals {
            let expected = &per_interval[interval.index as usize];
            prop_assert_eq!(interval.latency.e2e, expected.summary());
            prop_assert_eq!(interval.volume.delivered, expected.count());
        }
        let total: u64 = figures.intervals.iter().map(|i| i.volume.delivered).sum();
        prop_assert_eq!(total, samples.len() as u64);
    }
}
