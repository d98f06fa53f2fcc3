//! The JetStream adapter against the local NATS server with JetStream
//! (`nats://127.0.0.1:4222`, or `BROKERBENCH_JETSTREAM_URL`). Each test skips with a
//! SKIPPED line when the server is down, and removes what it created through the backend's
//! teardown; some look at the server's state through async-nats directly.
//!
//! The tests that need a server of their own (one that can be killed, one without
//! JetStream) start a private `nats-server` on a free port when the binary is installed,
//! and skip otherwise.

#![cfg(feature = "jetstream")]

mod common;

use common::text;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use brokerbench_adapters::jetstream::JetStreamBackend;
use brokerbench_adapters::{
    AckMode, Backend, BackendKind, Capabilities, Capability, ConnectOptions, Delivery, ErrorKind,
    PublishOutcome, PublishRequest, RunTopology, StartPosition, Subscription, SubscriptionSpec,
    TopicSpec, connect,
};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::time::Instant;

const KIND: BackendKind = BackendKind::Jetstream;
/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);

/// The next delivery, failing the test on an error item, an end, or a long wait.
async fn next(sub: &mut Subscription) -> Delivery {
    common::next_within(sub, PATIENCE).await
}

/// Whether nothing arrives for a while.
async fn stays_quiet(sub: &mut Subscription) -> bool {
    common::quiet_for(sub, QUIET).await
}

async fn connect_err(url: &str, options: ConnectOptions) -> brokerbench_adapters::AdapterError {
    common::connect_err(KIND, url, options).await
}

/// The backend and a prepared per-test topic.
async fn prepared(test: &str, topic: TopicSpec) -> Option<(Box<dyn Backend>, String)> {
    let backend = common::backend(KIND, test).await?;
    let name = backend.topic_name(&common::run_id(test), &topic.name);
    let mut spec = TopicSpec::new(name.as_str());
    spec.groups = topic.groups;
    spec.max_messages = topic.max_messages;
    backend
        .prepare(&RunTopology::new(test).topic(spec))
        .await
        .unwrap();
    Some((backend, name))
}

/// A JetStream context of the test's own, to look at the server's state.
async fn inspector() -> async_nats::jetstream::Context {
    let client = async_nats::connect(common::url(KIND)).await.unwrap();
    async_nats::jetstream::new(client)
}

/// The number of consumers of `topic`'s stream, or `None` when the stream does not exist.
async fn consumers_of(js: &async_nats::jetstream::Context, topic: &str) -> Option<usize> {
    let mut stream = js
        .get_stream(JetStreamBackend::stream_name(topic))
        .await
        .ok()?;
    Some(stream.info().await.unwrap().state.consumer_count)
}

