//! The conformance checks against the reference broker (started in-process for each test):
//! every check passes on the broker as it is, and each one catches its anomaly when a
//! wrapper (`adapters::faults::FaultyBackend`) loses, duplicates, reorders, corrupts,
//! replays, keeps delivering or swallows on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brokerbench_adapters::faults::{Fault, FaultPicker, FaultPlan, FaultyBackend};
use brokerbench_adapters::{
    AckMode, AdapterError, Backend, BackendKind, ConnectOptions, Delivery, StartPosition,
};
use brokerbench_results::{ConformanceVerdict as Verdict, Counts};
use brokerbench_scenarios::conformance::message::Message;
use brokerbench_scenarios::conformance::{
    BrokerConnector, Check, CheckReport, Connector, Params, run_check,
};
use futures::future::BoxFuture;
use tokio::sync::oneshot;

/// A reference broker in this process, stopped when dropped.
struct Broker {
    url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Broker {
    async fn start() -> Broker {
        let config = reference_broker::Config {
            // Longer than any wait of the checks: a message the checks must see come back
            // comes back because of what they test (a disconnect, a nack), not a timeout.
            ack_timeout: Duration::from_secs(120),
            ..reference_broker::Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(reference_broker::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Broker {
            url,
            stop: Some(stop),
        }
    }

    fn connector(&self) -> BrokerConnector {
        BrokerConnector::new(BackendKind::Reference, self.url.clone())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connects through `inner`, then wraps every backend in a [`FaultyBackend`] with `plan`.
struct Faulty {
    inner: BrokerConnector,
    plan: FaultPlan,
}

impl Connector for Faulty {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn url(&self) -> &str {
        self.inner.url()
    }

    fn connect<'a>(
        &'a self,
        url: &'a str,
        options: ConnectOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Backend>, AdapterError>> {
        Box::pin(async move {
            let backend = self.inner.connect(url, options).await?;
            Ok(
                Box::new(FaultyBackend::new(Arc::from(backend), self.plan.clone()))
                    as Box<dyn Backend>,
            )
        })
    }
}

/// Small, quick parameters with generous time limits: the anomalies are injected, so
/// nothing here depends on how fast the machine is.
fn params() -> Params {
    Params {
        messages: 50,
        order_messages: 200,
        timeout: Duration::from_secs(10),
        settle: Duration::from_millis(200),
        grace: Duration::from_millis(300),
        replay_messages: 20,
        redelivery_timeout: Duration::from_secs(10),
        nack_within: Duration::from_secs(5),
        dedup_ids: 10,
        retention_excess: 20,
        slow_messages: 1000,
        slow_size: 1024,
        slow_rate: 1000.0,
        slow_max_latency: Duration::from_secs(10),
        large_sizes: vec![1, 1024, 256 * 1024],
        reconnect_messages: 300,
        reconnect_rate: 200.0,
        reconnect_timeout: Duration::from_secs(10),
        ..Params::default()
    }
}

async fn clean(check: Check) -> CheckReport {
    let broker = Broker::start().await;
    run_check(check, &broker.connector(), &params()).await
}

async fn faulty(check: Check, plan: FaultPlan) -> CheckReport {
    faulty_with(check, plan, params()).await
}

async fn faulty_with(check: Check, plan: FaultPlan, params: Params) -> CheckReport {
    let broker = Broker::start().await;
    let connector = Faulty {
        inner: broker.connector(),
        plan,
    };
    run_check(check, &connector, &params).await
}

/// Asserts `report` failed, that `count` of its counts is positive and that the reason
/// mentions `words`.
fn assert_caught(report: &CheckReport, count: impl Fn(&Counts) -> u64, words: &str) {
    assert_eq!(report.verdict, Verdict::Fail, "{report:?}");
    assert!(count(&report.counts) > 0, "{report:?}");
    assert!(report.reason.contains(words), "{}", report.reason);
}

/// A picker applying `fault` to the delivery whose message has sequence number `seq`.
fn on_seq(seq: u32, fault: Fault) -> FaultPicker {
    Arc::new(move |d: &Delivery| match Message::decode(&d.payload) {
        Ok(m) if m.id.seq == seq => fault,
        _ => Fault::Pass,
    })
}

fn with_picker(picker: FaultPicker) -> FaultPlan {
    FaultPlan {
        picker: Some(picker),
        ..FaultPlan::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_the_reference_broker() {
    let broker = Broker::start().await;
    let params = params();
    for check in Check::ALL {
        let report = run_check(check, &broker.connector(), &params).await;
        assert_eq!(
            report.verdict,
            Verdict::Pass,
            "{check}: {} ({:?})",
            report.reason,
            report.counts
        );
        assert!(!report.reason.is_empty(), "{check}");
        assert!(report.counts.published > 0, "{check}: {:?}", report.counts);
    }
}

#[tokio::test]
async fn an_unreachable_broker_is_an_error_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let connector = BrokerConnector::new(BackendKind::Reference, url.clone());
    let report = run_check(Check::Fanout, &connector, &params()).await;
    assert_eq!(report.verdict, Verdict::Error);
    assert!(
        report.reason.starts_with("cannot connect"),
        "{}",
        report.reason
    );
    assert!(report.reason.contains(&url), "{}", report.reason);
}

#[tokio::test]
async fn fanout_catches_a_loss_and_a_corruption() {
    // The second subscriber loses one message.
    let plan = FaultPlan {
        picker_for: Some(Arc::new(|n| (n == 1).then(|| on_seq(7, Fault::Drop)))),
        ..FaultPlan::default()
    };
    let report = faulty(Check::Fanout, plan).await;
    assert_caught(
        &report,
        |c| c.lost,
        "subscriber 2 of 3: lost 1 (missing p0#7)",
    );
    let report = faulty(Check::Fanout, with_picker(on_seq(3, Fault::Corrupt))).await;
    assert_caught(&report, |c| c.phantom, "phantom 1");
    assert_eq!(
        report.counts.lost, 3,
        "the corrupted one never arrived intact anywhere"
    );
}

#[tokio::test]
async fn compete_catches_a_message_delivered_twice() {
    let report = faulty(Check::Compete, with_picker(on_seq(3, Fault::Duplicate))).await;
    assert_caught(&report, |c| c.duplicated, "reached more than one consumer");
}

#[tokio::test]
async fn key_order_catches_a_reordering_within_a_key() {
    let params = Params {
        keys: 1,
        ..params()
    };
    let report = faulty_with(
        Check::KeyOrder,
        with_picker(on_seq(10, Fault::HoldForNext)),
        params,
    )
    .await;
    assert_caught(
        &report,
        |c| c.reordered,
        "before an earlier message of the same key",
    );
}

#[tokio::test]
async fn total_order_catches_a_reordering() {
    let report = faulty(
        Check::TotalOrder,
        with_picker(on_seq(10, Fault::HoldForNext)),
    )
    .await;
    assert_caught(&report, |c| c.reordered, "1 deliveries came before");
}

#[tokio::test]
async fn late_replay_catches_a_replayed_message_missing() {
    // Subscription 1 is the first one after a sequence (a quarter of the way); it loses
    // the first message it replays.
    let first = Arc::new(AtomicUsize::new(0));
    let plan = FaultPlan {
        picker_for: Some(Arc::new(move |n| {
            let first = first.clone();
            (n == 1).then(|| -> FaultPicker {
                Arc::new(move |_| {
                    if first.fetch_add(1, Ordering::Relaxed) == 0 {
                        Fault::Drop
                    } else {
                        Fault::Pass
                    }
                })
            })
        })),
        ..FaultPlan::default()
    };
    let report = faulty(Check::LateReplay, plan).await;
    assert_caught(
        &report,
        |c| c.lost,
        "the subscriber after sequence 5: lost 1 (missing p0#6)",
    );
}

#[tokio::test]
async fn live_only_catches_history_delivered_to_a_live_subscriber() {
    let plan = FaultPlan {
        subscribe_as: Some(Arc::new(|spec| {
            if spec.start == StartPosition::Latest {
                spec.start(StartPosition::Beginning)
            } else {
                spec
            }
        })),
        ..FaultPlan::default()
    };
    let report = faulty(Check::LiveOnly, plan).await;
    assert_caught(
        &report,
        |c| c.details["published_before_and_delivered"],
        "published before it subscribed were delivered",
    );
}

#[tokio::test]
async fn unsubscribe_catches_deliveries_after_leaving() {
    let plan = FaultPlan {
        deliver_after_unsubscribe: true,
        ..FaultPlan::default()
    };
    let report = faulty(Check::Unsubscribe, plan).await;
    assert_caught(&report, |c| c.late, "after its unsubscribe was confirmed");
}

#[tokio::test]
async fn ack_redelivery_catches_messages_lost_with_the_consumer() {
    // The consumers believe they ack by hand; the broker was told to ack automatically.
    let plan = FaultPlan {
        subscribe_as: Some(Arc::new(|spec| spec.ack(AckMode::Auto))),
        ..FaultPlan::default()
    };
    let report = faulty(Check::AckRedelivery, plan).await;
    assert_caught(&report, |c| c.lost, "never reached B");
}

#[tokio::test]
async fn nack_requeue_catches_a_nack_that_does_nothing() {
    let plan = FaultPlan {
        swallow_nacks: true,
        ..FaultPlan::default()
    };
    let params = Params {
        nack_within: Duration::from_secs(1),
        ..params()
    };
    let report = faulty_with(Check::NackRequeue, plan, params).await;
    assert_caught(
        &report,
        |c| c.lost,
        "after nack 1 the message did not come back within 1s",
    );
}

#[tokio::test]
async fn dead_letter_catches_a_dead_letter_delivered_twice() {
    let dead_letters: FaultPicker = Arc::new(|d: &Delivery| {
        if d.topic.starts_with("$dlq.") {
            Fault::Duplicate
        } else {
            Fault::Pass
        }
    });
    let report = faulty(Check::DeadLetter, with_picker(dead_letters)).await;
    assert_caught(&report, |c| c.duplicated, "the dead letter arrived 2 times");
}

#[tokio::test]
async fn dead_letter_catches_a_broker_giving_up_at_another_count() {
    // The broker dead-letters after its default 5 deliveries; the check is told 3.
    let params = Params {
        dead_letter_attempts: 3,
        ..params()
    };
    let broker = Broker::start().await;
    let report = run_check(Check::DeadLetter, &broker.connector(), &params).await;
    assert_caught(
        &report,
        |c| c.details["attempts_before_dead_letter"],
        "dead-lettered after 5 deliveries, where 3 are configured",
    );
}

#[tokio::test]
async fn dedup_catches_ids_that_do_not_reach_the_broker() {
    let plan = FaultPlan {
        publish_as: Some(Arc::new(|mut request| {
            request.id = None;
            request
        })),
        ..FaultPlan::default()
    };
    let report = faulty(Check::Dedup, plan).await;
    assert_caught(
        &report,
        |c| c.duplicated,
        "delivered twice to the live subscriber",
    );
}

#[tokio::test]
async fn slow_consumer_catches_a_silent_loss() {
    let plan = FaultPlan {
        drop_when_full: true,
        ..FaultPlan::default()
    };
    let report = faulty(Check::SlowConsumer, plan).await;
    assert_caught(&report, |c| c.lost, "the slow subscriber silently missed");
    assert_eq!(report.counts.details["signalled_drops"], 0);
}

#[tokio::test]
async fn retention_trim_catches_a_retained_message_missing() {
    // 100 retained of 120: the last one goes missing on the way to the late reader.
    let report = faulty(Check::RetentionTrim, with_picker(on_seq(119, Fault::Drop))).await;
    assert_caught(&report, |c| c.lost, "lost, not trimmed (p0#119)");
    assert_eq!(report.counts.trimmed, 20);
}

#[tokio::test]
async fn large_message_catches_a_damaged_payload() {
    let damage_large: FaultPicker = Arc::new(|d: &Delivery| {
        if d.payload.len() > 100_000 {
            Fault::Corrupt
        } else {
            Fault::Pass
        }
    });
    let report = faulty(Check::LargeMessage, with_picker(damage_large)).await;
    assert_caught(
        &report,
        |c| c.phantom,
        "256 KiB arrived with different bytes",
    );
}

#[tokio::test]
async fn reconnect_catches_messages_lost_across_the_cut() {
    // Every subscription after the first (the ones made after the cut) loses its first
    // five deliveries, as a client dropping its buffer on reconnect would.
    let plan = FaultPlan {
        picker_for: Some(Arc::new(|n| {
            (n >= 1).then(|| -> FaultPicker {
                let seen = Arc::new(AtomicUsize::new(0));
                Arc::new(move |_| {
                    if seen.fetch_add(1, Ordering::Relaxed) < 5 {
                        Fault::Drop
                    } else {
                        Fault::Pass
                    }
                })
            })
        })),
        ..FaultPlan::default()
    };
    let report = faulty(Check::Reconnect, plan).await;
    assert_caught(
        &report,
        |c| c.lost,
        "confirmed messages never reached the subscriber",
    );
    assert!(report.counts.details["resubscribes"] >= 1, "{report:?}");
}

#[tokio::test]
async fn a_clean_reconnect_reports_what_it_did() {
    let report = clean(Check::Reconnect).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:?}");
    let details = &report.counts.details;
    assert!(details["connections_cut"] >= 2, "{details:?}");
    assert!(details["resubscribes"] >= 1, "{details:?}");
    assert!(details["new_producers"] >= 1, "{details:?}");
    assert_eq!(report.counts.lost, 0);
}
