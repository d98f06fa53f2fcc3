//! The reference adapter against the real reference broker, started in-process on
//! 127.0.0.1:0 for each test.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use brokerbench_adapters::{
    AckMode, Backend, BackendKind, ConnectOptions, Delivery, ErrorKind, Producer, PublishOutcome,
    PublishRequest, ReferenceBackend, StartPosition, Subscription, SubscriptionSpec, connect,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod common;

use common::text;

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);

/// A reference broker running in this process until dropped.
struct Broker {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Broker {
    async fn start(config: reference_broker::Config) -> Broker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(reference_broker::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Broker {
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn default() -> Broker {
        Broker::start(reference_broker::Config::default()).await
    }

    async fn backend(&self) -> Box<dyn Backend> {
        connect(BackendKind::Reference, &self.url, ConnectOptions::new())
            .await
            .unwrap()
    }

    async fn reference(&self) -> ReferenceBackend {
        ReferenceBackend::connect(&self.url, ConnectOptions::new())
            .await
            .unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The next delivery, failing the test on an error item, an end, or a long wait.
async fn next(sub: &mut Subscription) -> Delivery {
    common::next_within(sub, PATIENCE).await
}

/// Whether nothing arrives for a while.
async fn stays_quiet(sub: &mut Subscription) -> bool {
    common::quiet_for(sub, QUIET).await
}

async fn publish_all(producer: &Producer, requests: impl IntoIterator<Item = PublishRequest>) {
    for request in requests {
        let outcome = producer.publish(request).await;
        assert_eq!(outcome, PublishOutcome::Ok);
    }
}

#[tokio::test]
async fn publish_is_confirmed_and_dedup_answers_duplicate() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    assert_eq!(backend.kind(), BackendKind::Reference);
    assert_eq!(backend.url(), broker.url);
    let producer = backend.producer().await.unwrap();
    assert_eq!(
        producer.publish(PublishRequest::new("t", "hello")).await,
        PublishOutcome::Ok
    );
    assert_eq!(
        producer
            .publish(PublishRequest::new("t", "x").id("m-1"))
            .await,
        PublishOutcome::Ok
    );
    assert_eq!(
        producer
            .publish(PublishRequest::new("t", "x").id("m-1"))
            .await,
        PublishOutcome::Duplicate
    );
    let stats = backend.broker_stats().await.unwrap().unwrap();
    assert_eq!(stats["messages_accepted"], 2);
    assert_eq!(stats["duplicates"], 1);
    drop(producer);
    drop(backend);
    broker.shutdown().await;
}

#[tokio::test]
async fn fan_out_reaches_three_subscribers_in_order() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let topic = backend.topic_name("run-fanout", "chat");
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            backend
                .subscribe(SubscriptionSpec::new(topic.as_str()))
                .await
                .unwrap(),
        );
    }
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        (0..50).map(|i| PublishRequest::new(topic.as_str(), format!("m{i}"))),
    )
    .await;
    for sub in &mut subs {
        for i in 0..50 {
            let d = next(sub).await;
            assert_eq!(text(&d), format!("m{i}"));
            assert_eq!(d.sequence, Some(i));
            assert_eq!(&*d.topic, topic);
            assert!(!d.redelivered);
        }
        assert!(stays_quiet(sub).await);
    }
}

#[tokio::test]
async fn one_reaches_exactly_one_subscriber_and_keys_stick() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let spec = SubscriptionSpec::new("work").group("workers");
        subs.push(backend.subscribe(spec).await.unwrap());
    }
    let producer = backend.producer().await.unwrap();
    const N: usize = 300;
    publish_all(
        &producer,
        (0..N).map(|i| {
            PublishRequest::new("work", format!("k{}:{i}", i % 7))
                .one()
                .key(format!("k{}", i % 7))
        }),
    )
    .await;
    let mut seen = BTreeSet::new();
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut per_sub = [0usize; 3];
    while seen.len() < N {
        let mut progressed = false;
        for (n, sub) in subs.iter_mut().enumerate() {
            while let Ok(Some(item)) = tokio::time::timeout(QUIET, sub.next()).await {
                let d = item.unwrap();
                let body = text(&d).to_owned();
                let key = d.key.clone().unwrap();
                assert!(body.starts_with(&format!("{key}:")));
                assert_eq!(
                    *owner.entry(key).or_insert(n),
                    n,
                    "a key moved between subscribers"
                );
                assert!(seen.insert(body.clone()), "{body} delivered twice");
                per_sub[n] += 1;
                progressed = true;
            }
        }
        assert!(progressed, "only {} of {N} delivered", seen.len());
    }
    assert_eq!(per_sub.iter().sum::<usize>(), N);
    for sub in &mut subs {
        assert!(stays_quiet(sub).await);
    }
}

