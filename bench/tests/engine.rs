//! The engine end to end: the null backend (no I/O) and the real reference broker over
//! TCP. Counts are asserted exactly; nothing here depends on machine speed.

use std::sync::Arc;
use std::time::Duration;

use brokerbench_adapters::{Backend, ConnectOptions, DeliveryMode, NullBackend, ReferenceBackend};
use brokerbench_bench::{
    Join, Plan, ProducerPlan, RateSchedule, RunOptions, SizeDistribution, SubscriberPlan, TopicPlan,
};

fn plan(delivery: DeliveryMode, producers: usize, subscribers: usize, rate: f64) -> Plan {
    Plan {
        run_id: format!("test-{}", fastrand::u32(..)),
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(2),
        max_in_flight: 64,
        topics: vec![TopicPlan {
            name: "t".into(),
            delivery,
            cache: true,
            producers: (0..producers)
                .map(|_| ProducerPlan {
                    rate: RateSchedule::constant(rate),
                    size: SizeDistribution::Fixed(100),
                    keys: None,
                    burst: 1,
                    phase: Duration::ZERO,
                })
                .collect(),
            subscribers: (0..subscribers)
                .map(|_| SubscriberPlan {
                    join: Join::AtStart,
                    ack: false,
                    reply: None,
                })
                .collect(),
        }],
    }
}

async fn reference() -> (Arc<dyn Backend>, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(reference_broker::run(
        listener,
        reference_broker::Config::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let backend = ReferenceBackend::connect(&format!("tcp://{addr}"), ConnectOptions::new())
        .await
        .unwrap();
    (Arc::new(backend), stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_on_the_null_backend_is_exact() {
    let plan = plan(DeliveryMode::All, 2, 3, 500.0);
    let outcome =
        brokerbench_bench::run(&plan, Arc::new(NullBackend::new()), RunOptions::default())
            .await
            .unwrap();
    let f = &outcome.figures;
    // 2 producers × 500/s × 1 s measured.
    assert_eq!(f.volume.offered, 1000, "{f:#?}");
    assert_eq!(f.volume.published, 1000);
    assert_eq!(f.volume.delivered, 3000);
    assert_eq!(f.correctness.lost, 0);
    assert_eq!(f.correctness.duplicated, 0);
    assert_eq!(f.correctness.phantom, 0);
    assert!(outcome.partial.is_none());
    assert_eq!(f.latency.e2e.count, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_broker_fan_out_and_competing_consumers() {
    let (backend, _stop) = reference().await;
    let outcome = brokerbench_bench::run(
        &plan(DeliveryMode::All, 1, 2, 1000.0),
        backend.clone(),
        RunOptions::default(),
    )
    .await
    .unwrap();
    let f = &outcome.figures;
    assert_eq!(f.volume.published, 1000, "{f:#?}");
    assert_eq!(f.volume.delivered, 2000);
    assert_eq!(f.correctness.lost, 0);
    assert_eq!(f.availability.publish, Some(1.0));

    let outcome = brokerbench_bench::run(
        &plan(DeliveryMode::One, 2, 3, 500.0),
        backend,
        RunOptions::default(),
    )
    .await
    .unwrap();
    let f = &outcome.figures;
    assert_eq!(f.volume.published, 1000, "{f:#?}");
    assert_eq!(
        f.volume.delivered, 1000,
        "each message to exactly one consumer"
    );
    assert_eq!(f.correctness.lost, 0);
    assert_eq!(f.correctness.duplicated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_broker_receipts_reach_the_senders_inbox() {
    let (backend, _stop) = reference().await;
    let mut plan = plan(DeliveryMode::All, 1, 1, 500.0);
    plan.topics[0].subscribers[0].reply = Some(brokerbench_bench::ReplyPlan { size: 64, count: 2 });
    let outcome = brokerbench_bench::run(&plan, backend, RunOptions::default())
        .await
        .unwrap();
    let f = &outcome.figures;
    // 500 messages measured, each answered by two receipts; every one arrives once.
    assert_eq!(f.volume.published, 500 + 1000, "{f:#?}");
    assert_eq!(f.volume.delivered, 500 + 1000);
    assert_eq!(f.correctness.lost, 0);
    assert_eq!(f.correctness.duplicated, 0);
    assert_eq!(f.correctness.phantom, 0);
    assert!(outcome.partial.is_none(), "{:?}", outcome.partial);
}
