//! Tests that prove the numbers: a backend that misbehaves in known ways, and the engine
//! must report exactly that. The broker behind the faults is the in-process null backend,
//! so the only latency is the one injected (plus the engine's own, which the delay test
//! measures and subtracts).

use std::sync::Arc;
use std::time::Duration;

use brokerbench_adapters::faults::{Fault, FaultPlan, FaultyBackend};
use brokerbench_adapters::{Backend, DeliveryMode, NullBackend};
use brokerbench_bench::{
    Envelope, Join, Plan, ProducerPlan, RateSchedule, RunOptions, RunOutcome, SizeDistribution,
    SubscriberPlan, TopicPlan,
};

fn plan(rate: f64, warmup: Duration, duration: Duration, max_in_flight: usize) -> Plan {
    Plan {
        run_id: format!("fidelity-{}", fastrand::u32(..)),
        warmup,
        duration,
        drain: Duration::from_secs(2),
        max_in_flight,
        topics: vec![TopicPlan {
            name: "t".into(),
            delivery: DeliveryMode::All,
            cache: true,
            producers: vec![ProducerPlan {
                rate: RateSchedule::constant(rate),
                size: SizeDistribution::Fixed(100),
                keys: None,
                burst: 1,
                phase: Duration::ZERO,
            }],
            subscribers: vec![SubscriberPlan {
                join: Join::AtStart,
                ack: false,
                reply: None,
            }],
        }],
    }
}

async fn run(plan: &Plan, faults: FaultPlan) -> RunOutcome {
    let inner: Arc<dyn Backend> = Arc::new(NullBackend::new());
    let backend = Arc::new(FaultyBackend::new(inner, faults));
    brokerbench_bench::run(plan, backend, RunOptions::default())
        .await
        .expect("the run completes")
}

/// Every delivery 20 ms late: the measured median moves by 20 ms, within 10 % (long
/// enough that the OS's wake-up jitter on a loaded machine stays well inside that).
///
/// Compared from the actual send (e2e uncorrected): the injector waits out each delay
/// by spinning on one of the runtime's two workers, so on a loaded machine it also
/// delays the producer's sends by milliseconds, which the corrected figure rightly
/// counts but which is not the delay injected after the send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_delivery_delay_is_recovered_within_ten_percent() {
    let p = plan(
        200.0,
        Duration::from_millis(200),
        Duration::from_secs(2),
        64,
    );
    let baseline = run(&p, FaultPlan::default()).await;
    let delayed = run(
        &p,
        FaultPlan {
            delivery_delay: Duration::from_millis(20),
            ..FaultPlan::default()
        },
    )
    .await;
    let base = baseline.figures.latency.e2e_uncorrected.p50_us.unwrap();
    let with_delay = delayed.figures.latency.e2e_uncorrected.p50_us.unwrap();
    let measured = with_delay - base;
    assert!(
        (18_000.0..=22_000.0).contains(&measured),
        "injected 20000 µs, measured {measured:.1} µs (p50 from the send {with_delay:.1} µs with the delay, {base:.1} µs without)"
    );
    // Every message arrives; the last 20 ms of them land after the measured phase, in
    // the drain, so the phase's delivered count is short by about four.
    assert_eq!(delayed.figures.volume.published, 400);
    assert_eq!(delayed.figures.correctness.lost, 0);
    assert!((395..=400).contains(&delayed.figures.volume.delivered));
}

/// A 200 ms stall every 2 s of a closed-loop-looking producer (one publish in flight):
/// measured from the intended send time the stall shows in p99.9; measured from the
/// actual send time (what a closed-loop tool reports) it hides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_stall_shows_in_the_corrected_figure_only() {
    let p = plan(1000.0, Duration::ZERO, Duration::from_secs(6), 1);
    let outcome = run(
        &p,
        FaultPlan {
            publish_stall: Some((Duration::from_secs(2), Duration::from_millis(200))),
            ..FaultPlan::default()
        },
    )
    .await;
    let latency = &outcome.figures.latency;
    let corrected = latency.e2e.p999_us.unwrap();
    let uncorrected = latency.e2e_uncorrected.p999_us.unwrap();
    assert!(
        corrected >= 150_000.0,
        "corrected p99.9 {corrected} µs should show the 200 ms stall"
    );
    assert!(
        uncorrected < 50_000.0,
        "uncorrected p99.9 {uncorrected} µs should not show it (corrected {corrected} µs)"
    );
    assert!(latency.send_delay.max_us.unwrap() >= 150_000.0);
    assert_eq!(outcome.figures.correctness.lost, 0);
}

/// Drops, duplicates and reorderings of known messages: each counter reports exactly the
/// injected number, and delivery availability is the known ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_losses_duplicates_and_reorderings_are_counted_exactly() {
    let p = plan(1000.0, Duration::ZERO, Duration::from_secs(2), 64);
    let picker = Arc::new(|d: &brokerbench_adapters::Delivery| {
        match Envelope::decode(&d.payload).map(|e| e.seq % 100) {
            Ok(5) => Fault::Drop,
            Ok(20) => Fault::Duplicate,
            Ok(40) => Fault::HoldForNext,
            _ => Fault::Pass,
        }
    });
    let outcome = run(
        &p,
        FaultPlan {
            picker: Some(picker),
            ..FaultPlan::default()
        },
    )
    .await;
    let f = &outcome.figures;
    assert_eq!(f.volume.published, 2000, "{f:#?}");
    assert_eq!(f.correctness.lost, 20);
    assert_eq!(f.correctness.duplicated, 20);
    assert_eq!(f.correctness.reordered, 20);
    assert_eq!(f.correctness.phantom, 0);
    assert_eq!(f.volume.delivered, 1980);
    let availability = f.availability.delivery.unwrap();
    assert!(
        (availability - 0.99).abs() < 1e-9,
        "delivery availability {availability}"
    );
    assert_eq!(f.availability.publish, Some(1.0));
}

/// Corrupted payloads count as phantom (and the messages they should have been, lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_payloads_are_phantom() {
    let p = plan(1000.0, Duration::ZERO, Duration::from_secs(1), 64);
    let picker = Arc::new(|d: &brokerbench_adapters::Delivery| {
        match Envelope::decode(&d.payload).map(|e| e.seq % 50) {
            Ok(7) => Fault::Corrupt,
            _ => Fault::Pass,
        }
    });
    let outcome = run(
        &p,
        FaultPlan {
            picker: Some(picker),
            ..FaultPlan::default()
        },
    )
    .await;
    let c = &outcome.figures.correctness;
    assert_eq!(c.phantom, 20, "{c:?}");
    assert_eq!(c.lost, 20);
    assert_eq!(outcome.figures.volume.delivered, 980);
}
