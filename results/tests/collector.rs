//! Availability, saturation, volume, compute and interval handling on known inputs.

use std::time::Duration;

use brokerbench_results::collector::{SEAL_LAG_INTERVALS, delivery_availability, is_saturated};
use brokerbench_results::recorder::INTERVAL_NS;
use brokerbench_results::{
    Collector, Delivery, IntervalSnapshot, LatencyHistogram, Recorder, snapshot_channel,
};
use tokio::sync::mpsc;

const S: u64 = INTERVAL_NS;

fn drain(rx: &mut mpsc::Receiver<IntervalSnapshot>, c: &mut Collector) {
    while let Ok(s) = rx.try_recv() {
        c.ingest(s);
    }
}

fn finish(r: Recorder, rx: &mut mpsc::Receiver<IntervalSnapshot>, c: &mut Collector) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(r.finish()).unwrap();
    drain(rx, c);
}

#[test]
fn saturation_rule() {
    assert!(!is_saturated(1_000.0, 1_000.0));
    assert!(
        !is_saturated(1_000.0, 950.0),
        "exactly 5 % behind is not saturated"
    );
    assert!(is_saturated(1_000.0, 949.9));
    assert!(!is_saturated(0.0, 0.0));
    assert_eq!(delivery_availability(0, 0, 0), None);
    assert_eq!(delivery_availability(3, 1, 0), Some(0.75));
}

/// Three measured seconds at 100 msg/s offered. Second 1 has a failed and a timed-out
/// publish; second 2 has a lost delivery; the producer falls behind overall.
#[test]
fn known_run_figures() {
    let (tx, mut rx) = snapshot_channel();
    let mut producer = Recorder::new(tx.clone());
    let mut consumer = Recorder::new(tx);
    let mut c = Collector::new();
    for i in 0..3 {
        c.record_offered(i, 100);
    }
    // Interval 0: 100 ok. Interval 1: 88 ok, 1 failed, 1 unknown. Interval 2: 90 ok.
    for (interval, ok) in [(0u64, 100u64), (1, 88), (2, 90)] {
        for k in 0..ok {
            let intended = interval * S + k * 10_000_000;
            producer.record_publish_ok(intended + 2_000_000, intended, intended + 1_000);
            consumer.record_delivery(
                intended + 3_000_000,
                intended,
                intended + 1_000,
                Delivery::First,
            );
        }
        if interval == 1 {
            producer.record_publish_failed(S + 900_000_000, S + 890_000_000, S + 890_000_000);
            producer.record_publish_unknown(S + 950_000_000, S + 940_000_000, S + 940_000_000);
        }
    }
    consumer.record_delivery(2 * S + 5, 0, 0, Delivery::Duplicate);
    consumer.record_phantom(2 * S + 6);
    c.record_lost(2, 1);
    c.record_broker_sample(0, 10.0, 100);
    c.record_broker_sample(1, 30.0, 300);
    c.record_broker_sample(1, f64::NAN, 300); // ignored for CPU, kept for RSS
    finish(producer, &mut rx, &mut c);
    finish(consumer, &mut rx, &mut c);
    let f = c.finish(Duration::from_secs(3)).unwrap();

    // Volume: 278 published over 3 s against 300 offered -> 92.7 % -> saturated.
    assert_eq!(f.volume.offered, 300);
    assert_eq!(f.volume.published, 278);
    assert_eq!(f.volume.attempted, 280);
    assert_eq!(f.volume.offered_rate, 100.0);
    assert!((f.volume.achieved_publish_rate - 278.0 / 3.0).abs() < 1e-9);
    assert!(f.volume.saturated);
    assert_eq!(f.volume.delivered, 278);

    // Availability.
    assert_eq!(f.availability.publish, Some(278.0 / 280.0));
    assert_eq!(f.availability.delivery, Some(278.0 / 279.0));
    assert_eq!(f.availability.unavailable_intervals, 2);

    // Correctness.
    assert_eq!(f.correctness.lost, 1);
    assert_eq!(f.correctness.duplicated, 1);
    assert_eq!(f.correctness.phantom, 1);

    // Intervals.
    assert_eq!(f.intervals.len(), 3);
    let [i0, i1, i2] = [&f.intervals[0], &f.intervals[1], &f.intervals[2]];
    assert_eq!(i0.availability.publish, Some(1.0));
    assert!(!i0.availability.unavailable);
    assert!(!i0.volume.saturated);
    assert_eq!(i1.availability.publish, Some(88.0 / 90.0));
    assert!(i1.availability.unavailable);
    assert!(i1.volume.saturated, "88 of 100 offered");
    assert_eq!(i2.availability.delivery, Some(90.0 / 91.0));
    assert!(i2.availability.unavailable);
    assert_eq!(i2.correctness.lost, 1);
    assert_eq!(i0.volume.achieved_publish_rate, 100.0);

    // Latency: corrected e2e 3 ms, uncorrected 2.999 ms, publish-ack 2 ms, send delay 1 µs.
    let e2e = f.latency.e2e;
    assert_eq!(e2e.count, 278);
    assert!((e2e.p50_us.unwrap() - 3_000.0).abs() <= 3.0);
    assert!((f.latency.e2e_uncorrected.p50_us.unwrap() - 2_999.0).abs() <= 3.0);
    assert!((f.latency.publish_ack.p99_us.unwrap() - 2_000.0).abs() <= 2.0);
    assert_eq!(f.latency.send_delay.count, 280);
    assert_eq!(f.latency.send_delay.p50_us, Some(1.0));

    // Compute.
    assert_eq!(f.compute.cpu_percent, Some(20.0));
    assert_eq!(f.compute.cpu_percent_max, Some(30.0));
    assert_eq!(f.compute.rss_bytes, Some(700 / 3));
    assert_eq!(f.compute.rss_bytes_max, Some(300));
    assert_eq!(f.compute.samples, 3);
    assert_eq!(i1.compute.cpu_percent, Some(30.0));
    assert_eq!(i2.compute.cpu_percent, None);
}

