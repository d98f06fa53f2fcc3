//! Merging the shards of one sharded run: exact sums of counts and histograms, refusals
//! of sets that are not exactly one run, and shard records that read back.

use std::time::Duration;

use brokerbench_results::record::RunInfo;
use brokerbench_results::recorder::INTERVAL_NS;
use brokerbench_results::{
    BackendInfo, Collector, Delivery, HostFacts, MergeError, Recorder, RunFigures, RunRecord,
    ShardInfo, ShardSetError, StartTiming, merge, snapshot_channel,
};
use time::OffsetDateTime;
use time::macros::datetime;

const START: OffsetDateTime = datetime!(2026-12-06 21:00:00 UTC);

/// A shard's figures: `n` messages over two intervals, `seed` varying the latencies.
fn figures(n: u64, seed: u64) -> RunFigures {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = snapshot_channel();
        let mut r = Recorder::new(tx);
        let mut rng = fastrand::Rng::with_seed(seed);
        for i in 0..n {
            let intended = i * (2 * INTERVAL_NS / n);
            let sent = intended + rng.u64(100..5_000);
            r.record_publish_ok(sent + rng.u64(50_000..300_000), intended, sent);
            r.record_delivery(
                sent + rng.u64(200_000..9_000_000),
                intended,
                sent,
                Delivery::First,
            );
        }
        r.finish().await.unwrap();
        let mut c = Collector::new();
        c.collect(&mut rx).await;
        c.record_offered(0, n / 2);
        c.record_offered(1, n - n / 2);
        c.finish(Duration::from_secs(2)).unwrap()
    })
}

fn shard(index: u32, count: u32, n: u64) -> RunRecord {
    let info = RunInfo {
        run_id: "nightly-7".into(),
        scenario_name: "group-chat".into(),
        scenario: serde_json::json!({"name": "group-chat"}),
        alert_rules: serde_json::json!([]),
        backend: BackendInfo {
            name: "nats".into(),
            url: Some("nats://127.0.0.1:4222".into()),
            version: None,
        },
        host: HostFacts::default(),
        started_at: START - time::Duration::seconds(5),
        ended_at: START + time::Duration::seconds(5),
    };
    let mut record = RunRecord::new(info, figures(n, u64::from(index)));
    record.scenario_hash = Some("sha256:abc".into());
    record.shard = Some(ShardInfo {
        index,
        count,
        topics: 7,
        scenario_topics: 20,
    });
    record.start = Some(StartTiming {
        measured_from: START + time::Duration::microseconds(i64::from(index) * 40),
        requested: Some(START),
        offset_s: Some(f64::from(index) * 40e-6),
        slack_s: Some(3.5),
    });
    record
}

fn three() -> Vec<RunRecord> {
    vec![shard(0, 3, 900), shard(1, 3, 700), shard(2, 3, 650)]
}

#[test]
fn shards_merge_into_the_exact_sum() {
    let shards = three();
    let merged = merge(&shards).unwrap();
    let sum = |f: fn(&RunRecord) -> u64| shards.iter().map(f).sum::<u64>();
    let v = &merged.figures.volume;
    assert_eq!(v.published, 2_250);
    assert_eq!(v.offered, sum(|r| r.figures.volume.offered));
    assert_eq!(v.delivered, sum(|r| r.figures.volume.delivered));
    assert_eq!(
        merged.figures.latency.e2e.count,
        sum(|r| r.figures.latency.e2e.count)
    );
    // The run histogram is the sum of the shards' histograms, not an average.
    let mut added = shards[0].latency_histograms().unwrap();
    for r in &shards[1..] {
        added.add(&r.latency_histograms().unwrap());
    }
    assert_eq!(
        merged.latency_histograms().unwrap().e2e.as_hdr(),
        added.e2e.as_hdr()
    );
    // Per interval: counts summed, rates recomputed from the sums.
    for (k, interval) in merged.figures.intervals.iter().enumerate() {
        let published: u64 = shards
            .iter()
            .filter_map(|r| r.figures.intervals.get(k))
            .map(|i| i.volume.published)
            .sum();
        assert_eq!(interval.volume.published, published);
        assert_eq!(interval.volume.achieved_publish_rate, published as f64);
        assert_eq!(interval.availability.publish, Some(1.0));
    }
    assert_eq!(merged.run_id, "nightly-7");
    assert_eq!(merged.scenario_hash.as_deref(), Some("sha256:abc"));
    assert!(merged.shard.is_none(), "the merged record is a whole run");
    let start = merged.start.clone().unwrap();
    assert_eq!(start.requested, Some(START));
    assert_eq!(start.offset_s, shards[2].start.as_ref().unwrap().offset_s);
    assert!(merged.notes[0].starts_with("sharded run nightly-7 of 3 shards (0/3, 1/3, 2/3)"));
    // The order of the files does not matter.
    let mut reversed = shards.clone();
    reversed.reverse();
    assert_eq!(merge(&reversed).unwrap().figures, merged.figures);
    // A merged record reads back like any other.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.json");
    merged.write(&path).unwrap();
    assert_eq!(RunRecord::read(&path).unwrap(), merged);
}

