//! The RabbitMQ adapter against the local broker (`BROKERBENCH_RABBITMQ_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test skips, with a SKIPPED line, when the
//! broker is not running, and deletes what it created through the backend's teardown.
//! What teardown removed is checked through AMQP itself (a passive declare fails).

#![cfg(feature = "rabbitmq")]

mod common;

use common::text;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use brokerbench_adapters::rabbitmq::{MAX_DELIVERY_ATTEMPTS, RabbitMqBackend};
use brokerbench_adapters::{
    AckMode, Backend, BackendKind, Capability, ConnectOptions, Delivery, ErrorKind, Producer,
    PublishOutcome, PublishRequest, RunTopology, StartPosition, Subscription, SubscriptionSpec,
    TopicSpec,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const KIND: BackendKind = BackendKind::Rabbitmq;
/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(500);

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
        assert_eq!(producer.publish(request).await, PublishOutcome::Ok);
    }
}

/// Whether queue or exchange `name` exists, asked with a passive declare on a fresh
/// connection (a failed passive declare closes its channel).
async fn exists(what: &str, name: &str) -> bool {
    use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let url = common::url(KIND);
    let mut uri: lapin::uri::AMQPUri = url.parse().expect("URL");
    // lapin's parser drops an IP address host (it keeps only domain names).
    uri.authority.host = brokerbench_adapters::endpoint::endpoints(KIND, &url).expect("URL")[0]
        .host
        .clone();
    let conn = lapin::Connection::connect_uri(uri, lapin::ConnectionProperties::default())
        .await
        .expect("connect for a passive declare");
    let channel = conn.create_channel().await.expect("channel");
    let found = match what {
        "queue" => channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok(),
        _ => channel
            .exchange_declare(
                name.into(),
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok(),
    };
    let _ = conn.close(200, "OK".into()).await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_reports_version_and_hides_the_password() {
    let Some(backend) = common::backend(KIND, "connects_reports_version").await else {
        return;
    };
    assert_eq!(backend.kind(), KIND);
    let version = backend.server_version().expect("RabbitMQ says its version");
    assert!(version.starts_with("RabbitMQ "), "{version}");
    let url = common::url(KIND);
    if url.contains(":guest@") {
        assert!(backend.url().contains(":***@"), "{}", backend.url());
        assert!(!backend.url().contains("guest@"), "{}", backend.url());
    }
    let caps = backend.capabilities();
    for cap in [
        Capability::FanOut,
        Capability::Competing,
        Capability::LiveOnly,
        Capability::AckRedelivery,
        Capability::Nack,
        Capability::DeadLetter,
        Capability::RetentionLimit,
    ] {
        assert!(caps.contains(cap), "missing {cap}");
    }
    for cap in [
        Capability::Replay,
        Capability::Dedup,
        Capability::KeyOrdering,
    ] {
        assert!(!caps.contains(cap), "claims {cap}");
    }
    let topic = backend.topic_name("run", "orders");
    assert_eq!(
        backend.dead_letter_topic(&topic).as_deref(),
        Some("bb.run.orders.dead-letter")
    );
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_carries_payload_and_key() {
    let Some(backend) = common::backend(KIND, "round_trip").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("round-trip"), "chat");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    let long_key = "k".repeat(300);
    publish_all(
        &producer,
        [
            PublishRequest::new(topic.as_str(), "hello").key("customer-7"),
            PublishRequest::new(topic.as_str(), "no key"),
            PublishRequest::new(topic.as_str(), "empty key").key(""),
            PublishRequest::new(topic.as_str(), "long key").key(long_key.as_str()),
        ],
    )
    .await;
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "hello");
    assert_eq!(d.key.as_deref(), Some("customer-7"));
    assert_eq!(&*d.topic, topic);
    assert!(!d.redelivered);
    assert_eq!(d.attempt, None, "classic queues do not count deliveries");
    assert_eq!(d.sequence, None, "RabbitMQ has no per-topic sequence");
    let d = next(&mut sub).await;
    assert_eq!((text(&d), d.key.as_deref()), ("no key", None));
    let d = next(&mut sub).await;
    assert_eq!((text(&d), d.key.as_deref()), ("empty key", Some("")));
    let d = next(&mut sub).await;
    assert_eq!(
        (text(&d), d.key.as_deref()),
        ("long key", Some(long_key.as_str()))
    );
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_three_subscribers_in_order() {
    let Some(backend) = common::backend(KIND, "fan_out").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("fan-out"), "chat");
    backend
        .prepare(&RunTopology::new("fan-out").topic(TopicSpec::new(topic.as_str())))
        .await
        .unwrap();
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
        (0..200).map(|i| PublishRequest::new(topic.as_str(), format!("m{i}"))),
    )
    .await;
    for sub in &mut subs {
        for i in 0..200 {
            assert_eq!(text(&next(sub).await), format!("m{i}"));
        }
        assert!(stays_quiet(sub).await);
    }
    drop(subs);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_shares_the_messages() {
    let Some(backend) = common::backend(KIND, "group").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("group"), "work");
    backend
        .prepare(&RunTopology::new("group").topic(TopicSpec::new(topic.as_str()).group("workers")))
        .await
        .unwrap();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let spec = SubscriptionSpec::new(topic.as_str()).group("workers");
        subs.push(backend.subscribe(spec).await.unwrap());
    }
    // A fan-out subscriber beside the group still sees everything.
    let mut watcher = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    const N: usize = 300;
    publish_all(
        &producer,
        (0..N).map(|i| PublishRequest::new(topic.as_str(), format!("w{i}")).one()),
    )
    .await;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let deadline = Instant::now() + PATIENCE;
    while total < N && Instant::now() < deadline {
        for sub in &mut subs {
            while let Ok(Some(item)) =
                tokio::time::timeout(Duration::from_millis(50), sub.next()).await
            {
                let d = item.unwrap();
                assert!(seen.insert(text(&d).to_owned()), "duplicate {}", text(&d));
                total += 1;
            }
        }
    }
    assert_eq!(total, N);
    assert_eq!(seen.len(), N);
    for sub in &mut subs {
        assert!(stays_quiet(sub).await);
    }
    for i in 0..N {
        assert_eq!(text(&next(&mut watcher).await), format!("w{i}"));
    }
    drop((subs, watcher));
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_ack_nack_redelivers_and_double_ack_is_refused_locally() {
    let Some(backend) = common::backend(KIND, "manual_ack").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("manual"), "jobs");
    let spec = SubscriptionSpec::new(topic.as_str())
        .group("workers")
        .ack(AckMode::Manual);
    let mut sub = backend.subscribe(spec).await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        [PublishRequest::new(topic.as_str(), "job-1").key("k1")],
    )
    .await;
    let first = next(&mut sub).await;
    assert_eq!(text(&first), "job-1");
    assert!(!first.redelivered);
    sub.nack(&first).await.unwrap();
    let again = next(&mut sub).await;
    assert_eq!(text(&again), "job-1");
    assert_eq!(again.key.as_deref(), Some("k1"));
    assert!(again.redelivered);
    sub.ack(&again).await.unwrap();
    assert!(stays_quiet(&mut sub).await);
    // Acking again would make RabbitMQ close the channel: the adapter refuses it.
    sub.ack(&again).await.unwrap();
    assert_eq!(sub.rejected_acks(), 1);
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "job-2")]).await;
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "job-2");
    sub.ack(&d).await.unwrap();
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_go_to_another_member_when_a_consumer_leaves() {
    let Some(backend) = common::backend(KIND, "redelivery_on_leave").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("leave"), "jobs");
    let spec = SubscriptionSpec::new(topic.as_str())
        .group("workers")
        .ack(AckMode::Manual);
    let mut first = backend.subscribe(spec.clone()).await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        (0..3).map(|i| PublishRequest::new(topic.as_str(), format!("j{i}"))),
    )
    .await;
    for i in 0..3 {
        let d = next(&mut first).await;
        assert_eq!(text(&d), format!("j{i}"));
        assert!(!d.redelivered);
    }
    let mut second = backend.subscribe(spec).await.unwrap();
    assert!(
        stays_quiet(&mut second).await,
        "the messages are held by the first"
    );
    drop(first);
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let d = next(&mut second).await;
        assert!(d.redelivered, "{d:?}");
        got.insert(text(&d).to_owned());
        second.ack(&d).await.unwrap();
    }
    assert_eq!(got, BTreeSet::from(["j0".into(), "j1".into(), "j2".into()]));
    drop(second);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_sees_nothing_published_before() {
    let Some(backend) = common::backend(KIND, "latest").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("latest"), "news");
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        (0..5).map(|i| PublishRequest::new(topic.as_str(), format!("old{i}"))),
    )
    .await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Latest))
        .await
        .unwrap();
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "new")]).await;
    assert_eq!(text(&next(&mut sub).await), "new");
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_deliveries_and_ends_the_stream() {
    let Some(backend) = common::backend(KIND, "unsubscribe").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsub"), "t");
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let mut other = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "before")]).await;
    assert_eq!(text(&next(&mut other).await), "before");
    sub.unsubscribe().await.unwrap();
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "after")]).await;
    assert_eq!(text(&next(&mut other).await), "after");
    let rest: Vec<String> = tokio::time::timeout(PATIENCE, sub.by_ref().collect::<Vec<_>>())
        .await
        .expect("the stream ends after unsubscribe")
        .into_iter()
        .map(|item| text(&item.unwrap()).to_owned())
        .collect();
    assert_eq!(rest, ["before"]);
    drop((sub, other));
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_payload_round_trips() {
    let Some(backend) = common::backend(KIND, "one_mib").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("big"), "blobs");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    let payload: String = (0..1 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    publish_all(
        &producer,
        [PublishRequest::new(topic.as_str(), payload.clone())],
    )
    .await;
    let d = next(&mut sub).await;
    assert_eq!(d.payload.len(), 1 << 20);
    assert!(d.payload == payload.as_bytes());
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_pipelined_publishes_are_confirmed_and_delivered_in_order() {
    let Some(backend) = common::backend(KIND, "pipelined").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("pipe"), "load");
    backend
        .prepare(&RunTopology::new("pipe").topic(TopicSpec::new(topic.as_str())))
        .await
        .unwrap();
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    const N: usize = 5000;
    let body = "x".repeat(190);
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..N {
        inflight.push(producer.publish(PublishRequest::new(
            topic.as_str(),
            format!("{i:06}:{body}"),
        )));
    }
    let mut confirmed = 0;
    while let Some(outcome) = inflight.next().await {
        assert_eq!(outcome, PublishOutcome::Ok);
        confirmed += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(confirmed, N);
    eprintln!(
        "rabbitmq: {N} pipelined publishes of ~200 bytes confirmed in {elapsed:?} ({:.0} msgs/s)",
        N as f64 / elapsed.as_secs_f64()
    );
    for i in 0..N {
        let d = next(&mut sub).await;
        assert_eq!(&text(&d)[..6], format!("{i:06}"));
    }
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_to_an_undeclared_topic_keep_their_order() {
    let Some(backend) = common::backend(KIND, "undeclared_order").await else {
        return;
    };
    let Some(other) = common::backend(KIND, "undeclared_order").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("undeclared"), "t");
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    // A producer of another backend has not declared the exchange: its first publish
    // declares it while the others wait, in order.
    let producer = other.producer().await.unwrap();
    const N: usize = 2000;
    let mut inflight = FuturesUnordered::new();
    for i in 0..N {
        inflight.push(producer.publish(PublishRequest::new(topic.as_str(), format!("{i:05}"))));
    }
    while let Some(outcome) = inflight.next().await {
        assert_eq!(outcome, PublishOutcome::Ok);
    }
    for i in 0..N {
        assert_eq!(text(&next(&mut sub).await), format!("{i:05}"));
    }
    drop(sub);
    other.teardown().await.unwrap();
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_the_delivery_limit() {
    let Some(backend) = common::backend(KIND, "dead_letter").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("dlq"), "jobs");
    let dlq = backend.dead_letter_topic(&topic).unwrap();
    backend
        .prepare(
            &RunTopology::new("dlq").topic(
                TopicSpec::new(topic.as_str())
                    .group("workers")
                    .dead_letter(true),
            ),
        )
        .await
        .unwrap();
    let mut dead = backend
        .subscribe(SubscriptionSpec::new(dlq.as_str()))
        .await
        .unwrap();
    let spec = SubscriptionSpec::new(topic.as_str())
        .group("workers")
        .ack(AckMode::Manual);
    let mut sub = backend.subscribe(spec).await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        [
            PublishRequest::new(topic.as_str(), "poison").key("p"),
            PublishRequest::new(topic.as_str(), "fine"),
        ],
    )
    .await;
    let mut poison_attempts = Vec::new();
    while poison_attempts.len() < MAX_DELIVERY_ATTEMPTS as usize {
        let d = next(&mut sub).await;
        if text(&d) == "fine" {
            assert_eq!(d.attempt, Some(1));
            sub.ack(&d).await.unwrap();
            continue;
        }
        assert_eq!(text(&d), "poison");
        assert_eq!(d.redelivered, !poison_attempts.is_empty(), "{d:?}");
        poison_attempts.push(d.attempt);
        sub.nack(&d).await.unwrap();
    }
    let expected: Vec<Option<u32>> = (1..=MAX_DELIVERY_ATTEMPTS).map(Some).collect();
    assert_eq!(poison_attempts, expected);
    let d = next(&mut dead).await;
    assert_eq!(text(&d), "poison");
    assert_eq!(d.key.as_deref(), Some("p"));
    assert!(stays_quiet(&mut sub).await, "no delivery after the limit");
    assert!(stays_quiet(&mut dead).await);
    drop((sub, dead));
    backend.teardown().await.unwrap();
    assert!(!exists("queue", &dlq).await);
    assert!(!exists("exchange", &dlq).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_subscriber_on_a_dead_letter_topic_counts_attempts_too() {
    let Some(backend) = common::backend(KIND, "dead_letter_fan_out").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("dlq-fan"), "events");
    let dlq = backend.dead_letter_topic(&topic).unwrap();
    backend
        .prepare(
            &RunTopology::new("dlq-fan").topic(TopicSpec::new(topic.as_str()).dead_letter(true)),
        )
        .await
        .unwrap();
    let (mut sub, producer) = common::subscriber_and_producer(
        &*backend,
        SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
    )
    .await;
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "bad")]).await;
    for attempt in 1..=MAX_DELIVERY_ATTEMPTS {
        let d = next(&mut sub).await;
        assert_eq!(d.attempt, Some(attempt));
        sub.nack(&d).await.unwrap();
    }
    assert!(stays_quiet(&mut sub).await);
    // The dead letters were kept for a reader that comes later.
    let mut dead = backend
        .subscribe(SubscriptionSpec::new(dlq.as_str()))
        .await
        .unwrap();
    assert_eq!(text(&next(&mut dead).await), "bad");
    drop((sub, dead));
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_limit_drops_the_oldest() {
    let Some(backend) = common::backend(KIND, "retention").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("retention"), "ticks");
    backend
        .prepare(
            &RunTopology::new("retention")
                .topic(TopicSpec::new(topic.as_str()).group("late").max_messages(5)),
        )
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(
        &producer,
        (0..20).map(|i| PublishRequest::new(topic.as_str(), format!("t{i}"))),
    )
    .await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).group("late"))
        .await
        .unwrap();
    for i in 15..20 {
        assert_eq!(text(&next(&mut sub).await), format!("t{i}"));
    }
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_removes_what_prepare_and_subscribe_created() {
    let Some(backend) = common::backend(KIND, "teardown").await else {
        return;
    };
    let run = common::run_id("teardown");
    let prepared = backend.topic_name(&run, "prepared");
    let on_demand = backend.topic_name(&run, "on-demand");
    let published = backend.topic_name(&run, "published");
    let dlq = backend.dead_letter_topic(&prepared).unwrap();
    backend
        .prepare(
            &RunTopology::new(run.as_str()).topic(
                TopicSpec::new(prepared.as_str())
                    .group("g1")
                    .dead_letter(true),
            ),
        )
        .await
        .unwrap();
    let group_sub = backend
        .subscribe(SubscriptionSpec::new(on_demand.as_str()).group("g2"))
        .await
        .unwrap();
    let fan_sub = backend
        .subscribe(SubscriptionSpec::new(prepared.as_str()))
        .await
        .unwrap();
    // Unsubscribed but not dropped: its queue went away with its consumer already.
    let mut left = backend
        .subscribe(SubscriptionSpec::new(on_demand.as_str()))
        .await
        .unwrap();
    left.unsubscribe().await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new(published.as_str(), "x")]).await;
    let queues = [
        format!("{prepared}.group.g1"),
        format!("{on_demand}.group.g2"),
        dlq.clone(),
    ];
    let exchanges = [
        prepared.clone(),
        on_demand.clone(),
        published.clone(),
        dlq.clone(),
    ];
    for q in &queues {
        assert!(exists("queue", q).await, "queue {q} exists before teardown");
    }
    for e in &exchanges {
        assert!(
            exists("exchange", e).await,
            "exchange {e} exists before teardown"
        );
    }
    backend.teardown().await.unwrap();
    for q in &queues {
        assert!(!exists("queue", q).await, "queue {q} is gone");
    }
    for e in &exchanges {
        assert!(!exists("exchange", e).await, "exchange {e} is gone");
    }
    // Subscriptions whose queues were deleted under them say so, then end.
    for mut sub in [group_sub, fan_sub] {
        let item = tokio::time::timeout(PATIENCE, sub.next()).await.unwrap();
        let err = item.expect("an error item").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
        assert!(
            err.to_string().contains("cancelled the subscription"),
            "{err}"
        );
        assert!(
            tokio::time::timeout(PATIENCE, sub.next())
                .await
                .unwrap()
                .is_none()
        );
    }
    drop((left, producer));
    // A second teardown has nothing left to do.
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_specs_fail_naming_the_capability() {
    let Some(backend) = common::backend(KIND, "unsupported").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsupported"), "t");
    let err = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("replay"), "{err}");
    assert!(err.to_string().contains("rabbitmq"), "{err}");
    let producer = backend.producer().await.unwrap();
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "x").id("m-1"))
        .await;
    match outcome {
        PublishOutcome::Failed(reason) => assert!(reason.contains("dedup"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let err = backend
        .subscribe(SubscriptionSpec::new("amq.reserved"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("amq.reserved"), "{err}");
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_whose_exchange_was_deleted_says_why_it_stopped() {
    let Some(backend) = common::backend(KIND, "deleted_exchange").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("deleted"), "t");
    backend
        .prepare(&RunTopology::new("deleted").topic(TopicSpec::new(topic.as_str())))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "kept")]).await;
    backend.teardown().await.unwrap();
    // The broker closes the channel of a publish to a missing exchange.
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "lost"))
        .await;
    assert!(!outcome.is_confirmed(), "{outcome:?}");
    let later = producer
        .publish(PublishRequest::new(topic.as_str(), "later"))
        .await;
    match later {
        PublishOutcome::Failed(reason) => {
            assert!(reason.contains("not sent"), "{reason}");
            assert!(reason.contains("NOT_FOUND"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_connect_error_naming_the_url() {
    let port = closed_port();
    let url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(6),
        RabbitMqBackend::connect(&url, ConnectOptions::new()),
    )
    .await
    .expect("connect gives up within the connect timeout")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    let message = err.to_string();
    assert!(
        message.contains(&format!("amqp://guest:***@127.0.0.1:{port}/%2f")),
        "{message}"
    );
    assert!(message.contains("connection refused"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    eprintln!("{message} (after {:?})", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_foreign_server_is_reported_within_the_timeout() {
    // Accepts connections and never says anything.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let silent_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{silent_port}/%2f");
    let options = ConnectOptions::new().connect_timeout(Duration::from_millis(500));
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        RabbitMqBackend::connect(&url, options),
    )
    .await
    .expect("connect gives up within the connect timeout")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(
        err.to_string()
            .contains("did not start the AMQP handshake within 500ms"),
        "{err}"
    );
    silent_task.abort();

    // Answers like a web server.
    let web = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_port = web.local_addr().unwrap().port();
    let web_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = web.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{web_port}/%2f");
    let err = RabbitMqBackend::connect(&url, ConnectOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(
        err.to_string().contains("is not an AMQP 0-9-1 broker"),
        "{err}"
    );
    assert!(
        err.to_string().contains("HTTP/1.1 400 Bad Request"),
        "{err}"
    );
    web_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_urls_are_invalid_urls() {
    for url in [
        "http://127.0.0.1:5672/%2f",
        "amqp://127.0.0.1:99999/%2f",
        "127.0.0.1:5672",
        "amqp://",
        "amqp://a:5672,b:5672/%2f",
        "amqp://guest:guest@127.0.0.1/%2f?prefetch=0",
    ] {
        let err = RabbitMqBackend::connect(url, ConnectOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
        assert!(
            err.to_string().contains("amqp://user:password@host"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_a_missing_vhost_are_refused_clearly() {
    let Some(backend) = common::backend(KIND, "refusals").await else {
        return;
    };
    drop(backend);
    let base = common::url(KIND);
    let authority = base
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|auth| auth.rsplit_once('@').map(|(_, hosts)| hosts.to_owned()))
        .unwrap_or_else(|| "127.0.0.1:5672".to_owned());
    let url = format!("amqp://nobody:wrong-password@{authority}/%2f");
    let err = RabbitMqBackend::connect(&url, common::options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("refused the login for user 'nobody'"),
        "{message}"
    );
    assert!(!message.contains("wrong-password"), "{message}");

    let (user_part, _) = base
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .unwrap_or(("guest:guest", ""));
    let url = format!("amqp://{user_part}@{authority}/no-such-vhost-bb");
    let err = RabbitMqBackend::connect(&url, common::options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("'no-such-vhost-bb'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_connection_ends_subscriptions_and_fails_publishes() {
    let Some(direct) = common::backend(KIND, "connection_loss").await else {
        return;
    };
    let base = common::url(KIND);
    let endpoint = brokerbench_adapters::endpoint::endpoints(KIND, &base).unwrap();
    let proxy = common::Proxy::start(endpoint[0].host_port()).await;
    let proxied_url = proxy.url_for(&base);
    let topic = direct.topic_name(&common::run_id("loss"), "t");
    direct
        .prepare(&RunTopology::new("loss").topic(TopicSpec::new(topic.as_str())))
        .await
        .unwrap();
    let proxied = RabbitMqBackend::connect(&proxied_url, common::options())
        .await
        .unwrap();
    let mut sub = proxied
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let producer = proxied.producer().await.unwrap();
    publish_all(&producer, [PublishRequest::new(topic.as_str(), "before")]).await;
    assert_eq!(text(&next(&mut sub).await), "before");

    proxy.cut();
    let item = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("the subscription notices the lost connection");
    let err = item.expect("an error item before the end").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.to_string().contains(&topic), "{err}");
    assert!(
        tokio::time::timeout(PATIENCE, sub.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends after the error"
    );
    let outcome = tokio::time::timeout(
        PATIENCE * 2,
        producer.publish(PublishRequest::new(topic.as_str(), "after")),
    )
    .await
    .expect("the publish resolves");
    assert!(
        matches!(outcome, PublishOutcome::Failed(_) | PublishOutcome::Unknown),
        "{outcome:?}"
    );
    drop((sub, producer, proxied, proxy));
    direct.teardown().await.unwrap();
}

/// Publish and delivery throughput of one producer and `BB_RABBITMQ_SUBSCRIBERS` (default
/// 1) fan-out subscribers, for the record:
/// `cargo test --release ... --test rabbitmq -- --ignored --nocapture throughput`.
/// It asserts only that everything was confirmed and delivered, never a rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly"]
async fn throughput() {
    let Some(backend) = common::backend(KIND, "throughput").await else {
        return;
    };
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = setting("BB_RABBITMQ_MESSAGES", 200_000);
    let window = setting("BB_RABBITMQ_WINDOW", 1_000);
    let subscribers = setting("BB_RABBITMQ_SUBSCRIBERS", 1);
    let topic = backend.topic_name(&common::run_id("throughput"), "load");
    backend
        .prepare(&RunTopology::new("throughput").topic(TopicSpec::new(topic.as_str())))
        .await
        .unwrap();
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut sub = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        readers.push(tokio::spawn(async move {
            let mut count = 0usize;
            while count < n {
                match tokio::time::timeout(PATIENCE, sub.next()).await {
                    Ok(Some(Ok(_))) => count += 1,
                    other => panic!("after {count} deliveries: {other:?}"),
                }
            }
            count
        }));
    }
    let producer = backend.producer().await.unwrap();
    let body = "x".repeat(200);
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut confirmed = 0usize;
    for _ in 0..n {
        if inflight.len() >= window {
            assert_eq!(inflight.next().await, Some(PublishOutcome::Ok));
            confirmed += 1;
        }
        inflight.push(producer.publish(PublishRequest::new(topic.as_str(), body.clone())));
    }
    while let Some(outcome) = inflight.next().await {
        assert_eq!(outcome, PublishOutcome::Ok);
        confirmed += 1;
    }
    let published = started.elapsed();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), n);
    }
    let total = started.elapsed();
    assert_eq!(confirmed, n);
    eprintln!(
        "rabbitmq throughput: {n} x 200 B, window {window}, {subscribers} subscriber(s): publish+confirm {:.0} msgs/s; all delivered after {total:.2?} ({:.0} msgs/s per subscriber)",
        n as f64 / published.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
    );
    backend.teardown().await.unwrap();
}
