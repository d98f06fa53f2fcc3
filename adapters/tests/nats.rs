//! The NATS core adapter against the local NATS server (`nats://127.0.0.1:4222`, or
//! `BROKERBENCH_NATS_URL`). Each test skips with a SKIPPED line when the server is down.
//!
//! The tests that need a server of their own (one that can be killed, one with a
//! password) start a private `nats-server` on a free port when the binary is installed,
//! and skip otherwise.

#![cfg(feature = "nats")]

mod common;

use common::text;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use brokerbench_adapters::{
    AckMode, BackendKind, Capability, ConnectOptions, Delivery, ErrorKind, PublishOutcome,
    PublishRequest, RunTopology, StartPosition, Subscription, SubscriptionSpec, TopicSpec, connect,
};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::time::Instant;

const KIND: BackendKind = BackendKind::Nats;
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

#[tokio::test]
async fn round_trip_carries_the_key_and_reports_the_server() {
    let Some(backend) = common::backend(KIND, "round_trip").await else {
        return;
    };
    let version = backend
        .server_version()
        .expect("the server reports a version");
    assert!(version.starts_with("nats-server "), "{version}");
    assert_eq!(
        backend.capabilities(),
        brokerbench_adapters::Capabilities::of(&[
            Capability::FanOut,
            Capability::Competing,
            Capability::LiveOnly
        ])
    );
    let topic = backend.topic_name(&common::run_id("round_trip"), "chat");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "hello").key("customer-7"))
        .await;
    assert_eq!(outcome, PublishOutcome::Ok);
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "no key"))
            .await,
        PublishOutcome::Ok
    );
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "hello");
    assert_eq!(d.key.as_deref(), Some("customer-7"));
    assert_eq!(&*d.topic, topic);
    assert!(!d.redelivered);
    assert_eq!(d.sequence, None);
    let d = next(&mut sub).await;
    assert_eq!((text(&d), d.key.as_deref()), ("no key", None));
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn fan_out_reaches_three_subscribers_in_order() {
    let Some(backend) = common::backend(KIND, "fan_out").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("fan_out"), "news");
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
    let outcomes: Vec<_> = (0..200)
        .map(|i| producer.publish(PublishRequest::new(topic.as_str(), format!("m{i}"))))
        .collect::<FuturesOrdered<_>>()
        .collect()
        .await;
    assert!(
        outcomes.iter().all(|o| *o == PublishOutcome::Ok),
        "{outcomes:?}"
    );
    for sub in &mut subs {
        for i in 0..200 {
            assert_eq!(text(&next(sub).await), format!("m{i}"));
        }
        assert!(stays_quiet(sub).await);
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_queue_group_of_three_shares_the_messages() {
    let Some(backend) = common::backend(KIND, "competing").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("competing"), "work");
    backend
        .prepare(
            &RunTopology::new("competing").topic(TopicSpec::new(topic.as_str()).group("workers")),
        )
        .await
        .unwrap();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let spec = SubscriptionSpec::new(topic.as_str()).group("workers");
        subs.push(backend.subscribe(spec).await.unwrap());
    }
    let producer = backend.producer().await.unwrap();
    const N: usize = 600;
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
    assert!(
        per_sub.iter().all(|&n| n > 0),
        "every member got some: {per_sub:?}"
    );
    for sub in &mut subs {
        assert!(stays_quiet(sub).await);
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn latest_sees_nothing_published_before() {
    let Some(backend) = common::backend(KIND, "latest").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("latest"), "t");
    let producer = backend.producer().await.unwrap();
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "before"))
            .await,
        PublishOutcome::Ok
    );
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Latest))
        .await
        .unwrap();
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "after"))
            .await,
        PublishOutcome::Ok
    );
    assert_eq!(text(&next(&mut sub).await), "after");
    assert!(stays_quiet(&mut sub).await);
}

#[tokio::test]
async fn unsubscribe_stops_deliveries() {
    let Some(backend) = common::backend(KIND, "unsubscribe").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsubscribe"), "t");
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let mut witness = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    assert!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "one"))
            .await
            .is_confirmed()
    );
    sub.unsubscribe().await.unwrap();
    assert!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "two"))
            .await
            .is_confirmed()
    );
    let rest: Vec<String> = sub.map(|d| text(&d.unwrap()).to_owned()).collect().await;
    assert_eq!(
        rest,
        ["one"],
        "what arrived before the unsubscribe, then the end"
    );
    assert_eq!(text(&next(&mut witness).await), "one");
    assert_eq!(text(&next(&mut witness).await), "two");
}

#[tokio::test]
async fn a_one_mib_payload_round_trips_and_a_bigger_one_fails_clearly() {
    let Some(backend) = common::backend(KIND, "big").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("big"), "t");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    // The server's default max_payload is exactly 1 MiB.
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), payload.clone()))
        .await;
    assert_eq!(outcome, PublishOutcome::Ok);
    let d = next(&mut sub).await;
    assert_eq!(d.payload.len(), payload.len());
    assert!(d.payload == payload);
    let too_big = vec![b'x'; 8 * 1024 * 1024];
    match producer
        .publish(PublishRequest::new(topic.as_str(), too_big))
        .await
    {
        PublishOutcome::Failed(reason) => {
            assert!(reason.contains("larger than nats at"), "{reason}");
            assert!(reason.contains("exceeded"), "{reason}");
        }
        other => panic!("an 8 MiB message: {other:?}"),
    }
}