fn refused(records: &[RunRecord]) -> ShardSetError {
    match merge(records) {
        Err(MergeError::Shards(err)) => err,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn refuses_sets_that_are_not_one_whole_run() {
    let names: Vec<String> = ["s0.json", "s1.json", "s2.json"].map(String::from).to_vec();
    // A shard missing.
    let err = refused(&three()[..2]);
    assert_eq!(
        err.describe(&names),
        "run nightly-7 has 3 shards but shard(s) 2/3 are missing: the records given hold only 0/3, 1/3 (a sharded run merges only with every shard)"
    );
    // A shard twice.
    let mut set = three();
    set[2] = shard(1, 3, 10);
    let err = refused(&set);
    assert_eq!(
        err.describe(&names),
        "the same shard appears twice: s1.json and s2.json"
    );
    // Another run.
    let mut set = three();
    set[1].run_id = "nightly-8".into();
    assert!(
        refused(&set)
            .describe(&names)
            .contains("s0.json and s1.json carry different run ids")
    );
    // Another scenario (or a record without a hash).
    let mut set = three();
    set[2].scenario_hash = Some("sha256:def".into());
    assert!(
        refused(&set)
            .describe(&names)
            .contains("different scenario hashes")
    );
    set[2].scenario_hash = None;
    assert!(matches!(
        refused(&set),
        ShardSetError::ScenarioHashes { first: 0, other: 2 }
    ));
    // A different shard count, a different start, a whole run among shards.
    let mut set = three();
    set[1].shard.as_mut().unwrap().count = 4;
    assert!(matches!(refused(&set), ShardSetError::Counts { .. }));
    let mut set = three();
    set[0].start.as_mut().unwrap().requested = Some(START + time::Duration::seconds(60));
    assert!(matches!(refused(&set), ShardSetError::StartTimes { .. }));
    let mut set = three();
    set[1].shard = None;
    assert_eq!(
        refused(&set).describe(&names),
        "s0.json is a shard of a sharded run but s1.json is not; merge the shards of one run only"
    );
}

/// Without a shared start instant, a shard whose measured phase began 2 s after the
/// others has its intervals placed 2 s later in the merged series.
#[test]
fn without_a_start_instant_intervals_align_on_the_measured_starts() {
    let mut set = three();
    for (i, r) in set.iter_mut().enumerate() {
        let start = r.start.as_mut().unwrap();
        start.requested = None;
        start.offset_s = None;
        start.measured_from = START + time::Duration::seconds(if i == 2 { 2 } else { 0 });
    }
    let merged = merge(&set).unwrap();
    assert_eq!(merged.figures.intervals.len(), 4);
    let at = |r: &RunRecord, k: usize| r.figures.intervals.get(k).map_or(0, |i| i.volume.published);
    assert_eq!(
        at(&merged, 2),
        at(&set[2], 0) + at(&set[0], 2) + at(&set[1], 2)
    );
    assert_eq!(at(&merged, 3), at(&set[2], 1));
    assert_eq!(
        merged.figures.intervals[0].volume.published,
        set[0].figures.intervals[0].volume.published + set[1].figures.intervals[0].volume.published
    );
    assert_eq!(merged.figures.volume.published, 2_250);
}

/// A record written before shards existed (no `scenario_hash`, `shard`, `start`) still
/// reads, and a whole-run record does not write the fields it does not have.
#[test]
fn records_without_the_shard_fields_still_read() {
    let mut old = shard(0, 1, 10);
    old.scenario_hash = None;
    old.shard = None;
    old.start = None;
    let text = serde_json::to_string(&old).unwrap();
    assert!(!text.contains("scenario_hash") && !text.contains("\"shard\""));
    let back = RunRecord::from_json(&text, std::path::Path::new("old.json")).unwrap();
    assert_eq!(back, old);
}