async fn publish_all(producer: &brokerbench_adapters::Producer, topic: &str, n: usize) {
    let outcomes: Vec<_> = (0..n)
        .map(|i| producer.publish(PublishRequest::new(topic, format!("m{i}"))))
        .collect::<FuturesOrdered<_>>()
        .collect()
        .await;
    assert!(
        outcomes.iter().all(|o| *o == PublishOutcome::Ok),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn round_trip_carries_key_and_sequence_and_dedup_answers_duplicate() {
    let Some((backend, topic)) = prepared("round_trip", TopicSpec::new("chat")).await else {
        return;
    };
    let version = backend
        .server_version()
        .expect("the server reports a version");
    assert!(version.starts_with("nats-server "), "{version}");
    assert_eq!(
        backend.capabilities(),
        Capabilities::of(&[
            Capability::FanOut,
            Capability::Competing,
            Capability::Replay,
            Capability::LiveOnly,
            Capability::AckRedelivery,
            Capability::Nack,
            Capability::Dedup,
            Capability::RetentionLimit,
        ])
    );
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    let first = PublishRequest::new(topic.as_str(), "hello")
        .key("customer-7")
        .id("m-1");
    assert_eq!(producer.publish(first.clone()).await, PublishOutcome::Ok);
    assert_eq!(producer.publish(first).await, PublishOutcome::Duplicate);
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "again").id("m-2"))
            .await,
        PublishOutcome::Ok
    );
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "hello");
    assert_eq!(d.key.as_deref(), Some("customer-7"));
    assert_eq!(d.sequence, Some(1));
    assert_eq!((d.redelivered, d.attempt), (false, Some(1)));
    assert_eq!(&*d.topic, topic);
    let d = next(&mut sub).await;
    assert_eq!(
        (text(&d), d.sequence, d.key.as_deref()),
        ("again", Some(2), None)
    );
    assert!(
        stays_quiet(&mut sub).await,
        "the duplicate is not delivered"
    );
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn fan_out_reaches_three_subscribers_in_order() {
    let Some((backend, topic)) = prepared("fan_out", TopicSpec::new("news")).await else {
        return;
    };
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
    publish_all(&producer, &topic, 300).await;
    for sub in &mut subs {
        for i in 0..300 {
            let d = next(sub).await;
            assert_eq!(text(&d), format!("m{i}"));
            assert_eq!(d.sequence, Some(i + 1));
        }
        assert!(stays_quiet(sub).await);
    }
    drop(subs);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_group_of_three_shares_the_messages() {
    let Some((backend, topic)) =
        prepared("competing", TopicSpec::new("work").group("workers")).await
    else {
        return;
    };
    let mut subs = Vec::new();
    for _ in 0..3 {
        let spec = SubscriptionSpec::new(topic.as_str()).group("workers");
        subs.push(backend.subscribe(spec).await.unwrap());
    }
    let producer = backend.producer().await.unwrap();
    const N: usize = 3_000;
    let outcomes: Vec<_> = (0..N)
        .map(|i| producer.publish(PublishRequest::new(topic.as_str(), format!("{i}")).one()))
        .collect::<FuturesOrdered<_>>()
        .collect()
        .await;
    assert!(outcomes.iter().all(|o| *o == PublishOutcome::Ok));
    let mut seen = BTreeSet::new();
    let mut per_sub = [0usize; 3];
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < N && Instant::now() < deadline {
        for (i, sub) in subs.iter_mut().enumerate() {
            while let Ok(Some(item)) =
                tokio::time::timeout(Duration::from_millis(20), sub.next()).await
            {
                let d = item.unwrap();
                assert!(seen.insert(text(&d).to_owned()), "duplicate {}", text(&d));
                per_sub[i] += 1;
            }
        }
    }
    assert_eq!(seen.len(), N, "union of the group");
    eprintln!("jetstream: group of 3 got {per_sub:?} of {N}");
    // Acked as handed over: nothing comes back after the ack wait.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for sub in &mut subs {
        assert!(stays_quiet(sub).await);
    }
    drop(subs);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn manual_acks_nack_redelivers_at_once_and_an_unacked_message_after_the_ack_wait() {
    let Some((backend, topic)) = prepared("acks", TopicSpec::new("jobs")).await else {
        return;
    };
    let (mut sub, producer) = common::subscriber_and_producer(
        &*backend,
        SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
    )
    .await;
    publish_all(&producer, &topic, 2).await;
    let first = next(&mut sub).await;
    assert_eq!(
        (text(&first), first.attempt, first.redelivered),
        ("m0", Some(1), false)
    );
    sub.nack(&first).await.unwrap();
    let second = next(&mut sub).await;
    assert_eq!(text(&second), "m1");
    // m1 is not acknowledged; the nacked m0 comes back at once.
    let again = next(&mut sub).await;
    assert_eq!(
        (text(&again), again.attempt, again.redelivered),
        ("m0", Some(2), true)
    );
    assert_eq!(again.sequence, first.sequence);
    sub.ack(&again).await.unwrap();
    // m1 comes back after the 5 s ack wait.
    let late = common::next_within(&mut sub, Duration::from_secs(15)).await;
    assert_eq!(
        (text(&late), late.attempt, late.redelivered),
        ("m1", Some(2), true)
    );
    sub.ack(&late).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        stays_quiet(&mut sub).await,
        "acknowledged messages stay acknowledged"
    );
    assert_eq!(sub.rejected_acks(), 0);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_group_member_that_nacks_hands_the_message_to_the_group_again() {
    let Some((backend, topic)) = prepared("group_nack", TopicSpec::new("jobs").group("g")).await
    else {
        return;
    };
    let mut sub = backend
        .subscribe(
            SubscriptionSpec::new(topic.as_str())
                .group("g")
                .ack(AckMode::Manual),
        )
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, &topic, 1).await;
    let d = next(&mut sub).await;
    sub.nack(&d).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!((text(&d), d.attempt, d.redelivered), ("m0", Some(2), true));
    sub.ack(&d).await.unwrap();
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn replay_from_the_beginning_and_after_a_sequence_and_latest_sees_nothing_before() {
    let Some((backend, topic)) = prepared("replay", TopicSpec::new("log")).await else {
        return;
    };
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, &topic, 10).await;
    let mut all = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
        .await
        .unwrap();
    for i in 0..10 {
        let d = next(&mut all).await;
        assert_eq!(
            (text(&d), d.sequence),
            (format!("m{i}").as_str(), Some(i + 1))
        );
    }
    let mut after = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::AfterSequence(7)))
        .await
        .unwrap();
    for seq in 8..=10 {
        assert_eq!(next(&mut after).await.sequence, Some(seq));
    }
    let mut latest = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Latest))
        .await
        .unwrap();
    assert!(stays_quiet(&mut latest).await, "nothing from before");
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "live"))
            .await,
        PublishOutcome::Ok
    );
    for sub in [&mut all, &mut after, &mut latest] {
        let d = next(sub).await;
        assert_eq!((text(&d), d.sequence), ("live", Some(11)));
    }
    drop((all, after, latest));
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_retention_limit_keeps_the_newest_messages() {
    let Some((backend, topic)) =
        prepared("retention", TopicSpec::new("capped").max_messages(10)).await
    else {
        return;
    };
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, &topic, 25).await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
        .await
        .unwrap();
    for seq in 16..=25 {
        assert_eq!(next(&mut sub).await.sequence, Some(seq));
    }
    assert!(stays_quiet(&mut sub).await);
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_stops_deliveries_and_deletes_the_consumer() {
    let Some((backend, topic)) = prepared("unsubscribe", TopicSpec::new("t")).await else {
        return;
    };
    let js = inspector().await;
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let mut witness = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    assert_eq!(consumers_of(&js, &topic).await, Some(2));
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, &topic, 1).await;
    // Wait until it arrived, so it is in the stream of `sub` before the unsubscribe.
    assert_eq!(text(&next(&mut witness).await), "m0");
    tokio::time::sleep(QUIET).await;
    sub.unsubscribe().await.unwrap();
    assert_eq!(consumers_of(&js, &topic).await, Some(1));
    assert!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "after"))
            .await
            .is_confirmed()
    );
    let rest: Vec<String> = sub.map(|d| text(&d.unwrap()).to_owned()).collect().await;
    assert_eq!(rest, ["m0"]);
    assert_eq!(text(&next(&mut witness).await), "after");
    // Dropping a subscription deletes its consumer too.
    drop(witness);
    let deadline = Instant::now() + PATIENCE;
    while consumers_of(&js, &topic).await != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the consumer outlived its subscription"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn teardown_removes_the_streams_and_consumers_it_created() {
    let Some((backend, prepared_topic)) =
        prepared("teardown", TopicSpec::new("t").group("g")).await
    else {
        return;
    };
    let js = inspector().await;
    // A topic nobody prepared: its stream is made on first use.
    let on_demand = backend.topic_name(&common::run_id("teardown"), "late");
    // A stream of someone else's for a third topic: used, not deleted.
    let foreign = backend.topic_name(&common::run_id("teardown"), "foreign");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: JetStreamBackend::stream_name(&foreign),
        subjects: vec![foreign.clone()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let subs = vec![
        backend
            .subscribe(SubscriptionSpec::new(prepared_topic.as_str()))
            .await
            .unwrap(),
        backend
            .subscribe(SubscriptionSpec::new(prepared_topic.as_str()).group("g"))
            .await
            .unwrap(),
        backend
            .subscribe(SubscriptionSpec::new(on_demand.as_str()).group("h"))
            .await
            .unwrap(),
        backend
            .subscribe(SubscriptionSpec::new(foreign.as_str()))
            .await
            .unwrap(),
        backend
            .subscribe(SubscriptionSpec::new(foreign.as_str()).group("h"))
            .await
            .unwrap(),
    ];
    assert_eq!(consumers_of(&js, &prepared_topic).await, Some(2));
    assert_eq!(consumers_of(&js, &on_demand).await, Some(1));
    assert_eq!(consumers_of(&js, &foreign).await, Some(2));
    let producer = backend.producer().await.unwrap();
    // A topic first named by a producer gets its stream too.
    let by_producer = backend.topic_name(&common::run_id("teardown"), "produced");
    publish_all(&producer, &by_producer, 3).await;
    assert_eq!(consumers_of(&js, &by_producer).await, Some(0));

    backend.teardown().await.unwrap();
    assert_eq!(consumers_of(&js, &prepared_topic).await, None);
    assert_eq!(consumers_of(&js, &on_demand).await, None);
    assert_eq!(consumers_of(&js, &by_producer).await, None);
    assert_eq!(
        consumers_of(&js, &foreign).await,
        Some(0),
        "its consumers went, it stays"
    );
    // The subscriptions learn that their consumers are gone.
    for mut sub in subs {
        match tokio::time::timeout(PATIENCE, sub.next()).await {
            Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
            other => panic!("expected an error item, got {other:?}"),
        }
    }
    js.delete_stream(JetStreamBackend::stream_name(&foreign))
        .await
        .unwrap();
    // A second teardown has nothing left to do.
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_one_mib_payload_round_trips() {
    let Some((backend, topic)) = prepared("big", TopicSpec::new("t")).await else {
        return;
    };
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), payload.clone()))
            .await,
        PublishOutcome::Ok
    );
    let d = next(&mut sub).await;
    assert!(d.payload == payload);
    match producer
        .publish(PublishRequest::new(topic.as_str(), vec![b'x'; 8 << 20]))
        .await
    {
        PublishOutcome::Failed(reason) => assert!(reason.contains("larger than"), "{reason}"),
        other => panic!("an 8 MiB message: {other:?}"),
    }
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn five_thousand_pipelined_publishes_are_confirmed_and_delivered_in_order() {
    let Some((backend, topic)) = prepared("pipelined", TopicSpec::new("t")).await else {
        return;
    };
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    const N: usize = 5_000;
    let body = "x".repeat(190);
    let started = Instant::now();
    let outcomes: Vec<_> = (0..N)
        .map(|i| producer.publish(PublishRequest::new(topic.as_str(), format!("{i:08}{body}"))))
        .collect::<FuturesOrdered<_>>()
        .collect()
        .await;
    let confirmed_after = started.elapsed();
    assert!(outcomes.iter().all(|o| *o == PublishOutcome::Ok));
    for i in 0..N {
        let d = next(&mut sub).await;
        assert_eq!(&text(&d)[..8], format!("{i:08}"));
        assert_eq!(d.sequence, Some(i as i64 + 1));
    }
    eprintln!(
        "jetstream: {N} publishes of 198 bytes confirmed in {confirmed_after:?} ({:.0} msgs/s), all delivered after {:?}",
        N as f64 / confirmed_after.as_secs_f64(),
        started.elapsed()
    );
    drop(sub);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_producer_pipelines_at_rate() {
    // A rough throughput figure, printed, not asserted: 50k messages of 200 bytes on one
    // producer with up to 10k in flight, read by one fan-out subscriber.
    let Some((backend, topic)) = prepared("rate", TopicSpec::new("t")).await else {
        return;
    };
    let (sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    const N: usize = 50_000;
    const WINDOW: usize = 10_000;
    let (published, delivered) =
        common::publish_at_rate(&producer, sub, &topic, (N, WINDOW, 200), PATIENCE).await;
    eprintln!(
        "jetstream: {N} publishes of 200 bytes confirmed in {published:?} ({:.0} msgs/s on one producer), delivered in {:?}",
        N as f64 / published.as_secs_f64(),
        delivered
    );
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn unsupported_specs_fail_naming_the_capability() {
    let Some(backend) = common::backend(KIND, "unsupported").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsupported"), "t");
    let err = backend
        .prepare(&RunTopology::new("r").topic(TopicSpec::new(topic.as_str()).dead_letter(true)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("dead letter"), "{err}");
    assert!(err.to_string().contains("jetstream"), "{err}");
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("nats://{addr}");
    let started = Instant::now();
    let err = connect_err(&url, ConnectOptions::new()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to jetstream at {url} (tried {addr}: connection refused)")
    );
}

#[tokio::test]
async fn a_malformed_url_is_invalid() {
    for url in ["amqp://127.0.0.1:4222", "nats://127.0.0.1:4222x", "nats://"] {
        let err = connect_err(url, ConnectOptions::new()).await;
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
        assert!(err.to_string().contains("expected nats://"), "{err}");
    }
}

/// A `nats-server` of this test's own, on a free port, killed when dropped.
struct PrivateServer {
    child: tokio::process::Child,
    url: String,
    store: Option<PathBuf>,
}

impl PrivateServer {
    /// Starts `nats-server` (with JetStream in a temporary directory when `jetstream`), or
    /// `None` (after a SKIPPED line) when the binary is not installed.
    async fn start(test: &str, jetstream: bool) -> Option<PrivateServer> {
        let binary = std::env::var_os("BROKERBENCH_NATS_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                [
                    "/usr/sbin/nats-server",
                    "/usr/bin/nats-server",
                    "/usr/local/bin/nats-server",
                ]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
            });
        let Some(binary) = binary else {
            common::skip(
                KIND,
                test,
                "no nats-server binary to start a private server",
            );
            return None;
        };
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut command = tokio::process::Command::new(binary);
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        let store = jetstream.then(|| {
            let dir = std::env::temp_dir().join(common::run_id(test));
            command.arg("-js").arg("-sd").arg(&dir);
            dir
        });
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the private nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(PrivateServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            store,
        })
    }

    async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

#[tokio::test]
async fn a_server_that_dies_ends_subscriptions_and_publishes_do_not_hang() {
    let Some(mut server) = PrivateServer::start("server_dies", true).await else {
        return;
    };
    let options = ConnectOptions::new().publish_timeout(Duration::from_secs(3));
    // JetStream may take a moment to be ready on a fresh server.
    let deadline = Instant::now() + PATIENCE;
    let backend = loop {
        match connect(KIND, &server.url, options.clone()).await {
            Ok(backend) => break backend,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for JetStream: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let topic = backend.topic_name("dies", "t");
    backend
        .prepare(&RunTopology::new("dies").topic(TopicSpec::new(topic.as_str())))
        .await
        .unwrap();
    let (mut sub, producer) = common::subscriber_and_producer(
        &*backend,
        SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
    )
    .await;
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "before"))
            .await,
        PublishOutcome::Ok
    );
    assert_eq!(text(&next(&mut sub).await), "before");
    server.kill().await;
    let err = match tokio::time::timeout(PATIENCE, sub.next()).await {
        Ok(Some(Err(e))) => e,
        other => panic!("expected an error item, got {other:?}"),
    };
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.to_string().contains("connection was lost"), "{err}");
    assert!(
        tokio::time::timeout(PATIENCE, sub.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends after the error"
    );
    let started = Instant::now();
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "during"))
        .await;
    assert!(
        matches!(outcome, PublishOutcome::Unknown | PublishOutcome::Failed(_)),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert!(backend.teardown().await.is_err(), "nothing can be deleted");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused_clearly() {
    let Some(server) = PrivateServer::start("no_jetstream", false).await else {
        return;
    };
    let err = connect_err(&server.url, ConnectOptions::new()).await;
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("without JetStream"), "{err}");
    assert!(err.to_string().contains(&server.url), "{err}");
}