#[tokio::test]
async fn five_thousand_pipelined_publishes_are_confirmed_and_delivered_in_order() {
    let Some(backend) = common::backend(KIND, "pipelined").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("pipelined"), "t");
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
    }
    eprintln!(
        "nats: {N} publishes of 198 bytes confirmed in {confirmed_after:?} ({:.0} msgs/s), all delivered after {:?}",
        N as f64 / confirmed_after.as_secs_f64(),
        started.elapsed()
    );
}

#[tokio::test]
async fn a_producer_pipelines_at_rate() {
    // A rough throughput figure, printed, not asserted: 100k messages of 200 bytes on one
    // producer with up to 10k in flight.
    let Some(backend) = common::backend(KIND, "rate").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("rate"), "t");
    let (sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    const N: usize = 100_000;
    const WINDOW: usize = 10_000;
    let (published, delivered) =
        common::publish_at_rate(&producer, sub, &topic, (N, WINDOW, 200), PATIENCE).await;
    eprintln!(
        "nats: {N} publishes of 200 bytes confirmed in {published:?} ({:.0} msgs/s on one producer), delivered in {:?}",
        N as f64 / published.as_secs_f64(),
        delivered
    );
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_ends_with_a_slow_consumer_error() {
    let Some(backend) = common::backend(KIND, "slow").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("slow"), "t");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    // More than the subscription channel plus async-nats' 64Ki buffer can hold.
    const N: usize = 150_000;
    let topic_arc: std::sync::Arc<str> = topic.as_str().into();
    let mut in_flight = FuturesOrdered::new();
    for i in 0..N {
        if in_flight.len() >= 10_000 {
            in_flight.next().await;
        }
        in_flight
            .push_back(producer.publish(PublishRequest::new(topic_arc.clone(), format!("{i}"))));
    }
    while in_flight.next().await.is_some() {}
    let mut delivered = 0usize;
    let error = loop {
        match tokio::time::timeout(PATIENCE, sub.next()).await {
            Ok(Some(Ok(_))) => delivered += 1,
            Ok(Some(Err(e))) => break e,
            other => panic!("after {delivered} deliveries: {other:?}"),
        }
    };
    assert_eq!(error.kind(), ErrorKind::SlowConsumer, "{error}");
    assert!(error.to_string().contains(&topic), "{error}");
    assert!(delivered < N, "some messages were dropped: {delivered}");
    assert!(
        delivered >= 64 * 1024,
        "what was buffered is handed over: {delivered}"
    );
    assert!(
        sub.next().await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn unsupported_specs_fail_naming_the_capability() {
    let Some(backend) = common::backend(KIND, "unsupported").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsupported"), "t");
    for (spec, missing) in [
        (
            SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning),
            "replay",
        ),
        (
            SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
            "ack and redelivery",
        ),
    ] {
        let err = backend.subscribe(spec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains(missing), "{err}");
        assert!(err.to_string().contains("nats"), "{err}");
    }
    let err = backend
        .prepare(&RunTopology::new("r").topic(TopicSpec::new(topic.as_str()).max_messages(10)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("retention limit"), "{err}");
    let producer = backend.producer().await.unwrap();
    match producer
        .publish(PublishRequest::new(topic.as_str(), "x").id("m-1"))
        .await
    {
        PublishOutcome::Failed(reason) => assert!(reason.contains("dedup"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("nats://{addr}");
    let started = Instant::now();
    let err = connect_err(&url, ConnectOptions::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to nats at {url} (tried {addr}: connection refused)")
    );
    // A name that does not resolve.
    let err = connect_err("nats://no-such-host.invalid:4222", ConnectOptions::new()).await;
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
}

#[tokio::test]
async fn a_malformed_url_is_invalid() {
    for url in ["http://127.0.0.1:4222", "nats://127.0.0.1:99999", "nats://"] {
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
    /// Starts `nats-server` with `args`, or `None` (after a SKIPPED line) when the binary is
    /// not installed.
    async fn start(test: &str, args: &[&str]) -> Option<PrivateServer> {
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
        let child = tokio::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
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
            store: None,
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
    let Some(mut server) = PrivateServer::start("server_dies", &[]).await else {
        return;
    };
    let options = ConnectOptions::new().publish_timeout(Duration::from_secs(3));
    let backend = connect(KIND, &server.url, options).await.unwrap();
    let topic = backend.topic_name("dies", "t");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
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
    assert!(sub.next().await.is_none());
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
}

#[tokio::test]
async fn a_refused_login_is_rejected_and_the_password_is_not_shown() {
    let Some(server) = PrivateServer::start("auth", &["--user", "alice", "--pass", "s3cret"]).await
    else {
        return;
    };
    let port = server.url.rsplit(':').next().unwrap();
    let bad = format!("nats://alice:wrong@127.0.0.1:{port}");
    let err = connect_err(&bad, ConnectOptions::new()).await;
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "nats at nats://alice:***@127.0.0.1:{port} refused the login for user 'alice' (authorization violation)"
        )
    );
    let err = connect_err(&server.url, ConnectOptions::new()).await;
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("requires authentication"), "{err}");
    let good = format!("nats://alice:s3cret@127.0.0.1:{port}");
    let backend = connect(KIND, &good, ConnectOptions::new()).await.unwrap();
    let topic = backend.topic_name("auth", "t");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "in"))
            .await,
        PublishOutcome::Ok
    );
    assert_eq!(text(&next(&mut sub).await), "in");
}
