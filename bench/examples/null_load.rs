//! Drives the engine against the in-process null backend: measures the engine itself.
//!
//! `cargo run --release -p brokerbench-bench --example null_load -- PRODUCERS RATE_PER_PRODUCER SUBSCRIBERS [SECONDS]`

use std::sync::Arc;
use std::time::Duration;

use brokerbench_adapters::{DeliveryMode, NullBackend};
use brokerbench_bench::{
    Join, Plan, ProducerPlan, RateSchedule, RunOptions, SizeDistribution, SubscriberPlan, TopicPlan,
};

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let (producers, rate, subscribers) = (args[0] as usize, args[1], args[2] as usize);
    let seconds = args.get(3).copied().unwrap_or(5.0);
    let plan = Plan {
        run_id: "null-load".into(),
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(seconds),
        drain: Duration::from_secs(2),
        max_in_flight: 64,
        topics: (0..producers)
            .map(|i| TopicPlan {
                name: format!("t{i}"),
                delivery: DeliveryMode::All,
                cache: true,
                producers: vec![ProducerPlan {
                    rate: RateSchedule::constant(rate),
                    size: SizeDistribution::Fixed(100),
                    keys: None,
                    burst: 1,
                    phase: Duration::from_secs_f64(i as f64 / (producers as f64 * rate)),
                }],
                subscribers: (0..subscribers)
                    .map(|_| SubscriberPlan {
                        join: Join::AtStart,
                        ack: false,
                        reply: None,
                    })
                    .collect(),
            })
            .collect(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = runtime
        .block_on(brokerbench_bench::run(
            &plan,
            Arc::new(NullBackend::new()),
            RunOptions::default(),
        ))
        .expect("run");
    let f = &outcome.figures;
    let l = &f.latency;
    println!(
        "published {:.0}/s delivered {:.0}/s lost {} | send delay p50 {:?} p99 {:?} | e2e p50 {:?} p99 {:?} p99.9 {:?} max {:?} (µs)",
        f.volume.achieved_publish_rate,
        f.volume.achieved_delivery_rate,
        f.correctness.lost,
        l.send_delay.p50_us,
        l.send_delay.p99_us,
        l.e2e.p50_us,
        l.e2e.p99_us,
        l.e2e.p999_us,
        l.e2e.max_us
    );
}