#[test]
fn empty_run_has_null_figures() {
    let f = Collector::new().finish(Duration::from_secs(10)).unwrap();
    assert!(f.intervals.is_empty());
    assert_eq!(f.latency.e2e.p99_us, None);
    assert_eq!(f.availability.publish, None);
    assert_eq!(f.availability.delivery, None);
    assert_eq!(f.compute.cpu_percent, None);
    assert!(!f.volume.saturated);
}

#[test]
fn gaps_in_the_series_are_filled() {
    let mut c = Collector::new();
    c.record_offered(4, 10);
    let f = c.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(f.intervals.len(), 5);
    assert_eq!(
        f.intervals.iter().map(|i| i.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(f.intervals[4].volume.offered, 10);
    assert_eq!(f.intervals[0].latency.e2e.count, 0);
}

/// A snapshot that arrives after its interval was sealed is merged all the same.
#[test]
fn late_snapshot_reopens_sealed_interval() {
    let (tx, mut rx) = snapshot_channel();
    let mut fast = Recorder::new(tx.clone());
    let mut slow = Recorder::new(tx);
    let mut c = Collector::new();
    let mut expected0 = LatencyHistogram::new();
    for k in 0..50u64 {
        fast.record_delivery(
            k * 1_000_000 + 5_000,
            k * 1_000_000,
            k * 1_000_000,
            Delivery::First,
        );
        expected0.record(5_000);
        slow.record_delivery(
            k * 1_000_000 + 70_000,
            k * 1_000_000,
            k * 1_000_000,
            Delivery::First,
        );
        expected0.record(70_000);
    }
    // The fast task moves far ahead: interval 0 gets sealed.
    for i in 1..=(SEAL_LAG_INTERVALS + 5) {
        fast.record_phantom(i * S);
        drain(&mut rx, &mut c);
    }
    assert_eq!(c.reopened_intervals(), 0);
    // The slow task only now hands off interval 0.
    slow.tick(20 * S);
    drain(&mut rx, &mut c);
    assert_eq!(c.reopened_intervals(), 1);
    finish(fast, &mut rx, &mut c);
    finish(slow, &mut rx, &mut c);
    let f = c.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(f.intervals[0].latency.e2e, expected0.summary());
    assert_eq!(f.intervals[0].volume.delivered, 100);
    let decoded = LatencyHistogram::from_base64(&f.intervals[0].histograms.e2e).unwrap();
    assert_eq!(decoded.as_hdr(), expected0.as_hdr());
}

#[test]
fn clamped_values_reach_the_figures() {
    let (tx, mut rx) = snapshot_channel();
    let mut r = Recorder::new(tx);
    // A message whose intended send time is 2 h before it arrives.
    let two_hours = 7_200 * S;
    r.record_delivery(two_hours + 10, 10, 10, Delivery::First);
    r.record_delivery(two_hours + 20, two_hours, two_hours, Delivery::First);
    let mut c = Collector::new();
    finish(r, &mut rx, &mut c);
    let f = c.finish(Duration::from_secs(7_201)).unwrap();
    assert_eq!(f.latency.e2e.count, 2);
    assert_eq!(f.latency.e2e.clamped, 1);
    assert_eq!(f.intervals[7_200].latency.e2e.clamped, 1);
    assert_eq!(f.intervals.len(), 7_201);
}

#[test]
fn absurd_interval_is_an_error_not_a_hang() {
    let mut c = Collector::new();
    c.record_offered(u64::MAX / INTERVAL_NS, 1);
    let err = c.finish(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(
        err,
        brokerbench_results::CollectorError::IntervalOutOfRange { .. }
    ));
}

/// Publishes that only complete during the drain count, but not in the achieved rate:
/// a producer that fell behind shows as saturated.
#[tokio::test]
async fn completions_in_the_drain_do_not_inflate_the_achieved_rate() {
    use brokerbench_results::{Collector, Recorder, snapshot_channel};
    use std::time::Duration;
    let (tx, mut rx) = snapshot_channel();
    let mut recorder = Recorder::new(tx);
    // 2 s measured at 100 msgs/s offered; 100 confirmed in the phase, 100 in the drain.
    for i in 0..200u64 {
        let now = 10_000_000 * i + if i < 100 { 0 } else { 1_500_000_000 };
        recorder.record_publish_ok(now, 10_000_000 * i, 10_000_000 * i);
    }
    recorder.finish().await.unwrap();
    let mut collector = Collector::new();
    collector.record_offered(0, 100);
    collector.record_offered(1, 100);
    collector.collect(&mut rx).await;
    let figures = collector.finish(Duration::from_secs(2)).unwrap();
    assert_eq!(figures.volume.published, 200);
    assert_eq!(figures.volume.offered_rate, 100.0);
    assert_eq!(figures.volume.achieved_publish_rate, 50.0);
    assert!(figures.volume.saturated);
}