#[tokio::test]
async fn replay_from_beginning_and_after_a_sequence_then_live() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        (0..10).map(|i| PublishRequest::new("history", format!("m{i}"))),
    )
    .await;
    let mut all = backend
        .subscribe(SubscriptionSpec::new("history").start(StartPosition::Beginning))
        .await
        .unwrap();
    let mut tail = backend
        .subscribe(SubscriptionSpec::new("history").start(StartPosition::AfterSequence(6)))
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(next(&mut all).await.sequence, Some(i));
    }
    for i in 7..10 {
        let d = next(&mut tail).await;
        assert_eq!((d.sequence, text(&d)), (Some(i), &*format!("m{i}")));
    }
    publish_all(&producer, [PublishRequest::new("history", "live")]).await;
    for sub in [&mut all, &mut tail] {
        let d = next(sub).await;
        assert_eq!((d.sequence, text(&d)), (Some(10), "live"));
        assert!(stays_quiet(sub).await);
    }
}

#[tokio::test]
async fn live_only_sees_nothing_published_before() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        (0..5).map(|i| PublishRequest::new("live", format!("old{i}"))),
    )
    .await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new("live"))
        .await
        .unwrap();
    assert!(
        stays_quiet(&mut sub).await,
        "a live-only subscriber got history"
    );
    publish_all(&producer, [PublishRequest::new("live", "new")]).await;
    let d = next(&mut sub).await;
    assert_eq!((text(&d), d.sequence), ("new", Some(5)));
}

#[tokio::test]
async fn nack_redelivers_to_the_other_consumer_and_ack_ends_it() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let spec = SubscriptionSpec::new("jobs").ack(AckMode::Manual);
    let mut a = backend.subscribe(spec.clone()).await.unwrap();
    let mut b = backend.subscribe(spec).await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new("jobs", "job-1").one()]).await;

    // Whoever got it nacks it; the other one gets it again, marked.
    let (first, mut first_sub, mut other_sub) = tokio::select! {
        d = a.next() => (d.unwrap().unwrap(), a, b),
        d = b.next() => (d.unwrap().unwrap(), b, a),
    };
    assert!(!first.redelivered);
    first_sub.nack(&first).await.unwrap();
    let again = next(&mut other_sub).await;
    assert_eq!(text(&again), "job-1");
    assert_eq!(again.sequence, first.sequence);
    assert!(again.redelivered);
    assert_eq!(again.attempt, Some(2));
    other_sub.ack(&again).await.unwrap();
    assert!(stays_quiet(&mut first_sub).await);
    assert!(stays_quiet(&mut other_sub).await);
    assert_eq!(first_sub.rejected_acks() + other_sub.rejected_acks(), 0);

    // Acking it again is refused by the broker: counted, not fatal.
    other_sub.ack(&again).await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        while other_sub.rejected_acks() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let stats = backend.broker_stats().await.unwrap().unwrap();
    assert_eq!(stats["redelivered"], 1);
}

#[tokio::test]
async fn unacked_messages_come_back_after_the_timeout_then_dead_letter() {
    let config = reference_broker::Config {
        ack_timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..reference_broker::Config::default()
    };
    let broker = Broker::start(config).await;
    let backend = broker.backend().await;
    let dlq = backend.dead_letter_topic("slow-jobs").unwrap();
    assert_eq!(dlq, "$dlq.slow-jobs");
    let mut dead = backend
        .subscribe(SubscriptionSpec::new(dlq.as_str()))
        .await
        .unwrap();
    let mut sub = backend
        .subscribe(SubscriptionSpec::new("slow-jobs").ack(AckMode::Manual))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new("slow-jobs", "job").one()]).await;
    let first = next(&mut sub).await;
    assert!(!first.redelivered);
    // Not acked: redelivered after the ack timeout, as attempt 2.
    let second = next(&mut sub).await;
    assert_eq!(second.sequence, first.sequence);
    assert!(second.redelivered);
    assert_eq!(second.attempt, Some(2));
    // Still not acked, attempts used up: dead-lettered.
    let dead_letter = next(&mut dead).await;
    assert_eq!(text(&dead_letter), "job");
    assert_eq!(&*dead_letter.topic, "$dlq.slow-jobs");
    assert!(stays_quiet(&mut sub).await);
}

#[tokio::test]
async fn unsubscribe_is_confirmed_and_ends_the_stream() {
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let mut sub = backend.subscribe(SubscriptionSpec::new("t")).await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new("t", "before")]).await;
    sub.unsubscribe().await.unwrap();
    publish_all(&producer, [PublishRequest::new("t", "after")]).await;
    let rest: Vec<String> = tokio::time::timeout(PATIENCE, (&mut sub).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|d| text(&d.unwrap()).to_owned())
        .collect();
    assert_eq!(rest, ["before"]);
}

#[tokio::test]
async fn slow_consumer_surfaces_as_an_error_item() {
    let config = reference_broker::Config {
        outbound_queue_bytes: 256 * 1024,
        ..reference_broker::Config::default()
    };
    let broker = Broker::start(config).await;
    let backend = broker.reference().await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new("flood"))
        .await
        .unwrap();
    let producer = Backend::producer(&backend).await.unwrap();
    let payload = bytes::Bytes::from("x".repeat(16 * 1024));
    // Publish without reading until the broker gives up on the subscriber. The client
    // buffers up to its channel bound, then the kernel buffers, then the broker's queue.
    let mut published = 0usize;
    let mut inflight = FuturesUnordered::new();
    loop {
        for _ in 0..256 {
            inflight.push(producer.publish(PublishRequest::new("flood", payload.clone())));
        }
        while let Some(outcome) = inflight.next().await {
            assert_eq!(outcome, PublishOutcome::Ok);
            published += 1;
        }
        let stats = backend.stats().await.unwrap();
        if stats["slow_consumer_disconnects"] != 0 {
            break;
        }
        assert!(
            published < 100_000,
            "no slow-consumer disconnect after {published} messages"
        );
    }
    // Now read: deliveries, then an error item — never a silent end.
    let mut delivered = 0usize;
    let error = loop {
        match tokio::time::timeout(PATIENCE, sub.next()).await.unwrap() {
            Some(Ok(_)) => delivered += 1,
            Some(Err(e)) => break e,
            None => panic!("stream ended silently after {delivered} deliveries"),
        }
    };
    assert!(delivered < published);
    // The broker sends its "Slow consumer" notice when it can; when it had to cut a line
    // short it cannot, and the client sees the cut connection.
    match error.kind() {
        ErrorKind::SlowConsumer => assert!(error.to_string().contains("Slow consumer"), "{error}"),
        ErrorKind::Closed => assert!(
            error.to_string().contains("closed the connection"),
            "{error}"
        ),
        other => panic!("unexpected error kind {other}: {error}"),
    }
    eprintln!("slow consumer error: {error}");
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn a_connection_that_publishes_and_subscribes_gets_its_own_messages() {
    let broker = Broker::default().await;
    let backend = broker.reference().await;
    let conn = backend.connection().await.unwrap();
    let mut sub = conn
        .subscribe(&SubscriptionSpec::new("echo"))
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(
            conn.publish(PublishRequest::new("echo", format!("m{i}")))
                .await,
            PublishOutcome::Ok
        );
    }
    for i in 0..20 {
        assert_eq!(text(&next(&mut sub).await), format!("m{i}"));
    }
    let err = conn
        .subscribe(&SubscriptionSpec::new("echo"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_throughput_smoke_200k() {
    const N: usize = 200_000;
    const IN_FLIGHT: usize = 64;
    let broker = Broker::default().await;
    let backend = broker.backend().await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new("firehose"))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    let consumer = tokio::spawn(async move {
        let mut count = 0usize;
        let mut last = -1i64;
        while count < N {
            let d = next(&mut sub).await;
            let seq = d.sequence.unwrap();
            assert!(seq > last, "out of order: {seq} after {last}");
            last = seq;
            count += 1;
        }
        count
    });
    let started = std::time::Instant::now();
    let payload = bytes::Bytes::from("p".repeat(100));
    let topic: std::sync::Arc<str> = "firehose".into();
    let mut inflight = FuturesUnordered::new();
    let mut confirmed = 0usize;
    for _ in 0..N {
        inflight.push(producer.publish(PublishRequest::new(topic.clone(), payload.clone())));
        if inflight.len() >= IN_FLIGHT {
            assert_eq!(inflight.next().await, Some(PublishOutcome::Ok));
            confirmed += 1;
        }
    }
    while let Some(outcome) = inflight.next().await {
        assert_eq!(outcome, PublishOutcome::Ok);
        confirmed += 1;
    }
    assert_eq!(confirmed, N);
    assert_eq!(consumer.await.unwrap(), N);
    let elapsed = started.elapsed();
    eprintln!(
        "{N} messages published and delivered in {elapsed:?} ({:.0} msg/s)",
        N as f64 / elapsed.as_secs_f64()
    );
}
